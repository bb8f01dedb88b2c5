//! What the tests that run a private containerd share (`containerd.rs` through `ctr`, `cri.rs`
//! through the CRI): the busybox image they import, the part of the configuration that keeps
//! every plugin inside the test's directory, and the clean-up of the shims, which outlive
//! containerd by design.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use palisade::image::{ImageConfig, LayerBuilder, LayoutWriter};

/// Whether Debian's containerd and its `ctr` are installed.
pub fn have_containerd() -> bool {
    Command::new("containerd").arg("--version").output().is_ok()
        && Command::new("ctr").arg("--version").output().is_ok()
}

/// Writes at `dir` an OCI layout of one image, tagged with its full name `image` (as `ctr`
/// finds it): the static busybox at `/bin/busybox` and links to the tools the tests use, `cmd`
/// as its command.
pub fn busybox_layout(dir: &Path, image: &str, cmd: &[&str]) {
    let mut layer = LayerBuilder::new();
    layer.dir("/", 0o755);
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "run"] {
        layer.dir(d, if d == "tmp" { 0o1777 } else { 0o755 });
    }
    layer.file_from("/bin/busybox", "/usr/bin/busybox", 0o755);
    for tool in [
        "sh", "echo", "id", "hostname", "cat", "ls", "sleep", "tty", "ps", "readlink",
    ] {
        layer.symlink(format!("/bin/{tool}"), "busybox");
    }
    layer
        .file("/etc/passwd", "root:x:0:0:root:/:/bin/sh\n", 0o644)
        .file("/etc/group", "root:x:0:\n", 0o644);
    let mut config = ImageConfig::default();
    config.cmd = cmd.iter().map(|a| a.to_string()).collect();
    config.env = vec!["PATH=/bin".to_owned()];
    config.working_dir = Some("/".to_owned());
    let mut writer = LayoutWriter::create(dir).unwrap();
    writer.add_layer(&layer).unwrap();
    writer.finish(Some(image), &config).unwrap();
    // ctr finds images by the full name in the index's `org.opencontainers.image.ref.name`.
    let index = std::fs::read_to_string(dir.join("index.json")).unwrap();
    assert!(index.contains(image), "{index}");
}

/// The busybox image `image` as a tar of its OCI layout, at `dir/busybox.tar`, for `ctr image
/// import` (the layout itself at `dir/layout`).
pub fn busybox_archive(dir: &Path, image: &str, cmd: &[&str]) -> PathBuf {
    let layout = dir.join("layout");
    busybox_layout(&layout, image, cmd);
    let archive = dir.join("busybox.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success(), "tar: {tar}");
    archive
}

/// The start of a private instance's `config.toml`: its root, state, sockets (`c.sock`,
/// `t.sock`) and plugin directories under `dir`. Every plugin that would otherwise write
/// outside `dir` is pointed into it or disabled (the snapshotters the tests do not use probe
/// their default roots), as are the `extra_disabled` plugins.
pub fn base_config(dir: &Path, extra_disabled: &[&str]) -> String {
    let at = |sub: &str| dir.join(sub).display().to_string();
    let mut disabled: Vec<&str> = extra_disabled.to_vec();
    disabled.extend([
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
    ]);
    let disabled: String = disabled.iter().map(|p| format!("  \"{p}\",\n")).collect();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
{disabled}]
[grpc]
  address = "{grpc}"
[ttrpc]
  address = "{ttrpc}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = at("root"),
        state = at("state"),
        grpc = at("c.sock"),
        ttrpc = at("t.sock"),
        opt = at("opt"),
    )
}

/// The last `n` lines of the file at `path` (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The processes (pid, argv) whose command line has `-address` naming `socket`: the shims of
/// the instance listening there, which outlive containerd by design.
pub fn shims(socket: &Path) -> Vec<(i32, Vec<String>)> {
    let socket = socket.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let mut raw = Vec::new();
            std::fs::File::open(e.path().join("cmdline"))
                .ok()?
                .read_to_end(&mut raw)
                .ok()?;
            let argv: Vec<String> = raw
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = argv
                .windows(2)
                .any(|w| w[0] == "-address" && w[1] == socket);
            ours.then_some((pid, argv))
        })
        .collect()
}

/// Kills the shims of the instance listening on `socket` (after containerd itself is gone),
/// and removes the host files they leave: their sockets, as the `address` files of the bundles
/// under `bundles` (`STATE/io.containerd.runtime.v2.task/NAMESPACE`) name them
/// (`unix:///run/containerd/s/<hash>`), and the fifos under `/run/containerd/fifo` they hold
/// open.
pub fn kill_shims(socket: &Path, bundles: &Path) {
    let mut host_files: Vec<PathBuf> = std::fs::read_dir(bundles)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|b| std::fs::read_to_string(b.path().join("address")).ok())
        .filter_map(|a| a.trim().strip_prefix("unix://").map(PathBuf::from))
        .filter(|p| p.starts_with("/run/containerd/s/"))
        .collect();
    for (pid, _) in shims(socket) {
        host_files.extend(
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|f| f.starts_with("/run/containerd/fifo/")),
        );
        // SAFETY: kill(2) on a process found by its command line naming our socket.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for f in &host_files {
        let _ = std::fs::remove_file(f);
        if f.starts_with("/run/containerd/fifo/") {
            // The fifo's own directory, once its three fifos are gone.
            let _ = f.parent().map(std::fs::remove_dir);
        }
    }
}

/// Deletes (`delete --force`, with `runtime`) every container whose state is under the
/// runtime root `root`: those the killed shims still held.
pub fn delete_containers(runtime: &Path, root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let _ = Command::new(runtime)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force"])
            .arg(entry.file_name())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
