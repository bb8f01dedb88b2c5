use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use palisade_cgroup::{Cgroup, MemoryEvents, Stats};
use palisade_netns::{Attachment, Forwarder, PortMap};
use palisade_seccomp::notify::Listener;
use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::{ExitStatus, Signal};

/// A running (or finished, not yet waited for) sandbox, like [`std::process::Child`].
///
/// The handle refers to the process the sandbox was cloned as: the init (PID 1 of the sandbox's
/// PID namespace) or, without one, the command itself. Dropping a handle that has not been
/// waited for kills and reaps the sandbox, unless
/// [`kill_on_drop(false)`](crate::SandboxBuilder::kill_on_drop) was set.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// The init's report of the command's wait status.
    init_report: Option<File>,
    status: Option<ExitStatus>,
    kill_on_drop: bool,
    /// The sandbox's own cgroup, if it has one; removed when the handle is dropped.
    cgroup: Option<Cgroup>,
    /// Its bridge attachment or port forwarder; removed once the sandbox has been reaped.
    net: Option<NetHandle>,
    /// Why the removal of its network after the reaping failed, if it did.
    cleanup_error: Option<Error>,
    /// The user-notification listener of its seccomp filter, until taken.
    seccomp_listener: Option<Listener>,
    /// The master of the command's terminal ([`SandboxBuilder::tty`](crate::SandboxBuilder::tty)).
    pty: Option<crate::terminal::Pty>,
    /// What a command run in the sandbox with [`Child::exec`] takes from it; `None` for an
    /// exec's own handle.
    entry: Option<std::sync::Arc<crate::entry::Entry>>,
    /// Whether the sandbox has an init, whose child the command is.
    has_init: bool,
    /// A named sandbox's record.
    record: Option<crate::state::Record>,
    /// Whether it outlives this handle and this process.
    detached: bool,
    /// A created command's start gate and error pipe, until [`Child::start`].
    pending: Option<PendingStart>,
    /// The parent's end of the command's stdin, if it was [piped](crate::Stdio::piped).
    pub stdin: Option<File>,
    /// The parent's end of the command's stdout, if it was piped.
    pub stdout: Option<File>,
    /// The parent's end of the command's stderr, if it was piped.
    pub stderr: Option<File>,
}

/// How a created command is started, and where its last steps report.
#[derive(Debug)]
pub(crate) struct PendingStart {
    /// The write end of an unnamed sandbox's gate pipe.
    pub gate: Option<OwnedFd>,
    /// A named sandbox's `start` FIFO.
    pub fifo: Option<std::path::PathBuf>,
    /// The error pipe, which reports the command's exec.
    pub err: File,
}

/// What a sandbox's network needs from its handle.
#[derive(Debug)]
pub(crate) enum NetHandle {
    /// On a bridge: veth, address, NAT rules, forwarder.
    Bridge(Box<Attachment>),
    /// Published ports of a sandbox with only loopback.
    Forward(Forwarder),
}

/// The collected result of [`Child::wait_with_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How the command ended.
    pub status: ExitStatus,
    /// Everything it wrote to stdout (if piped).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (if piped).
    pub stderr: Vec<u8>,
}

impl Child {
    pub(crate) fn new(
        pid: libc::pid_t,
        pidfd: OwnedFd,
        init_report: Option<File>,
        [stdin, stdout, stderr]: [Option<File>; 3],
    ) -> Child {
        Child {
            pid,
            pidfd,
            has_init: init_report.is_some(),
            record: None,
            detached: false,
            pending: None,
            init_report,
            status: None,
            kill_on_drop: true,
            cgroup: None,
            net: None,
            cleanup_error: None,
            seccomp_listener: None,
            pty: None,
            entry: None,
            stdin,
            stdout,
            stderr,
        }
    }

    pub(crate) fn set_record(&mut self, record: crate::state::Record, detached: bool) {
        self.record = Some(record);
        self.detached = detached;
    }

    pub(crate) fn set_pending_start(
        &mut self,
        gate: Option<OwnedFd>,
        fifo: Option<std::path::PathBuf>,
        err: File,
    ) {
        self.pending = Some(PendingStart { gate, fifo, err });
    }

    /// Takes a created command's start gate and error pipe, once.
    pub(crate) fn take_pending_start(&mut self) -> Option<PendingStart> {
        self.pending.take()
    }

    /// The named sandbox's record.
    pub(crate) fn record(&self) -> Option<&crate::state::Record> {
        self.record.as_ref()
    }

    /// The pid of the sandbox's command, in the caller's PID namespace: the init's child, or
    /// the sandbox's first process itself without an init. Known from
    /// [`create`](crate::Sandbox::create) on (runtimes write it to `--pid-file`); 0 once an
    /// init's command has exited.
    pub fn command_id(&self) -> u32 {
        if !self.has_init {
            return self.id();
        }
        crate::state::child_of(self.id()).unwrap_or(0)
    }

