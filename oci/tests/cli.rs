//! The `palisade-oci` binary driven as containerd's shim and podman drive runc: a bundle with a
//! busybox root, and the lifecycle commands against a state root of each test's own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use palisade_test_support::require_root;
use serde_json::Value;

mod common;

use common::{alive, Env, Ran, BIN};

/// The tools the tests' containers use.
const TOOLS: [&str; 7] = ["sh", "echo", "sleep", "id", "hostname", "cat", "ls"];

/// A bundle whose process runs `args`, named `pal-box`, in PID, mount, IPC, UTS and network
/// namespaces of its own.
fn bundle_env(tag: &str, args: &[&str]) -> Env {
    let env = Env::new(
        tag,
        args,
        &["pid", "mount", "ipc", "uts", "network"],
        &TOOLS,
    );
    env.edit_config(|c| c["hostname"] = "pal-box".into());
    env
}

/// Creates `id` from the bundle, its process waiting to start.
fn create(env: &Env, id: &str) {
    env.oci(&["create", id, "--bundle", env.bundle()]).ok();
}

#[test]
fn lifecycle_state_machine() {
    require_root!();
    let mut env = bundle_env("life", &["sleep", "1000"]);
    env.edit_config(|c| c["annotations"] = serde_json::json!({ "org.pal.test": "yes" }));
    let id = env.id("life");
    let pid_file = env.dir.path().join("pid");
    env.oci(&[
        "create",
        &id,
        "--bundle",
        env.bundle(),
        "--pid-file",
        pid_file.to_str().unwrap(),
    ])
    .ok();

    let state = env.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    let bundle = std::fs::canonicalize(&env.bundle).unwrap();
    assert_eq!(state["bundle"], bundle.to_str().unwrap());
    assert!(state["ociVersion"].is_string());
    // The bundle's annotations, without the runtime's own record of the bundle.
    assert_eq!(
        state["annotations"],
        serde_json::json!({ "org.pal.test": "yes" }),
        "{state}"
    );
    let pid = state["pid"].as_u64().unwrap();
    assert!(pid > 0 && alive(pid));
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), pid.to_string());

    env.oci(&["start", &id]).ok();
    assert_eq!(env.status(&id), "running");
    assert_eq!(env.state(&id)["pid"].as_u64(), Some(pid));

    // Starting twice is an error, as runc's.
    let again = env.oci(&["start", &id]);
    assert_eq!(again.code, 1);
    assert!(again.err.contains("already running"), "{again:?}");

    env.oci(&["kill", &id, "TERM"]).ok();
    env.wait_status(&id, "stopped");
    assert_eq!(env.state(&id)["pid"], 0);
    let stopped = env.oci(&["start", &id]);
    assert!(stopped.err.contains("has stopped"), "{stopped:?}");
    let kill = env.oci(&["kill", &id]);
    assert!(kill.err.contains("container not running"), "{kill:?}");

    env.oci(&["delete", &id]).ok();
    let gone = env.oci(&["state", &id]);
    assert_eq!(gone.code, 1);
    assert!(gone.err.contains("does not exist"), "{gone:?}");
    // Deleting again: an error, unless forced.
    assert!(env.oci(&["delete", &id]).err.contains("does not exist"));
    env.oci(&["delete", "--force", &id]).ok();
}

