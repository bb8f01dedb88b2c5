//! Sandboxes against the real kernel. Most tests need root (creating namespaces other than a user
//! namespace needs CAP_SYS_ADMIN); they skip with a reason on stderr when not root, and fail
//! instead when PALISADE_NO_SKIP is set (as CI does).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use common::{sh, stdout_of};
use palisade::ns::{pidfd_open, NsFile, NsId};
use palisade::{
    ChildStep, Error, IdMap, IdMapping, Namespace, Offset, Sandbox, Signal, Stdio, TimeOffsets,
};
use palisade_test_support::{require_root, run_ignored_test_as, TempDir};

/// Asserts that `err` is a child-side failure at `step`.
fn assert_step(err: &Error, step: ChildStep) {
    assert!(
        matches!(err, Error::Child { step: s, .. } if *s == step),
        "expected a failure to {step}, got: {err}"
    );
}

/// Asserts that `err` rejects the builder argument `what` before anything was spawned.
fn assert_invalid(err: &Error, what: &str) {
    assert!(
        matches!(err, Error::InvalidValue { what: w, .. } if *w == what),
        "expected an invalid {what}, got: {err}"
    );
}

#[test]
fn hostname_and_pid_under_init() {
    require_root!();
    let out = stdout_of(sh("hostname; echo $$").hostname("box"));
    assert_eq!(out, "box\n2\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host.trim(), "box", "the host's hostname must not change");
}

#[test]
fn command_is_pid_1_without_init() {
    require_root!();
    assert_eq!(stdout_of(sh("echo $$").init(false)), "1\n");
}

#[test]
fn pid_namespace_hides_host_processes() {
    require_root!();
    let out = stdout_of(&mut sh("ls /proc | grep -E '^[0-9]+$'; cat /proc/1/comm"));
    let mut lines: Vec<&str> = out.lines().collect();
    let init_comm = lines.pop().unwrap();
    assert_eq!(init_comm, "palisade-init");
    let pids: Vec<u32> = lines.iter().map(|l| l.parse().unwrap()).collect();
    // init, sh, ls, grep: a handful of small pids, none of them ours.
    assert!(pids.len() <= 5, "{pids:?}");
    assert!(pids.iter().all(|&p| p <= 5), "{pids:?}");
}

#[test]
fn ipc_namespace_hides_host_segments() {
    require_root!();
    // SAFETY: creating a private SysV shared memory segment; removed below.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0);
    let host_view = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    let inside = stdout_of(&mut sh("cat /proc/sysvipc/shm"));
    // SAFETY: removing the segment created above.
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let has_id = |text: &str| {
        text.lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
    };
    assert!(has_id(&host_view), "host should list segment {id}");
    assert!(
        !has_id(&inside),
        "sandbox lists host segment {id}:\n{inside}"
    );
}

#[test]
fn mounts_stay_inside_the_sandbox() {
    require_root!();
    let dir = TempDir::new("mnt");
    let target = dir.path().display().to_string();
    // With the host's mounts (a private copy), the host's directory is the mount point.
    let out = stdout_of(
        sh(&format!(
            "mount -t tmpfs palisade-test {target} && echo hi > {target}/f && cat {target}/f && grep -c palisade-test /proc/self/mountinfo"
        ))
        .host_mounts()
        // mount(2) needs CAP_SYS_ADMIN; with it, the default profile allows the call.
        .cap_add(palisade::Capability::CAP_SYS_ADMIN),
    );
    assert_eq!(out, "hi\n1\n");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(&target),
        "the sandbox's mount leaked to the host"
    );
    assert!(!dir.path().join("f").exists());
}

/// The identity of a sandbox's namespace, seen from its first process (the init). The init
/// itself stays in the caller's time namespace; its children, the command included, are in the
/// sandbox's, which `time_for_children` names.
fn sandbox_ns(pid: u32, kind: Namespace) -> NsId {
    if kind != Namespace::TIME {
        return NsId::of(pid as i32, kind).unwrap();
    }
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(format!("/proc/{pid}/ns/time_for_children")).unwrap();
    NsId {
        kind,
        dev: meta.dev(),
        ino: meta.ino(),
    }
}

