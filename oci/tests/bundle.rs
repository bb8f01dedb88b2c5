//! Bundles mapped to sandboxes: `runc spec`'s and a podman-like configuration, built and run on
//! a busybox root, and the refusals, each naming its field.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade::{Sandbox, Stdio};
use palisade_oci::{Bundle, Error};
use palisade_test_support::{require_root, TempDir};
use serde_json::{json, Value};

/// What `runc spec` (runc 1.1) writes, as it writes it.
const RUNC_SPEC: &str = r#"{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			"sh"
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"effective": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"permitted": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"ambient": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "rootfs",
		"readonly": true
	},
	"hostname": "runc",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": [
				"nosuid",
				"strictatime",
				"mode=755",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": [
				"nosuid",
				"noexec",
				"newinstance",
				"ptmxmode=0666",
				"mode=0620",
				"gid=5"
			]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"mode=1777",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": [
				"nosuid",
				"noexec",
				"nodev"
			]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"ro"
			]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"relatime",
				"ro"
			]
		}
	],
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{
				"type": "pid"
			},
			{
				"type": "network"
			},
			{
				"type": "ipc"
			},
			{
				"type": "uts"
			},
			{
				"type": "mount"
			},
			{
				"type": "cgroup"
			}
		],
		"maskedPaths": [
			"/proc/acpi",
			"/proc/asound",
			"/proc/kcore",
			"/proc/keys",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}"#;

/// A podman-like configuration (`podman run --user 1000:1000 --cap-add ...`, trimmed): a
/// non-root user with one ambient capability, limits below any host's (podman's own raise
/// them, which takes `CAP_SYS_RESOURCE`), bind mounts for `/etc/hosts` and friends (their
/// sources, `@DIR@`, in the test's directory), a seccomp profile, limits and annotations.
const PODMAN_LIKE: &str = r#"{
  "ociVersion": "1.1.0",
  "process": {
    "user": { "uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [1000, 10] },
    "args": ["/bin/sh"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "container=podman", "HOME=/home/user", "HOSTNAME=web"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                   "CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
                   "CAP_SETUID", "CAP_SYS_CHROOT"],
      "effective": ["CAP_NET_BIND_SERVICE"],
      "inheritable": ["CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [
      { "type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024 },
      { "type": "RLIMIT_NPROC", "hard": 4096, "soft": 4096 }
    ],
    "oomScoreAdj": 100
  },
  "root": { "path": "rootfs" },
  "hostname": "web",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc",
      "options": ["nosuid", "noexec", "nodev"] },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": ["nosuid", "noexec", "nodev"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { "destination": "/etc/hosts", "type": "bind", "source": "@DIR@/userdata/hosts",
      "options": ["bind", "rprivate"] },
    { "destination": "/etc/hostname", "type": "bind", "source": "@DIR@/userdata/hostname",
      "options": ["bind", "rprivate"] },
    { "destination": "/etc/resolv.conf", "type": "bind", "source": "@DIR@/userdata/resolv.conf",
      "options": ["bind", "rprivate", "ro"] },
    { "destination": "/run/.containerenv", "type": "bind", "source": "userdata/.containerenv",
      "options": ["bind", "rprivate"] },
    { "destination": "/data", "type": "bind", "source": "@DIR@/userdata",
      "options": ["rbind", "rprivate", "nodev"] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"] }
  ],
  "annotations": {
    "io.container.manager": "libpod",
    "org.opencontainers.image.stopSignal": "15"
  },
  "linux": {
    "resources": {
      "devices": [ { "allow": false, "access": "rwm" } ],
      "memory": { "limit": 268435456 },
      "cpu": { "quota": 50000, "period": 100000 },
      "pids": { "limit": 2048 }
    },
    "cgroupsPath": "/libpod_parent/libpod-web",
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" },
      { "type": "mount" }, { "type": "cgroup" }
    ],
    "seccomp": {
      "defaultAction": "SCMP_ACT_ALLOW",
      "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
      "syscalls": [
        { "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
      ]
    },
    "maskedPaths": [
      "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
      "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
      "/sys/devices/virtual/powercap"
    ],
    "readonlyPaths": [
      "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
    ]
  }
}"#;

