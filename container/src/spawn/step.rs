//! The vocabulary of the child side of a spawn: the descriptors it works with, the context its
//! entry points receive, and how its steps fail. A failed step is reported once, by the entry
//! point ([`finish`]), as one [`ChildFailure`] record on the error pipe.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use palisade_ns::child as process;
use rustix::io::Errno;

use super::plan::Plan;
use crate::error::ChildStep;

/// The descriptors the child works with, borrowed from the parent's `spawn` frame, which keeps
/// them open until the program has been executed.
#[derive(Debug)]
pub(crate) struct ChildFds<'a> {
    /// Write end of the error pipe.
    pub err_w: BorrowedFd<'a>,
    /// Read end of the pipe on which the parent says the id maps are written.
    pub sync_r: Option<BorrowedFd<'a>>,
    /// Write end of the pipe on which the init reports the command's wait status.
    pub status_w: Option<BorrowedFd<'a>>,
    /// What to install as fds 0, 1, 2 (`None`: inherit).
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    /// The child's end of the control socket (`SOCK_SEQPACKET`, close-on-exec): the seccomp
    /// listener goes to the parent through it, and the init makes sockets in the sandbox's
    /// network namespace on request through it (see [`init`](super::init)).
    pub control: Option<BorrowedFd<'a>>,
    /// The init's own open file description of the caller's death pipe: `F_SETOWN` belongs to
    /// the description, so each init needs its own to be told.
    pub death: Option<BorrowedFd<'a>>,
    /// Every descriptor the child may keep, ascending: 0 to 2, the above, and the plan's own.
    /// Everything else the caller had open, close-on-exec or not, is closed first thing.
    pub keep: &'a [RawFd],
    /// A pidfd of the parent, to notice that it died before `PR_SET_PDEATHSIG` took effect when
    /// `getppid(2)` cannot tell (in a new PID namespace it returns 0).
    pub parent_pidfd: Option<BorrowedFd<'a>>,
    /// The parent's pid, in the parent's PID namespace.
    pub parent_pid: libc::pid_t,
    /// The read end of a created command's start gate: the command reports that it is ready and
    /// waits for a byte there before its last steps.
    pub start: Option<BorrowedFd<'a>>,
    /// The v1 `tasks` files of the sandbox's group, which the child writes itself into before
    /// anything else (`palisade_cgroup::child::enter_v1`); closed with the caller's other
    /// descriptors right after.
    pub cgroup_tasks: &'a [std::os::fd::OwnedFd],
    /// Write end of the pipe on which a child that joined a user namespace reports the pid of
    /// its sibling, the new PID namespace's first process (see `Plan::forks_in_user`).
    pub pid_w: Option<BorrowedFd<'a>>,
}

/// The number of an optional descriptor, `-1` for none: for the init program's argv and for
/// keep lists, which the kernel and the init take as plain numbers.
pub(super) fn raw_or_none(fd: Option<BorrowedFd<'_>>) -> RawFd {
    fd.map_or(-1, |fd| fd.as_raw_fd())
}

/// What the child entry points receive: the plan and descriptors, which live in the parent's
/// `spawn` frame and `Sandbox` until the program has been executed.
pub(crate) struct ChildCtx<'a> {
    pub plan: &'a Plan,
    pub fds: &'a ChildFds<'a>,
}

/// A failed step, as the child reports it on the error pipe: which step, the index of the item
/// it was working on (a mount op, a passed descriptor; 0 otherwise), and the kernel's error.
/// Written whole in one `write(2)` below `PIPE_BUF`, so the parent reads all of it or nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChildFailure {
    step: u32,
    index: u32,
    errno: i32,
}

impl ChildFailure {
    /// The size of the record on the pipe.
    pub const SIZE: usize = 12;

    /// `step` failed with `errno`.
    pub fn new(step: ChildStep, errno: Errno) -> ChildFailure {
        ChildFailure::at(step, 0, errno)
    }

    /// `step` failed with `errno` on its `index`th item.
    pub fn at(step: ChildStep, index: u32, errno: Errno) -> ChildFailure {
        ChildFailure {
            step: step as u32,
            index,
            errno: errno.raw_os_error(),
        }
    }

    /// The step number of the record that says a created command waits at its start gate: no
    /// step's.
    const READY_STEP: u32 = u32::MAX;

    /// The record that says a created command waits at its start gate.
    pub fn ready() -> ChildFailure {
        ChildFailure {
            step: Self::READY_STEP,
            index: 0,
            errno: 0,
        }
    }

    /// Whether a record read from the pipe is [`ready`](Self::ready)'s.
    pub fn is_ready(bytes: &[u8; Self::SIZE]) -> bool {
        *bytes == Self::ready().to_bytes()
    }

    pub(super) fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[..4].copy_from_slice(&self.step.to_ne_bytes());
        out[4..8].copy_from_slice(&self.index.to_ne_bytes());
        out[8..].copy_from_slice(&self.errno.to_ne_bytes());
        out
    }

    /// The step, index and errno of a record read from the pipe; `None` for an unknown step.
    pub fn decode(bytes: &[u8; Self::SIZE]) -> Option<(ChildStep, u32, i32)> {
        let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
        let step = ChildStep::from_raw(u32::from_ne_bytes(word(0)))?;
        Some((
            step,
            u32::from_ne_bytes(word(4)),
            i32::from_ne_bytes(word(8)),
        ))
    }
}

/// How the child's steps end when they do not end in `execve(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// A step failed: reported to the parent, exit status 127.
    Failed(ChildFailure),
    /// Nothing to report: the parent gave up or died first, so the child leaves with this
    /// status.
    Quietly(i32),
}

impl From<ChildFailure> for Exit {
    fn from(f: ChildFailure) -> Exit {
        Exit::Failed(f)
    }
}

/// The result of a child step.
pub(super) type Step<T = ()> = Result<T, Exit>;

/// Attaches the step to a typed call's error: `rustix::fs::fchdir(dir).in_step(Chdir)?`.
pub(super) trait InStep<T> {
    fn in_step(self, step: ChildStep) -> Step<T>;
}

impl<T> InStep<T> for rustix::io::Result<T> {
    fn in_step(self, step: ChildStep) -> Step<T> {
        self.map_err(|e| Exit::Failed(ChildFailure::new(step, e)))
    }
}

/// Ends the child as `exit` says: reports a failure on the error pipe first. The only place the
/// child reports anything, called by its entry points.
pub(super) fn finish(fds: &ChildFds, exit: Exit) -> ! {
    match exit {
        Exit::Failed(failure) => {
            // 12 bytes, atomic on a pipe; if the parent is gone there is nobody to tell.
            let _ = rustix::io::write(fds.err_w, &failure.to_bytes());
            process::exit_group(127)
        }
        Exit::Quietly(code) => process::exit_group(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip() {
        let failure = ChildFailure::at(ChildStep::Rootfs, 7, Errno::NOENT);
        let decoded = ChildFailure::decode(&failure.to_bytes());
        assert_eq!(decoded, Some((ChildStep::Rootfs, 7, libc::ENOENT)));
        let mut bad = failure.to_bytes();
        bad[..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(ChildFailure::decode(&bad), None);
    }
}
