//! Thin adapters for the mount system calls: one function per system call, named after it,
//! taking borrowed file descriptors, paths and typed flags and returning [`OwnedFd`]s and
//! [`io::Error`]s (the kernel's error value).
//!
//! The new mount API (Linux 5.2, `mount_setattr(2)` 5.12) works on file descriptors: a
//! *filesystem context* made by [`fsopen`] is configured with `fsconfig(2)`
//! ([`fsconfig_set_string`], [`fsconfig_set_flag`], [`fsconfig_set_fd`]), turned into a
//! superblock with [`fsconfig_create`] and into a *detached* mount with [`fsmount`]; a detached
//! copy of an existing tree comes from [`open_tree`] with [`OpenTreeFlags::CLONE`]. Detached
//! mounts are attached with [`move_mount`]; a detached mount that is never attached is freed
//! when its last file descriptor is closed, so nothing is left behind on error.
//!
//! Each system call is written once in the workspace: `rustix::mount` (its `linux_raw`
//! backend, errno-free) makes all of them except `mount_setattr(2)`, which rustix does not
//! wrap and whose one implementation is [`mount_setattr_cstr`] (the errno-free `syscalls`
//! crate), so that the sandbox child can use it too. The functions here only turn Rust paths
//! and strings into C strings (refusing interior NUL bytes with [`io::ErrorKind::InvalidInput`])
//! and map the flag types; the flag values are rustix's (the kernel ABI of `<linux/mount.h>`).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::AtFlags;
use rustix::mount as rmount;

use bitflags::bitflags;

/// The current working directory as a directory file descriptor (`AT_FDCWD`), for the
/// `*_dirfd` arguments.
pub const CWD: BorrowedFd<'static> = rustix::fs::CWD;

