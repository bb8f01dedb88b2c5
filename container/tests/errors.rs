//! Errors that say what to do (issue 17): each mistake is made for real, against the real kernel,
//! and the error must name the problem and the remedy; where the remedy can be tried, it is
//! tried too (the positive control). The unprivileged cases run this binary again as another
//! uid (`run_ignored_test_as`).

mod common;

use common::sh;
use palisade::cgroup::{Bytes, CpuSet, Error as CgroupError, Resource, MIN_MEMORY_MAX};
use palisade::{Error, IdMap, IdMapping, Sandbox};
use palisade_test_support::{require_root, run_ignored_test_as, run_ignored_test_as_in};

/// The uid the unprivileged halves of these tests run as: no passwd entry needed.
const UNPRIVILEGED: u32 = 64_017;

/// Runs `inner` (an ignored test of this binary) as [`UNPRIVILEGED`] and asserts it passed.
fn as_unprivileged(inner: &str) {
    let (passed, text) = run_ignored_test_as(UNPRIVILEGED, inner, &[("PALISADE_ERRS_INNER", "1")]);
    assert!(passed, "{inner} as uid {UNPRIVILEGED}:\n{text}");
}

/// The checks of an inner test hold only when it was started by its outer test.
fn assert_inner() {
    assert!(std::env::var_os("PALISADE_ERRS_INNER").is_some());
    // SAFETY: geteuid cannot fail.
    assert_ne!(unsafe { libc::geteuid() }, 0, "must run unprivileged");
}

#[test]
fn pids_limit_below_the_init_says_it_counts_the_init() {
    require_root!();
    let err = sh("true").pids_max(1).build().unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::PidsLimitTooLow {
                limit: 1,
                minimum: 2
            }
        ),
        "{err:?}"
    );
    assert!(text.contains("its init included"), "{text}");
    assert!(text.contains("at least 2"), "{text}");
    // The advice works: the minimum it names starts the command.
    let status = sh("exit 3").pids_max(2).status().unwrap();
    assert_eq!(status.code(), Some(3));
    // Without an init the command alone counts.
    let status = sh("exit 4").pids_max(1).init(false).status().unwrap();
    assert_eq!(status.code(), Some(4));
    let err = sh("true").pids_max(0).init(false).build().unwrap_err();
    assert!(
        matches!(
            err,
            Error::PidsLimitTooLow {
                limit: 0,
                minimum: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn memory_limit_below_the_floor_is_refused_at_build() {
    require_root!();
    let err = sh("true").memory_max(Bytes(1)).build().unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Cgroup(CgroupError::MemoryTooSmall { value: 1, min, .. }) if *min == MIN_MEMORY_MAX.0
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("1 bytes") && text.contains(&MIN_MEMORY_MAX.0.to_string()),
        "{text}"
    );
    // The floor itself is accepted, and a command runs under it.
    let status = sh("exit 5").memory_max(MIN_MEMORY_MAX).status().unwrap();
    assert_eq!(status.code(), Some(5));
}

#[test]
fn cpus_above_the_host_are_refused_at_build() {
    require_root!();
    let online = CpuSet::online().unwrap().len();
    assert!(online >= 1);
    let too_many = online as f64 + 0.5;
    let err = sh("true").cpus(too_many).build().unwrap_err();
    assert!(
        matches!(&err, Error::Cgroup(CgroupError::CpusAboveHost { cpus, online: n })
            if *cpus == too_many && *n as usize == online),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&format!("give at most {online}")), "{text}");
    let err = sh("true").cpus(100.0).build().unwrap_err();
    assert!(
        matches!(err, Error::Cgroup(CgroupError::CpusAboveHost { .. })),
        "{err:?}"
    );
    // Zero and negative counts stay refused as before.
    for bad in [0.0, -1.0, f64::NAN] {
        let err = sh("true").cpus(bad).build().unwrap_err();
        assert!(
            matches!(err, Error::Cgroup(CgroupError::InvalidValue { .. })),
            "{err:?}"
        );
    }
    // A raw bandwidth limit (an OCI bundle's) is applied as given, as runc applies it.
    let raw = Resource::cpus(100.0).unwrap();
    let status = sh("exit 7").resource(raw).status().unwrap();
    assert_eq!(status.code(), Some(7));
    // Every CPU the host has is accepted, and the command runs.
    let status = sh("exit 6").cpus(online as f64).status().unwrap();
    assert_eq!(status.code(), Some(6));
}

#[test]
fn an_unmapped_user_names_the_missing_mapping() {
    require_root!();
    // A rootless sandbox maps only its caller (here root, 0) as its root.
    let err = sh("id -u").rootless().user(1000, 1000).build().unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Unmapped {
                kind: "uid",
                id: 1000,
                map: "uid_map",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("uid 1000 is not mapped"), "{text}");
    assert!(text.contains("maps only 0→0 (1 id)"), "{text}");
    assert!(text.contains("SandboxBuilder::uid_map"), "{text}");
    // The group is checked too, against the gid map.
    let wide = IdMap::new([IdMapping::new(0, 100_000, 65_536)]).unwrap();
    let err = sh("true")
        .uid_map(wide.clone())
        .gid_map(IdMap::root_to(0))
        .user(1000, 1000)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Unmapped {
                kind: "gid",
                id: 1000,
                map: "gid_map",
                ..
            }
        ),
        "{err:?}"
    );
    // The advice works: with the user mapped the command runs as it.
    let mut b = sh("id -u; id -g");
    b.uid_map(wide.clone()).gid_map(wide).user(1000, 1000);
    let out = b.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"1000\n1000\n");
}

