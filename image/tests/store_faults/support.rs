//! Helpers of the store's fault tests: images to import, a listing of unpacked trees to compare
//! them by, child processes that are always reaped, and the faults themselves (an immutable
//! directory, a small tmpfs in a private mount namespace).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use palisade_image::{Compression, ImageConfig, LayerBuilder, LayerStore, LayoutWriter};
use sha2::Digest as _;

/// A small deterministic pseudo-random generator (xorshift64*): the fault tests draw their kill
/// points from a seed they print, so that a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        // Letters only: content gzip compresses a little, as real files do.
        (0..len).map(|_| b'a' + (self.next() % 26) as u8).collect()
    }
}

/// Writes a one-image layout of `layers` layers of `files` files each (and a larger file, a
/// symbolic link, a whiteout of the layer below and an opaque directory), all different for
/// each `seed`. The first layer is gzip-compressed, the others plain tar.
pub fn build_image(dir: &Path, seed: u64, layers: usize, files: usize) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut writer = LayoutWriter::create(dir).unwrap();
    for k in 0..layers {
        let mut layer = LayerBuilder::new();
        layer
            .compression(if k == 0 {
                Compression::Gzip
            } else {
                Compression::None
            })
            .dir("/", 0o755);
        for d in 0..10 {
            layer.dir(format!("/d{d}"), if d == 3 { 0o700 } else { 0o755 });
        }
        for f in 0..files {
            let len = 512 + rng.below(6 * 1024) as usize;
            let mode = [0o644, 0o600, 0o755, 0o400][f % 4];
            layer.file(format!("/d{}/f{k}-{f}", f % 10), rng.bytes(len), mode);
        }
        layer.file(format!("/big{k}"), rng.bytes(256 * 1024), 0o644);
        layer.symlink(format!("/link{k}"), format!("d1/f{k}-1"));
        if k > 0 {
            layer.whiteout(format!("/big{}", k - 1));
            layer
                .dir(format!("/opaque{k}"), 0o755)
                .opaque(format!("/opaque{k}"));
        }
        writer.add_layer(&layer).unwrap();
    }
    let mut config = ImageConfig::default();
    config.cmd = vec![format!("/bin/image-{seed}")];
    config.env = vec![format!("SEED={seed}")];
    writer.finish(None, &config).unwrap();
}

/// A layout whose first layer is small and whose second unpacks to 8 MiB (of zeros, a small
/// gzip blob).
pub fn build_big_image(dir: &Path) {
    let mut writer = LayoutWriter::create(dir).unwrap();
    let mut small = LayerBuilder::new();
    small.file("/first", "first\n", 0o644);
    writer.add_layer(&small).unwrap();
    let mut big = LayerBuilder::new();
    big.file("/zeros", vec![0u8; 8 << 20], 0o644);
    writer.add_layer(&big).unwrap();
    writer.finish(None, &ImageConfig::default()).unwrap();
}

/// A layout of one tiny layer holding `/small`.
pub fn build_small_image(dir: &Path) {
    let mut writer = LayoutWriter::create(dir).unwrap();
    let mut layer = LayerBuilder::new();
    layer.file("/small", "small\n", 0o644);
    writer.add_layer(&layer).unwrap();
    writer.finish(None, &ImageConfig::default()).unwrap();
}

/// A path the parent test passes to its child in the environment.
pub fn child_env(key: &str) -> Option<PathBuf> {
    std::env::var_os(key).map(PathBuf::from)
}

/// This process's start time: field 22 of `/proc/self/stat` (`proc_pid_stat(5)`).
pub fn own_start_time() -> u64 {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// Everything in the store's `tmp/`.
pub fn tmp_entries(store: &LayerStore) -> Vec<PathBuf> {
    fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let c_name = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and live across the call; `buf` is writable for
    // its length.
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// Every entry of the tree `root`, by path, with its type, mode, owner and content (a digest),
/// link target, device number or opaque xattr: what two unpackings of a layer must agree on.
pub fn tree_listing(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut listing = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let kind = meta.file_type();
        let what = if kind.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            let opaque = xattr(&path, "trusted.overlay.opaque")
                .or_else(|| xattr(&path, "user.overlay.opaque"));
            format!("dir opaque={opaque:?}")
        } else if kind.is_file() {
            let sum = sha2::Sha256::digest(fs::read(&path).unwrap());
            format!("file {} {sum:x}", meta.len())
        } else if kind.is_symlink() {
            format!("link {:?}", fs::read_link(&path).unwrap())
        } else if kind.is_char_device() {
            format!("char {}", meta.rdev())
        } else {
            format!("other {:?}", kind)
        };
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        listing.insert(
            rel,
            format!(
                "{what} mode={:o} {}:{}",
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        );
    }
    listing
}

/// The output of a child that ran to its end.
pub struct Output {
    pub status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    /// Its stdout and stderr, for an assertion's message.
    pub fn text(&self) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&self.stdout),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

/// A child process that is killed and reaped when dropped, whatever the test did.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// Its exit status, if it has ended (and then it is reaped).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// SIGKILLs and reaps it. Returns whether the signal killed it (it had not ended first).
    pub fn kill_and_wait(&mut self) -> bool {
        let Some(mut child) = self.0.take() else {
            return false;
        };
        let _ = child.kill();
        let status = child.wait().unwrap();
        status.signal() == Some(libc::SIGKILL)
    }

    /// Waits for it to end, collecting its output.
    pub fn wait_with_output(mut self) -> Output {
        let child = self.0.take().unwrap();
        let out = child.wait_with_output().unwrap();
        Output {
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory made immutable (`chattr +i`, `ioctl_iflags(2)` `FS_IMMUTABLE_FL`: not even root
/// may create, rename or remove entries in it) until dropped.
pub struct StateGuard(PathBuf);

impl StateGuard {
    pub fn immutable(path: &Path) -> StateGuard {
        let status = Command::new("chattr").arg("+i").arg(path).status().unwrap();
        assert!(status.success(), "chattr +i {}", path.display());
        StateGuard(path.to_path_buf())
    }
}

impl Drop for StateGuard {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// Moves the calling thread into a mount namespace of its own (`unshare(2)` `CLONE_NEWNS`),
/// makes every mount in it private (`MS_REC | MS_PRIVATE`, so that nothing propagates back to
/// the host), and mounts a tmpfs with `options` on `mount_point` there. The namespace, and the
/// tmpfs, go with the process.
pub fn private_tmpfs(mount_point: &Path, options: &str) {
    // SAFETY: unshare takes flags only; CLONE_NEWNS with a shared fs_struct makes this thread
    // a copy of its own (the test's thread, which the mounts below are for).
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    // SAFETY: NUL-terminated literals; null source, type and data are allowed for a
    // propagation change (mount(2)).
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    assert_eq!(
        rc,
        0,
        "mount --make-rprivate /: {}",
        std::io::Error::last_os_error()
    );
    let target = CString::new(mount_point.as_os_str().as_bytes()).unwrap();
    let data = CString::new(options).unwrap();
    // SAFETY: every string is NUL-terminated and outlives the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
}