bitflags! {
    /// Flags of [`fsopen`] (`fsopen(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FsopenFlags: u32 {
        /// `FSOPEN_CLOEXEC`: close the context on `execve(2)`.
        const CLOEXEC = rmount::FsOpenFlags::FSOPEN_CLOEXEC.bits();
    }

    /// Flags of [`fsmount`] (`fsmount(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FsmountFlags: u32 {
        /// `FSMOUNT_CLOEXEC`: close the mount's file descriptor on `execve(2)`.
        const CLOEXEC = rmount::FsMountFlags::FSMOUNT_CLOEXEC.bits();
    }

    /// Per-mount attributes (`MOUNT_ATTR_*`), for [`fsmount`] and [`mount_setattr`]
    /// (`fsmount(2)`, `mount_setattr(2)`).
    ///
    /// 64 bits wide as `struct mount_attr`'s fields are; `fsmount(2)` takes the low 32.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MountAttr: u64 {
        /// `MOUNT_ATTR_RDONLY`: the mount is read-only.
        const RDONLY = attr(rmount::MountAttrFlags::MOUNT_ATTR_RDONLY);
        /// `MOUNT_ATTR_NOSUID`: set-user-ID and set-group-ID bits are ignored.
        const NOSUID = attr(rmount::MountAttrFlags::MOUNT_ATTR_NOSUID);
        /// `MOUNT_ATTR_NODEV`: device files cannot be opened.
        const NODEV = attr(rmount::MountAttrFlags::MOUNT_ATTR_NODEV);
        /// `MOUNT_ATTR_NOEXEC`: programs cannot be executed.
        const NOEXEC = attr(rmount::MountAttrFlags::MOUNT_ATTR_NOEXEC);
        /// `MOUNT_ATTR__ATIME`: the mask of the access-time bits; clear it to change them.
        const ATIME_MASK = attr(rmount::MountAttrFlags::MOUNT_ATTR__ATIME);
        /// `MOUNT_ATTR_NOATIME`: access times are not updated.
        const NOATIME = attr(rmount::MountAttrFlags::MOUNT_ATTR_NOATIME);
        /// `MOUNT_ATTR_STRICTATIME`: access times are always updated.
        const STRICTATIME = attr(rmount::MountAttrFlags::MOUNT_ATTR_STRICTATIME);
        /// `MOUNT_ATTR_NODIRATIME`: directory access times are not updated.
        const NODIRATIME = attr(rmount::MountAttrFlags::MOUNT_ATTR_NODIRATIME);
        /// `MOUNT_ATTR_NOSYMFOLLOW`: symbolic links are not followed during path resolution.
        const NOSYMFOLLOW = attr(rmount::MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW);
    }

    /// Flags of [`move_mount`] (`move_mount(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MoveMountFlags: u32 {
        /// `MOVE_MOUNT_F_SYMLINKS`: follow symbolic links in the source path.
        const F_SYMLINKS = rmount::MoveMountFlags::MOVE_MOUNT_F_SYMLINKS.bits();
        /// `MOVE_MOUNT_F_AUTOMOUNTS`: trigger automounts in the source path.
        const F_AUTOMOUNTS = rmount::MoveMountFlags::MOVE_MOUNT_F_AUTOMOUNTS.bits();
        /// `MOVE_MOUNT_F_EMPTY_PATH`: an empty source path means the source file descriptor
        /// itself (a detached mount from [`fsmount`] or [`open_tree`]).
        const F_EMPTY_PATH = rmount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH.bits();
        /// `MOVE_MOUNT_T_SYMLINKS`: follow symbolic links in the target path.
        const T_SYMLINKS = rmount::MoveMountFlags::MOVE_MOUNT_T_SYMLINKS.bits();
        /// `MOVE_MOUNT_T_AUTOMOUNTS`: trigger automounts in the target path.
        const T_AUTOMOUNTS = rmount::MoveMountFlags::MOVE_MOUNT_T_AUTOMOUNTS.bits();
        /// `MOVE_MOUNT_T_EMPTY_PATH`: an empty target path means the target file descriptor.
        const T_EMPTY_PATH = rmount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH.bits();
        /// `MOVE_MOUNT_BENEATH` (Linux 6.5): mount beneath the top mount of the target.
        const BENEATH = rmount::MoveMountFlags::MOVE_MOUNT_BENEATH.bits();
    }

    /// Flags of [`open_tree`] (`open_tree(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct OpenTreeFlags: u32 {
        /// `OPEN_TREE_CLONE`: make a detached copy of the mount (a bind mount not yet attached)
        /// instead of an `O_PATH` file descriptor.
        const CLONE = rmount::OpenTreeFlags::OPEN_TREE_CLONE.bits();
        /// `OPEN_TREE_CLOEXEC`: close the file descriptor on `execve(2)`.
        const CLOEXEC = rmount::OpenTreeFlags::OPEN_TREE_CLOEXEC.bits();
        /// `AT_SYMLINK_NOFOLLOW`: do not follow a final symbolic link.
        const SYMLINK_NOFOLLOW = rmount::OpenTreeFlags::AT_SYMLINK_NOFOLLOW.bits();
        /// `AT_NO_AUTOMOUNT`: do not trigger an automount at the final component.
        const NO_AUTOMOUNT = rmount::OpenTreeFlags::AT_NO_AUTOMOUNT.bits();
        /// `AT_EMPTY_PATH`: an empty path means the directory file descriptor itself.
        const EMPTY_PATH = rmount::OpenTreeFlags::AT_EMPTY_PATH.bits();
        /// `AT_RECURSIVE`: with [`CLONE`](Self::CLONE), copy the whole tree of mounts below the
        /// path too (a recursive bind mount).
        const RECURSIVE = rmount::OpenTreeFlags::AT_RECURSIVE.bits();
    }

    /// Path-resolution flags of [`mount_setattr`] (`mount_setattr(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MountSetattrFlags: u32 {
        /// `AT_SYMLINK_NOFOLLOW`: do not follow a final symbolic link.
        const SYMLINK_NOFOLLOW = AtFlags::SYMLINK_NOFOLLOW.bits();
        /// `AT_NO_AUTOMOUNT`: do not trigger an automount at the final component.
        const NO_AUTOMOUNT = AtFlags::NO_AUTOMOUNT.bits();
        /// `AT_EMPTY_PATH`: an empty path means the directory file descriptor itself (e.g. a
        /// detached mount).
        const EMPTY_PATH = AtFlags::EMPTY_PATH.bits();
        /// `AT_RECURSIVE`: change every mount of the tree, not only the top one.
        const RECURSIVE = rmount::OpenTreeFlags::AT_RECURSIVE.bits();
    }

    /// Flags of [`umount2`] (`umount2(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct UnmountFlags: i32 {
        /// `MNT_FORCE`: abort pending requests (network file systems).
        const FORCE = unmount_flag(rmount::UnmountFlags::FORCE);
        /// `MNT_DETACH`: lazy unmount: detach now, clean up when the mount is no longer busy.
        const DETACH = unmount_flag(rmount::UnmountFlags::DETACH);
        /// `MNT_EXPIRE`: mark the mount expired.
        const EXPIRE = unmount_flag(rmount::UnmountFlags::EXPIRE);
        /// `UMOUNT_NOFOLLOW`: do not follow a final symbolic link.
        const NOFOLLOW = unmount_flag(rmount::UnmountFlags::NOFOLLOW);
    }
}

