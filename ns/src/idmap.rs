//! User namespace id maps (`user_namespaces(7)`): `/proc/<pid>/uid_map`, `gid_map`, `setgroups`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The most lines an id map may have (Linux 4.15 and later).
pub const MAX_LINES: usize = 340;

/// One line of an id map: `count` consecutive ids starting at `inside` in the namespace are ids
/// starting at `outside` in the parent namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdMapping {
    /// First id inside the user namespace.
    pub inside: u32,
    /// First id in the parent user namespace.
    pub outside: u32,
    /// Length of the range (at least 1).
    pub count: u32,
}

impl IdMapping {
    /// `count` ids from `inside` map to `count` ids from `outside`.
    pub fn new(inside: u32, outside: u32, count: u32) -> Self {
        IdMapping {
            inside,
            outside,
            count,
        }
    }

    fn end_inside(&self) -> u64 {
        u64::from(self.inside) + u64::from(self.count)
    }

    fn end_outside(&self) -> u64 {
        u64::from(self.outside) + u64::from(self.count)
    }
}

/// A validated id map for `uid_map` or `gid_map`: 1 to 340 lines, non-empty ranges that do not
/// wrap around, and no two ranges overlapping on either side, as the kernel requires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdMap(Vec<IdMapping>);

impl IdMap {
    /// Builds and validates a map from its lines.
    pub fn new(mappings: impl IntoIterator<Item = IdMapping>) -> Result<IdMap> {
        let map = IdMap(mappings.into_iter().collect());
        map.validate()?;
        Ok(map)
    }

    /// The one-line map `0 <outside> 1`: root in the namespace is `outside` in the parent. This is
    /// the map an unprivileged process may write for itself (rootless containers).
    pub fn root_to(outside: u32) -> IdMap {
        IdMap(vec![IdMapping::new(0, outside, 1)])
    }

    /// Parses the format of `/proc/<pid>/uid_map`: one `inside outside count` triple a line, fields
    /// separated by white space.
    pub fn parse(text: &str) -> Result<IdMap> {
        let mut mappings = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let bad = |reason| Error::ParseIdMap {
                line: line.to_owned(),
                reason,
            };
            let mut fields = line.split_whitespace().map(|f| f.parse::<u32>());
            let mut next = || match fields.next() {
                Some(Ok(v)) => Ok(v),
                Some(Err(_)) => Err(bad("fields must be unsigned 32-bit integers")),
                None => Err(bad("expected three fields: inside outside count")),
            };
            let mapping = IdMapping::new(next()?, next()?, next()?);
            if fields.next().is_some() {
                return Err(bad("expected three fields: inside outside count"));
            }
            mappings.push(mapping);
        }
        IdMap::new(mappings)
    }

    /// Reads and parses `/proc/<pid>/uid_map` (or `gid_map` with `gid = true`).
    pub fn read(pid: libc::pid_t, gid: bool) -> Result<IdMap> {
        let path = map_path(pid, gid);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
        IdMap::parse(&text)
    }

    fn validate(&self) -> Result<()> {
        let invalid = |msg: String| Err(Error::InvalidIdMap(msg));
        if self.0.is_empty() {
            return invalid("the map has no lines".into());
        }
        if self.0.len() > MAX_LINES {
            return invalid(format!(
                "{} lines, the kernel allows {MAX_LINES}",
                self.0.len()
            ));
        }
        for (i, m) in self.0.iter().enumerate() {
            if m.count == 0 {
                return invalid(format!("line {}: count is 0", i + 1));
            }
            if m.end_inside() > u64::from(u32::MAX) || m.end_outside() > u64::from(u32::MAX) {
                return invalid(format!(
                    "line {}: range {} {} {} runs past id 4294967294",
                    i + 1,
                    m.inside,
                    m.outside,
                    m.count
                ));
            }
            for (j, o) in self.0[..i].iter().enumerate() {
                let overlap = |a: u32, a_end: u64, b: u32, b_end: u64| {
                    u64::from(a) < b_end && u64::from(b) < a_end
                };
                if overlap(m.inside, m.end_inside(), o.inside, o.end_inside()) {
                    return invalid(format!(
                        "lines {} and {}: inside ranges overlap",
                        j + 1,
                        i + 1
                    ));
                }
                if overlap(m.outside, m.end_outside(), o.outside, o.end_outside()) {
                    return invalid(format!(
                        "lines {} and {}: outside ranges overlap",
                        j + 1,
                        i + 1
                    ));
                }
            }
        }
        Ok(())
    }

    /// The lines of the map.
    pub fn mappings(&self) -> &[IdMapping] {
        &self.0
    }

    /// The parent-namespace id that `inside` maps to, if it is mapped.
    pub fn to_outside(&self, inside: u32) -> Option<u32> {
        self.0
            .iter()
            .find(|m| {
                u64::from(inside) >= u64::from(m.inside) && u64::from(inside) < m.end_inside()
            })
            .map(|m| m.outside + (inside - m.inside))
    }

    /// The namespace id that the parent-namespace id `outside` appears as, if it is mapped.
    pub fn to_inside(&self, outside: u32) -> Option<u32> {
        self.0
            .iter()
            .find(|m| {
                u64::from(outside) >= u64::from(m.outside) && u64::from(outside) < m.end_outside()
            })
            .map(|m| m.inside + (outside - m.outside))
    }
}

