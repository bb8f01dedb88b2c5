//! The docker-like example programs (`run`, `exec`, `ps`, `stop`), driven as a user would drive
//! them: a detached sandbox is started, entered (also on a terminal), listed, stopped and
//! removed, each through the built example binaries, with a state root of the test's own.
//!
//! The binaries are the ones cargo builds next to this test's executable (`cargo test` builds
//! every `[[example]]`; with `--test examples` alone, build them first with
//! `cargo build -p palisade --examples`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::example;
use palisade::Sandbox;
use palisade_test_support::{require_root, TempDir};

/// How long one run of an example may take before the test gives up on it.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The example `name` with its stdio null (run captures stdout and stderr).
fn cmd(name: &str) -> Command {
    let mut c = Command::new(example(name));
    c.stdin(Stdio::null());
    c
}

/// Runs `c` to completion with stdout and stderr captured, writing `input` (after `delay`) to
/// its stdin when given; fails the test past [`TIMEOUT`], killing it.
fn run_with(mut c: Command, input: Option<(Duration, &'static [u8])>) -> Output {
    let what = format!("{c:?}");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    let pid = child.id();
    if let (Some((delay, bytes)), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let _ = stdin.write_all(bytes);
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{what} did not finish within {TIMEOUT:?}");
        }
    }
}

fn run(c: Command) -> Output {
    run_with(c, None)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `out` exited with `code`, showing its output otherwise.
#[track_caller]
fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A name no concurrent test (of this binary or another suite) uses: a named sandbox's cgroup,
/// `palisade-sb-<name>`, is global.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("pal-{tag}-{}-{nanos:x}", std::process::id())
}

/// Removes every sandbox under the state root on drop, whatever the test did. Declared after
/// the root's `TempDir`, so it drops first.
struct Cleanup<'a>(&'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for handle in Sandbox::list_in(self.0).unwrap_or_default() {
            let id = handle.id().to_owned();
            if let Err(e) = handle.force_delete() {
                eprintln!("cleanup of {id}: {e}");
            }
        }
    }
}

/// `ps --root ROOT [-a]`'s line for `name`, if it lists it.
fn ps_line(root: &Path, all: bool, name: &str) -> Option<String> {
    let mut c = cmd("ps");
    c.arg("--root").arg(root);
    if all {
        c.arg("-a");
    }
    let out = run(c);
    assert_code(&out, 0, "ps");
    let listing = text(&out.stdout);
    assert!(
        listing.starts_with("NAME"),
        "ps prints a header: {listing:?}"
    );
    listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(str::to_owned)
}

/// Quotes `s` for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn has_script() -> bool {
    Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_detached_sandbox_is_entered_listed_and_stopped() {
    require_root!();
    let state = TempDir::new("examples");
    let root = state.path();
    let _cleanup = Cleanup(root);
    let name = unique("web");

    // run -d prints the name and leaves the sandbox running.
    let mut c = cmd("run");
    c.arg("--root").arg(root);
    c.args(["-d", "--name", &name, "--", "sleep", "1000"]);
    let out = run(c);
    assert_code(&out, 0, "run -d");
    assert_eq!(text(&out.stdout).trim(), name);

    // exec: the sandbox's hostname (its name) and its own processes, with small pids.
    let mut c = cmd("exec");
    c.arg("--root").arg(root);
    c.args([&name, "--", "sh", "-c", "hostname; ps -e -o pid=,comm="]);
    let out = run(c);
    assert_code(&out, 0, "exec");
    let shown = text(&out.stdout);
    let mut lines = shown.lines();
    assert_eq!(lines.next(), Some(name.as_str()), "{shown}");
    let sleep_pid = lines
        .filter_map(|l| l.split_once("sleep").map(|(pid, _)| pid.trim().to_owned()))
        .next()
        .unwrap_or_else(|| panic!("no sleep among the sandbox's processes: {shown}"));
    let sleep_pid: u32 = sleep_pid.parse().expect("a pid");
    assert!(
        sleep_pid < 10,
        "sleep runs in the sandbox's PID namespace: {shown}"
    );

    // ps lists it running.
    let line = ps_line(root, false, &name).expect("ps lists the sandbox");
    assert!(line.contains("running"), "{line}");

    // exec -it, on a terminal that script(1) provides: the command gets a terminal of the
    // sandbox's own, and its status comes back.
    if has_script() {
        let exec_it = format!(
            "{} --root {} -it {} -- sh",
            quote(&example("exec").to_string_lossy()),
            quote(&root.to_string_lossy()),
            quote(&name)
        );
        let mut c = Command::new("script");
        c.args(["-qec", &exec_it, "/dev/null"]);
        // After a pause, so that the input reaches the sandbox's shell and not the terminal
        // before exec has set it up.
        let out = run_with(c, Some((Duration::from_secs(1), b"tty; exit 3\n")));
        assert_code(&out, 3, "exec -it under script");
        assert!(
            text(&out.stdout).contains("/dev/pts/"),
            "{}",
            text(&out.stdout)
        );
    } else {
        // Said as a skip (a failure where CI forbids skipping), not in passing.
        palisade_test_support::skip("script(1) is missing (util-linux): exec -it not checked");
    }

    // stop removes it: ps -a no longer lists it.
    let mut c = cmd("stop");
    c.arg("--root").arg(root).arg(&name);
    let started = Instant::now();
    let out = run(c);
    assert_code(&out, 0, "stop");
    assert_eq!(text(&out.stdout).trim(), name);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "sleep under the init ends on SIGTERM, before the grace period"
    );
    assert_eq!(ps_line(root, true, &name), None);
    assert!(!root.join(&name).exists(), "its record is gone");
}

