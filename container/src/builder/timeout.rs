//! The sandbox's wall-clock limit.

use std::time::Duration;

use super::SandboxBuilder;
use crate::error::{Error, Result};

impl SandboxBuilder {
    /// Kills the whole sandbox if it still runs `limit` after the spawn, as a code-execution
    /// service needs: its status then reports [`timed_out`](crate::ExitStatus::timed_out).
    ///
    /// The clock starts with [`Sandbox::spawn`](crate::Sandbox::spawn) (or
    /// [`create`](crate::Sandbox::create)) and is kept by the waits of the
    /// [`Child`](crate::Child) handle: [`wait`](crate::Child::wait),
    /// [`wait_timeout`](crate::Child::wait_timeout),
    /// [`wait_with_output`](crate::Child::wait_with_output), [`status`](Self::status) and
    /// [`output`](Self::output) wait at most until the deadline, then
    /// [kill](crate::Child::kill) the sandbox (`cgroup.kill` with a cgroup; SIGKILL to its init,
    /// whose death takes every process of its PID namespace along) and return its status;
    /// [`try_wait`](crate::Child::try_wait) does the same once the deadline has passed. See
    /// [`Child`](crate::Child#wall-clock-limit).
    ///
    /// A [detached](Self::detach) sandbox has no handle whose waits could keep the clock:
    /// [`build`](Self::build) refuses the combination ([`Error::InvalidValue`]).
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

/// Refuses a wall-clock limit nobody would enforce.
pub(super) fn check(timeout: Option<Duration>, detach: bool) -> Result<()> {
    match timeout {
        Some(limit) if detach => Err(Error::InvalidValue {
            what: "timeout",
            value: format!("{limit:?}"),
            reason: "a detached sandbox has no handle to keep its clock: wait with a timeout \
                     through Handle::pidfd instead",
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_sandbox_takes_no_timeout() {
        let mut builder = crate::Sandbox::builder("true");
        builder
            .name("timeout-refused")
            .detach(true)
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
        assert!(check(Some(Duration::from_secs(1)), false).is_ok());
        assert!(check(None, true).is_ok());
    }
}