/// A `MOUNT_ATTR_*` bit of rustix's 32-bit type as [`MountAttr`]'s 64-bit value.
const fn attr(flag: rmount::MountAttrFlags) -> u64 {
    flag.bits() as u64
}

/// A `umount2(2)` flag of rustix's unsigned type as [`UnmountFlags`]' `int`; every defined
/// flag is below `1 << 31`.
const fn unmount_flag(flag: rmount::UnmountFlags) -> i32 {
    flag.bits() as i32
}

/// Mount propagation types, for [`MountAttrChange::propagation`] (`mount_namespaces(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Propagation {
    /// `MS_PRIVATE`: events propagate neither in nor out.
    Private,
    /// `MS_SHARED`: events propagate to and from the peer group.
    Shared,
    /// `MS_SLAVE`: events propagate in from the master, not out.
    Slave,
    /// `MS_UNBINDABLE`: private, and cannot be bind mounted.
    Unbindable,
}

impl Propagation {
    /// The `MS_*` value `mount_setattr(2)` takes in `propagation` (`<linux/mount.h>`).
    fn bits(self) -> u64 {
        use rmount::MountPropagationFlags as P;
        let flag = match self {
            Propagation::Unbindable => P::UNBINDABLE,
            Propagation::Private => P::PRIVATE,
            Propagation::Slave => P::DOWNSTREAM,
            Propagation::Shared => P::SHARED,
        };
        u64::from(flag.bits())
    }
}

/// A change of mount attributes for [`mount_setattr`]: the `struct mount_attr` of
/// `mount_setattr(2)` (idmapped mounts are not covered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MountAttrChange {
    /// Attributes to set (`attr_set`).
    pub set: MountAttr,
    /// Attributes to clear (`attr_clr`); to change the access-time mode, clear
    /// [`MountAttr::ATIME_MASK`] and set the mode.
    pub clear: MountAttr,
    /// A new propagation type, or `None` to keep it.
    pub propagation: Option<Propagation>,
}

/// `struct mount_attr` of `<linux/mount.h>` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct RawMountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "string contains an interior NUL byte",
        )
    })
}

fn path_cstring(path: &Path) -> io::Result<CString> {
    cstring(path.as_os_str().as_bytes())
}

/// `fsopen(2)`: opens a new filesystem context for the file-system type `fs_name` (e.g.
/// `"overlay"`). Fails with `ENOSYS` before Linux 5.2 and `ENODEV` for an unknown type.
pub fn fsopen(fs_name: &CStr, flags: FsopenFlags) -> io::Result<OwnedFd> {
    let flags = rmount::FsOpenFlags::from_bits_retain(flags.bits());
    Ok(rmount::fsopen(fs_name, flags)?)
}

/// `fsconfig(2)` `FSCONFIG_SET_STRING`: sets the option `key` to the string `value`.
///
/// The kernel copies at most 255 bytes of `value` (longer values fail with `EINVAL`).
pub fn fsconfig_set_string(
    fs_fd: BorrowedFd<'_>,
    key: &str,
    value: impl AsRef<OsStr>,
) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    let value = cstring(value.as_ref().as_bytes())?;
    Ok(rmount::fsconfig_set_string(fs_fd, &key, &value)?)
}

/// `fsconfig(2)` `FSCONFIG_SET_FLAG`: sets the flag option `key` (one without a value).
pub fn fsconfig_set_flag(fs_fd: BorrowedFd<'_>, key: &str) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    Ok(rmount::fsconfig_set_flag(fs_fd, &key)?)
}

