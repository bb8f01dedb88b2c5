use std::fmt;

/// How a sandboxed command ended: an exit code or a signal, decoded from the `wait(2)` status.
///
/// Under the sandbox's init (see [`SandboxBuilder::init`](crate::SandboxBuilder::init)) this is
/// the status of the command itself, which the init reports to the parent, not the init's own.
///
/// A sandbox with a memory limit also reports whether the kernel's OOM killer killed any of its
/// processes ([`oom_killed`](Self::oom_killed)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus {
    raw: libc::c_int,
    oom_kills: u64,
}

impl ExitStatus {
    /// Wraps a raw `wait(2)` status.
    pub fn from_raw(raw: libc::c_int) -> Self {
        ExitStatus { raw, oom_kills: 0 }
    }

    pub(crate) fn with_oom_kills(self, oom_kills: u64) -> Self {
        ExitStatus { oom_kills, ..self }
    }

    /// The raw `wait(2)` status.
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

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
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
        Ok(())
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
    }
}
