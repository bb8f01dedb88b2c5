//! Time namespace clock offsets (`time_namespaces(7)`): `/proc/<pid>/timens_offsets`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A signed clock offset: whole seconds plus nanoseconds (`0..1_000_000_000`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offset {
    secs: i64,
    nanos: u32,
}

impl Offset {
    /// An offset of `secs` seconds (negative to move the clock back).
    pub const fn secs(secs: i64) -> Offset {
        Offset { secs, nanos: 0 }
    }

    /// An offset of `secs` seconds plus `nanos` nanoseconds, which must be below one second.
    pub fn new(secs: i64, nanos: u32) -> Result<Offset> {
        if nanos >= 1_000_000_000 {
            return Err(Error::InvalidOffset(format!(
                "{nanos} nanoseconds is not below one second"
            )));
        }
        Ok(Offset { secs, nanos })
    }

    /// Whole seconds.
    pub fn as_secs(&self) -> i64 {
        self.secs
    }

    /// Nanoseconds past the whole seconds.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }
}

/// Offsets for the two clocks a time namespace virtualises. They can only be set between the
/// namespace's creation (`unshare(CLONE_NEWTIME)`) and the first process entering it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeOffsets {
    /// Added to `CLOCK_MONOTONIC` (and its `_RAW`/`_COARSE` variants).
    pub monotonic: Offset,
    /// Added to `CLOCK_BOOTTIME` (and `/proc/uptime`).
    pub boottime: Offset,
}

impl TimeOffsets {
    /// Both offsets set to the same value: a namespace whose system looks `offset` older.
    pub fn both(offset: Offset) -> TimeOffsets {
        TimeOffsets {
            monotonic: offset,
            boottime: offset,
        }
    }

    /// Whether both offsets are zero.
    pub fn is_zero(&self) -> bool {
        *self == TimeOffsets::default()
    }
}

/// The kernel's input format: `monotonic <secs> <nanos>` and `boottime <secs> <nanos>` lines.
impl fmt::Display for TimeOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "monotonic {} {}",
            self.monotonic.secs, self.monotonic.nanos
        )?;
        writeln!(f, "boottime {} {}", self.boottime.secs, self.boottime.nanos)
    }
}

/// Writes the offsets of the time namespace that `pid`'s future children will be born in
/// (`/proc/<pid>/timens_offsets`, one `write(2)`). Needs `CAP_SYS_TIME` in the user namespace
/// owning that time namespace, and fails with `EACCES` once a process has entered it.
pub fn write_timens_offsets(pid: libc::pid_t, offsets: &TimeOffsets) -> Result<()> {
    let path = PathBuf::from(format!("/proc/{pid}/timens_offsets"));
    let text = offsets.to_string();
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io("write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_the_kernel() {
        let offsets = TimeOffsets {
            monotonic: Offset::secs(86_400),
            boottime: Offset::new(-5, 250).unwrap(),
        };
        assert_eq!(offsets.to_string(), "monotonic 86400 0\nboottime -5 250\n");
        assert!(Offset::new(0, 1_000_000_000).is_err());
        assert!(TimeOffsets::default().is_zero());
    }
}
