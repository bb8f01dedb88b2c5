//! Sandboxes rooted in an OCI image the test builds (a static busybox from Debian's
//! `busybox-static` as the payload), against the real kernel.

use std::path::Path;

mod common;

use common::{example, host_mounts, stdout_of};
use palisade::image::{
    Image, ImageConfig, LayerBuilder, LayerStore, LayoutWriter, OpaqueXattr, StoreOptions,
};
use palisade::overlay::rootfs::Rootfs;
use palisade::{Sandbox, Stdio};
use palisade_test_support::registry::Registry;
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
    let text = stdout_of(
        Sandbox::builder("/bin/sh")
            .args([
                "-c",
                "ls /; echo; ls /data; test -e /etc/palisade-base || echo base-hidden; \
             cat /etc/palisade-top; cat /proc/1/cmdline | wc -c",
            ])
            .env_clear()
            .env("PATH", "/bin")
            .rootfs(Rootfs::layers(image.lower_dirs())),
    );
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
    let out = stdout_of(
        Sandbox::builder("/bin/sh")
            .args([
                "-c",
                "ls /data; test -e /etc/palisade-base || echo base-hidden; echo w > /w && cat /w",
            ])
            .env_clear()
            .env("PATH", "/bin")
            .rootless()
            .rootfs(Rootfs::layers(image.lower_dirs())),
    );
    assert_eq!(out, "c\nbase-hidden\nw\n");
}

/// The passwd and group of the image's top layer, which replaces the base's `/etc` (opaque).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1001:\nstaff:x:50:other,app\naudio:x:29:app\n";

/// Prints its arguments, then runs them: shows what the image's Entrypoint was given.
const ENTRY: &str = "#!/bin/sh\necho \"entry:$*\"\nexec \"$@\"\n";

/// A two-layer busybox image whose config sets Env, Entrypoint, Cmd, WorkingDir and User (by
/// name). The base has a stale `/etc` (another `app`, a file `stale`) that the top layer hides
/// (opaque), and a `/home/old` that the top layer deletes (whiteout).
fn configured_image(layout: &Path, store: &Path) -> Image {
    let mut writer = LayoutWriter::create(layout).unwrap();
    let mut base = LayerBuilder::new();
    for dir in [
        "bin", "etc", "proc", "dev", "sys", "tmp", "home", "home/app", "home/old", "srv",
        "srv/work",
    ] {
        base.dir(dir, 0o755);
    }
    base.file_from("bin/busybox", BUSYBOX, 0o755);
    for applet in ["sh", "id", "pwd", "echo", "env", "ls", "test", "cat"] {
        base.symlink(format!("bin/{applet}"), "busybox");
    }
    base.file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:2000:2000:stale:/stale:/bin/sh\n",
        0o644,
    )
    .file("etc/group", "root:x:0:\nwheel:x:10:app\n", 0o644)
    .file("etc/stale", "stale\n", 0o644)
    .file("home/old/x", "x\n", 0o644);
    writer.add_layer(&base).unwrap();
    let mut top = LayerBuilder::new();
    top.dir("etc", 0o755)
        .opaque("etc")
        .file("etc/passwd", PASSWD, 0o644)
        .file("etc/group", GROUP, 0o644)
        .whiteout("home/old")
        .file("bin/entry", ENTRY, 0o755);
    writer.add_layer(&top).unwrap();
    let mut config = ImageConfig::default();
    config.env = vec![
        "PATH=/usr/local/bin:/bin".into(),
        "GREETING=hello from the image".into(),
        "WHO=image".into(),
    ];
    config.entrypoint = vec!["/bin/entry".into()];
    config.cmd = vec!["sh".into(), "-c".into(), "echo cmd".into()];
    config.working_dir = Some("/srv/work".into());
    config.user = Some("app".into());
    writer.finish(Some("latest"), &config).unwrap();
    LayerStore::open(store)
        .unwrap()
        .import(layout, Some("latest"))
        .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Runs the sandbox, asserts that it succeeded, and returns its stdout's lines.
fn lines_of(builder: &mut palisade::SandboxBuilder) -> Vec<String> {
    stdout_of(builder).lines().map(str::to_owned).collect()
}

