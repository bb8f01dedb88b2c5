//! `linux.resources` beyond memory, CPU, pids and devices, through the built `palisade-oci`:
//! `blockIO` and `hugepageLimits` read back from the host's cgroup files of the container's
//! process, at `create` and with `update --resources`; the fields this host cannot apply
//! (`network`, `rdma` without the controller, `unified` off a pure cgroup v2 host, leaf weights,
//! a huge page size the kernel lacks) refused by name, with nothing left behind.

use std::path::{Path, PathBuf};

use palisade::cgroup::{Backend, Controller, Hierarchy, HugePageSize};
use palisade_test_support::require_root;
use serde_json::json;

mod common;

use common::{alive, remove_cgroups, Env};

/// The tools the tests' containers use.
const TOOLS: [&str; 2] = ["sh", "sleep"];

/// A bundle whose process sleeps, in a group beneath `/palisade-oci-res-<tag>-<pid>` (removed
/// when the returned guard drops), with `resources` as its `linux.resources`.
fn bundle(tag: &str, resources: serde_json::Value) -> (Env, Parent) {
    let env = Env::new(
        &format!("res-{tag}"),
        &["sleep", "1000"],
        &["pid", "mount", "ipc", "uts", "network"],
        &TOOLS,
    );
    let parent = Parent(format!("/palisade-oci-res-{tag}-{}", std::process::id()));
    let path = format!("{}/box", parent.0);
    env.edit_config(|c| {
        c["linux"]["resources"] = resources;
        c["linux"]["cgroupsPath"] = path.into();
    });
    (env, parent)
}

/// The cgroup parent a test's container is made beneath: removed in every hierarchy on drop.
struct Parent(String);

impl Parent {
    /// Whether any hierarchy has a directory of it.
    fn exists_anywhere(&self) -> bool {
        let rel = self.0.trim_start_matches('/');
        Path::new("/sys/fs/cgroup").join(rel).exists()
            || std::fs::read_dir("/sys/fs/cgroup")
                .unwrap()
                .flatten()
                .any(|h| h.path().join(rel).exists())
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        remove_cgroups(&self.0);
    }
}

/// The directories of the groups of process `pid` (`/proc/<pid>/cgroup`, `cgroups(7)`), one
/// per hierarchy.
fn group_dirs(pid: u64) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unified = if Path::new("/sys/fs/cgroup/unified").is_dir() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = match controllers {
                "" => unified.to_owned(),
                c => format!(
                    "/sys/fs/cgroup/{}",
                    c.split(',').next()?.trim_start_matches("name=")
                ),
            };
            Some(PathBuf::from(format!("{mount}{path}")))
        })
        .collect()
}

/// The text of `file` in the nearest group of the container `id`'s process (or above it, up to
/// the test's parent) whose `file` has a line `matching`.
fn read_back(env: &Env, id: &str, file: &str, matching: impl Fn(&str) -> bool) -> Option<String> {
    let pid = env.state(id)["pid"].as_u64().unwrap();
    assert!(alive(pid));
    for mut dir in group_dirs(pid) {
        while dir.starts_with("/sys/fs/cgroup/") {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                if text.lines().any(&matching) {
                    return Some(text);
                }
            }
            if !dir.pop() {
                break;
            }
        }
    }
    None
}

/// The first whole disk of `/proc/partitions`, as `(major, minor)`.
fn disk() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/partitions").unwrap();
    text.lines()
        .skip(2)
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let [major, minor, _, name] = words.as_slice() else {
                return None;
            };
            Path::new("/sys/block")
                .join(name)
                .exists()
                .then(|| Some((major.parse().ok()?, minor.parse().ok()?)))?
        })
        .unwrap_or_else(|| panic!("no disk in /proc/partitions:\n{text}"))
}

/// The throttle of `dev` on the `v1` file's key or `io.max`'s `key`: `None` when unlimited.
fn throttle(env: &Env, id: &str, dev: &str, v1: &str, key: &str) -> Option<u64> {
    let v1_file = format!("blkio.throttle.{v1}_device");
    if let Some(text) = read_back(env, id, &v1_file, |l| l.starts_with(&format!("{dev} "))) {
        let line = text.lines().find(|l| l.starts_with(&format!("{dev} ")))?;
        return line.split_whitespace().nth(1)?.parse().ok();
    }
    let text = read_back(env, id, "io.max", |l| l.starts_with(&format!("{dev} ")))?;
    let line = text.lines().find(|l| l.starts_with(&format!("{dev} ")))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))?
        .parse()
        .ok()
}