#[test]
fn a_foreground_named_sandbox_is_recorded_with_its_status() {
    require_root!();
    let state = TempDir::new("examples");
    let root = state.path();
    let _cleanup = Cleanup(root);

    // --rm: nothing is left once it exits.
    let removed = unique("x");
    let mut c = cmd("run");
    c.arg("--root").arg(root);
    c.args(["--name", &removed, "--rm", "--", "true"]);
    assert_code(&run(c), 0, "run --rm");
    assert!(!root.join(&removed).exists(), "run --rm left a record");
    assert_eq!(ps_line(root, true, &removed), None);

    // Without --rm it stays, stopped, with its exit status, until stop removes it.
    let kept = unique("y");
    let mut c = cmd("run");
    c.arg("--root").arg(root);
    c.args(["--name", &kept, "--", "sh", "-c", "exit 4"]);
    assert_code(&run(c), 4, "run");
    assert_eq!(ps_line(root, false, &kept), None, "ps without -a");
    let line = ps_line(root, true, &kept).expect("ps -a lists it");
    assert!(line.contains("exited (4)"), "{line}");
    let mut c = cmd("stop");
    c.arg("--root").arg(root).arg(&kept);
    let out = run(c);
    assert_code(&out, 0, "stop of a stopped sandbox");
    assert_eq!(ps_line(root, true, &kept), None);

    // -d --rm: the next ps after it exited removes it.
    let gone = unique("z");
    let mut c = cmd("run");
    c.arg("--root").arg(root);
    c.args(["-d", "--rm", "--name", &gone, "--", "true"]);
    assert_code(&run(c), 0, "run -d --rm");
    let deadline = Instant::now() + Duration::from_secs(20);
    while ps_line(root, true, &gone).is_some() {
        assert!(Instant::now() < deadline, "ps never removed {gone}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!root.join(&gone).exists());
}

#[test]
fn bad_usage_is_refused() {
    let state = TempDir::new("examples");
    let root = state.path();
    // Unknown flags are clap's usage errors (exit status 2), never taken for the command.
    for (example, args) in [
        ("run", &["--bogus", "--", "true"][..]),
        ("run", &["--bogus"][..]),
        ("exec", &["--bogus", "pal-none", "--", "true"][..]),
        ("ps", &["--bogus"][..]),
        ("stop", &["--bogus", "pal-none"][..]),
    ] {
        let mut c = cmd(example);
        c.args(args);
        assert_code(&run(c), 2, &format!("{example} {args:?}"));
    }
    // -d cannot attach a terminal or stdin: refused before anything is made.
    for flag in ["-t", "-i", "-it"] {
        let mut c = cmd("run");
        c.arg("--root").arg(root);
        c.args(["-d", flag, "--", "true"]);
        let out = run(c);
        assert_code(&out, 125, &format!("run -d {flag}"));
        assert!(text(&out.stderr).contains("-d"), "{}", text(&out.stderr));
    }
    assert_eq!(std::fs::read_dir(root).unwrap().count(), 0);
    // No such sandbox: docker's 125 for exec, a failure for stop.
    let mut c = cmd("exec");
    c.arg("--root").arg(root).args(["pal-none", "--", "true"]);
    let out = run(c);
    assert_code(&out, 125, "exec of an unknown sandbox");
    assert!(text(&out.stderr).contains("pal-none"));
    let mut c = cmd("stop");
    c.arg("--root").arg(root).arg("pal-none");
    assert_code(&run(c), 1, "stop of an unknown sandbox");
}

/// The code-execution example's four requests end the four ways a service sees, each reported
/// with its output and its usage.
#[test]
fn the_code_execution_example_reports_exits_timeouts_and_oom() {
    require_root!();
    let out = run(cmd("code_exec"));
    assert_code(&out, 0, "code_exec");
    let report = text(&out.stdout);
    let request = |i: usize| -> String {
        let start = report
            .find(&format!("[{i}] $ "))
            .unwrap_or_else(|| panic!("no request {i}: {report}"));
        let end = report[start + 1..]
            .find("\n[")
            .map_or(report.len(), |n| start + 1 + n);
        report[start..end].to_owned()
    };
    let ok = request(0);
    assert!(ok.contains("    exit status: 0\n"), "{ok}");
    assert!(ok.contains("stdout: hello from the sandbox"), "{ok}");
    assert!(!ok.contains("cpu unknown"), "{ok}");
    let failed = request(1);
    assert!(failed.contains("    exit status: 3\n"), "{failed}");
    assert!(failed.contains("stderr: about to fail"), "{failed}");
    let slow = request(2);
    assert!(slow.contains("    timed out\n"), "{slow}");
    let hungry = request(3);
    assert!(hungry.contains("    killed: out of memory\n"), "{hungry}");
    assert!(!hungry.contains("peak memory unknown"), "{hungry}");
}
