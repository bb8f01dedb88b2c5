//! What the tests that drive real clients share: the busybox root, and the clean-up of what a
//! client left under the test's own directory and cgroup parent.
#![allow(dead_code)]

pub mod containerd;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Makes `root` a root file system of the static busybox, with links for the tools the tests
/// use and a `root` user and group.
pub fn busybox_root(root: &Path) {
    for dir in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/usr/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in [
        "sh", "echo", "id", "hostname", "cat", "ls", "sleep", "tty", "grep", "ps", "stty",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Unmounts (lazily) every mount at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

/// Removes the group `parent` (as `/proc/<pid>/cgroup` names it) and the groups right beneath
/// it, deepest first, in every hierarchy: empty once the client's containers are gone.
pub fn remove_cgroups(parent: &str) {
    let parent = parent.trim_start_matches('/');
    let mut groups: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(parent))
        .chain([Path::new("/sys/fs/cgroup").join(parent)])
        .filter(|g| g.is_dir())
        .flat_map(|g| {
            let mut all = vec![g.clone()];
            all.extend(
                std::fs::read_dir(&g)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir()),
            );
            all
        })
        .collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.components().count()));
    for g in groups {
        let _ = std::fs::remove_dir(g);
    }
}

/// The host directories the clients make beside the test's own (the shim's sockets under
/// `/run/containerd`, `/run/runc` and `/run/libpod` of podman's exit command, which passes no
/// runtime root or temporary directory on), deepest first, and podman's lock file in
/// `/dev/shm` (its shared-memory locks, which no storage option moves).
const HOST_DIRS: [&str; 6] = [
    "/run/containerd/s",
    "/run/containerd/fifo",
    "/run/containerd",
    "/run/runc",
    "/run/libpod",
    "/dev/shm/libpod_lock",
];

/// Which of [`HOST_DIRS`] existed before this test binary's first client, and how many clients
/// live now.
static HOST_DIRS_STATE: std::sync::Mutex<(usize, Vec<&'static str>)> =
    std::sync::Mutex::new((0, Vec::new()));

/// Held by each client instance: the last one dropped removes what of [`HOST_DIRS`] did not
/// exist before the first (if it is empty), so tests running side by side never remove a
/// directory another still uses.
pub struct HostDirs(());

impl HostDirs {
    pub fn acquire() -> HostDirs {
        let mut state = HOST_DIRS_STATE.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 == 0 {
            state.1 = HOST_DIRS
                .into_iter()
                .filter(|d| !Path::new(d).exists())
                .collect();
        }
        state.0 += 1;
        HostDirs(())
    }
}

impl Drop for HostDirs {
    fn drop(&mut self) {
        let mut state = HOST_DIRS_STATE.lock().unwrap_or_else(|e| e.into_inner());
        state.0 -= 1;
        if state.0 == 0 {
            for path in &state.1 {
                let path = Path::new(path);
                let _ = if path.is_dir() {
                    std::fs::remove_dir(path)
                } else {
                    std::fs::remove_file(path)
                };
            }
        }
    }
}

/// The binary under test: this package's, or another build of it named by `PALISADE_OCI_BIN`
/// (`tests/all.sh` runs the runtime's suites again against its static build).
pub static BIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    std::env::var("PALISADE_OCI_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_palisade-oci").into())
});

/// What one invocation of the binary did.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub out: String,
    pub err: String,
}

impl Ran {
    /// Asserts that it succeeded.
    pub fn ok(self) -> Ran {
        assert_eq!(self.code, 0, "failed: {self:?}");
        self
    }

