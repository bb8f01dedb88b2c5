//! An image's `User` (or a caller's user name) is resolved before the sandbox exists, on the
//! host, by reading the image's `/etc/passwd` and `/etc/group` from its layers. An image is the
//! attacker's: its links must not make the host's files (the host's users, a FIFO, a huge file)
//! stand for the image's.
//!
//! - `/etc/passwd`, `/etc/group` or `/etc` itself is a link to a host path, absolute or made
//!   of `..`: the lookup stays in the image, where the path does not exist, so a user that only
//!   the host file names is unknown. The control puts the same path inside the image, which
//!   then resolves, with the image's ids, not the host's.
//! - A whiteout of `/etc/passwd` in the top layer hides the base's, as overlayfs does.
//! - A link loop fails with `ELOOP` instead of hanging the build; a FIFO is never opened (it
//!   would block); a huge (sparse) passwd is refused without being read.

use std::os::unix::ffi::OsStrExt;

use palisade::image::{Error as ImageError, Image, ImageConfig, LayerBuilder, LayerStore};
use palisade::image::{LayoutWriter, MAX_FILE_SIZE};
use palisade::overlay::rootfs::Rootfs;
use palisade::{Error, Sandbox};
use palisade_test_support::{require_root, TempDir};

/// The host's fake user database, in a directory of the test's own: names that no image has.
struct HostUsers {
    dir: TempDir,
    user: String,
    group: String,
}

