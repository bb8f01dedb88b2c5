//! IPv6 on the links the library makes: off, since no network of the library carries IPv6.
//!
//! A link that comes up with IPv6 on gets a link-local address and, with the default
//! `accept_ra`, takes the router advertisements it hears. On a bridge shared by sandboxes, one
//! sandbox's forged advertisement would give the host's bridge and every other sandbox an
//! address and a default route that outlive it. So before the library brings a link up it sets
//! `net.ipv6.conf.<link>.accept_ra = 0` and `net.ipv6.conf.<link>.disable_ipv6 = 1`
//! (`ip-sysctl` in the kernel's documentation): with IPv6 disabled the link gets no address at
//! all, not even link-local, and the kernel drops every IPv6 packet arriving on it.
//!
//! When networks configured for IPv6 are added, these links will keep IPv6 on, and the bridge
//! must then drop router advertisements and DHCPv6 server traffic coming from sandboxes instead.
//!
//! The settings are sysctls of the network namespace the writer's thread is in, whichever `/proc`
//! they are reached through; [`disable_ipv6_in`] writes them from a short-lived thread that joins
//! the target namespace, so the calling thread never changes namespace.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::Path;

use super::thread::{in_netns, setns_error};
use super::validate_name;
use crate::{Error, Result};

/// Where the per-link IPv6 settings live; missing when the kernel has no IPv6 (built without it,
/// or booted with `ipv6.disable=1`).
const CONF: &str = "/proc/sys/net/ipv6/conf";

/// The settings written, in order: advertisements are refused even if IPv6 is enabled again
/// later, then IPv6 goes off (which removes any address the link has).
const SETTINGS: [(&str, &str); 2] = [("accept_ra", "0"), ("disable_ipv6", "1")];

/// Turns IPv6 off on `link` in the calling thread's network namespace: `accept_ra` 0 and
/// `disable_ipv6` 1. Done before the link goes up, it never gets an IPv6 address; done on a link
/// that is up, it loses the addresses it has. A kernel without IPv6 needs nothing.
///
/// # Errors
/// [`Error::InvalidValue`] for a bad link name, and [`Error::Io`] naming the sysctl file for a
/// failed write (`ENOENT` when there is no such link).
pub fn disable_ipv6(link: &str) -> Result<()> {
    validate_name(link)?;
    if !Path::new(CONF).is_dir() {
        return Ok(());
    }
    for (key, value) in SETTINGS {
        let path = format!("{CONF}/{link}/{key}");
        // Opened without O_CREAT or O_TRUNC: a sysctl file is only ever written whole.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| Error::Io {
                op: "write",
                target: path,
                source,
            })?;
    }
    Ok(())
}

/// [`disable_ipv6`] for `link` in the network namespace `netns_fd` refers to (a
/// `/proc/<pid>/ns/net` file, a bind mount of one, or a pidfd), written from a short-lived
/// thread that joins it with `setns(2)`.
///
/// # Errors
/// As [`disable_ipv6`], and [`Error::Io`] if joining the namespace fails.
pub fn disable_ipv6_in(netns_fd: BorrowedFd<'_>, link: &str) -> Result<()> {
    in_netns(netns_fd, || disable_ipv6(link)).map_err(setns_error(netns_fd))?
}
