//! Owner-tagged group names, and removing the groups whose owner is gone.
//!
//! A group this library names is called `palisade-<pid>-<starttime>-<n>`: the creating process's
//! pid and its start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot, `proc(5)`),
//! which together name one process for the life of the system even when pids are reused. A
//! group is deleted when its [`Cgroup`](crate::Cgroup) is dropped, but an owner killed by
//! `SIGKILL` drops nothing; [`gc`] finds such groups by their names and removes them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::hierarchy::Hierarchy;
use crate::parse;
use crate::sys::{self, read_parsed, tree, write_file};

/// How long [`gc`] waits for one stale group's processes to die and its directories to go.
const GC_TIMEOUT: Duration = Duration::from_secs(10);

/// The process that owns a group: its pid and start time, as `/proc` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The process id, in the pid namespace of the `/proc` this process sees.
    pub pid: u32,
    /// The start time (`proc(5)`, `/proc/<pid>/stat` field 22), in clock ticks after boot.
    pub start_time: u64,
}

impl Owner {
    /// This process, from `/proc/self/stat`.
    pub fn current() -> Result<Owner> {
        let path = Path::new("/proc/self/stat");
        let text = sys::read_file(path)?;
        parse_stat(&text).ok_or_else(|| Error::Parse {
            path: path.to_owned(),
            reason: "no pid and start time (fields 1 and 22)".to_owned(),
        })
    }

    /// The process `pid`, from `/proc/<pid>/stat`.
    pub fn of_pid(pid: u32) -> Result<Owner> {
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        let text = sys::read_file(&path)?;
        parse_stat(&text).ok_or(Error::Parse {
            path,
            reason: "no pid and start time (fields 1 and 22)".to_owned(),
        })
    }

    /// Whether the process still runs: `/proc/<pid>/stat` exists and shows the same start time.
    /// Only a missing process or a different start time counts as gone; any other failure to
    /// read the file (e.g. `hidepid`) counts as alive, so that a live owner's groups are never
    /// touched.
    pub fn is_alive(&self) -> bool {
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(text) => parse_stat(&text).is_none_or(|o| o == *self),
            Err(e) => {
                !matches!(e.kind(), ErrorKind::NotFound) && e.raw_os_error() != Some(libc::ESRCH)
            }
        }
    }

    /// The default name of this owner's `seq`-th group: `palisade-<pid>-<starttime>-<seq>`.
    pub fn group_name(&self, seq: u32) -> String {
        format!("palisade-{}-{}-{seq}", self.pid, self.start_time)
    }

    /// The owner named by a default group name, or `None` for any other name.
    pub fn of_group_name(name: &str) -> Option<Owner> {
        let rest = name.strip_prefix("palisade-")?;
        let mut parts = rest.split('-');
        let mut number = || -> Option<u64> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let pid = u32::try_from(number()?).ok().filter(|&p| p > 0)?;
        let start_time = number()?;
        number()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Owner { pid, start_time })
    }
}

/// Fields 1 (pid) and 22 (starttime) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so the fields after it are
/// counted from the last `)`.
fn parse_stat(text: &str) -> Option<Owner> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    // `tail` starts at field 3 (state), so field 22 is its 20th word.
    let start_time = tail.split_whitespace().nth(19)?.parse().ok()?;
    Some(Owner { pid, start_time })
}

/// What [`gc`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct GcReport {
    /// The names of the stale groups removed.
    pub removed: Vec<String>,
    /// How many processes were still in them and were killed.
    pub killed: usize,
    /// Stale groups that could not be removed, with the reason. The next [`gc`] tries again.
    pub failed: Vec<(String, Error)>,
}

impl GcReport {
    /// Whether there was nothing to collect and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.failed.is_empty()
    }
}

/// Removes the groups left by owners that are gone: every `palisade-<pid>-<starttime>-<n>`
/// group directly beneath `parent` (a path as in `/proc/<pid>/cgroup`; by default this
/// process's own group) in every hierarchy — the unified one and each v1 controller mount —
/// whose owner no longer runs ([`Owner::is_alive`]). Processes still in such a group are killed
/// (`cgroup.kill`, or `SIGKILL` to each member listed in `cgroup.procs`), then its directories
/// are removed, child groups first. Each stale group takes at most 10 s.
///
/// Groups of live owners (this process's included) and groups with any other name are never
/// touched. When there is nothing to collect, this costs one `readdir` per hierarchy, so a
/// caller may run it before every group it creates. A hierarchy in which this process has no
/// group (it cannot have created any there) is skipped.
///
/// Owners are looked up in the `/proc` this process sees, so every process creating groups
/// beneath the same parent should share this process's pid namespace.
pub fn gc(hierarchy: &Hierarchy, parent: Option<&str>) -> Result<GcReport> {
    let mut dirs = Vec::new();
    for m in hierarchy.unified().into_iter().chain(hierarchy.v1_mounts()) {
        dirs.push(match parent {
            Some(p) => m.dir_of(p),
            None => match hierarchy.own_dir(m) {
                Ok(d) => d,
                Err(Error::NoOwnCgroup { .. }) => continue,
                Err(e) => return Err(e),
            },
        });
    }
    collect(dirs)
}