#[test]
fn an_images_config_applies_env_workdir_user_and_command() {
    require_root!();
    let layout = TempDir::new("oci-config");
    let store = TempDir::new("store-config");
    let image = configured_image(&layout.path().join("layout"), store.path());

    // No command: the image's Entrypoint and Cmd.
    let default = lines_of(&mut Sandbox::from_image(&image, None, &[]).unwrap());
    assert_eq!(default, ["entry:sh -c echo cmd", "cmd"]);

    // A command replaces Cmd and still goes through the Entrypoint. It runs as the image's
    // user, resolved in the image (the top layer's passwd, not the base's stale one), with its
    // groups and HOME, in the image's WorkingDir, with the image's Env under the caller's.
    let script = "echo \"$GREETING|$WHO|$PATH|$HOME\"; pwd; id -u; id -g; id -G; id -un; \
                  test -e /home/old || echo old-deleted; ls /etc";
    let mut builder = Sandbox::from_image(&image, None, &strings(&["sh", "-c", script])).unwrap();
    builder.env("WHO", "caller");
    let lines = lines_of(&mut builder);
    assert_eq!(lines[0], format!("entry:sh -c {script}"));
    assert_eq!(
        lines[1],
        "hello from the image|caller|/usr/local/bin:/bin|/home/app"
    );
    assert_eq!(lines[2], "/srv/work");
    assert_eq!(lines[3], "1000");
    assert_eq!(lines[4], "1001");
    let mut groups: Vec<u32> = lines[5]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    assert_eq!(groups, [29, 50, 1001], "primary and supplementary groups");
    assert_eq!(lines[6], "app");
    assert_eq!(lines[7], "old-deleted");
    assert_eq!(&lines[8..], ["group", "passwd"], "the opaque /etc");

    // An entrypoint replaces the image's, and drops its Cmd.
    let echo = strings(&["/bin/echo"]);
    assert_eq!(
        lines_of(&mut Sandbox::from_image(&image, Some(&echo), &[]).unwrap()),
        [""]
    );
    let sh = strings(&["/bin/sh"]);
    let cmd = strings(&["-c", "echo replaced; id -un"]);
    assert_eq!(
        lines_of(&mut Sandbox::from_image(&image, Some(&sh), &cmd).unwrap()),
        ["replaced", "app"]
    );
}

#[test]
fn the_callers_settings_win_over_the_images() {
    require_root!();
    let layout = TempDir::new("oci-override");
    let store = TempDir::new("store-override");
    let image = configured_image(&layout.path().join("layout"), store.path());
    let script = "id -u; id -g; pwd; echo \"$HOME|$PATH\"";
    // Ids, a directory and the environment of the caller's; the builder's command as it is,
    // without the Entrypoint.
    let mut b = Sandbox::builder("sh");
    b.args(["-c", script])
        .env("PATH", "/bin")
        .image(&image)
        .user(7, 8)
        .current_dir("/tmp");
    assert_eq!(lines_of(&mut b), ["7", "8", "/tmp", "/|/bin"]);
    // A user by name, resolved in the image: root's HOME from its passwd.
    let mut b = Sandbox::builder("sh");
    b.args(["-c", script]).image(&image).user_name("root");
    assert_eq!(
        lines_of(&mut b),
        ["0", "0", "/srv/work", "/root|/usr/local/bin:/bin"]
    );
    // A uid the image's passwd lacks: group 0, HOME /.
    let mut b = Sandbox::builder("sh");
    b.args(["-c", script]).image(&image).user_name("4242:staff");
    assert_eq!(
        lines_of(&mut b),
        ["4242", "50", "/srv/work", "/|/usr/local/bin:/bin"]
    );
    // A name the image lacks fails the build, naming it.
    let err = Sandbox::builder("true")
        .image(&image)
        .user_name("pal-nobody-here")
        .build()
        .unwrap_err();
    match err {
        palisade::Error::Image(palisade::image::Error::UnknownUser { name, .. }) => {
            assert_eq!(name, "pal-nobody-here")
        }
        other => panic!("{other}"),
    }
    // An image without a command has nothing to run by default.
    let bare = TempDir::new("oci-bare");
    let bare_image = busybox_image(&bare.path().join("layout"), store.path());
    let mut no_cmd = bare_image.clone();
    no_cmd.config = ImageConfig::default();
    assert!(matches!(
        Sandbox::from_image(&no_cmd, None, &[]),
        Err(palisade::Error::Image(palisade::image::Error::NoCommand))
    ));
}

#[test]
fn a_user_name_resolves_in_the_hosts_root_too() {
    require_root!();
    // The default root is the host's: its /etc/passwd has nobody.
    let text = stdout_of(
        Sandbox::builder("sh")
            .args(["-c", "id -u; id -un; echo $HOME"])
            .user_name("nobody"),
    );
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("65534"));
    assert_eq!(lines.next(), Some("nobody"));
    let nobody_home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nobody:"))
        .and_then(|l| l.split(':').nth(4).map(str::to_owned))
        .unwrap();
    assert_eq!(lines.next(), Some(nobody_home.as_str()));
}

