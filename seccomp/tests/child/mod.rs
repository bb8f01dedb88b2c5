//! Running code in a forked child, so that filters are only ever loaded there and never in the
//! test process.
#![allow(dead_code)]

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Forks, runs `f` in the child and `_exit`s with its result; returns how the child ended.
///
/// The test harness is multi-threaded, so `f` must not allocate or take locks: prepare
/// everything (compiled programs, C strings) before calling this.
pub fn in_child(f: impl FnOnce() -> i32) -> Exit {
    wait(spawn(f))
}

/// Like [`in_child`] but returns the child's pid at once; the caller must [`wait`] for it.
pub fn spawn(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child only runs `f`, which by contract is async-signal-safe, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = f();
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for `pid` to end.
pub fn wait(pid: libc::pid_t) -> Exit {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR)
        );
    }
    if libc::WIFEXITED(status) {
        Exit::Code(libc::WEXITSTATUS(status))
    } else {
        Exit::Signal(libc::WTERMSIG(status))
    }
}

/// The errno of the last failed call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs a raw syscall with up to three arguments, returning `Ok(value)` or `Err(errno)`.
pub fn sys(nr: libc::c_long, a: u64, b: u64, c: u64) -> Result<i64, i32> {
    // SAFETY: callers pass syscalls whose arguments are plain integers or valid pointers.
    let rc = unsafe { libc::syscall(nr, a, b, c) };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc)
    }
}
