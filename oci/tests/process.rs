//! The process-level fields of a bundle, run on a busybox root: `domainname`,
//! `process.ioPriority`, `scheduler`, `execCPUAffinity`, the five capability sets, and
//! `linux.personality`.

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade::{Sandbox, Stdio};
use palisade_oci::{Bundle, Error};
use palisade_test_support::{require_root, TempDir};
use serde_json::{json, Value};

/// A small configuration: root, busybox's `sh -c SCRIPT`, the usual namespaces.
fn config(script: &str) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "pal",
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ]
        }
    })
}

/// A unique sandbox name.
fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("pal-oci-proc-{tag}-{}-{n}", std::process::id())
}

/// A bundle of `config` on a busybox root (with the applets these tests call), or `None`
/// (skipped) without a static busybox.
fn bundle(config: &Value) -> Option<TempDir> {
    if !Path::new("/usr/bin/busybox").exists() {
        palisade_test_support::skip("needs a static /usr/bin/busybox (busybox-static)");
        return None;
    }
    let dir = TempDir::new("oci-proc");
    let rootfs = dir.path().join("rootfs");
    common::busybox_root(&rootfs);
    for applet in ["ionice", "cut", "uname", "taskset"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(config).unwrap(),
    )
    .unwrap();
    Some(dir)
}

/// Runs the bundle's sandbox with stdout captured, then deletes it: its stdout.
fn run(dir: &Path) -> String {
    let state = TempDir::new("oci-proc-state");
    let bundle = Bundle::load(dir).unwrap();
    let id = unique("run");
    let mut builder = bundle.builder(&id, state.path()).unwrap();
    builder.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = builder.spawn().unwrap().wait_with_output();
    let deleted = Sandbox::open_in(state.path(), &id).and_then(|h| h.force_delete());
    let out = out.unwrap();
    deleted.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// Runs `config` on a busybox root; `None` when skipped.
fn run_config(config: &Value) -> Option<String> {
    let dir = bundle(config)?;
    Some(run(dir.path()))
}

/// The error of building the sandbox of `config` (on an empty root: nothing runs).
fn refusal(config: &Value) -> Error {
    let dir = TempDir::new("oci-proc");
    fs::create_dir(dir.path().join("rootfs")).unwrap();
    fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(config).unwrap(),
    )
    .unwrap();
    let state = TempDir::new("oci-proc-state");
    let bundle = Bundle::load(dir.path()).unwrap();
    match bundle.builder("pal-refused", state.path()) {
        Err(e) => e,
        Ok(mut b) => match b.build() {
            Err(e) => Error::from(e),
            Ok(_) => panic!("built: {config}"),
        },
    }
}

#[test]
fn domainname_is_the_containers() {
    require_root!();
    let host = fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let mut c = config("cat /proc/sys/kernel/domainname");
    c["domainname"] = json!("pal.example");
    let Some(out) = run_config(&c) else { return };
    assert_eq!(out, "pal.example\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host
    );
}

#[test]
fn domainname_needs_a_uts_namespace_of_the_containers_own() {
    let mut c = config("true");
    c["domainname"] = json!("pal.example");
    c["linux"]["namespaces"] = json!([{ "type": "mount" }, { "type": "pid" }]);
    c.as_object_mut().unwrap().remove("hostname");
    let err = refusal(&c);
    assert!(err.to_string().contains("domain name"), "{err}");
}

#[test]
fn io_priority_is_the_commands() {
    require_root!();
    let mut c = config("ionice -p $$");
    c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 6 });
    let Some(out) = run_config(&c) else { return };
    assert_eq!(out.trim(), "best-effort: prio 6");
    c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_IDLE", "priority": 0 });
    let out = run_config(&c).unwrap();
    assert!(out.starts_with("idle"), "{out}");
    c["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 8 });
    let err = refusal(&c);
    assert!(
        err.to_string().contains("process.ioPriority.priority"),
        "{err}"
    );
}