    /// Its stdout, as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.out).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A bundle with a busybox root, a state root, and the containers a test made, deleted on
/// drop: the binary driven as containerd's shim and podman drive runc.
pub struct Env {
    pub dir: palisade_test_support::TempDir,
    pub root: PathBuf,
    pub bundle: PathBuf,
    ids: Vec<String>,
    calls: std::sync::atomic::AtomicUsize,
}

impl Env {
    /// A bundle (from the binary's own `spec`) whose process runs `args`, not on a terminal,
    /// in `namespaces`, with busybox's `tools` in its root.
    pub fn new(tag: &str, args: &[&str], namespaces: &[&str], tools: &[&str]) -> Env {
        let dir = palisade_test_support::TempDir::new(&format!("oci-{tag}"));
        let root = dir.path().join("state");
        let bundle = dir.path().join("bundle");
        let bin = bundle.join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/usr/bin/busybox", bin.join("busybox")).unwrap();
        for tool in tools {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
        }
        let env = Env {
            dir,
            root,
            bundle,
            ids: Vec::new(),
            calls: std::sync::atomic::AtomicUsize::new(0),
        };
        env.oci(&["spec", "--bundle", env.bundle()]).ok();
        env.edit_config(|c| {
            c["process"]["terminal"] = false.into();
            c["process"]["args"] = args.into();
            c["linux"]["namespaces"] = namespaces
                .iter()
                .map(|t| serde_json::json!({ "type": t }))
                .collect::<Vec<_>>()
                .into();
        });
        env
    }

    /// Changes the bundle's `config.json`.
    pub fn edit_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// A fresh container id, deleted when the test ends.
    pub fn id(&mut self, name: &str) -> String {
        let id = format!("pal-{name}-{}", std::process::id());
        self.ids.push(id.clone());
        id
    }

    /// Runs the binary with `--root` and `args`.
    pub fn oci(&self, args: &[&str]) -> Ran {
        self.run(&["--root", self.root.to_str().unwrap()], args, None)
    }

    /// Runs the binary with the global options `global` (and no `--root` unless given).
    pub fn oci_with(&self, global: &[&str], args: &[&str]) -> Ran {
        self.run(global, args, None)
    }

    /// Runs the binary with `--root`, `args`, and `input` on its stdin.
    pub fn oci_stdin(&self, args: &[&str], input: &str) -> Ran {
        self.run(&["--root", self.root.to_str().unwrap()], args, Some(input))
    }

    /// One invocation. Its stdio are files, not pipes: a container inherits the runtime's
    /// stdio, and would hold a pipe open for as long as it runs.
    fn run(&self, global: &[&str], args: &[&str], input: Option<&str>) -> Ran {
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let at = |what: &str| self.dir.path().join(format!("{what}-{n}"));
        let stdin = match input {
            Some(text) => {
                std::fs::write(at("in"), text).unwrap();
                std::process::Stdio::from(std::fs::File::open(at("in")).unwrap())
            }
            None => std::process::Stdio::null(),
        };
        let status = Command::new(&*BIN)
            .args(global)
            .args(args)
            .stdin(stdin)
            .stdout(std::fs::File::create(at("out")).unwrap())
            .stderr(std::fs::File::create(at("err")).unwrap())
            .status()
            .unwrap();
        Ran {
            code: status.code().unwrap_or(-1),
            out: std::fs::read_to_string(at("out")).unwrap(),
            err: std::fs::read_to_string(at("err")).unwrap(),
        }
    }

    /// The bundle's directory.
    pub fn bundle(&self) -> &str {
        self.bundle.to_str().unwrap()
    }

    /// `state ID`, as JSON.
    pub fn state(&self, id: &str) -> serde_json::Value {
        self.oci(&["state", id]).ok().json()
    }

    /// The container's status.
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"].as_str().unwrap().to_owned()
    }

    /// Waits until the container's status is `want`.
    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = self.status(id);
            if now == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id} stayed {now}, not {want}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.ids) {
            let _ = self.oci(&["delete", "--force", &id]);
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// Whether process `pid` runs: its `/proc` entry exists and it is no zombie (a container's
/// process whose runtime exited is reaped by the host's init, which may take its time).
pub fn alive(pid: u64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}
