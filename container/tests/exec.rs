//! Running further commands in a running sandbox (`docker exec`), against the real kernel: the
//! command sees the sandbox's hostname, PID namespace, files, cgroup and privileges, and no
//! more than the sandbox's command may.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use common::sh;
use palisade::{ChildStep, Error, Sandbox, Signal, TerminalSize};
use palisade_test_support::require_root;

/// A sandbox that marks its start in `/tmp/marker` and then sleeps, spawned and waited for
/// until the marker is there.
fn running(builder: &mut palisade::SandboxBuilder) -> palisade::Child {
    let child = builder.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = child.exec("cat").arg("/tmp/marker").output().unwrap();
        if out.status.success() {
            return child;
        }
        assert!(Instant::now() < deadline, "the sandbox never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stdout_of(exec: &mut palisade::Exec<'_>) -> String {
    let out = exec.output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The lines of `/proc/self/status` that tell a process's privileges.
const PRIVILEGES: &str =
    "grep -E '^(Uid|Gid|CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status";

#[test]
fn an_exec_joins_the_sandbox_and_holds_no_more_than_its_command() {
    require_root!();
    let mut b = sh(&format!(
        "echo started > /tmp/marker; {PRIVILEGES} > /tmp/privileges; \
         cat /proc/self/cgroup > /tmp/cgroup; exec sleep 60"
    ));
    b.hostname("pal-exec")
        .memory_max(palisade::Bytes::mib(64))
        .current_dir("/tmp");
    let mut child = running(&mut b);
    // The hostname, the files of its root, and its PID namespace: its init is PID 1 there.
    let out = stdout_of(
        child
            .exec("sh")
            .args(["-c", "hostname; cat /tmp/marker; cat /proc/1/comm; echo $$"]),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["pal-exec", "started", "palisade-init"],
        "{out}"
    );
    let pid: i32 = lines[3].parse().unwrap();
    assert!(
        pid > 1 && pid < 100,
        "a pid of the sandbox's namespace: {pid}"
    );
    // The same cgroup and the same privileges as the sandbox's command.
    let mine = stdout_of(child.exec("cat").arg("/proc/self/cgroup"));
    let its = stdout_of(child.exec("cat").arg("/tmp/cgroup"));
    assert_eq!(mine, its);
    let mine = stdout_of(child.exec("sh").args(["-c", PRIVILEGES]));
    let its = stdout_of(child.exec("cat").arg("/tmp/privileges"));
    assert_eq!(mine, its);
    assert!(
        mine.contains("NoNewPrivs:\t1") && mine.contains("Seccomp:\t2"),
        "{mine}"
    );
    // The working directory is the command's unless given.
    assert_eq!(stdout_of(&mut child.exec("pwd")), "/tmp\n");
    // The environment is the command's, with the exec's edits; the working directory is given.
    let out = stdout_of(
        child
            .exec("sh")
            .args(["-c", "echo $HOSTNAME $PAL_X; pwd"])
            .env("PAL_X", "x")
            .current_dir("/etc"),
    );
    assert_eq!(out, "pal-exec x\n/etc\n");
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exec_of_a_user_sandbox_runs_as_its_user_and_cannot_regain_capabilities() {
    require_root!();
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    b.user(1000, 1000);
    let mut child = running(&mut b);
    let out = stdout_of(child.exec("sh").args(["-c", PRIVILEGES]));
    assert!(out.contains("Uid:\t1000\t1000\t1000\t1000"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    // The attack: become root again inside (no capability, no_new_privs, the filter).
    let out = child
        .exec("sh")
        .args([
            "-c",
            "su -c id root 2>&1 || echo refused; cat /etc/shadow 2>&1 || echo denied",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("uid=0"), "{text}");
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn exec_failures_are_typed_errors() {
    require_root!();
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    let mut child = running(&mut b);
    match child.exec("/pal-missing").spawn() {
        Err(Error::Child {
            step: ChildStep::Exec,
            source,
            ..
        }) => assert_eq!(source.raw_os_error(), Some(libc::ENOENT)),
        other => panic!("expected an exec failure, got {other:?}"),
    }
    match child.exec("true").current_dir("/pal-missing").spawn() {
        Err(Error::Child {
            step: ChildStep::Chdir,
            ..
        }) => {}
        other => panic!("expected a chdir failure, got {other:?}"),
    }
    // A terminal is the exec's whole stdio, as for the sandbox's command.
    let refused = child
        .exec("true")
        .tty_size(TerminalSize::default())
        .stdout(palisade::Stdio::piped())
        .spawn();
    assert!(matches!(
        refused,
        Err(Error::InvalidValue { what: "tty", .. })
    ));
    // An exec's own handle is no sandbox to exec into.
    let mut inner = child.exec("sleep").arg("60").spawn().unwrap();
    assert!(matches!(
        inner.exec("true").spawn(),
        Err(Error::InvalidValue { what: "exec", .. })
    ));
    inner.signal(Signal::SIGKILL).unwrap();
    inner.wait().unwrap();
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    // A sandbox that has ended takes no more commands.
    assert!(matches!(
        child.exec("true").spawn(),
        Err(Error::NotRunning { .. })
    ));
    let mut done = Sandbox::builder("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(
        done.exec("true").spawn(),
        Err(Error::NotRunning { .. })
    ));
    done.wait().unwrap();
}

#[test]
fn an_exec_can_have_a_terminal_and_be_waited_for_and_killed() {
    require_root!();
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    let mut child = running(&mut b);
    let mut exec = child
        .exec("sh")
        .args(["-c", "tty; exit 5"])
        .tty_size(TerminalSize { rows: 20, cols: 60 })
        .spawn()
        .unwrap();
    let pty = exec.take_pty().unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    loop {
        match pty.read(&mut buf).unwrap() {
            0 => break,
            n => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        String::from_utf8_lossy(&out).contains("/dev/pts/"),
        "{out:?}"
    );
    assert_eq!(exec.wait().unwrap().code(), Some(5));
    // Killed from outside, as any child.
    let mut sleeper = child.exec("sleep").arg("60").spawn().unwrap();
    sleeper.signal(Signal::SIGTERM).unwrap();
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGTERM));
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exec_into_a_rootless_sandbox_is_root_of_its_user_namespace() {
    require_root!();
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    b.rootless().hostname("pal-rootless");
    let mut child = running(&mut b);
    let out = stdout_of(
        child
            .exec("sh")
            .args(["-c", "id -u; hostname; readlink /proc/self/ns/user"]),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["0", "pal-rootless"], "{out}");
    // The sandbox's user namespace (its init's is not readable: it is not dumpable).
    let sandbox_userns = palisade::ns::NsId::of(child.id() as i32, palisade::Namespace::USER)
        .unwrap()
        .to_string();
    assert_eq!(lines[2], sandbox_userns, "{out}");
    assert_ne!(
        lines[2],
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .to_string_lossy(),
        "not the caller's"
    );
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exec_gets_none_of_the_callers_descriptors() {
    require_root!();
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    let mut child = running(&mut b);
    // A descriptor of the caller's that is not close-on-exec, on a directory of the host.
    // SAFETY: open(2) of a static path; the descriptor is closed below.
    let opened = unsafe { libc::open(c"/etc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    // Moved well above what `ls` opens itself; F_DUPFD leaves it inheritable.
    // SAFETY: fcntl(2) on our own descriptor, then close(2) of the original.
    let leaked = unsafe { libc::fcntl(opened, libc::F_DUPFD, 200) };
    // SAFETY: as above.
    unsafe { libc::close(opened) };
    assert!(leaked >= 200);
    let out = stdout_of(child.exec("ls").arg("/proc/self/fd"));
    let fds: Vec<i32> = out.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(
        !fds.contains(&leaked),
        "{fds:?} holds the caller's {leaked}"
    );
    // Control: stdio is there.
    assert!(fds.starts_with(&[0, 1, 2]), "{fds:?}");
    // SAFETY: our own descriptor.
    unsafe { libc::close(leaked) };
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exec_may_run_as_another_user_or_with_fewer_capabilities_never_more() {
    use palisade::{Capabilities, Capability};
    require_root!();
    let mut child = running(&mut sh("echo started > /tmp/marker; exec sleep 60"));
    let status = |exec: &mut palisade::Exec<'_>| -> String {
        stdout_of(exec.args(["-c", "grep -E '^(Uid|CapEff|CapBnd):' /proc/self/status"]))
    };
    let command = status(&mut child.exec("sh"));
    let bounding = command
        .lines()
        .find(|l| l.starts_with("CapBnd"))
        .unwrap()
        .to_owned();
    // Another user: its ids, no capability, the same bounding set.
    let as_user = status(child.exec("sh").user(1000, 1000));
    assert!(
        as_user.contains("Uid:\t1000\t1000\t1000\t1000"),
        "{as_user}"
    );
    assert!(as_user.contains("CapEff:\t0000000000000000"), "{as_user}");
    assert!(as_user.contains(&bounding), "{as_user}");
    // Fewer capabilities: exactly those, bounding set included.
    let chown: Capabilities = [Capability::CAP_CHOWN].into_iter().collect();
    let fewer = status(child.exec("sh").capabilities(chown));
    assert!(fewer.contains("CapEff:\t0000000000000001"), "{fewer}");
    assert!(fewer.contains("CapBnd:\t0000000000000001"), "{fewer}");
    // As another user, kept.
    let both = status(child.exec("sh").user(1000, 1000).capabilities(chown));
    assert!(both.contains("CapEff:\t0000000000000001"), "{both}");
    // More than the sandbox's command holds: refused before anything runs.
    let admin: Capabilities = [Capability::CAP_SYS_ADMIN].into_iter().collect();
    let err = child.exec("true").capabilities(admin).output().unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "capabilities of an exec",
                ..
            }
        ),
        "{err}"
    );
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

/// The host's static busybox copied to a directory of the test's own under the host's `/tmp`,
/// which a sandbox never sees (its `/tmp` is a tmpfs of its own): a program only the host has.
fn host_only_busybox(dir: &palisade_test_support::TempDir, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join("pal-busybox");
    std::fs::copy("/usr/bin/busybox", &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn an_exec_runs_a_sealed_copy_of_a_program_of_the_callers() {
    require_root!();
    let dir = palisade_test_support::TempDir::new("exec-fd");
    let busybox = host_only_busybox(&dir, 0o755);
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    b.hostname("pal-fd");
    let mut child = running(&mut b);
    let host_path = busybox.display().to_string();
    // Positive control: the program is nowhere in the sandbox by its path.
    let err = child.exec(&busybox).output().unwrap_err();
    assert!(
        matches!(&err, Error::Child { step: ChildStep::Exec, source, .. }
            if source.raw_os_error() == Some(libc::ENOENT)),
        "{err}"
    );
    let script = format!(
        "hostname; readlink /proc/self/exe; ls -l /proc/self/fd/; \
         test -e {host_path} && echo visible || echo hidden; {PRIVILEGES}"
    );
    for opened in [
        std::fs::File::open(&busybox).unwrap(),
        // O_PATH, which cannot be read: reopened for the copy.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&busybox)
            .unwrap(),
    ] {
        // busybox picks its applet by argv[0], which is the exec's program name.
        let out = stdout_of(child.exec("sh").program_fd(opened).args(["-c", &script]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "pal-fd", "{out}");
        // What the sandbox reaches through /proc/<pid>/exe: the sealed copy, never the file.
        assert!(lines[1].starts_with("/memfd:palisade-exec"), "{out}");
        assert!(out.contains("hidden"), "{out}");
        // Only stdio and the directory `ls` opened: no copy of the program is left open.
        let fds = out
            .lines()
            .filter(|l| l.contains(" -> ") && l.contains("memfd"))
            .count();
        assert_eq!(fds, 0, "{out}");
        // The sandbox command's privileges.
        let its = stdout_of(child.exec("sh").args(["-c", PRIVILEGES]));
        assert!(out.ends_with(&its), "{out}\nvs\n{its}");
    }
    // Fewer capabilities than the command, as for any exec.
    let chown: palisade::Capabilities = [palisade::Capability::CAP_CHOWN].into_iter().collect();
    let out = stdout_of(
        child
            .exec("sh")
            .program_fd(std::fs::File::open(&busybox).unwrap())
            .capabilities(chown)
            .args(["-c", "grep CapEff /proc/self/status"]),
    );
    assert_eq!(out, "CapEff:\t0000000000000001\n");
    // With a terminal, as any exec.
    let mut exec = child
        .exec("tty")
        .program_fd(std::fs::File::open(&busybox).unwrap())
        .tty_size(TerminalSize::default())
        .spawn()
        .unwrap();
    let pty = exec.take_pty().unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let n @ 1.. = pty.read(&mut buf).unwrap() {
        out.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&out).contains("/dev/pts/"),
        "{out:?}"
    );
    assert!(exec.wait().unwrap().success());
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn a_program_by_descriptor_is_refused_unless_an_executable_it_may_run() {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let dir = palisade_test_support::TempDir::new("exec-fd-refused");
    let mut child = running(&mut sh("echo started > /tmp/marker; exec sleep 60"));
    let refused = |exec: &mut palisade::Exec<'_>, want: &str| {
        let err = exec.output().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidValue { what, reason, .. }
                if *what == "program descriptor" && reason.contains(want)),
            "{err}"
        );
    };
    // A script: its interpreter would be the sandbox's, and it would have to stay open there.
    let script = dir.path().join("pal-hook.sh");
    std::fs::write(&script, "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused(
        child
            .exec("pal-hook")
            .program_fd(std::fs::File::open(&script).unwrap()),
        "script",
    );
    // Not executable by the caller: the kernel would refuse it too (EACCES).
    let plain = host_only_busybox(&dir, 0o644);
    // Root may execute a file with any execute bit (`access(2)`): none here.
    refused(
        child
            .exec("true")
            .program_fd(std::fs::File::open(&plain).unwrap()),
        "not executable",
    );
    // Not a regular file.
    refused(
        child
            .exec("true")
            .program_fd(std::fs::File::open("/").unwrap()),
        "regular file",
    );
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn a_setuid_program_by_descriptor_grants_nothing() {
    require_root!();
    let dir = palisade_test_support::TempDir::new("exec-fd-setuid");
    // Owned by root, set-user-ID: executed as such, it would make its caller root.
    let busybox = host_only_busybox(&dir, 0o4755);
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    b.user(1000, 1000).no_new_privs(false);
    let mut child = running(&mut b);
    let out = stdout_of(
        child
            .exec("sh")
            .program_fd(std::fs::File::open(&busybox).unwrap())
            .args([
                "-c",
                "grep -E '^(Uid|NoNewPrivs|CapEff):' /proc/self/status; \
                 stat -L -c %a /proc/self/exe",
            ]),
    );
    // The program it runs has no set-user-ID bit; the host's file has.
    let mode = u32::from_str_radix(out.lines().last().unwrap(), 8).unwrap();
    assert_eq!(mode & 0o6000, 0, "{out}");
    let host = std::os::unix::fs::PermissionsExt::mode(&busybox.metadata().unwrap().permissions());
    assert_eq!(host & 0o4000, 0o4000);
    assert!(out.contains("Uid:\t1000\t1000\t1000\t1000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exec_gets_the_descriptors_it_is_given_and_no_others() {
    require_root!();
    let mut child = running(&mut sh("echo started > /tmp/marker; exec sleep 60"));
    let (mut r, w) = std::io::pipe().unwrap();
    let out = stdout_of(
        child
            .exec("sh")
            .args(["-c", "echo pal-via-fd >&7; ls /proc/self/fd"])
            .inherit_fd(7, w),
    );
    let mut got = String::new();
    std::io::Read::read_to_string(&mut r, &mut got).unwrap();
    assert_eq!(got, "pal-via-fd\n");
    let fds: Vec<i32> = out.lines().filter_map(|l| l.parse().ok()).collect();
    // stdio, 7, and the directory `ls` reads (the lowest free number).
    assert_eq!(fds, [0, 1, 2, 3, 7], "{out}");
    for bad in [2, 65537] {
        let err = child
            .exec("true")
            .inherit_fd(bad, std::fs::File::open("/dev/null").unwrap())
            .output()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidValue {
                    what: "descriptor number of an exec",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn an_exec_narrows_groups_limits_and_no_new_privs_never_widens() {
    use palisade::{Capability, Rlimit, RlimitResource};
    require_root!();
    let status = |exec: &mut palisade::Exec<'_>| -> String {
        stdout_of(exec.args([
            "-c",
            "grep -E '^(Groups|NoNewPrivs):' /proc/self/status; \
             grep 'Max open files' /proc/self/limits",
        ]))
    };
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    b.no_new_privs(false)
        .groups([77])
        .rlimit(Rlimit::new(RlimitResource::Nofile, 100, 200));
    let mut child = running(&mut b);
    let command = status(&mut child.exec("sh"));
    assert!(command.contains("Groups:\t77 \n"), "{command}");
    assert!(command.contains("NoNewPrivs:\t0"), "{command}");
    let nofile = |s: &str| -> Vec<String> {
        let line = s.lines().find(|l| l.starts_with("Max open files")).unwrap();
        line.split_whitespace()
            .skip(3)
            .take(2)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(nofile(&command), ["100", "200"], "{command}");
    // Narrowed: other groups (the command holds CAP_SETGID), lower limits, no_new_privs.
    let narrowed = status(
        child
            .exec("sh")
            .user(1000, 1000)
            .groups([1234, 5678])
            .rlimit(Rlimit::new(RlimitResource::Nofile, 50, 100))
            .no_new_privs(true),
    );
    assert!(narrowed.contains("Groups:\t1234 5678 \n"), "{narrowed}");
    assert!(narrowed.contains("NoNewPrivs:\t1"), "{narrowed}");
    assert_eq!(nofile(&narrowed), ["50", "100"], "{narrowed}");
    // A hard limit above the sandbox's: refused before anything runs.
    let err = child
        .exec("true")
        .rlimit(Rlimit::new(RlimitResource::Nofile, 100, 300))
        .output()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "rlimit of an exec",
                ..
            }
        ),
        "{err}"
    );
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();

    // Without CAP_SETGID, the command's own groups only.
    let mut b = sh("echo started > /tmp/marker; exec sleep 60");
    b.cap_drop(Capability::CAP_SETGID).groups([77]);
    let mut child = running(&mut b);
    let own = status(child.exec("sh").groups([77]));
    assert!(own.contains("Groups:\t77 \n"), "{own}");
    let err = child.exec("true").groups([0, 78]).output().unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidValue {
                what: "supplementary groups of an exec",
                ..
            }
        ),
        "{err}"
    );
    // An exec cannot lift the command's no_new_privs.
    let kept = status(child.exec("sh").no_new_privs(false));
    assert!(kept.contains("NoNewPrivs:\t1"), "{kept}");
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}