/// A unique sandbox name.
fn unique(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("pal-oci-{tag}-{}-{n}", std::process::id())
}

/// A bundle directory with `config` and an empty `rootfs`.
fn bundle_dir(config: &str) -> TempDir {
    let dir = TempDir::new("oci-bundle");
    fs::create_dir(dir.path().join("rootfs")).unwrap();
    fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

/// Fills `rootfs` with a static busybox and the applets the tests call.
fn busybox_rootfs(rootfs: &Path) -> bool {
    let busybox = Path::new("/usr/bin/busybox");
    if !busybox.exists() {
        palisade_test_support::skip("needs a static /usr/bin/busybox (busybox-static)");
        return false;
    }
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "id", "hostname", "cat", "mkdir", "ls", "umask"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    true
}

/// The podman-like configuration for a bundle in `dir`, its bind sources made.
fn podman_like(dir: &Path) -> String {
    let userdata = dir.join("userdata");
    fs::create_dir_all(&userdata).unwrap();
    fs::write(
        userdata.join("hosts"),
        "127.0.0.1 localhost\n10.88.0.2 web\n",
    )
    .unwrap();
    fs::write(userdata.join("hostname"), "web\n").unwrap();
    fs::write(userdata.join("resolv.conf"), "nameserver 10.88.0.1\n").unwrap();
    fs::write(userdata.join(".containerenv"), "engine=\"podman\"\n").unwrap();
    PODMAN_LIKE.replace("@DIR@", dir.to_str().unwrap())
}

/// `config` with `edit` applied to its JSON.
fn edited(config: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(config).unwrap();
    edit(&mut value);
    serde_json::to_string_pretty(&value).unwrap()
}

/// Runs the bundle's sandbox with stdout captured, then deletes it.
fn run(dir: &Path, state: &Path, tag: &str) -> (String, palisade::ExitStatus) {
    let bundle = Bundle::load(dir).unwrap();
    let id = unique(tag);
    let mut builder = bundle.builder(&id, state).unwrap();
    builder.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = builder.spawn().unwrap().wait_with_output();
    let deleted = Sandbox::open_in(state, &id).and_then(|h| h.force_delete());
    let out = out.unwrap();
    deleted.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, out.status)
}

/// The value of a `/proc/<pid>/status` line.
fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in {status}"))
        .trim()
}

#[test]
fn runc_spec_builds() {
    let dir = bundle_dir(RUNC_SPEC);
    let state = TempDir::new("oci-state");
    let bundle = Bundle::load(dir.path()).unwrap();
    assert!(bundle.terminal());
    assert_eq!(bundle.umask(), None);
    assert_eq!(bundle.oom_score_adj(), None);
    assert_eq!(bundle.dir(), dir.path());
    assert_eq!(bundle.spec().hostname().as_deref(), Some("runc"));
    let sandbox = bundle.builder("runc-spec", state.path()).unwrap().build();
    let sandbox = sandbox.unwrap();
    // The cgroup namespace is left out: the child creates it once in its group.
    let expected = Sandbox::DEFAULT_NAMESPACES - palisade::Namespace::CGROUP;
    assert_eq!(sandbox.namespaces(), expected);
}

#[test]
fn podman_like_builds() {
    let dir = TempDir::new("oci-bundle");
    fs::create_dir(dir.path().join("rootfs")).unwrap();
    let config = podman_like(dir.path());
    fs::write(dir.path().join("config.json"), config).unwrap();
    let state = TempDir::new("oci-state");
    let bundle = Bundle::load(dir.path()).unwrap();
    assert!(!bundle.terminal());
    assert_eq!(bundle.umask(), Some(0o22));
    assert_eq!(bundle.oom_score_adj(), Some(100));
    bundle
        .builder("podman", state.path())
        .unwrap()
        .build()
        .unwrap();
}