/// A sandbox that sleeps until killed, for inspecting its namespaces.
fn sleeper(b: &mut palisade::SandboxBuilder) -> palisade::Child {
    b.stdin(Stdio::piped()).spawn().expect("spawn sleeper")
}

#[test]
fn two_sandboxes_have_distinct_namespaces_and_setns_joins_them() {
    require_root!();
    let namespaces = Namespace::all() - Namespace::USER;
    let a = sleeper(Sandbox::builder("cat").namespaces(namespaces));
    let b = sleeper(Sandbox::builder("cat").namespaces(namespaces));
    let me = std::process::id() as libc::pid_t;
    for kind in namespaces.kinds() {
        let (ia, ib) = (sandbox_ns(a.id(), kind), sandbox_ns(b.id(), kind));
        assert_ne!(ia, ib, "{kind} shared between two sandboxes");
        assert_ne!(
            ia,
            NsId::of(me, kind).unwrap(),
            "{kind} shared with the host"
        );
    }

    // Join by namespace file, one kind at a time, in a thread of our own.
    let a_pid = a.id() as i32;
    std::thread::spawn(move || {
        for kind in [Namespace::NET, Namespace::UTS, Namespace::IPC] {
            NsFile::open(a_pid, kind).unwrap().setns().unwrap();
            let now = NsFile::open_current(kind).unwrap().id().unwrap();
            assert_eq!(now, NsId::of(a_pid, kind).unwrap());
        }
    })
    .join()
    .unwrap();

    // Join several kinds at once by pidfd.
    let b_pid = b.id() as i32;
    let pidfd = pidfd_open(b_pid).unwrap();
    std::thread::spawn(move || {
        let kinds = Namespace::NET | Namespace::UTS | Namespace::IPC;
        palisade::ns::setns(std::os::fd::AsFd::as_fd(&pidfd), kinds).unwrap();
        for kind in kinds.kinds() {
            let now = NsFile::open_current(kind).unwrap().id().unwrap();
            assert_eq!(now, NsId::of(b_pid, kind).unwrap());
        }
    })
    .join()
    .unwrap();
}

