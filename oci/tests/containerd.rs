//! containerd drives `palisade-oci` through its runc shim (`io.containerd.runc.v2`, with
//! `ctr run --runc-binary`), with runc as the control in the same test: each check runs the same
//! `ctr` command with both runtimes, so a failure is palisade-oci's, not containerd's or the
//! host's. containerd runs privately (its root, state, sockets and plugin directories under the
//! test's own directory, its containers' state under `--runc-root` there too, their cgroups
//! under a parent of the test's own), from Debian's package, on a busybox image written with
//! Palisade's own OCI layout writer and imported with `ctr image import`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_test_support::{require_root, TempDir};

use common::containerd;

/// The runtimes under test: the control first.
fn runtimes() -> [(&'static str, PathBuf); 2] {
    [
        ("runc", PathBuf::from("/usr/bin/runc")),
        ("palisade-oci", PathBuf::from(&*common::BIN)),
    ]
}

/// The image's name, as `ctr` needs it in full (a bare tag is not a name it finds).
const IMAGE: &str = "docker.io/palisade/busybox:1";
/// The containerd namespace of the tests' images and containers (the instance is private).
const NAMESPACE: &str = "pal-test";

/// A private containerd, with the busybox image imported, whose containers run with `runtime`.
struct Containerd {
    dir: TempDir,
    daemon: Child,
    /// What the shim runs: a script that logs its arguments to `runtime.log`, then execs the
    /// runtime under test.
    wrapper: PathBuf,
    /// The cgroup its containers go under (`ctr run --cgroup`), the test's own: named as its
    /// directory, `palisade-test-containerd-<pid>-<n>`.
    cgroup_parent: String,
    /// The host directories the shim makes, removed after the last instance.
    _host_dirs: common::HostDirs,
}

impl Containerd {
    fn new(runtime: &Path) -> Containerd {
        let dir = TempDir::new("containerd");
        let at = |sub: &str| dir.path().join(sub).display().to_string();
        let host_dirs = common::HostDirs::acquire();
        let config = containerd::base_config(dir.path(), &["io.containerd.grpc.v1.cri"]);
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let wrapper = dir.path().join("runtime.sh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\nexec {runtime} \"$@\"\n",
                log = at("runtime.log"),
                runtime = runtime.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy();
        let cgroup_parent = format!("/{name}");
        let mut containerd = Containerd {
            dir,
            daemon,
            wrapper,
            cgroup_parent,
            _host_dirs: host_dirs,
        };
        containerd.wait_ready();
        containerd.import_busybox();
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("c.sock")
    }

    /// The runtime's state root, as the shim passes it (`--root`): `ctr run --runc-root`.
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// Waits until containerd answers on its socket.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.daemon.try_wait().unwrap() {
                panic!("containerd exited: {status}\n{}", self.diagnostics());
            }
            if self.socket().exists() && self.ctr(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not come up\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes the busybox image as an OCI layout, tars it and imports it.
    fn import_busybox(&self) {
        let archive = containerd::busybox_archive(self.dir.path(), IMAGE, &["/bin/sh"]);
        self.ok(&["image", "import", archive.to_str().unwrap()]);
        let images = self.ok(&["image", "ls", "-q"]);
        assert_eq!(images.trim(), IMAGE, "{}", self.diagnostics());
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("-a").arg(self.socket()).args(["-n", NAMESPACE]);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `ctr ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ctr run` of the busybox image as container `id`, with the runtime under test, its state
    /// and cgroups the test's own.
    fn run_args(&self, extra: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend([
            "--runc-binary".into(),
            self.wrapper.display().to_string(),
            "--runc-root".into(),
            self.runc_root().display().to_string(),
            "--cgroup".into(),
            format!("{}/{id}", self.cgroup_parent),
            IMAGE.into(),
            id.into(),
        ]);
        args.extend(cmd.iter().map(|a| a.to_string()));
        args
    }

    fn run(&self, extra: &[&str], id: &str, cmd: &[&str]) -> Output {
        let args = self.run_args(extra, id, cmd);
        self.command().args(&args).output().unwrap()
    }

    /// What explains a failure: how the shim called the runtime, and containerd's log (where
    /// the shim's own log goes).
    fn diagnostics(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let log = read("containerd.log");
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "runtime calls:\n{}\ncontainerd log (tail):\n{}",
            read("runtime.log"),
            tail.join("\n")
        )
    }

    /// The tasks `ctr task ls` lists: (id, status) pairs.
    fn tasks(&self) -> Vec<(String, String)> {
        self.ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next()?.to_owned();
                Some((id, f.nth(1)?.to_owned()))
            })
            .collect()
    }

    /// The tasks `ctr task ls` lists: (id, pid) pairs.
    fn tasks_with_pids(&self) -> Vec<(String, String)> {
        self.ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?.to_owned(), f.next()?.to_owned()))
            })
            .collect()
    }

    /// Waits until task `id` has status `status`.
    fn wait_status(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let tasks = self.tasks();
            if tasks.iter().any(|(i, s)| i == id && s == status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} never {status}: {tasks:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let alive = self.daemon.try_wait().ok().flatten().is_none();
        let quiet = |args: &[&str]| {
            self.command()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        // What a failed test left: its tasks and containers, through containerd.
        let listed = |args: &[&str]| -> Vec<String> {
            self.ctr(args)
                .stdout
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect()
        };
        if alive {
            for task in listed(&["task", "ls", "-q"]) {
                let _ = quiet(&["task", "kill", "-s", "SIGKILL", &task]);
                let _ = quiet(&["task", "rm", "-f", &task]);
            }
            for container in listed(&["container", "ls", "-q"]) {
                let _ = quiet(&["container", "rm", &container]);
            }
        }
        // containerd itself: TERM, then KILL if it lingers.
        let pid = self.daemon.id() as i32;
        // SAFETY: kill(2) on our own child, which we have not reaped: the pid is still ours.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its shims, then whatever containers they still held, through the runtime.
        containerd::kill_shims(
            &self.socket(),
            &self
                .dir
                .path()
                .join("state/io.containerd.runtime.v2.task")
                .join(NAMESPACE),
        );
        containerd::delete_containers(&self.wrapper, &self.runc_root().join(NAMESPACE));
        // Its mounts (snapshots, the containers' root file systems), deepest first.
        common::unmount_under(self.dir.path());
        // Its cgroups, deepest first, in every hierarchy (empty once its containers are gone).
        common::remove_cgroups(&self.cgroup_parent);
    }
}

/// Skips (or, under CI, fails) when containerd or ctr is missing.
macro_rules! require_containerd {
    () => {
        require_root!();
        if !containerd::have_containerd() {
            palisade_test_support::skip("needs containerd and ctr (apt-get install containerd)");
            return;
        }
    };
}

/// The output of `ctr run` as text, and a description for assertion messages.
fn text(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let describe = format!(
        "{}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (stdout, describe)
}

#[test]
fn containerd_runs_a_command() {
    require_containerd!();
    let mut shown = Vec::new();
    for (name, runtime) in runtimes() {
        let containerd = Containerd::new(&runtime);
        let out = containerd.run(
            &["--rm"],
            "pal-run",
            &["sh", "-c", "echo hi; id -u; hostname"],
        );
        let (stdout, describe) = text(&out);
        assert!(
            out.status.success(),
            "{name}: {describe}\n{}",
            containerd.diagnostics()
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 3, "{name}: {describe}");
        assert_eq!(lines[0], "hi", "{name}: {describe}");
        assert_eq!(lines[1], "0", "{name}: {describe}");
        assert!(!lines[2].is_empty(), "{name}: {describe}");
        shown.push(lines[2].to_owned());
        // Nothing of it is left behind.
        assert_eq!(containerd.ok(&["task", "ls", "-q"]), "", "{name}");
        assert_eq!(containerd.ok(&["container", "ls", "-q"]), "", "{name}");
    }
    // containerd sets no hostname: whatever runc's container shows, palisade-oci's shows too.
    assert_eq!(shown[0], shown[1], "hostnames (runc, palisade-oci)");
}

#[test]
fn containerd_exit_status_is_the_commands() {
    require_containerd!();
    for (name, runtime) in runtimes() {
        let containerd = Containerd::new(&runtime);
        let out = containerd.run(&["--rm"], "pal-exit", &["sh", "-c", "exit 7"]);
        let (_, describe) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{name}: {describe}\n{}",
            containerd.diagnostics()
        );
        assert_eq!(containerd.ok(&["container", "ls", "-q"]), "", "{name}");
    }
}

#[test]
fn containerd_detaches_execs_kills_and_removes() {
    require_containerd!();
    for (name, runtime) in runtimes() {
        let containerd = Containerd::new(&runtime);
        let id = "pal-web";
        let out = containerd.run(&["-d"], id, &["sleep", "1000"]);
        let (_, describe) = text(&out);
        assert!(
            out.status.success(),
            "{name}: {describe}\n{}",
            containerd.diagnostics()
        );
        containerd.wait_status(id, "RUNNING");
        let out = containerd.ok(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            id,
            "sh",
            "-c",
            "echo in; ps",
        ]);
        assert!(out.starts_with("in\n"), "{name}: {out}");
        assert!(out.contains("sleep 1000"), "{name}: {out}");
        // The task's process is among those `ctr task ps` lists (palisade-oci's containers also
        // hold Palisade's init as their PID 1, runc's do not).
        let pid = containerd
            .tasks_with_pids()
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, pid)| pid);
        let ps = containerd.ok(&["task", "ps", id]);
        assert!(
            ps.lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == pid.as_deref()),
            "{name}: {pid:?} not in {ps}"
        );
        containerd.ok(&["task", "kill", "-s", "SIGKILL", id]);
        containerd.wait_status(id, "STOPPED");
        containerd.ok(&["task", "rm", id]);
        containerd.ok(&["container", "rm", id]);
        assert_eq!(containerd.ok(&["task", "ls", "-q"]), "", "{name}");
        assert_eq!(containerd.ok(&["container", "ls", "-q"]), "", "{name}");
    }
}

#[test]
fn containerd_gives_a_terminal() {
    require_containerd!();
    if Command::new("script").arg("--version").output().is_err() {
        palisade_test_support::skip("needs script(1) from util-linux");
        return;
    }
    for (name, runtime) in runtimes() {
        let containerd = Containerd::new(&runtime);
        let mut line = vec![
            "ctr".to_owned(),
            "-a".to_owned(),
            containerd.socket().display().to_string(),
            "-n".to_owned(),
            NAMESPACE.to_owned(),
        ];
        line.extend(containerd.run_args(&["--rm", "-t"], "pal-tty", &["sh"]));
        // `script` gives ctr a terminal; the input comes once the shell is up.
        let line = line.join(" ");
        let shell = format!("(sleep 2; printf 'tty; exit 3\\n') | script -qec '{line}' /dev/null");
        let out = Command::new("sh").args(["-c", &shell]).output().unwrap();
        let (stdout, describe) = text(&out);
        assert!(
            stdout.contains("/dev/pts/0"),
            "{name}: {describe}\n{}",
            containerd.diagnostics()
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{name}: {describe}\n{}",
            containerd.diagnostics()
        );
        assert_eq!(containerd.ok(&["container", "ls", "-q"]), "", "{name}");
    }
}
