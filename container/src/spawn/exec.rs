//! The child's last steps before the program: the signal state a fresh program expects, the
//! command's privileges and filter, the gate of a command started by the init, and `execve(2)`.

use std::convert::Infallible;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};

use palisade_ns::child::{self as process, ExecArray, SignalSet};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::plan::Command;
use super::step::{ChildFailure, ChildFds, Exit, InStep, Step};
use crate::error::ChildStep;
use crate::terminal::TerminalSize;

/// Sends `data` and the descriptor `fd` as `SCM_RIGHTS` (`unix(7)`) on the socket `sock`,
/// without blocking, with the ancillary buffer on this stack.
fn send_with_fd(sock: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Errno::NOSPC);
    }
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    rustix::net::sendmsg(sock, &[IoSlice::new(data)], &mut control, flags).map(drop)
}

/// Restores the signal state a fresh program expects and executes the program: the one named
/// by descriptor, or else each `PATH` candidate in turn, as `execvp(3)` does.
///
/// A command started by the init passes its `gate`: it executes nothing of its own before
/// end-of-file there (see [`init`](super::init)). It confines itself first when its filter lets it wait on the
/// gate afterwards (`read(2)` allowed), so that loading the filter overlaps the init's exec.
pub(super) fn exec(
    plan: Command<'_>,
    fds: &ChildFds,
    gate: Option<BorrowedFd<'_>>,
) -> Step<Infallible> {
    let exec = plan.exec;
    if let Some(size) = plan.tty {
        open_terminal(fds, size).in_step(ChildStep::Terminal)?;
    }
    // Signal mask and dispositions are this process's alone. The Rust runtime ignores SIGPIPE,
    // and ignored signals survive execve(2).
    process::set_signal_mask(&SignalSet::EMPTY).in_step(ChildStep::Exec)?;
    process::set_default_action(libc::SIGPIPE).in_step(ChildStep::Exec)?;
    // A created command waits for its start before confining itself: its last steps then
    // run as they do for a spawn, and a filter never stands between it and the gate.
    let confine_first = plan.security.filter_allows_read() && fds.start.is_none();
    if let (Some(gate), false) = (gate, confine_first) {
        wait_for_gate(gate)?;
    }
    if let Some(start) = fds.start {
        wait_for_start(fds, start)?;
    }
    // The last step before the exec: user, capabilities, limits, no_new_privs and the syscall
    // filter (see `crate::security` for their order).
    // SAFETY: in the child, single-threaded, right before its exec.
    let listener = unsafe { plan.security.apply(true) }
        .map_err(|(step, errno)| ChildFailure::new(step, errno))?;
    if let Some(listener) = listener {
        let sent = match fds.control {
            Some(control) => send_with_fd(control, &0i32.to_ne_bytes(), listener.as_fd()),
            None => Err(Errno::BADF),
        };
        process::close(listener);
        sent.in_step(ChildStep::Seccomp)?;
    }
    if let (Some(gate), true) = (gate, confine_first) {
        wait_for_gate(gate)?;
    }
    // SAFETY: the plan's arrays are NULL-terminated arrays of NUL-terminated strings that it
    // owns, unchanged, until after the exec.
    let (argv, envp) = unsafe {
        (
            ExecArray::new(exec.argv.as_slice()),
            ExecArray::new(exec.envp.as_slice()),
        )
    };
    let (argv, envp) = (
        argv.in_step(ChildStep::Exec)?,
        envp.in_step(ChildStep::Exec)?,
    );
    if let Some(program) = plan.program {
        return Err(
            ChildFailure::new(ChildStep::Exec, process::fexecve(program, argv, envp)).into(),
        );
    }
    let mut reported = Errno::NOENT;
    for path in exec.candidates.strings() {
        match process::execve(path, argv, envp) {
            Errno::NOENT | Errno::NOTDIR | Errno::STALE | Errno::NODEV | Errno::TIMEDOUT => {}
            Errno::ACCESS => reported = Errno::ACCESS,
            other => {
                reported = other;
                break;
            }
        }
    }
    Err(ChildFailure::new(ChildStep::Exec, reported).into())
}

/// Waits for end-of-file on the gate: nobody writes to it, so anything else means a broken
/// sandbox, and the command leaves without executing anything.
fn wait_for_gate(gate: BorrowedFd<'_>) -> Step {
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(gate, &mut byte) {
            Ok(0) => return Ok(()),
            Err(Errno::INTR) => {}
            _ => return Err(Exit::Quietly(127)),
        }
    }
}

/// Tells the parent that everything up to the command's last steps is done (the
/// [`ready`](ChildFailure::ready) record on the error pipe), and waits for the one byte of its
/// start. End-of-file (an unnamed sandbox's creator dropped its handle) or an error ends it
/// without executing anything.
fn wait_for_start(fds: &ChildFds, start: BorrowedFd<'_>) -> Step {
    let ready = ChildFailure::ready().to_bytes();
    if rustix::io::write(fds.err_w, &ready) != Ok(ready.len()) {
        return Err(Exit::Quietly(127));
    }
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(start, &mut byte) {
            Ok(1) => break,
            Err(Errno::INTR) => {}
            _ => return Err(Exit::Quietly(127)),
        }
    }
    // The gate is close-on-exec: the program never holds it.
    Ok(())
}

/// Opens a pseudo-terminal on the sandbox's devpts (its `/dev/ptmx`, `pty(7)`), makes the
/// replica the controlling terminal of a new session (`setsid(2)`, `TIOCSCTTY`) and stdin,
/// stdout and stderr, and sends the master to the parent on the control socket, first of what
/// it sends there.
fn open_terminal(fds: &ChildFds, size: TerminalSize) -> rustix::io::Result<()> {
    use rustix::pty::OpenptFlags;
    let control = fds.control.ok_or(Errno::BADF)?;
    let master =
        rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    let opened = (|| {
        rustix::pty::unlockpt(&master)?;
        // The replica straight from the master (`TIOCGPTPEER`, Linux 4.13): no path to look up.
        let replica =
            rustix::pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)?;
        let placed = (|| {
            rustix::termios::tcsetwinsize(&replica, size.winsize())?;
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(&replica)?;
            for target in 0..3 {
                process::install_fd(replica.as_fd(), target)?;
            }
            Ok(())
        })();
        process::close(replica);
        placed?;
        send_with_fd(control, &0i32.to_ne_bytes(), master.as_fd())
    })();
    process::close(master);
    opened
}