fn status_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn uid_map_shows_root_inside_and_the_mapped_uid_outside() {
    require_root!();
    let map = IdMap::new([IdMapping::new(0, 100_000, 65_536)]).unwrap();
    let mut child = Sandbox::builder("sh")
        .args(["-c", "id -u; id -g; cat /proc/self/uid_map; read x"])
        .uid_map(map.clone())
        .gid_map(map)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    assert_eq!(lines, ["0", "0", "0 100000 65536"]);
    // Outside, the sandbox's processes run as the mapped uid.
    assert_eq!(status_uid(child.id()), 100_000);
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn init_reaps_orphans() {
    require_root!();
    // The inner shell exits at once, orphaning its background sleep to PID 1, the init.
    let out = stdout_of(&mut sh(
        "sh -c 'sleep 0.1 & exit 0'; sleep 0.8; grep -h '^State:' /proc/[0-9]*/status",
    ));
    assert!(!out.contains("zombie"), "unreaped orphan:\n{out}");
}

#[test]
fn init_forwards_sigterm_and_reports_the_commands_status() {
    require_root!();
    let mut child =
        sh("trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    child.signal(Signal::SIGTERM).unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

#[test]
fn a_signal_death_is_reported_as_a_signal_with_and_without_init() {
    require_root!();
    // Under init the command is PID 2 and may kill itself; the init reports the signal.
    let status = sh("kill -KILL $$").status().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    // As PID 1 it may not (pid_namespaces(7)): the signal is dropped and the script goes on.
    let status = sh("kill -KILL $$; exit 4").init(false).status().unwrap();
    assert_eq!(status.code(), Some(4), "{status}");
    let mut child = sleeper(&mut Sandbox::builder("cat"));
    child.signal(Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    assert_eq!(status.shell_code(), 137);
}

#[test]
fn missing_program_is_a_typed_error() {
    require_root!();
    let err = Sandbox::builder("palisade-no-such-program")
        .spawn()
        .unwrap_err();
    match &err {
        Error::Child {
            step: ChildStep::Exec,
            source,
            ..
        } => assert_eq!(source.raw_os_error(), Some(libc::ENOENT)),
        other => panic!("unexpected error: {other}"),
    }
    assert!(
        err.to_string().contains("palisade-no-such-program"),
        "{err}"
    );
    let dir = TempDir::new("noexec");
    let file = dir.path().join("not-executable");
    std::fs::write(&file, "data").unwrap();
    let err = Sandbox::builder(&file)
        .volume(
            dir.path(),
            dir.path(),
            palisade::overlay::rootfs::Access::ReadOnly,
        )
        .spawn()
        .unwrap_err();
    assert_step(&err, ChildStep::Exec);
    assert_eq!(err.errno(), Some(libc::EACCES));
}

#[test]
fn bad_working_directory_is_a_typed_error() {
    require_root!();
    let err = Sandbox::builder("true")
        .current_dir("/palisade/no/such/dir")
        .spawn()
        .unwrap_err();
    assert_step(&err, ChildStep::Chdir);
    assert!(err.to_string().contains("/palisade/no/such/dir"), "{err}");
    assert_eq!(err.errno(), Some(libc::ENOENT));
}

#[test]
fn invalid_arguments_are_rejected_before_spawning() {
    let err = Sandbox::builder("true")
        .arg("nul\0byte")
        .build()
        .unwrap_err();
    assert_invalid(&err, "argument");
    let err = Sandbox::builder("").build().unwrap_err();
    assert_invalid(&err, "program");
    let err = Sandbox::builder("true")
        .env("A=B", "c")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
    let err = Sandbox::builder("true")
        .namespaces(Namespace::PID)
        .hostname("x")
        .build()
        .unwrap_err();
    assert_invalid(&err, "hostname");
    let err = IdMap::parse("0 1000 10\n5 2000 1").unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
}

#[test]
fn environment_working_directory_and_stdin() {
    require_root!();
    let out = stdout_of(
        Sandbox::builder("sh")
            .args(["-c", "env | sort; pwd"])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("GREETING", "hello")
            .current_dir("/etc"),
    );
    assert_eq!(out, "GREETING=hello\nPATH=/usr/bin:/bin\nPWD=/etc\n/etc\n");

    let mut child = Sandbox::builder("tr")
        .args(["a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"sandboxed\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"SANDBOXED\n");
}

#[test]
fn time_namespace_offsets_apply_with_and_without_init() {
    require_root!();
    let ten_days = 10 * 86_400;
    for init in [true, false] {
        let out = stdout_of(
            Sandbox::builder("cat")
                .arg("/proc/uptime")
                .time_offsets(TimeOffsets::both(Offset::secs(ten_days)))
                .init(init),
        );
        let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
        assert!(uptime >= ten_days as f64, "init={init}: uptime {uptime}");
    }
    // The command is in the sandbox's time namespace, the init stays outside (see `sandbox_ns`).
    let mut child = Sandbox::builder("sh")
        .args(["-c", "readlink /proc/self/ns/time; read x"])
        .namespaces(Sandbox::DEFAULT_NAMESPACES | Namespace::TIME)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sandbox_time = sandbox_ns(child.id(), Namespace::TIME);
    assert_eq!(line.trim(), sandbox_time.to_string());
    assert_ne!(
        sandbox_time,
        NsId::of(std::process::id() as i32, Namespace::TIME).unwrap()
    );
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn try_wait_and_kill_on_drop() {
    require_root!();
    let mut child = sleeper(&mut Sandbox::builder("cat"));
    assert_eq!(child.try_wait().unwrap(), None);
    let pid = child.id();
    drop(child);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "killed and reaped on drop"
    );
}

#[test]
fn a_sandbox_outlives_the_thread_that_spawned_it() {
    require_root!();
    // A thread pool's thread (tokio's spawn_blocking) retires at will: the sandbox follows the
    // caller process, not the thread (the process's death is in tests/escapes/lifetime.rs).
    // Without an init, nothing but the thread can be followed (`SandboxBuilder::die_with_parent`).
    let mut child = std::thread::spawn(|| Sandbox::builder("sleep").arg("100").spawn().unwrap())
        .join()
        .unwrap();
    let mut pfd = libc::pollfd {
        fd: child.pidfd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a pidfd polls readable when the process exits.
    let ready = unsafe { libc::poll(&mut pfd, 1, 500) };
    assert_eq!(ready, 0, "the sandbox died with its spawning thread");
    child.signal(Signal::SIGKILL).unwrap();
    assert!(child.wait().unwrap().signal().is_some());
}

#[test]
fn a_prepared_sandbox_spawns_many_times() {
    require_root!();
    let sandbox = Sandbox::builder("true").build().unwrap();
    for _ in 0..20 {
        assert!(sandbox.spawn().unwrap().wait().unwrap().success());
    }
}

#[test]
fn rootless_as_an_unprivileged_user() {
    require_root!();
    let (passed, text) = run_ignored_test_as(
        64_000,
        "rootless_inner",
        &[("PALISADE_ROOTLESS_INNER", "1")],
    );
    assert!(passed, "{text}");
}

/// Runs only as the unprivileged user set up by `rootless_as_an_unprivileged_user`.
#[test]
#[ignore = "run by rootless_as_an_unprivileged_user"]
fn rootless_inner() {
    assert!(std::env::var_os("PALISADE_ROOTLESS_INNER").is_some());
    // SAFETY: getters with no failure mode.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    assert_ne!(uid, 0, "must run unprivileged");

    let out = stdout_of(
        Sandbox::builder("sh")
            .args(["-c", "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; hostname; echo $$"])
            .rootless()
            .hostname("rootless-box"),
    );
    let words: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        words,
        [
            "0".to_string(),
            "0".into(),
            format!("0 {uid} 1"),
            format!("0 {gid} 1"),
            "deny".into(),
            "rootless-box".into(),
            "2".into()
        ]
    );

    // A map the kernel refuses an unprivileged writer gets a typed error naming the file.
    let err = Sandbox::builder("true")
        .uid_map(IdMap::new([IdMapping::new(0, 0, 1)]).unwrap())
        .spawn()
        .unwrap_err();
    match &err {
        Error::Namespace(e) => {
            assert!(e.to_string().contains("uid_map"), "{e}");
            assert_eq!(e.errno(), Some(libc::EPERM), "{e}");
        }
        other => panic!("unexpected error: {other}"),
    }
    // Its user namespace denies setgroups(2), so supplementary groups are refused up front.
    let err = Sandbox::builder("true")
        .rootless()
        .groups([0])
        .spawn()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "supplementary groups",
                ..
            }
        ),
        "{err}"
    );
    // Without a user namespace an unprivileged user cannot create the others.
    let err = Sandbox::builder("true").spawn().unwrap_err();
    assert_eq!(err.errno(), Some(libc::EPERM), "{err}");
}

#[test]
fn concurrent_spawns_from_many_threads() {
    require_root!();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let out = Sandbox::builder("echo")
                        .arg(i.to_string())
                        .output()
                        .unwrap();
                    assert_eq!(out.stdout, format!("{i}\n").as_bytes());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn the_fork_like_clone_path_works_too() {
    require_root!();
    // What architectures without the CLONE_VM path, and kernels without clone3, use.
    let fork = |b: &mut palisade::SandboxBuilder| {
        b.share_memory(false);
        stdout_of(b)
    };
    assert_eq!(
        fork(sh("hostname; echo $$").hostname("forked")),
        "forked\n2\n"
    );
    assert_eq!(fork(sh("echo $$").init(false)), "1\n");
    assert_eq!(
        fork(sh("id -u; cat /proc/self/uid_map").rootless())
            .lines()
            .next(),
        Some("0")
    );
    let err = Sandbox::builder("palisade-no-such-program")
        .share_memory(false)
        .spawn()
        .unwrap_err();
    assert_step(&err, ChildStep::Exec);
    // Not `cat`: `wait` closes its stdin, and it could exit on that before the init has
    // forwarded the signal.
    let mut child = Sandbox::builder("sleep")
        .arg("1000")
        .share_memory(false)
        .spawn()
        .unwrap();
    child.signal(Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(15));
}

#[test]
fn network_none_host_and_join() {
    require_root!();
    use palisade::netns::Network;
    // none: only the loopback interface, and it is up (IFF_UP is bit 0 of its flags).
    let out = stdout_of(&mut sh("ls /sys/class/net; cat /sys/class/net/lo/flags"));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"));
    let flags = u32::from_str_radix(lines.next().unwrap().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down");
    // host: the host's interfaces.
    let host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let out = stdout_of(sh("ls /sys/class/net").network(Network::host()));
    for name in &host {
        assert!(out.lines().any(|l| l == name), "{name} missing: {out}");
    }
    // join: a second sandbox in the first one's network namespace.
    let mut first = sh("readlink /proc/self/ns/net; exec sleep 30")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ns = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut ns)
        .unwrap();
    let joined =
        stdout_of(sh("readlink /proc/self/ns/net").network(Network::join_pid(first.id() as i32)));
    assert_eq!(joined, ns);
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(ns.trim(), own.to_string_lossy());
    first.signal(Signal::SIGKILL).unwrap();
    first.wait().unwrap();
    // Joining something that is not a network namespace is refused before the spawn.
    let err = sh("true")
        .network(Network::join_path("/proc/self/ns/uts"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Network(_)), "{err}");
}

#[test]
fn sysctls_are_set_in_the_sandboxs_own_namespaces_only() {
    require_root!();
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shmmni = std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let forward = if host_forward.trim() == "1" { "0" } else { "1" };
    let mut b = common::sh(
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni \
         /proc/sys/net/ipv4/ping_group_range | tr -s '\\t' ' '",
    );
    b.sysctl("net.ipv4.ip_forward", forward)
        .sysctl("kernel/shmmni", "1234")
        .sysctl("net.ipv4.ping_group_range", "0 0");
    let out = common::stdout_of(&mut b);
    assert_eq!(out, format!("{forward}\n1234\n0 0\n"));
    // The host's own are untouched.
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        host_shmmni
    );
    // What would change the host is refused before anything runs.
    for (key, namespaces) in [
        ("kernel.panic", Sandbox::DEFAULT_NAMESPACES),
        ("vm.swappiness", Sandbox::DEFAULT_NAMESPACES),
        ("net.ipv4.ip_forward", Namespace::MOUNT | Namespace::PID),
        ("kernel.shmmni", Namespace::MOUNT | Namespace::PID),
        ("net..x", Sandbox::DEFAULT_NAMESPACES),
        ("../../etc/passwd", Sandbox::DEFAULT_NAMESPACES),
    ] {
        let err = common::sh("true")
            .namespaces(namespaces)
            .sysctl(key, "1")
            .build()
            .unwrap_err();
        assert!(
            matches!(err, palisade::Error::InvalidValue { what: "sysctl", .. }),
            "{key}: {err}"
        );
    }
    // A value the kernel refuses names the parameter.
    let err = common::sh("true")
        .sysctl("net.ipv4.ip_forward", "not-a-number")
        .spawn()
        .unwrap_err();
    assert!(
        matches!(
            err,
            palisade::Error::Child {
                step: palisade::ChildStep::Sysctl,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("ip_forward"), "{err}");
}

#[test]
fn a_sandbox_joins_anothers_user_namespace_and_makes_its_own_in_it() {
    require_root!();
    // A pod's user namespace, root mapped to 100000, as a Kubernetes pod without host users.
    let map = IdMap::new([IdMapping::new(0, 100_000, 65_536)]).unwrap();
    let mut first = sh("exec sleep 300")
        .uid_map(map.clone())
        .gid_map(map.clone())
        .spawn()
        .unwrap();
    let command = first.command_id();
    let ns = format!("/proc/{command}/ns/user");
    let link = |path: &str| std::fs::read_link(path).unwrap().display().to_string();
    // Its hostname and /proc need privilege over its UTS, mount and PID namespaces: those it
    // made in the joined one.
    let mut second = sh(
        "readlink /proc/self/ns/user; id -u; cat /proc/self/uid_map; \
         readlink /proc/self/ns/net; hostname; cat /proc/1/comm; grep Groups /proc/self/status; \
         read x",
    );
    second.join_namespace(&ns).hostname("pal-joined-user");
    // The namespaces it gets new are made in the joined one, not by the clone: still its own.
    let made = second.build().unwrap().namespaces();
    assert!(
        made.contains(Namespace::NET | Namespace::MOUNT | Namespace::PID),
        "{made:?}"
    );
    assert!(!made.contains(Namespace::USER), "{made:?}");
    // This thread holds a supplementary group (per thread: the raw setgroups(2), not libc's,
    // which would change every thread's), which nothing in the sandbox may keep.
    let group = [rustix::process::Gid::from_raw(4242)];
    rustix::thread::set_thread_groups(&group).unwrap();
    // The control: a plain child of this thread has it.
    let plain = std::process::Command::new("grep")
        .args(["Groups", "/proc/self/status"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains("4242"),
        "{plain:?}"
    );
    let spawned = second.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
    rustix::thread::set_thread_groups(&[]).unwrap();
    let mut child = spawned.unwrap();
    // Its first process's parent, while its command waits on stdin.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let parent = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .to_owned();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{out}");
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], link(&ns), "{out}");
    assert_eq!(lines[1], "0", "{out}");
    assert_eq!(lines[2], "0 100000 65536", "{out}");
    assert_ne!(lines[3], link(&format!("/proc/{command}/ns/net")), "{out}");
    assert_eq!(lines[4], "pal-joined-user", "{out}");
    // A PID namespace of its own, its init the first process there, and the caller's child:
    // its parent, read while the command runs, is this process (the pidfd wait above would
    // fail for another's child).
    assert_eq!(lines[5], "palisade-init", "{out}");
    assert_eq!(parent, std::process::id().to_string(), "{out}");
    // None of the caller's supplementary groups came along.
    assert_eq!(lines[6], "Groups:", "{out}");
    // A command run in such a sandbox later is its root too, without the caller's groups.
    let mut third = sh("exec sleep 300");
    third.join_namespace(&ns);
    let mut third = third.spawn().unwrap();
    rustix::thread::set_thread_groups(&group).unwrap();
    let out = third
        .exec("sh")
        .args([
            "-c",
            "id -u; grep Groups /proc/self/status; readlink /proc/self/ns/user",
        ])
        .output();
    rustix::thread::set_thread_groups(&[]).unwrap();
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, ["0", "Groups:", &link(&ns)], "{out:?}");
    third.signal(palisade::Signal::SIGKILL).unwrap();
    third.wait().unwrap();
    // Id maps of its own with a joined user namespace: refused before anything runs.
    let err = sh("true")
        .join_namespace(&ns)
        .uid_map(map.clone())
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "namespace to join",
                ..
            }
        ),
        "{err}"
    );
    first.signal(palisade::Signal::SIGKILL).unwrap();
    first.wait().unwrap();
}

