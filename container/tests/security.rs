//! Privileges and syscall filters of sandboxed commands, against the real kernel: the default
//! sandbox (Docker's capabilities, no_new_privs, the default seccomp profile), capability
//! changes, a non-root user, rlimits, user notification and JSON profiles.
//!
//! Where a check needs a system call no shell tool makes, the sandbox runs this test binary
//! itself (its directory is mounted read-only at `/mnt`) as one of the ignored `probe_*` tests.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{probe, sh, stdout_of};
use palisade::overlay::rootfs::Access;
use palisade::seccomp::notify::Response;
use palisade::seccomp::{Action, JsonOptions, Profile, Rule};
use palisade::{Capability, Error, Sandbox, SandboxBuilder, Stdio};
use palisade_test_support::{require_root, TempDir};

/// The `key: value` lines of `/proc/self/status` named in `keys`, as the sandbox's shell sees
/// them.
fn status_fields(builder: &mut SandboxBuilder, keys: &[&str]) -> Vec<(String, String)> {
    let out = stdout_of(builder);
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

/// The default capability set (Docker's without `CAP_NET_RAW`, as podman's) as
/// `/proc/<pid>/status` prints it.
const DOCKER_CAPS: &str = "00000000a80405fb";

#[test]
fn default_sandbox_is_confined_and_ordinary_programs_run() {
    require_root!();
    let keys = [
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
        "NoNewPrivs",
        "Seccomp",
    ];
    let fields = status_fields(&mut sh("cat /proc/self/status"), &keys);
    assert_eq!(field(&fields, "CapEff"), DOCKER_CAPS);
    assert_eq!(field(&fields, "CapPrm"), DOCKER_CAPS);
    assert_eq!(field(&fields, "CapBnd"), DOCKER_CAPS);
    assert_eq!(field(&fields, "CapInh"), "0000000000000000");
    assert_eq!(field(&fields, "CapAmb"), "0000000000000000");
    assert_eq!(field(&fields, "NoNewPrivs"), "1");
    assert_eq!(field(&fields, "Seccomp"), "2", "filter mode");

    // Ordinary programs work under the filter: a shell pipeline, files, processes, sockets.
    let out = stdout_of(&mut sh(
        "echo hi > /tmp/f && cat /tmp/f | tr a-z A-Z; ls / >/dev/null && sleep 0 && \
         (echo sub) && wc -c < /proc/self/status >/dev/null && echo done",
    ));
    assert_eq!(out, "HI\nsub\ndone\n");
}

#[test]
fn default_profile_refuses_dangerous_syscalls_with_eperm() {
    require_root!();
    let out = stdout_of(&mut probe("probe_dangerous_syscalls"));
    let results: Vec<&str> = out.lines().filter(|l| l.starts_with("probe ")).collect();
    let expected: Vec<String> = ["mount", "unshare", "ptrace", "keyctl", "bpf", "kexec_load"]
        .iter()
        .map(|name| format!("probe {name} -1 {}", libc::EPERM))
        .collect();
    assert_eq!(results, expected, "{out}");

    // Without the filter, keyctl(2) reaches the kernel (its session keyring exists): the EPERM
    // above is the filter's.
    let mut unconfined = probe("probe_dangerous_syscalls");
    unconfined.seccomp(Profile::unconfined());
    let out = stdout_of(&mut unconfined);
    let keyctl = out.lines().find(|l| l.starts_with("probe keyctl")).unwrap();
    assert!(!keyctl.ends_with(&format!(" {}", libc::EPERM)), "{out}");
}

/// Runs only inside a sandbox: calls each system call the default profile refuses, in a way
/// that needs no capability, and prints `probe NAME RET ERRNO`.
#[test]
#[ignore = "run inside a sandbox by default_profile_refuses_dangerous_syscalls_with_eperm"]
fn probe_dangerous_syscalls() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    // The test harness has printed the test's name without a line break.
    println!();
    let call = |name: &str, ret: libc::c_long| {
        let errno = if ret == -1 {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        } else {
            0
        };
        println!("probe {name} {ret} {errno}");
    };
    // SAFETY: each call passes null or plain values; none succeeds in changing anything that
    // outlives this process (the mount and unshare would only affect the sandbox).
    unsafe {
        call(
            "mount",
            libc::syscall(
                libc::SYS_mount,
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                0,
            ),
        );
        call(
            "unshare",
            libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS),
        );
        // PTRACE_ATTACH to the init, its parent.
        call(
            "ptrace",
            libc::syscall(libc::SYS_ptrace, libc::PTRACE_ATTACH, 1, 0, 0),
        );
        // KEYCTL_GET_KEYRING_ID of the session keyring, without creating it.
        call("keyctl", libc::syscall(libc::SYS_keyctl, 0, -3i32, 0));
        // BPF_PROG_LOAD with no attributes.
        call("bpf", libc::syscall(libc::SYS_bpf, 5, 0, 0));
        call(
            "kexec_load",
            libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0),
        );
    }
}