/// `fsconfig(2)` `FSCONFIG_SET_FD`: sets the option `key` to the open file `fd` (for overlayfs
/// layers, an `O_RDONLY | O_DIRECTORY` descriptor — `O_PATH` ones are refused; Linux 6.13+).
pub fn fsconfig_set_fd(fs_fd: BorrowedFd<'_>, key: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    Ok(rmount::fsconfig_set_fd(fs_fd, &key, fd)?)
}

/// `fsconfig(2)` `FSCONFIG_CMD_CREATE`: creates the superblock from the configured context.
/// On failure, the reason is often in the context's log: see [`fs_context_log`].
pub fn fsconfig_create(fs_fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rmount::fsconfig_create(fs_fd)?)
}

/// Reads the messages the kernel logged on a filesystem context (`fsopen(2)`, "Message
/// retrieval interface"): each `read(2)` on the context returns one message, prefixed with
/// `"e "` (error), `"w "` (warning) or `"i "` (information), until `ENODATA`. Reading consumes
/// the messages. Returns what could be read; never fails.
pub fn fs_context_log(fs_fd: BorrowedFd<'_>) -> Vec<String> {
    let mut messages = Vec::new();
    let mut buf = [0u8; 1024];
    // The kernel keeps at most 8 messages; bound the loop anyway.
    for _ in 0..64 {
        let n = match rustix::io::read(fs_fd, &mut buf) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let msg = String::from_utf8_lossy(&buf[..n]);
        messages.push(msg.trim_end().to_owned());
    }
    messages
}

/// `fsmount(2)`: makes a detached mount of the superblock created on `fs_fd` (after
/// [`fsconfig_create`]), with the per-mount attributes `attrs`. The mount is freed when the
/// returned file descriptor is closed unless it was attached with [`move_mount`].
pub fn fsmount(
    fs_fd: BorrowedFd<'_>,
    flags: FsmountFlags,
    attrs: MountAttr,
) -> io::Result<OwnedFd> {
    let flags = rmount::FsMountFlags::from_bits_retain(flags.bits());
    // The attribute argument is an `unsigned int`; every defined attribute fits.
    let attrs = rmount::MountAttrFlags::from_bits_retain(attrs.bits() as u32);
    Ok(rmount::fsmount(fs_fd, flags, attrs)?)
}

/// `move_mount(2)`: moves the mount at `from_dirfd`/`from_path` to `to_dirfd`/`to_path`. With
/// [`MoveMountFlags::F_EMPTY_PATH`] and an empty `from_path`, attaches the detached mount
/// `from_dirfd` (from [`fsmount`] or [`open_tree`]).
pub fn move_mount(
    from_dirfd: BorrowedFd<'_>,
    from_path: &Path,
    to_dirfd: BorrowedFd<'_>,
    to_path: &Path,
    flags: MoveMountFlags,
) -> io::Result<()> {
    let from = path_cstring(from_path)?;
    let to = path_cstring(to_path)?;
    let flags = rmount::MoveMountFlags::from_bits_retain(flags.bits());
    Ok(rmount::move_mount(from_dirfd, &from, to_dirfd, &to, flags)?)
}

/// `open_tree(2)`: opens the mount at `dirfd`/`path`. With [`OpenTreeFlags::CLONE`] the result
/// is a detached copy of it (with [`OpenTreeFlags::RECURSIVE`], of the whole tree below it),
/// ready for [`mount_setattr`] and [`move_mount`].
pub fn open_tree(dirfd: BorrowedFd<'_>, path: &Path, flags: OpenTreeFlags) -> io::Result<OwnedFd> {
    let path = path_cstring(path)?;
    let flags = rmount::OpenTreeFlags::from_bits_retain(flags.bits());
    Ok(rmount::open_tree(dirfd, &path, flags)?)
}

/// `mount_setattr(2)`: changes the attributes (and propagation) of the mount at
/// `dirfd`/`path`, or of the whole tree with [`MountSetattrFlags::RECURSIVE`]. With
/// [`MountSetattrFlags::EMPTY_PATH`] and an empty path, acts on `dirfd` itself (a detached
/// mount, for example). Linux 5.12+.
///
/// The path is copied into a C string; [`mount_setattr_cstr`] is the same call without the copy.
pub fn mount_setattr(
    dirfd: BorrowedFd<'_>,
    path: &Path,
    flags: MountSetattrFlags,
    change: &MountAttrChange,
) -> io::Result<()> {
    let path = path_cstring(path)?;
    mount_setattr_cstr(dirfd, &path, flags, change).map_err(io::Error::from)
}

