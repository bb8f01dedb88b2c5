//! The `tokio` feature against the real kernel, under a multi-threaded runtime: many sandboxes
//! spawned and waited for at once, a wait cut short by a timeout and a kill, piped stdin and
//! stdout, both output pipes filled at once, and spawns or handles dropped half-way. Built only
//! with the feature (`cargo test -p palisade --features tokio --test async`). The tests that
//! spawn need root; they skip with a reason on stderr when not root, and fail instead when
//! PALISADE_NO_SKIP is set (as CI does).

mod common;

use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{group_dirs, host_mounts, sh};
use palisade::tokio::AsyncChild;
use palisade::{Error, Sandbox, Stdio};
use palisade_test_support::require_root;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// Held by the tests that give their sandboxes cgroups. A removed group's name is taken again
/// by this process's next group, so a group is known to be gone only while no other test of
/// this binary makes groups.
static CGROUPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The groups of this process's sandboxes (named `palisade-<pid>-<start time>-<n>`).
fn our_groups() -> Vec<PathBuf> {
    let prefix = format!("palisade-{}-", std::process::id());
    group_dirs(|n| n.starts_with(&prefix))
}

/// Whether the process behind `pidfd` has been reaped: `waitid(P_PIDFD)` finds no child
/// (`ECHILD`) once it has, and reaps nothing itself (`WNOHANG`).
fn reaped(pidfd: &OwnedFd) -> bool {
    // SAFETY: all-zero is a valid `siginfo_t`.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer; the pidfd is open for the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd.as_raw_fd() as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// A pipe whose write end is given to a sandbox as its stdout: reading the other end to its end
/// returns once every process holding the write end has exited.
fn liveness_pipe() -> (pipe::Receiver, Stdio) {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let read = pipe::Receiver::from_owned_fd(read).unwrap();
    (read, Stdio::from(write))
}

/// Reads `pipe` to its end and returns what was read; fails the test (rather than hanging it)
/// if the end does not come within a minute: the sandbox holding the other end was not killed.
async fn read_to_eof(mut pipe: pipe::Receiver) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), pipe.read_to_end(&mut buf)).await;
    read.expect("the sandbox still runs: its stdout stays open")
        .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_sandboxes_at_once() {
    require_root!();
    let _cgroups = CGROUPS.lock().await;
    let mounts = host_mounts();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        // Each with a cgroup of its own: its removal on drop shows that no process was left.
        let spawn = sh(&format!("echo {i}"))
            .stdout(Stdio::piped())
            .cgroup(true)
            .spawn_async();
        tasks.spawn(async move {
            let child = spawn.await?;
            assert!(child.get_ref().cgroup_name().is_some());
            let pidfd = child.as_fd().try_clone_to_owned().unwrap();
            let out = child.wait_with_output().await?;
            Ok::<_, Error>((i, out, pidfd))
        });
    }
    let mut seen = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, out, pidfd) = joined.unwrap().unwrap();
        assert!(
            out.status.success(),
            "sandbox {i}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{i}\n"));
        assert!(reaped(&pidfd), "sandbox {i} was not reaped");
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    assert_eq!(our_groups(), Vec::<PathBuf>::new(), "groups left behind");
    assert_eq!(host_mounts(), mounts, "the host's mount table changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_outlives_its_timeout_and_is_killed() {
    require_root!();
    let _cgroups = CGROUPS.lock().await;
    let mut child = Sandbox::builder("sleep")
        .arg("600")
        .cgroup(true)
        .spawn_async()
        .await
        .unwrap();
    let group = child.get_ref().cgroup_name().unwrap().to_owned();
    let waited = tokio::time::timeout(Duration::from_millis(200), child.wait()).await;
    assert!(waited.is_err(), "sleep 600 ended: {waited:?}");
    // The cancelled wait left the handle as it was.
    assert_eq!(child.try_wait().unwrap(), None);
    let status = child.kill().await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    // Once reaped: the status is kept, and signals do nothing.
    assert_eq!(child.wait().await.unwrap(), status);
    child.start_kill().unwrap();
    let pidfd = child.as_fd().try_clone_to_owned().unwrap();
    drop(child);
    assert!(reaped(&pidfd));
    assert_eq!(
        group_dirs(|n| n == group),
        Vec::<PathBuf>::new(),
        "group left behind"
    );
}

