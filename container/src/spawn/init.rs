//! The sandbox's minimal init, PID 1 of its PID namespace (`pid_namespaces(7)`).
//!
//! It starts the command, then waits for signals with `rt_sigtimedwait(2)`: SIGCHLD reaps every
//! child that exited (orphans included), the forwarded signals go to the command, and when the
//! command has exited the init reports the command's raw wait status to the parent over a pipe and
//! exits with the shell form of it (code, or 128 + signal). Its exit kills what is left of the
//! namespace.
//!
//! The init may share the parent's memory (`CLONE_VM`) for its whole life, so once the command
//! runs it touches nothing but its own stack: the parent's plan may be gone by then. It starts the
//! command with `CLONE_VM | CLONE_VFORK` on a stack inside its own frame, so that no memory is
//! copied; it is suspended until the command has called `execve(2)`.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::os::fd::IntoRawFd;

use palisade_ns::{clone3_with_stack, CloneArgs, Namespace, CLONE3_WITH_STACK};

use super::child::{exec, exec_entry, exit, fail, ChildCtx, ChildFds};
use super::plan::Plan;
use super::sys::{raw, SIGSET_SIZE};
use crate::error::ChildStep;

/// Room for the command between its clone and its `execve(2)`.
const COMMAND_STACK: usize = 32 * 1024;

#[repr(C, align(16))]
struct CommandStack([MaybeUninit<u8>; COMMAND_STACK]);

/// # Safety
///
/// As for [`super::child::run`], whose last step this is.
pub(super) unsafe fn run(plan: &Plan, fds: &ChildFds) -> ! {
    // What the init needs after the parent has moved on, copied onto its own stack.
    let signals = plan.init_signals;
    let status_w = fds.status_w;

    // SAFETY: for the whole body, raw system calls on data on this stack or prepared by the
    // parent (only until the command has executed). The forwarded signals are blocked before
    // the command starts, so none is lost before the first wait; blocked signals are queued even
    // for a namespace's init, which otherwise drops signals it has no handler for.
    unsafe {
        raw!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &signals as *const libc::sigset_t,
            0,
            SIGSET_SIZE
        );
        let command = start_command(plan, fds);
        raw!(
            libc::SYS_prctl,
            libc::PR_SET_NAME,
            c"palisade-init".as_ptr()
        );
        close_all_but(status_w);
        loop {
            let sig = raw!(
                libc::SYS_rt_sigtimedwait,
                &signals as *const libc::sigset_t,
                0,
                0,
                SIGSET_SIZE
            ) as i32;
            if sig == libc::SIGCHLD {
                loop {
                    let mut status: i32 = 0;
                    let pid = raw!(
                        libc::SYS_wait4,
                        -1,
                        &mut status as *mut i32,
                        libc::WNOHANG,
                        0
                    );
                    if pid <= 0 {
                        break;
                    }
                    if pid == command as isize {
                        let bytes = status.to_ne_bytes();
                        raw!(libc::SYS_write, status_w, bytes.as_ptr(), bytes.len());
                        exit(if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else {
                            128 + libc::WTERMSIG(status)
                        });
                    }
                }
            } else if sig > 0 {
                raw!(libc::SYS_kill, command, sig);
            }
        }
    }
}

/// Starts the command and returns its pid once it has executed (or failed and reported).
///
/// # Safety
///
/// Only in the init, with `plan` and `fds` still valid.
unsafe fn start_command(plan: &Plan, fds: &ChildFds) -> libc::pid_t {
    if CLONE3_WITH_STACK {
        let mut stack = CommandStack([MaybeUninit::uninit(); COMMAND_STACK]);
        let ctx = ChildCtx { plan, fds };
        let args = CloneArgs::new(Namespace::empty())
            .share_memory(true)
            .vfork(true);
        // SAFETY: the command runs on `stack`, in this frame, while the init is suspended
        // (CLONE_VFORK) until it executes or exits; `ctx` lives in this frame as well.
        let cloned = unsafe {
            clone3_with_stack(
                &args,
                stack.0.as_mut_ptr().cast(),
                COMMAND_STACK,
                exec_entry,
                &ctx as *const ChildCtx<'_> as *mut c_void,
            )
        };
        match cloned {
            Ok(child) => {
                // The pidfd is closed with everything else by `close_all_but`.
                let (pid, pidfd) = child.into_parts();
                let _ = pidfd.into_raw_fd();
                return pid;
            }
            Err(e) if e.errno() != Some(libc::ENOSYS) => fail(
                fds,
                ChildStep::InitFork,
                e.errno().unwrap_or(libc::EINVAL) as isize,
            ),
            Err(_) => {}
        }
    }
    // Fork semantics: this init is itself a private copy of the parent here.
    // SAFETY: a plain fork of this single-threaded process; the child only executes.
    let pid = unsafe { raw!(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if pid < 0 {
        fail(fds, ChildStep::InitFork, -pid);
    }
    if pid == 0 {
        exec(plan, fds);
    }
    pid as libc::pid_t
}

/// Closes every descriptor but `keep`: the init must not hold the command's stdio pipes (the
/// parent would never see end-of-file) nor descriptors that other threads of the parent were
/// creating.
fn close_all_but(keep: i32) {
    let keep = keep as u32;
    // SAFETY: close_range(2) (Linux 5.9) and close(2) only close descriptors of this process.
    unsafe {
        let low = if keep > 0 {
            raw!(libc::SYS_close_range, 0u32, keep - 1, 0u32)
        } else {
            0
        };
        let high = raw!(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
        if low < 0 || high < 0 {
            for fd in 0..4096u32 {
                if fd != keep {
                    raw!(libc::SYS_close, fd);
                }
            }
        }
    }
}