#[test]
fn the_run_example_runs_an_images_default_command_and_users_by_name() {
    require_root!();
    let layout = TempDir::new("oci-run");
    let store = TempDir::new("store-run");
    let dir = layout.path().join("layout");
    configured_image(&dir, store.path());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(example("run"))
            .arg("--store")
            .arg(store.path())
            .arg("--image")
            .arg(format!("{}:latest", dir.display()))
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(&[]), "entry:sh -c echo cmd\ncmd\n");
    assert_eq!(
        run(&["--user", "root", "--", "id", "-u"]),
        "entry:id -u\n0\n"
    );
    assert_eq!(
        run(&[
            "--entrypoint",
            "/bin/sh",
            "-w",
            "/",
            "--",
            "-c",
            "id -un; pwd"
        ]),
        "app\n/\n"
    );
    assert_eq!(
        run(&["--user", "app:audio", "--entrypoint", "id", "--", "-g"]),
        "29\n"
    );
}

/// Runs the built example `name` with `args`, and returns its stdout and stderr, failing the
/// test with both unless it succeeds.
fn run_example(name: &str, args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(example(name))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A registry of the test's own (Debian's `docker-registry`) holding the busybox image as
/// `name:latest`, and a temporary directory for the test.
fn registry_with_busybox(name: &str) -> (Registry, TempDir) {
    let registry = Registry::start();
    let tmp = TempDir::new("image-pull");
    let layout = tmp.path().join("layout");
    busybox_image_in(&layout, LayerStore::open(tmp.path().join("build")).unwrap());
    registry.push(&layout, "latest", name);
    (registry, tmp)
}

/// `run --image localhost:PORT/busybox -- echo hi`, the docker habit: the image is pulled from a
/// real registry (Debian's `docker-registry`) into the store, verified, recorded and run; the
/// next run finds it by name and fetches nothing.
#[test]
fn the_run_example_pulls_a_missing_image_and_runs_it() {
    require_root!();
    let (registry, tmp) = registry_with_busybox("busybox");
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let reference = format!("{}/busybox", registry.addr());
    let args = [
        "--store",
        store,
        "--image",
        &reference,
        "--insecure",
        "--",
        "echo",
        "hi",
    ];

    let (stdout, stderr) = run_example("run", &args);
    assert_eq!(stdout, "hi\n");
    assert!(stderr.contains("pulling"), "{stderr}");
    let fetched = registry.blob_gets("busybox");
    // The config and the two layers.
    assert_eq!(fetched.len(), 3, "{fetched:?}");

    let (stdout, stderr) = run_example("run", &args);
    assert_eq!(stdout, "hi\n");
    assert!(!stderr.contains("pulling"), "{stderr}");
    assert_eq!(
        registry.blob_gets("busybox"),
        fetched,
        "the second run fetched"
    );
    let image = LayerStore::open(store)
        .unwrap()
        .image(&format!("{reference}:latest"))
        .unwrap()
        .expect("the pulled image is recorded under its full name");
    assert_eq!(image.layers.len(), 2);
}

/// The image example's life cycle of a pulled image: pull (the summary, quiet off a terminal),
/// list, inspect, verify, rm and gc.
#[test]
fn the_image_example_pulls_lists_inspects_verifies_and_removes() {
    require_root!();
    let (registry, tmp) = registry_with_busybox("pal/busybox");
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let reference = format!("{}/pal/busybox:latest", registry.addr());
    let image = |args: &[&str]| run_example("image", &[&["--store", store], args].concat());

    let (out, err) = image(&["pull", "--insecure", &reference]);
    assert!(
        out.starts_with(&format!("pulled {reference} (sha256:")),
        "{out}"
    );
    assert!(out.contains("2 layers, 2 fetched"), "{out}");
    // Off a terminal, no progress bars.
    assert_eq!(err, "");
    let (out, _) = image(&["pull", "--insecure", &reference]);
    assert!(
        out.contains("0 fetched (0 bytes), 2 already in the store"),
        "{out}"
    );

    let (out, _) = image(&["list"]);
    assert!(out.lines().any(|l| l.starts_with(&reference)), "{out}");
    let (out, _) = image(&["inspect", &reference]);
    assert!(out.contains("cmd:         [\"/bin/sh\"]"), "{out}");
    assert!(out.contains("env:         [\"PATH=/bin\"]"), "{out}");
    let (out, _) = image(&["verify"]);
    assert!(out.starts_with("2 layers verified"), "{out}");

    let (out, _) = image(&["gc"]);
    assert!(out.starts_with("removed 0 layers"), "{out}");
    image(&["rm", &reference]);
    let (out, _) = image(&["list"]);
    assert!(!out.contains(&reference), "{out}");
    let (out, _) = image(&["gc"]);
    assert!(out.starts_with("removed 2 layers"), "{out}");
    let (out, _) = image(&["layers"]);
    assert!(out.starts_with("0 layers"), "{out}");
}
