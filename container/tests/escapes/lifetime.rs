//! The caller's death. A sandbox lives as long as its caller wants it: not a moment less when
//! the thread that spawned it ends, and not a moment more when the caller's process is killed.
//!
//! Also the process helpers the other modules use to bound their waits: a subprocess that
//! overstays is killed through a pidfd, with everything it started.

use palisade_test_support::require_root;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio as StdStdio};
use std::time::{Duration, Instant};

use palisade::{Sandbox, Signal, Stdio};

/// A pidfd of `pid` (`pidfd_open(2)`), or `None` if it is gone.
pub(crate) fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) with plain values.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh descriptor nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends SIGKILL through a pidfd: it reaches that process or none.
pub(crate) fn kill(pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal(2) with a live pidfd and no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Whether the process behind `pidfd` has exited, waiting up to `limit` (a pidfd polls readable
/// when it does, `pidfd_open(2)`).
pub(crate) fn exits_within(pidfd: &OwnedFd, limit: Duration) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one live pollfd.
    let n = unsafe { libc::poll(&mut p, 1, limit.as_millis() as i32) };
    n == 1
}

/// The processes `pid` started, and theirs, as pidfds (`/proc/PID/task/TID/children`).
pub(crate) fn descendants(pid: u32) -> Vec<(u32, OwnedFd)> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            if let Some(fd) = pidfd(child) {
                out.push((child, fd));
                out.extend(descendants(child));
            }
        }
    }
    out
}

/// Runs `cmd` with its output captured. Past `limit` it is killed, and so is everything it
/// started that does not die with it within a few seconds; then the test fails.
pub(crate) fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let child = cmd
        .stdin(StdStdio::null())
        .stdout(StdStdio::piped())
        .stderr(StdStdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Taken before anyone can reap the child, so that a kill can only reach it.
    let fd = pidfd(pid).expect("pidfd of a child not yet waited for");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let started = descendants(pid);
            kill(&fd);
            let out = rx.recv_timeout(Duration::from_secs(5));
            let survivors: Vec<u32> = started
                .iter()
                .filter(|(_, fd)| !exits_within(fd, Duration::from_secs(3)))
                .map(|(pid, fd)| {
                    kill(fd);
                    *pid
                })
                .collect();
            panic!(
                "{cmd:?} did not finish within {limit:?}; killed it, and then these of its \
                 processes, which outlived it: {survivors:?}; its output: {out:?}"
            );
        }
    }
}

/// The command that runs the ignored test `name` of this binary as a subprocess.
pub(crate) fn self_probe(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PALISADE_PROBE_CALLER", "1");
    cmd
}