#[test]
fn scheduler_is_the_commands() {
    require_root!();
    // Fields 19 (nice) and 41 (policy; SCHED_BATCH is 3) of the shell's stat.
    let mut c = config("cut -d' ' -f19,41 /proc/$$/stat");
    c["process"]["scheduler"] = json!({ "policy": "SCHED_BATCH", "nice": 5 });
    let Some(out) = run_config(&c) else { return };
    assert_eq!(out, "5 3\n");
    // The specification's spelling of the reset-on-fork flag (oci-spec reads another).
    c["process"]["scheduler"] =
        json!({ "policy": "SCHED_BATCH", "nice": 5, "flags": ["SCHED_FLAG_RESET_ON_FORK"] });
    assert_eq!(run_config(&c).as_deref(), Some("5 3\n"));
    c["process"]["scheduler"] = json!({ "policy": "SCHED_FIFO", "priority": 0 });
    let err = refusal(&c);
    assert!(err.to_string().contains("scheduler"), "{err}");
}

#[test]
fn exec_cpu_affinity_is_the_commands_final_set() {
    require_root!();
    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if online.trim() == "0" {
        palisade_test_support::skip("needs two CPUs");
        return;
    }
    let mut c = config("grep Cpus_allowed_list /proc/$$/status /proc/1/status");
    c["process"]["execCPUAffinity"] = json!({ "initial": "1", "final": "0" });
    let Some(out) = run_config(&c) else { return };
    let lists: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    // The command's, then its init's, which stays on the initial CPUs.
    assert_eq!(lists, ["0", "1"], "{out}");
}

#[test]
fn linux32_personality_makes_the_machine_i686() {
    require_root!();
    let mut c = config("uname -m");
    c["linux"]["personality"] = json!({ "domain": "LINUX32" });
    let Some(out) = run_config(&c) else { return };
    assert_eq!(out, "i686\n");
    c["linux"]["personality"] = json!({ "domain": "LINUX32", "flags": ["NO_SUCH_FLAG"] });
    let err = refusal(&c);
    assert!(err.to_string().contains("linux.personality.flags"), "{err}");
}

/// The `Cap*` lines of the output, as `name value` pairs.
fn cap_lines(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.split_once(":\t"))
        .filter(|(k, _)| k.starts_with("Cap"))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The mask of capability `numbers`, as `/proc/<pid>/status` prints it.
fn mask(numbers: &[u32]) -> String {
    format!("{:016x}", numbers.iter().fold(0u64, |m, n| m | 1 << n))
}

#[test]
fn capability_sets_are_taken_exactly_for_root_and_another_user() {
    require_root!();
    // CAP_CHOWN 0, CAP_KILL 5, CAP_NET_BIND_SERVICE 10, CAP_SYS_TIME 25.
    let cases = [
        (
            0,
            json!({
                "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_KILL"]
            }),
            [
                ("CapInh", mask(&[5, 10])),
                ("CapPrm", mask(&[0, 5, 10])),
                ("CapEff", mask(&[0, 5, 10])),
                ("CapBnd", mask(&[0, 5, 10])),
                ("CapAmb", mask(&[5])),
            ],
        ),
        (
            1000,
            json!({
                "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_TIME"],
                "effective": ["CAP_KILL", "CAP_SYS_TIME"],
                "permitted": ["CAP_KILL", "CAP_SYS_TIME"],
                "inheritable": ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_TIME"],
                "ambient": ["CAP_KILL", "CAP_SYS_TIME"]
            }),
            [
                ("CapInh", mask(&[0, 5, 25])),
                ("CapPrm", mask(&[5, 25])),
                ("CapEff", mask(&[5, 25])),
                ("CapBnd", mask(&[0, 5, 10, 25])),
                ("CapAmb", mask(&[5, 25])),
            ],
        ),
    ];
    for (uid, caps, want) in cases {
        let mut c = config("grep ^Cap /proc/self/status");
        c["process"]["user"] = json!({ "uid": uid, "gid": uid });
        c["process"]["capabilities"] = caps;
        let Some(out) = run_config(&c) else { return };
        let want: Vec<(String, String)> =
            want.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(cap_lines(&out), want, "uid {uid}");
    }
}
