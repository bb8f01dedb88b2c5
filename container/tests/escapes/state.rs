//! A named sandbox's record: its command reaching the state directory through its init, a
//! started program holding its start gate, a stale record's pid used to signal whoever has it
//! now, and a planted link taking a name's place.

use std::path::Path;
use std::time::Duration;

use crate::common::sh;
use palisade::{Error, Sandbox, Signal, Status, Stdio};
use palisade_test_support::{require_root, TempDir};

/// The targets of `/proc/<pid>/fd/*`, as the test (host root) sees them.
fn fd_targets(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

#[test]
fn the_command_cannot_reach_its_record_through_the_init() {
    require_root!();
    let root = TempDir::new("state-esc");
    let name = "pal-record";
    // Root in the sandbox with Docker's default capabilities: every descriptor of PID 1, for
    // reading and writing, by its number.
    let script = "for f in /proc/1/fd/*; do \
                  if { echo forged > \"$f\"; } 2>/dev/null || cat \"$f\" >/dev/null 2>&1; then \
                  echo reached $f; fi; done; echo done; exec sleep 300";
    let mut child = sh(script)
        .name(name)
        .state_root(root.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Positive control: the init does hold the record's `exit` file, which the attack would
    // otherwise write a forged status to.
    let exit_file = root.path().join(name).join("exit");
    assert!(
        fd_targets(child.id()).contains(&exit_file.display().to_string()),
        "the init holds {}: {:?}",
        exit_file.display(),
        fd_targets(child.id())
    );
    let mut out = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line == "done" {
                break;
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    assert_eq!(out, "", "the command reached PID 1's descriptors");
    child.signal(Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    // The record holds the true status, not a forged one.
    let h = Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(h.state().exit, Some(status));
    h.delete().unwrap();
}

#[test]
fn a_started_program_holds_no_start_gate() {
    require_root!();
    let root = TempDir::new("state-esc");
    let name = "pal-gate";
    // Where each of the shell's own descriptors leads (written to a file, not a pipe the
    // shell would hold).
    let child = sh("for f in /proc/$$/fd/*; do readlink $f; done > /tmp/fds; cat /tmp/fds")
        .name(name)
        .state_root(root.path())
        .stdout(Stdio::piped())
        .build()
        .unwrap()
        .create()
        .unwrap();
    // Positive control: until the start, the command waits on the `start` FIFO, open for
    // writing too (so that anyone holding it could start it again, or forge its start).
    let fifo = root.path().join(name).join("start");
    assert!(
        fd_targets(child.command_id()).contains(&fifo.display().to_string()),
        "{:?}",
        fd_targets(child.command_id())
    );
    Sandbox::open_in(root.path(), name)
        .unwrap()
        .start()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8(out.stdout).unwrap();
    assert!(out.lines().count() >= 3, "{out}");
    assert!(
        !out.contains("start") && !out.contains("palisade-test"),
        "the program holds the gate: {out}"
    );
    assert!(!fifo.exists(), "the FIFO goes with the start");
    Sandbox::open_in(root.path(), name)
        .unwrap()
        .delete()
        .unwrap();
}

#[test]
fn a_stale_record_never_signals_the_process_that_reused_its_pid() {
    require_root!();
    let root = TempDir::new("state-esc");
    let name = "pal-stale";
    let mut sandbox = sh("exec sleep 300")
        .name(name)
        .state_root(root.path())
        .spawn()
        .unwrap();
    // A bystander: any process of the host's, here one the test started. (Started a clock tick
    // later: a pid and a start time name a process, to the tick, `proc(5)`.)
    std::thread::sleep(Duration::from_millis(50));
    let mut bystander = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .unwrap();
    let state_file = root.path().join(name).join("state.json");
    let recorded = std::fs::read_to_string(&state_file).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    // As recorded, it runs.
    assert_eq!(
        Sandbox::open_in(root.path(), name).unwrap().status(),
        Status::Running
    );
    // The record now names the bystander's pid, as after the sandbox's pid was reused.
    json["process"]["pid"] = bystander.id().into();
    std::fs::write(&state_file, serde_json::to_vec(&json).unwrap()).unwrap();
    let mut h = Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(h.status(), Status::Stopped);
    assert!(matches!(h.kill(), Err(Error::NotRunning { .. })));
    assert!(matches!(
        h.exec("true").output(),
        Err(Error::NotRunning { .. })
    ));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the bystander was hit"
    );
    // Positive control: with its own start time too, the record would name the bystander, and
    // the signal would reach it.
    let start = std::fs::read_to_string(format!("/proc/{}/stat", bystander.id())).unwrap();
    let start: u64 = start
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    json["process"]["start_time"] = start.into();
    std::fs::write(&state_file, serde_json::to_vec(&json).unwrap()).unwrap();
    Sandbox::open_in(root.path(), name).unwrap().kill().unwrap();
    assert!(
        bystander.wait().unwrap().code().is_none(),
        "killed by the signal"
    );
    std::fs::write(&state_file, recorded).unwrap();
    sandbox.signal(Signal::SIGKILL).unwrap();
    sandbox.wait().unwrap();
    Sandbox::open_in(root.path(), name)
        .unwrap()
        .delete()
        .unwrap();
}

#[test]
fn a_planted_link_never_takes_a_names_place() {
    require_root!();
    let root = TempDir::new("state-esc");
    let elsewhere = TempDir::new("state-esc-target");
    // A link where the sandbox's directory would go, to a directory outside the state root.
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("pal-linked")).unwrap();
    let err = sh("true")
        .name("pal-linked")
        .state_root(root.path())
        .spawn()
        .unwrap_err();
    assert!(matches!(err, Error::NameInUse { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "something was made through the link"
    );
    // Nothing half-made is left beside it, either.
    let names: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["pal-linked"]);
    // Positive control: under another name, the same spawn records itself.
    let mut child = sh("true")
        .name("pal-unlinked")
        .state_root(root.path())
        .spawn()
        .unwrap();
    child.wait().unwrap();
    assert!(Path::new(&root.path().join("pal-unlinked").join("state.json")).exists());
    Sandbox::open_in(root.path(), "pal-unlinked")
        .unwrap()
        .delete()
        .unwrap();
}