#[test]
fn an_unmapped_user_names_the_missing_mapping_unprivileged() {
    require_root!();
    as_unprivileged("unmapped_user_inner");
}

#[test]
#[ignore = "run by an_unmapped_user_names_the_missing_mapping_unprivileged"]
fn unmapped_user_inner() {
    assert_inner();
    let err = sh("id -u").rootless().user(1, 1).build().unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Unmapped {
                kind: "uid",
                id: 1,
                map: "uid_map",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("maps only 0→{UNPRIVILEGED} (1 id)")),
        "{text}"
    );
    // Root inside, the one id it maps, works.
    let out = sh("id -u").rootless().user(0, 0).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"0\n");
}

#[test]
fn unprivileged_without_rootless_names_the_namespaces() {
    require_root!();
    as_unprivileged("needs_privilege_inner");
}

#[test]
#[ignore = "run by unprivileged_without_rootless_names_the_namespaces"]
fn needs_privilege_inner() {
    assert_inner();
    let err = Sandbox::builder("true").spawn().unwrap_err();
    assert!(matches!(err, Error::NeedsPrivilege { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::EPERM));
    let text = err.to_string();
    assert!(
        text.contains("new mount, uts, ipc, pid, net, cgroup namespaces"),
        "{text}"
    );
    assert!(!text.contains("0x"), "no hex flags: {text}");
    assert!(text.contains("CAP_SYS_ADMIN"), "{text}");
    assert!(text.contains("rootless()"), "{text}");
    // The advice works.
    let status = Sandbox::builder("true").rootless().status().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn rootless_limits_without_delegation_explain_delegation() {
    require_root!();
    as_unprivileged("not_delegated_inner");
}

#[test]
#[ignore = "run by rootless_limits_without_delegation_explain_delegation"]
fn not_delegated_inner() {
    assert_inner();
    let err = sh("true")
        .rootless()
        .memory_max(Bytes::mib(64))
        .spawn()
        .unwrap_err();
    assert!(matches!(err, Error::CgroupNotDelegated { .. }), "{err:?}");
    assert!(
        matches!(err.errno(), Some(libc::EACCES | libc::EPERM | libc::EROFS)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("/sys/fs/cgroup/"), "names the group: {text}");
    assert!(text.contains("Delegate=yes"), "{text}");
    assert!(text.contains("cgroup_parent"), "{text}");
    // Without the limit, the same sandbox starts.
    let status = sh("true").rootless().status().unwrap();
    assert!(status.success(), "{status}");
    // A device policy it could not write is refused, not skipped.
    let err = sh("true")
        .rootless()
        .device("c 1:3 rw".parse().unwrap())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "device policy",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
}

/// A group the test owns beneath the root of every cgroup hierarchy (each v1 one with
/// controllers, and the unified one), for a sandbox's `cgroup_parent`; removed when dropped,
/// with whatever the sandboxes left in it.
struct ParentGroup {
    name: String,
    dirs: Vec<std::path::PathBuf>,
}

impl ParentGroup {
    fn new(tag: &str) -> ParentGroup {
        let name = format!("palisade-errs-{tag}-{}", std::process::id());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut group = ParentGroup {
            name,
            dirs: Vec::new(),
        };
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let (fstype, options) = (fields[dash + 1], fields.get(dash + 3).unwrap_or(&""));
            let named = options.split(',').any(|o| o.starts_with("name="));
            if !(fstype == "cgroup2" || fstype == "cgroup" && !named) {
                continue;
            }
            let mount = std::path::Path::new(fields[4]);
            let dir = mount.join(&group.name);
            std::fs::create_dir(&dir).unwrap();
            group.dirs.push(dir.clone());
            // A v1 cpuset group takes no task before it has CPUs and memory nodes.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if fstype == "cgroup" && mount.join(file).exists() {
                    let value = std::fs::read_to_string(mount.join(file)).unwrap();
                    std::fs::write(dir.join(file), value.trim()).unwrap();
                }
            }
        }
        group
    }

    /// Its path as `cgroup_parent` takes it.
    fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// Writes `value` to its `file`, in the hierarchy that has it.
    fn set(&self, file: &str, value: &str) {
        let dir = self.dirs.iter().find(|d| d.join(file).exists()).unwrap();
        std::fs::write(dir.join(file), value).unwrap();
    }

    /// Delegates it to `uid`, as root does for a user (`cgroups(7)`, "Cgroups v2
    /// delegation"): its directory, so the user may make groups in it, and the files that move
    /// processes into it.
    fn delegate(&self, uid: u32) {
        for dir in &self.dirs {
            for path in [dir.clone(), dir.join("cgroup.procs"), dir.join("tasks")] {
                if path.exists() {
                    std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
                }
            }
        }
    }

    /// Its `cgroup.procs` files, to start a process in it.
    fn procs(&self) -> Vec<std::path::PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Its directory in the v1 hierarchy of `controller`.
    fn v1_dir(&self, controller: &str) -> &std::path::Path {
        self.dirs
            .iter()
            .find(|d| d.parent().is_some_and(|m| m.ends_with(controller)))
            .unwrap()
    }
}

