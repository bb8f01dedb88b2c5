use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

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
///
/// Its descriptor ([`AsFd`]) is the process's pidfd (`pidfd_open(2)`), readable once the process
/// has exited: an event loop can watch it and then call [`try_wait`](Self::try_wait).
///
/// # Wall-clock limit
///
/// A sandbox built with [`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout) has a
/// deadline, measured from the call to [`spawn`](crate::Sandbox::spawn) (or
/// [`create`](crate::Sandbox::create)). The clock is kept by the waits of this handle, in the
/// caller's process: [`wait`](Self::wait), [`wait_timeout`](Self::wait_timeout),
/// [`wait_with_output`](Self::wait_with_output) (and so
/// [`SandboxBuilder::output`](crate::SandboxBuilder::output) and
/// [`status`](crate::SandboxBuilder::status)) poll the pidfd for at most the time left, and a
/// wait that reaches the deadline [kills](Self::kill) the whole sandbox and returns a status
/// whose [`timed_out`](crate::ExitStatus::timed_out) is true; [`try_wait`](Self::try_wait) does
/// the same once the deadline has passed.
///
/// A sandbox with an init (a PID namespace, new or joined: the default) is also killed by the
/// init, in the sandbox, when the same limit has passed since the init started (a moment after
/// the spawn: its set-up comes first), whether or not anything waits: a handle that is not
/// waited on, dropped with [`kill_on_drop(false)`](crate::SandboxBuilder::kill_on_drop), or a
/// [detached](crate::SandboxBuilder::detach) sandbox. Its status is then timed out too, here
/// and through [`Handle::wait`](crate::Handle::wait). A handle that waits reaches the deadline
/// first and kills the sandbox itself; whichever of the two kills it, the status says timed
/// out. Without an init ([`init(false)`](crate::SandboxBuilder::init), or no PID namespace)
/// only this handle's waits keep the clock: a sandbox no wait looks at runs on past its
/// deadline until the next wait, or until the handle is dropped (which kills it by default).
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
    /// When the sandbox's wall-clock limit runs out.
    deadline: Option<Instant>,
    /// Whether a wait killed it at its deadline.
    timed_out: bool,
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
            deadline: None,
            timed_out: false,
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

    /// Sets the wall-clock limit's deadline (see [`Child`]'s docs).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The wall-clock limit's deadline, if the sandbox has one (for the async waits).
    #[cfg(feature = "tokio")]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
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

    /// Kills the whole sandbox, like [`std::process::Child::kill`]: `SIGKILL` to every process
    /// of its cgroup (`cgroup.kill`, if it has a group) and to its first process
    /// (`pidfd_send_signal(2)`). With an init, the init is PID 1 of the sandbox's PID namespace,
    /// and its death kills every other process of the namespace (`pid_namespaces(7)`); without
    /// a PID namespace or a cgroup, only the process spawned is killed. Does nothing once the
    /// sandbox has been waited for; [`wait`](Self::wait) for it afterwards.
    ///
    /// ```
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the Child::kill example needs root");
    /// #     return Ok(());
    /// # }
    /// let mut child = palisade::Sandbox::builder("sleep").arg("100").spawn()?;
    /// child.kill()?;
    /// assert_eq!(child.wait()?.signal(), Some(libc::SIGKILL));
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn kill(&self) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // The group first: it reaches what the first process's death would not (a sandbox
        // without a PID namespace), and its v1 fallback lists the processes still alive.
        let group = self.cgroup.as_ref().map(Cgroup::kill).transpose();
        let sent = self.signal(Signal::SIGKILL);
        group?;
        sent
    }

    /// Sends `signal` to the sandbox (`pidfd_send_signal(2)`). With an init, the init forwards
    /// it to the command (SIGKILL kills the whole sandbox). Does nothing once the sandbox has been
    /// waited for.
    ///
    /// Takes `&self`: signalling through the pidfd changes nothing in the handle, and the pidfd
    /// names this process alone, never a later one that reuses its PID (`pidfd_open(2)`); once
    /// the process has been reaped the kernel answers `ESRCH` (`pidfd_send_signal(2)`), so the
    /// call is sound whatever it races with.
    ///
    /// ```
    /// use palisade::{Sandbox, Signal};
    ///
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the Child::signal example needs root");
    /// #     return Ok(());
    /// # }
    /// let mut child = Sandbox::builder("sleep").arg("100").spawn()?;
    /// child.signal(Signal::SIGTERM)?; // the init forwards it to `sleep`
    /// assert_eq!(child.wait()?.signal(), Some(libc::SIGTERM));
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn signal(&self, signal: Signal) -> Result<()> {
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
    /// stdin first, if piped, so that it does not wait for input. At the sandbox's deadline
    /// ([`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)) it kills the sandbox and
    /// returns a [timed-out](crate::ExitStatus::timed_out) status.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        loop {
            if let Some(status) = self.wait_until(None)? {
                return Ok(status);
            }
        }
    }

    /// Waits at most `timeout` for the sandbox to exit: `Some(status)` once it has (as
    /// [`wait`](Self::wait)), `None` if it still runs when `timeout` has passed, the sandbox
    /// untouched. It polls the pidfd (`poll(2)`: readable once the process has exited,
    /// `pidfd_open(2)`), then reaps. Unlike `wait`, it leaves a piped stdin open, so the caller
    /// can go on writing to it between waits. The sandbox's own deadline, if it comes first, ends
    /// the wait as it ends [`wait`](Self::wait).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the Child::wait_timeout example needs root");
    /// #     return Ok(());
    /// # }
    /// let mut child = palisade::Sandbox::builder("sleep").arg("100").spawn()?;
    /// assert_eq!(child.wait_timeout(Duration::from_millis(50))?, None);
    /// child.kill()?;
    /// let status = child.wait_timeout(Duration::from_secs(60))?;
    /// assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        // A timeout too far to represent is no timeout.
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Returns the status if the sandbox has exited, without blocking; past its deadline, kills
    /// it first (see [`Child`]'s docs).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.wait_until(Some(Instant::now()))
    }

    /// Waits until the sandbox exits or `until` passes (`None`: no limit), whichever comes
    /// first, and kills it at its deadline.
    fn wait_until(&mut self, until: Option<Instant>) -> Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.status {
                return Ok(Some(status));
            }
            let limit = match (until, self.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if self.poll_exit(limit)? {
                if let Some(status) = self.reap(0)? {
                    return Ok(Some(status));
                }
                continue;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|d| now >= d) {
                return self.expire().map(Some);
            }
            if until.is_some_and(|u| now >= u) {
                return Ok(None);
            }
        }
    }

    /// Whether the sandbox's first process has exited, polling its pidfd until `until` at most.
    fn poll_exit(&self, until: Option<Instant>) -> Result<bool> {
        poll_pidfd(self.pidfd.as_fd(), until).map_err(|e| self.error("poll the pidfd of", e))
    }

    /// Kills the sandbox at its deadline and reaps it.
    fn expire(&mut self) -> Result<ExitStatus> {
        self.timed_out = true;
        self.kill()?;
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    /// Closes stdin, collects all of stdout and stderr (those piped), and waits for the sandbox.
    ///
    /// The pipes are read on threads of their own while this one waits, so that a sandbox
    /// killed at its deadline ([`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)) ends
    /// the reads too: with it die the last holders of the pipes' write ends (with a PID
    /// namespace or a cgroup; see [`kill`](Self::kill)).
    pub fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let (out, err) = (self.stdout.take(), self.stderr.take());
        let read_all = |mut file: File| -> io::Result<Vec<u8>> {
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)?;
            Ok(buf)
        };
        type Reader<'s> = Option<std::thread::ScopedJoinHandle<'s, io::Result<Vec<u8>>>>;
        let joined = |reader: Reader<'_>| match reader {
            Some(reader) => reader
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("output reader panicked"))),
            None => Ok(Vec::new()),
        };
        let (status, stdout, stderr) = std::thread::scope(|s| {
            let out_reader = out.map(|f| s.spawn(move || read_all(f)));
            let err_reader = err.map(|f| s.spawn(move || read_all(f)));
            let status = self.wait();
            if status.is_err() {
                // Whatever failed, the readers must see end-of-file for the scope to end.
                let _ = self.kill();
            }
            (status, joined(out_reader), joined(err_reader))
        });
        let read_err = |source| Error::Process {
            call: "read output of",
            pid: self.pid,
            source,
        };
        let status = status?;
        let stdout = stdout.map_err(read_err)?;
        let stderr = stderr.map_err(read_err)?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }

    fn reap(&mut self, flags: libc::c_int) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        // SAFETY: `rusage` is plain integers, for which all zeroes is a value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `raw` and `usage` are valid out-pointers; `pid` is our unreaped child.
            let ret = unsafe { libc::wait4(self.pid, &mut raw, flags, &mut usage) };
            match ret {
                0 => return Ok(None),
                -1 => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(self.error("wait4", err));
                    }
                }
                _ => break,
            }
        }
        let mut status = match self.init_report() {
            // The init's report counts the command and its descendants, not the init itself.
            Some(status) if status.cpu_time().is_some() => status,
            // Without a report (the init was killed, and reaped its children as it died,
            // `pid_namespaces(7)`) or without an init, the first process's own usage and that of
            // the children it reaped (`wait4(2)`).
            report => {
                let time = |tv: libc::timeval| {
                    Duration::from_secs(tv.tv_sec.max(0) as u64)
                        + Duration::from_micros(tv.tv_usec.max(0) as u64)
                };
                report.unwrap_or(ExitStatus::from_raw(raw)).with_usage(
                    time(usage.ru_utime),
                    time(usage.ru_stime),
                    (usage.ru_maxrss.max(0) as u64).saturating_mul(1024),
                )
            }
        };
        if let Some(g) = &self.cgroup {
            if let Some(events) = g.memory_events().ok().flatten() {
                status = status.with_oom_kills(events.oom_kill);
            }
        }
        // The group's own peak counts all of its processes at once, and nothing of the
        // caller's; `ru_maxrss` counts what the command's first image shared with the caller,
        // and is the sandbox's own only above the caller's peak (see `ExitStatus`'s docs).
        let group_peak = self
            .cgroup
            .as_ref()
            .and_then(|g| g.memory_peak().ok().flatten());
        status = status.with_peak_memory(match group_peak {
            Some(peak) => Some(peak.0),
            None => status.peak_memory().filter(|&rss| rss > caller_peak()),
        });
        if self.timed_out {
            status = status.with_timed_out();
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

    /// The command's status (usage, timed-out mark) as the init reported it before exiting, if
    /// it did.
    fn init_report(&mut self) -> Option<ExitStatus> {
        ExitStatus::read_report(&mut self.init_report.take()?)
    }

    fn error(&self, call: &'static str, source: io::Error) -> Error {
        Error::Process {
            call,
            pid: self.pid,
            source,
        }
    }
}

