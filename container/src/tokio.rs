//! Sandboxes from async code, for the [tokio] runtime (the `tokio` feature).
//!
//! The core of this crate stays blocking; this module adds an async face to it:
//!
//! - [`SandboxBuilder::spawn_async`], [`SandboxBuilder::output_async`] and
//!   [`Sandbox::spawn_async`] run the spawn — the clone, the id maps, the wait for the
//!   command's `execve(2)` — on tokio's blocking pool
//!   ([`spawn_blocking`](::tokio::task::spawn_blocking)), so no worker thread is held for it;
//! - [`AsyncChild::wait`] waits on the sandbox's pidfd through the reactor
//!   ([`AsyncFd`]): a pidfd becomes readable when its process exits (`pidfd_open(2)`), after which
//!   the same non-blocking reap as [`Child::try_wait`] collects the status;
//! - piped stdio comes as tokio's pipe types ([`ChildStdin`], [`ChildStdout`], [`ChildStderr`]:
//!   [`pipe::Sender`] and [`pipe::Receiver`], `AsyncWrite` and `AsyncRead`);
//! - [`AsyncChild::wait_with_output`] reads stdout and stderr concurrently, so a command that
//!   fills both pipes does not stall.
//!
//! Without the feature none of this is compiled and tokio is not a dependency.
//!
//! ```no_run
//! use palisade::{Sandbox, Stdio};
//! use tokio::io::AsyncWriteExt;
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Many sandboxes at once, each on a task of its own.
//!     let mut tasks = tokio::task::JoinSet::new();
//!     for i in 0..10 {
//!         let spawn = Sandbox::builder("sh")
//!             .args(["-c", &format!("echo {i}")])
//!             .stdout(Stdio::piped())
//!             .spawn_async();
//!         tasks.spawn(async move { spawn.await?.wait_with_output().await });
//!     }
//!     while let Some(out) = tasks.join_next().await {
//!         assert!(out??.status.success());
//!     }
//!
//!     // Piped stdin and stdout, and a timeout.
//!     let mut child = Sandbox::builder("cat")
//!         .stdin(Stdio::piped())
//!         .stdout(Stdio::piped())
//!         .spawn_async()
//!         .await?;
//!     let mut stdin = child.stdin.take().ok_or("stdin is piped")?;
//!     stdin.write_all(b"hello").await?;
//!     drop(stdin); // end of input
//!     let wait = child.wait_with_output();
//!     let out = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await??;
//!     assert_eq!(out.stdout, b"hello");
//!     Ok(())
//! }
//! ```
//!
//! A future returned here may be dropped at any await: a spawn already under way on the
//! blocking pool finishes there, and its sandbox is then dropped (killed and reaped, unless
//! [`kill_on_drop(false)`](SandboxBuilder::kill_on_drop)); a dropped [`AsyncChild::wait`]
//! changes nothing, and a later call waits again.

use std::future::Future;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::{AsyncReadExt, Interest};
use ::tokio::net::unix::pipe;
use ::tokio::runtime::Handle as Runtime;

use crate::error::{Error, Result};
use crate::{Child, ExitStatus, Output, Sandbox, SandboxBuilder, Signal, Stdio};

/// The parent's end of the command's stdin pipe: tokio's [`pipe::Sender`] (`AsyncWrite`).
/// Dropping it closes the pipe, which the command reads as the end of its input.
pub type ChildStdin = pipe::Sender;

/// The parent's end of the command's stdout pipe: tokio's [`pipe::Receiver`] (`AsyncRead`).
pub type ChildStdout = pipe::Receiver;

/// The parent's end of the command's stderr pipe: tokio's [`pipe::Receiver`] (`AsyncRead`).
pub type ChildStderr = pipe::Receiver;

/// A running sandbox, waited for asynchronously: [`Child`] with tokio's pipes and an async
/// [`wait`](Self::wait), as [`tokio::process::Child`](https://docs.rs/tokio/1/tokio/process/struct.Child.html)
/// is to [`std::process::Child`].
///
/// Dropping a handle whose sandbox still runs kills and reaps it as dropping a [`Child`] does
/// (unless [`kill_on_drop(false)`](SandboxBuilder::kill_on_drop)), on tokio's blocking pool
/// when a runtime is there, so that the drop never holds a worker thread while the kernel tears
/// the sandbox down.
#[derive(Debug)]
pub struct AsyncChild {
    /// The blocking handle: status, reap, cgroup, network and the rest. Taken only by `drop`.
    child: ManuallyDrop<Child>,
    /// A duplicate of the child's pidfd, registered with the reactor for readability.
    exit: AsyncFd<OwnedFd>,
    /// The parent's end of the command's stdin, if it was [piped](Stdio::piped).
    pub stdin: Option<ChildStdin>,
    /// The parent's end of the command's stdout, if it was piped.
    pub stdout: Option<ChildStdout>,
    /// The parent's end of the command's stderr, if it was piped.
    pub stderr: Option<ChildStderr>,
}