    /// The sandbox's bridge, its address there, and the bridge's state directory.
    pub(crate) fn bridge_address(&self) -> Option<(String, IpAddr, std::path::PathBuf)> {
        match &self.net {
            Some(NetHandle::Bridge(a)) => Some((
                a.bridge().name().to_owned(),
                a.address(),
                a.bridge().get_state_dir().to_owned(),
            )),
            _ => None,
        }
    }

    pub(crate) fn set_kill_on_drop(&mut self, kill: bool) {
        self.kill_on_drop = kill;
    }

    pub(crate) fn set_cgroup(&mut self, cgroup: Option<Cgroup>) {
        self.cgroup = cgroup;
    }

    pub(crate) fn set_network(&mut self, net: Option<NetHandle>) {
        self.net = net;
    }

    pub(crate) fn set_seccomp_listener(&mut self, listener: Listener) {
        self.seccomp_listener = Some(listener);
    }

    pub(crate) fn set_entry(&mut self, entry: crate::entry::Entry) {
        self.entry = Some(std::sync::Arc::new(entry));
    }

    pub(crate) fn entry(&self) -> Option<std::sync::Arc<crate::entry::Entry>> {
        self.entry.clone()
    }

    /// Whether the sandbox's first process still runs: not waited for, and its pidfd not yet
    /// readable (it becomes readable when the process exits, `pidfd_open(2)`).
    pub(crate) fn is_running(&self) -> bool {
        if self.status.is_some() {
            return false;
        }
        !palisade_ns::pidfd_exited(self.pidfd.as_fd())
    }

    pub(crate) fn set_pty(&mut self, pty: crate::terminal::Pty) {
        self.pty = Some(pty);
    }

    /// Takes the master of the command's terminal, if it was given one with
    /// [`SandboxBuilder::tty`](crate::SandboxBuilder::tty): read the command's output from it and
    /// write its input to it, or [`proxy`](crate::Pty::proxy) it to the caller's terminal.
    /// Returns `None` the second time.
    pub fn take_pty(&mut self) -> Option<crate::terminal::Pty> {
        self.pty.take()
    }

    /// Takes the listener of the sandbox's seccomp filter, if its profile has rules with
    /// [`Action::UserNotify`](palisade_seccomp::Action::UserNotify): the command's calls of those system calls
    /// wait until the listener's owner answers them (`seccomp_unotify(2)`). Returns `None` the
    /// second time, and for profiles without such rules.
    pub fn take_seccomp_listener(&mut self) -> Option<Listener> {
        self.seccomp_listener.take()
    }

    /// The sandbox's address on its bridge ([`Network::Bridge`](palisade_netns::Network)).
    pub fn address(&self) -> Option<IpAddr> {
        match &self.net {
            Some(NetHandle::Bridge(a)) => Some(a.address()),
            _ => None,
        }
    }

    /// The published ports, with the host ports the kernel chose where 0 was asked for.
    pub fn ports(&self) -> &[PortMap] {
        match &self.net {
            Some(NetHandle::Bridge(a)) => a.ports(),
            Some(NetHandle::Forward(f)) => f.ports(),
            None => &[],
        }
    }

    /// Why removing the sandbox's network after it exited failed, if it did: e.g. a corrupt
    /// bridge state file ([`palisade_netns::Error::CorruptState`]) or a state lock held too long
    /// ([`palisade_netns::Error::LockTimeout`]). Such a failure never replaces the command's
    /// status: [`Child::wait`] and [`Child::try_wait`] still return the status, and this reports
    /// the failure separately. The teardown removes what it can regardless; what is left
    /// behind is what [`gc`](crate::gc) removes. `None` until the sandbox has been reaped.
    pub fn cleanup_error(&self) -> Option<&Error> {
        self.cleanup_error.as_ref()
    }

    pub(crate) fn group(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    fn require_group(&self) -> Result<&Cgroup> {
        self.cgroup.as_ref().ok_or(Error::NoCgroup)
    }

    /// The sandbox's resource usage now — memory, CPU time, processes, block I/O — read from its
    /// cgroup (what `docker stats` shows). Needs a cgroup: a limit, or
    /// [`cgroup(true)`](crate::SandboxBuilder::cgroup).
    pub fn stats(&self) -> Result<Stats> {
        Ok(self.require_group()?.stats()?)
    }

    /// How often the sandbox hit its memory limit, and how many of its processes the OOM killer
    /// killed; `None` if its cgroup has no memory controller.
    pub fn memory_events(&self) -> Result<Option<MemoryEvents>> {
        Ok(self.require_group()?.memory_events()?)
    }

    /// Freezes every process of the sandbox (`cgroup.freeze`; v1 freezer) and returns once the
    /// kernel reports them frozen. A frozen sandbox uses no CPU and can be killed.
    pub fn freeze(&self) -> Result<()> {
        Ok(self.require_group()?.freeze()?)
    }

    /// Thaws a frozen sandbox.
    pub fn thaw(&self) -> Result<()> {
        Ok(self.require_group()?.thaw()?)
    }

    /// The name of the sandbox's cgroup directory, if it has one.
    pub fn cgroup_name(&self) -> Option<&str> {
        self.cgroup.as_ref().map(Cgroup::name)
    }

    /// The sandbox's process id in the caller's PID namespace.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// A pidfd for the sandbox process (`pidfd_open(2)`): pollable for exit, usable with
    /// [`palisade_ns::setns`] to join the sandbox's namespaces.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends `signal` to the sandbox (`pidfd_send_signal(2)`). With an init, the init forwards
    /// it to the command (SIGKILL kills the whole sandbox). Does nothing once the sandbox has been
    /// waited for.
    ///
    /// Takes `&self`: signalling through the pidfd changes nothing in the handle, and the pidfd
    /// names this process alone, never a later one that reuses its PID (`pidfd_open(2)`); once
    /// the process has been reaped the kernel answers `ESRCH` (`pidfd_send_signal(2)`), so the
    /// call is sound whatever it races with.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // Every `Signal` names a signal of the kernel's, so the conversion never fails.
        let sig = rustix::process::Signal::from_named_raw(signal as i32)
            .ok_or(rustix::io::Errno::INVAL)
            .and_then(|sig| rustix::process::pidfd_send_signal(&self.pidfd, sig));
        sig.map_err(|e| self.error("pidfd_send_signal", e.into()))
    }