#[test]
fn a_sandbox_joins_anothers_pid_and_time_namespaces_by_path() {
    require_root!();
    let ten_days = 10 * 86_400;
    // The pod's first sandbox: a PID namespace of its own and a clock ten days ahead.
    let mut first = sh("exec sleep 300")
        .time_offsets(TimeOffsets::both(Offset::secs(ten_days)))
        .spawn()
        .unwrap();
    let command = first.command_id();
    let ns = |kind: &str| format!("/proc/{command}/ns/{kind}");
    let link = |kind: &str| std::fs::read_link(ns(kind)).unwrap().display().to_string();
    let mut second = sh(
        "readlink /proc/self/ns/pid /proc/self/ns/time; cat /proc/uptime; \
         for p in /proc/[0-9]*; do cat $p/comm; done",
    );
    second.join_namespace(ns("pid")).join_namespace(ns("time"));
    let for_children = || std::fs::read_link("/proc/thread-self/ns/pid_for_children").unwrap();
    let before = for_children();
    let out = stdout_of(&mut second);
    // The spawning thread's children are born in its own namespace again.
    assert_eq!(for_children(), before);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], link("pid"), "{out}");
    assert_eq!(lines[1], link("time"), "{out}");
    let uptime: f64 = lines[2].split_whitespace().next().unwrap().parse().unwrap();
    assert!(uptime >= ten_days as f64, "uptime {uptime}");
    // Its own /proc is that namespace's: the first sandbox's processes are in it.
    assert!(lines[3..].contains(&"sleep"), "{out}");
    assert!(lines[3..].contains(&"palisade-init"), "{out}");
    // The second's init is no PID 1 there, and its end took nothing else with it.
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first sandbox was killed"
    );
    assert!(std::path::Path::new(&format!("/proc/{command}")).exists());
    // Offsets of its own with a joined time namespace: refused before anything runs.
    let err = sh("true")
        .join_namespace(ns("time"))
        .time_offsets(TimeOffsets::both(Offset::secs(1)))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "namespace to join",
                ..
            }
        ),
        "{err}"
    );
    first.signal(palisade::Signal::SIGKILL).unwrap();
    first.wait().unwrap();
}