impl Drop for ParentGroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Its processes are gone; a group is removed once empty, children first.
            if let Ok(entries) = std::fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn a_pids_limit_reached_at_run_time_names_the_limits() {
    require_root!();
    // The sandbox's own limit passes `build`; its parent's, shared, is reached when the init
    // forks the command.
    let parent = ParentGroup::new("pids");
    parent.set("pids.max", "1");
    let err = sh("exit 3")
        .pids_max(8)
        .cgroup_parent(parent.path())
        .status()
        .unwrap_err();
    assert!(matches!(err, Error::OutOfProcesses { .. }), "{err:?}");
    assert_eq!(err.errno(), Some(libc::EAGAIN));
    let text = err.to_string();
    assert!(text.contains("pids_max"), "{text}");
    assert!(text.contains("parent cgroup's pids.max"), "{text}");
    assert!(text.contains("RLIMIT_NPROC"), "{text}");
    // The advice works: with the parent's limit raised, the same sandbox starts.
    parent.set("pids.max", "8");
    let status = sh("exit 3")
        .pids_max(8)
        .cgroup_parent(parent.path())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

/// The positive control of `rootless_limits_without_delegation_explain_delegation`: done as
/// its error says (root makes a group owned by the user and starts the user's process in it),
/// the same rootless sandbox with the same limit starts, and the limit is applied.
#[test]
fn rootless_limits_in_a_delegated_group_work() {
    require_root!();
    let parent = ParentGroup::new("delegated");
    parent.delegate(UNPRIVILEGED);
    let (passed, text) = run_ignored_test_as_in(
        UNPRIVILEGED,
        &parent.procs(),
        "delegated_inner",
        &[
            ("PALISADE_ERRS_INNER", "1"),
            ("PALISADE_ERRS_PARENT", &parent.path()),
            (
                "PALISADE_ERRS_MEMORY",
                parent.v1_dir("memory").to_str().unwrap(),
            ),
        ],
    );
    assert!(passed, "delegated_inner as uid {UNPRIVILEGED}:\n{text}");
}

#[test]
#[ignore = "run by rootless_limits_in_a_delegated_group_work"]
fn delegated_inner() {
    assert_inner();
    let parent = std::env::var("PALISADE_ERRS_PARENT").unwrap();
    let memory = std::path::PathBuf::from(std::env::var_os("PALISADE_ERRS_MEMORY").unwrap());
    let limit = Bytes::mib(64);
    // As the error advises: cgroup_parent names the delegated group.
    let mut child = sh("sleep 30")
        .rootless()
        .memory_max(limit)
        .cgroup_parent(&parent)
        .spawn()
        .unwrap();
    let limits: Vec<String> = std::fs::read_dir(&memory)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("memory.limit_in_bytes")).ok())
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(limits, [format!("{}\n", limit.0)], "the sandbox's group");
    // The caller's own group is the delegated one: beneath it by default.
    let status = sh("exit 5").rootless().memory_max(limit).status().unwrap();
    assert_eq!(status.code(), Some(5));
}
