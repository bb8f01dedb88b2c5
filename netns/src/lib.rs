//! Networking for Palisade sandboxes: a sandbox's own network stack (`network_namespaces(7)`).
//!
//! - [`link`]: rtnetlink (`rtnetlink(7)`) driven synchronously, without an async runtime and
//!   without the `ip` binary: links up and down, MTU, veth pairs and bridges, moving links between
//!   namespaces, IPv4 and IPv6 addresses and routes.
//! - [`Network`]: the `docker run --network` modes a sandbox can have: `none` (loopback only,
//!   up), `host`, and joining another namespace.
//! - [`ipam`]: addresses allocated from a subnet without collisions between concurrent sandboxes
//!   and processes, persisted in a locked file.

pub mod bridge;
mod error;
pub mod forward;
pub mod ipam;
pub mod link;
mod mode;
pub mod nft;

pub use bridge::{Attachment, Bridge, PreparedBridge};
pub use error::{Error, Result};
pub use forward::{Forwarder, PortMap};
pub use mode::{NetnsRef, Network};
pub use nft::Proto;
