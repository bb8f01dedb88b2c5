//! Starting the sandbox's init, PID 1 of its PID namespace (`pid_namespaces(7)`).
//!
//! The sandbox child, once it has set the sandbox up, becomes the init. It still runs in the
//! caller's memory (`CLONE_VM`) with the caller's privileges at that point, and the init lives as
//! long as the sandbox, so it must not stay that way: a command able to trace PID 1 (with
//! `CAP_SYS_PTRACE`) would otherwise reach the caller's memory, and `/proc/1/cmdline` would show
//! the caller's arguments. So [`start`]:
//!
//! 1. blocks the signals the init waits for, so that none sent from now on is lost;
//! 2. clones the command, which waits on a gate pipe before doing anything of its own;
//! 3. drops to the command's credentials, capabilities and limits, with `no_new_privs`
//!    ([`SecurityPlan::apply`](crate::security::SecurityPlan::apply) without the filter);
//! 4. executes the init program from a sealed memfd (`execveat(2)`, [`init_image`]): from then
//!    on PID 1 has an address space of its own, holds nothing of the caller's, and installs its
//!    own seccomp filter, an allow-list of the dozen calls it makes;
//! 5. once the init program has made itself undumpable and installed its filter, it closes every
//!    descriptor it was not named, the gate's write end among them, and only then does the
//!    command execute the program. (A command that cannot hold `CAP_SYS_PTRACE` cannot trace a
//!    process that is not dumpable, `ptrace(2)`: for it the init closes the gate right after
//!    making itself undumpable, before its filter is compiled.) It confines itself meanwhile (its own filter included, when
//!    that filter lets it wait on the gate afterwards), so that the two execs overlap.
//!
//! So by the time the command runs anything of its own, nothing in the sandbox shares the
//! caller's memory, and no process in it holds more privilege than the command. If a step of
//! 3 or 4 fails, the command is killed before the gate could open.
//!
//! The init program reaps orphans, forwards signals, reports the command's wait status to the
//! parent over a pipe and exits with the shell form of it; it makes sockets in the sandbox's
//! network namespace for a rootless sandbox's published ports (the [`SocketRequest`] protocol on
//! the control socket); and it kills the sandbox when the caller process dies (end-of-file on
//! the death pipe, whose write end only the caller holds).
//!
//! [`init_image`]: super::init_image

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, IntoRawFd};

use palisade_ns::{clone3_with_stack, CloneArgs, Namespace, CLONE3_WITH_STACK};

use super::child::{exec, fail, ChildCtx, ChildFds};
use super::plan::Plan;
use super::sys::{close_all_but, decimal, raw, SIGSET_SIZE};
use crate::error::ChildStep;

/// Room for the command between its clone and its `execve(2)`.
const COMMAND_STACK: usize = 32 * 1024;

#[repr(C, align(16))]
struct CommandStack([MaybeUninit<u8>; COMMAND_STACK]);

/// What the command needs between its clone and its exec: the child's context and the gate.
struct CommandCtx<'a> {
    child: ChildCtx<'a>,
    gate: [i32; 2],
}

