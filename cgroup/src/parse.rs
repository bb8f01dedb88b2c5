//! Parsers for the cgroup file formats of the kernel's cgroup-v2 documentation ("Interface
//! Files: Conventions") and `cgroups(7)`: flat keyed (`key value` lines), nested keyed
//! (`8:0 rbytes=1 wbytes=2`), single values, and `/proc/<pid>/cgroup` and mountinfo lines.
//! They work on text and report format errors as strings; callers attach the file's path.

use std::collections::BTreeMap;

/// A parse failure, described for the user.
pub(crate) type ParseResult<T> = Result<T, String>;

/// Parses a flat keyed file (`memory.stat`, `cpu.stat`, `memory.events`, `cgroup.events`, …):
/// one `key value` pair per line, values unsigned integers.
pub fn flat_keyed(text: &str) -> ParseResult<BTreeMap<String, u64>> {
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!("expected `key value`, found {line:?}"));
        };
        let value = value
            .parse()
            .map_err(|_| format!("{key}: {value:?} is not an unsigned integer"))?;
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

/// Parses a nested keyed file (`io.stat`, `io.max`): one `device key=value key=value …` line per
/// device. Values that are `max` are left out of the map.
pub fn nested_keyed(text: &str) -> ParseResult<BTreeMap<String, BTreeMap<String, u64>>> {
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let Some(head) = words.next() else { continue };
        let entry: &mut BTreeMap<String, u64> = map.entry(head.to_owned()).or_default();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("expected `key=value`, found {word:?} in {line:?}"))?;
            if value == "max" {
                continue;
            }
            let value = value
                .parse()
                .map_err(|_| format!("{key}: {value:?} is not an unsigned integer"))?;
            entry.insert(key.to_owned(), value);
        }
    }
    Ok(map)
}

/// Parses cgroup v1 `blkio.throttle.io_service_bytes`-style files: `8:0 Read 4096` lines and a
/// final `Total n` line, into per-device maps keyed by the lower-cased operation.
pub fn blkio_v1(text: &str) -> ParseResult<BTreeMap<String, BTreeMap<String, u64>>> {
    let mut map: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Total", _] => {}
            [device, op, value] => {
                let value = value
                    .parse()
                    .map_err(|_| format!("{value:?} is not an unsigned integer in {line:?}"))?;
                map.entry((*device).to_owned())
                    .or_default()
                    .insert(op.to_ascii_lowercase(), value);
            }
            _ => return Err(format!("expected `device operation value`, found {line:?}")),
        }
    }
    Ok(map)
}

/// Parses a single unsigned integer, or `max` (as `None`). cgroup v1 spells "no limit" as a
/// huge number or `-1`; those are `None` too.
pub fn max_value(text: &str) -> ParseResult<Option<u64>> {
    let t = text.trim();
    match t {
        "max" | "-1" => Ok(None),
        _ => {
            let v: u64 = t
                .parse()
                .map_err(|_| format!("{t:?} is neither an unsigned integer nor `max`"))?;
            // v1's "unlimited" memory limit is the largest page-aligned i64.
            Ok((v < (i64::MAX as u64) & !0xfff).then_some(v))
        }
    }
}

/// Parses a single unsigned integer.
pub fn single(text: &str) -> ParseResult<u64> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("{t:?} is not an unsigned integer"))
}

/// Parses a list of process ids, one per line (`cgroup.procs`).
pub fn pids(text: &str) -> ParseResult<Vec<i32>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse()
                .map_err(|_| format!("{l:?} is not a process id"))
        })
        .collect()
}

/// One line of `/proc/<pid>/cgroup` (see `cgroups(7)`): `hierarchy-id:controllers:path`. The
/// unified (v2) hierarchy has id 0 and no controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The hierarchy id.
    pub id: u32,
    /// The controllers (and `name=` entries) bound to the hierarchy; empty for v2.
    pub controllers: Vec<String>,
    /// The process's group, relative to the hierarchy's root as seen from its cgroup namespace.
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`.
pub fn proc_cgroup(text: &str) -> ParseResult<Vec<ProcCgroup>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("expected `id:controllers:path`, found {line:?}"));
            };
            Ok(ProcCgroup {
                id: id
                    .parse()
                    .map_err(|_| format!("bad hierarchy id in {line:?}"))?,
                controllers: ctrls
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// A cgroup mount from `/proc/self/mountinfo` (see `proc_pid_mountinfo(5)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The mount point.
    pub mount_point: String,
    /// The root of the mount within its hierarchy (`/` unless a subtree was bind-mounted or the
    /// mount was made inside a cgroup namespace).
    pub root: String,
    /// `true` for `cgroup2`, `false` for a v1 `cgroup` hierarchy.
    pub v2: bool,
    /// The v1 controllers in the super options (`cpu`, `memory`, …); empty for v2.
    pub controllers: Vec<String>,
}

