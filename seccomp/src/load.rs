//! Installing filters with `seccomp(2)`.
//!
//! The kernel accepts a filter from a thread that either has `no_new_privs` set
//! ([`set_no_new_privs`], `prctl(2)` `PR_SET_NO_NEW_PRIVS`) or holds `CAP_SYS_ADMIN` in its user
//! namespace; otherwise `seccomp` fails with `EACCES`. Setting `no_new_privs` is left to the
//! caller because it also disables set-user-ID binaries and file capabilities for every later
//! `execve`, a decision that belongs to whoever builds the sandbox.
//!
//! A filter, once loaded, cannot be removed and is inherited by children and across `execve`.

use std::os::fd::{FromRawFd, OwnedFd};

use crate::bpf::BpfProgram;
use crate::error::{Error, Result};

/// The `seccomp(2)` operation that installs a filter.
pub const SECCOMP_SET_MODE_FILTER: libc::c_uint = libc::SECCOMP_SET_MODE_FILTER;
/// The `seccomp(2)` operation that reports the sizes of the user-notification structures.
pub const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = libc::SECCOMP_GET_NOTIF_SIZES;

bitflags::bitflags! {
    /// `SECCOMP_FILTER_FLAG_*`: how `seccomp(SECCOMP_SET_MODE_FILTER)` installs a filter.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct LoadFlags: libc::c_ulong {
        /// Install the filter on every thread of the process, failing if one cannot take it
        /// (`SECCOMP_FILTER_FLAG_TSYNC`).
        const TSYNC = libc::SECCOMP_FILTER_FLAG_TSYNC;
        /// Log every action except `Allow` (`SECCOMP_FILTER_FLAG_LOG`).
        const LOG = libc::SECCOMP_FILTER_FLAG_LOG;
        /// Do not force the speculative store bypass mitigation (`SECCOMP_FILTER_FLAG_SPEC_ALLOW`).
        const SPEC_ALLOW = libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
        /// Return a user-notification listener fd (`SECCOMP_FILTER_FLAG_NEW_LISTENER`). Cannot be
        /// combined with `TSYNC` unless `TSYNC_ESRCH` is set too.
        const NEW_LISTENER = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        /// Report a `TSYNC` failure as `ESRCH` instead of a thread id
        /// (`SECCOMP_FILTER_FLAG_TSYNC_ESRCH`).
        const TSYNC_ESRCH = libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        /// Make a notified task wait killably once the supervisor has received the notification
        /// (`SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, Linux 5.19).
        const WAIT_KILLABLE_RECV = libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    }
}

/// Sets `no_new_privs` on the calling thread (`prctl(PR_SET_NO_NEW_PRIVS, 1)`), which lets an
/// unprivileged thread load filters. Irreversible; inherited across `fork` and `execve`. Does not
/// allocate.
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(Error::last_os("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    Ok(())
}

/// Installs the filter described by `fprog` on the calling thread with one `seccomp(2)` call,
/// returning the listener when `flags` has [`LoadFlags::NEW_LISTENER`].
///
/// Does not allocate, so a child can call it between `clone` and `execve` with a `sock_fprog`
/// prepared by the parent ([`BpfProgram::sock_fprog`]). The kernel copies the instructions; a
/// bad pointer makes it fail with `EFAULT`, it never writes through it.
pub fn load_fprog(fprog: &libc::sock_fprog, flags: LoadFlags) -> Result<Option<OwnedFd>> {
    // SAFETY: the kernel only reads `*fprog` and the instructions it points to, and reports a
    // bad pointer as EFAULT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags.bits(),
            fprog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(Error::last_os("seccomp(SECCOMP_SET_MODE_FILTER)"));
    }
    if flags.contains(LoadFlags::NEW_LISTENER) {
        // File descriptors fit in c_int; the kernel returns one for NEW_LISTENER.
        let fd = rc as libc::c_int;
        // SAFETY: with NEW_LISTENER, a successful seccomp returns a new fd that nothing else
        // owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    Ok(None)
}

impl BpfProgram {
    /// Installs the program on the calling thread (or, with [`LoadFlags::TSYNC`], the whole
    /// process); see [`load_fprog`]. Needs `no_new_privs` or `CAP_SYS_ADMIN`. Does not allocate.
    pub fn load(&self, flags: LoadFlags) -> Result<Option<OwnedFd>> {
        load_fprog(&self.sock_fprog(), flags)
    }
}
