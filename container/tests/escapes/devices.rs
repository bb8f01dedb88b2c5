//! Devices. The sandbox's `/dev` holds a few harmless nodes; a node the command makes
//! (`CAP_MKNOD` is among Docker's defaults) or one an image ships must not open the host's disks
//! or memory. Every device here is only read, a few bytes at most.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{sh, stdout_of};
use palisade::overlay::rootfs::{Access, Rootfs};
use palisade_test_support::{require_root, TempDir};

/// A loop device attached, read-only, to a file of the test's with a marker in it: a block
/// device of the host whose contents the test knows (`losetup(8)`); detached on drop.
struct Loop {
    dev: PathBuf,
    /// Holds the backing file, removed after the device is detached.
    _dir: TempDir,
}

impl Loop {
    fn new() -> Loop {
        let dir = TempDir::new("loop");
        let file = dir.path().join("disk.img");
        let mut data = MARKER.as_bytes().to_vec();
        data.resize(4096, 0);
        std::fs::write(&file, data).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(&file)
            .output()
            .expect("run losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Loop {
            dev: dev.into(),
            _dir: dir,
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

const MARKER: &str = "palisade-disk-marker";

/// `major minor` of a block device.
fn numbers(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

#[test]
fn the_hosts_disks_cannot_be_read_through_a_node_made_in_the_sandbox() {
    require_root!();
    let disk = Loop::new();
    let (major, minor) = numbers(std::fs::metadata(&disk.dev).unwrap().rdev());
    // The control: the host reads the marker through the device.
    let head = std::fs::read(&disk.dev).unwrap();
    assert!(head.starts_with(MARKER.as_bytes()));
    // And the block device the host's `/` lives on (which some hosts refuse even to root).
    let (root_major, root_minor) = numbers(std::fs::metadata("/").unwrap().dev());
    let script = format!(
        "for p in /tmp/d /root/d /d; do \
           mknod $p b {major} {minor} 2>/dev/null && made=made || made=refused; \
           echo \"$p $made $(head -c {len} $p 2>/dev/null)\"; \
           mknod $p-root b {root_major} {root_minor} 2>/dev/null; \
           echo \"$p-root $(head -c 512 $p-root 2>/dev/null | wc -c)\"; \
         done; \
         echo \"/dev/zero control $(head -c 512 /dev/zero | wc -c)\"; \
         echo x > /dev/null && echo '/dev/null control ok'",
        len = MARKER.len()
    );
    let out = stdout_of(&mut sh(&script));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 8, "{out}");
    assert_eq!(
        lines[6..],
        ["/dev/zero control 512", "/dev/null control ok"],
        "{out}"
    );
    assert!(
        !out.contains(MARKER),
        "the sandbox read the host's block device {major}:{minor}:\n{out}"
    );
    for line in lines[..6].iter().filter(|l| l.contains("-root ")) {
        assert!(
            line.ends_with(" 0"),
            "the sandbox read the host's disk {root_major}:{root_minor}: {line}\n{out}"
        );
    }
}

/// Makes a character device node `major:minor` at `path`, readable and writable by all.
fn mknod(path: &Path, major: u32, minor: u32) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mknod(2) creates one node in the test's own directory.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
}

#[test]
fn device_nodes_an_image_ships_do_not_open() {
    require_root!();
    let dir = TempDir::new("image-devices");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("usr")).unwrap();
    for link in ["bin", "lib", "lib64", "sbin"] {
        if Path::new("/usr").join(link).exists() {
            std::os::unix::fs::symlink(format!("usr/{link}"), root.join(link)).unwrap();
        }
    }
    // Harmless stand-ins for what a hostile image would ship (1:1 is /dev/mem): null and zero.
    mknod(&root.join("nul"), 1, 3);
    mknod(&root.join("zero"), 1, 5);
    let mut b = sh("echo \"/zero $(head -c 4 /zero 2>/dev/null | wc -c)\"; \
         (echo x > /nul) 2>/dev/null && echo '/nul opened' || echo '/nul refused'; \
         echo \"/dev/zero $(head -c 4 /dev/zero | wc -c)\"; \
         (echo x > /dev/null) && echo '/dev/null opened'");
    b.rootfs(Rootfs::dir(&root).volume("/usr", "/usr", Access::ReadOnly))
        .user(1000, 1000)
        .cap_drop_all();
    let out = stdout_of(&mut b);
    let lines: Vec<&str> = out.lines().collect();
    // The control: the sandbox's own /dev works for the same unprivileged user.
    assert_eq!(lines[2..], ["/dev/zero 4", "/dev/null opened"], "{out}");
    assert_eq!(
        lines[..2],
        ["/zero 0", "/nul refused"],
        "a device node shipped in the image opened"
    );
}

/// A command given `CAP_SYS_ADMIN` can mount a file system of its own without `nodev` (the
/// default profile then allows `mount(2)`), so `nodev` alone no longer keeps a node it makes
/// from opening: the sandbox's cgroup carries the device policy, enforced by the kernel for
/// every file system. Here the node is the kernel log (char 1:11), only opened for reading.
#[test]
fn a_command_that_can_mount_still_cannot_open_devices_outside_the_policy() {
    require_root!();
    let script = "mkdir -p /m && mount -t tmpfs none /m && mknod /m/kmsg c 1 11 && \
                  if (: < /m/kmsg) 2>/dev/null; then echo opened; else echo refused; fi";
    // CAP_SYSLOG: reading the log may need it (`dmesg_restrict`, `proc_sys_kernel(5)`).
    let mut b = sh(script);
    b.cap_add(palisade::Capability::CAP_SYS_ADMIN)
        .cap_add(palisade::Capability::CAP_SYSLOG);
    assert_eq!(stdout_of(&mut b), "refused\n");
    // Control: the same with the device allowed in the policy opens it.
    let mut b = sh(script);
    b.cap_add(palisade::Capability::CAP_SYS_ADMIN)
        .cap_add(palisade::Capability::CAP_SYSLOG)
        .device("c 1:11 r".parse().unwrap());
    assert_eq!(stdout_of(&mut b), "opened\n");
}

/// The uid the unprivileged half below runs as: no passwd entry needed.
const UNPRIVILEGED: u32 = 64_018;

/// An unprivileged caller's sandbox has no device policy (only `CAP_SYS_ADMIN` in the initial
/// user namespace may write one): the kernel alone keeps devices out of reach. The sandbox's
/// root, given `CAP_SYS_ADMIN` and `CAP_MKNOD` over its user namespace, mounts a tmpfs and makes
/// nodes: a FIFO (the control, which it may), and `null` and a host disk (which it may not,
/// `mknod(2)`), also in its `/tmp`.
#[test]
fn an_unprivileged_callers_sandbox_makes_no_device_node() {
    require_root!();
    let (major, minor) = numbers(std::fs::metadata("/").unwrap().dev());
    let (passed, text) = palisade_test_support::run_ignored_test_as(
        UNPRIVILEGED,
        "devices::unprivileged_device_nodes_inner",
        &[
            ("PALISADE_DEV_INNER", "1"),
            ("PALISADE_DEV_DISK", &format!("{major} {minor}")),
        ],
    );
    assert!(passed, "as uid {UNPRIVILEGED}:\n{text}");
}

#[test]
#[ignore = "run by an_unprivileged_callers_sandbox_makes_no_device_node"]
fn unprivileged_device_nodes_inner() {
    assert!(std::env::var_os("PALISADE_DEV_INNER").is_some());
    let disk = std::env::var("PALISADE_DEV_DISK").unwrap();
    let script = format!(
        "mkdir -p /m && mount -t tmpfs none /m && echo mounted; \
         mkfifo /m/fifo && echo fifo-made; \
         for p in /m /tmp; do \
           mknod $p/null c 1 3 2>/dev/null && echo $p-null-made || echo $p-null-refused; \
           mknod $p/disk b {disk} 2>/dev/null && echo $p-disk-made || echo $p-disk-refused; \
         done; \
         echo x > /dev/null && echo dev-null-ok"
    );
    let mut b = sh(&script);
    b.rootless()
        .cap_add(palisade::Capability::CAP_SYS_ADMIN)
        .cap_add(palisade::Capability::CAP_MKNOD);
    assert_eq!(
        stdout_of(&mut b),
        "mounted\nfifo-made\n/m-null-refused\n/m-disk-refused\n/tmp-null-refused\n\
         /tmp-disk-refused\ndev-null-ok\n"
    );
}
