//! Mounting: overlayfs through the new mount API, and detached mount trees.
//!
//! - [`Overlay`]: an overlayfs builder (Documentation/filesystems/overlayfs.rst). It makes a
//!   detached mount with `fsopen(2)`, `fsconfig(2)` and `fsmount(2)` — one `lowerdir+` per
//!   layer on Linux 6.8+, so the number of layers is not limited by the one-page `mount(2)`
//!   option string — and mounts it with `move_mount(2)`, falling back to `mount(2)`.
//! - [`bind_tree`], [`set_read_only`], [`set_propagation`], [`attach`], [`unmount`]: detached
//!   bind mounts (`open_tree(2)` with `OPEN_TREE_CLONE`), changed with `mount_setattr(2)`
//!   before they are attached, so that a half-configured mount is never visible.
//! - [`sys`]: the thin system-call adapters all of this is built on (over `rustix::mount`, and
//!   the crate's own `mount_setattr(2)`).
//!
//! Every mount made here is either attached by the call that made it or held by an
//! [`OwnedFd`]; a detached mount whose last file descriptor is closed is freed, so a failure
//! leaves nothing behind.

mod overlay;
pub mod sys;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

pub use overlay::{Overlay, RedirectDir, FSCONFIG_MAX_STRING, MAX_LOWER_LAYERS};
pub use sys::{MountAttr, Propagation};

use crate::error::{Error, Result};
use sys::{MountAttrChange, MountSetattrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

/// Makes a detached bind mount of `source` (`open_tree(2)` with `OPEN_TREE_CLONE`, and
/// `AT_RECURSIVE` when `recursive`, which copies the mounts below `source` too). The mount is
/// not visible anywhere until [`attach`]ed, and is freed if the file descriptor is dropped
/// first.
pub fn bind_tree(source: impl AsRef<Path>, recursive: bool) -> Result<OwnedFd> {
    let source = source.as_ref();
    let mut flags = OpenTreeFlags::CLONE | OpenTreeFlags::CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::RECURSIVE;
    }
    sys::open_tree(sys::CWD, source, flags).map_err(|e| Error::Mount {
        call: "open_tree",
        path: Some(source.to_owned()),
        source: e,
    })
}

fn setattr(
    tree: impl AsFd,
    recursive: bool,
    change: &MountAttrChange,
    call: &'static str,
) -> Result<()> {
    let mut flags = MountSetattrFlags::EMPTY_PATH;
    if recursive {
        flags |= MountSetattrFlags::RECURSIVE;
    }
    sys::mount_setattr(tree.as_fd(), Path::new(""), flags, change).map_err(|source| Error::Mount {
        call,
        path: None,
        source,
    })
}

/// Makes a fresh tmpfs as a detached mount (`fsopen(2)` `"tmpfs"`, `fsmount(2)`), for scratch
/// space reachable only through the returned descriptor (e.g. as `/proc/self/fd/N/...`).
/// `options` is a comma-separated tmpfs option list as for `mount(2)` (`"mode=0755,size=64m"`,
/// `""` for none); each one is set with its own `fsconfig(2)` call. Refused options are
/// reported as [`Error::FsContext`] with the kernel's log.
pub fn tmpfs_tree(options: &str) -> Result<OwnedFd> {
    let fs = sys::fsopen(c"tmpfs", sys::FsopenFlags::CLOEXEC).map_err(|source| Error::Mount {
        call: "fsopen tmpfs",
        path: None,
        source,
    })?;
    let fs = fs.as_fd();
    let context_error = |call, source| Error::FsContext {
        fstype: "tmpfs",
        call,
        source,
        log: sys::fs_context_log(fs),
    };
    for option in options.split(',').filter(|o| !o.is_empty()) {
        let res = match option.split_once('=') {
            Some((key, value)) => sys::fsconfig_set_string(fs, key, value),
            None => sys::fsconfig_set_flag(fs, option),
        };
        res.map_err(|source| context_error("fsconfig", source))?;
    }
    sys::fsconfig_create(fs)
        .map_err(|source| context_error("fsconfig FSCONFIG_CMD_CREATE", source))?;
    sys::fsmount(fs, sys::FsmountFlags::CLOEXEC, MountAttr::empty()).map_err(|source| {
        Error::Mount {
            call: "fsmount",
            path: None,
            source,
        }
    })
}

/// Makes the mount `tree` (a detached mount from [`bind_tree`] or
/// [`Overlay::fsmount`], or any mount's file descriptor) read-only, and with `recursive` every
/// mount below it too (`mount_setattr(2)` with `MOUNT_ATTR_RDONLY`).
pub fn set_read_only(tree: impl AsFd, recursive: bool) -> Result<()> {
    let change = MountAttrChange {
        set: MountAttr::RDONLY,
        ..MountAttrChange::default()
    };
    setattr(tree, recursive, &change, "mount_setattr MOUNT_ATTR_RDONLY")
}

/// Sets the propagation type of the mount `tree`, and with `recursive` of every mount below
/// it (`mount_setattr(2)`, `mount_namespaces(7)`).
pub fn set_propagation(tree: impl AsFd, propagation: Propagation, recursive: bool) -> Result<()> {
    let change = MountAttrChange {
        propagation: Some(propagation),
        ..MountAttrChange::default()
    };
    setattr(tree, recursive, &change, "mount_setattr propagation")
}

/// Attaches the detached mount `tree` at `target` (`move_mount(2)` with
/// `MOVE_MOUNT_F_EMPTY_PATH`). `target` must exist (a directory for a directory tree).
///
/// Pass the [`OwnedFd`] by value to close it once attached: while a descriptor of the mount is
/// open, [`unmount`] without `detach` fails with `EBUSY`.
pub fn attach(tree: impl AsFd, target: impl AsRef<Path>) -> Result<()> {
    let target = target.as_ref();
    sys::move_mount(
        tree.as_fd(),
        Path::new(""),
        sys::CWD,
        target,
        MoveMountFlags::F_EMPTY_PATH,
    )
    .map_err(|source| Error::Mount {
        call: "move_mount",
        path: Some(target.to_owned()),
        source,
    })
}

/// Unmounts the mount at `target` (`umount2(2)`); with `detach`, lazily (`MNT_DETACH`: gone
/// from the tree at once, freed when no longer busy). Symbolic links at `target` are not
/// followed (`UMOUNT_NOFOLLOW`).
pub fn unmount(target: impl AsRef<Path>, detach: bool) -> Result<()> {
    let target = target.as_ref();
    let mut flags = UnmountFlags::NOFOLLOW;
    if detach {
        flags |= UnmountFlags::DETACH;
    }
    sys::umount2(target, flags).map_err(|source| Error::Mount {
        call: "umount2",
        path: Some(target.to_owned()),
        source,
    })
}
