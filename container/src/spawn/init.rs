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
//! parent over a pipe, with the CPU time and peak resident set of the children it reaped
//! (`getrusage(2)`, `RUSAGE_CHILDREN`: its own set-up is not counted), and exits with the shell
//! form of the status; it makes sockets in the sandbox's
//! network namespace for a rootless sandbox's published ports (the [`SocketRequest`] protocol on
//! the control socket); it kills the sandbox when the caller process dies (end-of-file on
//! the death pipe, whose write end only the caller holds); and it keeps the sandbox's
//! wall-clock limit ([`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)).
//!
//! # The init's contract
//!
//! `container/init/main.rs` states it in full; what the parent relies on:
//!
//! - argv: `palisade-init <command-pid> <status-fd> <control-fd|-1> <death-fd|-1> <gate-fd|-1>
//!   <time-left-ms|-1>`, exactly six arguments (anything else: exit 125 before touching
//!   anything). The time left is relative, in milliseconds, rounded up: the init adds it to its
//!   own `CLOCK_MONOTONIC`, which a time namespace may shift against ours
//!   (`time_namespaces(7)`), so no absolute time could be passed.
//! - The report on the status descriptor (a pipe, or a named sandbox's `exit` file), written in
//!   one `write(2)` when the command is reaped, native-endian: the raw wait status (`i32`), the
//!   usage of the reaped children (user and system CPU time in microseconds, largest resident
//!   set in KiB, a `u64` each; left out if `getrusage(2)` failed), then a `u32` of flags, bit 0
//!   for a command killed at the deadline. So 32 bytes, or 8 without the usage; 4 and 28 are
//!   earlier inits' reports, without the flags. Any other length is no report.
//!   [`ExitStatus::from_report`](crate::ExitStatus) parses it, for [`Child`](crate::Child) and
//!   [`Handle`](crate::Handle) alike.
//! - At the deadline the init kills the sandbox as on the caller's death (`kill(-1, SIGKILL)`
//!   as PID 1 of its namespace, else only the command), reaps the command and reports it with
//!   the timed-out flag.
//!
//! # Who keeps the wall-clock limit
//!
//! The plan's limit goes to the init whole, as the time left from the init's own start: the
//! plan belongs to the [`Sandbox`](crate::Sandbox) and serves all its spawns, so it holds no
//! spawn's start, and the init's clock may be shifted by a time namespace anyway. The init's
//! start comes after the spawn's set-up (namespaces, root, network), a moment after the spawn
//! from which the caller's [`Child`](crate::Child) counts the same limit, so a handle that
//! waits reaches the deadline first and kills the sandbox itself; the init's deadline is for a
//! sandbox no handle waits on (detached, or a handle dropped without `kill_on_drop`). Whichever
//! kills it, the status says timed out: the init's report carries the flag, and a handle that
//! killed it marks the status itself (its kill leaves the init no time to report). A sandbox
//! without an init (no PID namespace, new or joined, or
//! [`init(false)`](crate::SandboxBuilder::init)) has only the handle's waits to keep it.
//!
//! [`init_image`]: super::init_image

use std::convert::Infallible;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use palisade_ns::child::{self as process, decimal, ExecArray};
use palisade_ns::{clone3_with_stack, CloneArgs, Namespace, CLONE3_WITH_STACK};
use rustix::io::{Errno, FdFlags};

use super::exec::exec;
use super::plan::Plan;
use super::step::{finish, raw_or_none, ChildCtx, ChildFailure, ChildFds, InStep, Step};
use crate::error::ChildStep;

/// Room for the command between its clone and its `execve(2)`.
const COMMAND_STACK: usize = 32 * 1024;

#[repr(C, align(16))]
struct CommandStack([MaybeUninit<u8>; COMMAND_STACK]);

/// What the command needs between its clone and its exec: the child's context and the gate.
struct CommandCtx<'a> {
    child: ChildCtx<'a>,
    gate_r: BorrowedFd<'a>,
    gate_w: BorrowedFd<'a>,
}

/// Becomes the init: starts the command, drops privileges and executes the init program.
/// Returns only on failure, once the command is dead.
pub(super) fn start(plan: &Plan, fds: &ChildFds) -> Step<Infallible> {
    // The command runs on this array while this function goes on: it is left only once the
    // command is dead (see below).
    let mut stack = CommandStack([MaybeUninit::uninit(); COMMAND_STACK]);
    // Blocked signals are queued even for a namespace's init, which otherwise drops signals it
    // has no handler for, and pending signals survive execve(2).
    process::set_signal_mask(&plan.init_signals).in_step(ChildStep::InitFork)?;
    let (gate_r, gate_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).in_step(ChildStep::InitFork)?;
    // Read by the command until it executes: like `stack`, it lives in this frame.
    let ctx = CommandCtx {
        child: ChildCtx { plan, fds },
        gate_r: gate_r.as_fd(),
        gate_w: gate_w.as_fd(),
    };
    let command = match start_command(&ctx, &mut stack) {
        Ok(command) => command,
        Err(exit) => {
            process::close(gate_r);
            process::close(gate_w);
            return Err(exit);
        }
    };
    // The command holds its own copy of the gate's read end.
    process::close(gate_r);
    let Err(exit) = become_init(plan, fds, command, &gate_w);
    // The gate opens when this process's write end closes, at its exit: the command dies
    // first, and is reaped, so that nothing runs on `stack` once this frame is left.
    let _ = process::kill_and_wait(command);
    process::close(gate_w);
    Err(exit)
}

