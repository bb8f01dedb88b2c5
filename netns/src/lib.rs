//! Networking for Palisade sandboxes: a sandbox's own network stack (`network_namespaces(7)`).
//!
//! - [`link`]: rtnetlink (`rtnetlink(7)`) driven synchronously, without an async runtime and
//!   without the `ip` binary: links up and down, MTU, veth pairs and bridges, moving links between
//!   namespaces, IPv4 and IPv6 addresses and routes.
//! - [`Network`]: the `docker run --network` modes a sandbox can have: `none` (loopback only,
//!   up), `host`, and joining another namespace.
//! - [`ipam`]: addresses allocated from a subnet without collisions between concurrent sandboxes
//!   and processes, persisted in a locked file.
//! - [`bridge`]: sandboxes on a bridge with outbound NAT and published ports; [`gc`] removes
//!   what sandboxes whose manager died left behind (the kernel already removed their DNAT rules,
//!   which belong to the manager's netlink socket, see [`nft`]). A persistent sandbox
//!   ([`PreparedBridge::persistent`], [`Attachment::release`]) outlives its manager, port guard
//!   included, and is collected once its own process is gone.

pub mod bridge;
pub mod child;
mod error;
pub mod forward;
pub mod ipam;
pub mod link;
mod mode;
pub mod nft;
mod proto;

pub use bridge::{gc, gc_dir, Attachment, Bridge, GcReport, PreparedBridge};
pub use error::{Error, Result};
pub use forward::{Forwarder, ForwarderLimits, PortMap};
pub use mode::{NetnsRef, Network};
pub use proto::Proto;