impl AsyncChild {
    /// Makes a blocking [`Child`] async: registers a duplicate of its pidfd with the current
    /// tokio runtime's reactor and turns its piped stdio into tokio's pipes (non-blocking,
    /// `O_NONBLOCK`). Useful for handles made elsewhere, e.g. by [`Child::exec`].
    ///
    /// Must be called within a tokio runtime (with its I/O driver enabled): outside one it
    /// returns [`Error::Setup`] and drops `child`, which kills it as dropping it would.
    pub fn from_child(mut child: Child) -> Result<AsyncChild> {
        runtime()?;
        let pid = child.id() as i32;
        let process = |call, source| Error::Process { call, pid, source };
        let pidfd = child
            .pidfd()
            .try_clone_to_owned()
            .map_err(|e| process("dup pidfd of", e))?;
        // SAFETY: the `OwnedFd` is an open descriptor of our own, which the `AsyncFd` owns
        // from here on: it stays open, with the same number, until the `AsyncFd` drops.
        let exit = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(|e| process("register pidfd with the tokio reactor of", e.into()))?;
        let pipe_err = |source| Error::Setup {
            what: "register a stdio pipe with the tokio reactor",
            source,
        };
        let stdin = child.stdin.take().map(pipe::Sender::from_file);
        let stdout = child.stdout.take().map(pipe::Receiver::from_file);
        let stderr = child.stderr.take().map(pipe::Receiver::from_file);
        Ok(AsyncChild {
            stdin: stdin.transpose().map_err(pipe_err)?,
            stdout: stdout.transpose().map_err(pipe_err)?,
            stderr: stderr.transpose().map_err(pipe_err)?,
            child: ManuallyDrop::new(child),
            exit,
        })
    }

    /// The blocking handle, for everything that does not wait: [`Child::stats`],
    /// [`Child::cgroup_name`], [`Child::address`], [`Child::ports`], ….
    pub fn get_ref(&self) -> &Child {
        &self.child
    }

    /// The blocking handle, mutably: e.g. [`Child::take_pty`] or
    /// [`Child::take_seccomp_listener`]. Its [`wait`](Child::wait) blocks the calling thread;
    /// use [`AsyncChild::wait`] instead. Its `stdin`, `stdout` and `stderr` are `None`: they
    /// are this handle's.
    pub fn get_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The sandbox's process id in the caller's PID namespace ([`Child::id`]).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the sandbox through its pidfd (`pidfd_send_signal(2)`); with an init,
    /// the init forwards it to the command. Does nothing once the sandbox has been reaped.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let sent = rustix::process::Signal::from_named_raw(signal as i32)
            .ok_or(rustix::io::Errno::INVAL)
            .and_then(|sig| rustix::process::pidfd_send_signal(self.exit.get_ref(), sig));
        match sent {
            // The pidfd names this process alone; ESRCH means it has been reaped, and there is
            // nothing left to signal (`pidfd_send_signal(2)`).
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(Error::Process {
                call: "pidfd_send_signal",
                pid: self.id() as i32,
                source: e.into(),
            }),
        }
    }

    /// Kills the whole sandbox without waiting: every process of its cgroup, if it has one
    /// (`cgroup.kill`, or the v1 fallback), and its first process with `SIGKILL`, which with a
    /// PID namespace kills every process in it (`pid_namespaces(7)`). As
    /// [`tokio::process::Child::start_kill`](https://docs.rs/tokio/1/tokio/process/struct.Child.html#method.start_kill);
    /// [`wait`](Self::wait) then collects the status.
    pub fn start_kill(&self) -> Result<()> {
        if let Some(group) = self.child.group() {
            group.kill()?;
        }
        self.signal(Signal::SIGKILL)
    }

    /// Kills the whole sandbox ([`start_kill`](Self::start_kill)) and waits for it; returns its
    /// status (that of an exit before the kill, if it had already exited).
    pub async fn kill(&mut self) -> Result<ExitStatus> {
        self.start_kill()?;
        self.wait().await
    }

    /// Returns the status if the sandbox has exited, without blocking ([`Child::try_wait`]).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Waits for the sandbox to exit and returns the command's status, without blocking a
    /// thread: the pidfd is polled by the reactor, and the exited process is reaped with
    /// `waitpid(WNOHANG)`. Closes the command's stdin first, if piped, so that it does not wait
    /// for input. Cancel-safe: dropping the future changes nothing, and the status, once
    /// collected, is returned again by later calls.
    ///
    /// A sandbox with a wall-clock limit ([`SandboxBuilder::timeout`]) is killed at its
    /// deadline, as the blocking waits do, and its status says
    /// [`timed_out`](ExitStatus::timed_out); that takes tokio's timer, which a runtime built by
    /// hand must enable (`enable_time`, or `enable_all`). A sandbox with an init is killed by
    /// its init too, a moment later, if this wait has not done it (see
    /// [`Child`](crate::Child#wall-clock-limit)): its exit then wakes the wait, and the
    /// status, from the init's report, says `timed_out` as well.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        let mut deadline = self.child.deadline();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            let readable = self.exit.readable();
            let ready = match deadline {
                Some(at) => match ::tokio::time::timeout_at(at.into(), readable).await {
                    Ok(ready) => ready,
                    Err(_) => {
                        // Past the deadline, `try_wait` kills the sandbox; its exit is then
                        // waited for like any other.
                        deadline = None;
                        continue;
                    }
                },
                None => readable.await,
            };
            let mut ready = ready.map_err(|source| Error::Process {
                call: "poll pidfd of",
                pid: self.child.id() as i32,
                source,
            })?;
            // Readable means exited, so the reap below finds it; only a wakeup of the
            // reactor's own makes it come back empty, and then readiness is polled afresh.
            match self.child.try_wait()? {
                Some(status) => return Ok(status),
                None => ready.clear_ready(),
            }
        }
    }

    /// Closes stdin, reads all of stdout and stderr (those piped) concurrently, and waits for
    /// the sandbox, as [`Child::wait_with_output`] does without threads.
    pub async fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let (out, err) = (self.stdout.take(), self.stderr.take());
        let read = ::tokio::try_join!(read_all(out), read_all(err));
        let (stdout, stderr) = read.map_err(|source| Error::Process {
            call: "read output of",
            pid: self.child.id() as i32,
            source,
        })?;
        Ok(Output {
            status: self.wait().await?,
            stdout,
            stderr,
        })
    }
}

