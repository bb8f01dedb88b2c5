//! podman drives `palisade-oci` as its OCI runtime (`--runtime`), with runc as the control in
//! the same test: each check runs the same podman command with both runtimes, so a failure is
//! palisade-oci's, not podman's or the host's. podman runs with a storage, run root and state
//! of the test's own (`--root`, `--runroot`), from Debian's package (tests/all.sh installs it),
//! on a busybox root file system (`--rootfs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use palisade_test_support::{require_root, TempDir};

/// The runtimes under test: the control first.
fn runtimes() -> [(&'static str, PathBuf); 2] {
    [
        ("runc", PathBuf::from("/usr/bin/runc")),
        ("palisade-oci", PathBuf::from(&*common::BIN)),
    ]
}

/// A private podman: its storage, run root and runtime state under `dir`.
struct Podman {
    dir: TempDir,
    runtime: PathBuf,
    rootfs: PathBuf,
    /// The cgroup its containers and their conmon go under (`--cgroup-parent`), the test's own:
    /// named as its directory, `palisade-test-podman-<pid>-<n>`.
    cgroup_parent: String,
    /// The host directories podman's exit command makes, removed after the last instance.
    _host_dirs: common::HostDirs,
}

impl Podman {
    fn new(runtime: &Path) -> Podman {
        let dir = TempDir::new("podman");
        let rootfs = dir.path().join("rootfs");
        common::busybox_root(&rootfs);
        let name = dir.path().file_name().unwrap().to_string_lossy();
        let cgroup_parent = format!("/{name}");
        Podman {
            dir,
            runtime: runtime.to_owned(),
            rootfs,
            cgroup_parent,
            _host_dirs: common::HostDirs::acquire(),
        }
    }

    /// podman's global options: everything of this instance's under its directory (`--tmpdir`
    /// too: podman keeps its locks and events there, by default in the shared `/run/libpod`;
    /// and the runtime's state root).
    fn global_args(&self) -> Vec<String> {
        let at = |sub: &str| self.dir.path().join(sub).display().to_string();
        vec![
            "--root".into(),
            at("storage"),
            "--runroot".into(),
            at("run"),
            "--tmpdir".into(),
            at("tmp"),
            "--runtime".into(),
            self.runtime.display().to_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            // The runtime's own state too (runc's default is /run/runc, palisade-oci's
            // /run/palisade-oci).
            "--runtime-flag".into(),
            format!("root={}", at("runtime")),
        ]
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(self.global_args());
        cmd
    }

    /// `podman ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} with {}: {}\n{}",
            self.runtime.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// `podman run` with what this host needs (see ../shared/notes/real-clients.md: root here
    /// lacks CAP_SYS_RESOURCE, so podman's default rlimits would fail) on the busybox root.
    fn run_args<'a>(&'a self, extra: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "run",
            "--cgroup-parent",
            &self.cgroup_parent,
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(extra);
        args.push("--rootfs");
        args.push(self.rootfs.to_str().unwrap());
        args.extend_from_slice(cmd);
        args
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "--all", "--force"]).output();
        let _ = self.command().args(["system", "reset", "--force"]).output();
        common::remove_cgroups(&self.cgroup_parent);
        // podman leaves its storage's overlay mount behind.
        common::unmount_under(&self.dir.path().join("storage"));
    }
}

fn have_podman() -> bool {
    Command::new("podman").arg("--version").output().is_ok()
}

/// Skips (or, under CI, fails) when podman is missing.
macro_rules! require_podman {
    () => {
        require_root!();
        if !have_podman() {
            palisade_test_support::skip("needs podman (tests/all.sh installs it)");
            return;
        }
    };
}

#[test]
fn podman_runs_a_command() {
    require_podman!();
    for (name, runtime) in runtimes() {
        let podman = Podman::new(&runtime);
        let out =
            podman.ok(&podman.run_args(&["--rm"], &["/bin/sh", "-c", "echo hi; id -u; hostname"]));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "hi", "{name}: {out}");
        assert_eq!(lines[1], "0", "{name}: {out}");
        // The hostname podman chose: the container id's first 12 hex digits.
        assert_eq!(lines[2].len(), 12, "{name}: {out}");
        assert!(
            lines[2].bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}: {out}"
        );
        // Nothing of it is left behind.
        assert_eq!(podman.ok(&["ps", "--all", "--quiet"]), "", "{name}");
    }
}

