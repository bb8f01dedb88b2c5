//! Mount options users expect (issue 17): tmpfs with a size, mode and owner; a mount replacing
//! the one at its place instead of covering it; volumes id-mapped to the sandbox's user; and a
//! rootless sandbox's writable throwaway root, with volume and tmpfs targets that do not exist
//! in the host's system. Every test reads the sandbox's own `/proc/self/mountinfo`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{run_example_code, sh, stdout_of};
use palisade::overlay::rootfs::{Access, Tmpfs, TmpfsOptions};
use palisade::{IdMap, IdMapping};
use palisade_test_support::{require_root, run_ignored_test_as, TempDir};

/// The mounts at `point` in the sandbox's mountinfo, as `fstype options` lines, printed by the
/// shell snippet this returns.
fn mounts_at(point: &str) -> String {
    format!("awk '$5 == \"{point}\" {{for (i = 7; i <= NF; i++) if ($i == \"-\") print $(i + 1), $(i + 3)}}' /proc/self/mountinfo")
}

#[test]
fn a_tmpfs_takes_its_size_mode_and_owner() {
    require_root!();
    let tmpfs = Tmpfs {
        mode: 0o750,
        size: Some(3 << 20),
        ..Tmpfs::new("/run/pal-opts")
    };
    let options = TmpfsOptions {
        uid: Some(1000),
        gid: Some(1001),
        ..TmpfsOptions::default()
    };
    let out = stdout_of(
        sh(&format!(
            "stat -c '%a %u %g' /run/pal-opts; {}",
            mounts_at("/run/pal-opts")
        ))
        .tmpfs_with(tmpfs, options),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"750 1000 1001"), "{out}");
    assert_eq!(lines.len(), 2, "one mount at /run/pal-opts: {out}");
    assert!(
        lines[1].starts_with("tmpfs ") && lines[1].contains("size=3072k"),
        "{out}"
    );
    assert!(
        lines[1].contains("uid=1000") && lines[1].contains("gid=1001"),
        "{out}"
    );
}

#[test]
fn a_tmpfs_replaces_the_mount_at_its_place() {
    require_root!();
    let data = TempDir::new("replaced-volume");
    let small = |guest: &str| Tmpfs {
        size: Some(2 << 20),
        ..Tmpfs::new(guest)
    };
    let script = [mounts_at("/tmp"), mounts_at("/dev/shm"), mounts_at("/data")].join("; echo --; ");
    let out = stdout_of(
        sh(&script)
            .volume(data.path(), "/data", Access::ReadWrite)
            .tmpfs_with(small("/tmp"), TmpfsOptions::default())
            .tmpfs_with(small("/dev/shm"), TmpfsOptions::default())
            .tmpfs_with(small("/data"), TmpfsOptions::default()),
    );
    // Each place holds exactly one mount, the caller's 2 MiB tmpfs: the sandbox's own /tmp and
    // /dev/shm and the volume are not left underneath it.
    let sections: Vec<&str> = out.split("--\n").collect();
    assert_eq!(sections.len(), 3, "{out}");
    for section in sections {
        let lines: Vec<&str> = section.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(lines[0].contains("size=2048k"), "{out}");
    }
}