#[test]
fn an_added_capability_gets_the_syscalls_it_exists_for() {
    require_root!();
    let script = "unshare -m true && echo unshared; mount -t tmpfs none /mnt && echo mounted";
    // Refused by the default profile without CAP_SYS_ADMIN…
    let out = sh(script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("unshared") && !stdout.contains("mounted"),
        "{stdout}"
    );
    // …allowed with it, as Docker's profile does.
    let mut b = sh(script);
    b.cap_add(Capability::CAP_SYS_ADMIN);
    assert_eq!(stdout_of(&mut b), "unshared\nmounted\n");
}

#[test]
fn capabilities_can_be_dropped_and_added() {
    require_root!();
    let keys = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];
    let mut b = sh("cat /proc/self/status");
    b.cap_drop_all();
    let fields = status_fields(&mut b, &keys);
    for key in keys {
        assert_eq!(field(&fields, key), "0000000000000000", "{key}");
    }

    let mut b = sh("cat /proc/self/status");
    b.cap_drop(Capability::CAP_KILL)
        .cap_add(Capability::CAP_NET_ADMIN);
    let fields = status_fields(&mut b, &keys);
    let eff = u64::from_str_radix(field(&fields, "CapEff"), 16).unwrap();
    let docker = u64::from_str_radix(DOCKER_CAPS, 16).unwrap();
    let expected = (docker & !Capability::CAP_KILL.bitmask()) | Capability::CAP_NET_ADMIN.bitmask();
    assert_eq!(eff, expected, "{eff:x}");
    assert_eq!(field(&fields, "CapBnd"), field(&fields, "CapEff"));
}

#[test]
fn ping_works_without_net_raw_through_ping_group_range() {
    require_root!();
    let host_range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    let lines = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("probe "))
            .map(str::to_owned)
            .collect()
    };

    // The default sandbox (its own network namespace, no NET_RAW): no raw socket, but an ICMP
    // echo through a datagram socket, as `ping` does (`icmp(7)`).
    let out = stdout_of(&mut probe("probe_icmp_echo"));
    let eperm = libc::EPERM;
    assert_eq!(
        lines(&out),
        [
            format!("probe CapEff {DOCKER_CAPS}"),
            "probe range 0 2147483647".to_owned(),
            format!("probe raw -1 {eperm}"),
            "probe echo reply".to_owned(),
        ],
        "{out}"
    );

    // In a user namespace the range is the mapped extent: ids outside it would be refused.
    let map = palisade::IdMap::new([palisade::IdMapping::new(0, 100_000, 65_536)]).unwrap();
    let mut b = probe("probe_icmp_echo");
    b.uid_map(map.clone()).gid_map(map);
    let out = stdout_of(&mut b);
    let got = lines(&out);
    assert!(got.contains(&"probe range 0 65535".to_owned()), "{out}");
    assert_eq!(got.last().unwrap(), "probe echo reply", "{out}");

    // The control: in the host's namespace, whose range (here) lets no group open ICMP datagram
    // sockets, the same probe cannot ping.
    if host_range.split_whitespace().collect::<Vec<_>>() == ["1", "0"] {
        let mut b = probe("probe_icmp_echo");
        b.network(palisade::netns::Network::host());
        let out = stdout_of(&mut b);
        let got = lines(&out);
        assert!(got.last().unwrap().starts_with("probe echo -1"), "{out}");
    }

    // The sysctl is the sandbox namespace's: the host's is untouched.
    let after = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    assert_eq!(after, host_range);
}

