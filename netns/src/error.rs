use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `palisade-netns`. Netlink errors name the request and the
/// object (link, address, route) and carry the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value was refused before anything was done (a name too long, a bad prefix length, …).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What the value is for, e.g. `"link name"`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file or namespace operation failed.
    #[error("cannot {op} {target}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// What it acted on (a path, a namespace).
        target: String,
        /// The OS error.
        source: io::Error,
    },
    // --- netlink errors (link/) ---
    /// The kernel refused a netlink request (an `NLMSG_ERROR` with a non-zero errno), or the
    /// netlink socket itself failed.
    #[error("netlink request {request} failed: {source}")]
    Netlink {
        /// The request and its object, e.g. `"RTM_NEWLINK veth pal-a/pal-b"`.
        request: String,
        /// The kernel's errno.
        source: io::Error,
    },
    /// A link named in a request does not exist in the socket's network namespace.
    #[error("netlink request {request}: no link named {name:?}")]
    NoSuchLink {
        /// The request that needed the link.
        request: String,
        /// The missing link's name.
        name: String,
    },
    /// The kernel's reply could not be understood.
    #[error("netlink request {request}: malformed reply: {reason}")]
    Protocol {
        /// The request whose reply was malformed.
        request: String,
        /// What was wrong with it.
        reason: String,
    },
    // --- address allocation errors (ipam/) ---
    /// A network name is already recorded in the state directory with a different subnet.
    #[error("network {network:?} is recorded in {} with subnet {recorded}, not {requested}", .path.display())]
    SubnetMismatch {
        /// The network name.
        network: String,
        /// The state file that records it.
        path: std::path::PathBuf,
        /// The subnet recorded for the network.
        recorded: crate::ipam::Subnet,
        /// The subnet that was asked for.
        requested: crate::ipam::Subnet,
    },
    /// A new network's subnet overlaps the subnet of a network already recorded.
    #[error("subnet {subnet} overlaps subnet {existing} of network {network:?} (recorded in {})", .path.display())]
    Overlap {
        /// The subnet that was asked for.
        subnet: crate::ipam::Subnet,
        /// The network it overlaps.
        network: String,
        /// That network's subnet.
        existing: crate::ipam::Subnet,
        /// The state file that records that network.
        path: std::path::PathBuf,
    },
    /// Every host address of the subnet is leased to a live owner.
    #[error("no free address left in subnet {subnet} of network {network:?}")]
    Exhausted {
        /// The network name.
        network: String,
        /// Its subnet.
        subnet: crate::ipam::Subnet,
    },
    /// An allocation state file could not be understood.
    #[error("corrupt address allocation state {}, line {line}: {reason}", .path.display())]
    CorruptState {
        /// The state file.
        path: std::path::PathBuf,
        /// The 1-based line number (0 for the file as a whole).
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A bridge subnet overlaps a route the host already has (its LAN, a VPN, another bridge).
    #[error("subnet {subnet} overlaps the host's route to {route} (dev {dev:?})")]
    RouteOverlap {
        /// The subnet that was asked for.
        subnet: crate::ipam::Subnet,
        /// The route's destination.
        route: String,
        /// The route's device.
        dev: String,
    },
    // --- published ports (forward/, nft/) ---
    /// A host port is already taken, by another sandbox or any other program.
    #[error("host port {port}/{proto} is already in use: {source}")]
    PortInUse {
        /// The protocol.
        proto: crate::proto::Proto,
        /// The host port.
        port: u16,
        /// The error of `bind(2)` (`EADDRINUSE`).
        source: io::Error,
    },
    /// The same host port is published twice for one sandbox.
    #[error("host port {port}/{proto} is published twice")]
    PortConflict {
        /// The protocol.
        proto: crate::proto::Proto,
        /// The host port.
        port: u16,
    },
    /// The state directory's lock was held by someone else for longer than the lock timeout.
    /// Another process holds an exclusive `flock(2)` on the lock file (a manager in the middle
    /// of a set-up, or a stuck or hostile holder).
    #[error("timed out after {waited:?} waiting for the lock {}", .path.display())]
    LockTimeout {
        /// The lock file.
        path: std::path::PathBuf,
        /// How long the wait lasted.
        waited: std::time::Duration,
    },
    /// A subnet that cannot hold sandboxes: loopback, link-local, multicast, "this network" or
    /// reserved addresses.
    #[error("subnet {subnet} is reserved: {reason}")]
    ReservedSubnet {
        /// The subnet that was asked for.
        subnet: crate::ipam::Subnet,
        /// The reserved range it overlaps.
        reason: &'static str,
    },
    /// The state directory cannot be trusted: not a directory, or owned by another user.
    #[error("state directory {} is unsafe: {reason}", .path.display())]
    InsecureStateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A sandbox asks for a bridge network with other isolation ([`crate::Bridge::isolate`])
    /// than the live sandboxes already on it have: isolation is the network's, so that no
    /// sandbox can reach an isolated one through a port that is not.
    #[error("bridge {bridge:?} has live sandboxes {}, and this one asks for the opposite", if *.isolated { "isolated from each other" } else { "not isolated from each other" })]
    IsolationMismatch {
        /// The bridge.
        bridge: String,
        /// Whether the sandboxes already on it are isolated.
        isolated: bool,
    },
    /// The bridge's name belongs to an existing link that is not a bridge (e.g. `lo`).
    #[error("link {name:?} exists and is not a bridge (kind {kind:?})")]
    NotABridge {
        /// The link's name.
        name: String,
        /// Its kind, absent for physical and loopback devices.
        kind: Option<String>,
    },
    /// A published port overlaps one that another live sandbox publishes: the same protocol
    /// and host port, on the same host address or with either on every address.
    #[error("host port {host_ip}:{port}/{proto} overlaps {other_ip}:{port}/{proto}, published by the sandbox of nftables table {table}")]
    PublishConflict {
        /// The protocol.
        proto: crate::proto::Proto,
        /// The host address asked for (`0.0.0.0`: every address).
        host_ip: std::net::Ipv4Addr,
        /// The host port.
        port: u16,
        /// The host address the other sandbox publishes the port on.
        other_ip: std::net::Ipv4Addr,
        /// The other sandbox's table (`palisade-<pid>-<start>`).
        table: String,
    },
    /// A network's state cannot be removed while live leases remain.
    #[error("network {network:?} still has {leases} live lease(s)")]
    NetworkInUse {
        /// The network name.
        network: String,
        /// How many live leases remain.
        leases: usize,
    },
}

impl Error {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Netlink { source, .. } => source.raw_os_error(),
            Error::NoSuchLink { .. } => Some(libc::ENODEV),
            Error::PortInUse { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
