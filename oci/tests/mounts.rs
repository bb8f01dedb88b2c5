//! `mounts` options, `linux.devices` and `linux.rootfsPropagation` through the `palisade-oci`
//! binary: a busybox root, the container reporting what it sees, and the attacks through a
//! bundle's device paths.

use palisade_test_support::{require_root, TempDir};
use serde_json::json;

mod common;

use common::Env;

/// The tools the containers use.
const TOOLS: [&str; 8] = ["sh", "cat", "grep", "head", "wc", "stat", "echo", "ls"];

/// A bundle whose process runs `script` with `sh -c`, in PID, mount, IPC, UTS and network
/// namespaces of its own.
fn bundle_env(tag: &str, script: &str) -> Env {
    Env::new(
        tag,
        &["sh", "-c", script],
        &["pid", "mount", "ipc", "uts", "network"],
        &TOOLS,
    )
}

/// The mount options and optional fields of the mountinfo line for `point` in `mountinfo`
/// (`proc_pid_mountinfo(5)`).
fn mount_line<'a>(mountinfo: &'a str, point: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(point))
        .unwrap_or_else(|| panic!("no mount at {point}: {mountinfo}"));
    let fields: Vec<&str> = line.split(' ').collect();
    let options = fields[5].split(',').collect();
    let optional = fields[6..]
        .iter()
        .take_while(|f| **f != "-")
        .copied()
        .collect();
    (options, optional)
}

#[test]
fn bind_and_tmpfs_options_are_applied() {
    require_root!();
    let source = TempDir::new("oci-mnt-src");
    std::fs::write(source.path().join("file"), "from the host\n").unwrap();
    let mut env = bundle_env(
        "mnt-opts",
        "cat /data/file /flat/file /nest/data/file; stat -c '%u:%g %a' /run/pal; \
         cat /proc/self/mountinfo",
    );
    env.edit_config(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(
            json!({"destination": "/data", "type": "bind", "source": source.path(),
            "options": ["rbind", "nosuid", "noexec", "ro", "rprivate", "relatime"]}),
        );
        mounts.push(
            json!({"destination": "/flat", "type": "bind", "source": source.path(),
            "options": ["bind", "rw", "nodev", "noatime", "shared"]}),
        );
        mounts.push(
            json!({"destination": "/run/pal", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "mode=750", "uid=1234", "gid=99", "nr_inodes=16",
                        "ro", "strictatime"]}),
        );
        // In the bundle's order: a bind mount inside a tmpfs given before it.
        mounts.push(json!({"destination": "/nest", "type": "tmpfs", "source": "tmpfs"}));
        mounts.push(
            json!({"destination": "/nest/data", "type": "bind", "source": source.path(),
            "options": ["rbind"]}),
        );
    });
    let id = env.id("mnt-opts");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]).ok();
    let out = ran.out;
    assert!(
        out.starts_with("from the host\nfrom the host\nfrom the host\n1234:99 750\n"),
        "{out}"
    );
    let (data, data_fields) = mount_line(&out, "/data");
    for flag in ["ro", "nosuid", "nodev", "noexec", "relatime"] {
        assert!(data.contains(&flag), "/data lacks {flag}: {data:?}");
    }
    assert!(!data_fields.iter().any(|f| f.starts_with("shared:")));
    let (flat, flat_fields) = mount_line(&out, "/flat");
    for flag in ["rw", "nodev", "noatime"] {
        assert!(flat.contains(&flag), "/flat lacks {flag}: {flat:?}");
    }
    assert!(!flat.contains(&"noexec"), "{flat:?}");
    // Shared in the container's own namespace, never with the host's: the host has no
    // mount of that peer group.
    let group = flat_fields
        .iter()
        .find(|f| f.starts_with("shared:"))
        .unwrap_or_else(|| panic!("/flat is not shared: {flat_fields:?}"));
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host.lines().any(|l| l
            .split(' ')
            .any(|f| f == *group || f == group.replace("shared", "master"))),
        "the host shares {group}"
    );
    let (run, _) = mount_line(&out, "/run/pal");
    for flag in ["ro", "nosuid", "nodev"] {
        assert!(run.contains(&flag), "/run/pal lacks {flag}: {run:?}");
    }
    // Nothing of it is left on the host.
    assert!(!host.contains(source.path().to_str().unwrap()));
}