/// Runs only inside a sandbox: prints `probe CapEff HEX`, `probe range LOW HIGH`, the result of
/// opening a raw ICMP socket (`probe raw RET ERRNO`), and `probe echo reply` once an ICMP echo
/// to 127.0.0.1 through a datagram socket is answered (or `probe echo -1 ERRNO`).
#[test]
#[ignore = "run inside a sandbox by ping_works_without_net_raw_through_ping_group_range"]
fn probe_icmp_echo() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    println!();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    println!("probe CapEff {}", caps.split_whitespace().nth(1).unwrap());
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap();
    println!(
        "probe range {}",
        range.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap();
    // SAFETY: socket(2) with plain values; the descriptor is closed at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    if raw >= 0 {
        println!("probe raw {raw} 0");
        // SAFETY: our own descriptor.
        unsafe { libc::close(raw) };
    } else {
        println!("probe raw -1 {}", errno());
    }
    // SAFETY: socket(2) with plain values.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
    if fd < 0 {
        println!("probe echo -1 {}", errno());
        return;
    }
    // An echo request: type 8, code 0; the kernel fills in the identifier and the checksum.
    let request = [8u8, 0, 0, 0, 0, 0, 0, 1, b'p', b'a', b'l'];
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    let mut reply = [0u8; 64];
    // SAFETY: the buffers and the address live on this stack for the calls.
    let got = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        let sent = libc::sendto(
            fd,
            request.as_ptr().cast(),
            request.len(),
            0,
            (&dst as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if sent < 0 {
            sent
        } else {
            libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0)
        }
    };
    if got > 0 && reply[0] == 0 {
        println!("probe echo reply");
    } else {
        println!("probe echo {got} {}", errno());
    }
}

#[test]
fn rlimits_apply_to_the_command() {
    require_root!();
    let mut b = sh("ulimit -n; ulimit -Hn; ulimit -c");
    b.rlimit("nofile=100:200".parse().unwrap())
        .rlimit("core=0".parse().unwrap());
    assert_eq!(stdout_of(&mut b), "100\n200\n0\n");
}

/// A directory holding a copy of this test binary, owned by root with the setuid bit, as
/// `pal-suid`.
fn setuid_copy(dir: &TempDir) -> PathBuf {
    let exe = dir.path().join("pal-suid");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    dir.path().to_owned()
}

