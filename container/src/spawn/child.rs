//! The child side of a spawn: what runs between `clone3(2)` and `execve(2)`.
//!
//! Everything here is a system call on data prepared by the parent ([`Plan`], [`ChildFds`]): no
//! allocation, no locks, no panics — the child is a copy of a possibly multi-threaded process, in
//! which any lock may be held by a thread that no longer exists. A failing step writes
//! `(step, errno)` to the close-on-exec error pipe and exits with status 127.

use std::os::fd::RawFd;

use palisade_ns::SetGroups;

use super::init;
use super::plan::Plan;
use crate::error::ChildStep;

/// The descriptors the child works with, as raw numbers (`-1`: none).
#[derive(Debug)]
pub(crate) struct ChildFds {
    /// Write end of the error pipe.
    pub err_w: RawFd,
    /// Read end of the pipe on which the parent says the id maps are written.
    pub sync_r: RawFd,
    /// Write end of the pipe on which the init reports the command's wait status.
    pub status_w: RawFd,
    /// What to install as fds 0, 1, 2 (`-1`: inherit).
    pub stdio: [RawFd; 3],
    /// The parent's ends of all pipes, closed first thing.
    pub parent_ends: [RawFd; 6],
    /// A pidfd of the parent, to notice that it died before `PR_SET_PDEATHSIG` took effect when
    /// `getppid(2)` cannot tell (in a new PID namespace it returns 0).
    pub parent_pidfd: RawFd,
    /// The parent's pid, in the parent's PID namespace.
    pub parent_pid: libc::pid_t,
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() }
}

/// Reports `step` with the current `errno` and exits.
pub(super) fn fail(fds: &ChildFds, step: ChildStep) -> ! {
    fail_with(fds, step, errno())
}

pub(super) fn fail_with(fds: &ChildFds, step: ChildStep, errno: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writing 8 bytes from a live buffer (atomic on a pipe: below PIPE_BUF); then
    // _exit, which never returns and runs no destructors or atexit handlers.
    unsafe {
        libc::write(fds.err_w, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

fn check(fds: &ChildFds, step: ChildStep, ret: libc::c_long) {
    if ret == -1 {
        fail(fds, step);
    }
}

/// Runs the child's steps and executes the program (or the init). Never returns.
///
/// # Safety
///
/// Must be called only in a freshly cloned child, with `plan` and `fds` prepared by the parent.
pub(crate) unsafe fn run(plan: &Plan, fds: &ChildFds) -> ! {
    // SAFETY: for the whole body, every call below is a system call (or a libc wrapper that makes one
    // without locking or allocating) on prepared, NUL-terminated data that outlives the child.
    unsafe {
        for fd in fds.parent_ends {
            if fd >= 0 {
                libc::close(fd);
            }
        }

        if plan.die_with_parent {
            let ret = libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            check(fds, ChildStep::DeathSignal, ret.into());
            if parent_died(fds) {
                libc::_exit(1);
            }
        }

        if let Some(user) = &plan.user {
            // Wait until the parent has written uid_map/gid_map. EOF means it gave up (and is
            // reporting its own error), so leave quietly.
            let mut byte = 0u8;
            loop {
                let n = libc::read(fds.sync_r, (&mut byte as *mut u8).cast(), 1);
                if n == 1 {
                    break;
                }
                if n == -1 && errno() == libc::EINTR {
                    continue;
                }
                libc::_exit(1);
            }
            libc::close(fds.sync_r);
            // Raw system calls: glibc's wrappers would try to synchronise with threads that
            // exist only in the parent.
            if user.root_gid {
                if user.setgroups == SetGroups::Allow {
                    let ret =
                        libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>());
                    check(fds, ChildStep::SetGroups, ret);
                }
                let ret = libc::syscall(libc::SYS_setresgid, 0, 0, 0);
                check(fds, ChildStep::SetGid, ret);
            }
            if user.root_uid {
                let ret = libc::syscall(libc::SYS_setresuid, 0, 0, 0);
                check(fds, ChildStep::SetUid, ret);
            }
        }

        if let Some(offsets) = &plan.time_offsets {
            // The new time namespace is for children and for this process after execve(2);
            // its offsets can be set until then (time_namespaces(7)).
            check(
                fds,
                ChildStep::TimeNamespace,
                libc::unshare(libc::CLONE_NEWTIME).into(),
            );
            let fd = libc::open(
                c"/proc/self/timens_offsets".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            check(fds, ChildStep::TimeOffsets, fd.into());
            let bytes = offsets.as_bytes();
            let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
            check(fds, ChildStep::TimeOffsets, n as libc::c_long);
            libc::close(fd);
        }

        if let Some(name) = &plan.hostname {
            let ret = libc::sethostname(name.as_ptr(), name.as_bytes().len());
            check(fds, ChildStep::Hostname, ret.into());
        }

        if plan.private_mounts {
            // Mounts made in the sandbox never propagate back to the host; host mounts still
            // propagate in (mount_namespaces(7)).
            let ret = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            );
            check(fds, ChildStep::MountPropagation, ret.into());
        }
        if plan.mount_proc {
            let ret = libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            );
            check(fds, ChildStep::MountProc, ret.into());
        }

        for (target, &fd) in fds.stdio.iter().enumerate() {
            let target = target as RawFd;
            let ret = if fd < 0 {
                0
            } else if fd == target {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, target)
            };
            check(fds, ChildStep::Stdio, ret.into());
        }

        if let Some(dir) = &plan.cwd {
            check(fds, ChildStep::Chdir, libc::chdir(dir.as_ptr()).into());
        }

        if plan.init {
            init::run(plan, fds)
        }
        exec(plan, fds)
    }
}

fn parent_died(fds: &ChildFds) -> bool {
    if fds.parent_pidfd >= 0 {
        let mut pfd = libc::pollfd {
            fd: fds.parent_pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout. A pidfd polls readable once the process exited.
        let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
        // SAFETY: closing a descriptor this child owns and no longer needs.
        unsafe { libc::close(fds.parent_pidfd) };
        ret == 1
    } else {
        // SAFETY: getppid has no failure mode and touches no memory.
        unsafe { libc::getppid() != fds.parent_pid }
    }
}

/// Restores the signal state a fresh program expects and executes the program, trying each
/// `PATH` candidate as `execvp(3)` does.
pub(super) fn exec(plan: &Plan, fds: &ChildFds) -> ! {
    let exec = &plan.exec;
    let mut reported = libc::ENOENT;
    // SAFETY: signal mask and disposition changes affect only this process; the candidates,
    // argv and envp are NUL-terminated strings and NULL-terminated arrays owned by the plan.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &plan.empty_signals, std::ptr::null_mut());
        // The Rust runtime ignores SIGPIPE, and ignored signals survive execve(2).
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        for path in exec.candidates.strings() {
            libc::execve(path.as_ptr(), exec.argv.as_ptr(), exec.envp.as_ptr());
            match errno() {
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::EACCES => reported = libc::EACCES,
                other => {
                    reported = other;
                    break;
                }
            }
        }
    }
    fail_with(fds, ChildStep::Exec, reported)
}