#[test]
fn block_io_throttles_and_weight_reach_the_containers_group() {
    require_root!();
    let (major, minor) = disk();
    let dev = format!("{major}:{minor}");
    let (mut env, parent) = bundle(
        "blkio",
        json!({"blockIO": {
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 2097152}],
            "throttleReadIOPSDevice": [{"major": major, "minor": minor, "rate": 300}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 400}]
        }}),
    );
    let id = env.id("blkio");
    env.oci(&["create", &id, "--bundle", env.bundle()]).ok();
    env.oci(&["start", &id]).ok();
    for (v1, key, want) in [
        ("read_bps", "rbps", 1048576),
        ("write_bps", "wbps", 2097152),
        ("read_iops", "riops", 300),
        ("write_iops", "wiops", 400),
    ] {
        assert_eq!(throttle(&env, &id, &dev, v1, key), Some(want), "{v1}");
    }

    // update: a new read rate; the device's limits not named are lifted (one io.max line).
    env.oci_stdin(
        &["update", "--resources", "-", &id],
        &json!({"blockIO": {"throttleReadBpsDevice": [
            {"major": major, "minor": minor, "rate": 4194304}
        ]}})
        .to_string(),
    )
    .ok();
    assert_eq!(throttle(&env, &id, &dev, "read_bps", "rbps"), Some(4194304));
    assert_eq!(throttle(&env, &id, &dev, "write_iops", "wiops"), None);

    // The weight, where this kernel has a file for it (io.cost's io.weight, or BFQ's).
    let weight = env.oci_stdin(&["update", "-r", "-", &id], r#"{"blockIO":{"weight":300}}"#);
    let files = [
        "blkio.bfq.weight",
        "blkio.weight",
        "io.bfq.weight",
        "io.weight",
    ];
    let found = files
        .iter()
        .find_map(|f| read_back(&env, &id, f, |_| true).map(|text| (*f, text)));
    match found {
        Some((file, text)) => {
            assert_eq!(weight.code, 0, "{weight:?}");
            let first = text.lines().next().unwrap_or_default();
            let want = match file {
                // blk-iocost's range: 300 of 10..=1000 is 2930 of 1..=10000.
                "io.weight" => "default 2930",
                "io.bfq.weight" => "default 300",
                _ => "300",
            };
            assert_eq!(first, want, "{file}: {text}");
        }
        None => {
            assert_eq!(weight.code, 1, "{weight:?}");
            assert!(weight.err.contains("io.weight"), "{weight:?}");
        }
    }
    // Leaf weights are refused by name, and the throttles stay.
    let leaf = env.oci_stdin(
        &["update", "-r", "-", &id],
        &json!({"blockIO": {
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1024}],
            "leafWeight": 300
        }})
        .to_string(),
    );
    assert_eq!(leaf.code, 1, "{leaf:?}");
    assert!(
        leaf.err.contains("linux.resources.blockIO.leafWeight"),
        "{leaf:?}"
    );
    assert_eq!(throttle(&env, &id, &dev, "read_bps", "rbps"), Some(4194304));
    env.oci(&["delete", "--force", &id]).ok();
    drop(parent);
}