/// `mount_setattr(2)` on a path that is already a C string, returning the kernel's error value:
/// the one implementation of the call in the workspace, which `rustix` does not wrap.
///
/// # Child safety
///
/// One system call through the `syscalls` crate's inline `syscall` instruction: no allocation,
/// no lock, no panic (the error value is always in the range rustix's `Errno` accepts), and
/// `errno` is neither read nor written, so it may run in a `CLONE_VM`
/// child (see [`RootfsPlan::apply`](crate::rootfs::RootfsPlan::apply)).
pub fn mount_setattr_cstr(
    dirfd: BorrowedFd<'_>,
    path: &CStr,
    flags: MountSetattrFlags,
    change: &MountAttrChange,
) -> rustix::io::Result<()> {
    let attr = RawMountAttr {
        attr_set: change.set.bits(),
        attr_clr: change.clear.bits(),
        propagation: change.propagation.map_or(0, Propagation::bits),
        userns_fd: 0,
    };
    // The kernel takes `int dfd`: sign-extending keeps `AT_FDCWD` negative in the low 32 bits.
    let dfd = dirfd.as_raw_fd() as isize as usize;
    // SAFETY: `path` is a NUL-terminated string and `attr` a `struct mount_attr` of the size
    // passed; both outlive the call and the kernel only reads them. `dirfd` is a valid file
    // descriptor (or `AT_FDCWD`) for the call's duration.
    let ret = unsafe {
        syscalls::syscall5(
            syscalls::Sysno::mount_setattr,
            dfd,
            path.as_ptr() as usize,
            flags.bits() as usize,
            std::ptr::from_ref(&attr) as usize,
            std::mem::size_of::<RawMountAttr>(),
        )
    };
    match ret {
        Ok(_) => Ok(()),
        // `syscalls` reports only `1..=4095`, the range `from_raw_os_error` asserts.
        Err(e) => Err(rustix::io::Errno::from_raw_os_error(e.into_raw())),
    }
}

/// `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`: makes the detached mount `tree` (with
/// `recursive`, every mount of it) an id-mapped mount, its ids mapped through the maps of the
/// user namespace `userns` (Linux 5.12+; the file system must support it). The mount must not
/// be attached yet, nor id-mapped already.
pub fn mount_setattr_idmap(
    tree: BorrowedFd<'_>,
    recursive: bool,
    userns: BorrowedFd<'_>,
) -> io::Result<()> {
    let attr = RawMountAttr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        // A descriptor is never negative.
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut flags = MountSetattrFlags::EMPTY_PATH;
    if recursive {
        flags |= MountSetattrFlags::RECURSIVE;
    }
    // SAFETY: the path is an empty NUL-terminated string and `attr` a `struct mount_attr` of
    // the size passed; both outlive the call, which only reads them.
    let ret = unsafe {
        syscalls::syscall5(
            syscalls::Sysno::mount_setattr,
            tree.as_raw_fd() as usize,
            c"".as_ptr() as usize,
            flags.bits() as usize,
            std::ptr::from_ref(&attr) as usize,
            std::mem::size_of::<RawMountAttr>(),
        )
    };
    match ret {
        Ok(_) => Ok(()),
        Err(e) => Err(io::Error::from_raw_os_error(e.into_raw())),
    }
}

/// `umount2(2)`: unmounts the mount at `target`.
pub fn umount2(target: &Path, flags: UnmountFlags) -> io::Result<()> {
    let target = path_cstring(target)?;
    // Same bits, rustix's unsigned type (`umount2(2)` takes an `int`).
    let flags = rmount::UnmountFlags::from_bits_retain(flags.bits() as u32);
    Ok(rmount::unmount(&target, flags)?)
}

/// The legacy `mount(2)` of a new file system: `source` and `fstype` are given, as a new mount
/// needs them (binds, moves, remounts and propagation changes go through the new API above).
/// `data` is the file system's option string; the kernel copies at most one page of it.
pub fn mount(
    source: &OsStr,
    target: &Path,
    fstype: &CStr,
    flags: rmount::MountFlags,
    data: Option<&CStr>,
) -> io::Result<()> {
    let source = cstring(source.as_bytes())?;
    let target = path_cstring(target)?;
    Ok(rmount::mount(&source, &target, fstype, flags, data)?)
}
