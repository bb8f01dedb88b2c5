//! The sandbox's wall-clock limit.

use std::time::Duration;

use super::SandboxBuilder;
use crate::error::{Error, Result};

impl SandboxBuilder {
    /// Kills the whole sandbox if it still runs `limit` after the spawn, as a code-execution
    /// service needs: its status then reports [`timed_out`](crate::ExitStatus::timed_out).
    ///
    /// The clock starts with [`Sandbox::spawn`](crate::Sandbox::spawn) (or
    /// [`create`](crate::Sandbox::create)) and is kept twice:
    ///
    /// - by the waits of the [`Child`](crate::Child) handle: [`wait`](crate::Child::wait),
    ///   [`wait_timeout`](crate::Child::wait_timeout),
    ///   [`wait_with_output`](crate::Child::wait_with_output), [`status`](Self::status) and
    ///   [`output`](Self::output) wait at most until the deadline, then
    ///   [kill](crate::Child::kill) the sandbox (`cgroup.kill` with a cgroup; SIGKILL to its
    ///   init, whose death takes every process of its PID namespace along) and return its
    ///   status; [`try_wait`](crate::Child::try_wait) does the same once the deadline has
    ///   passed;
    /// - by the sandbox's [init](Self::init), when it has one (a PID namespace, new by
    ///   default, or [joined](Self::join_namespace)): the init counts the limit from its own
    ///   start, a moment after the spawn, and then kills the sandbox itself, whether or not
    ///   anything waits (every process of its PID namespace; in a joined one, where it is not
    ///   PID 1, only the command), and reports the command's status as timed out, to the
    ///   `Child` and to a named sandbox's [`Handle::wait`](crate::Handle::wait) alike.
    ///
    /// See [`Child`](crate::Child#wall-clock-limit). Without an init only the `Child`'s waits
    /// keep the clock.
    ///
    /// A [detached](Self::detach) sandbox has no `Child` whose waits could keep the clock: it
    /// takes a timeout only with an init, which keeps it; [`build`](Self::build) refuses a
    /// detached sandbox with a timeout and without an init ([`Error::InvalidValue`]).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the SandboxBuilder::timeout example needs root");
    /// #     return Ok(());
    /// # }
    /// let status = palisade::Sandbox::builder("sleep")
    ///     .arg("100")
    ///     .timeout(Duration::from_millis(200))
    ///     .status()?;
    /// assert!(status.timed_out());
    /// assert_eq!(status.signal(), Some(libc::SIGKILL));
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn timeout(&mut self, limit: Duration) -> &mut Self {
        self.lifecycle.timeout = Some(limit);
        self
    }
}

/// Refuses a wall-clock limit nobody would enforce: a detached sandbox's is kept by its init
/// alone.
pub(super) fn check(timeout: Option<Duration>, detach: bool, init: bool) -> Result<()> {
    match timeout {
        Some(limit) if detach && !init => Err(Error::InvalidValue {
            what: "timeout",
            value: format!("{limit:?}"),
            reason: "a detached sandbox without an init (no PID namespace, or init(false)) \
                     has neither a handle nor an init to keep its clock: give it an init, or \
                     wait with Handle::wait_timeout and kill it",
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_sandbox_takes_a_timeout_only_with_an_init() {
        let mut builder = crate::Sandbox::builder("true");
        builder
            .name("timeout-refused")
            .detach(true)
            .init(false)
            .timeout(Duration::from_secs(1));
        let err = builder.build().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidValue {
                    what: "timeout",
                    ..
                }
            ),
            "{err}"
        );
        let second = Some(Duration::from_secs(1));
        // Kept by the init, or by a handle's waits.
        assert!(check(second, true, true).is_ok());
        assert!(check(second, false, false).is_ok());
        assert!(check(second, false, true).is_ok());
        assert!(check(None, true, false).is_ok());
        assert!(check(second, true, false).is_err());
    }
}