#[test]
fn huge_page_limits_apply_where_the_host_has_hugetlb() {
    require_root!();
    let hier = Hierarchy::detect().unwrap();
    let sizes = HugePageSize::supported().unwrap();
    let Some(&size) = sizes.first() else {
        panic!("this kernel offers no huge pages (/sys/kernel/mm/hugepages is empty)");
    };
    let (mut env, parent) = bundle(
        "huge",
        json!({"hugepageLimits": [{"pageSize": size.to_string(), "limit": 4 * size.bytes()}]}),
    );
    let id = env.id("huge");
    let ran = env.oci(&["create", &id, "--bundle", env.bundle()]);
    if hier.served(Controller::Hugetlb).is_none() {
        assert_eq!(ran.code, 1, "{ran:?}");
        assert!(
            ran.err.contains("linux.resources.hugepageLimits"),
            "{ran:?}"
        );
        assert!(ran.err.contains("no hugetlb cgroup controller"), "{ran:?}");
        assert!(!parent.exists_anywhere());
        return;
    }
    assert_eq!(ran.code, 0, "{ran:?}");
    let file = match hier.served(Controller::Hugetlb) {
        Some(palisade::cgroup::Served::V2) => format!("hugetlb.{size}.max"),
        _ => format!("hugetlb.{size}.limit_in_bytes"),
    };
    let limit = |env: &Env| {
        read_back(env, &id, &file, |l| l != "max")
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(limit(&env), (4 * size.bytes()).to_string());
    // Reservations are limited alike.
    let rsvd_file = file.replace(&format!("{size}."), &format!("{size}.rsvd."));
    let reserved = read_back(&env, &id, &rsvd_file, |l| l != "max").unwrap_or_default();
    assert_eq!(
        reserved.trim(),
        (4 * size.bytes()).to_string(),
        "{rsvd_file}"
    );
    env.oci_stdin(
        &["update", "-r", "-", &id],
        &json!({"hugepageLimits": [{"pageSize": size.to_string(), "limit": 2 * size.bytes()}]})
            .to_string(),
    )
    .ok();
    assert_eq!(limit(&env), (2 * size.bytes()).to_string());
    env.oci(&["delete", "--force", &id]).ok();
}

#[test]
fn fields_this_host_cannot_apply_are_refused_by_name_and_leave_nothing() {
    require_root!();
    let hier = Hierarchy::detect().unwrap();
    let offered = HugePageSize::supported().unwrap();
    let absent = (12..40)
        .map(|shift| HugePageSize::new(1 << shift).unwrap())
        .find(|s| !offered.contains(s))
        .unwrap();
    let mut cases = vec![
        (
            "network",
            json!({"network": {"classID": 1048577}}),
            "linux.resources.network",
        ),
        (
            "leaf",
            json!({"blockIO": {"leafWeight": 500}}),
            "linux.resources.blockIO.leafWeight",
        ),
        (
            "pagesize",
            json!({"hugepageLimits": [{"pageSize": absent.to_string(), "limit": 0}]}),
            "linux.resources.hugepageLimits[0].pageSize",
        ),
        (
            "procs",
            json!({"unified": {"cgroup.procs": "1"}}),
            "linux.resources.unified.cgroup.procs",
        ),
        (
            "climb",
            json!({"unified": {"../../cgroup.procs": "1"}}),
            "linux.resources.unified.../../cgroup.procs",
        ),
        (
            "unknown",
            json!({"unified": {"memory.oom.group": "1"}}),
            "linux.resources.unified.memory.oom.group",
        ),
    ];
    if hier.backend() != Backend::V2 {
        // unified names cgroup v2 files: only on a pure cgroup v2 host, as runc.
        cases.push((
            "unified",
            json!({"unified": {"pids.max": "10"}}),
            "linux.resources.unified",
        ));
    }
    if hier.served(Controller::Rdma).is_none() {
        cases.push((
            "rdma",
            json!({"rdma": {"mlx5_0": {"hcaHandles": 2}}}),
            "linux.resources.rdma",
        ));
    }
    if hier.served(Controller::Hugetlb).is_none() {
        let size = offered[0].to_string();
        cases.push((
            "hugetlb",
            json!({"hugepageLimits": [{"pageSize": size, "limit": 0}]}),
            "linux.resources.hugepageLimits",
        ));
    }
    for (tag, resources, field) in cases {
        let (mut env, parent) = bundle(&format!("no-{tag}"), resources);
        let id = env.id(&format!("no-{tag}"));
        let ran = env.oci(&["create", &id, "--bundle", env.bundle()]);
        assert_eq!(ran.code, 1, "{tag}: {ran:?}");
        assert!(
            ran.err.contains(&format!("{field}: unsupported value")),
            "{tag}: {ran:?}"
        );
        // Nothing was made: no container, no state, no group in any hierarchy.
        let state = env.oci(&["state", &id]);
        assert!(state.err.contains("does not exist"), "{tag}: {state:?}");
        assert!(!parent.exists_anywhere(), "{tag}: {} was made", parent.0);
        let left: Vec<_> = std::fs::read_dir(&env.root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{tag}: {left:?}");
    }
}

#[test]
fn refused_updates_change_nothing() {
    require_root!();
    let (mut env, parent) = bundle("upd", json!({"pids": {"limit": 9}}));
    let id = env.id("upd");
    env.oci(&["create", &id, "--bundle", env.bundle()]).ok();
    let pids = |env: &Env| {
        read_back(env, &id, "pids.max", |l| l != "max")
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(pids(&env), "9");
    for (resources, field) in [
        (
            json!({"pids": {"limit": 11},
                   "network": {"priorities": [{"name": "eth0", "priority": 1}]}}),
            "linux.resources.network",
        ),
        (
            json!({"pids": {"limit": 11}, "unified": {"cgroup.subtree_control": "+memory"}}),
            "linux.resources.unified.cgroup.subtree_control",
        ),
        (
            json!({"pids": {"limit": 11},
                   "blockIO": {"weightDevice": [{"major": 8, "minor": 0, "leafWeight": 10}]}}),
            "linux.resources.blockIO.weightDevice[0].leafWeight",
        ),
    ] {
        let ran = env.oci_stdin(&["update", "-r", "-", &id], &resources.to_string());
        assert_eq!(ran.code, 1, "{ran:?}");
        assert!(ran.err.contains(field), "{ran:?}");
        assert_eq!(pids(&env), "9", "{field}");
    }
    env.oci(&["delete", "--force", &id]).ok();
    drop(parent);
}