#[test]
fn runc_spec_runs() {
    require_root!();
    let dir = TempDir::new("oci-bundle");
    if !busybox_rootfs(&dir.path().join("rootfs")) {
        return;
    }
    let config = edited(RUNC_SPEC, |v| {
        v["process"]["terminal"] = json!(false);
        v["process"]["args"] = json!(["sh", "-c", "id; hostname; cat /proc/self/status; ls /dev"]);
    });
    fs::write(dir.path().join("config.json"), config).unwrap();
    let state = TempDir::new("oci-state");
    let (out, _) = run(dir.path(), state.path(), "runc");
    assert!(out.contains("uid=0 gid=0"), "{out}");
    assert!(out.lines().any(|l| l == "runc"), "{out}");
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29).
    let caps = format!("{:016x}", 1u64 << 5 | 1 << 10 | 1 << 29);
    for key in ["CapBnd", "CapPrm", "CapEff"] {
        assert_eq!(status_field(&out, key), caps, "{key}");
    }
    assert_eq!(status_field(&out, "CapInh"), "0000000000000000");
    assert_eq!(status_field(&out, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    assert_eq!(status_field(&out, "Seccomp"), "0");
    assert!(out.lines().any(|l| l == "null"), "{out}");
}

#[test]
fn podman_like_runs() {
    require_root!();
    let dir = TempDir::new("oci-bundle");
    if !busybox_rootfs(&dir.path().join("rootfs")) {
        return;
    }
    let config = edited(&podman_like(dir.path()), |v| {
        v["process"]["args"] = json!([
            "sh",
            "-c",
            "id; hostname; cat /proc/self/status; cat /etc/hosts /run/.containerenv; \
             echo $container; ulimit -n; mkdir /tmp/x || echo mkdir refused"
        ]);
        // The test leaves the cgroup where the sandbox's caller is.
        v["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    });
    fs::write(dir.path().join("config.json"), config).unwrap();
    let state = TempDir::new("oci-state");
    let (out, _) = run(dir.path(), state.path(), "podman");
    assert!(out.contains("uid=1000 gid=1000 groups=10,1000"), "{out}");
    assert!(out.lines().any(|l| l == "web"), "{out}");
    assert!(out.contains("10.88.0.2 web"), "{out}");
    assert!(out.contains("engine=\"podman\""), "{out}");
    assert!(out.lines().any(|l| l == "podman"), "{out}");
    assert!(out.contains("mkdir refused"), "{out}");
    assert!(out.lines().any(|l| l == "1024"), "{out}");
    let bind = format!("{:016x}", 1u64 << 10);
    for key in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&out, key), bind, "{key}");
    }
    // Docker's defaults less CAP_MKNOD (27) and CAP_AUDIT_WRITE (29).
    let bounding = 0xa80425fbu64 & !(1 << 13 | 1 << 27 | 1 << 29);
    assert_eq!(status_field(&out, "CapBnd"), format!("{bounding:016x}"));
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
    assert_eq!(status_field(&out, "Seccomp"), "2");
}

/// A change to a configuration.
type Edit = Box<dyn FnOnce(&mut Value)>;

/// The error `Bundle::load` then `Bundle::builder` give for `config`.
fn refusal(config: &str) -> Error {
    let dir = bundle_dir(config);
    let state = TempDir::new("oci-state");
    let built = Bundle::load(dir.path())
        .and_then(|b| b.builder("refused", state.path()))
        .and_then(|mut b| b.build().map_err(Error::from));
    match built {
        Ok(_) => panic!("accepted: {config}"),
        Err(e) => e,
    }
}

#[test]
fn refusals_name_the_field() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "version",
            Box::new(|v| v["ociVersion"] = json!("2.0.0")),
            "ociVersion \"2.0.0\"",
        ),
        (
            "namespace type",
            Box::new(|v| v["linux"]["namespaces"][0]["type"] = json!("pidd")),
            "pidd",
        ),
        (
            "capability",
            Box::new(|v| v["process"]["capabilities"]["bounding"][0] = json!("CAP_TIME_TRAVEL")),
            "CAP_TIME_TRAVEL",
        ),
        (
            "rlimit",
            Box::new(|v| v["process"]["rlimits"][0]["type"] = json!("RLIMIT_FUN")),
            "RLIMIT_FUN",
        ),
        (
            "mount type",
            Box::new(|v| {
                v["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"destination": "/mnt", "type": "nfs", "source": "srv:/x"}))
            }),
            "mounts[7].type",
        ),
        (
            "mount option",
            Box::new(|v| v["mounts"][1]["options"][0] = json!("nosymfollow")),
            "mounts[1].options[0]",
        ),
        (
            "propagation",
            Box::new(|v| v["linux"]["rootfsPropagation"] = json!("sideways")),
            "linux.rootfsPropagation",
        ),
        (
            // Namespaced ones are applied; one of the host's is refused when the sandbox is built.
            "sysctl",
            Box::new(|v| v["linux"]["sysctl"] = json!({"kernel.panic": "1"})),
            "kernel.panic",
        ),
        (
            "blockIO",
            Box::new(|v| v["linux"]["resources"]["blockIO"] = json!({"leafWeight": 500})),
            "linux.resources.blockIO.leafWeight",
        ),
        (
            // A path of another kind than its entry's.
            "namespace path",
            Box::new(|v| v["linux"]["namespaces"][0]["path"] = json!("/proc/1/ns/net")),
            "linux.namespaces[0].path",
        ),
        (
            "masked path",
            Box::new(|v| v["linux"]["maskedPaths"][0] = json!("/proc/cpuinfo")),
            "linux.maskedPaths[0]",
        ),
        (
            "device node",
            Box::new(|v| {
                // Set-user-ID (0o4666): a device node carries permission bits only.
                v["linux"]["devices"] = json!([{"path": "/dev/palx", "type": "c", "major": 1,
                                                "minor": 7, "fileMode": 2486}])
            }),
            "linux.devices[0].fileMode",
        ),
        (
            "empty args",
            Box::new(|v| v["process"]["args"] = json!([])),
            "process.args",
        ),
        (
            "systemd cgroup",
            Box::new(|v| v["linux"]["cgroupsPath"] = json!("system.slice:runc:box")),
            "linux.cgroupsPath",
        ),
        (
            // Out of the cgroup file system, to make a directory elsewhere on the host.
            "climbing cgroup path",
            Box::new(|v| v["linux"]["cgroupsPath"] = json!("/../../../../tmp/pal-escape/box")),
            "linux.cgroupsPath",
        ),
    ];
    for (what, edit, field) in cases {
        let err = refusal(&edited(RUNC_SPEC, edit));
        let message = err.to_string();
        assert!(message.contains(field), "{what}: {message}");
        match what {
            "version" | "namespace type" | "capability" | "rlimit" | "empty args"
            | "propagation" | "namespace path" => {
                assert!(matches!(err, Error::Config { .. }), "{what}: {err:?}")
            }
            "sysctl" => assert!(
                matches!(
                    err,
                    Error::Palisade(palisade::Error::InvalidValue { what: "sysctl", .. })
                ),
                "{what}: {err:?}"
            ),
            _ => assert!(matches!(err, Error::Unsupported { .. }), "{what}: {err:?}"),
        }
    }

    let err = refusal("{ not json");
    assert!(
        matches!(&err, Error::Config { path, .. } if path.ends_with("config.json")),
        "{err:?}"
    );

    // No config.json at all.
    let dir = TempDir::new("oci-bundle");
    let err = Bundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Bundle { path, .. } if path.ends_with("config.json")),
        "{err:?}"
    );
    assert!(err.to_string().contains("config.json"), "{err}");

    // A root directory that is not there.
    let config = edited(RUNC_SPEC, |v| v["root"]["path"] = json!("nowhere"));
    let dir = bundle_dir(&config);
    let err = Bundle::load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Bundle { path, .. } if path.ends_with("nowhere")),
        "{err:?}"
    );
    assert!(err.to_string().contains("nowhere"), "{err}");
}

