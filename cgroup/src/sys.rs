//! The file operations a cgroup file system needs, each turning the OS error into an [`Error`]
//! that names the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::parse;

pub(crate) fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })
}

/// Reads and parses a cgroup file, attaching the path to a format error.
pub(crate) fn read_parsed<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> parse::ParseResult<T>,
) -> Result<T> {
    let text = read_file(path)?;
    parse(&text).map_err(|reason| Error::Parse {
        path: path.to_owned(),
        reason,
    })
}

/// Writes `value` with a single `write(2)`: cgroup files take one value per write and report a
/// refused value as the write's error.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    };
    let mut file = OpenOptions::new().write(true).open(path).map_err(err)?;
    file.write_all(value.as_bytes()).map_err(err)
}

/// Creates the directory; `Ok(false)` if it already existed.
pub(crate) fn mkdir(path: &Path) -> Result<bool> {
    match fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Io {
            op: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Removes an empty group directory. A group whose last task has just exited can still be busy
/// for a moment (`EBUSY`), so this retries until `deadline`. A directory that is already gone is
/// not an error.
pub(crate) fn rmdir(path: &Path, deadline: Instant) -> Result<()> {
    let mut pause = Duration::from_micros(100);
    loop {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(Error::Io {
                    op: "remove",
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Removes the group directory `path` if it is empty of processes and child groups, in one
/// rmdir(2), which the kernel refuses (`EBUSY`) otherwise; whether it is gone (removed here, or
/// missing already). Any refusal leaves the group as it was, for [`rmdir`] after the caller has
/// emptied it.
pub(crate) fn rmdir_if_empty(path: &Path) -> bool {
    match fs::remove_dir(path) {
        Ok(()) => true,
        Err(e) => e.kind() == ErrorKind::NotFound,
    }
}

/// Opens a group directory for `clone3(2)`'s `CLONE_INTO_CGROUP`, which needs a real (not
/// `O_PATH`) descriptor of a cgroup v2 directory.
pub(crate) fn open_dir(path: &Path) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Io {
            op: "open",
            path: path.to_owned(),
            source,
        })
}

/// The sub-directories (child groups) of `dir`.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        op: "list",
        path: dir.to_owned(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

/// `dir` and every group below it, parents before children.
pub(crate) fn tree(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![dir.to_owned()];
    let mut i = 0;
    while i < out.len() {
        let children = child_dirs(&out[i])?;
        out.extend(children);
        i += 1;
    }
    Ok(out)
}

/// Waits until the flat keyed file at `path` (`cgroup.events`) has `key` equal to `want`, or
/// `timeout` passes. The kernel signals each change of the file as `POLLPRI` (a "file modified
/// event", in the cgroup-v2 documentation's words), so this sleeps in `poll(2)` between reads.
pub(crate) fn wait_keyed(path: &Path, key: &str, want: u64, timeout: Duration) -> Result<bool> {
    let io = |source| Error::Io {
        op: "read",
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        let n = file.read_at(&mut buf, 0).map_err(io)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let map = parse::flat_keyed(&text).map_err(|reason| Error::Parse {
            path: path.to_owned(),
            reason,
        })?;
        if map.get(key) == Some(&want) {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Wake at least every 50 ms: a change between the read and the poll is reported, but a
        // bounded sleep keeps this correct even where it is not.
        let ms = left.min(Duration::from_millis(50)).as_millis().max(1) as libc::c_int;
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLPRI,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(io(e));
            }
        }
    }
}

/// Polls `done` every millisecond or so until it is true or `timeout` passes.
pub(crate) fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_micros(200);
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}