#[test]
fn a_non_root_user_cannot_gain_privileges_through_setuid_binaries() {
    require_root!();
    let dir = TempDir::new("suid");
    // Mounted without `nosuid`, as volumes are.
    let bin = setuid_copy(&dir);
    let run = |no_new_privs: bool| {
        let mut b = Sandbox::builder("/mnt/pal-suid");
        b.args([
            "--exact",
            "probe_ids",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PALISADE_PROBE", "1")
        .volume(&bin, "/mnt", Access::ReadOnly)
        .user(1000, 1000)
        .no_new_privs(no_new_privs);
        let out = stdout_of(&mut b);
        out.lines()
            .find_map(|l| l.strip_prefix("ids "))
            .unwrap_or_else(|| panic!("no ids in {out}"))
            .to_owned()
    };
    // uid euid gid egid CapEff
    assert_eq!(run(true), "1000 1000 1000 1000 0000000000000000");
    // The control: without no_new_privs the same binary does make its caller root.
    let without = run(false);
    assert!(without.starts_with("1000 0 1000 1000 "), "{without}");
}

#[test]
fn a_non_root_user_gets_only_the_capabilities_added_for_it() {
    require_root!();
    let keys = [
        "Uid", "Gid", "Groups", "CapPrm", "CapEff", "CapBnd", "CapAmb",
    ];
    let mut b = sh("cat /proc/self/status");
    b.user(1000, 1000).groups([1000, 2000]);
    let fields = status_fields(&mut b, &keys);
    assert_eq!(field(&fields, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(field(&fields, "Gid"), "1000\t1000\t1000\t1000");
    assert_eq!(field(&fields, "Groups"), "1000 2000");
    assert_eq!(field(&fields, "CapEff"), "0000000000000000");
    assert_eq!(field(&fields, "CapBnd"), DOCKER_CAPS);

    let mut b = sh("cat /proc/self/status");
    b.user(1000, 1000).cap_add(Capability::CAP_NET_BIND_SERVICE);
    let fields = status_fields(&mut b, &keys);
    let bind = format!("{:016x}", Capability::CAP_NET_BIND_SERVICE.bitmask());
    assert_eq!(field(&fields, "CapEff"), bind);
    assert_eq!(field(&fields, "CapAmb"), bind);
}

/// Runs only inside a sandbox: prints `ids UID EUID GID EGID CAPEFF`.
#[test]
#[ignore = "run inside a sandbox by a_non_root_user_cannot_gain_privileges_through_setuid_binaries"]
fn probe_ids() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    // The test harness has printed the test's name without a line break.
    println!();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    // SAFETY: getters with no failure mode.
    let ids = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    println!("ids {} {} {} {} {cap_eff}", ids.0, ids.1, ids.2, ids.3);
}

#[test]
fn the_notify_supervisor_answers_a_filtered_syscall() {
    require_root!();
    let mut profile = Profile::new(Action::Allow);
    for name in ["mknod", "mknodat"] {
        profile.add(Rule::new(name, Action::UserNotify));
    }
    let run = |response: Response| {
        let mut b = Sandbox::builder("busybox");
        b.args(["mknod", "/tmp/pal-fifo", "p"])
            .seccomp(profile.clone())
            .stderr(Stdio::piped());
        let mut child = b.spawn().unwrap();
        let listener = child.take_seccomp_listener().expect("a listener");
        assert!(child.take_seccomp_listener().is_none());
        let supervisor = std::thread::spawn(move || {
            let n = listener.recv().unwrap();
            let nr = n.data.nr as libc::c_long;
            assert!(nr == libc::SYS_mknod || nr == libc::SYS_mknodat, "{nr}");
            assert!(listener.id_valid(n.id));
            listener.respond(n.id, response).unwrap();
            n.pid
        });
        let out = child.wait_with_output().unwrap();
        let pid = supervisor.join().unwrap();
        assert_ne!(pid, 0);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(Response::Errno(libc::EROFS));
    assert!(!ok && stderr.contains("Read-only file system"), "{stderr}");
    let (ok, stderr) = run(Response::Continue);
    assert!(ok, "{stderr}");
    let (ok, stderr) = run(Response::Value(0));
    assert!(ok, "{stderr}");
}

#[test]
fn json_profiles_load_and_bad_ones_get_typed_errors() {
    require_root!();
    let json = r#"{
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
        ]
    }"#;
    let dir = TempDir::new("profile");
    let path = dir.path().join("profile.json");
    std::fs::write(&path, json).unwrap();
    let profile = Profile::from_json_file(&path, &JsonOptions::default()).unwrap();
    let mut b = sh("mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touched");
    b.seccomp(profile);
    let out = stdout_of(&mut b);
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("rc=1") && out.ends_with("touched\n"), "{out}");

    let err = Profile::from_json(
        r#"{"defaultAction": "SCMP_ACT_NOPE"}"#,
        &JsonOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("SCMP_ACT_NOPE"), "{err}");
    let err = Profile::from_json("{", &JsonOptions::default()).unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[test]
fn a_user_the_sandbox_cannot_become_is_a_typed_error_before_the_clone() {
    require_root!();
    // In a user namespace that maps only root, uid 1000 does not exist: setresuid(2) in the
    // child would fail with EINVAL. `build` sees it first and names the missing mapping.
    let mut b = sh("true");
    b.rootless().user(1000, 1000);
    let err = b.spawn().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unmapped {
                kind: "uid",
                id: 1000,
                map: "uid_map",
                ..
            }
        ),
        "{err}"
    );
}

