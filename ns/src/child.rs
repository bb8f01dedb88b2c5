//! The calls a freshly cloned child makes on its way to `execve(2)` that `rustix` does not offer:
//! ending the process, executing, closing every descriptor but some, and setting the signal
//! mask and dispositions a new program expects.
//!
//! They follow rustix's shape (borrowed descriptors, `&CStr`, typed values, [`Errno`] results)
//! and are made on the [`syscalls`] crate's raw system calls, so that:
//!
//! - no function here allocates, takes a lock, panics, or reads or writes libc's `errno`;
//! - each is therefore safe in a child started with `CLONE_VM` ([`crate::clone3_with_stack`]),
//!   which shares the caller's memory and thread-local storage (its `errno` included) while the
//!   caller's threads run on, and in a child forked from a multi-threaded process.
//!
//! # Which rustix calls the spawn's child uses
//!
//! rustix's `linux_raw` backend (the default on Linux; nothing in the workspace enables
//! `use-libc`) issues each call with inline assembly and returns the kernel's error as its
//! `Errno`, never touching `errno`. With `&CStr` path arguments (its `path::Arg` passes them
//! through unchanged) and borrowed descriptors, the following allocate nothing and are
//! async-signal-safe, and are the rustix calls the child makes: `io::{read, write, close,
//! dup3, fcntl_setfd}`, `fs::{openat, openat2, mkdirat, fstatfs}`, `process::{chdir, fchdir,
//! umask, kill_process, prlimit, getppid, set_parent_process_death_signal}`,
//! `thread::{unshare, move_into_link_name_space, set_thread_res_uid, set_thread_res_gid,
//! set_thread_groups, set_capabilities, set_keep_capabilities,
//! remove_capability_from_bounding_set, clear_ambient_capability_set,
//! configure_capability_in_ambient_set, set_no_new_privs}`, `mount::{mount, mount_change,
//! fsopen, fsconfig_*, fsmount, move_mount, open_tree}`, `pipe::pipe_with`,
//! `net::{socket_with, sendmsg}` (with a caller-provided ancillary buffer), `event::poll`,
//! `system::sethostname`. Paths given as `&str` or `&Path` instead may be copied into a heap
//! buffer when long, so the child never passes those.

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::io::{Errno, Result};
use syscalls::Sysno;

/// The kernel's error of a raw system call result, as rustix's [`Errno`].
fn errno(e: syscalls::Errno) -> Errno {
    Errno::from_raw_os_error(e.into_raw())
}

/// Ends the calling process (`exit_group(2)`), every thread of it, with `code`.
pub fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        let _ = unsafe { syscalls::syscall1(Sysno::exit_group, code as usize) };
    }
}

/// A NULL-terminated array of pointers to NUL-terminated strings, as `execve(2)` takes for
/// `argv` and `envp`, borrowed from its owner.
#[derive(Debug, Clone, Copy)]
pub struct ExecArray<'a>(&'a [*const c_char]);

