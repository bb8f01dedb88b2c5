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
/// unprivileged thread load filters. Irreversible; inherited across `fork` and `execve`.
///
/// # Child safety
///
/// One raw `prctl(2)` through rustix: no allocation, no lock, no `errno`, no panic.
pub fn set_no_new_privs() -> Result<()> {
    rustix::thread::set_no_new_privs(true)
        .map_err(|errno| Error::sys("prctl(PR_SET_NO_NEW_PRIVS)", errno))
}

/// `seccomp(op, flags, args)`: the workspace's only `seccomp(2)` call site, issued with the
/// `syscalls` crate's inline system-call instruction, so it returns the kernel's error value
/// instead of writing `errno`.
///
/// # Safety
///
/// `args` must be what `op` expects (`seccomp(2)`): for `SECCOMP_SET_MODE_FILTER` a readable
/// `struct sock_fprog`, for `SECCOMP_GET_NOTIF_SIZES` a writable `struct seccomp_notif_sizes`.
pub(crate) unsafe fn seccomp(
    op: libc::c_uint,
    flags: libc::c_ulong,
    args: *mut libc::c_void,
) -> rustix::io::Result<usize> {
    // SAFETY: the caller vouches for `args`; the other two are plain integers.
    unsafe {
        syscalls::syscall3(
            syscalls::Sysno::seccomp,
            op as usize,
            flags as usize,
            args as usize,
        )
    }
    .map_err(|errno| rustix::io::Errno::from_raw_os_error(errno.into_raw()))
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, fprog)`: installs the filter `fprog` describes on
/// the calling thread, returning the user-notification listener when `flags` has
/// [`LoadFlags::NEW_LISTENER`] (close-on-exec, `seccomp(2)`). The typed, errno-free form of
/// [`load_fprog`], which every other loader goes through.
///
/// Needs `no_new_privs` or `CAP_SYS_ADMIN`, else `EACCES`. The kernel copies the instructions;
/// a bad pointer inside `fprog` makes it fail with `EFAULT`, it never writes through it.
///
/// # Child safety
///
/// One raw system call on data the caller prepared ([`BpfProgram::sock_fprog`]): no
/// allocation, no lock, no `errno`, no panic. Usable in a child between `clone` (even with
/// `CLONE_VM`) and `execve`.
pub fn set_mode_filter(
    fprog: &libc::sock_fprog,
    flags: LoadFlags,
) -> rustix::io::Result<Option<OwnedFd>> {
    let args = (fprog as *const libc::sock_fprog).cast_mut().cast();
    // SAFETY: SECCOMP_SET_MODE_FILTER only reads `*fprog` and the instructions it points to,
    // and reports a bad pointer as EFAULT.
    let ret = unsafe { seccomp(SECCOMP_SET_MODE_FILTER, flags.bits(), args) }?;
    if !flags.contains(LoadFlags::NEW_LISTENER) {
        return Ok(None);
    }
    // A descriptor is a non-negative c_int; anything else would not be one.
    let fd = libc::c_int::try_from(ret).map_err(|_| rustix::io::Errno::BADF)?;
    // SAFETY: with NEW_LISTENER, a successful seccomp returns a new descriptor that nothing
    // else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Installs the filter described by `fprog` on the calling thread with one `seccomp(2)` call,
/// returning the listener when `flags` has [`LoadFlags::NEW_LISTENER`]; [`set_mode_filter`]
/// with this crate's [`Error`].
///
/// # Child safety
///
/// As [`set_mode_filter`]: no allocation, no lock, no `errno`, no panic, so a child can call it
/// between `clone` and `execve` with a `sock_fprog` prepared by the parent
/// ([`BpfProgram::sock_fprog`]).
pub fn load_fprog(fprog: &libc::sock_fprog, flags: LoadFlags) -> Result<Option<OwnedFd>> {
    set_mode_filter(fprog, flags)
        .map_err(|errno| Error::sys("seccomp(SECCOMP_SET_MODE_FILTER)", errno))
}

impl BpfProgram {
    /// Installs the program on the calling thread (or, with [`LoadFlags::TSYNC`], the whole
    /// process); [`load_raw`](Self::load_raw) with this crate's [`Error`]. Needs
    /// `no_new_privs` or `CAP_SYS_ADMIN`.
    ///
    /// # Child safety
    ///
    /// As [`set_mode_filter`]: no allocation, no lock, no `errno`, no panic.
    pub fn load(&self, flags: LoadFlags) -> Result<Option<OwnedFd>> {
        load_fprog(&self.sock_fprog(), flags)
    }

    /// Installs the program on the calling thread (or, with [`LoadFlags::TSYNC`], the whole
    /// process), returning the kernel's error as is: [`set_mode_filter`] on
    /// [`sock_fprog`](Self::sock_fprog). The listener comes back when `flags` has
    /// [`LoadFlags::NEW_LISTENER`].
    ///
    /// # Child safety
    ///
    /// No allocation, no lock, no `errno`, no panic: safe in a child that shares its parent's
    /// memory (`CLONE_VM`), with a program the parent compiled.
    pub fn load_raw(&self, flags: LoadFlags) -> rustix::io::Result<Option<OwnedFd>> {
        set_mode_filter(&self.sock_fprog(), flags)
    }
}