/// Picks the cgroup mounts out of `/proc/self/mountinfo`.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount_point), Some(&fstype)) =
            (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            right
                .get(2)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| KNOWN_V1.contains(o))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        out.push(CgroupMount {
            mount_point: unescape_octal(mount_point),
            root: unescape_octal(root),
            v2,
            controllers,
        });
    }
    out
}

/// v1 controller names that may appear in a hierarchy's super options.
const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "blkio",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                out.push(
                    oct.iter()
                        .fold(0u8, |acc, b| acc.wrapping_mul(8).wrapping_add(b - b'0')),
                );
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flat_keyed_files() {
        let m = flat_keyed("usage_usec 120\nuser_usec 100\nsystem_usec 20\n").unwrap();
        assert_eq!(m["usage_usec"], 120);
        assert_eq!(m.len(), 3);
        assert!(flat_keyed("oom 1 2\n").is_err());
        assert!(flat_keyed("oom x\n").is_err());
        assert!(flat_keyed("").unwrap().is_empty());
    }

    #[test]
    fn nested_keyed_files() {
        let m = nested_keyed("8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n").unwrap();
        assert_eq!(m["8:0"]["rbytes"], 4096);
        let max = nested_keyed("8:16 rbps=1048576 wbps=max riops=max wiops=max\n").unwrap();
        assert_eq!(max["8:16"].len(), 1);
        assert!(nested_keyed("8:0 rbytes\n").is_err());
    }

    #[test]
    fn blkio_v1_files() {
        let m = blkio_v1("8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\nTotal 4608\n").unwrap();
        assert_eq!(m["8:0"]["read"], 4096);
        assert_eq!(m["8:0"]["write"], 512);
        assert!(blkio_v1("Total 0\n").unwrap().is_empty());
    }

    #[test]
    fn limits() {
        assert_eq!(max_value("max\n"), Ok(None));
        assert_eq!(max_value("-1"), Ok(None));
        assert_eq!(max_value("9223372036854771712\n"), Ok(None));
        assert_eq!(max_value("67108864\n"), Ok(Some(64 << 20)));
        assert!(max_value("lots").is_err());
    }

    #[test]
    fn proc_cgroup_hybrid() {
        let lines =
            proc_cgroup("4:memory:/process_api/x\n2:cpu,cpuacct:/\n0::/user.slice\n").unwrap();
        assert_eq!(lines[0].controllers, ["memory"]);
        assert_eq!(lines[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(lines[2].id, 0);
        assert!(lines[2].controllers.is_empty());
        assert_eq!(lines[2].path, "/user.slice");
        // A path may contain colons.
        assert_eq!(proc_cgroup("0::/a:b").unwrap()[0].path, "/a:b");
    }

    #[test]
    fn mountinfo_cgroups() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 /sub /sys/fs/cgroup/unified\\040dir rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";
        let m = cgroup_mounts(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].controllers, ["cpu", "cpuacct"]);
        assert!(m[1].controllers.is_empty());
        assert!(m[2].v2);
        assert_eq!(m[2].mount_point, "/sys/fs/cgroup/unified dir");
        assert_eq!(m[2].root, "/sub");
    }

    fn key() -> impl Strategy<Value = String> {
        "[a-z_]{1,16}"
    }

    proptest! {
        #[test]
        fn flat_keyed_round_trip(map in proptest::collection::btree_map(key(), any::<u64>(), 0..20)) {
            let text: String = map.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
            prop_assert_eq!(flat_keyed(&text).unwrap(), map);
        }

        #[test]
        fn nested_keyed_round_trip(
            map in proptest::collection::btree_map(
                (0u32..300, 0u32..300).prop_map(|(a, b)| format!("{a}:{b}")),
                proptest::collection::btree_map(key(), any::<u64>(), 1..6),
                0..6,
            )
        ) {
            let text: String = map
                .iter()
                .map(|(dev, kv)| {
                    let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{dev} {}\n", fields.join(" "))
                })
                .collect();
            prop_assert_eq!(nested_keyed(&text).unwrap(), map);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,64}") {
            let _ = flat_keyed(&s);
            let _ = nested_keyed(&s);
            let _ = blkio_v1(&s);
            let _ = proc_cgroup(&s);
            let _ = cgroup_mounts(&s);
            let _ = max_value(&s);
            let _ = pids(&s);
        }
    }
}
