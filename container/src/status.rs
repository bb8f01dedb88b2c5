use std::fmt;
use std::hash::{Hash, Hasher};
use std::time::Duration;

/// How a sandboxed command ended: an exit code or a signal, decoded from the `wait(2)` status,
/// with what it used on the way.
///
/// Under the sandbox's init (see [`SandboxBuilder::init`](crate::SandboxBuilder::init)) this is
/// the status of the command itself, which the init reports to the parent, not the init's own.
///
/// A sandbox with a memory limit also reports whether the kernel's OOM killer killed any of its
/// processes ([`oom_killed`](Self::oom_killed)); one with a wall-clock limit, whether it was
/// killed for passing it ([`timed_out`](Self::timed_out),
/// [`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)).
///
/// # Resource usage
///
/// A status returned by a wait of [`Child`](crate::Child) carries the CPU time and the peak
/// memory of the command and of its descendants, as `time(1)` reports them, whether or not the
/// sandbox has limits; one read from a named sandbox's record ([`Handle::wait`](crate::Handle::wait),
/// [`State::exit`](crate::State::exit)) carries what its init reported:
///
/// - CPU time ([`user_time`](Self::user_time), [`system_time`](Self::system_time)) is the
///   `getrusage(2)` sum over the command and every descendant that was waited for (by its
///   parent, or by the init, which reaps orphans): the init reports its children's
///   (`RUSAGE_CHILDREN`), its own set-up excluded; without an init it is the command's own
///   (`wait4(2)`), which includes the few system calls that set the sandbox up before its
///   `execve(2)`. An init killed before it could report (by a wait of the `Child` at a
///   [timeout](crate::SandboxBuilder::timeout), by [`kill`](crate::Child::kill)) reaps every
///   process of its namespace as it dies (`pid_namespaces(7)`), and its own `wait4(2)` usage,
///   set-up included, is reported instead. (An init that kills the sandbox at the deadline
///   itself reports as usual.)
/// - Peak memory ([`peak_memory`](Self::peak_memory)) is, with a cgroup, the group's peak
///   charge (`memory.peak`, cgroup v2 since Linux 5.19; v1 `memory.max_usage_in_bytes`): all
///   of the sandbox's processes together, page cache included. Without a cgroup (or without
///   its memory controller) it is the largest resident set of any one of them (`ru_maxrss`,
///   `getrusage(2)`). The kernel takes that figure at the command's `execve(2)` from the memory
///   it had until then, which was the caller's (the spawn clones it with `CLONE_VM`), so it is
///   never below the caller's own peak: it is reported only when it exceeds the caller's peak
///   resident set (`RUSAGE_SELF`) and so can only be the sandbox's, and is `None` otherwise.
///   Give the sandbox a cgroup ([`cgroup(true)`](crate::SandboxBuilder::cgroup)) for a figure
///   always.
///
/// Usage is `None` for a status built with [`from_raw`](Self::from_raw), and for one read from a
/// named sandbox's record that its init did not write (a sandbox without an init, or whose
/// init was killed before it could report: the handle that reaped it recorded the outcome
/// only). Equality and hashing compare the outcome (the wait status, the OOM kills, the
/// timeout), never the usage.
///
/// ```
/// use palisade::ExitStatus;
///
/// let status = ExitStatus::from_raw(0);
/// assert!(status.success() && status.exit_ok().is_ok());
/// assert_eq!(status.cpu_time(), None);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ExitStatus {
    raw: libc::c_int,
    oom_kills: u64,
    timed_out: bool,
    user: Option<Duration>,
    system: Option<Duration>,
    peak: Option<u64>,
}

impl PartialEq for ExitStatus {
    fn eq(&self, other: &Self) -> bool {
        self.outcome() == other.outcome()
    }
}

impl Eq for ExitStatus {}

impl Hash for ExitStatus {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.outcome().hash(state);
    }
}

/// The init's report of the command's status (see `spawn/init.rs`, "The init's contract"),
/// all native-endian: the raw wait status (`i32`); then, if `getrusage(2)` gave it, the user
/// and system CPU time in microseconds and the largest resident set in KiB (`u64` each); then
/// the flags (`u32`, [`REPORT_TIMED_OUT`]). Earlier inits wrote no flags: 4 bytes, or 28 with
/// the usage. So exactly these four lengths are reports.
const REPORT_STATUS: usize = 4;
/// The usage's three words.
const REPORT_USAGE: usize = 3 * 8;
/// The flag word.
const REPORT_FLAGS: usize = 4;
/// The longest report: status, usage, flags.
pub(crate) const REPORT_MAX: usize = REPORT_STATUS + REPORT_USAGE + REPORT_FLAGS;
/// The report's flag of a command killed at its deadline ([`ExitStatus::timed_out`]).
const REPORT_TIMED_OUT: u32 = 1;