impl<'a> ExecArray<'a> {
    /// Wraps `ptrs`, which must end with a null pointer (else `EINVAL`).
    ///
    /// # Safety
    ///
    /// Every pointer before the final null must point to a NUL-terminated string that lives,
    /// unchanged, as long as `'a`.
    pub unsafe fn new(ptrs: &'a [*const c_char]) -> Result<ExecArray<'a>> {
        match ptrs.last() {
            Some(p) if p.is_null() => Ok(ExecArray(ptrs)),
            _ => Err(Errno::INVAL),
        }
    }

    /// An array holding nothing: `{ NULL }`.
    pub const EMPTY: ExecArray<'static> = ExecArray(&[std::ptr::null()]);
}

/// Executes `path` with `argv` and `envp` (`execve(2)`); returns only on failure, with the
/// error.
pub fn execve(path: &CStr, argv: ExecArray<'_>, envp: ExecArray<'_>) -> Errno {
    // SAFETY: execve reads a NUL-terminated path and two NULL-terminated arrays of
    // NUL-terminated strings, which `ExecArray` guarantees and which outlive the call.
    let ret = unsafe {
        syscalls::syscall3(
            Sysno::execve,
            path.as_ptr() as usize,
            argv.0.as_ptr() as usize,
            envp.0.as_ptr() as usize,
        )
    };
    match ret {
        Err(e) => errno(e),
        Ok(_) => Errno::NOEXEC,
    }
}

/// Executes the file `fd` refers to (`execveat(2)` with an empty path and `AT_EMPTY_PATH`), as
/// `fexecve(3)` does; returns only on failure, with the error.
pub fn fexecve(fd: BorrowedFd<'_>, argv: ExecArray<'_>, envp: ExecArray<'_>) -> Errno {
    // SAFETY: as for `execve`, with an empty path and a descriptor borrowed for the call.
    let ret = unsafe {
        syscalls::syscall5(
            Sysno::execveat,
            fd.as_raw_fd() as usize,
            c"".as_ptr() as usize,
            argv.0.as_ptr() as usize,
            envp.0.as_ptr() as usize,
            libc::AT_EMPTY_PATH as usize,
        )
    };
    match ret {
        Err(e) => errno(e),
        Ok(_) => Errno::NOEXEC,
    }
}

/// Closes every descriptor of this process from `first` to `last` (`close_range(2)`, Linux 5.9).
pub fn close_range(first: u32, last: u32) -> Result<()> {
    // SAFETY: close_range takes integers; it only closes descriptors of this process.
    unsafe { syscalls::syscall3(Sysno::close_range, first as usize, last as usize, 0) }
        .map(drop)
        .map_err(errno)
}

/// Closes every descriptor of this process but those in `keep`, which must be ascending
/// (negative entries are ignored): with [`close_range`] on the gaps, or, on a kernel without
/// it, one by one up to the `RLIMIT_NOFILE` soft limit.
pub fn close_all_but(keep: &[RawFd]) {
    let mut from = 0u32;
    let mut ok = true;
    for &fd in keep {
        if fd < 0 {
            continue;
        }
        let fd = fd as u32;
        if fd > from {
            ok &= close_range(from, fd - 1).is_ok();
        }
        from = from.max(fd.saturating_add(1));
    }
    ok &= close_range(from, u32::MAX).is_ok();
    if ok {
        return;
    }
    let max = match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        Some(n) => n.min(1 << 20) as RawFd,
        None => 1 << 20,
    };
    for fd in 0..max {
        if !keep.contains(&fd) {
            // SAFETY: close takes an integer; an unused number gives EBADF, which is fine.
            let _ = unsafe { syscalls::syscall1(Sysno::close, fd as usize) };
        }
    }
}

/// Closes `fd` (`close(2)`) without libc: `OwnedFd`'s drop goes through libc's `close`, which
/// writes `errno` when it fails, so the child consumes its descriptors with this instead. An
/// error is of no use to the child (the descriptor is gone either way) and is ignored.
pub fn close(fd: OwnedFd) {
    // SAFETY: the descriptor is owned, and given up here.
    unsafe { close_raw(fd.into_raw_fd()) }
}

/// Closes the descriptor numbered `fd` (`close(2)`) without libc, ignoring errors: for the
/// child's copy of a descriptor whose owner is the parent's (a child without `CLONE_FILES` has
/// a descriptor table of its own).
///
/// # Safety
///
/// Nothing in the calling process may use `fd` afterwards.
pub unsafe fn close_raw(fd: RawFd) {
    // SAFETY: close takes an integer; the caller gives the descriptor up.
    let _ = unsafe { syscalls::syscall1(Sysno::close, fd as usize) };
}

/// Gives the process a copy of `fd` numbered `target`, which is not close-on-exec (`dup3(2)`;
/// when `fd` already is `target`, only its close-on-exec flag is cleared, `fcntl(2)`): how a
/// child places the descriptors its program is to inherit. A descriptor that was `target`
/// before is closed first, as `dup3(2)` does.
pub fn install_fd(fd: BorrowedFd<'_>, target: RawFd) -> Result<()> {
    let raw = fd.as_raw_fd();
    if target < 0 {
        return Err(Errno::BADF);
    }
    // SAFETY: dup3 and fcntl take integers and change this process's descriptor table only.
    let ret = unsafe {
        if raw == target {
            syscalls::syscall3(Sysno::fcntl, raw as usize, libc::F_SETFD as usize, 0)
        } else {
            syscalls::syscall3(Sysno::dup3, raw as usize, target as usize, 0)
        }
    };
    ret.map(drop).map_err(errno)
}

