//! The sandbox's minimal init, PID 1 of its PID namespace (`pid_namespaces(7)`).
//!
//! It starts the command, then waits for signals with `rt_sigtimedwait(2)`: SIGCHLD reaps every
//! child that exited (orphans included), the forwarded signals go to the command, and when the
//! command has exited the init reports the command's raw wait status to the parent over a pipe and
//! exits with the shell form of it (code, or 128 + signal). Its exit kills what is left of the
//! namespace.
//!
//! When the parent asks for it (a rootless sandbox with published ports), the init also makes
//! sockets in the sandbox's network namespace: a process outside the sandbox's user namespace may
//! not join that network namespace (`setns(2)` needs `CAP_SYS_ADMIN` over it), but a socket
//! stays in the namespace it was created in (`network_namespaces(7)`), so the parent's forwarder
//! connects sockets the init made. Requests arrive on the control socket, which raises SIGIO
//! (`fcntl(2)`, `F_SETOWN` and `O_ASYNC`); each is one [`SocketRequest`] byte, answered with an
//! errno (0 on success) and the socket as `SCM_RIGHTS`.
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
use super::sys::{raw, send_with_fd, SIGSET_SIZE};
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
    let control = fds.control;

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
        close_all_but([status_w, control]);
        if control >= 0 {
            let me = raw!(libc::SYS_getpid);
            raw!(libc::SYS_fcntl, control, libc::F_SETOWN, me);
            raw!(
                libc::SYS_fcntl,
                control,
                libc::F_SETFL,
                libc::O_ASYNC | libc::O_NONBLOCK
            );
            // Requests sent before O_ASYNC was set raised no signal.
            serve_sockets(control);
        }
        loop {
            let sig = raw!(
                libc::SYS_rt_sigtimedwait,
                &signals as *const libc::sigset_t,
                0,
                0,
                SIGSET_SIZE
            ) as i32;
            if sig == libc::SIGIO && control >= 0 {
                serve_sockets(control);
            } else if sig == libc::SIGCHLD {
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

/// What the parent asks the init to make, one byte per request.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketRequest {
    /// An IPv4 TCP socket.
    Tcp = 1,
    /// An IPv4 UDP socket.
    Udp = 2,
}

/// Answers every pending request on the control socket; returns when none is left or the
/// parent closed its end.
fn serve_sockets(control: i32) {
    loop {
        let mut request = [0u8; 1];
        // SAFETY: recvfrom(2) into a one-byte buffer on this stack, without blocking.
        let n = unsafe {
            raw!(
                libc::SYS_recvfrom,
                control,
                request.as_mut_ptr(),
                request.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                0,
                0
            )
        };
        if n == -(libc::EINTR as isize) {
            continue;
        }
        if n <= 0 {
            return;
        }
        let kind = match request[0] {
            r if n == 1 && r == SocketRequest::Tcp as u8 => libc::SOCK_STREAM,
            r if n == 1 && r == SocketRequest::Udp as u8 => libc::SOCK_DGRAM,
            _ => -1,
        };
        let sock = if kind < 0 {
            -(libc::EINVAL as isize)
        } else {
            // SAFETY: socket(2) creates a descriptor of this process, in its network namespace.
            unsafe {
                raw!(
                    libc::SYS_socket,
                    libc::AF_INET,
                    kind | libc::SOCK_CLOEXEC,
                    0
                )
            }
        };
        let errno = if sock < 0 { -sock as i32 } else { 0 };
        send_with_fd(control, &errno.to_ne_bytes(), sock as i32);
        if sock >= 0 {
            // SAFETY: the socket is ours and now also the parent's; close our copy.
            unsafe { raw!(libc::SYS_close, sock) };
        }
    }
}

/// Closes every descriptor but those in `keep` (`-1`: none): the init must not hold the
/// command's stdio pipes (the parent would never see end-of-file) nor descriptors that other
/// threads of the parent were creating.
fn close_all_but(keep: [i32; 2]) {
    let mut keep = keep.map(|fd| if fd < 0 { u32::MAX } else { fd as u32 });
    keep.sort_unstable();
    let mut from = 0u32;
    let mut ok = true;
    // SAFETY: close_range(2) (Linux 5.9) and close(2) only close descriptors of this process.
    unsafe {
        for fd in keep {
            if fd == u32::MAX {
                break;
            }
            if fd > from {
                ok &= raw!(libc::SYS_close_range, from, fd - 1, 0u32) >= 0;
            }
            from = fd.saturating_add(1);
        }
        if from < u32::MAX {
            ok &= raw!(libc::SYS_close_range, from, u32::MAX, 0u32) >= 0;
        }
        if !ok {
            for fd in 0..4096u32 {
                if !keep.contains(&fd) {
                    raw!(libc::SYS_close, fd);
                }
            }
        }
    }
}
