//! `RootfsPlan::apply` on the real kernel, in forked children.
//!
//! Each child moves into a private mount namespace of its own (`unshare(CLONE_NEWNS)`, then every
//! mount made private so nothing propagates back to the host), applies the plan and checks the
//! result from inside, and reports through a pipe. Its mounts die with it. The child is forked
//! from a multi-threaded test process, so it only makes system calls (through rustix) on strings
//! prepared before the fork: another thread may have held the allocator's lock at the fork.

use std::ffi::CStr;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use palisade_overlay::rootfs::{Access, ApplyFailure, Op, Rootfs, RootfsPlan};
use palisade_test_support::{require_root, TempDir};
use rustix::fs::{FileType, Mode, OFlags, StatVfsMountFlags, CWD};
use rustix::io::Errno;

/// What a child reported.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// The plan was applied; `failed_check` is 0 or the number of the first check that failed,
    /// with the errno it met (0 if none).
    Applied { failed_check: u32, errno: i32 },
    /// `apply` failed.
    Failed(ApplyFailure),
}

/// A check run in the child after `apply`: `Err((check number, errno or 0))` when one fails.
/// (Not a rustix `Errno`: it cannot hold 0, and `Errno::from_raw_os_error(0)` panics.)
type Check = fn() -> Result<(), (u32, i32)>;

/// Forks a child that applies `plan` in a private mount namespace of its own and runs `check`
/// (with the umask set to 022 before `apply`, which must give it back), and returns its report.
fn apply_in_child(plan: &RootfsPlan, check: Check) -> Report {
    let (rx, tx) = rustix::pipe::pipe().unwrap();
    // SAFETY: the child makes only system calls (rustix, and libc's unshare/mount/_exit, whose
    // errno writes are the child's own after fork) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(rx);
        child(plan, check, &tx);
    }
    drop(tx);
    let mut buf = [0u8; 12];
    let mut rx = fs::File::from(rx);
    let read = rx.read_exact(&mut buf);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a live local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    read.unwrap_or_else(|e| panic!("no report from the child (status {status:#x}): {e}"));
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let word = |i: usize| u32::from_ne_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap());
    match word(0) {
        0 => Report::Applied {
            failed_check: word(1),
            errno: word(2) as i32,
        },
        _ => Report::Failed(ApplyFailure {
            index: word(1),
            errno: Errno::from_raw_os_error(word(2) as i32),
        }),
    }
}