#[test]
fn a_sandbox_joins_anothers_ipc_and_uts_namespaces_by_path() {
    require_root!();
    // The pod's first sandbox, whose namespaces the second shares.
    let mut first = sh("exec sleep 300");
    first.hostname("pal-pod");
    let mut first = first.spawn().unwrap();
    let ns = |kind: &str| format!("/proc/{}/ns/{kind}", first.id());
    let link = |kind: &str| std::fs::read_link(ns(kind)).unwrap().display().to_string();
    let mut second = sh("hostname; readlink /proc/self/ns/ipc /proc/self/ns/uts /proc/self/ns/net");
    second.join_namespace(ns("ipc")).join_namespace(ns("uts"));
    let out = stdout_of(&mut second);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pal-pod", "{out}");
    assert_eq!(lines[1], link("ipc"));
    assert_eq!(lines[2], link("uts"));
    // Its other namespaces are still its own.
    assert_ne!(lines[3], link("net"));
    // A hostname with a joined UTS namespace, a kind that cannot be joined, twice one kind,
    // and a file that is no namespace: refused before anything runs.
    for (paths, what) in [
        (vec![ns("uts")], "hostname"),
        (vec![ns("mnt")], "namespace to join"),
        (vec![ns("net")], "namespace to join"),
        (vec![ns("ipc"), ns("ipc")], "namespace to join"),
    ] {
        let mut b = sh("true");
        b.hostname("other");
        for p in &paths {
            b.join_namespace(p);
        }
        let err = b.build().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidValue { what: w, .. } if *w == what),
            "{paths:?}: {err}"
        );
    }
    let err = sh("true")
        .join_namespace("/etc/hostname")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Namespace(_)), "{err}");
    first.signal(palisade::Signal::SIGKILL).unwrap();
    first.wait().unwrap();
}