impl AsFd for AsyncChild {
    /// The sandbox's pidfd ([`Child::pidfd`]).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.child.pidfd()
    }
}

impl Drop for AsyncChild {
    fn drop(&mut self) {
        // SAFETY: `child` is taken here once, in `drop`, and `self` is not used after it.
        let child = unsafe { ManuallyDrop::take(&mut self.child) };
        // An exited (or reaped) sandbox drops at once: the reap does not wait. A running one
        // is killed and reaped in its `Drop`, which waits for the kernel to tear it down: not
        // on a worker thread.
        if !child.is_running() {
            return;
        }
        if let Ok(runtime) = Runtime::try_current() {
            // A runtime shutting down drops the task unrun, and with it `child`, here.
            drop(runtime.spawn_blocking(move || drop(child)));
        }
    }
}

/// Reads a pipe to its end; nothing for a stream that is not piped.
async fn read_all(pipe: Option<pipe::Receiver>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// The runtime the calling task runs on.
fn runtime() -> Result<Runtime> {
    Runtime::try_current().map_err(|e| Error::Setup {
        what: "find the tokio runtime (call from within one)",
        source: io::Error::other(e),
    })
}

/// Runs a blocking spawn on the runtime's blocking pool and makes its child async.
async fn spawn_blocking(
    spawn: impl FnOnce() -> Result<Child> + Send + 'static,
) -> Result<AsyncChild> {
    let child = runtime()?
        .spawn_blocking(spawn)
        .await
        .map_err(|e| Error::Setup {
            what: "spawn the sandbox on tokio's blocking pool",
            source: io::Error::other(e),
        })??;
    AsyncChild::from_child(child)
}

impl Sandbox {
    /// Spawns one sandbox from this recipe on tokio's blocking pool, as [`Sandbox::spawn`]
    /// does on the calling thread, and returns its async handle once the program has been
    /// executed (or [`Error::Child`] naming the step that failed). Share a recipe between
    /// tasks as an `Arc<Sandbox>`. Needs the `tokio` feature, and a tokio runtime.
    pub async fn spawn_async(self: Arc<Self>) -> Result<AsyncChild> {
        spawn_blocking(move || self.spawn()).await
    }
}

impl SandboxBuilder {
    /// Builds the sandbox on the calling thread ([`build`](Self::build): parsing and
    /// validation, no process yet) and returns a future that spawns it on tokio's blocking
    /// pool ([`Sandbox::spawn_async`]). The future owns what it needs (`'static`, `Send`): it
    /// may be handed to [`tokio::spawn`](::tokio::spawn). Needs the `tokio` feature, and a
    /// tokio runtime when polled.
    pub fn spawn_async(&mut self) -> impl Future<Output = Result<AsyncChild>> + Send + 'static {
        let sandbox = self.build();
        async move {
            let sandbox = sandbox?;
            spawn_blocking(move || sandbox.spawn()).await
        }
    }

    /// As [`output`](Self::output), asynchronously: spawns the sandbox with stdout and stderr
    /// captured (and stdin from `/dev/null` unless set otherwise), waits for it, and collects
    /// its output. The builder's own stdio settings are left as they were.
    pub fn output_async(&mut self) -> impl Future<Output = Result<Output>> + Send + 'static {
        let sandbox = self.build().map(|mut sandbox| {
            if sandbox.stdio[0].is_inherit() {
                sandbox.stdio[0] = Stdio::null();
            }
            sandbox.stdio[1] = Stdio::piped();
            sandbox.stdio[2] = Stdio::piped();
            sandbox
        });
        async move {
            let sandbox = sandbox?;
            let child = spawn_blocking(move || sandbox.spawn()).await?;
            child.wait_with_output().await
        }
    }
}
