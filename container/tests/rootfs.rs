//! Sandboxes with a root file system of their own, against the real kernel. Every mount happens
//! in the sandbox's mount namespace; each test checks that the host's mount table is unchanged.

mod common;

use std::path::Path;

use common::{host_mounts, sh};
use palisade::overlay::rootfs::{Access, Rootfs};
use palisade::{ChildStep, Error, Namespace, Stdio};
use palisade_test_support::{require_root, TempDir};

/// Runs `script` in a sandbox with `rootfs`, returning stdout, and checks that the host's mount
/// table did not change.
fn run(rootfs: Rootfs, script: &str) -> String {
    let before = host_mounts();
    let out = sh(script)
        .rootfs(rootfs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(host_mounts(), before, "the host's mount table changed");
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn host_root_writes_go_to_a_throwaway_layer() {
    require_root!();
    let probe = format!("/etc/palisade-probe-{}", std::process::id());
    // Deleting a host file in the sandbox leaves a whiteout in the throwaway layer only.
    let victim = Path::new("/etc/passwd");
    assert!(victim.exists());
    let out = run(
        Rootfs::host(),
        &format!(
            "echo hi > {probe} && cat {probe} && rm {v} && test ! -e {v} && echo gone",
            v = victim.display()
        ),
    );
    assert_eq!(out, "hi\ngone\n");
    assert!(!Path::new(&probe).exists(), "a write reached the host");
    assert!(victim.exists(), "a delete reached the host");
}

#[test]
fn proc_dev_sys_and_tmp_are_the_sandboxs_own() {
    require_root!();
    let out = run(
        Rootfs::host(),
        "ls /proc | grep -c '^[0-9]'; ls /dev | tr '\\n' ' '; echo; \
         echo x > /dev/null && echo devnull-ok; \
         awk '{for (i = 7; i <= NF; i++) if ($i == \"-\") print $5, $(i + 1)}' /proc/self/mountinfo",
    );
    let mut lines = out.lines();
    let pids: u32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(pids <= 4, "the sandbox sees {pids} processes");
    let dev = lines.next().unwrap();
    for name in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd",
    ] {
        assert!(
            dev.split(' ').any(|n| n == name),
            "/dev lacks {name}: {dev}"
        );
    }
    assert!(
        !dev.contains("sda") && !dev.contains("vda") && !dev.contains("kmsg"),
        "{dev}"
    );
    assert_eq!(lines.next(), Some("devnull-ok"));
    let mounts: Vec<&str> = lines.collect();
    for (point, fstype) in [
        ("/", "overlay"),
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/tmp", "tmpfs"),
    ] {
        assert!(
            mounts.contains(&format!("{point} {fstype}").as_str()),
            "{point} is not {fstype}: {mounts:?}"
        );
    }
}

#[test]
fn masked_and_read_only_kernel_paths() {
    require_root!();
    let out = run(
        Rootfs::host(),
        "head -c 16 /proc/kcore | wc -c; ls -A /sys/firmware | wc -l; \
         (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo writable || echo refused",
    );
    assert_eq!(out, "0\n0\nrefused\n");
}

#[test]
fn volumes_tmpfs_and_read_only_root() {
    require_root!();
    let rw = TempDir::new("vol-rw");
    let ro = TempDir::new("vol-ro");
    std::fs::write(ro.path().join("in"), "from host\n").unwrap();
    let rootfs = Rootfs::host()
        .volume(rw.path(), "/palisade/rw", Access::ReadWrite)
        .volume(ro.path(), "/palisade/ro", Access::ReadOnly)
        .tmpfs("/scratch")
        .read_only(true);
    let out = run(
        rootfs,
        "cat /palisade/ro/in; (echo x > /palisade/ro/new) 2>/dev/null || echo ro-refused; \
         echo out > /palisade/rw/out; echo s > /scratch/s && cat /scratch/s; \
         (touch /palisade-root-probe) 2>/dev/null || echo root-refused",
    );
    assert_eq!(out, "from host\nro-refused\ns\nroot-refused\n");
    assert_eq!(
        std::fs::read_to_string(rw.path().join("out")).unwrap(),
        "out\n"
    );
    assert!(!ro.path().join("new").exists());
}

#[test]
fn a_directory_as_root() {
    require_root!();
    let root = TempDir::new("rootdir");
    // A root with the host's /usr, and the merged-/usr links Debian has.
    for link in ["bin", "lib", "lib64", "sbin"] {
        if Path::new("/usr").join(link).exists() {
            std::os::unix::fs::symlink(format!("usr/{link}"), root.path().join(link)).unwrap();
        }
    }
    let rootfs = Rootfs::dir(root.path()).volume("/usr", "/usr", Access::ReadOnly);
    let out = run(rootfs, "ls / | tr '\\n' ' '; echo; touch /written");
    for name in ["bin", "dev", "proc", "sys", "tmp", "usr"] {
        assert!(
            out.split_whitespace().any(|n| n == name),
            "/ lacks {name}: {out}"
        );
    }
    // A directory root is bound read-write: the write lands in it.
    assert!(root.path().join("written").exists());
}

#[test]
fn bad_rootfs_input_gets_typed_errors() {
    require_root!();
    let err = sh("true")
        .rootfs(Rootfs::host().volume("/palisade-no-such-dir", "/x", Access::ReadWrite))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Rootfs(_)), "{err}");
    let err = sh("true")
        .rootfs(Rootfs::host().volume("/tmp", "relative", Access::ReadWrite))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Rootfs(_)), "{err}");
    let err = sh("true")
        .namespaces(Namespace::PID)
        .rootfs(Rootfs::host())
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
    let err = sh("true")
        .rootfs(Rootfs::dir("/palisade-no-such-root"))
        .build()
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENOENT), "{err}");
    // A mount step the kernel refuses is named.
    let before = host_mounts();
    let err = sh("true")
        .rootfs(Rootfs::host().tmpfs("/proc/palisade-no-mkdir-here"))
        .spawn()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Child {
                step: ChildStep::Rootfs,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("/proc/palisade-no-mkdir-here"),
        "{err}"
    );
    assert_eq!(host_mounts(), before);
}

#[test]
fn a_tmpfs_takes_its_mode_size_and_noexec_and_is_bounded_by_default() {
    use palisade::overlay::rootfs::Tmpfs;
    require_root!();
    let root = Rootfs::host()
        .tmpfs_with(Tmpfs {
            guest: "/run/pal".into(),
            mode: 0o755,
            size: Some(1 << 20),
            noexec: true,
        })
        .tmpfs("/mnt/pal")
        .scratch_size(palisade::Bytes::mib(32).get());
    let mut b = sh("stat -c %a /run/pal /mnt/pal; grep -E ' /(run|mnt)/pal ' /proc/mounts");
    b.rootfs(root);
    let out = common::stdout_of(&mut b);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..2], ["755", "1777"], "{out}");
    let run = lines.iter().find(|l| l.contains(" /run/pal ")).unwrap();
    assert!(
        run.contains("size=1024k") && run.contains("noexec"),
        "{run}"
    );
    // Without a size of its own: the scratch bound, never half of the host's memory.
    let mnt = lines.iter().find(|l| l.contains(" /mnt/pal ")).unwrap();
    assert!(
        mnt.contains("size=32768k") && !mnt.contains("noexec"),
        "{mnt}"
    );
}
