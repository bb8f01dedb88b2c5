//! Work in another network namespace without moving the calling thread: a short-lived thread
//! joins the namespace, does the work and ends. Sockets it opens stay in that namespace
//! (`network_namespaces(7)`): this is how the rtnetlink socket of
//! [`Netlink::open_in`](super::Netlink::open_in) and the per-link sysctl files of
//! [`disable_ipv6_in`](super::disable_ipv6_in) are reached.

use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::Error;

/// Runs `f` in a short-lived thread that has joined the network namespace `fd` (a namespace fd,
/// or a pidfd on Linux ≥ 5.8) with `setns(2)`, so that the calling thread never changes
/// namespace. Sockets `f` creates stay in that namespace (`network_namespaces(7)`). The error is
/// that of `setns`.
pub(crate) fn in_netns<T: Send>(
    fd: BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    let raw = fd.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns only reads the fd, kept open by the borrow for the whole scope; it
            // changes the namespace of this short-lived thread only.
            if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// [`Error::Io`] for a failed `setns(2)` into the namespace `fd`.
pub(crate) fn setns_error(fd: BorrowedFd<'_>) -> impl FnOnce(std::io::Error) -> Error {
    let target = format!("fd {}", fd.as_raw_fd());
    move |source| Error::Io {
        op: "setns(CLONE_NEWNET) into",
        target,
        source,
    }
}