#[test]
fn an_id_mapped_bind_mount_shows_the_ids_mapped() {
    require_root!();
    use std::os::unix::fs::MetadataExt;
    let source = TempDir::new("oci-idmap");
    for (name, owner) in [("mapped", 1000), ("unmapped", 0)] {
        let path = source.path().join(name);
        std::fs::write(&path, "").unwrap();
        std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
    }
    std::os::unix::fs::chown(source.path(), Some(1000), Some(1000)).unwrap();
    let mut env = bundle_env(
        "mnt-idmap",
        "stat -c '%u:%g' /data/mapped /data/unmapped; echo x > /data/made",
    );
    // The file system's 1000 shown as 0 to the container's root, as runc writes the map.
    env.edit_config(|c| {
        let map = json!([{"containerID": 1000, "hostID": 0, "size": 1}]);
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": source.path(),
            "options": ["rbind", "idmap"], "uidMappings": map, "gidMappings": map}));
    });
    // Two containers from one bundle: each gets a mount of its own.
    for n in 0..2 {
        let id = env.id(&format!("mnt-idmap{n}"));
        let out = env.oci(&["run", &id, "--bundle", env.bundle()]).ok().out;
        assert_eq!(out, "0:0\n65534:65534\n");
        let made = std::fs::metadata(source.path().join("made")).unwrap();
        assert_eq!((made.uid(), made.gid()), (1000, 1000));
        std::fs::remove_file(source.path().join("made")).unwrap();
    }
    // Maps of one kind only are refused.
    env.edit_config(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts[7].as_object_mut().unwrap().remove("gidMappings");
    });
    let id = env.id("mnt-idmap-half");
    let ran = env.oci(&["create", &id, "--bundle", env.bundle()]);
    assert!(ran.err.contains("mounts[7]"), "{ran:?}");
}

#[test]
fn root_propagation_is_applied_in_the_container_only() {
    require_root!();
    let mut env = bundle_env("mnt-prop", "cat /proc/self/mountinfo");
    env.edit_config(|c| c["linux"]["rootfsPropagation"] = json!("rshared"));
    let id = env.id("mnt-prop");
    let out = env.oci(&["run", &id, "--bundle", env.bundle()]).ok().out;
    for point in ["/", "/proc", "/tmp"] {
        let (_, fields) = mount_line(&out, point);
        assert!(
            fields.iter().any(|f| f.starts_with("shared:")),
            "{point} is not shared: {out}"
        );
    }
    // runc's default, rslave: every mount private, nothing shared.
    let mut env = bundle_env("mnt-slave", "cat /proc/self/mountinfo");
    env.edit_config(|c| c["linux"]["rootfsPropagation"] = json!("rslave"));
    let id = env.id("mnt-slave");
    let out = env.oci(&["run", &id, "--bundle", env.bundle()]).ok().out;
    let (_, fields) = mount_line(&out, "/");
    assert!(fields.is_empty(), "{fields:?}");
}

#[test]
fn an_extra_device_node_opens() {
    require_root!();
    let mut env = bundle_env(
        "mnt-dev",
        "stat -c '%t:%T %a %u:%g' /dev/palfull; head -c 4 /dev/palfull | wc -c; \
         (echo x > /dev/palfull) 2>/dev/null || echo full",
    );
    env.edit_config(|c| {
        c["linux"]["devices"] = json!([{"path": "/dev/palfull", "type": "c", "major": 1,
            "minor": 7, "fileMode": 0o640, "uid": 0, "gid": 0}]);
    });
    let id = env.id("mnt-dev");
    let out = env.oci(&["run", &id, "--bundle", env.bundle()]).ok().out;
    assert_eq!(out, "1:7 640 0:0\n4\nfull\n");
    // Its rule is appended to the bundle's device policy, as runc appends it: a rule of the
    // bundle's about the same device comes before it.
    let mut env = bundle_env("mnt-dev-deny", "head -c 4 /dev/palfull | wc -c");
    env.edit_config(|c| {
        c["linux"]["devices"] = json!([{"path": "/dev/palfull", "type": "c", "major": 1,
            "minor": 7}]);
        c["linux"]["resources"]["devices"] =
            json!([{"allow": false, "type": "c", "major": 1, "minor": 7, "access": "rw"}]);
    });
    let id = env.id("mnt-dev-deny");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]);
    assert_eq!(ran.out, "4\n", "{ran:?}");
}