/// Formats in the kernel's input format, one `inside outside count` line each.
impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.0 {
            writeln!(f, "{} {} {}", m.inside, m.outside, m.count)?;
        }
        Ok(())
    }
}

/// What `/proc/<pid>/setgroups` should allow (`user_namespaces(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetGroups {
    /// `setgroups(2)` is permitted in the namespace (needs a privileged gid map writer).
    Allow,
    /// `setgroups(2)` is refused; required before an unprivileged process writes `gid_map`.
    Deny,
}

fn map_path(pid: libc::pid_t, gid: bool) -> PathBuf {
    PathBuf::from(format!(
        "/proc/{pid}/{}",
        if gid { "gid_map" } else { "uid_map" }
    ))
}

/// Writes `contents` with one `write(2)`, as the kernel requires for these files.
fn write_once(path: PathBuf, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    match file.write(contents) {
        Ok(n) if n == contents.len() => Ok(()),
        Ok(_) => Err(Error::io(
            "write",
            &path,
            io::Error::new(io::ErrorKind::WriteZero, "short write"),
        )),
        Err(e) => Err(Error::io("write", &path, e)),
    }
}

/// Writes `/proc/<pid>/uid_map`. It can be written once, by a process in the namespace's parent
/// user namespace (or in it) with `CAP_SETUID` there, or unprivileged for a single line mapping
/// the writer's own effective uid.
pub fn write_uid_map(pid: libc::pid_t, map: &IdMap) -> Result<()> {
    write_once(map_path(pid, false), map.to_string().as_bytes())
}

/// Writes `/proc/<pid>/gid_map`. An unprivileged writer must first call
/// [`write_setgroups`]`(pid, SetGroups::Deny)`.
pub fn write_gid_map(pid: libc::pid_t, map: &IdMap) -> Result<()> {
    write_once(map_path(pid, true), map.to_string().as_bytes())
}

/// Writes `/proc/<pid>/setgroups` (Linux 3.19); only possible before `gid_map` is written.
pub fn write_setgroups(pid: libc::pid_t, setgroups: SetGroups) -> Result<()> {
    let value: &[u8] = match setgroups {
        SetGroups::Allow => b"allow",
        SetGroups::Deny => b"deny",
    };
    write_once(PathBuf::from(format!("/proc/{pid}/setgroups")), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_what_proc_shows() {
        let map = IdMap::parse("         0          0 4294967295\n").unwrap();
        assert_eq!(map.mappings(), &[IdMapping::new(0, 0, u32::MAX)]);
        let map = IdMap::parse("0 1000 1\n1 100000 65536\n").unwrap();
        assert_eq!(map.to_outside(0), Some(1000));
        assert_eq!(map.to_outside(2), Some(100_001));
        assert_eq!(map.to_outside(65537), None);
        assert_eq!(map.to_inside(100_000), Some(1));
        assert_eq!(map.to_inside(5), None);
    }

    #[test]
    fn rejects_bad_maps() {
        for (text, needle) in [
            ("", "no lines"),
            ("0 0 0", "count is 0"),
            ("0 0", "three fields"),
            ("0 0 1 1", "three fields"),
            ("-1 0 1", "unsigned"),
            ("x 0 1", "unsigned"),
            ("4294967295 0 1", "runs past"),
            ("0 1000 10\n5 2000 10", "inside ranges overlap"),
            ("0 1000 10\n10 1005 10", "outside ranges overlap"),
        ] {
            let err = IdMap::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let too_many = (0..341).map(|i| IdMapping::new(i, i, 1));
        assert!(IdMap::new(too_many).is_err());
    }

    fn valid_map() -> impl Strategy<Value = IdMap> {
        // Disjoint ranges on both sides: consecutive slots, shuffled on the outside.
        (1usize..20, any::<u32>()).prop_flat_map(|(n, seed)| {
            proptest::collection::vec(1u32..1000, n).prop_map(move |counts| {
                let mut inside = 0u32;
                let mut outside = seed % 1_000_000;
                let lines = counts.into_iter().map(|c| {
                    let m = IdMapping::new(inside, outside, c);
                    inside += c + 3;
                    outside += c + 7;
                    m
                });
                IdMap::new(lines).unwrap()
            })
        })
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(map in valid_map()) {
            prop_assert_eq!(IdMap::parse(&map.to_string()).unwrap(), map);
        }

        #[test]
        fn inside_and_outside_are_inverse(map in valid_map(), probe in 0u32..100_000) {
            if let Some(out) = map.to_outside(probe) {
                prop_assert_eq!(map.to_inside(out), Some(probe));
            }
        }

        #[test]
        fn parse_never_panics(text in "[0-9 \n\t-]{0,80}") {
            let _ = IdMap::parse(&text);
        }

        #[test]
        fn parsed_maps_satisfy_the_kernel_rules(lines in proptest::collection::vec((0u32..50, 0u32..50, 0u32..10), 1..5)) {
            let text: String = lines.iter().map(|(a, b, c)| format!("{a} {b} {c}\n")).collect();
            if let Ok(map) = IdMap::parse(&text) {
                let ms = map.mappings();
                for (i, a) in ms.iter().enumerate() {
                    prop_assert!(a.count > 0);
                    for b in &ms[i + 1..] {
                        prop_assert!(a.end_inside() <= u64::from(b.inside) || b.end_inside() <= u64::from(a.inside));
                        prop_assert!(a.end_outside() <= u64::from(b.outside) || b.end_outside() <= u64::from(a.outside));
                    }
                }
            }
        }
    }
}