/// The forked child: never returns.
fn child(plan: &RootfsPlan, check: Check, tx: &OwnedFd) -> ! {
    let mut out = [0u32; 3];
    // SAFETY: unshare and mount only change this (single-threaded) child's mount namespace; the
    // strings are literals.
    let private = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
    };
    if !private {
        // SAFETY: exits the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(3) };
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));
    match plan.apply() {
        Ok(()) => {
            let restored = rustix::process::umask(Mode::from_raw_mode(0o022));
            let result = if restored == Mode::from_raw_mode(0o022) {
                check()
            } else {
                Err((u32::MAX, 0))
            };
            if let Err((n, errno)) = result {
                out = [0, n, errno as u32];
            }
        }
        Err(f) => out = [1, f.index, f.errno.raw_os_error() as u32],
    }
    let mut buf = [0u8; 12];
    for (i, w) in out.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let code = match rustix::io::write(tx, &buf) {
        Ok(12) => 0,
        _ => 4,
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// Check `n`: `r` succeeded.
fn ok<T>(n: u32, r: rustix::io::Result<T>) -> Result<T, (u32, i32)> {
    r.map_err(|e| (n, e.raw_os_error()))
}

/// Check `n`: `cond` holds.
fn ensure(n: u32, cond: bool) -> Result<(), (u32, i32)> {
    if cond {
        Ok(())
    } else {
        Err((n, 0))
    }
}

/// Check `n`: `path` has the file type `ty`.
fn is(n: u32, path: &CStr, ty: FileType) -> Result<(), (u32, i32)> {
    let st = ok(n, rustix::fs::stat(path))?;
    ensure(n, FileType::from_raw_mode(st.st_mode) == ty)
}

/// The working directory is `/`, the root of the directory tree of the test below.
fn cwd_is_root() -> Result<(), (u32, i32)> {
    let dot = ok(100, rustix::fs::stat(c"."))?;
    let root = ok(101, rustix::fs::stat(c"/"))?;
    ensure(102, (dot.st_dev, dot.st_ino) == (root.st_dev, root.st_ino))
}

fn check_dir_root() -> Result<(), (u32, i32)> {
    cwd_is_root()?;
    // The directory is the root, read-only.
    is(1, c"/marker", FileType::RegularFile)?;
    match rustix::fs::mkdirat(CWD, c"/new", Mode::from_raw_mode(0o755)) {
        Err(Errno::ROFS) => {}
        r => return Err((2, r.err().map_or(0, Errno::raw_os_error))),
    }
    // The kernel's file systems.
    is(3, c"/proc/self/status", FileType::RegularFile)?;
    let proc = ok(4, rustix::fs::statfs(c"/proc"))?;
    ensure(4, proc.f_type == libc::PROC_SUPER_MAGIC)?;
    is(5, c"/dev/null", FileType::CharacterDevice)?;
    let null = ok(
        6,
        rustix::fs::open(c"/dev/null", OFlags::WRONLY, Mode::empty()),
    )?;
    ok(6, rustix::io::write(&null, b"x"))?;
    // The plan's modes, whatever the umask (022 here).
    let tmp = ok(7, rustix::fs::stat(c"/tmp"))?;
    ensure(7, tmp.st_mode & 0o7777 == 0o1777)?;
    // The read-only volume and the tmpfs.
    is(8, c"/data/in/file", FileType::RegularFile)?;
    match rustix::fs::mkdirat(CWD, c"/data/in/new", Mode::from_raw_mode(0o755)) {
        Err(Errno::ROFS) => {}
        r => return Err((9, r.err().map_or(0, Errno::raw_os_error))),
    }
    let scratch = ok(10, rustix::fs::statfs(c"/scratch"))?;
    ensure(10, scratch.f_type == libc::TMPFS_MAGIC)?;
    ok(
        11,
        rustix::fs::mkdirat(CWD, c"/scratch/new", Mode::from_raw_mode(0o700)),
    )?;
    // The kernel tunables read-only, the links of /dev.
    let sys = ok(12, rustix::fs::statvfs(c"/proc/sys"))?;
    ensure(12, sys.f_flag.contains(StatVfsMountFlags::RDONLY))?;
    let fd = ok(13, rustix::fs::lstat(c"/dev/fd"))?;
    ensure(13, FileType::from_raw_mode(fd.st_mode) == FileType::Symlink)?;
    Ok(())
}

#[test]
fn a_directory_root_is_applied_in_the_child() {
    require_root!();
    let root = TempDir::new("apply-root");
    fs::write(root.path().join("marker"), b"").unwrap();
    let volume = TempDir::new("apply-volume");
    fs::write(volume.path().join("file"), b"").unwrap();
    let plan = Rootfs::dir(root.path())
        .volume(volume.path(), "/data/in", Access::ReadOnly)
        .tmpfs("/scratch")
        .read_only(true)
        .plan()
        .unwrap();
    assert_eq!(
        apply_in_child(&plan, check_dir_root),
        Report::Applied {
            failed_check: 0,
            errno: 0
        }
    );
    // The mount points were made in the directory itself, with the plan's modes.
    let meta = fs::metadata(root.path().join("tmp")).unwrap();
    assert!(meta.is_dir());
    // Nothing of the child's mounts is left on the host.
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = root.path().to_str().unwrap();
    assert!(!info.contains(dir), "left behind on the host: {info}");
}

fn check_host_root() -> Result<(), (u32, i32)> {
    cwd_is_root()?;
    is(1, c"/usr/bin", FileType::Directory)?;
    // The host's secrets and data are left out.
    match rustix::fs::stat(c"/etc/shadow") {
        Err(Errno::NOENT) => {}
        r => return Err((2, r.err().map_or(0, Errno::raw_os_error))),
    }
    let root = ok(
        3,
        rustix::fs::open(c"/root", OFlags::DIRECTORY, Mode::empty()),
    )?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
    let mut dir = rustix::fs::RawDir::new(root, &mut buf);
    while let Some(entry) = dir.next() {
        let entry = ok(4, entry)?;
        let name = entry.file_name().to_bytes();
        ensure(4, name == b"." || name == b"..")?;
    }
    // Writes go to the throwaway layer.
    let file = ok(
        5,
        rustix::fs::open(
            c"/etc/palisade-apply-test",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o600),
        ),
    )?;
    drop(file);
    Ok(())
}

#[test]
fn a_host_root_is_applied_in_the_child() {
    require_root!();
    if !Path::new("/etc/shadow").exists() {
        palisade_test_support::skip("the host has no /etc/shadow to hide");
        return;
    }
    let plan = Rootfs::host().plan().unwrap();
    assert!(plan.ops.iter().any(|o| matches!(o, Op::Overlay { .. })));
    assert_eq!(
        apply_in_child(&plan, check_host_root),
        Report::Applied {
            failed_check: 0,
            errno: 0
        }
    );
    assert!(!Path::new("/etc/palisade-apply-test").exists());
}

#[test]
fn a_failing_op_reports_its_index_and_errno() {
    require_root!();
    let root = TempDir::new("apply-fail");
    let volume = TempDir::new("apply-gone");
    let source = volume.path().to_owned();
    let plan = Rootfs::dir(root.path())
        .volume(&source, "/data", Access::ReadWrite)
        .plan()
        .unwrap();
    // Gone between the plan and the child.
    drop(volume);
    let bind = plan
        .ops
        .iter()
        .position(|o| {
            matches!(o, Op::Mount { source: s, .. } if s.to_bytes() == source.as_os_str().as_encoded_bytes())
        })
        .unwrap();
    let Report::Failed(failure) = apply_in_child(&plan, || Ok(())) else {
        panic!("applied a plan whose volume is gone");
    };
    assert_eq!(
        failure,
        ApplyFailure {
            index: bind as u32,
            errno: Errno::NOENT
        }
    );
    assert_eq!(failure.op(&plan), Some(&plan.ops[bind]));
    assert!(failure.to_string().contains(&format!("op {bind} failed")));
}

#[test]
fn a_failure_names_its_op() {
    let plan = Rootfs::host().plan().unwrap();
    let last = ApplyFailure {
        index: plan.ops.len() as u32,
        errno: Errno::BADF,
    };
    assert_eq!(last.op(&plan), None);
    let first = ApplyFailure {
        index: 0,
        errno: Errno::PERM,
    };
    assert_eq!(first.op(&plan), Some(&Op::MakePrivate));
    assert!(std::error::Error::source(&first).is_none());
}