impl ExitStatus {
    /// Wraps a raw `wait(2)` status.
    ///
    /// ```
    /// let status = palisade::ExitStatus::from_raw(3 << 8);
    /// assert_eq!(status.code(), Some(3));
    /// ```
    pub fn from_raw(raw: libc::c_int) -> Self {
        ExitStatus {
            raw,
            oom_kills: 0,
            timed_out: false,
            user: None,
            system: None,
            peak: None,
        }
    }

    /// Decodes the init's report (see [`REPORT_MAX`]): 4 bytes (the status), 8 (and the
    /// flags), 28 (and the usage) or 32 (status, usage, flags). `None` for any other length, or
    /// for flags this library does not know.
    pub(crate) fn from_report(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let raw = i32::from_ne_bytes(bytes.get(..REPORT_STATUS)?.try_into().ok()?);
        let mut status = ExitStatus::from_raw(raw);
        let (usage, flags) = match bytes.len() {
            REPORT_STATUS => (false, false),
            n if n == REPORT_STATUS + REPORT_FLAGS => (false, true),
            n if n == REPORT_STATUS + REPORT_USAGE => (true, false),
            REPORT_MAX => (true, true),
            _ => return None,
        };
        if usage {
            status = status.with_usage(
                Duration::from_micros(word(REPORT_STATUS)?),
                Duration::from_micros(word(REPORT_STATUS + 8)?),
                word(REPORT_STATUS + 16)?.saturating_mul(1024),
            );
        }
        if flags {
            let at = bytes.len() - REPORT_FLAGS;
            let flags = u32::from_ne_bytes(bytes.get(at..)?.try_into().ok()?);
            if flags & !REPORT_TIMED_OUT != 0 {
                return None;
            }
            if flags & REPORT_TIMED_OUT != 0 {
                status = status.with_timed_out();
            }
        }
        Some(status)
    }