/// Becomes the init: starts the command, drops privileges and executes the init program.
///
/// # Safety
///
/// As for [`super::child::run`], whose last step this is.
pub(super) unsafe fn start(plan: &Plan, fds: &ChildFds) -> ! {
    // The command runs on this array while this function goes on, so it must never return.
    let mut stack = CommandStack([MaybeUninit::uninit(); COMMAND_STACK]);
    let mut gate = [-1i32; 2];
    // SAFETY: raw system calls on data on this stack or prepared by the parent. Blocked signals
    // are queued even for a namespace's init, which otherwise drops signals it has no handler
    // for, and pending signals survive execve(2).
    unsafe {
        raw!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &plan.init_signals as *const libc::sigset_t,
            0,
            SIGSET_SIZE
        );
        let ret = raw!(libc::SYS_pipe2, gate.as_mut_ptr(), libc::O_CLOEXEC);
        if ret < 0 {
            fail(fds, ChildStep::InitFork, -ret);
        }
    }
    // Read by the command until it executes: like `stack`, it must live in this frame.
    let ctx = CommandCtx {
        child: ChildCtx { plan, fds },
        gate,
    };
    // SAFETY: `ctx` and `stack` outlive the command's use of them (see above).
    let command = unsafe { start_command(&ctx, &mut stack) };
    // Whatever fails from here, the command dies before the gate opens (`fail_killing`).

    // SAFETY: the command holds its own copy of the gate's read end.
    unsafe { raw!(libc::SYS_close, gate[0]) };
    // SAFETY: in the child, single-threaded, right before its exec.
    if let Err((step, errno)) = unsafe { plan.security.apply(false) } {
        fail_killing(fds, command, step, errno);
    }

    let Some(image) = &plan.init_image else {
        fail_killing(fds, command, ChildStep::InitExec, libc::ENOEXEC as isize);
    };
    // A command that cannot trace a non-dumpable process may go on as soon as the init is not
    // dumpable; one that can waits until the init's filter is in too.
    let early_gate = if plan.security.may_trace() {
        -1
    } else {
        gate[1]
    };
    let mut bufs = [[0u8; 24]; 5];
    let [pid_buf, status_buf, control_buf, death_buf, gate_buf] = &mut bufs;
    let death = fds.death;
    let argv = [
        c"palisade-init".as_ptr(),
        decimal(command.into(), pid_buf).as_ptr(),
        decimal(fds.status_w.into(), status_buf).as_ptr(),
        decimal(fds.control.into(), control_buf).as_ptr(),
        decimal(death.into(), death_buf).as_ptr(),
        decimal(early_gate.into(), gate_buf).as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null::<libc::c_char>()];
    // The init keeps the status pipe, the control socket and the death pipe; the image and the
    // error pipe go with the exec. The gate goes only when the init closes every descriptor
    // it was not named, after it has made itself undumpable and installed its filter: until
    // then the command waits, so it never finds an init it could take over.
    let mut keep = [
        fds.status_w,
        fds.control,
        death,
        image.as_raw_fd(),
        fds.err_w,
        gate[1],
    ];
    keep.sort_unstable();
    close_all_but(&keep);
    for fd in [fds.status_w, fds.control, death, gate[1]] {
        if fd >= 0 {
            // SAFETY: clears close-on-exec on a descriptor of this process.
            let ret = unsafe { raw!(libc::SYS_fcntl, fd, libc::F_SETFD, 0) };
            if ret < 0 {
                fail_killing(fds, command, ChildStep::InitExec, -ret);
            }
        }
    }
    // SAFETY: execveat(2) of the sealed image with NULL-terminated argv and envp arrays on this
    // stack; it returns only on failure.
    let ret = unsafe {
        raw!(
            libc::SYS_execveat,
            image.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH
        )
    };
    fail_killing(fds, command, ChildStep::InitExec, -ret)
}

/// Kills the command, then reports `step` and exits: a pending SIGKILL lets the command run no
/// further instruction, so it never passes the gate that this exit opens.
fn fail_killing(fds: &ChildFds, command: libc::pid_t, step: ChildStep, errno: isize) -> ! {
    // SAFETY: kill(2) of our own child.
    unsafe { raw!(libc::SYS_kill, command, libc::SIGKILL) };
    fail(fds, step, errno)
}

/// Clones the command, which waits for the gate, and returns its pid.
///
/// # Safety
///
/// Only in the init-to-be, with `ctx` and `stack` alive until the command has executed (both
/// live in [`start`]'s frame, which never returns).
unsafe fn start_command(ctx: &CommandCtx<'_>, stack: &mut CommandStack) -> libc::pid_t {
    let fds = ctx.child.fds;
    if CLONE3_WITH_STACK {
        let args = CloneArgs::new(Namespace::empty()).share_memory(true);
        // SAFETY: the command runs on `stack` with `ctx`, both in `start`'s frame, which
        // outlives it (see above); it makes raw system calls only.
        let cloned = unsafe {
            clone3_with_stack(
                &args,
                stack.0.as_mut_ptr().cast(),
                COMMAND_STACK,
                command_entry,
                ctx as *const CommandCtx<'_> as *mut c_void,
            )
        };
        match cloned {
            Ok(child) => {
                // The pidfd is not needed: closed with everything else before the exec.
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
    // Fork semantics: a private copy of this process.
    // SAFETY: a plain fork of this single-threaded process; the copy only waits and executes.
    let pid = unsafe { raw!(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
    if pid < 0 {
        fail(fds, ChildStep::InitFork, -pid);
    }
    if pid == 0 {
        command(ctx);
    }
    pid as libc::pid_t
}

/// Entry point of the command cloned with `clone3_with_stack`.
///
/// # Safety
///
/// `arg` points to the [`CommandCtx`] in [`start`]'s frame.
unsafe extern "C" fn command_entry(arg: *mut c_void) -> ! {
    // SAFETY: guaranteed by the caller.
    let ctx = unsafe { &*(arg as *const CommandCtx<'_>) };
    command(ctx)
}

/// The command: executes the program once the init is confined (end-of-file on the gate). If
/// the init-to-be failed instead, it was killed before the gate closed.
fn command(ctx: &CommandCtx<'_>) -> ! {
    let [gate_r, gate_w] = ctx.gate;
    // SAFETY: close(2) of our copy of the write end, which would keep the gate shut forever.
    unsafe { raw!(libc::SYS_close, gate_w) };
    exec(ctx.child.plan, ctx.child.fds, Some(gate_r))
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
