//! What the tests that drive real clients share: the busybox root, and the clean-up of what a
//! client left under the test's own directory and cgroup parent.
#![allow(dead_code)]

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
/// runtime root or temporary directory on), deepest first.
const HOST_DIRS: [&str; 5] = [
    "/run/containerd/s",
    "/run/containerd/fifo",
    "/run/containerd",
    "/run/runc",
    "/run/libpod",
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
            for dir in &state.1 {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}