#[test]
fn a_user_namespace_gets_the_hosts_node() {
    require_root!();
    if !std::path::Path::new("/dev/fuse").exists() {
        palisade_test_support::skip("the host has no /dev/fuse");
        return;
    }
    // mknod(2) of a device is refused in a user namespace: the host's node is bound. Root is
    // mapped to root, whom the node (0600, root's) lets open it.
    let mut env = bundle_env(
        "mnt-dev-userns",
        "stat -c '%t:%T' /dev/fuse; (exec 3<>/dev/fuse) && echo opened",
    );
    env.edit_config(|c| {
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        let map = json!([{"containerID": 0, "hostID": 0, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
        c["linux"]["devices"] =
            json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
    });
    let id = env.id("mnt-dev-userns");
    let out = env.oci(&["run", &id, "--bundle", env.bundle()]).ok().out;
    assert_eq!(out, "a:e5\nopened\n");
}

#[test]
fn a_device_path_through_a_link_makes_nothing_on_the_host() {
    require_root!();
    // The image links a directory to one of the host's: the node's path goes through it.
    let host = TempDir::new("oci-dev-host");
    let mut env = bundle_env("mnt-dev-link", "ls -l /escape/");
    std::os::unix::fs::symlink(host.path(), env.bundle.join("rootfs/escape")).unwrap();
    std::os::unix::fs::symlink(
        format!("../../../../../../..{}", host.path().display()),
        env.bundle.join("rootfs/climb"),
    )
    .unwrap();
    for path in ["/escape/palnode", "/climb/palnode"] {
        env.edit_config(|c| {
            c["linux"]["devices"] =
                json!([{"path": path, "type": "c", "major": 1, "minor": 7, "fileMode": 0o666}]);
        });
        let id = env.id(&format!("mnt-dev-link{}", path.len()));
        let ran = env.oci(&["run", &id, "--bundle", env.bundle()]);
        assert_ne!(ran.code, 0, "{path}: {ran:?}");
        // Looked up in the root, where the host's directory is not.
        assert!(
            ran.err.contains(&format!("{path} (in the root)")) && ran.err.contains("os error 2"),
            "{ran:?}"
        );
        assert_eq!(std::fs::read_dir(host.path()).unwrap().count(), 0, "{path}");
    }
    // A path that climbs by itself is refused before anything runs.
    env.edit_config(|c| {
        c["linux"]["devices"] = json!([{"path": "/dev/../../palnode", "type": "c",
            "major": 1, "minor": 7}]);
    });
    let id = env.id("mnt-dev-climb");
    let ran = env.oci(&["run", &id, "--bundle", env.bundle()]);
    assert_ne!(ran.code, 0);
    assert!(ran.err.contains("linux.devices[0].path"), "{ran:?}");
}

#[test]
fn what_palisade_does_not_apply_is_refused_by_name() {
    require_root!();
    let cases = [
        (
            json!({"destination": "/data", "type": "bind", "source": "rootfs",
                   "options": ["rbind", "dev"]}),
            "mounts[7].options[1]",
        ),
        (
            json!({"destination": "/data", "type": "bind", "source": "rootfs",
                   "options": ["rbind", "sync"]}),
            "mounts[7].options[1]",
        ),
        (
            json!({"destination": "/run", "type": "tmpfs", "options": ["mpol=local"]}),
            "mounts[7].options[0]",
        ),
        (
            json!({"destination": "/run", "type": "tmpfs", "options": ["suid"]}),
            "mounts[7].options[0]",
        ),
    ];
    let mut env = bundle_env("mnt-refuse", "true");
    for (i, (mount, field)) in cases.into_iter().enumerate() {
        env.edit_config(|c| {
            let mounts = c["mounts"].as_array_mut().unwrap();
            mounts.truncate(7);
            mounts.push(mount.clone());
        });
        let id = env.id(&format!("mnt-refuse{i}"));
        let ran = env.oci(&["create", &id, "--bundle", env.bundle()]);
        assert_ne!(ran.code, 0, "{mount}");
        assert!(ran.err.contains(field), "{field}: {ran:?}");
    }
    env.edit_config(|c| {
        c["mounts"].as_array_mut().unwrap().truncate(7);
        c["linux"]["devices"] =
            json!([{"path": "/dev/palx", "type": "c", "major": 1, "minor": 7, "fileMode": 0o4666}]);
    });
    let id = env.id("mnt-refuse-mode");
    let ran = env.oci(&["create", &id, "--bundle", env.bundle()]);
    assert!(ran.err.contains("linux.devices[0].fileMode"), "{ran:?}");
    env.edit_config(|c| {
        c["linux"]["devices"] = json!([]);
        c["linux"]["rootfsPropagation"] = json!("sideways");
    });
    let id = env.id("mnt-refuse-prop");
    let ran = env.oci(&["create", &id, "--bundle", env.bundle()]);
    assert!(ran.err.contains("linux.rootfsPropagation"), "{ran:?}");
}