#[test]
fn delete_running_needs_force() {
    require_root!();
    let mut env = bundle_env("del", &["sleep", "1000"]);
    let id = env.id("del");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let refused = env.oci(&["delete", &id]);
    assert_eq!(refused.code, 1);
    assert!(refused.err.contains("not stopped"), "{refused:?}");
    assert_eq!(env.status(&id), "running");
    let pid = env.state(&id)["pid"].as_u64().unwrap();
    // Options after the id, as callers pass them.
    env.oci(&["delete", &id, "--force"]).ok();
    assert!(env.oci(&["state", &id]).err.contains("does not exist"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "the container's process outlived its deletion");
}

#[test]
fn delete_created_kills_it() {
    require_root!();
    let mut env = bundle_env("delc", &["sleep", "1000"]);
    let id = env.id("delc");
    create(&env, &id);
    env.oci(&["delete", &id]).ok();
    assert!(env.oci(&["state", &id]).err.contains("does not exist"));
}

#[test]
fn create_existing_id_fails() {
    require_root!();
    let mut env = bundle_env("dup", &["sleep", "1000"]);
    let id = env.id("dup");
    create(&env, &id);
    let dup = env.oci(&["create", "--bundle", env.bundle(), &id]);
    assert_eq!(dup.code, 1);
    assert!(dup.err.contains("exists"), "{dup:?}");
    assert_eq!(env.status(&id), "created");
}

#[test]
fn run_returns_the_exit_code_and_output() {
    require_root!();
    let mut env = bundle_env("run", &["sh", "-c", "echo out-$(hostname); exit 3"]);
    let id = env.id("run");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]);
    assert_eq!(ran.code, 3, "{ran:?}");
    assert_eq!(ran.out, "out-pal-box\n");
    // A foreground run removes its container.
    assert!(env.oci(&["state", &id]).err.contains("does not exist"));
}

#[test]
fn run_killed_reports_128_plus_signal() {
    require_root!();
    let mut env = bundle_env("runk", &["sh", "-c", "kill -KILL $$"]);
    let id = env.id("runk");
    let ran = env.oci(&["run", "-b", env.bundle(), &id]);
    assert_eq!(ran.code, 128 + 9, "{ran:?}");
}

#[test]
fn run_forwards_signals_to_the_container() {
    require_root!();
    // The shell traps TERM (as PID 2, the init's child) and exits with 7 when it gets it.
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    let mut env = bundle_env("runsig", &["sh", "-c", script]);
    let id = env.id("runsig");
    let mut run = Command::new(&*BIN)
        .args(["--root", env.root.to_str().unwrap(), "run", &id])
        .args(["--bundle", env.bundle()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(run.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    // To the runtime, which passes it on and stays to report the container's status.
    let runtime = rustix::process::Pid::from_raw(run.id() as i32).unwrap();
    rustix::process::kill_process(runtime, rustix::process::Signal::TERM).unwrap();
    let status = run.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(status.code(), Some(7), "{status:?} {rest:?}");
    assert_eq!(rest, "got-term\n");
    assert!(env.oci(&["state", &id]).err.contains("does not exist"));
}

#[test]
fn run_detached() {
    require_root!();
    let mut env = bundle_env("rund", &["sleep", "1000"]);
    let id = env.id("rund");
    let pid_file = env.dir.path().join("pid");
    env.oci(&[
        "run",
        "--detach",
        "--bundle",
        env.bundle(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ])
    .ok();
    let state = env.state(&id);
    assert_eq!(state["status"], "running");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), state["pid"].to_string());
}

#[test]
fn bad_bundle_logs_json() {
    require_root!();
    let mut env = bundle_env("bad", &["true"]);
    let id = env.id("bad");
    let empty = env.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let log = env.dir.path().join("log.json");
    let root = env.root.to_str().unwrap().to_owned();
    let ran = env.oci_with(
        &[
            "--root",
            &root,
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
        ],
        &["create", "--bundle", empty.to_str().unwrap(), &id],
    );
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(!ran.err.is_empty());
    let text = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("config.json"),
        "{line}"
    );
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
    assert!(env.oci(&["state", &id]).err.contains("does not exist"));
}

#[test]
fn kill_by_number_and_name() {
    require_root!();
    let mut env = bundle_env("kill", &["sleep", "1000"]);
    let (a, b) = (env.id("killa"), env.id("killb"));
    for id in [&a, &b] {
        create(&env, id);
        env.oci(&["start", id]).ok();
    }
    env.oci(&["kill", &a, "9"]).ok();
    env.oci(&["kill", &b, "SIGKILL"]).ok();
    env.wait_status(&a, "stopped");
    env.wait_status(&b, "stopped");
    let bad = env.oci(&["kill", &a, "NOSUCHSIG"]);
    assert_eq!(bad.code, 1);
}

#[test]
fn kill_all() {
    require_root!();
    let mut env = bundle_env("killall", &["sh", "-c", "sleep 1000 & sleep 1000"]);
    let id = env.id("killall");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    env.oci(&["kill", "--all", &id, "KILL"]).ok();
    env.wait_status(&id, "stopped");
}

#[test]
fn list_shows_ids() {
    require_root!();
    let mut env = bundle_env("list", &["sleep", "1000"]);
    let (a, b) = (env.id("lista"), env.id("listb"));
    create(&env, &a);
    create(&env, &b);
    env.oci(&["start", &b]).ok();
    let quiet = env.oci(&["list", "-q"]).ok();
    let mut ids: Vec<&str> = quiet.out.lines().collect();
    ids.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want);
    let table = env.oci(&["list"]).ok();
    assert!(table.out.starts_with("ID"), "{table:?}");
    assert!(table
        .out
        .lines()
        .any(|l| l.starts_with(&a) && l.contains("created")));
    assert!(table
        .out
        .lines()
        .any(|l| l.starts_with(&b) && l.contains("running")));
    let json = env.oci(&["list", "--format", "json"]).ok().json();
    assert_eq!(json.as_array().unwrap().len(), 2);
}