#[test]
fn a_sandbox_outlives_the_thread_that_spawned_it() {
    require_root!();
    let mut child = std::thread::spawn(|| {
        Sandbox::builder("sleep")
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let status = child.try_wait().unwrap();
    let _ = child.signal(Signal::SIGKILL);
    let _ = child.wait();
    assert_eq!(
        status, None,
        "the sandbox died with the thread that spawned it"
    );
}

/// What `probe_caller_with_a_sandbox` printed: the sandbox's init and the command, and the
/// sandbox's cgroup directories.
pub(crate) struct Orphaned {
    pub caller: std::process::Child,
    pub processes: Vec<(u32, OwnedFd)>,
    pub cgroups: Vec<std::path::PathBuf>,
}

/// Starts `probe_caller_with_a_sandbox` and reads what it reports.
pub(crate) fn start_caller_with_a_sandbox() -> Orphaned {
    let mut cmd = self_probe("lifetime::probe_caller_with_a_sandbox");
    let mut caller = cmd
        .stdin(StdStdio::null())
        .stdout(StdStdio::piped())
        .stderr(StdStdio::null())
        .spawn()
        .unwrap();
    let caller_fd = pidfd(caller.id()).unwrap();
    // The probe ends itself after a while; still, never wait on it unbounded.
    let stdout = caller.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut inits = Vec::new();
    let mut cgroups = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(pid) = line.strip_prefix("init ") {
                    inits.extend(pid.parse::<u32>().ok());
                } else if let Some(dir) = line.strip_prefix("cgroup ") {
                    cgroups.push(dir.into());
                } else if line == "ready" {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    if inits.len() != 2 {
        kill(&caller_fd);
        let _ = caller.wait();
        panic!("the caller did not report its two sandboxes: {inits:?}");
    }
    let mut processes: Vec<(u32, OwnedFd)> = Vec::new();
    for init in inits {
        processes.extend(pidfd(init).map(|fd| (init, fd)));
        processes.extend(descendants(init));
    }
    Orphaned {
        caller,
        processes,
        cgroups,
    }
}

#[test]
fn a_sandbox_dies_with_its_callers_process() {
    require_root!();
    let mut orphaned = start_caller_with_a_sandbox();
    assert!(
        orphaned.processes.len() >= 2,
        "no init and command: {:?}",
        orphaned.processes.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    let caller_fd = pidfd(orphaned.caller.id()).unwrap();
    kill(&caller_fd);
    orphaned.caller.wait().unwrap();
    let survivors: Vec<u32> = orphaned
        .processes
        .iter()
        .filter(|(_, fd)| !exits_within(fd, Duration::from_secs(3)))
        .map(|(pid, fd)| {
            kill(fd);
            *pid
        })
        .collect();
    // The leftover groups are empty now (their processes died or were just killed).
    let _ = exits_within_all(&orphaned.processes);
    for dir in &orphaned.cgroups {
        let _ = std::fs::remove_dir(dir);
    }
    assert!(
        survivors.is_empty(),
        "the sandbox's processes {survivors:?} outlived their caller's SIGKILL"
    );
}

/// Waits (bounded) until every process in `processes` is gone.
pub(crate) fn exits_within_all(processes: &[(u32, OwnedFd)]) -> bool {
    processes
        .iter()
        .all(|(_, fd)| exits_within(fd, Duration::from_secs(3)))
}

/// Runs only as a subprocess of `a_sandbox_dies_with_its_callers_process`: spawns `sleep 300` in
/// a sandbox from a thread that then ends and in one with a cgroup, prints `init PID` for each,
/// one `cgroup DIR` per hierarchy of the second and `ready`, then
/// waits to be killed (ending by itself after a minute).
#[test]
#[ignore = "run as a subprocess by a_sandbox_dies_with_its_callers_process"]
fn probe_caller_with_a_sandbox() {
    assert!(std::env::var_os("PALISADE_PROBE_CALLER").is_some());
    println!();
    // A second sandbox, from a thread that is gone by the time the caller dies: every sandbox
    // of the caller must be told, whichever thread spawned it.
    let other = std::thread::spawn(|| {
        Sandbox::builder("sleep")
            .arg("300")
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    })
    .join()
    .unwrap();
    println!("init {}", other.id());
    let child = Sandbox::builder("sleep")
        .arg("300")
        .cgroup(true)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    println!("init {}", child.id());
    // The group's directory in every hierarchy: /proc/PID/cgroup names it relative to the
    // reader's cgroup namespace (this process's, the host's), and each hierarchy's mount
    // point comes from the mount table.
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        for m in mounts.lines() {
            let fields: Vec<&str> = m.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            let fstype = fields[dash + 1];
            let options = fields.get(dash + 3).copied().unwrap_or("");
            let matches = if controllers.is_empty() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup"
                    && controllers
                        .split(',')
                        .all(|c| options.split(',').any(|o| o == c))
            };
            // Only the sandbox's own groups: in hierarchies where it got none, it sits in
            // this process's group.
            let own = path
                .rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("palisade-"));
            if matches && fields[3] == "/" && own {
                println!("cgroup {}{}", fields[4], path);
            }
        }
    }
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
    let _ = child.signal(Signal::SIGKILL);
}

#[test]
fn the_groups_of_a_killed_caller_are_collected() {
    require_root!();
    let mut orphaned = start_caller_with_a_sandbox();
    assert!(
        !orphaned.cgroups.is_empty(),
        "the caller reported no cgroup"
    );
    for dir in &orphaned.cgroups {
        assert!(dir.is_dir(), "{}", dir.display());
    }
    kill(&pidfd(orphaned.caller.id()).unwrap());
    orphaned.caller.wait().unwrap();
    for (pid, fd) in &orphaned.processes {
        if !exits_within(fd, Duration::from_secs(3)) {
            kill(fd);
            panic!("the sandbox's process {pid} outlived its caller");
        }
    }
    let report = palisade::gc();
    let left: Vec<_> = orphaned.cgroups.iter().filter(|d| d.exists()).collect();
    // Whatever gc did, leave nothing behind.
    for dir in &left {
        let _ = std::fs::remove_dir(dir);
    }
    report.expect("gc");
    assert!(
        left.is_empty(),
        "gc left the dead caller's groups: {left:?}"
    );
}

/// Runs only as a subprocess of `an_exec_dies_with_its_callers_process`: spawns `sleep 300` in a
/// sandbox without a PID namespace (so without an init, whose death would end everything in
/// it), runs a second `sleep 300` in it with `Child::exec`, prints `pid PID` for both and
/// `ready`, then waits to be killed (ending by itself after a minute).
#[test]
#[ignore = "run as a subprocess by an_exec_dies_with_its_callers_process"]
fn probe_caller_with_an_exec() {
    assert!(std::env::var_os("PALISADE_PROBE_CALLER").is_some());
    println!();
    let mut sandbox = Sandbox::builder("sleep");
    sandbox
        .arg("300")
        .namespaces(Sandbox::DEFAULT_NAMESPACES - palisade::Namespace::PID)
        .stdout(Stdio::null());
    let child = sandbox.spawn().unwrap();
    let exec = child
        .exec("sleep")
        .arg("300")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    println!("pid {}", child.id());
    println!("pid {}", exec.id());
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn an_exec_dies_with_its_callers_process() {
    require_root!();
    let mut caller = self_probe("lifetime::probe_caller_with_an_exec")
        .stdin(StdStdio::null())
        .stdout(StdStdio::piped())
        .stderr(StdStdio::null())
        .spawn()
        .unwrap();
    let caller_fd = pidfd(caller.id()).unwrap();
    let mut pids = Vec::new();
    for line in BufReader::new(caller.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(pid) = line.strip_prefix("pid ") {
            pids.push(pid.parse::<u32>().unwrap());
        } else if line == "ready" {
            break;
        }
    }
    let processes: Vec<(u32, OwnedFd)> = pids
        .iter()
        .filter_map(|&pid| pidfd(pid).map(|fd| (pid, fd)))
        .collect();
    kill(&caller_fd);
    caller.wait().unwrap();
    assert_eq!(processes.len(), 2, "the sandbox and its exec: {pids:?}");
    let survivors: Vec<u32> = processes
        .iter()
        .filter(|(_, fd)| !exits_within(fd, Duration::from_secs(3)))
        .map(|(pid, fd)| {
            kill(fd);
            *pid
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "{survivors:?} outlived their caller's SIGKILL (of {pids:?})"
    );
}