/// Forks the calling process (`clone(2)` with only `SIGCHLD`, as `fork(2)` does, without libc's
/// `atfork` handlers): `Some(pid)` in the parent, `None` in the child. For kernels without
/// `clone3(2)`, where a child cannot be started on a stack of its own.
///
/// # Safety
///
/// The child is a copy of a process that may hold locks of other threads: it may only make
/// calls that are safe after `fork(2)` in a multi-threaded process until it executes or exits.
pub unsafe fn fork() -> Result<Option<i32>> {
    // SAFETY: a clone with no flag but the exit signal and no stack: fork semantics. The
    // caller keeps to what is safe in the child.
    let pid = unsafe { syscalls::syscall5(Sysno::clone, libc::SIGCHLD as usize, 0, 0, 0, 0) }
        .map_err(errno)?;
    Ok((pid != 0).then_some(pid as i32))
}

/// Kills the child `pid` with `SIGKILL` and waits until it is gone (`wait4(2)` with `__WALL`, so
/// that a child cloned with any exit signal is reaped). After this, nothing of the child runs,
/// so memory it was using (a stack in a `CLONE_VM` parent's frame) may be reused.
pub fn kill_and_wait(pid: i32) -> Result<()> {
    // SAFETY: kill and wait4 take integers; wait4 is given no status or usage buffer.
    unsafe {
        syscalls::syscall2(Sysno::kill, pid as usize, libc::SIGKILL as usize).map_err(errno)?;
        loop {
            match syscalls::syscall4(Sysno::wait4, pid as usize, 0, libc::__WALL as usize, 0) {
                Err(e) if e.into_raw() == libc::EINTR => {}
                other => return other.map(drop).map_err(errno),
            }
        }
    }
}

/// Forks the calling process as a sibling: the child's parent is the caller's parent
/// (`clone(2)` with `CLONE_PARENT`), which is told of its end with `SIGCHLD` and waits for it.
/// `Some(pid)` in the caller, `None` in the child. For a process that has joined a PID or time
/// namespace with `setns(2)`, which only its children enter, and that must leave the one who
/// started it their parent.
///
/// # Safety
///
/// As for [`fork`].
pub unsafe fn fork_sibling() -> Result<Option<i32>> {
    let flags = libc::CLONE_PARENT as usize | libc::SIGCHLD as usize;
    // SAFETY: fork semantics with the parent shared; the caller keeps to what is safe in the
    // child.
    let pid = unsafe { syscalls::syscall5(Sysno::clone, flags, 0, 0, 0, 0) }.map_err(errno)?;
    Ok((pid != 0).then_some(pid as i32))
}

/// A set of signals as the kernel takes it (`sigset_t` of the system calls: one bit per signal,
/// 64 signals), for [`set_signal_mask`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalSet(u64);

impl SignalSet {
    /// No signal.
    pub const EMPTY: SignalSet = SignalSet(0);

    /// The set of `signals` (numbers 1 to 64; others are ignored).
    pub fn of(signals: &[i32]) -> SignalSet {
        SignalSet(
            signals
                .iter()
                .filter(|&&s| (1..=64).contains(&s))
                .fold(0, |set, &s| set | 1 << (s - 1)),
        )
    }

    /// Whether `signal` is in the set.
    pub fn contains(&self, signal: i32) -> bool {
        (1..=64).contains(&signal) && self.0 & (1 << (signal - 1)) != 0
    }

    /// The set as the kernel's bit mask.
    pub fn bits(&self) -> u64 {
        self.0
    }
}

