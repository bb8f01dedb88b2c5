//! Running further commands in a running sandbox (`docker exec`), against the real kernel: the
//! command sees the sandbox's hostname, PID namespace, files, cgroup and privileges, and no
//! more than the sandbox's command may.

mod common;

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
    child.kill(Signal::SIGKILL).unwrap();
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
    child.kill(Signal::SIGKILL).unwrap();
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
    inner.kill(Signal::SIGKILL).unwrap();
    inner.wait().unwrap();
    child.kill(Signal::SIGKILL).unwrap();
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
    sleeper.kill(Signal::SIGTERM).unwrap();
    assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGTERM));
    child.kill(Signal::SIGKILL).unwrap();
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
    child.kill(Signal::SIGKILL).unwrap();
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
    child.kill(Signal::SIGKILL).unwrap();
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
    child.kill(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}