/// Whether the process of `pidfd` has exited, polling the pidfd (`poll(2)`: readable once the
/// process has exited, `pidfd_open(2)`) until `until` at most (`None`: as long as it takes).
/// `false` once `until` has passed with the process still running. The waits of [`Child`] and
/// of [`Handle`](crate::Handle) share it.
pub(crate) fn poll_pidfd(pidfd: BorrowedFd<'_>, until: Option<Instant>) -> io::Result<bool> {
    loop {
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        let timespec = left.map(|d| rustix::event::Timespec {
            tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: d.subsec_nanos().into(),
        });
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, timespec.as_ref()) {
            Ok(0) => {
                // poll(2) may come back a little early: only a passed limit ends the wait.
                if until.is_none_or(|u| Instant::now() >= u) {
                    return Ok(false);
                }
            }
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The caller's own peak resident set in bytes (`getrusage(2)`, `RUSAGE_SELF`); `u64::MAX` if
/// unknown, so that nothing is mistaken for the sandbox's.
fn caller_peak() -> u64 {
    // SAFETY: `rusage` is plain integers, for which all zeroes is a value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) fills the live struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return u64::MAX;
    }
    (usage.ru_maxrss.max(0) as u64).saturating_mul(1024)
}

/// The sandbox's pidfd ([`Child::pidfd`]): readable once its first process has exited
/// (`pidfd_open(2)`), for `poll(2)`, epoll or an async reactor.
///
/// ```
/// use std::os::fd::AsFd;
///
/// # if unsafe { libc::geteuid() } != 0 {
/// #     eprintln!("SKIPPED: the AsFd example needs root");
/// #     return Ok(());
/// # }
/// let mut child = palisade::Sandbox::builder("true").spawn()?;
/// let mut fds = [rustix::event::PollFd::new(&child, rustix::event::PollFlags::IN)];
/// rustix::event::poll(&mut fds, None).map_err(std::io::Error::from).unwrap();
/// assert!(child.try_wait()?.is_some_and(|s| s.success()));
/// # let _ = child.as_fd();
/// # Ok::<(), palisade::Error>(())
/// ```
impl AsFd for Child {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.kill_on_drop && self.status.is_none() {
            // The cgroup reaches every process of the sandbox, even without a PID namespace.
            let _ = self.kill();
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
