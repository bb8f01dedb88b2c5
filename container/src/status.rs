use std::fmt;

/// How a sandboxed command ended: an exit code or a signal, decoded from the `wait(2)` status.
///
/// Under the sandbox's init (see [`SandboxBuilder::init`](crate::SandboxBuilder::init)) this is
/// the status of the command itself, which the init reports to the parent, not the init's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus(libc::c_int);

impl ExitStatus {
    /// Wraps a raw `wait(2)` status.
    pub fn from_raw(raw: libc::c_int) -> Self {
        ExitStatus(raw)
    }

    /// The raw `wait(2)` status.
    pub fn into_raw(self) -> libc::c_int {
        self.0
    }

    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }

    /// The exit code, if the command exited normally.
    pub fn code(&self) -> Option<i32> {
        libc::WIFEXITED(self.0).then(|| libc::WEXITSTATUS(self.0))
    }

    /// The signal that terminated the command, if it was killed.
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.0).then(|| libc::WTERMSIG(self.0))
    }

    /// Whether the command dumped core when it was killed.
    pub fn core_dumped(&self) -> bool {
        libc::WIFSIGNALED(self.0) && libc::WCOREDUMP(self.0)
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
            (Some(code), _) => write!(f, "exit status: {code}"),
            (None, Some(sig)) => {
                let name = nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown");
                write!(f, "signal: {sig} ({name})")?;
                if self.core_dumped() {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            (None, None) => write!(f, "unrecognised wait status: {:#x}", self.0),
        }
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
    }
}
