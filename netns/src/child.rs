//! The network steps of a sandbox's child, made in its new network namespace between the clone
//! and `execve(2)`: bringing `lo` up and opening ICMP datagram sockets to the sandbox's groups.
//!
//! # Child safety
//!
//! Everything here may run in a child started with `CLONE_VM`, which shares the caller's memory
//! and thread-local storage: it allocates nothing, takes no lock, never panics, and never
//! touches libc's `errno` (rustix's raw calls, and the `syscalls` crate for the one `ioctl(2)`
//! rustix has no typed form of here), with static or caller-prepared data only.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use rustix::fs::{Mode, OFlags, CWD};
use rustix::io::{Errno, Result};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use syscalls::Sysno;

/// Sets `lo` up in the calling thread's network namespace (a new one starts with it down), with
/// the `SIOCGIFFLAGS`/`SIOCSIFFLAGS` requests of `netdevice(7)` on a datagram socket.
pub fn loopback_up() -> Result<()> {
    let sock = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero `ifreq` is valid (an empty name, no flags).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name[0] = b'l' as libc::c_char;
    ifr.ifr_name[1] = b'o' as libc::c_char;
    let request = |code: libc::c_ulong, ifr: &mut libc::ifreq| {
        // SAFETY: both requests read and write one `ifreq`, which lives on this stack for the
        // call; the socket is ours.
        unsafe {
            syscalls::syscall3(
                Sysno::ioctl,
                sock.as_raw_fd() as usize,
                code as usize,
                ifr as *mut libc::ifreq as usize,
            )
        }
        .map(drop)
        .map_err(|e| Errno::from_raw_os_error(e.into_raw()))
    };
    let result = request(libc::SIOCGIFFLAGS, &mut ifr).and_then(|()| {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        request(libc::SIOCSIFFLAGS, &mut ifr)
    });
    close(sock);
    result
}

/// Writes `range` (two group ids, e.g. `"0 2147483647"`) to `net.ipv4.ping_group_range`, which
/// belongs to the calling thread's network namespace whichever `/proc` it is reached through,
/// so that those groups may open ICMP datagram sockets (`icmp(7)`). A kernel without ping
/// sockets has no such file; `ping` then needs `CAP_NET_RAW` as before, and nothing is done.
pub fn set_ping_group_range(range: &CStr) -> Result<()> {
    let path = c"/proc/sys/net/ipv4/ping_group_range";
    let file = match rustix::fs::openat(CWD, path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
    {
        Err(Errno::NOENT) => return Ok(()),
        other => other?,
    };
    let written = rustix::io::write(&file, range.to_bytes());
    close(file);
    written.map(drop)
}

/// Closes `fd` without libc, whose `close` (`OwnedFd`'s drop) may write `errno`; the error is
/// of no use here.
fn close(fd: OwnedFd) {
    // SAFETY: the descriptor is owned, and given up here.
    let _ = unsafe { rustix::io::try_close(fd.into_raw_fd()) };
}
