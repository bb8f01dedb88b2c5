//! The sandbox's minimal init, PID 1 of its PID namespace (`pid_namespaces(7)`).
//!
//! It forks the command, then waits for signals with `sigwaitinfo(2)`: SIGCHLD reaps every child
//! that exited (orphans included), the forwarded signals go to the command, and when the command
//! has exited the init reports the command's raw wait status to the parent over a pipe and exits
//! with the shell form of it (code, or 128 + signal). Its exit kills what is left of the namespace.
//!
//! Like the rest of the child side, it makes system calls only.

use super::child::{exec, fail, ChildFds};
use super::plan::Plan;
use crate::error::ChildStep;

/// # Safety
///
/// As for [`super::child::run`], whose last step this is.
pub(super) unsafe fn run(plan: &Plan, fds: &ChildFds) -> ! {
    // SAFETY: for the whole body, system calls on prepared data. The forwarded signals are blocked
    // before the fork, so none is lost between the fork and the first sigwaitinfo; blocked
    // signals are queued even for a namespace's init, which otherwise drops signals it has no
    // handler for.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &plan.init_signals, std::ptr::null_mut());
        let command = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_long, 0, 0, 0, 0);
        if command == -1 {
            fail(fds, ChildStep::InitFork);
        }
        if command == 0 {
            exec(plan, fds);
        }
        let command = command as libc::pid_t;
        libc::prctl(libc::PR_SET_NAME, c"palisade-init".as_ptr(), 0, 0, 0);
        close_all_but(fds.status_w);
        loop {
            let sig = libc::sigwaitinfo(&plan.init_signals, std::ptr::null_mut());
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if pid <= 0 {
                        break;
                    }
                    if pid == command {
                        let bytes = status.to_ne_bytes();
                        libc::write(fds.status_w, bytes.as_ptr().cast(), bytes.len());
                        let code = if libc::WIFEXITED(status) {
                            libc::WEXITSTATUS(status)
                        } else {
                            128 + libc::WTERMSIG(status)
                        };
                        libc::_exit(code);
                    }
                }
            } else if sig > 0 {
                libc::kill(command, sig);
            }
        }
    }
}

/// Closes every descriptor but `keep`: the init must not hold the command's stdio pipes (the
/// parent would never see EOF) nor descriptors that other threads of the parent were creating.
fn close_all_but(keep: libc::c_int) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range(2) (Linux 5.9) only closes descriptors of this process.
    let ret = unsafe {
        let low = if keep > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32)
        } else {
            0
        };
        if low == 0 {
            libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0u32)
        } else {
            low
        }
    };
    if ret != 0 {
        for fd in 0..4096 {
            if fd != keep as libc::c_int {
                // SAFETY: as above, for kernels without close_range.
                unsafe { libc::close(fd) };
            }
        }
    }
}