#[test]
fn ps_lists_pids() {
    require_root!();
    let mut env = bundle_env("ps", &["sleep", "1000"]);
    let id = env.id("ps");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let pid = env.state(&id)["pid"].as_u64().unwrap();
    let pids = env.oci(&["ps", "--format", "json", &id]).ok().json();
    let pids: Vec<u64> = pids
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(pids.contains(&pid), "{pids:?} lacks {pid}");
    let table = env.oci(&["ps", &id]).ok();
    assert!(table.out.contains("sleep 1000"), "{table:?}");
}

#[test]
fn pause_and_resume() {
    require_root!();
    let mut env = bundle_env("pause", &["sleep", "1000"]);
    let id = env.id("pause");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    env.oci(&["pause", &id]).ok();
    assert_eq!(env.status(&id), "paused");
    assert!(env.oci(&["resume", &id]).code == 0);
    assert_eq!(env.status(&id), "running");
    let again = env.oci(&["resume", &id]);
    assert!(again.err.contains("not paused"), "{again:?}");
}

#[test]
fn exec_in_running_container() {
    require_root!();
    let mut env = bundle_env("exec", &["sleep", "1000"]);
    let id = env.id("exec");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let host = env.oci(&["exec", &id, "hostname"]).ok();
    assert_eq!(host.out, "pal-box\n");
    let code = env.oci(&["exec", &id, "--", "sh", "-c", "exit 7"]);
    assert_eq!(code.code, 7, "{code:?}");
    let envs = env.oci(&["exec", "--env", "PAL_X=42", &id, "sh", "-c", "echo $PAL_X"]);
    assert_eq!(envs.ok().out, "42\n");
    let user = env.oci(&["exec", "--user", "1000:1000", &id, "id", "-u"]);
    assert_eq!(user.ok().out, "1000\n");

    // A process file, as containerd's shim passes it.
    let process = env.dir.path().join("process.json");
    let json = serde_json::json!({
        "args": ["sh", "-c", "echo $PAL_Y; pwd"],
        "env": ["PATH=/bin", "PAL_Y=from-file"],
        "cwd": "/bin",
        "user": { "uid": 0, "gid": 0 },
        "terminal": false
    });
    std::fs::write(&process, json.to_string()).unwrap();
    let ran = env.oci(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert_eq!(ran.ok().out, "from-file\n/bin\n");
}

#[test]
fn exec_detached_writes_pid() {
    require_root!();
    let mut env = bundle_env("execd", &["sleep", "1000"]);
    let id = env.id("execd");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let pid_file = env.dir.path().join("exec.pid");
    env.oci(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "999",
    ])
    .ok();
    let pid: u64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sleep\0999\0");
}

#[test]
fn exec_in_stopped_container_fails() {
    require_root!();
    let mut env = bundle_env("execs", &["true"]);
    let id = env.id("execs");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    env.wait_status(&id, "stopped");
    let ran = env.oci(&["exec", &id, "hostname"]);
    assert_eq!(ran.code, 1);
    assert!(ran.err.contains("stopped"), "{ran:?}");
}