#[test]
fn podman_exit_status_is_the_commands() {
    require_podman!();
    for (name, runtime) in runtimes() {
        let podman = Podman::new(&runtime);
        let out = podman.run(&podman.run_args(&["--rm"], &["/bin/sh", "-c", "exit 7"]));
        assert_eq!(out.status.code(), Some(7), "{name}: {out:?}");
    }
}

#[test]
fn podman_detaches_execs_stops_and_removes() {
    require_podman!();
    for (name, runtime) in runtimes() {
        let podman = Podman::new(&runtime);
        let id = podman.ok(&podman.run_args(&["-d", "--name", "pal-web"], &["sleep", "1000"]));
        assert_eq!(id.trim().len(), 64, "{name}: {id}");
        let ps = podman.ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
        assert!(ps.starts_with("pal-web Up"), "{name}: {ps}");
        let out = podman.ok(&["exec", "pal-web", "sh", "-c", "echo in; ps -o pid,comm"]);
        assert!(out.starts_with("in\n"), "{name}: {out}");
        assert!(out.contains("sleep"), "{name}: {out}");
        podman.ok(&["stop", "--time", "2", "pal-web"]);
        let ps = podman.ok(&["ps", "--all", "--format", "{{.Names}} {{.Status}}"]);
        assert!(ps.starts_with("pal-web Exited"), "{name}: {ps}");
        podman.ok(&["rm", "pal-web"]);
        assert_eq!(podman.ok(&["ps", "--all", "--quiet"]), "", "{name}");
    }
}

#[test]
fn podman_applies_memory_and_pids_limits() {
    require_podman!();
    for (name, runtime) in runtimes() {
        let podman = Podman::new(&runtime);
        podman.ok(&podman.run_args(
            &[
                "-d",
                "--name",
                "pal-limited",
                "--memory",
                "64m",
                "--pids-limit",
                "50",
            ],
            &["sleep", "1000"],
        ));
        // Read from the host, in the groups of the container's process.
        let pid = podman.ok(&["inspect", "--format", "{{.State.Pid}}", "pal-limited"]);
        let limits = limits_of(pid.trim().parse().unwrap());
        assert_eq!(limits, (Some(50), Some(64 << 20)), "{name}");
        podman.ok(&["rm", "--force", "pal-limited"]);
    }
}

/// The pids and memory limits of the cgroups of process `pid`, as the host sees them (v1
/// controllers or the unified hierarchy).
fn limits_of(pid: u32) -> (Option<u64>, Option<u64>) {
    let groups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mut pids = None;
    let mut memory = None;
    let read =
        |path: String| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    for line in groups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        match controllers {
            "pids" => pids = read(format!("/sys/fs/cgroup/pids{path}/pids.max")),
            "memory" => memory = read(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")),
            "" => {
                let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
                pids = pids.or_else(|| read(dir.join("pids.max").display().to_string()));
                memory = memory.or_else(|| read(dir.join("memory.max").display().to_string()));
            }
            _ => {}
        }
    }
    (pids, memory)
}

#[test]
fn podman_gives_a_terminal() {
    require_podman!();
    if Command::new("script").arg("--version").output().is_err() {
        palisade_test_support::skip("needs script(1) from util-linux");
        return;
    }
    for (name, runtime) in runtimes() {
        let podman = Podman::new(&runtime);
        let mut line = vec!["podman".to_owned()];
        line.extend(podman.global_args());
        line.extend(
            podman
                .run_args(&["--rm", "-it"], &["/bin/sh"])
                .into_iter()
                .map(str::to_owned),
        );
        // `script` gives podman a terminal; the input comes once the shell is up.
        let line = line.join(" ");
        let shell = format!("(sleep 2; printf 'tty; exit 3\\n') | script -qec '{line}' /dev/null");
        let out = Command::new("sh").args(["-c", &shell]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/0"), "{name}: {text}");
        assert_eq!(out.status.code(), Some(3), "{name}: {text}");
    }
}