    /// Reads a report to its end from `source` (the init's status pipe once the init has
    /// exited, or a named sandbox's `exit` file) and decodes it ([`from_report`](Self::from_report)).
    /// `None` when there is none, or what is there is not one: nothing, a report cut short, or
    /// more bytes than the longest report.
    pub(crate) fn read_report(source: &mut impl std::io::Read) -> Option<Self> {
        // One byte more than a report, to tell a longer file from a report.
        let mut buf = [0u8; REPORT_MAX + 1];
        let mut len = 0;
        // The init wrote it in one write(2) and has exited: all of it is there, or nothing.
        while len < buf.len() {
            match source.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        ExitStatus::from_report(&buf[..len])
    }

    /// The report of this status's outcome, for a status recorded by a handle rather than by
    /// the init (whose usage it never had in the report's units): the raw status and the flags.
    pub(crate) fn outcome_report(&self) -> [u8; REPORT_STATUS + REPORT_FLAGS] {
        let mut out = [0u8; REPORT_STATUS + REPORT_FLAGS];
        let flags = if self.timed_out { REPORT_TIMED_OUT } else { 0 };
        out[..REPORT_STATUS].copy_from_slice(&self.raw.to_ne_bytes());
        out[REPORT_STATUS..].copy_from_slice(&flags.to_ne_bytes());
        out
    }

    /// Adds the usage `getrusage(2)` reports (`ru_maxrss` in bytes).
    pub(crate) fn with_usage(self, user: Duration, system: Duration, max_rss: u64) -> Self {
        ExitStatus {
            user: Some(user),
            system: Some(system),
            peak: Some(max_rss),
            ..self
        }
    }

    /// Replaces the peak memory: with a better source's (the cgroup's), or with `None` when
    /// it cannot be told apart from the caller's.
    pub(crate) fn with_peak_memory(self, bytes: Option<u64>) -> Self {
        ExitStatus {
            peak: bytes,
            ..self
        }
    }

    pub(crate) fn with_oom_kills(self, oom_kills: u64) -> Self {
        ExitStatus { oom_kills, ..self }
    }

    /// Marks the status as that of a sandbox killed at its deadline.
    pub(crate) fn with_timed_out(self) -> Self {
        ExitStatus {
            timed_out: true,
            ..self
        }
    }

    fn outcome(&self) -> (libc::c_int, u64, bool) {
        (self.raw, self.oom_kills, self.timed_out)
    }

    /// The raw `wait(2)` status.
    ///
    /// ```
    /// assert_eq!(palisade::ExitStatus::from_raw(9).into_raw(), 9);
    /// ```
    pub fn into_raw(self) -> libc::c_int {
        self.raw
    }

    /// Whether the kernel's OOM killer killed a process of the sandbox because it reached its
    /// memory limit (its cgroup's `memory.events` counted an `oom_kill`), as Docker's
    /// `OOMKilled`. The command then usually ends with `SIGKILL`.
    pub fn oom_killed(&self) -> bool {
        self.oom_kills > 0
    }

    /// How many processes of the sandbox the OOM killer killed.
    pub fn oom_kills(&self) -> u64 {
        self.oom_kills
    }

    /// Whether the sandbox was still running when its wall-clock limit
    /// ([`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)) passed, and was killed for
    /// it, by a wait of its [`Child`](crate::Child) or by its init: the command then ends with
    /// `SIGKILL` (or, should it have exited in the same instant, with its own status). Read
    /// from a named sandbox's record too ([`Handle::wait`](crate::Handle::wait)).
    ///
    /// ```
    /// assert!(!palisade::ExitStatus::from_raw(0).timed_out());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The CPU time the command and its waited-for descendants spent in user mode (see
    /// [resource usage](Self#resource-usage)); `None` when unknown.
    ///
    /// ```
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the ExitStatus usage example needs root");
    /// #     return Ok(());
    /// # }
    /// let status = palisade::Sandbox::builder("true").status()?;
    /// assert!(status.user_time().is_some());
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn user_time(&self) -> Option<Duration> {
        self.user
    }

    /// The CPU time they spent in the kernel; `None` when unknown.
    ///
    /// ```
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the ExitStatus usage example needs root");
    /// #     return Ok(());
    /// # }
    /// let status = palisade::Sandbox::builder("true").status()?;
    /// assert!(status.system_time().is_some());
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn system_time(&self) -> Option<Duration> {
        self.system
    }

    /// Their total CPU time, user and system; `None` when unknown.
    ///
    /// ```
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the ExitStatus usage example needs root");
    /// #     return Ok(());
    /// # }
    /// let status = palisade::Sandbox::builder("sh")
    ///     .args(["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"])
    ///     .status()?;
    /// let cpu = status.cpu_time().expect("measured");
    /// assert!(cpu > std::time::Duration::ZERO);
    /// println!("{status:#}"); // exit status: 0 (user 0.150s, system 0.010s, peak 1.2 MiB)
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn cpu_time(&self) -> Option<Duration> {
        Some(self.user? + self.system?)
    }

    /// The sandbox's peak memory in bytes (see [resource usage](Self#resource-usage) for what
    /// it counts with and without a cgroup); `None` when unknown, or when without a cgroup it
    /// did not exceed the caller's own peak.
    ///
    /// ```
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the ExitStatus usage example needs root");
    /// #     return Ok(());
    /// # }
    /// let status = palisade::Sandbox::builder("dd")
    ///     .args(["if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"])
    ///     .cgroup(true)
    ///     .status()?;
    /// assert!(status.peak_memory().is_some_and(|bytes| bytes >= 64 << 20));
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn peak_memory(&self) -> Option<u64> {
        self.peak
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// `Ok` if the command exited with code 0, else an error that says how it ended, as
    /// std's (unstable) `ExitStatus::exit_ok`: `status.exit_ok()?` in a function returning
    /// [`palisade::Result`](crate::Result) (it converts to [`Error::Failed`](crate::Error::Failed)).
    ///
    /// ```
    /// use palisade::ExitStatus;
    ///
    /// let err = ExitStatus::from_raw(2 << 8).exit_ok().unwrap_err();
    /// assert_eq!(err.code(), Some(2));
    /// assert_eq!(err.to_string(), "the sandboxed command failed: exit status: 2");
    /// assert!(ExitStatus::from_raw(0).exit_ok().is_ok());
    ///
    /// fn run() -> palisade::Result<()> {
    ///     ExitStatus::from_raw(2 << 8).exit_ok()?;
    ///     Ok(())
    /// }
    /// assert!(matches!(run(), Err(palisade::Error::Failed(e)) if e.code() == Some(2)));
    /// ```
    pub fn exit_ok(&self) -> Result<(), ExitStatusError> {
        if self.success() {
            Ok(())
        } else {
            Err(ExitStatusError(*self))
        }
    }

    /// The exit code, if the command exited normally.
    pub fn code(&self) -> Option<i32> {
        libc::WIFEXITED(self.raw).then(|| libc::WEXITSTATUS(self.raw))
    }

    /// The signal that terminated the command, if it was killed.
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.raw).then(|| libc::WTERMSIG(self.raw))
    }