#[test]
fn an_id_mapped_volume_is_owned_by_the_sandboxs_user() {
    require_root!();
    let dir = TempDir::new("owned-volume");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Positive control: uid 1000 cannot write to the caller's (root's) directory bound as is.
    let plain = sh("touch /data/plain 2>/dev/null && echo wrote || echo refused")
        .volume(dir.path(), "/data", Access::ReadWrite)
        .user(1000, 1000)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "refused\n");
    // Id-mapped to uid 1000: it owns the directory and writes to it, and its file is the
    // caller's on the host.
    let out = stdout_of(
        sh("stat -c '%u %g' /data; echo hi > /data/made; stat -c '%u %g' /data/made")
            .volume_owned(dir.path(), "/data", Access::ReadWrite, 1000, 1000)
            .user(1000, 1000),
    );
    assert_eq!(out, "1000 1000\n1000 1000\n");
    let made = std::fs::metadata(dir.path().join("made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0));

    // In a user namespace, the ids are the sandbox's: its root (kernel uid 100000) owns the
    // mount, and what it makes is the caller's.
    let map = IdMap::new([IdMapping::new(0, 100_000, 65_536)]).unwrap();
    let out = stdout_of(
        sh("id -u; echo ns > /data/from-ns; stat -c '%u' /data/from-ns")
            .uid_map(map.clone())
            .gid_map(map.clone())
            .volume_owned(dir.path(), "/data", Access::ReadWrite, 0, 0),
    );
    assert_eq!(out, "0\n0\n");
    let made = std::fs::metadata(dir.path().join("from-ns")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0));
    // An id the namespace does not map is named at build.
    let err = sh("true")
        .uid_map(map.clone())
        .gid_map(map)
        .volume_owned(dir.path(), "/data", Access::ReadWrite, 70_000, 0)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err,
            palisade::Error::Unmapped {
                kind: "volume owner uid",
                id: 70_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_rootless_sandbox_gets_a_writable_throwaway_root() {
    require_root!();
    let (passed, text) = run_ignored_test_as(
        64_000,
        "rootless_writable_root_inner",
        &[("PALISADE_MOUNTS_INNER", "1")],
    );
    assert!(passed, "{text}");
}

/// Runs only as the unprivileged user of `a_rootless_sandbox_gets_a_writable_throwaway_root`.
#[test]
#[ignore = "run by a_rootless_sandbox_gets_a_writable_throwaway_root"]
fn rootless_writable_root_inner() {
    assert!(std::env::var_os("PALISADE_MOUNTS_INNER").is_some());
    // SAFETY: a getter with no failure mode.
    assert_ne!(unsafe { libc::geteuid() }, 0, "must run unprivileged");
    let data = TempDir::new("rootless-data");
    let probe = format!("/palisade-rootless-probe-{}", std::process::id());
    let out = stdout_of(
        sh(&format!(
            "echo data > /data/out; echo s > /scratch/s; cat /scratch/s; \
             echo root > {probe}; cat {probe}; touch /etc/pal-new && echo etc-writable; \
             mkdir /usr/pal-new && echo usr-writable; ls /usr/bin/env; \
             test -e /etc/shadow || echo no-shadow; ls -A /home | wc -l; \
             cat /usr/local/pal/deep/data/out; {}",
            mounts_at("/")
        ))
        .rootless()
        .volume(data.path(), "/data", Access::ReadWrite)
        .volume(data.path(), "/usr/local/pal/deep/data", Access::ReadOnly)
        .tmpfs("/scratch"),
    );
    assert_eq!(
        out.lines().take(8).collect::<Vec<_>>(),
        [
            "s",
            "root",
            "etc-writable",
            "usr-writable",
            "/usr/bin/env",
            "no-shadow",
            "0",
            "data"
        ],
        "{out}"
    );
    // The root is the scratch space; nothing of it reached the host.
    assert!(
        out.lines().nth(8).is_some_and(|l| l.starts_with("tmpfs ")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(data.path().join("out")).unwrap(),
        "data\n"
    );
    assert!(!std::path::Path::new(&probe).exists());
    assert!(!std::path::Path::new("/etc/pal-new").exists());
    assert!(!std::path::Path::new("/usr/pal-new").exists());
}

#[test]
fn the_run_example_parses_tmpfs_mount_and_env_file() {
    require_root!();
    for (bad, says) in [
        ("--tmpfs=/run:size=0", "size"),
        ("--tmpfs=/run:mode=17777", "mode"),
        ("--tmpfs=/run:size=lots", "size"),
        ("--tmpfs=/run:uid=-1", "uid"),
        ("--tmpfs=/run:nosuid=0,uid=0", "unknown option"),
        ("--mount=type=volume,src=cache,dst=/cache", "named volumes"),
        ("--mount=type=bind,dst=/x", "source"),
        (
            "--mount=type=tmpfs,dst=/x,propagation=shared",
            "unknown key",
        ),
    ] {
        let (code, err) = run_example_code(&[bad, "--", "true"]);
        assert_eq!(code, 125, "{bad}: {err}");
        assert!(err.contains(says), "{bad}: {err}");
    }
    let dir = TempDir::new("run-mount");
    std::fs::write(dir.path().join("in"), "bound\n").unwrap();
    let env_file = dir.path().join("env");
    std::fs::write(
        &env_file,
        "# a comment\n\nPAL_A=one two\n  PAL_B=\"quoted\"\nPAL_FROM_CALLER\nPAL_UNSET_HERE\n",
    )
    .unwrap();
    let mount = format!(
        "--mount=type=bind,source={},target=/in,readonly",
        dir.path().display()
    );
    let env_arg = format!("--env-file={}", env_file.display());
    let out = std::process::Command::new(common::example("run"))
        .args([
            "--tmpfs=/tmp:size=2m,mode=700,uid=7,gid=8",
            "--mount=type=tmpfs,dst=/t2,tmpfs-size=1m,tmpfs-mode=750",
            &mount,
            &env_arg,
            "--",
            "sh",
            "-c",
        ])
        .arg(format!(
            "stat -c '%a %u %g' /tmp /t2; cat /in/in; touch /in/x 2>/dev/null || echo ro; \
             echo \"$PAL_A|$PAL_B|$PAL_FROM_CALLER|${{PAL_UNSET_HERE-unset}}\"; {}",
            mounts_at("/tmp")
        ))
        .env("PAL_FROM_CALLER", "passed")
        .env_remove("PAL_UNSET_HERE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        [
            "700 7 8",
            "750 0 0",
            "bound",
            "ro",
            "one two|\"quoted\"|passed|unset"
        ],
        "{stdout}"
    );
    // The sandbox's own /tmp is not left under the caller's tmpfs.
    assert_eq!(lines.len(), 6, "{stdout}");
    assert!(lines[5].contains("size=2048k"), "{stdout}");
}
