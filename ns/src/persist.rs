//! Keeping a namespace alive without a process in it, by bind-mounting its nsfs file onto an
//! ordinary file, as `ip netns add` does under `/run/netns` (`namespaces(7)`, "The /proc/pid/ns/
//! directory").

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::handle::cstring;
use crate::NsFile;

/// A namespace kept alive by a bind mount at [`path`](PersistedNs::path).
///
/// The mount outlives this value and the process that made it; that is its purpose. Call
/// [`remove`](PersistedNs::remove) to let the namespace go.
#[derive(Debug)]
pub struct PersistedNs {
    path: PathBuf,
}

/// Bind-mounts the namespace `ns` onto a new empty file at `target`, which must not exist yet.
///
/// On failure nothing is left behind. A mount namespace cannot be persisted inside itself or a
/// namespace it would then keep alive in a loop (`EINVAL`); persist it from its parent's mount
/// namespace, on a mount with private propagation.
pub fn persist(ns: &NsFile, target: impl AsRef<Path>) -> Result<PersistedNs> {
    let target = target.as_ref();
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|e| Error::io("create", target, e))?;
    let undo = |err: Error| {
        let _ = std::fs::remove_file(target);
        err
    };
    let dst = cstring(target).map_err(undo)?;
    let src = cstring(Path::new(&format!(
        "/proc/self/fd/{}",
        ns.as_fd().as_raw_fd()
    )))
    .map_err(undo)?;
    // SAFETY: both paths are valid NUL-terminated strings; a bind mount reads no other memory.
    let ret = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if ret == -1 {
        return Err(undo(Error::Mount {
            op: "bind-mount namespace onto",
            path: target.to_owned(),
            source: io::Error::last_os_error(),
        }));
    }
    Ok(PersistedNs {
        path: target.to_owned(),
    })
}

impl PersistedNs {
    /// Refers to a namespace persisted earlier (by this process or another) at `path`.
    pub fn at(path: impl Into<PathBuf>) -> PersistedNs {
        PersistedNs { path: path.into() }
    }

    /// Where the namespace is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the persisted namespace, e.g. to [`setns`](NsFile::setns) into it.
    pub fn open(&self) -> Result<NsFile> {
        NsFile::open_path(&self.path)
    }

    /// Unmounts the namespace file (lazily, `MNT_DETACH`) and deletes it. The namespace itself
    /// lives on while processes or open files still refer to it.
    pub fn remove(self) -> Result<()> {
        let path = cstring(&self.path)?;
        // SAFETY: `path` is a valid NUL-terminated string.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == -1 {
            return Err(Error::Mount {
                op: "unmount",
                path: self.path,
                source: io::Error::last_os_error(),
            });
        }
        std::fs::remove_file(&self.path).map_err(|e| Error::io("remove", &self.path, e))
    }
}