    /// Waits for the sandbox to exit and returns the command's status. Closes the command's
    /// stdin first, if piped, so that it does not wait for input.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        match self.reap(0)? {
            Some(status) => Ok(status),
            None => unreachable!("a blocking waitpid returned no child"),
        }
    }

    /// Returns the status if the sandbox has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Closes stdin, collects all of stdout and stderr (those piped), and waits for the sandbox.
    pub fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let (out, err) = (self.stdout.take(), self.stderr.take());
        let read_all = |file: Option<File>| -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            if let Some(mut f) = file {
                f.read_to_end(&mut buf)?;
            }
            Ok(buf)
        };
        let (stdout, stderr) = std::thread::scope(|s| {
            let err_reader = s.spawn(|| read_all(err));
            let stdout = read_all(out);
            let stderr = err_reader
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("stderr reader panicked")));
            (stdout, stderr)
        });
        let read_err = |source| Error::Process {
            call: "read output of",
            pid: self.pid,
            source,
        };
        let stdout = stdout.map_err(read_err)?;
        let stderr = stderr.map_err(read_err)?;
        Ok(Output {
            status: self.wait()?,
            stdout,
            stderr,
        })
    }

    fn reap(&mut self, flags: libc::c_int) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: `raw` is a valid out-pointer; `pid` is our unreaped child.
            let ret = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            match ret {
                0 => return Ok(None),
                -1 => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(self.error("waitpid", err));
                    }
                }
                _ => break,
            }
        }
        let mut status = self.init_report().unwrap_or(ExitStatus::from_raw(raw));
        if let Some(events) = self
            .cgroup
            .as_ref()
            .and_then(|g| g.memory_events().ok().flatten())
        {
            status = status.with_oom_kills(events.oom_kill);
        }
        self.status = Some(status);
        if let Some(record) = &self.record {
            record.record_exit(status);
        }
        // The sandbox is gone: its veth, address, NAT rules and forwarder go too. A failure
        // there is the caller's to see, but never in place of the command's status.
        match self.net.take() {
            Some(NetHandle::Bridge(a)) => {
                if let Err(e) = a.detach() {
                    self.cleanup_error = Some(e.into());
                }
            }
            Some(NetHandle::Forward(f)) => drop(f),
            None => {}
        }
        Ok(Some(status))
    }

    /// The command's status as the init reported it before exiting, if it did.
    fn init_report(&mut self) -> Option<ExitStatus> {
        let mut buf = [0u8; 4];
        let mut file = self.init_report.take()?;
        match file.read(&mut buf) {
            Ok(4) => Some(ExitStatus::from_raw(i32::from_ne_bytes(buf))),
            _ => None,
        }
    }

    fn error(&self, call: &'static str, source: io::Error) -> Error {
        Error::Process {
            call,
            pid: self.pid,
            source,
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.kill_on_drop && self.status.is_none() {
            // The cgroup reaches every process of the sandbox, even without a PID namespace.
            if let Some(g) = &self.cgroup {
                let _ = g.kill();
            }
            let _ = self.kill(Signal::SIGKILL);
            let _ = self.reap(0);
        }
        if self.status.is_none() {
            // Still running: leave its group. Its network stays too; the next attach to its
            // bridge after it ends removes it.
            if let Some(NetHandle::Bridge(a)) = self.net.take() {
                if self.detached {
                    // Its tables are its own, not this process's socket's; collected after
                    // its exit (see `SandboxBuilder::detach`).
                    let _ = a.release();
                } else {
                    std::mem::forget(a);
                }
            }
            if let Some(g) = self.cgroup.take() {
                g.keep();
            }
        }
        // Otherwise the group, now empty, is removed as `cgroup` drops.
    }
}
