//! Waiting with a timeout, the sandbox's wall-clock limit, and killing, against the real kernel.
//! They need root (namespaces); they skip with a reason on stderr when not root, and fail
//! instead when PALISADE_NO_SKIP is set (as CI does).
//!
//! No assertion is about how long anything took: a deadline is only ever checked to have been
//! enforced (the status says so, and no process of the sandbox is left).

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use common::{detached, sh, Cleanup};
use palisade::{Namespace, Sandbox, Signal, Stdio};
use palisade_test_support::{require_root, TempDir};

/// The pids (in our namespace) of `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                let children = std::fs::read_to_string(task.path().join("children"));
                all.extend(
                    children
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    all
}

/// Waits (10 s at most, a guard against a hang, not a measurement) until `pid`'s tree has at
/// least `n` processes, and returns pidfds of them all, so that they can be checked later
/// without mistaking a reused pid for one of them.
fn pidfds_of_tree(pid: u32, n: usize) -> Vec<OwnedFd> {
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = tree(pid);
        if pids.len() >= n {
            return pids
                .into_iter()
                .filter_map(|p| palisade::ns::pidfd_open(p as i32).ok())
                .collect();
        }
        assert!(
            Instant::now() < give_up,
            "the sandbox never had {n} processes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process of `pidfd` has exited, waiting up to 10 s for it (a process killed by
/// `cgroup.kill` dies asynchronously).
fn exits(pidfd: &OwnedFd) -> bool {
    exits_within(pidfd, 10)
}

/// Whether the process of `pidfd` has exited, waiting up to `seconds` for it.
fn exits_within(pidfd: &OwnedFd, seconds: i64) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let limit = rustix::event::Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&limit)) == Ok(1)
}