    /// Whether the command dumped core when it was killed.
    pub fn core_dumped(&self) -> bool {
        libc::WIFSIGNALED(self.raw) && libc::WCOREDUMP(self.raw)
    }

    /// The status as a shell reports it in `$?`: the exit code, or 128 + the signal number.
    pub fn shell_code(&self) -> i32 {
        match (self.code(), self.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) => 255,
        }
    }
}

/// Shows how the command ended (`exit status: 1`, `signal: 9 (SIGKILL)`, then `, OOM-killed`
/// or `, timed out`); the alternate form (`{:#}`) adds the resource usage it knows, as
/// `(user 0.310s, system 0.004s, peak 66.1 MiB)`.
impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code(), self.signal()) {
            (Some(code), _) => write!(f, "exit status: {code}")?,
            (None, Some(sig)) => {
                let name = nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown");
                write!(f, "signal: {sig} ({name})")?;
                if self.core_dumped() {
                    f.write_str(" (core dumped)")?;
                }
            }
            (None, None) => write!(f, "unrecognised wait status: {:#x}", self.raw)?,
        }
        if self.oom_killed() {
            f.write_str(", OOM-killed")?;
        }
        if self.timed_out {
            f.write_str(", timed out")?;
        }
        if f.alternate() {
            let mut parts = Vec::new();
            if let Some(user) = self.user {
                parts.push(format!("user {:.3}s", user.as_secs_f64()));
            }
            if let Some(system) = self.system {
                parts.push(format!("system {:.3}s", system.as_secs_f64()));
            }
            if let Some(peak) = self.peak {
                parts.push(format!("peak {:.1} MiB", peak as f64 / (1024.0 * 1024.0)));
            }
            if !parts.is_empty() {
                write!(f, " ({})", parts.join(", "))?;
            }
        }
        Ok(())
    }
}

/// A command that did not exit with code 0: what [`ExitStatus::exit_ok`] returns, saying how it
/// ended instead.
///
/// ```
/// let err = palisade::ExitStatus::from_raw(libc::SIGKILL).exit_ok().unwrap_err();
/// assert_eq!((err.code(), err.signal()), (None, Some(9)));
/// assert_eq!(err.to_string(), "the sandboxed command failed: signal: 9 (SIGKILL)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the sandboxed command failed: {0}")]
pub struct ExitStatusError(ExitStatus);

impl ExitStatusError {
    /// The status, with its usage.
    ///
    /// ```
    /// let status = palisade::ExitStatus::from_raw(1 << 8);
    /// assert_eq!(status.exit_ok().unwrap_err().status(), status);
    /// ```
    pub fn status(&self) -> ExitStatus {
        self.0
    }

    /// The exit code, if the command exited (with a code other than 0).
    ///
    /// ```
    /// let err = palisade::ExitStatus::from_raw(1 << 8).exit_ok().unwrap_err();
    /// assert_eq!(err.code(), Some(1));
    /// ```
    pub fn code(&self) -> Option<i32> {
        self.0.code()
    }

    /// The signal that killed it, if one did.
    ///
    /// ```
    /// let err = palisade::ExitStatus::from_raw(libc::SIGTERM).exit_ok().unwrap_err();
    /// assert_eq!(err.signal(), Some(libc::SIGTERM));
    /// ```
    pub fn signal(&self) -> Option<i32> {
        self.0.signal()
    }

    /// Whether it was killed at its deadline ([`ExitStatus::timed_out`]).
    ///
    /// ```
    /// let err = palisade::ExitStatus::from_raw(libc::SIGKILL).exit_ok().unwrap_err();
    /// assert!(!err.timed_out());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.0.timed_out()
    }
}

