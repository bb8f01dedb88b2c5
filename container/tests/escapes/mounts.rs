//! Mount targets through symbolic links. An image decides what its `/proc`, `/sys`, `/dev` and
//! every directory on a volume's way are; the root file system is set up while the host's paths
//! are still reachable, so a link in the image must never send a mount, or a directory made for
//! one, out of the image's root.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::common::{host_mounts, sh};
use palisade::overlay::rootfs::{Access, Rootfs};
use palisade::{ChildStep, Error, Output, Stdio};
use palisade_test_support::{require_root, TempDir};

/// Everything below `dir` on the host, to compare before and after.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let p = e.unwrap().path();
            out.extend(tree(&p));
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A directory of the test's under `/var/tmp`, removed with its contents on drop. Not under
/// `/tmp`: an image's `/tmp` is covered by the sandbox's own tmpfs, which would hide the
/// directories the links resolve to inside the root.
struct VarTmpDir(PathBuf);

impl VarTmpDir {
    fn new(tag: &str) -> VarTmpDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/var/tmp/palisade-test-{tag}-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).unwrap();
        VarTmpDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for VarTmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image-like root made by hand: the host's `/usr` (bound read-only) and Debian's merged-`/usr`
/// links, in `root/`; `outside/` beside it is a host directory the image's links aim at, and the
/// image holds a directory at the same path, where the links resolve inside the root.
struct Image {
    dir: VarTmpDir,
}

impl Image {
    fn new(tag: &str) -> Image {
        let dir = VarTmpDir::new(tag);
        std::fs::create_dir_all(dir.path().join("root/usr")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        for link in ["bin", "lib", "lib64", "sbin"] {
            if Path::new("/usr").join(link).exists() {
                symlink(format!("usr/{link}"), dir.path().join("root").join(link)).unwrap();
            }
        }
        let image = Image { dir };
        std::fs::create_dir_all(image.inside(&image.outside())).unwrap();
        image
    }

    /// Where the absolute path `path` is in the image.
    fn inside(&self, path: &Path) -> PathBuf {
        self.root().join(path.strip_prefix("/").unwrap())
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Makes `/name` in the image a link to `target`.
    fn link(&self, name: &str, target: &Path) {
        symlink(target, self.root().join(name)).unwrap();
    }

    fn rootfs(&self) -> Rootfs {
        Rootfs::dir(self.root()).volume("/usr", "/usr", Access::ReadOnly)
    }
}

/// Spawns `script` with `rootfs` and waits; checks that the host's mount table is unchanged.
fn run(rootfs: Rootfs, script: &str) -> palisade::Result<Output> {
    let before = host_mounts();
    let out = sh(script)
        .rootfs(rootfs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    assert_eq!(host_mounts(), before, "the host's mount table changed");
    out
}

/// A refusal of the root file system, as a typed error.
fn is_rootfs_refusal(err: &Error) -> bool {
    matches!(
        err,
        Error::Child {
            step: ChildStep::Rootfs,
            ..
        } | Error::Rootfs(_)
            | Error::InvalidValue { .. }
    )
}

/// The image's `/NAME` is a link to a host directory, which the sandbox also gets as a volume at
/// `/outside`: a kernel file system mounted through the link lands on the host directory, and the
/// volume then shows it, unmasked.
fn kernel_mount_through_a_link(name: &str) {
    let image = Image::new(&format!("link-{name}"));
    image.link(name, &image.outside());
    let rootfs = image
        .rootfs()
        .volume(image.outside(), "/outside", Access::ReadOnly);
    let result = run(rootfs, "ls -A /outside | tr '\\n' ' '; echo");
    assert_eq!(tree(&image.outside()), Vec::<PathBuf>::new());
    match result {
        Err(err) => {
            assert!(is_rootfs_refusal(&err), "not a typed refusal: {err}");
            eprintln!("refused: {err}");
        }
        Ok(out) => {
            let seen = String::from_utf8_lossy(&out.stdout);
            assert!(
                seen.trim().is_empty(),
                "the sandbox's /{name} was mounted on the host directory the image's link \
                 names, and shows through the volume: {seen}"
            );
            panic!(
                "an image whose /{name} is a link out of its root was accepted ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn an_image_whose_proc_is_a_link_out_of_its_root_is_refused() {
    require_root!();
    kernel_mount_through_a_link("proc");
}

#[test]
fn an_image_whose_sys_is_a_link_out_of_its_root_is_refused() {
    require_root!();
    kernel_mount_through_a_link("sys");
}

#[test]
fn an_image_whose_dev_is_a_link_out_of_its_root_is_refused() {
    require_root!();
    kernel_mount_through_a_link("dev");
}

#[test]
fn a_volume_through_a_link_lands_inside_the_root() {
    require_root!();
    let image = Image::new("link-volume");
    // The image's /data names a host directory, absolutely.
    image.link("data", &image.outside());
    let src = TempDir::new("link-volume-src");
    std::fs::write(src.path().join("in"), "from the volume\n").unwrap();
    let rootfs = image
        .rootfs()
        .volume(src.path(), "/data/vol", Access::ReadOnly);
    let out = run(rootfs, "cat /data/vol/in").unwrap();
    assert_eq!(
        tree(&image.outside()),
        Vec::<PathBuf>::new(),
        "the volume's mount point was made on the host"
    );
    assert!(
        out.status.success(),
        "the volume is not at /data/vol, resolved inside the root ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the volume\n");
}

#[test]
fn a_tmpfs_through_a_link_lands_inside_the_root() {
    require_root!();
    let image = Image::new("link-tmpfs");
    // The image's /scratch names a host directory, absolutely.
    image.link("scratch", &image.outside());
    let rootfs = image.rootfs().tmpfs("/scratch/t");
    let out = run(rootfs, "echo s > /scratch/t/f && cat /scratch/t/f").unwrap();
    assert_eq!(
        tree(&image.outside()),
        Vec::<PathBuf>::new(),
        "the tmpfs's mount point was made on the host"
    );
    assert!(
        out.status.success(),
        "the tmpfs is not at /scratch/t, resolved inside the root ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "s\n");
}

/// Removes a directory this test may have made on the host (empty: its mount was the sandbox's).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_volume_under_the_hosts_var_run_link_stays_in_the_sandbox() {
    require_root!();
    // The host's /var/run is a link to /run, absolutely.
    let Ok(target) = std::fs::read_link("/var/run") else {
        palisade_test_support::skip("the host's /var/run is not a symbolic link");
        return;
    };
    assert!(target.is_absolute(), "{}", target.display());
    let name = format!("palisade-escape-{}", std::process::id());
    let on_host = target.join(&name);
    assert!(!on_host.exists(), "{} exists already", on_host.display());
    let _cleanup = RemoveDir(on_host.clone());
    let src = TempDir::new("var-run-volume");
    std::fs::write(src.path().join("in"), "from the volume\n").unwrap();
    let rootfs = Rootfs::host().volume(
        src.path(),
        Path::new("/var/run").join(&name),
        Access::ReadOnly,
    );
    let out = run(rootfs, &format!("cat /var/run/{name}/in")).unwrap();
    assert!(
        !on_host.exists(),
        "the volume's mount point was made on the host, at {}",
        on_host.display()
    );
    assert!(
        out.status.success(),
        "the volume is not at /var/run/{name} in the sandbox ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the volume\n");
}
