//! `unshare(2)` and `setns(2)`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::error::{cvt, Error, Result};
use crate::Namespace;

/// Moves the calling thread into new namespaces of the given kinds (`unshare(2)`).
///
/// For [`Namespace::PID`] and [`Namespace::TIME`] the caller itself stays where it is: only its
/// children are born in the new namespace (see `pid_namespaces(7)`, `time_namespaces(7)`).
/// [`Namespace::USER`] requires a single-threaded caller. [`Namespace::MOUNT`] in a thread gives
/// that thread its own mount namespace (and its own filesystem information, as `CLONE_FS` is
/// undone).
pub fn unshare(namespaces: Namespace) -> Result<()> {
    // SAFETY: unshare takes a flags word and touches no memory of ours.
    cvt(unsafe { libc::unshare(namespaces.as_raw()) } as libc::c_long)
        .map(drop)
        .map_err(|source| Error::Unshare { namespaces, source })
}

/// Moves the calling thread into existing namespaces (`setns(2)`).
///
/// `fd` is either a namespace file (see [`NsFile`](crate::NsFile)), in which case `namespaces` is
/// the one kind it must be (or empty for "any"), or a pidfd (Linux 5.8), in which case the thread
/// joins the listed namespaces of that process all at once, atomically: either all or none.
pub fn setns(fd: BorrowedFd<'_>, namespaces: Namespace) -> Result<()> {
    // SAFETY: setns takes an fd and a flags word; `fd` is open for the duration of the call.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), namespaces.as_raw()) };
    if ret == -1 {
        return Err(Error::Setns {
            namespaces,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