#[test]
fn a_sandbox_past_its_timeout_is_killed_with_every_process_in_it() {
    require_root!();
    // Two sleeps in the background, which the init would have to reap as orphans.
    let mut b = sh("sleep 100 & sleep 100 & wait");
    b.timeout(Duration::from_secs(1));
    let mut child = b.spawn().unwrap();
    // The init, the shell and its two sleeps.
    let pidfds = pidfds_of_tree(child.id(), 4);
    assert!(pidfds.len() >= 4);
    // Positive control: they run until the deadline.
    assert!(pidfds
        .iter()
        .all(|fd| !palisade::ns::pidfd_exited(fd.as_fd())));
    let status = child.wait().unwrap();
    assert!(status.timed_out(), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(status.exit_ok().unwrap_err().timed_out());
    // PID 1 of the namespace is gone, and the kernel took every other process with it.
    for fd in &pidfds {
        assert!(palisade::ns::pidfd_exited(fd.as_fd()), "a process survived");
    }
}

#[test]
fn a_sandbox_without_a_pid_namespace_is_killed_through_its_cgroup() {
    require_root!();
    let mut b = sh("sleep 100 & sleep 100 & wait");
    b.namespaces(Sandbox::DEFAULT_NAMESPACES - Namespace::PID)
        .cgroup(true)
        .timeout(Duration::from_secs(1));
    let mut child = b.spawn().unwrap();
    // The shell and its two sleeps, which would outlive the shell's death.
    let pidfds = pidfds_of_tree(child.id(), 3);
    let status = child.wait().unwrap();
    assert!(status.timed_out(), "{status}");
    // (Their pids stay charged to the group until whoever adopted the orphans reaps them, so
    // the group's counters would race; their pidfds tell.)
    for fd in &pidfds {
        assert!(exits(fd), "a process of the cgroup survived");
    }
}

#[test]
fn a_command_without_an_init_is_killed_at_its_deadline() {
    require_root!();
    let mut b = Sandbox::builder("sleep");
    b.arg("100").init(false).timeout(Duration::from_millis(300));
    let status = b.status().unwrap();
    assert!(status.timed_out(), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn a_fast_command_is_not_timed_out() {
    require_root!();
    let mut b = sh("echo fast");
    b.timeout(Duration::from_secs(60));
    let out = b.output().unwrap();
    assert_eq!(out.stdout, b"fast\n");
    assert!(
        out.status.success() && !out.status.timed_out(),
        "{}",
        out.status
    );
    assert!(out.status.exit_ok().is_ok());
}

#[test]
fn output_ends_at_the_deadline_with_what_was_written() {
    require_root!();
    // The sleep holds stdout open: without the kill, reading it would never end.
    let mut b = sh("echo started; sleep 100");
    b.timeout(Duration::from_secs(1));
    let out = b.output().unwrap();
    assert!(out.status.timed_out(), "{}", out.status);
    assert_eq!(out.stdout, b"started\n");
}

#[test]
fn try_wait_past_the_deadline_kills_the_sandbox() {
    require_root!();
    let mut b = Sandbox::builder("sleep");
    b.arg("100").timeout(Duration::from_millis(100));
    let mut child = b.spawn().unwrap();
    // The deadline counts from the spawn, so it has passed by the time this sleep ends.
    std::thread::sleep(Duration::from_millis(200));
    let status = child.try_wait().unwrap().expect("killed at the deadline");
    assert!(status.timed_out(), "{status}");
}

#[test]
fn wait_timeout_returns_none_then_the_status() {
    require_root!();
    let mut child = sh("read line; exit 7")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // It waits for a line that has not come: still running after the timeout, and untouched.
    assert_eq!(
        child.wait_timeout(Duration::from_millis(100)).unwrap(),
        None
    );
    assert_eq!(child.try_wait().unwrap(), None);
    assert!(!palisade::ns::pidfd_exited(child.pidfd()));
    // The stdin stayed open across the waits: the line still reaches it.
    use std::io::Write;
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let status = child
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("it exited");
    assert_eq!(status.code(), Some(7));
    assert!(!status.timed_out());
    // Waited for: the status stays.
    assert_eq!(child.wait_timeout(Duration::ZERO).unwrap(), Some(status));
}

/// The pids of the processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .collect()
}

#[test]
fn a_detached_sandbox_is_killed_at_its_deadline_by_its_init() {
    require_root!();
    let root = TempDir::new("state");
    let _cleanup = Cleanup(&root, "pal-deadline");
    // A length of sleep no other test runs, to find it in /proc.
    let command = ["sleep", "1237"];
    let mut b = Sandbox::builder(command[0]);
    b.arg(command[1])
        .cgroup(true)
        .timeout(Duration::from_millis(300));
    let mut h = detached(&root, "pal-deadline", &mut b);
    // Nothing waits, yet it stops: the pidfd shows it within a guard of a minute (the sleep
    // would run for 20), a check that the init kept the deadline, not a measurement.
    let pidfd = h.pidfd().expect("it runs").try_clone_to_owned().unwrap();
    assert!(exits_within(&pidfd, 60), "still running past its deadline");
    let status = h.wait().unwrap().expect("the init reports the status");
    assert!(status.timed_out(), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(status.cpu_time().is_some(), "the init's report: {status:#}");
    // The same from a handle opened afterwards.
    let again = Sandbox::open_in(root.path(), "pal-deadline").unwrap();
    assert!(again.state().exit.is_some_and(|e| e.timed_out()));
    // Nothing of it is left: no sleep, an empty group, removed with the sandbox.
    assert_eq!(processes_running(&command), Vec::<u32>::new());
    let group = h.cgroup().expect("its cgroup");
    assert_eq!(group.procs().unwrap(), Vec::<i32>::new());
    let dirs = h.state().cgroup.clone();
    h.delete().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn a_detached_sandbox_that_ends_before_its_deadline_is_not_timed_out() {
    require_root!();
    let root = TempDir::new("state");
    let _cleanup = Cleanup(&root, "pal-in-time");
    let mut b = sh("exit 3");
    b.timeout(Duration::from_secs(60));
    let mut h = detached(&root, "pal-in-time", &mut b);
    let status = h.wait().unwrap().expect("the init reports the status");
    assert_eq!(status.code(), Some(3), "{status}");
    assert!(!status.timed_out(), "{status}");
    h.delete().unwrap();
}

/// A `Child` nobody waits on is killed by its init at the deadline, and its later wait says so.
#[test]
fn a_sandbox_nobody_waits_on_is_killed_by_its_init() {
    require_root!();
    let mut b = Sandbox::builder("sleep");
    b.arg("100").timeout(Duration::from_millis(300));
    let mut child = b.spawn().unwrap();
    // No wait of the handle's: the pidfd shows the init's exit, within a guard of a minute.
    let pidfd = child.pidfd().try_clone_to_owned().unwrap();
    assert!(exits_within(&pidfd, 60), "still running past its deadline");
    let status = child.try_wait().unwrap().expect("it exited");
    assert!(status.timed_out(), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

#[test]
fn a_handles_wait_timeout_returns_none_then_the_status() {
    require_root!();
    let root = TempDir::new("state");
    let _cleanup = Cleanup(&root, "pal-wait-timeout");
    let mut b = Sandbox::builder("sleep");
    b.arg("100");
    let mut h = detached(&root, "pal-wait-timeout", &mut b);
    // Still running after the timeout, and untouched.
    assert_eq!(h.wait_timeout(Duration::from_millis(100)).unwrap(), None);
    assert!(h.pidfd().is_some_and(|fd| !palisade::ns::pidfd_exited(fd)));
    h.signal(Signal::SIGTERM).unwrap();
    let status = h
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .expect("it stopped");
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(!status.timed_out());
    // Stopped: the status stays.
    assert_eq!(h.wait_timeout(Duration::ZERO).unwrap(), Some(status));
    h.delete().unwrap();
}

#[test]
fn kill_ends_the_sandbox_and_signal_sends_any_signal() {
    require_root!();
    let mut child = Sandbox::builder("sleep").arg("100").spawn().unwrap();
    child.signal(palisade::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(!status.timed_out());
    // Once waited for, both do nothing.
    child.kill().unwrap();
    child.signal(palisade::Signal::SIGKILL).unwrap();

    let mut child = sh("sleep 100 & sleep 100 & wait").spawn().unwrap();
    let pidfds = pidfds_of_tree(child.id(), 4);
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    for fd in &pidfds {
        assert!(palisade::ns::pidfd_exited(fd.as_fd()), "a process survived");
    }
}

#[test]
fn the_handle_is_its_pidfd() {
    require_root!();
    let mut child = sh("exit 3").spawn().unwrap();
    let mut fds = [rustix::event::PollFd::new(
        &child,
        rustix::event::PollFlags::IN,
    )];
    // Readable once the sandbox has exited.
    assert_eq!(rustix::event::poll(&mut fds, None), Ok(1));
    assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(3));
}
