//! Sandboxes with cgroup limits, against the real kernel (the host's layout, or the pure v2
//! guest of `tests/vm/run-v2.sh`). Each sandbox's group is created beneath this process's own
//! cgroup and must be gone once its `Child` is dropped.

mod common;

use std::io::Read;
use std::time::Duration;

use common::{group_dirs, sh};
use palisade::cgroup::{Bytes, CpuSet, Error as CgroupError};
use palisade::{Error, Sandbox, Stdio};
use palisade_test_support::require_root;

#[test]
fn oom_kill_is_reported_and_the_caller_survives() {
    require_root!();
    // The caller holds more memory than the sandbox may use: were the OOM killer to pick a
    // process sharing the caller's memory, it would kill the caller too.
    let ballast = vec![1u8; 96 << 20];
    let mut child = sh("exec tail /dev/zero")
        .memory_max(Bytes::mib(32))
        .spawn()
        .unwrap();
    let name = child.cgroup_name().unwrap().to_owned();
    assert!(!group_dirs(|n| n == name).is_empty());
    let status = child.wait().unwrap();
    assert!(status.oom_killed(), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(status.to_string().ends_with("OOM-killed"));
    assert!(child.memory_events().unwrap().unwrap().oom_kill >= 1);
    drop(child);
    assert!(
        group_dirs(|n| n == name).is_empty(),
        "group {name} left behind"
    );
    assert_eq!(ballast.iter().map(|&b| b as usize).sum::<usize>(), 96 << 20);
}

#[test]
fn a_command_within_its_limit_is_not_oom_killed() {
    require_root!();
    let status = sh("head -c 1000000 /dev/zero | wc -c >/dev/null")
        .memory_max(Bytes::mib(64))
        .status()
        .unwrap();
    assert!(status.success() && !status.oom_killed(), "{status}");
}

#[test]
fn pids_limit_refuses_forks() {
    require_root!();
    let mut child = sh("for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; wait")
        .pids_max(6)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 512];
    while !text.to_lowercase().contains("fork") {
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "the shell ended without a refused fork: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let pids = child.stats().unwrap().pids.unwrap();
    assert_eq!(pids.limit, Some(6));
    // The init, the shell and four `sleep`s.
    assert!(pids.current <= 6, "{pids:?}");
}

#[test]
fn stats_freeze_thaw_and_cgroup_namespace() {
    require_root!();
    let mut child = sh("cat /proc/self/cgroup; exec sleep 30")
        .cgroup(true)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut line = [0u8; 256];
    let n = out.read(&mut line).unwrap();
    let text = String::from_utf8_lossy(&line[..n]);
    // The cgroup namespace is rooted at the sandbox's own group, in every hierarchy.
    for l in text.lines() {
        assert!(l.ends_with(":/"), "not rooted at its group: {text}");
    }
    // The init and `sleep`, once the shell has reaped `cat` and become `sleep`.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = child.stats().unwrap();
        if stats.pids.unwrap().current == 2 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats.pids.unwrap().current, 2, "init and sleep");
    assert!(stats.memory.unwrap().current.0 > 0);
    child.freeze().unwrap();
    child.thaw().unwrap();
    child.signal(palisade::Signal::SIGKILL).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn cpu_and_cpuset_limits() {
    require_root!();
    let out = sh("grep Cpus_allowed_list /proc/self/status")
        .cpus(0.5)
        .cpuset(CpuSet::from_ids([0]).unwrap())
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .last(),
        Some("0")
    );
    // A busy sandbox under a 0.5 CPU quota: near the quota, with a wide margin.
    let child = sh("while :; do :; done").cpus(0.5).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let a = child.stats().unwrap().cpu.unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let b = child.stats().unwrap().cpu.unwrap();
    let used = (b.usage - a.usage).as_secs_f64() / 1.5;
    assert!(
        used > 0.1 && used < 0.8,
        "used {used:.2} CPUs under a 0.5 quota"
    );
}

#[test]
fn invalid_limits_are_refused_at_build() {
    let err = Sandbox::builder("true").cpus(-1.0).build().unwrap_err();
    assert!(
        matches!(err, Error::Cgroup(CgroupError::InvalidValue { .. })),
        "{err}"
    );
    let err = Sandbox::builder("true")
        .pids_max(1 << 40)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Cgroup(CgroupError::InvalidValue { .. })),
        "{err}"
    );
    // Without namespaces, a spawn needs no privilege.
    let mut child = Sandbox::builder("true")
        .namespaces(palisade::Namespace::empty())
        .spawn()
        .unwrap();
    assert!(matches!(child.stats(), Err(Error::NoCgroup)));
    child.wait().unwrap();
}

#[test]
fn clone_into_cgroup_and_cgroup_procs_give_the_same_result() {
    require_root!();
    for clone_into in [true, false] {
        let out = sh("cat /proc/self/cgroup")
            .pids_max(16)
            .clone_into_cgroup(clone_into)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().all(|l| l.ends_with(":/")),
            "{clone_into}: {text}"
        );
    }
}

#[test]
fn a_bad_parent_fails_the_spawn_and_leaves_nothing() {
    require_root!();
    let err = Sandbox::builder("true")
        .pids_max(4)
        .cgroup_parent("/palisade-no-such-parent")
        .spawn()
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    assert!(matches!(err, Error::Cgroup(_)), "{err}");
}

/// The device policy rides on the sandbox's group: the v1 `devices` controller here, a
/// `BPF_PROG_TYPE_CGROUP_DEVICE` program in the v2 guest. A command that may mount makes a
/// file system without `nodev` and a node on it (the kernel log, char 1:11, only opened): the
/// group refuses it, unless the policy allows it. The attack in full is in
/// tests/escapes/devices.rs.
#[test]
fn the_device_policy_holds_on_file_systems_the_command_mounts() {
    require_root!();
    let script = "mkdir -p /m && mount -t tmpfs none /m && mknod /m/kmsg c 1 11 && \
                  if (: < /m/kmsg) 2>/dev/null; then echo opened; else echo refused; fi";
    let run = |allow: bool| {
        let mut b = sh(script);
        b.cap_add(palisade::Capability::CAP_SYS_ADMIN)
            .cap_add(palisade::Capability::CAP_SYSLOG);
        if allow {
            b.device("c 1:11 r".parse().unwrap());
        }
        common::stdout_of(&mut b)
    };
    assert_eq!(run(false), "refused\n");
    assert_eq!(run(true), "opened\n");
}

#[test]
fn the_sandbox_reads_its_own_limits_at_sys_fs_cgroup_on_cgroup_v2() {
    require_root!();
    let backend = palisade::cgroup::Hierarchy::detect().unwrap().backend();
    let mut b = sh("cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max 2>&1; \
                    ls /sys/fs/cgroup | grep -c palisade; touch /sys/fs/cgroup/x 2>&1 | grep -c Read-only; true");
    b.memory_max(Bytes::mib(64)).pids_max(50);
    let out = common::stdout_of(&mut b);
    if backend == palisade::cgroup::Backend::V2 {
        // Its own group is the root of what it sees: its limits, no other group's name, and
        // nothing it can change.
        assert_eq!(out, format!("{}\n50\n0\n1\n", 64 << 20), "{out}");
    } else {
        // Hybrid and v1 hosts: the mount point stays empty (a cgroup2 view there would show a
        // hierarchy without the controllers).
        assert!(out.contains("No such file"), "{out}");
    }
}
