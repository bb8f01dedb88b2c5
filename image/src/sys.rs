//! Thin wrappers over the `*at(2)` system calls that layer extraction uses. Every call names
//! exactly one path component relative to an open directory, so no symbolic link inside a layer
//! is ever followed: see `openat(2)` (`O_NOFOLLOW`), `mkdirat(2)`, `mknodat(2)`,
//! `symlinkat(2)`, `linkat(2)`, `unlinkat(2)`, `fstatat(2)`, `fchownat(2)`, `utimensat(2)`,
//! `fsetxattr(2)`, `flock(2)`.
//!
//! The system calls are rustix's (its `linux_raw` backend, errno-free); these adapters keep the
//! `libc` integer types the extraction code computes with and return [`io::Error`]s.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    AtFlags, FileType, FlockOperation, Mode, OFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::fs::{Gid, Uid};

/// A path component (or a symlink target) as a C string, refusing NUL bytes.
pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

/// Retries a call interrupted by a signal (`EINTR`).
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// `open(2)` flags from `libc`'s `int` (the bits are the kernel's).
fn oflags(flags: libc::c_int) -> OFlags {
    OFlags::from_bits_retain(flags as u32)
}

/// `uid_t`/`gid_t` as rustix's ids; `-1` keeps its `chown(2)` meaning ("leave unchanged").
fn owner(uid: libc::uid_t, gid: libc::gid_t) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw_unchecked(uid)),
        Some(Gid::from_raw_unchecked(gid)),
    )
}

/// Opens a directory by path, refusing a symbolic link as its last component.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = cstring(path.as_os_str().as_bytes())?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    retry(|| rustix::fs::open(path.as_c_str(), flags, Mode::empty()))
}

/// `openat(2)` of one component.
pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let flags = oflags(flags) | OFlags::CLOEXEC;
    retry(|| rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode)))
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
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// `mknodat(2)`; `mode` holds the file type (`S_IFCHR`, `S_IFIFO`, ...) and the permissions.
pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    let file_type = FileType::from_raw_mode(mode);
    Ok(rustix::fs::mknodat(
        dir,
        name,
        file_type,
        Mode::from_raw_mode(mode),
        dev,
    )?)
}

/// `symlinkat(2)`: creates `name` in `dir` holding `target` (never resolved here).
pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// `linkat(2)` without `AT_SYMLINK_FOLLOW`: a symbolic link target is linked itself.
pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        old_dir,
        old,
        new_dir,
        new,
        AtFlags::empty(),
    )?)
}

/// `unlinkat(2)`; `AT_REMOVEDIR` in `flags` removes an empty directory.
pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    let flags = AtFlags::from_bits_retain(flags as u32);
    Ok(rustix::fs::unlinkat(dir, name, flags)?)
}