impl HostUsers {
    fn new() -> HostUsers {
        let dir = TempDir::new("pal-hostusers");
        let user = format!("pal-intruder-{}", std::process::id());
        let group = format!("pal-intruders-{}", std::process::id());
        std::fs::write(
            dir.path().join("passwd"),
            format!("{user}:x:4242:4242::/intruder:/bin/sh\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("group"), format!("{group}:x:4343:{user}\n")).unwrap();
        HostUsers { dir, user, group }
    }

    /// The host directory, without its leading `/`: where the same path is inside an image.
    fn inside(&self) -> String {
        self.dir.path().to_str().unwrap()[1..].to_owned()
    }
}

/// An image of `layers` (bottom first), imported into a store of its own.
struct TestImage {
    _layout: TempDir,
    _store: TempDir,
    image: Image,
}

fn image_of(layers: &[&LayerBuilder]) -> TestImage {
    let layout = TempDir::new("pal-userimg");
    let store = TempDir::new("pal-userstore");
    let mut writer = LayoutWriter::create(layout.path()).unwrap();
    for layer in layers {
        writer.add_layer(layer).unwrap();
    }
    writer
        .finish(Some("latest"), &ImageConfig::default())
        .unwrap();
    let image = LayerStore::open(store.path())
        .unwrap()
        .import(layout.path(), Some("latest"))
        .unwrap();
    TestImage {
        _layout: layout,
        _store: store,
        image,
    }
}

/// A base layer with `/etc`.
fn base() -> LayerBuilder {
    let mut layer = LayerBuilder::new();
    layer.dir("etc", 0o755);
    layer
}

/// Builds a sandbox of `image` whose user is `spec`: where the user is resolved.
fn resolve(image: &Image, spec: &str) -> Result<(), Error> {
    resolve_with(Sandbox::builder("true").image(image), spec)
}

fn resolve_with(builder: &mut palisade::SandboxBuilder, spec: &str) -> Result<(), Error> {
    builder.user_name(spec).build().map(drop)
}

#[track_caller]
fn assert_unknown_user(result: Result<(), Error>, name: &str) {
    match result {
        Err(Error::Image(ImageError::UnknownUser { name: n, .. })) => assert_eq!(n, name),
        other => panic!("expected {name:?} to be unknown, got {other:?}"),
    }
}

#[track_caller]
fn assert_unknown_group(result: Result<(), Error>, name: &str) {
    match result {
        Err(Error::Image(ImageError::UnknownGroup { name: n, .. })) => assert_eq!(n, name),
        other => panic!("expected {name:?} to be unknown, got {other:?}"),
    }
}

#[test]
fn a_passwd_linked_to_the_host_resolves_inside_the_image() {
    require_root!();
    let host = HostUsers::new();
    let host_passwd = host.dir.path().join("passwd");
    assert!(
        std::fs::read_to_string(&host_passwd)
            .unwrap()
            .contains(&host.user),
        "the host file the links point to names the user"
    );
    let dotdots = "../".repeat(32);
    for target in [
        host_passwd.to_str().unwrap().to_owned(),
        format!("{dotdots}{}/passwd", host.inside()),
    ] {
        // The attack: the image's /etc/passwd is a link to the host's file.
        let mut layer = base();
        layer.symlink("etc/passwd", &target);
        let attack = image_of(&[&layer]);
        assert_unknown_user(resolve(&attack.image, &host.user), &host.user);
        assert_eq!(
            attack.image.read_file("/etc/passwd").unwrap(),
            None,
            "{target}"
        );

        // The control: the same link, with the target inside the image naming the same user
        // with ids of its own: the image's resolve, never the host's 4242.
        let mut layer = base();
        layer.symlink("etc/passwd", &target).file(
            format!("{}/passwd", host.inside()),
            format!("{}:x:777:778::/home:/bin/sh\n", host.user),
            0o644,
        );
        let control = image_of(&[&layer]);
        resolve(&control.image, &host.user).unwrap();
        let user = control.image.resolve_user(&host.user).unwrap();
        assert_eq!((user.uid, user.gid), (777, 778), "{target}");
    }
}

#[test]
fn an_etc_or_group_linked_to_the_host_resolves_inside_the_image() {
    require_root!();
    let host = HostUsers::new();
    let spec = format!("0:{}", host.group);
    // /etc itself a link to the host's directory, absolute or relative.
    let dotdots = "../".repeat(32);
    for target in [
        host.dir.path().to_str().unwrap().to_owned(),
        format!("{dotdots}{}", host.inside()),
    ] {
        let mut layer = LayerBuilder::new();
        layer.symlink("etc", &target);
        let attack = image_of(&[&layer]);
        assert_unknown_user(resolve(&attack.image, &host.user), &host.user);
        assert_unknown_group(resolve(&attack.image, &spec), &host.group);
    }
    // /etc/group a link to the host's group file.
    let mut layer = base();
    layer.symlink(
        "etc/group",
        format!("{dotdots}{}/group", host.inside()).as_str(),
    );
    let attack = image_of(&[&layer]);
    assert_unknown_group(resolve(&attack.image, &spec), &host.group);
    // The control: the group in the image's own file resolves.
    let mut layer = base();
    layer.file("etc/group", format!("{}:x:99:\n", host.group), 0o644);
    let control = image_of(&[&layer]);
    resolve(&control.image, &spec).unwrap();
    assert_eq!(control.image.resolve_user(&spec).unwrap().gid, 99);
}

#[test]
fn a_whiteout_of_passwd_hides_the_base_layers() {
    require_root!();
    let name = "pal-hidden";
    let mut lower = base();
    lower.file(
        "etc/passwd",
        format!("{name}:x:1234:1234::/:/bin/sh\n"),
        0o644,
    );
    // The control: the base alone has the user.
    let control = image_of(&[&lower]);
    resolve(&control.image, name).unwrap();
    assert_eq!(control.image.resolve_user(name).unwrap().uid, 1234);
    let mut top = LayerBuilder::new();
    top.whiteout("etc/passwd");
    let image = image_of(&[&lower, &top]);
    assert_unknown_user(resolve(&image.image, name), name);
}

#[test]
fn link_loops_fail_with_eloop_instead_of_hanging() {
    require_root!();
    let mut layer = base();
    layer
        .symlink("etc/passwd", "loop")
        .symlink("etc/loop", "/etc/passwd");
    let pair = image_of(&[&layer]);
    let mut layer = LayerBuilder::new();
    layer.symlink("etc", "/etc/sub");
    let through_dirs = image_of(&[&layer]);
    for image in [&pair.image, &through_dirs.image] {
        let err = resolve(image, "root").unwrap_err();
        assert!(matches!(err, Error::Image(ImageError::Io { .. })), "{err}");
        assert_eq!(err.errno(), Some(libc::ELOOP), "{err}");
    }
}

#[test]
fn a_huge_or_blocking_passwd_is_not_read() {
    require_root!();
    let root = TempDir::new("pal-userroot");
    let etc = root.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    // Sparse: 64 GiB that would take the host's memory if it were read whole.
    let passwd = std::fs::File::create(etc.join("passwd")).unwrap();
    passwd.set_len(64 << 30).unwrap();
    drop(passwd);
    let mut builder = Sandbox::builder("true");
    builder.rootfs(Rootfs::dir(root.path()));
    match resolve_with(&mut builder, "root") {
        Err(Error::Image(ImageError::FileTooLarge { limit, .. })) => {
            assert_eq!(limit, MAX_FILE_SIZE)
        }
        other => panic!("{other:?}"),
    }
    // A FIFO would block whoever opens it for reading until a writer comes: never opened.
    std::fs::remove_file(etc.join("passwd")).unwrap();
    let fifo = std::ffi::CString::new(etc.join("passwd").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let mut builder = Sandbox::builder("true");
    builder.rootfs(Rootfs::dir(root.path()));
    let err = resolve_with(&mut builder, "root").unwrap_err();
    assert!(matches!(err, Error::Image(ImageError::Io { .. })), "{err}");
    // The control: a passwd of the root's own resolves.
    std::fs::remove_file(etc.join("passwd")).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let mut builder = Sandbox::builder("true");
    builder.rootfs(Rootfs::dir(root.path()));
    resolve_with(&mut builder, "root").unwrap();
}
