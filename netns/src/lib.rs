//! Networking for Palisade sandboxes: a sandbox's own network stack (`network_namespaces(7)`).
//!
//! **Placeholder.** This crate will drive rtnetlink (`rtnetlink(7)`) synchronously, without an
//! async runtime and without calling the `ip` binary: links up and down, veth pairs and bridges,
//! moving links between namespaces, IPv4 and IPv6 addresses and routes; and on top of it the
//! `docker run --network` modes (none, host, bridge with outbound NAT, joining another sandbox's
//! network) with published ports through nftables rules in a table of its own or a userspace
//! forwarder.
