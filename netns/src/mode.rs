//! The sandbox's network, as `docker run --network` names the modes.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// `NS_GET_NSTYPE` of `ioctl_ns(2)`: `_IO(0xb7, 0x3)`.
// `libc::Ioctl`: the request is an `unsigned long` in glibc and an `int` in musl.
const NS_GET_NSTYPE: libc::Ioctl = 0xb703;

/// Which network stack a sandbox gets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Network {
    /// A network namespace of its own with only the loopback interface, up (`--network none`).
    None,
    /// The host's network stack: no network namespace (`--network host`).
    Host,
    /// Another sandbox's or process's network namespace (`--network container:X`).
    Join(NetnsRef),
    /// A namespace of its own on a bridge, with an address, a default route, outbound NAT and
    /// published ports (`--network bridge`); see [`crate::bridge`].
    Bridge(crate::Bridge),
}

impl Network {
    /// [`Network::None`].
    pub fn none() -> Network {
        Network::None
    }

    /// [`Network::Host`].
    pub fn host() -> Network {
        Network::Host
    }

    /// The bridge `bridge` ([`Bridge::default`](crate::Bridge::default) is `palisade0` on
    /// `10.213.0.0/16`).
    pub fn bridge(bridge: crate::Bridge) -> Network {
        Network::Bridge(bridge)
    }

    /// Joins the network namespace of process `pid` (e.g. another sandbox's init).
    pub fn join_pid(pid: i32) -> Network {
        Network::Join(NetnsRef::Pid(pid))
    }

    /// Joins the network namespace at `path` (a `/proc/<pid>/ns/net` file or a bind mount of
    /// one, as `ip netns add` makes under `/run/netns`).
    pub fn join_path(path: impl Into<PathBuf>) -> Network {
        Network::Join(NetnsRef::Path(path.into()))
    }
}

/// A network namespace to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsRef {
    /// The namespace of a process.
    Pid(i32),
    /// A namespace file.
    Path(PathBuf),
}

impl NetnsRef {
    /// The namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            NetnsRef::Path(p) => p.clone(),
        }
    }

    /// Opens the namespace file and checks that it is a network namespace (`ioctl_ns(2)`
    /// `NS_GET_NSTYPE`), for `setns(2)`.
    pub fn open(&self) -> Result<OwnedFd> {
        let path = self.path();
        let file = File::open(&path).map_err(|source| Error::Io {
            op: "open network namespace",
            target: path.display().to_string(),
            source,
        })?;
        // SAFETY: an ioctl without arguments on a descriptor we own.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(Error::InvalidValue {
                what: "network namespace",
                value: path.display().to_string(),
                reason: "is not a network namespace file",
            });
        }
        Ok(OwnedFd::from(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_refs_name_their_files() {
        assert_eq!(NetnsRef::Pid(42).path(), PathBuf::from("/proc/42/ns/net"));
        let own = Network::join_pid(std::process::id() as i32);
        let Network::Join(r) = own else {
            unreachable!()
        };
        assert!(r.open().is_ok());
        let not_net = NetnsRef::Path(PathBuf::from("/proc/self/ns/uts")).open();
        assert!(matches!(not_net, Err(Error::InvalidValue { .. })));
        let missing = NetnsRef::Pid(-1).open();
        assert!(matches!(missing, Err(Error::Io { .. })));
    }
}