impl From<ExitStatusError> for ExitStatus {
    fn from(err: ExitStatusError) -> ExitStatus {
        err.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_codes_and_signals() {
        let exited = ExitStatus::from_raw(3 << 8);
        assert_eq!((exited.code(), exited.signal()), (Some(3), None));
        assert_eq!(exited.shell_code(), 3);
        assert!(!exited.success());
        assert_eq!(exited.to_string(), "exit status: 3");

        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!((killed.code(), killed.signal()), (None, Some(9)));
        assert_eq!(killed.shell_code(), 137);
        assert_eq!(killed.to_string(), "signal: 9 (SIGKILL)");

        let dumped = ExitStatus::from_raw(libc::SIGSEGV | 0x80);
        assert!(dumped.core_dumped());
        assert!(ExitStatus::from_raw(0).success());

        let oom = killed.with_oom_kills(1);
        assert!(oom.oom_killed() && !killed.oom_killed());
        assert_eq!(oom.to_string(), "signal: 9 (SIGKILL), OOM-killed");
        assert_eq!(
            killed.with_timed_out().to_string(),
            "signal: 9 (SIGKILL), timed out"
        );
    }

    #[test]
    fn reports_decode_with_and_without_usage() {
        let mut report = Vec::new();
        report.extend_from_slice(&(3i32 << 8).to_ne_bytes());
        for word in [1_500_000u64, 250_000, 2048] {
            report.extend_from_slice(&word.to_ne_bytes());
        }
        let status = ExitStatus::from_report(&report).unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(status.user_time(), Some(Duration::from_millis(1500)));
        assert_eq!(status.system_time(), Some(Duration::from_millis(250)));
        assert_eq!(status.cpu_time(), Some(Duration::from_millis(1750)));
        assert_eq!(status.peak_memory(), Some(2 << 20));
        assert_eq!(
            format!("{status:#}"),
            "exit status: 3 (user 1.500s, system 0.250s, peak 2.0 MiB)"
        );
        // Usage never makes two outcomes differ.
        assert_eq!(status, ExitStatus::from_raw(3 << 8));

        let bare = ExitStatus::from_report(&report[..4]).unwrap();
        assert_eq!((bare.code(), bare.cpu_time()), (Some(3), None));
        assert!(ExitStatus::from_report(&report[..7]).is_none());
        assert!(ExitStatus::from_report(&[]).is_none());
        // Neither of the two earlier reports is timed out.
        assert!(!status.timed_out() && !bare.timed_out());
    }

    #[test]
    fn reports_decode_with_flags() {
        let killed = libc::SIGKILL.to_ne_bytes();
        let usage: Vec<u8> = [400_000u64, 100_000, 1024]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let with = |parts: &[&[u8]]| parts.concat();

        // Status, usage, flags: 32 bytes.
        let full = with(&[&killed, &usage, &1u32.to_ne_bytes()]);
        assert_eq!(full.len(), REPORT_MAX);
        let status = ExitStatus::from_report(&full).unwrap();
        assert!(status.timed_out(), "{status}");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(status.cpu_time(), Some(Duration::from_millis(500)));
        assert_eq!(status.peak_memory(), Some(1 << 20));

        // No flag set: not timed out, with its usage.
        let ended = ExitStatus::from_report(&with(&[&killed, &usage, &0u32.to_ne_bytes()]));
        let ended = ended.unwrap();
        assert!(!ended.timed_out());
        assert_eq!(ended.user_time(), Some(Duration::from_millis(400)));

        // Status and flags, without usage: 8 bytes.
        let bare = ExitStatus::from_report(&with(&[&killed, &1u32.to_ne_bytes()])).unwrap();
        assert!(bare.timed_out() && bare.cpu_time().is_none());

        // A flag this library does not know, or any other length, is no report.
        assert!(ExitStatus::from_report(&with(&[&killed, &usage, &2u32.to_ne_bytes()])).is_none());
        assert!(ExitStatus::from_report(&with(&[&killed, &2u32.to_ne_bytes()])).is_none());
        assert!(ExitStatus::from_report(&full[..31]).is_none());
        assert!(ExitStatus::from_report(&with(&[&full, &[0]])).is_none());
        assert!(ExitStatus::from_report(&full[..12]).is_none());
    }

    #[test]
    fn a_recorded_outcome_reads_back_as_it_was() {
        let timed_out = ExitStatus::from_raw(libc::SIGKILL).with_timed_out();
        let plain = ExitStatus::from_raw(3 << 8);
        for status in [timed_out, plain] {
            let bytes = status.outcome_report();
            let read = ExitStatus::read_report(&mut &bytes[..]).unwrap();
            assert_eq!(read, status);
            assert_eq!(read.timed_out(), status.timed_out());
        }
        // A file longer than any report is none, however it starts.
        let long = [0u8; REPORT_MAX + 1];
        assert!(ExitStatus::read_report(&mut &long[..]).is_none());
        assert!(ExitStatus::read_report(&mut &[][..]).is_none());
    }
}
