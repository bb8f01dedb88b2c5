//! Thin wrappers over the `*at(2)` system calls that layer extraction uses. Every call names
//! exactly one path component relative to an open directory, so no symbolic link inside a layer
//! is ever followed: see `openat(2)` (`O_NOFOLLOW`), `mkdirat(2)`, `mknodat(2)`,
//! `symlinkat(2)`, `linkat(2)`, `unlinkat(2)`, `fstatat(2)`, `fchownat(2)`, `utimensat(2)`,
//! `fsetxattr(2)`, `flock(2)`.

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// A path component (or a symlink target) as a C string, refusing NUL bytes.
pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Retries a call interrupted by a signal (`EINTR`).
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Opens a directory by path, refusing a symbolic link as its last component.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = cstring(path.as_os_str().as_bytes())?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    retry(|| {
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// `openat(2)` of one component.
pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    retry(|| {
        // SAFETY: `dir` is an open descriptor and `name` a valid C string, both borrowed for
        // the duration of the call; `mode` is passed as the variadic argument openat expects.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat(2) and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

/// Opens the directory `name` in `dir` without following a symbolic link.
pub(crate) fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

/// `mkdirat(2)`.
pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` is a valid C string for the duration of the call.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

/// `mknodat(2)`.
pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` is a valid C string for the duration of the call.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

/// `symlinkat(2)`: creates `name` in `dir` holding `target` (never resolved here).
pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are valid C strings and `dir` is open for the duration of the call.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a symbolic link target is linked itself.
pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    // SAFETY: both descriptors are open and both names valid C strings during the call.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

/// `unlinkat(2)`; `AT_REMOVEDIR` in `flags` removes an empty directory.
pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` is a valid C string for the duration of the call.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`; `Ok(None)` when nothing has that name.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `dir` is open, `name` a valid C string and `st` points to writable memory the
    // size of `struct stat`, all for the duration of the call.
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return if err.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(err)
        };
    }
    // SAFETY: fstatat returned 0, so it filled `st`.
    Ok(Some(unsafe { st.assume_init() }))
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW` (changes a symbolic link itself).
pub(crate) fn lchownat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` is a valid C string for the duration of the call.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `fchmodat(2)`. Only used on a node this process has just created (a device or FIFO) in a
/// directory no one else writes to, so the final component is known not to be a symlink.
pub(crate) fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `dir` is open and `name` is a valid C string for the duration of the call.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    [ts, ts]
}

/// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: sets access and modification times to `mtime`.
pub(crate) fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: `dir` is open, `name` a valid C string and `ts` an array of two timespecs, all
    // for the duration of the call.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// `futimens(3)`: sets access and modification times to `mtime`.
pub(crate) fn futimens(fd: BorrowedFd<'_>, mtime: i64) -> io::Result<()> {
    let ts = times(mtime);
    // SAFETY: `fd` is open and `ts` an array of two timespecs for the duration of the call.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) })
}

/// `fchown(2)`.
pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: `fd` is open for the duration of the call.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

/// `fchmod(2)`.
pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `fd` is open for the duration of the call.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) })
}

/// `fsetxattr(2)`.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `fd` is open, `name` a valid C string and `value` a readable buffer of
    // `value.len()` bytes, all for the duration of the call.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// `flock(2)`; with `nonblocking`, `Ok(false)` when another holder has the lock.
pub(crate) fn flock_exclusive(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<bool> {
    let op = libc::LOCK_EX | if nonblocking { libc::LOCK_NB } else { 0 };
    let result = retry(|| {
        // SAFETY: `fd` is open for the duration of the call.
        check(unsafe { libc::flock(fd.as_raw_fd(), op) })
    });
    match result {
        Ok(()) => Ok(true),
        Err(e) if nonblocking && e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the process runs with effective user id 0.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}
