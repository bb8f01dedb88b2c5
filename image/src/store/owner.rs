//! Names of the store's temporary files and directories, and the collection of those whose
//! owner is dead.
//!
//! Everything made in `tmp/` is named `palisade-<what>-<pid>-<start>-<n>`: the pid of the
//! process that made it, that process's start time (field 22 of `/proc/PID/stat`,
//! `proc_pid_stat(5)`), and a counter of the process. A pid alone would not do: once the owner
//! is dead its pid may be given to another process, which would look like a live owner. The
//! pair is never reused, so an entry whose pid is gone, or is another process now (another
//! start time), is a leftover of a dead owner, and nothing else.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{io_error, remove_tree};
use crate::digest::Digest;
use crate::sys;
use crate::{Error, Result};

/// The prefix of everything made in `tmp/`.
pub(super) const TMP_PREFIX: &str = "palisade-";

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// The process that makes a temporary entry: its pid and start time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Owner {
    pid: u32,
    start: u64,
}

impl Owner {
    /// This process. Read each time rather than remembered, so that a forked child names its
    /// entries after itself.
    pub(super) fn this_process() -> Result<Owner> {
        let pid = std::process::id();
        let stat = || PathBuf::from(format!("/proc/{pid}/stat"));
        match sys::process_start_time(pid) {
            Ok(Some(start)) => Ok(Owner { pid, start }),
            Ok(None) => Err(Error::Io {
                op: "read",
                path: stat(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            }),
            Err(source) => Err(Error::Io {
                op: "read",
                path: stat(),
                source,
            }),
        }
    }

    /// Whether the owner still runs: a process of that pid exists and started at that time.
    /// When `/proc` cannot tell (an error other than "no such process"), the owner is taken as
    /// alive: a leftover kept is harmless, removing a live import's directory is not.
    fn is_alive(self) -> bool {
        match sys::process_start_time(self.pid) {
            Ok(None) => false,
            Ok(Some(start)) => start == self.start,
            Err(_) => true,
        }
    }
}

/// A fresh name in `tmp` for something of this process: `palisade-<what>-<pid>-<start>-<n>`.
pub(super) fn tmp_name(tmp: &Path, what: &str) -> Result<PathBuf> {
    let owner = Owner::this_process()?;
    let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
    Ok(tmp.join(format!(
        "{TMP_PREFIX}{what}-{}-{}-{n}",
        owner.pid, owner.start
    )))
}

/// What the name of an entry of `tmp/` says about its owner.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// `palisade-<what>-<pid>-<start>-<n>`.
    Owned(Owner),
    /// `palisade-<hex>-<pid>-<n>`: an import of a version of this crate that did not record
    /// the start time. Its layer's lock tells whether it still runs.
    LegacyImport(Digest),
    /// Any other `palisade-…` name: a removal or settings file of such a version, or an entry
    /// of no known kind.
    Unknown,
}

fn parse(name: &str) -> Option<Parsed> {
    let rest = name.strip_prefix(TMP_PREFIX)?;
    let fields: Vec<&str> = rest.rsplitn(4, '-').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let [n, start, pid, what] = fields[..] {
        if !what.is_empty() && numeric(n) && numeric(start) && numeric(pid) {
            if let (Ok(pid), Ok(start)) = (pid.parse(), start.parse()) {
                return Some(Parsed::Owned(Owner { pid, start }));
            }
        }
    }
    let legacy: Vec<&str> = rest.split('-').collect();
    if let [hex, pid, n] = legacy[..] {
        if numeric(pid) && numeric(n) {
            if let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) {
                return Some(Parsed::LegacyImport(digest));
            }
        }
    }
    Some(Parsed::Unknown)
}

/// Removes from `tmp` every `palisade-…` entry (directory or file) whose owner is dead,
/// leaving those of live processes. `lock_free` tells whether a layer's lock is free (for the
/// imports of older versions). An entry is first renamed to a name of this process, so that of
/// two processes collecting at once one removes it and the other skips it, and a collection cut
/// short by a crash is collected in turn. Returns what was removed.
pub(super) fn collect(
    tmp: &Path,
    lock_free: &dyn Fn(&Digest) -> Result<bool>,
) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut stale = Vec::new();
    for entry in fs::read_dir(tmp).map_err(io_error("read", tmp))? {
        let entry = entry.map_err(io_error("read", tmp))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dead = match parse(&name) {
            None => false,
            Some(Parsed::Owned(owner)) => !owner.is_alive(),
            Some(Parsed::LegacyImport(digest)) => lock_free(&digest)?,
            Some(Parsed::Unknown) => true,
        };
        if dead {
            stale.push(entry.path());
        }
    }
    for path in stale {
        let doomed = tmp_name(tmp, "rm")?;
        match fs::rename(&path, &doomed) {
            Ok(()) => {}
            // Collected by another process meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Io {
                    op: "collect",
                    path,
                    source: e,
                })
            }
        }
        let is_dir = fs::symlink_metadata(&doomed)
            .map_err(io_error("stat", &doomed))?
            .is_dir();
        if is_dir {
            remove_tree(&doomed)?;
        } else {
            fs::remove_file(&doomed).map_err(io_error("remove", &doomed))?;
        }
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_from_the_end() {
        let owner = Owner {
            pid: 12,
            start: 345,
        };
        assert_eq!(
            parse("palisade-rm-abc-12-345-6"),
            Some(Parsed::Owned(owner))
        );
        assert_eq!(
            parse("palisade-settings-12-345-0"),
            Some(Parsed::Owned(owner))
        );
        let hex = "a".repeat(64);
        assert!(matches!(
            parse(&format!("palisade-{hex}-1-0")),
            Some(Parsed::LegacyImport(_))
        ));
        assert_eq!(parse("palisade-settings-1-0"), Some(Parsed::Unknown));
        assert_eq!(parse("palisade-leftover"), Some(Parsed::Unknown));
        assert_eq!(parse("palisade--1-2-3"), Some(Parsed::Unknown));
        assert_eq!(parse("other"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let Ok(me) = Owner::this_process() else {
            return;
        };
        assert!(me.is_alive());
        let other = Owner {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(!other.is_alive());
    }
}