#[test]
fn spec_and_features() {
    require_root!();
    let env = bundle_env("spec", &["true"]);
    let again = env.oci(&["spec", "--bundle", env.bundle()]);
    assert_eq!(again.code, 1, "an existing config.json is kept: {again:?}");
    let fresh = env.dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    env.oci(&["spec", "-b", fresh.to_str().unwrap()]).ok();
    let spec: Value =
        serde_json::from_slice(&std::fs::read(fresh.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["root"]["path"], "rootfs");
    assert_eq!(spec["process"]["args"][0], "sh");
    let features = env.oci(&["features"]).ok().json();
    assert!(features["ociVersionMax"].is_string());
    let namespaces = features["linux"]["namespaces"].as_array().unwrap();
    assert!(namespaces.iter().any(|n| n == "pid"));
    assert_eq!(features["linux"]["cgroup"]["systemd"], false);
}

/// Each command's `--help` opens with what the command list says it does, and lists its own
/// options: clap builds a command's arguments only when it is given (`defer`), and must still
/// describe it as the list does.
#[test]
fn each_commands_help_says_what_it_does() {
    let env = Env::new("help", &["true"], &[], &[]);
    let top = env.oci_with(&[], &["--help"]).ok().out;
    let list: Vec<(&str, &str)> = top
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(name, about)| (name, about.trim()))
        .filter(|(name, _)| *name != "help")
        .collect();
    assert_eq!(list.len(), 15, "{top}");
    for (name, about) in list {
        let help = env.oci_with(&[], &[name, "--help"]).ok().out;
        assert_eq!(help.lines().next(), Some(about), "{name} --help:\n{help}");
        assert!(
            help.contains("Usage: palisade-oci "),
            "{name} --help:\n{help}"
        );
    }
    let run = env.oci_with(&[], &["run", "--help"]).ok().out;
    assert!(
        run.contains("--bundle <DIR>") && run.contains("--detach"),
        "{run}"
    );
}

#[test]
fn refused_global_flags() {
    require_root!();
    let env = bundle_env("flags", &["true"]);
    let systemd = env.oci_with(&["--systemd-cgroup"], &["list"]);
    assert_eq!(systemd.code, 1);
    assert!(systemd.err.contains("systemd"), "{systemd:?}");
    let rootless = env.oci_with(&["--rootless", "true"], &["list"]);
    assert_eq!(rootless.code, 1);
    env.oci_with(
        &[
            "--root",
            env.root.to_str().unwrap(),
            "--rootless",
            "auto",
            "--debug",
        ],
        &["list", "-q"],
    )
    .ok();
}

/// Receives one descriptor sent with `SCM_RIGHTS` (`unix(7)`), as a console socket's owner does.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> std::os::fd::OwnedFd {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    rustix::net::recvmsg(
        stream,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .unwrap();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            return fds.next().unwrap();
        }
    }
    panic!("no descriptor received");
}

#[test]
fn console_socket_gets_the_terminal() {
    require_root!();
    let mut env = bundle_env("tty", &["sh", "-c", "tty; echo pal-hi"]);
    std::os::unix::fs::symlink("busybox", env.bundle.join("rootfs/bin/tty")).unwrap();
    env.edit_config(|c| c["process"]["terminal"] = true.into());
    let id = env.id("tty");
    let socket = env.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || receive_fd(&listener.accept().unwrap().0));

    // A terminal without a console socket cannot be handed to anyone.
    let refused = env.oci(&["create", &id, "--bundle", env.bundle()]);
    assert_eq!(refused.code, 1);
    assert!(refused.err.contains("console socket"), "{refused:?}");

    env.oci(&[
        "create",
        &id,
        "--bundle",
        env.bundle(),
        "--console-socket",
        socket.to_str().unwrap(),
    ])
    .ok();
    let master = std::fs::File::from(receiver.join().unwrap());
    env.oci(&["start", &id]).ok();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    // The master reads EIO once the container's side is closed.
    while let Ok(n @ 1..) = std::io::Read::read(&mut &master, &mut buf) {
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("/dev/pts/0"), "{seen:?}");
    assert!(seen.contains("pal-hi"), "{seen:?}");
    env.wait_status(&id, "stopped");
}