#[test]
fn more_fields_map() {
    let state = TempDir::new("oci-state");
    let builds = |config: String| {
        let dir = bundle_dir(&config);
        let bundle = Bundle::load(dir.path()).unwrap();
        bundle
            .builder("more", state.path())
            .unwrap()
            .build()
            .unwrap()
    };
    // A user namespace with two ranges, time offsets, and tmpfs mounts.
    let sandbox = builds(edited(RUNC_SPEC, |v| {
        let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({"type": "user"}));
        ns.push(json!({"type": "time"}));
        v["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 200000, "size": 65536}
        ]);
        v["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["timeOffsets"] =
            json!({"monotonic": {"secs": 3600}, "boottime": {"secs": 7200}});
        v["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/run", "type": "tmpfs", "options": ["nosuid", "nodev"]}));
        v["linux"]["resources"]["cpu"] = json!({"shares": 512, "cpus": "0", "quota": -1});
        v["linux"]["resources"]["memory"] = json!({"limit": 67108864, "swap": 134217728});
    }));
    let ns = sandbox.namespaces();
    assert!(
        ns.contains(palisade::Namespace::USER | palisade::Namespace::TIME),
        "{ns:?}"
    );

    // Joining a network namespace by path, and no network namespace at all.
    let sandbox = builds(edited(RUNC_SPEC, |v| {
        v["linux"]["namespaces"][1]["path"] = json!("/proc/self/ns/net");
    }));
    assert!(!sandbox.namespaces().contains(palisade::Namespace::NET));
    let sandbox = builds(edited(RUNC_SPEC, |v| {
        v["linux"]["namespaces"].as_array_mut().unwrap().remove(1);
    }));
    assert!(!sandbox.namespaces().contains(palisade::Namespace::NET));

    // nosuid on a bind mount is applied, with no_new_privs or without; dev is refused (every
    // mount but the device nodes is nodev).
    let dir = TempDir::new("oci-volume");
    let bind = json!({"destination": "/data", "type": "bind", "source": dir.path(),
                      "options": ["rbind", "nosuid", "ro"]});
    let with_bind = |nnp: bool| {
        let bind = bind.clone();
        edited(RUNC_SPEC, move |v| {
            v["process"]["noNewPrivileges"] = json!(nnp);
            v["mounts"].as_array_mut().unwrap().push(bind);
        })
    };
    builds(with_bind(true));
    builds(with_bind(false));
    let err = refusal(&edited(RUNC_SPEC, |v| {
        v["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/data", "type": "bind", "source": "rootfs",
                   "options": ["rbind", "dev"]}),
        );
    }));
    assert!(err.to_string().contains("mounts[7].options[1]"), "{err}");

    // A bind mount inside an earlier tmpfs is mounted in that order; one of Palisade's own
    // file systems inside an earlier bind mount would be mounted first, under it: refused.
    builds(edited(RUNC_SPEC, |v| {
        let mounts = v["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/srv", "type": "tmpfs"}));
        mounts.push(json!({"destination": "/srv/data", "type": "bind", "source": "rootfs"}));
    }));
    let err = refusal(&edited(RUNC_SPEC, |v| {
        let mounts = v["mounts"].as_array_mut().unwrap();
        let mqueue = mounts.remove(4);
        assert_eq!(mqueue["destination"], "/dev/mqueue");
        mounts.push(json!({"destination": "/dev/mqueue", "type": "bind", "source": "rootfs"}));
        mounts.push(mqueue);
    }));
    assert!(err.to_string().contains("mounts["), "{err}");

    // A read-write sysfs, and a non-root user's bounding capability beyond Docker's.
    let err = refusal(&edited(RUNC_SPEC, |v| {
        v["mounts"][5]["options"] = json!(["nosuid"])
    }));
    assert!(err.to_string().contains("mounts[5].options"), "{err}");
    let err = refusal(&edited(RUNC_SPEC, |v| {
        v["process"]["user"]["uid"] = json!(1000);
        v["process"]["capabilities"] = json!({"inheritable": ["CAP_KILL"]});
    }));
    assert!(
        err.to_string().contains("process.capabilities.inheritable"),
        "{err}"
    );
}