/// Sets the calling thread's blocked signals to `set` (`rt_sigprocmask(2)`, `SIG_SETMASK`).
pub fn set_signal_mask(set: &SignalSet) -> Result<()> {
    // SAFETY: rt_sigprocmask reads one 8-byte set from a live reference and, with a NULL old
    // set, writes nothing.
    unsafe {
        syscalls::syscall4(
            Sysno::rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &set.0 as *const u64 as usize,
            0,
            std::mem::size_of::<u64>(),
        )
    }
    .map(drop)
    .map_err(errno)
}

/// The kernel's `struct sigaction` of `rt_sigaction(2)` on x86-64 (not libc's, which differs).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Gives `signal` its default disposition (`SIG_DFL`, `rt_sigaction(2)`). Ignored signals stay
/// ignored across `execve(2)`, and the Rust runtime ignores `SIGPIPE`, so a child resets it
/// before executing a program that expects the default.
pub fn set_default_action(signal: i32) -> Result<()> {
    let action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: rt_sigaction reads one sigaction from this stack and, with a NULL old action,
    // writes nothing.
    unsafe {
        syscalls::syscall4(
            Sysno::rt_sigaction,
            signal as usize,
            &action as *const KernelSigaction as usize,
            0,
            std::mem::size_of::<u64>(),
        )
    }
    .map(drop)
    .map_err(errno)
}

/// Writes `n` in decimal, NUL-terminated, into `buf` and returns it as a C string, without
/// allocating: for an argument vector built after the clone.
pub fn decimal(n: i64, buf: &mut [u8; 24]) -> &CStr {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut v = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut at = 0;
    if n < 0 {
        buf[0] = b'-';
        at = 1;
    }
    for i in 0..len {
        buf[at + i] = digits[len - 1 - i];
    }
    buf[at + len] = 0;
    // The bytes up to and including the NUL just written contain no other NUL.
    CStr::from_bytes_with_nul(&buf[..=at + len]).unwrap_or(c"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut buf = [0u8; 24];
        for n in [0i64, 7, -1, 42, 2147483647, -2147483648, i64::MIN, i64::MAX] {
            assert_eq!(decimal(n, &mut buf).to_str().unwrap(), n.to_string());
        }
    }

    #[test]
    fn signal_sets_hold_their_signals_only() {
        let set = SignalSet::of(&[libc::SIGCHLD, libc::SIGTERM, 0, 65]);
        assert!(set.contains(libc::SIGCHLD) && set.contains(libc::SIGTERM));
        assert!(!set.contains(libc::SIGKILL) && !set.contains(0) && !set.contains(65));
        assert_eq!(set.bits().count_ones(), 2);
        assert_eq!(SignalSet::EMPTY.bits(), 0);
    }

    #[test]
    fn exec_arrays_must_end_with_null() {
        let strings = [c"a".as_ptr()];
        // SAFETY: the pointer is a static C string.
        let refused = unsafe { ExecArray::new(&strings) };
        assert_eq!(refused.unwrap_err(), Errno::INVAL);
        let ok = [c"a".as_ptr(), std::ptr::null()];
        // SAFETY: as above.
        assert!(unsafe { ExecArray::new(&ok) }.is_ok());
    }

    #[test]
    fn a_failed_exec_reports_the_error_without_errno() {
        // SAFETY: errno is this thread's; the call below must leave it alone.
        unsafe { *libc::__errno_location() = 0 };
        let err = execve(c"/nonexistent/palisade", ExecArray::EMPTY, ExecArray::EMPTY);
        assert_eq!(err, Errno::NOENT);
        // SAFETY: as above.
        assert_eq!(unsafe { *libc::__errno_location() }, 0);
    }

    #[test]
    fn the_signal_mask_is_set_and_read_back() {
        // In a thread of its own, so the test harness's threads keep their masks.
        std::thread::spawn(|| {
            let set = SignalSet::of(&[libc::SIGUSR2]);
            set_signal_mask(&set).unwrap();
            let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: pthread_sigmask with a NULL new set only writes the current mask.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), old.as_mut_ptr());
                assert_eq!(libc::sigismember(old.as_ptr(), libc::SIGUSR2), 1);
                assert_eq!(libc::sigismember(old.as_ptr(), libc::SIGUSR1), 0);
            }
        })
        .join()
        .unwrap();
    }
}
