//! Sandboxes rooted in an OCI image the test builds (a static busybox from Debian's
//! `busybox-static` as the payload), against the real kernel.

use std::path::Path;

use palisade::image::{
    Image, ImageConfig, LayerBuilder, LayerStore, LayoutWriter, OpaqueXattr, StoreOptions,
};
use palisade::overlay::rootfs::Rootfs;
use palisade::{Sandbox, Stdio};
use palisade_test_support::{is_root, require_root, run_ignored_test_as, TempDir};

const BUSYBOX: &str = "/bin/busybox";

/// A two-layer image: a busybox base, and a top layer that deletes a base file (whiteout) and
/// replaces a directory (opaque).
fn busybox_image(layout: &Path, store: &Path) -> Image {
    busybox_image_in(layout, LayerStore::open(store).unwrap())
}

fn busybox_image_in(layout: &Path, store: LayerStore) -> Image {
    let mut writer = LayoutWriter::create(layout).unwrap();
    let mut base = LayerBuilder::new();
    for dir in ["bin", "etc", "proc", "dev", "sys", "tmp", "data"] {
        base.dir(dir, 0o755);
    }
    base.file_from("bin/busybox", BUSYBOX, 0o755);
    for applet in ["sh", "ls", "cat", "echo", "test", "wc", "touch", "tr"] {
        base.symlink(format!("bin/{applet}"), "busybox");
    }
    base.file("etc/palisade-base", "base\n", 0o644)
        .file("data/a", "a\n", 0o644)
        .file("data/b", "b\n", 0o644);
    writer.add_layer(&base).unwrap();
    let mut top = LayerBuilder::new();
    top.whiteout("etc/palisade-base")
        .opaque("data")
        .file("data/c", "c\n", 0o644)
        .file("etc/palisade-top", "top\n", 0o644);
    writer.add_layer(&top).unwrap();
    let mut config = ImageConfig::default();
    config.cmd = vec!["/bin/sh".into()];
    config.env = vec!["PATH=/bin".into()];
    writer.finish(Some("latest"), &config).unwrap();
    store.import(layout, Some("latest")).unwrap()
}

fn host_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn a_command_runs_from_a_test_built_image() {
    require_root!();
    assert!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    let layout = TempDir::new("oci");
    let store = TempDir::new("store");
    let image = busybox_image(&layout.path().join("layout"), store.path());
    assert_eq!(image.layers.len(), 2);
    let before = host_mounts();
    let out = Sandbox::builder("/bin/sh")
        .args([
            "-c",
            "ls /; echo; ls /data; test -e /etc/palisade-base || echo base-hidden; \
             cat /etc/palisade-top; cat /proc/1/cmdline | wc -c",
        ])
        .env_clear()
        .env("PATH", "/bin")
        .rootfs(Rootfs::layers(image.lower_dirs()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (root, rest) = text.split_once("\n\n").unwrap();
    let root: Vec<&str> = root.split_whitespace().collect();
    for name in ["bin", "data", "dev", "etc", "proc", "sys", "tmp"] {
        assert!(root.contains(&name), "/ lacks {name}: {root:?}");
    }
    let mut lines = rest.lines();
    // The opaque directory shows only the top layer's file; the whiteout hides the base's.
    assert_eq!(lines.next(), Some("c"));
    assert_eq!(lines.next(), Some("base-hidden"));
    assert_eq!(lines.next(), Some("top"));
    let cmdline: usize = lines.next().unwrap().trim().parse().unwrap();
    assert!(cmdline > 0);
    assert_eq!(host_mounts(), before, "the host's mount table changed");
}

#[test]
fn sandboxes_from_one_image_share_layers_not_writes() {
    require_root!();
    let layout = TempDir::new("oci-shared");
    let store = TempDir::new("store-shared");
    let image = busybox_image(&layout.path().join("layout"), store.path());
    let again = LayerStore::open(store.path())
        .unwrap()
        .import(layout.path().join("layout"), Some("latest"))
        .unwrap();
    assert_eq!(
        image.lower_dirs(),
        again.lower_dirs(),
        "layers unpacked twice"
    );
    let spawn = |n: u32| {
        Sandbox::builder("/bin/sh")
            .args([
                "-c",
                &format!("echo {n} > /written; sleep 0.2 2>/dev/null; cat /written; ls /data"),
            ])
            .env_clear()
            .env("PATH", "/bin")
            .rootfs(Rootfs::layers(image.lower_dirs()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(1), spawn(2));
    let a = String::from_utf8(a.wait_with_output().unwrap().stdout).unwrap();
    let b = String::from_utf8(b.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(a, "1\nc\n");
    assert_eq!(b, "2\nc\n");
    // Nothing reached the layers.
    for dir in image.lower_dirs() {
        assert!(!dir.join("written").exists());
    }
}

#[test]
fn an_image_runs_rootless_for_an_unprivileged_user() {
    require_root!();
    let (passed, text) = run_ignored_test_as(
        64_000,
        "rootless_image_inner",
        &[("PALISADE_ROOTLESS_INNER", "1")],
    );
    assert!(passed, "{text}");
}

/// Runs only as the unprivileged user of `an_image_runs_rootless_for_an_unprivileged_user`: an
/// overlay root in the sandbox's user namespace, with `userxattr`.
#[test]
#[ignore = "run by an_image_runs_rootless_for_an_unprivileged_user"]
fn rootless_image_inner() {
    assert!(std::env::var_os("PALISADE_ROOTLESS_INNER").is_some());
    assert!(!is_root());
    let layout = TempDir::new("oci-rootless");
    let store = TempDir::new("store-rootless");
    let options = StoreOptions::new().opaque_xattr(OpaqueXattr::User);
    let image = busybox_image_in(
        &layout.path().join("layout"),
        LayerStore::open_with(store.path(), options).unwrap(),
    );
    let out = Sandbox::builder("/bin/sh")
        .args([
            "-c",
            "ls /data; test -e /etc/palisade-base || echo base-hidden; echo w > /w && cat /w",
        ])
        .env_clear()
        .env("PATH", "/bin")
        .rootless()
        .rootfs(Rootfs::layers(image.lower_dirs()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "c\nbase-hidden\nw\n"
    );
}