/// [`gc`] beneath the given parent directories, one per hierarchy.
pub(crate) fn collect(parents: impl IntoIterator<Item = PathBuf>) -> Result<GcReport> {
    let mut stale: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut alive: HashMap<Owner, bool> = HashMap::new();
    for dir in parents {
        let io = |source| Error::Io {
            op: "list",
            path: dir.clone(),
            source,
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(owner) = name.to_str().and_then(Owner::of_group_name) else {
                continue;
            };
            if !entry.file_type().map_err(io)?.is_dir() {
                continue;
            }
            if *alive.entry(owner).or_insert_with(|| owner.is_alive()) {
                continue;
            }
            stale
                .entry(name.to_string_lossy().into_owned())
                .or_default()
                .push(entry.path());
        }
    }
    let mut report = GcReport::default();
    for (name, dirs) in stale {
        match remove_stale(&dirs, GC_TIMEOUT) {
            Ok(killed) => {
                report.removed.push(name);
                report.killed += killed;
            }
            Err(e) => report.failed.push((name, e)),
        }
    }
    Ok(report)
}

/// Kills whatever is left in a stale group's directories, waits until they are empty, and
/// removes them depth-first. Returns how many processes were found in them.
fn remove_stale(dirs: &[PathBuf], timeout: Duration) -> Result<usize> {
    // Counted first: `cgroup.kill` below may empty the groups before the loop looks.
    let mut seen = HashSet::new();
    for d in dirs {
        for dir in tree(d)? {
            if let Ok(pids) = read_parsed(&dir.join("cgroup.procs"), parse::pids) {
                seen.extend(pids);
            }
        }
    }
    for d in dirs {
        // Tolerate a missing file: a v1 hierarchy has no cgroup.kill, and a kernel before 5.14
        // none at all; a v1 freezer holds killed processes until thawed.
        for (file, value) in [("cgroup.kill", "1"), ("freezer.state", "THAWED")] {
            let path = d.join(file);
            if path.exists() {
                match write_file(&path, value) {
                    Err(e) if e.errno() == Some(libc::ENOENT) => {}
                    other => other?,
                }
            }
        }
    }
    // Without cgroup.kill a member may fork while the list is read: kill until none is left.
    let empty = sys::wait_until(timeout, || {
        let mut any = false;
        for d in dirs {
            for dir in tree(d)? {
                let pids = match read_parsed(&dir.join("cgroup.procs"), parse::pids) {
                    Ok(p) => p,
                    Err(e) if e.errno() == Some(libc::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                for pid in pids {
                    any = true;
                    seen.insert(pid);
                    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a member of
                    // a group whose owner is gone, which this library created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        Ok(!any)
    })?;
    if !empty {
        return Err(Error::Timeout {
            path: dirs.first().cloned().unwrap_or_default(),
            state: "empty",
        });
    }
    let deadline = Instant::now() + timeout;
    for d in dirs {
        // `tree` lists parents before children, so reversed it is depth-first.
        for p in tree(d)?.iter().rev() {
            sys::rmdir(p, deadline)?;
        }
    }
    Ok(seen.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let o = Owner {
            pid: 42,
            start_time: 1234,
        };
        assert_eq!(o.group_name(3), "palisade-42-1234-3");
        assert_eq!(Owner::of_group_name("palisade-42-1234-3"), Some(o));
        for other in [
            "palisade-42-3",
            "palisade-42-1234-3-1",
            "palisade-0-1-2",
            "palisade-a-1-2",
            "palisade-+4-1-2",
            "palisade-4--2",
            "palisade-test-1-2-3",
            "palisade-99999999999-1-2",
            "other-42-1234-3",
        ] {
            assert_eq!(Owner::of_group_name(other), None, "{other}");
        }
    }

    #[test]
    fn stat_fields() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 200 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Owner {
                pid: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat("1 (x) S 1"), None);
        let me = Owner::current().unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.is_alive());
        assert!(!Owner {
            start_time: me.start_time + 1,
            ..me
        }
        .is_alive());
    }
}