/// Drops to the command's privileges and executes the init program; returns only on failure.
fn become_init(
    plan: &Plan,
    fds: &ChildFds,
    command: libc::pid_t,
    gate_w: &OwnedFd,
) -> Step<Infallible> {
    // SAFETY: in the child, single-threaded, right before its exec.
    // Without the filter, there is no listener.
    unsafe { plan.security.apply(false) }
        .map_err(|(step, errno)| ChildFailure::new(step, errno))?;
    let image = plan
        .init_image
        .as_ref()
        .ok_or(ChildFailure::new(ChildStep::InitExec, Errno::NOEXEC))?;
    // A command that cannot trace a non-dumpable process may go on as soon as the init is not
    // dumpable; one that can waits until the init's filter is in too.
    let early_gate = if plan.security.may_trace() {
        -1
    } else {
        gate_w.as_raw_fd()
    };
    let mut bufs = [[0u8; 24]; 6];
    let [pid_buf, status_buf, control_buf, death_buf, gate_buf, time_buf] = &mut bufs;
    let number = |fd: RawFd, buf| decimal(fd.into(), buf).as_ptr();
    let argv = [
        c"palisade-init".as_ptr(),
        decimal(command.into(), pid_buf).as_ptr(),
        number(raw_or_none(fds.status_w), status_buf),
        number(raw_or_none(fds.control), control_buf),
        number(raw_or_none(fds.death), death_buf),
        number(early_gate, gate_buf),
        decimal(time_left_ms(plan.timeout), time_buf).as_ptr(),
        std::ptr::null(),
    ];
    // The init keeps the status pipe, the control socket and the death pipe; the image and the
    // error pipe go with the exec. The gate goes only when the init closes every descriptor
    // it was not named, after it has made itself undumpable and installed its filter: until
    // then the command waits, so it never finds an init it could take over.
    let mut keep = [
        raw_or_none(fds.status_w),
        raw_or_none(fds.control),
        raw_or_none(fds.death),
        image.as_raw_fd(),
        fds.err_w.as_raw_fd(),
        gate_w.as_raw_fd(),
    ];
    keep.sort_unstable();
    process::close_all_but(&keep);
    let inherited = [fds.status_w, fds.control, fds.death, Some(gate_w.as_fd())];
    for fd in inherited.into_iter().flatten() {
        rustix::io::fcntl_setfd(fd, FdFlags::empty()).in_step(ChildStep::InitExec)?;
    }
    // SAFETY: `argv` holds static strings and the decimals on this stack, and ends with null.
    let argv = unsafe { ExecArray::new(&argv) }.in_step(ChildStep::InitExec)?;
    let failed = process::fexecve(image.as_fd(), argv, ExecArray::EMPTY);
    Err(ChildFailure::new(ChildStep::InitExec, failed).into())
}

/// The init's `<time-left-ms>` argument for the wall-clock limit `limit`: milliseconds,
/// rounded up so that the init never kills before the limit, at most `i64::MAX`; `-1` for none.
/// Arithmetic only: it runs in the child.
fn time_left_ms(limit: Option<std::time::Duration>) -> i64 {
    match limit {
        None => -1,
        Some(limit) => {
            let ms = limit.as_nanos().div_ceil(1_000_000);
            i64::try_from(ms).unwrap_or(i64::MAX)
        }
    }
}

/// Clones the command, which waits for the gate, and returns its pid.
fn start_command(ctx: &CommandCtx<'_>, stack: &mut CommandStack) -> Step<libc::pid_t> {
    if CLONE3_WITH_STACK {
        let args = CloneArgs::new(Namespace::empty()).share_memory(true);
        // SAFETY: the command runs on `stack` with `ctx`, both in `start`'s frame, which is
        // left only once the command is dead or has executed; it makes typed, errno-free calls
        // only.
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
                return Ok(pid);
            }
            Err(e) if e.errno() != Some(libc::ENOSYS) => {
                let errno = Errno::from_raw_os_error(e.errno().unwrap_or(libc::EINVAL));
                return Err(ChildFailure::new(ChildStep::InitFork, errno).into());
            }
            Err(_) => {}
        }
    }
    // Fork semantics: a private copy of this process.
    // SAFETY: the copy only waits on the gate and executes, with errno-free calls.
    match unsafe { process::fork() }.in_step(ChildStep::InitFork)? {
        Some(pid) => Ok(pid),
        None => command(ctx),
    }
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
    // SAFETY: the command's own copy of the write end (its descriptor table is not shared),
    // which would keep the gate shut forever.
    unsafe { process::close_raw(ctx.gate_w.as_raw_fd()) };
    let Err(exit) = exec(ctx.child.plan.command(), ctx.child.fds, Some(ctx.gate_r));
    finish(ctx.child.fds, exit)
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

#[cfg(test)]
mod tests {
    use super::time_left_ms;
    use std::time::Duration;

    #[test]
    fn the_time_left_is_rounded_up_to_milliseconds() {
        assert_eq!(time_left_ms(None), -1);
        assert_eq!(time_left_ms(Some(Duration::ZERO)), 0);
        assert_eq!(time_left_ms(Some(Duration::from_nanos(1))), 1);
        assert_eq!(time_left_ms(Some(Duration::from_millis(300))), 300);
        assert_eq!(time_left_ms(Some(Duration::from_micros(300_001))), 301);
        assert_eq!(time_left_ms(Some(Duration::MAX)), i64::MAX);
    }
}