/// The builder's wall-clock limit holds for an async wait as for a blocking one: the sandbox is
/// killed at its deadline and its status says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_wait_kills_the_sandbox_at_its_deadline() {
    require_root!();
    let mut child = Sandbox::builder("sleep")
        .arg("600")
        .timeout(Duration::from_millis(500))
        .spawn_async()
        .await
        .unwrap();
    let pidfd = child.as_fd().try_clone_to_owned().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the wait ends at the sandbox's deadline")
        .unwrap();
    assert!(status.timed_out(), "{status}");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(reaped(&pidfd));
    // Without a limit, the same wait is not cut short.
    let mut child = Sandbox::builder("sleep")
        .arg("600")
        .spawn_async()
        .await
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(700), child.wait()).await;
    assert!(waited.is_err(), "sleep 600 ended: {waited:?}");
    assert!(!child.kill().await.unwrap().timed_out());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trips_through_stdout() {
    require_root!();
    let mut child = Sandbox::builder("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn_async()
        .await
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Far more than a pipe holds (64 KiB): writing and reading must go on together.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let write = async {
        stdin.write_all(&data).await?;
        drop(stdin); // `cat` sees the end of its input
        Ok::<_, std::io::Error>(())
    };
    let mut echoed = Vec::new();
    let read = stdout.read_to_end(&mut echoed);
    tokio::try_join!(write, read).unwrap();
    assert!(
        echoed == data,
        "{} bytes came back of {}",
        echoed.len(),
        data.len()
    );
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_output_reads_both_full_pipes_at_once() {
    require_root!();
    // Both streams written at the same time, each many times what its pipe holds: read one
    // after the other, the writer of the other would block and never exit.
    let out = sh("yes out | head -c 4000000 & yes err | head -c 3000000 >&2; wait")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_async()
        .await
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(out.stdout.len(), 4_000_000);
    assert_eq!(out.stderr.len(), 3_000_000);
    assert!(out.stdout.chunks(4).all(|c| c == b"out\n"));
    assert!(out.stderr.chunks(4).all(|c| c == b"err\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_async_captures_and_reports_failures() {
    require_root!();
    let out = sh("echo hi; echo oops >&2; exit 3")
        .output_async()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"oops\n");
    // A failure in the child comes back as the step that failed, as from the blocking spawn.
    let err = Sandbox::builder("/palisade-no-such-program")
        .spawn_async()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Child { .. }), "{err}");
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sandbox_serves_many_tasks() {
    require_root!();
    let mut builder = sh("echo $$");
    builder.stdout(Stdio::piped());
    let sandbox = std::sync::Arc::new(builder.build().unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let spawn = sandbox.clone().spawn_async();
        tasks.spawn(async move { spawn.await?.wait_with_output().await });
    }
    while let Some(out) = tasks.join_next().await {
        let out = out.unwrap().unwrap();
        // PID 2 each time: the command of a sandbox of its own, under its init.
        assert_eq!(out.stdout, b"2\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_spawn_or_handle_kills_its_sandbox() {
    require_root!();
    // Positive control: while the handle lives, the sandbox runs and its stdout stays open.
    let (read, stdout) = liveness_pipe();
    let child = Sandbox::builder("sleep")
        .arg("600")
        .stdout(stdout)
        .spawn_async()
        .await
        .unwrap();
    let mut read = read;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), read.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the sandbox's stdout closed early: {early:?}"
    );
    // Dropped while it runs: killed and reaped on the blocking pool.
    let pidfd = child.as_fd().try_clone_to_owned().unwrap();
    drop(child);
    assert_eq!(read_to_eof(read).await, b"");
    while !reaped(&pidfd) {
        tokio::task::yield_now().await;
    }

    // A spawn dropped after its first poll: the blocking pool finishes it, then drops it.
    let (read, stdout) = liveness_pipe();
    let spawn = Sandbox::builder("sleep")
        .arg("600")
        .stdout(stdout)
        .spawn_async();
    let mut spawn = Box::pin(spawn);
    // Its first poll hands the spawn to the blocking pool (were it done already, the handle
    // it returned is dropped as above).
    let first = std::future::poll_fn(|cx| Poll::Ready(spawn.as_mut().poll(cx))).await;
    drop(first);
    drop(spawn);
    assert_eq!(read_to_eof(read).await, b"");
}

#[test]
fn outside_a_runtime_the_async_api_fails_instead_of_panicking() {
    // The future is built and polled where no tokio runtime is: polling reports the missing
    // runtime as an error before anything is spawned.
    let spawn = pin!(Sandbox::builder("true").spawn_async());
    match spawn.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(Error::Setup { what, .. })) => assert!(what.contains("tokio"), "{what}"),
        other => panic!("expected a missing runtime, got {other:?}"),
    }
    require_root!();
    // A blocking child handed over outside a runtime: refused, and killed as it is dropped.
    let child = Sandbox::builder("sleep").arg("600").spawn().unwrap();
    let pidfd = child.pidfd().try_clone_to_owned().unwrap();
    match AsyncChild::from_child(child) {
        Err(Error::Setup { what, .. }) => assert!(what.contains("tokio"), "{what}"),
        other => panic!("expected a missing runtime, got {other:?}"),
    }
    assert!(reaped(&pidfd), "the refused child was not reaped");
}