#[test]
fn preserve_fds_reach_the_container() {
    require_root!();
    let mut env = bundle_env("fds", &["sh", "-c", "echo pal-via-fd >&3"]);
    let id = env.id("fds");
    let target = env.dir.path().join("fd3");
    // The host's shell opens descriptor 3 and executes the runtime with it, as a shim does.
    let status = Command::new("sh")
        .args(["-c", "exec 3>\"$0\"; exec \"$@\""])
        .arg(&target)
        .arg(&*BIN)
        .args(["--root", env.root.to_str().unwrap(), "run", &id])
        .args(["--bundle", env.bundle(), "--preserve-fds", "1"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "pal-via-fd\n");
    // Without descriptor 3 open, the option is refused.
    let ran = env.oci(&["run", &id, "--bundle", env.bundle(), "--preserve-fds", "1"]);
    assert_eq!(ran.code, 1, "{ran:?}");
}

/// `pids.max` of the container's group: the nearest group holding its first process (in
/// `/proc/<pid>/cgroup`, `cgroups(7)`: the v1 pids hierarchy's, else the unified one's) or
/// above it that has a limit.
fn pids_max(env: &Env, id: &str) -> String {
    let pid = env.state(id)["pid"].as_u64().unwrap();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let line = |prefix: &str| {
        text.lines()
            .find_map(|l| l.split_once(prefix).map(|(_, p)| p))
    };
    let mut dir = match (line(":pids:"), line("0::")) {
        (Some(path), _) => PathBuf::from(format!("/sys/fs/cgroup/pids{path}")),
        (None, Some(path)) if Path::new("/sys/fs/cgroup/unified").is_dir() => {
            PathBuf::from(format!("/sys/fs/cgroup/unified{path}"))
        }
        (None, Some(path)) => PathBuf::from(format!("/sys/fs/cgroup{path}")),
        (None, None) => panic!("no cgroup of {pid}: {text}"),
    };
    loop {
        let max = std::fs::read_to_string(dir.join("pids.max")).unwrap_or_default();
        if !max.trim().is_empty() && max.trim() != "max" {
            return max.trim().to_owned();
        }
        assert!(
            dir.pop() && dir != Path::new("/sys/fs"),
            "no pids.max for {id}: {text}"
        );
    }
}

#[test]
fn update_changes_the_limits() {
    require_root!();
    let mut env = bundle_env("update", &["sleep", "1000"]);
    env.edit_config(|c| c["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 5 }));
    let id = env.id("update");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    assert_eq!(pids_max(&env, &id), "5");
    env.oci(&["update", "--pids-limit", "7", &id]).ok();
    assert_eq!(pids_max(&env, &id), "7");
    env.oci_stdin(
        &["update", "--resources", "-", &id],
        r#"{"pids":{"limit":9}}"#,
    )
    .ok();
    assert_eq!(pids_max(&env, &id), "9");
    // A field Palisade does not apply is refused by name, and nothing changes.
    let refused = env.oci_stdin(
        &["update", "-r", "-", &id],
        r#"{"pids":{"limit":11},"blockIO":{"leafWeight":100}}"#,
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.err.contains("blockIO.leafWeight"), "{refused:?}");
    assert_eq!(pids_max(&env, &id), "9");
    let bad = env.oci(&["update", "--memory", "lots", &id]);
    assert!(bad.code == 1 && bad.err.contains("--memory"), "{bad:?}");
    let missing = env.oci(&["update", "--pids-limit", "3", "pal-no-such-container"]);
    assert!(missing.err.contains("does not exist"), "{missing:?}");
}

#[test]
fn events_stats_and_the_end_of_the_container() {
    require_root!();
    let mut env = bundle_env("events", &["sleep", "1000"]);
    env.edit_config(|c| c["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 50 }));
    let id = env.id("events");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let ran = env.oci(&["events", "--stats", &id]).ok();
    let event = ran.json();
    assert_eq!(event["type"], "stats", "{ran:?}");
    assert_eq!(event["id"], id.as_str());
    assert!(
        event["data"]["pids"]["current"].as_u64().unwrap() >= 1,
        "{ran:?}"
    );
    assert_eq!(event["data"]["pids"]["limit"], 50, "{ran:?}");
    assert!(event["data"]["cpu"]["usage"]["user"].is_u64(), "{ran:?}");

    // A container that ends after a second: the stream ends with it.
    let short = bundle_env("events-end", &["sleep", "1"]);
    let mut short = short;
    short.edit_config(|c| c["linux"]["resources"]["pids"] = serde_json::json!({ "limit": 50 }));
    let id = short.id("events-end");
    create(&short, &id);
    short.oci(&["start", &id]).ok();
    let started = Instant::now();
    let ran = short.oci(&["events", "--interval", "100ms", &id]).ok();
    assert!(started.elapsed() < Duration::from_secs(10), "{ran:?}");
    let lines: Vec<Value> = ran
        .out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "{ran:?}");
    assert!(lines
        .iter()
        .all(|e| e["type"] == "stats" && e["id"] == id.as_str()));
    let stopped = short.oci(&["events", "--stats", &id]);
    assert!(stopped.err.contains("not running"), "{stopped:?}");
}

/// The effective capabilities of the `cat` an exec runs, from its `/proc/self/status`.
fn exec_cap_eff(env: &Env, args: &[&str]) -> Ran {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["cat", "/proc/self/status"]);
    env.oci(&all)
}

fn cap_eff(ran: &Ran) -> u64 {
    let hex = ran
        .out
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff: {ran:?}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

#[test]
fn exec_adds_capabilities() {
    require_root!();
    const NET_BIND_SERVICE: u64 = 1 << 10;
    let mut env = bundle_env("execcap", &["sleep", "1000"]);
    let id = env.id("execcap");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    // A non-root user holds none, unless given.
    let plain = exec_cap_eff(&env, &["--user", "1000:1000", &id]).ok();
    assert_eq!(cap_eff(&plain) & NET_BIND_SERVICE, 0, "{plain:?}");
    let given = exec_cap_eff(
        &env,
        &["--user", "1000:1000", "--cap", "CAP_NET_BIND_SERVICE", &id],
    )
    .ok();
    // Exactly the one given: another user than root gets nothing of the container's set.
    assert_eq!(cap_eff(&given), NET_BIND_SERVICE, "{given:?}");
    // Beyond the default bundle's bounding set: refused by name.
    let refused = exec_cap_eff(&env, &["--cap", "CAP_SYS_ADMIN", &id]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.err.contains("CAP_SYS_ADMIN"), "{refused:?}");
    let unknown = exec_cap_eff(&env, &["--cap", "CAP_NOPE", &id]);
    assert!(
        unknown.code == 1 && unknown.err.contains("CAP_NOPE"),
        "{unknown:?}"
    );
}

#[test]
fn a_container_joins_anothers_ipc_uts_and_pid_namespaces_by_path() {
    require_root!();
    // A pod: the first container's namespaces, which the second names by path.
    let mut first = bundle_env("pod-first", &["sleep", "1000"]);
    let a = first.id("pod-first");
    create(&first, &a);
    first.oci(&["start", &a]).ok();
    let pid = first.state(&a)["pid"].as_u64().unwrap();
    let script = "hostname; readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; \
                  for p in /proc/[0-9]*; do cat $p/comm; done";
    let mut second = bundle_env("pod-second", &["sh", "-c", script]);
    let namespaces = |ipc: &str| {
        serde_json::json!([
            {"type": "pid", "path": format!("/proc/{pid}/ns/pid")},
            {"type": "mount"}, {"type": "network"},
            {"type": "ipc", "path": format!("/proc/{pid}/ns/{ipc}")},
            {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
        ])
    };
    second.edit_config(|c| {
        c.as_object_mut().unwrap().remove("hostname");
        c["linux"]["namespaces"] = namespaces("ipc");
    });
    let b = second.id("pod-second");
    let ran = second.oci(&["run", &b, "--bundle", second.bundle()]).ok();
    let link = |kind: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
            .unwrap()
            .display()
            .to_string()
    };
    let lines: Vec<&str> = ran.out.lines().collect();
    assert_eq!(
        lines[..3],
        ["pal-box", &link("ipc"), &link("pid")],
        "{ran:?}"
    );
    // The first container's command is among the processes the second sees.
    assert!(lines[3..].contains(&"sleep"), "{ran:?}");
    assert!(
        first.state(&a)["status"] == "running",
        "the first container was ended"
    );

    // A path of another kind than its entry says, a mount namespace by path, and maps that are
    // not those of the user namespace joined: refused by name, with nothing left.
    second.edit_config(|c| c["linux"]["namespaces"] = namespaces("pid"));
    let wrong = second.oci(&["run", &b, "--bundle", second.bundle()]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.err.contains("linux.namespaces[3].path") && wrong.err.contains("not a ipc"),
        "{wrong:?}"
    );
    second.edit_config(|c| {
        c["linux"]["namespaces"] =
            serde_json::json!([{"type": "mount", "path": format!("/proc/{pid}/ns/mnt")}]);
    });
    let mount = second.oci(&["run", &b, "--bundle", second.bundle()]);
    assert_eq!(mount.code, 1, "{mount:?}");
    assert!(mount.err.contains("linux.namespaces[0].path"), "{mount:?}");
    second.edit_config(|c| {
        c["linux"]["namespaces"] = serde_json::json!([
            {"type": "mount"}, {"type": "user", "path": format!("/proc/{pid}/ns/user")},
        ]);
        c["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    });
    let maps = second.oci(&["run", &b, "--bundle", second.bundle()]);
    assert_eq!(maps.code, 1, "{maps:?}");
    assert!(maps.err.contains("linux.uidMappings"), "{maps:?}");
    assert_eq!(
        second.oci(&["list", "-q"]).ok().out.trim(),
        "",
        "something was left"
    );
}

/// What an exec's shell sees of itself: its `/proc/self/status` and `/proc/self/limits`.
fn exec_self(env: &Env, args: &[&str]) -> Ran {
    let mut all = vec!["exec"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["sh", "-c", "cat /proc/self/status /proc/self/limits"]);
    env.oci(&all)
}

/// The value of the line `prefix` of an exec's status or limits, whitespace-joined.
fn line(ran: &Ran, prefix: &str) -> String {
    let found = ran
        .out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix}: {ran:?}"));
    found.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes an OCI process file running the shell of [`exec_self`], with `extra` merged in.
fn process_file(env: &Env, name: &str, extra: Value) -> String {
    let mut json = serde_json::json!({
        "args": ["sh", "-c", "cat /proc/self/status /proc/self/limits"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": { "uid": 0, "gid": 0 },
    });
    for (k, v) in extra.as_object().unwrap() {
        json[k] = v.clone();
    }
    let path = env.dir.path().join(name);
    std::fs::write(&path, json.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn exec_narrows_groups_limits_capabilities_and_no_new_privs() {
    require_root!();
    const KILL: u64 = 1 << 5;
    let mut env = bundle_env("execnarrow", &["sleep", "1000"]);
    // The container's process may set groups (CAP_SETGID) and runs without no_new_privs.
    env.edit_config(|c| {
        let caps = serde_json::json!(["CAP_KILL", "CAP_SETGID", "CAP_NET_BIND_SERVICE"]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = caps.clone();
        }
        c["process"]["noNewPrivileges"] = false.into();
    });
    let id = env.id("execnarrow");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let plain = exec_self(&env, &[&id]).ok();
    assert_eq!(line(&plain, "NoNewPrivs:"), "0");
    assert_eq!(line(&plain, "Max open files"), "1024 1024 files");

    // The flags: groups, no_new_privs.
    let flags = exec_self(
        &env,
        &[
            "--user",
            "1000:1000",
            "-g",
            "1234",
            "--additional-gids",
            "5678",
            "--no-new-privs",
            &id,
        ],
    )
    .ok();
    assert_eq!(line(&flags, "Groups:"), "1234 5678");
    assert_eq!(line(&flags, "NoNewPrivs:"), "1");
    assert_eq!(line(&flags, "Uid:"), "1000 1000 1000 1000");

    // The process file: groups, capabilities, limits, no_new_privs; an AppArmor profile means
    // nothing on a host without AppArmor, as for create.
    let kill = serde_json::json!(["CAP_KILL"]);
    let file = process_file(
        &env,
        "narrow.json",
        serde_json::json!({
            "user": { "uid": 0, "gid": 0, "additionalGids": [42] },
            "capabilities": { "bounding": kill, "effective": kill, "permitted": kill },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 512, "soft": 256 }],
            "noNewPrivileges": true,
            "apparmorProfile": "pal-profile",
        }),
    );
    let from_file = env.oci(&["exec", "--process", &file, &id]).ok();
    assert_eq!(line(&from_file, "Groups:"), "42");
    assert_eq!(line(&from_file, "CapEff:"), format!("{KILL:016x}"));
    assert_eq!(line(&from_file, "CapBnd:"), format!("{KILL:016x}"));
    assert_eq!(line(&from_file, "NoNewPrivs:"), "1");
    assert_eq!(line(&from_file, "Max open files"), "256 512 files");

    // Never more than the container's process: refused, by name.
    for (name, extra, want) in [
        (
            "raise.json",
            serde_json::json!({"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}]}),
            "rlimit of an exec",
        ),
        (
            "admin.json",
            serde_json::json!({"capabilities": {"bounding": ["CAP_SYS_ADMIN"]}}),
            "CAP_SYS_ADMIN",
        ),
        (
            "inheritable.json",
            serde_json::json!({"capabilities": {"bounding": kill, "inheritable": kill}}),
            "process.capabilities.inheritable",
        ),
        (
            "ioprio.json",
            serde_json::json!({"ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 0}}),
            "process.ioPriority",
        ),
    ] {
        let file = process_file(&env, name, extra);
        let ran = env.oci(&["exec", "--process", &file, &id]);
        assert_eq!(ran.code, 1, "{name}: {ran:?}");
        assert!(ran.err.contains(want), "{name}: {ran:?}");
    }
}

#[test]
fn exec_groups_need_cap_setgid() {
    require_root!();
    // The default bundle's process holds no CAP_SETGID: it could not take another group.
    let mut env = bundle_env("execgid", &["sleep", "1000"]);
    let id = env.id("execgid");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let ran = exec_self(&env, &["-g", "1234", &id]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(
        ran.err.contains("supplementary groups of an exec"),
        "{ran:?}"
    );
    // Control: without it, the exec runs.
    exec_self(&env, &[&id]).ok();
}

#[test]
fn exec_preserve_fds_reach_the_process() {
    require_root!();
    let mut env = bundle_env("execfds", &["sleep", "1000"]);
    let id = env.id("execfds");
    create(&env, &id);
    env.oci(&["start", &id]).ok();
    let target = env.dir.path().join("fd3");
    // The host's shell opens descriptor 3 and executes the runtime with it, as a shim does.
    let status = Command::new("sh")
        .args(["-c", "exec 3>\"$0\"; exec \"$@\""])
        .arg(&target)
        .arg(&*BIN)
        .args([
            "--root",
            env.root.to_str().unwrap(),
            "exec",
            "--preserve-fds",
            "1",
        ])
        .args([id.as_str(), "sh", "-c", "echo pal-via-fd >&3"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "pal-via-fd\n");
    // Without --preserve-fds, descriptor 3 of the runtime does not reach it.
    let status = Command::new("sh")
        .args(["-c", "exec 3>\"$0\"; exec \"$@\""])
        .arg(&target)
        .arg(&*BIN)
        .args(["--root", env.root.to_str().unwrap(), "exec"])
        .args([id.as_str(), "sh", "-c", "echo leaked >&3"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    // Without descriptor 3 open, the option is refused.
    let ran = env.oci(&["exec", "--preserve-fds", "1", &id, "echo"]);
    assert_eq!(ran.code, 1, "{ran:?}");
    assert!(ran.err.contains("descriptor 3 is not open"), "{ran:?}");
}