/// `fstatat(2)` with `AT_SYMLINK_NOFOLLOW`; `Ok(None)` when nothing has that name.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW` (changes a symbolic link itself).
pub(crate) fn lchownat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: libc::uid_t,
    gid: libc::gid_t,
) -> io::Result<()> {
    let (uid, gid) = owner(uid, gid);
    Ok(rustix::fs::chownat(
        dir,
        name,
        uid,
        gid,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `fchmodat(2)`. Only used on a node this process has just created (a device or FIFO) in a
/// directory no one else writes to, so the final component is known not to be a symlink.
pub(crate) fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?)
}

fn times(mtime: i64) -> Timestamps {
    let ts = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// `utimensat(2)` with `AT_SYMLINK_NOFOLLOW`: sets access and modification times to `mtime`.
pub(crate) fn lutimensat(dir: BorrowedFd<'_>, name: &CStr, mtime: i64) -> io::Result<()> {
    Ok(rustix::fs::utimensat(
        dir,
        name,
        &times(mtime),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `futimens(3)`: sets access and modification times to `mtime`.
pub(crate) fn futimens(fd: BorrowedFd<'_>, mtime: i64) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &times(mtime))?)
}

/// `fchown(2)`.
pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    let (uid, gid) = owner(uid, gid);
    Ok(rustix::fs::fchown(fd, uid, gid)?)
}

/// `fchmod(2)`.
pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// `fsetxattr(2)`.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())?)
}

/// `flock(2)`; with `nonblocking`, `Ok(false)` when another holder has the lock.
pub(crate) fn flock_exclusive(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<bool> {
    let op = if nonblocking {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::LockExclusive
    };
    match retry(|| rustix::fs::flock(fd, op)) {
        Ok(()) => Ok(true),
        Err(e) if nonblocking && e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the process runs with effective user id 0.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `fsync(2)`: makes the file's (or directory's) data and metadata durable.
pub(crate) fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    retry(|| rustix::fs::fsync(fd))
}

/// `syncfs(2)`: makes everything written to the file system that holds `fd` durable, and
/// reports a write-back error of that file system since the descriptor was opened.
pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    retry(|| rustix::fs::syncfs(fd))
}

/// `fgetxattr(2)`; `Ok(None)` when the file has no such xattr (`ENODATA`) or its file system
/// has none (`EOPNOTSUPP`).
pub(crate) fn fgetxattr(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    // Overlayfs's xattrs are a few bytes; a larger value is read as it is, up to 64 KiB, the
    // limit of xattr values on Linux (`xattr(7)`).
    let mut value = Vec::with_capacity(256);
    loop {
        match retry(|| rustix::fs::fgetxattr(fd, name, &mut value)) {
            Ok(_) => return Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && value.capacity() < 65536 => {
                value = Vec::with_capacity(65536);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `readlinkat(2)`: the target of the symbolic link `name` in `dir`.
pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<rustix::fs::Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// The names in the directory `dir` (`getdents64(2)`), without `.` and `..`, unsorted.
pub(crate) fn dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut reader = rustix::fs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The start time of process `pid`, in clock ticks after boot: field 22 (`starttime`) of
/// `/proc/PID/stat` (`proc_pid_stat(5)`). With the pid, it names a process for good: a pid is
/// reused, a (pid, start time) pair is not. `Ok(None)` when there is no such process.
pub(crate) fn process_start_time(pid: u32) -> io::Result<Option<u64>> {
    let path = format!("/proc/{pid}/stat");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        // ESRCH: the process exited between the lookup and the read.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, format!("malformed {path}"));
    // Field 2, the command name, is in parentheses and may hold spaces and parentheses: the
    // fields after it start after the last `)`.
    let close = text
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(malformed)?;
    let rest = text.get(close + 1..).ok_or_else(malformed)?;
    // After the name come fields 3 (state), 4, …: field 22 is the 20th of them.
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)
        .ok_or_else(malformed)?;
    std::str::from_utf8(field)
        .ok()
        .and_then(|f| f.trim().parse().ok())
        .map(Some)
        .ok_or_else(malformed)
}

/// `lseek(2)` with `SEEK_DATA`: the first offset at or after `offset` that holds data, or
/// `None` when only a hole follows (`ENXIO`). A file system without holes reports every offset
/// before the end as data.
pub(crate) fn seek_data(fd: BorrowedFd<'_>, offset: u64) -> io::Result<Option<u64>> {
    match rustix::fs::seek(fd, rustix::fs::SeekFrom::Data(offset)) {
        Ok(at) => Ok(Some(at)),
        Err(rustix::io::Errno::NXIO) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads `reader` (the file `path`) to its end, but no more than `limit` + 1 bytes: a result
/// longer than `limit` tells the caller the file is too large, without reading all of it.
pub(crate) fn read_bounded(
    reader: impl io::Read,
    limit: u64,
    path: &Path,
) -> crate::Result<Vec<u8>> {
    use io::Read as _;
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| crate::Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}
