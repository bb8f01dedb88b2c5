//! The mount options of issue 17 as attack surface: an id-mapped volume must give the sandbox no
//! more than the owner of the host directory has; a tmpfs's options are numbers, so a path
//! cannot smuggle options into the mount; and the mount points a rootless host root makes in
//! its writable layer stay there, whatever the host's links are on their way.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::{sh, stdout_of};
use palisade::overlay::rootfs::Access;
use palisade_test_support::{require_root, TempDir};

/// A directory of uid 4000 (standing for the caller) holding a file of its own and a secret of
/// root's, both `0600`.
fn shared_dir() -> TempDir {
    let dir = TempDir::new("idmap-escape");
    let chown = |p: &Path, uid| std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    std::fs::write(dir.path().join("mine"), "mine\n").unwrap();
    std::fs::write(dir.path().join("secret"), "secret\n").unwrap();
    for (name, mode) in [("mine", 0o600), ("secret", 0o600)] {
        std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(mode))
            .unwrap();
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    chown(dir.path(), 4000);
    chown(&dir.path().join("mine"), 4000);
    dir
}

#[test]
fn an_id_mapped_volume_gives_no_more_than_its_owner_has() {
    require_root!();
    let dir = shared_dir();
    // As uid 1000, mapped to the directory's owner: the owner's file opens (the control), root's
    // secret does not, and nothing it makes belongs to anyone but the owner.
    let out = stdout_of(
        sh(
            "cat /data/mine; cat /data/secret 2>/dev/null || echo secret-refused; \
             stat -c %u /data/secret; echo new > /data/new; \
             chown 0 /data/new 2>/dev/null || echo chown-refused",
        )
        .volume_owned(dir.path(), "/data", Access::ReadWrite, 1000, 1000)
        .user(1000, 1000),
    );
    assert_eq!(out, "mine\nsecret-refused\n65534\nchown-refused\n");
    let new = std::fs::metadata(dir.path().join("new")).unwrap();
    assert_eq!((new.uid(), new.gid()), (4000, 4000));

    // The sandbox's root, which has no id through the mount, makes nothing there: no
    // root-owned file appears in the owner's directory.
    let out = stdout_of(
        sh("touch /data/by-root 2>/dev/null && echo made || echo refused").volume_owned(
            dir.path(),
            "/data",
            Access::ReadWrite,
            1000,
            1000,
        ),
    );
    assert_eq!(out, "refused\n");
    assert!(!dir.path().join("by-root").exists());
    // Control: bound without the map, the same command makes a root-owned file.
    let out = stdout_of(
        sh("touch /data/by-root 2>/dev/null && echo made || echo refused").volume(
            dir.path(),
            "/data",
            Access::ReadWrite,
        ),
    );
    assert_eq!(out, "made\n");
    assert_eq!(
        std::fs::metadata(dir.path().join("by-root")).unwrap().uid(),
        0
    );
}

#[test]
fn a_tmpfs_path_cannot_carry_mount_options() {
    require_root!();
    let path = "/pal,mode=4777,uid=4242,size=0";
    let out = stdout_of(
        sh(&format!("stat -c '%a %u' '{path}'"))
            .tmpfs(path)
            .scratch_size(palisade::Bytes::mib(16)),
    );
    assert_eq!(out, "1777 0\n");
}

#[test]
fn mount_points_of_a_rootless_root_stay_in_its_writable_layer() {
    require_root!();
    let data = TempDir::new("rootless-targets");
    std::fs::write(data.path().join("in"), "in\n").unwrap();
    let tag = format!("pal-esc-{}", std::process::id());
    // One target below a host directory, one through the host's top-level link `/lib`
    // (`usr/lib` on a merged-/usr system), which the sandbox resolves inside its root.
    let deep = format!("/usr/local/{tag}/deep/x");
    let via_link = format!("/lib/{tag}/y");
    let out = stdout_of(
        sh(&format!(
            "cat {deep}/in {via_link}/in; touch /usr/{tag} && echo wrote"
        ))
        .rootless()
        .volume(data.path(), &deep, Access::ReadOnly)
        .volume(data.path(), &via_link, Access::ReadOnly),
    );
    assert_eq!(out, "in\nin\nwrote\n");
    for host in [
        format!("/usr/local/{tag}"),
        format!("/usr/lib/{tag}"),
        format!("/lib/{tag}"),
        format!("/usr/{tag}"),
    ] {
        assert!(!Path::new(&host).exists(), "{host} was made on the host");
    }
}