/// Changed only by a sandboxed command reaching into this process's memory.
static CANARY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0x1111);

#[test]
fn a_command_that_may_trace_the_init_cannot_reach_the_callers_memory() {
    require_root!();
    // With CAP_SYS_PTRACE (which also lets the default profile allow ptrace(2)) the command may
    // trace the init. An init sharing the caller's memory (`CLONE_VM`) would hand it this
    // process; the init is a program of its own instead, where the address means nothing (the
    // attack in full is in tests/escapes/init.rs).
    let addr = &CANARY as *const _ as usize;
    let mut b = probe("probe_poke_init");
    b.env("PALISADE_POKE_ADDR", addr.to_string())
        .cap_add(Capability::CAP_SYS_PTRACE);
    let out = stdout_of(&mut b);
    assert!(
        !out.contains("\nattach "),
        "the probe could not trace the init: {out}"
    );
    assert_eq!(CANARY.load(std::sync::atomic::Ordering::SeqCst), 0x1111);
}

/// Runs only inside a sandbox: attaches to the init (PID 1) and writes into it at
/// `PALISADE_POKE_ADDR`, printing `poked` on success.
#[test]
#[ignore = "run inside a sandbox by a_command_that_may_trace_the_init_cannot_reach_the_callers_memory"]
fn probe_poke_init() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    println!();
    let addr: usize = std::env::var("PALISADE_POKE_ADDR")
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: ptrace(2) on another process; nothing in this process's memory is written.
    unsafe {
        if libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0) == -1 {
            println!("attach {}", std::io::Error::last_os_error());
            return;
        }
        let mut status = 0;
        libc::waitpid(1, &mut status, libc::__WALL);
        let poked = libc::ptrace(libc::PTRACE_POKEDATA, 1, addr, 0x2222usize);
        let err = std::io::Error::last_os_error();
        libc::ptrace(libc::PTRACE_DETACH, 1, 0, 0);
        if poked == 0 {
            println!("poked");
        } else {
            println!("poke {err}");
        }
    }
}

/// The `run` example, which `cargo test` builds beside the test binaries.
fn run_example(args: &[&str]) -> String {
    let exe = std::env::current_exe().unwrap();
    let run = exe.parent().unwrap().join("../examples/run");
    assert!(
        run.exists(),
        "{} is missing: `cargo test` builds the examples with the tests",
        run.display()
    );
    let out = std::process::Command::new(&run)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_run_example_is_confined_by_default_and_takes_dockers_flags() {
    require_root!();
    let status = "grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '; ulimit -n";
    let default = run_example(&["--", "sh", "-c", status]);
    let default_nofile = default.lines().last().unwrap().to_owned();
    assert_eq!(
        default,
        format!(
            "Uid: 0 0 0 0\nCapEff: {DOCKER_CAPS}\nNoNewPrivs: 1\nSeccomp: 2\n{default_nofile}\n"
        )
    );
    let changed = run_example(&[
        "--user",
        "1000:1000",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "no-new-privileges=false",
        "--ulimit",
        "nofile=64:128",
        "--",
        "sh",
        "-c",
        status,
    ]);
    assert_eq!(
        changed,
        "Uid: 1000 1000 1000 1000\nCapEff: 0000000000000000\nNoNewPrivs: 0\nSeccomp: 0\n64\n"
    );
}
