//! Thin wrappers for the mount system calls, in the style of `rustix`: one function per system
//! call, named after it, taking borrowed file descriptors and typed flags and returning
//! [`OwnedFd`]s and [`io::Error`]s (the raw `errno`).
//!
//! The new mount API (Linux 5.2, `mount_setattr(2)` 5.12) works on file descriptors: a
//! *filesystem context* made by [`fsopen`] is configured with `fsconfig(2)`
//! ([`fsconfig_set_string`], [`fsconfig_set_flag`], [`fsconfig_set_fd`]), turned into a
//! superblock with [`fsconfig_create`] and into a *detached* mount with [`fsmount`]; a detached
//! copy of an existing tree comes from [`open_tree`] with [`OpenTreeFlags::CLONE`]. Detached
//! mounts are attached with [`move_mount`]; a detached mount that is never attached is freed
//! when its last file descriptor is closed, so nothing is left behind on error.
//!
//! The system calls are made with `libc::syscall` and the `libc::SYS_*` numbers, except
//! `mount_setattr(2)`, whose one implementation ([`mount_setattr_cstr`]) goes through the
//! errno-free `syscalls` crate so that the sandbox child can use it too; the constants of
//! `<linux/mount.h>` are defined here (the bit values are part of the kernel ABI).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bitflags::bitflags;

/// The current working directory as a directory file descriptor (`AT_FDCWD`), for the
/// `*_dirfd` arguments.
// SAFETY: `AT_FDCWD` is a value every `*at` system call accepts in place of a file descriptor
// and it is never closed; `BorrowedFd` only requires that it is not -1.
pub const CWD: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) };

bitflags! {
    /// Flags of [`fsopen`] (`fsopen(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FsopenFlags: u32 {
        /// `FSOPEN_CLOEXEC`: close the context on `execve(2)`.
        const CLOEXEC = 0x0000_0001;
    }

    /// Flags of [`fsmount`] (`fsmount(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FsmountFlags: u32 {
        /// `FSMOUNT_CLOEXEC`: close the mount's file descriptor on `execve(2)`.
        const CLOEXEC = 0x0000_0001;
    }

    /// Per-mount attributes (`MOUNT_ATTR_*`), for [`fsmount`] and [`mount_setattr`]
    /// (`fsmount(2)`, `mount_setattr(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MountAttr: u64 {
        /// `MOUNT_ATTR_RDONLY`: the mount is read-only.
        const RDONLY = 0x0000_0001;
        /// `MOUNT_ATTR_NOSUID`: set-user-ID and set-group-ID bits are ignored.
        const NOSUID = 0x0000_0002;
        /// `MOUNT_ATTR_NODEV`: device files cannot be opened.
        const NODEV = 0x0000_0004;
        /// `MOUNT_ATTR_NOEXEC`: programs cannot be executed.
        const NOEXEC = 0x0000_0008;
        /// `MOUNT_ATTR__ATIME`: the mask of the access-time bits; clear it to change them.
        const ATIME_MASK = 0x0000_0070;
        /// `MOUNT_ATTR_NOATIME`: access times are not updated.
        const NOATIME = 0x0000_0010;
        /// `MOUNT_ATTR_STRICTATIME`: access times are always updated.
        const STRICTATIME = 0x0000_0020;
        /// `MOUNT_ATTR_NODIRATIME`: directory access times are not updated.
        const NODIRATIME = 0x0000_0080;
        /// `MOUNT_ATTR_NOSYMFOLLOW`: symbolic links are not followed during path resolution.
        const NOSYMFOLLOW = 0x0020_0000;
    }

    /// Flags of [`move_mount`] (`move_mount(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MoveMountFlags: u32 {
        /// `MOVE_MOUNT_F_SYMLINKS`: follow symbolic links in the source path.
        const F_SYMLINKS = 0x0000_0001;
        /// `MOVE_MOUNT_F_AUTOMOUNTS`: trigger automounts in the source path.
        const F_AUTOMOUNTS = 0x0000_0002;
        /// `MOVE_MOUNT_F_EMPTY_PATH`: an empty source path means the source file descriptor
        /// itself (a detached mount from [`fsmount`] or [`open_tree`]).
        const F_EMPTY_PATH = 0x0000_0004;
        /// `MOVE_MOUNT_T_SYMLINKS`: follow symbolic links in the target path.
        const T_SYMLINKS = 0x0000_0010;
        /// `MOVE_MOUNT_T_AUTOMOUNTS`: trigger automounts in the target path.
        const T_AUTOMOUNTS = 0x0000_0020;
        /// `MOVE_MOUNT_T_EMPTY_PATH`: an empty target path means the target file descriptor.
        const T_EMPTY_PATH = 0x0000_0040;
        /// `MOVE_MOUNT_BENEATH` (Linux 6.5): mount beneath the top mount of the target.
        const BENEATH = 0x0000_0200;
    }

    /// Flags of [`open_tree`] (`open_tree(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct OpenTreeFlags: u32 {
        /// `OPEN_TREE_CLONE`: make a detached copy of the mount (a bind mount not yet attached)
        /// instead of an `O_PATH` file descriptor.
        const CLONE = 0x0000_0001;
        /// `OPEN_TREE_CLOEXEC`: close the file descriptor on `execve(2)`.
        const CLOEXEC = libc::O_CLOEXEC as u32;
        /// `AT_SYMLINK_NOFOLLOW`: do not follow a final symbolic link.
        const SYMLINK_NOFOLLOW = libc::AT_SYMLINK_NOFOLLOW as u32;
        /// `AT_NO_AUTOMOUNT`: do not trigger an automount at the final component.
        const NO_AUTOMOUNT = libc::AT_NO_AUTOMOUNT as u32;
        /// `AT_EMPTY_PATH`: an empty path means the directory file descriptor itself.
        const EMPTY_PATH = libc::AT_EMPTY_PATH as u32;
        /// `AT_RECURSIVE`: with [`CLONE`](Self::CLONE), copy the whole tree of mounts below the
        /// path too (a recursive bind mount).
        const RECURSIVE = 0x8000;
    }

    /// Path-resolution flags of [`mount_setattr`] (`mount_setattr(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MountSetattrFlags: u32 {
        /// `AT_SYMLINK_NOFOLLOW`: do not follow a final symbolic link.
        const SYMLINK_NOFOLLOW = libc::AT_SYMLINK_NOFOLLOW as u32;
        /// `AT_NO_AUTOMOUNT`: do not trigger an automount at the final component.
        const NO_AUTOMOUNT = libc::AT_NO_AUTOMOUNT as u32;
        /// `AT_EMPTY_PATH`: an empty path means the directory file descriptor itself (e.g. a
        /// detached mount).
        const EMPTY_PATH = libc::AT_EMPTY_PATH as u32;
        /// `AT_RECURSIVE`: change every mount of the tree, not only the top one.
        const RECURSIVE = 0x8000;
    }

    /// Flags of [`umount2`] (`umount2(2)`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct UnmountFlags: i32 {
        /// `MNT_FORCE`: abort pending requests (network file systems).
        const FORCE = libc::MNT_FORCE;
        /// `MNT_DETACH`: lazy unmount: detach now, clean up when the mount is no longer busy.
        const DETACH = libc::MNT_DETACH;
        /// `MNT_EXPIRE`: mark the mount expired.
        const EXPIRE = libc::MNT_EXPIRE;
        /// `UMOUNT_NOFOLLOW`: do not follow a final symbolic link.
        const NOFOLLOW = 0x0000_0008;
    }

    /// Flags of the legacy [`mount`] (`mount(2)`), `MS_*`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct MountFlags: libc::c_ulong {
        /// `MS_RDONLY`: mount read-only.
        const RDONLY = libc::MS_RDONLY;
        /// `MS_NOSUID`: ignore set-user-ID and set-group-ID bits.
        const NOSUID = libc::MS_NOSUID;
        /// `MS_NODEV`: refuse access to device files.
        const NODEV = libc::MS_NODEV;
        /// `MS_NOEXEC`: refuse execution of programs.
        const NOEXEC = libc::MS_NOEXEC;
        /// `MS_REMOUNT`: change the flags of an existing mount.
        const REMOUNT = libc::MS_REMOUNT;
        /// `MS_BIND`: bind mount.
        const BIND = libc::MS_BIND;
        /// `MS_MOVE`: move a mount.
        const MOVE = libc::MS_MOVE;
        /// `MS_REC`: with `BIND` or a propagation flag, apply to the whole tree.
        const REC = libc::MS_REC;
        /// `MS_PRIVATE`: make the mount private.
        const PRIVATE = libc::MS_PRIVATE;
        /// `MS_SLAVE`: make the mount a slave.
        const SLAVE = libc::MS_SLAVE;
        /// `MS_SHARED`: make the mount shared.
        const SHARED = libc::MS_SHARED;
        /// `MS_UNBINDABLE`: make the mount unbindable.
        const UNBINDABLE = libc::MS_UNBINDABLE;
    }
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
        match self {
            Propagation::Unbindable => 1 << 17,
            Propagation::Private => 1 << 18,
            Propagation::Slave => 1 << 19,
            Propagation::Shared => 1 << 20,
        }
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

/// `FSCONFIG_*` commands of `fsconfig(2)`.
#[repr(u32)]
#[derive(Clone, Copy)]
enum FsconfigCmd {
    SetFlag = 0,
    SetString = 1,
    SetFd = 5,
    CmdCreate = 6,
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

/// Turns a `syscall(2)` return value that is a new file descriptor into an [`OwnedFd`].
fn fd_result(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the system call succeeded and returned a new file descriptor that nothing else
    // owns; the `OwnedFd` takes ownership and closes it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unit_result(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `fsopen(2)`: opens a new filesystem context for the file-system type `fs_name` (e.g.
/// `"overlay"`). Fails with `ENOSYS` before Linux 5.2 and `ENODEV` for an unknown type.
pub fn fsopen(fs_name: &CStr, flags: FsopenFlags) -> io::Result<OwnedFd> {
    // SAFETY: `fs_name` is a NUL-terminated string that outlives the call; the kernel only
    // reads it.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, fs_name.as_ptr(), flags.bits()) };
    fd_result(ret)
}

fn fsconfig(
    fs_fd: BorrowedFd<'_>,
    cmd: FsconfigCmd,
    key: Option<&CStr>,
    value: Option<&CStr>,
    aux: libc::c_int,
) -> io::Result<()> {
    let key = key.map_or(std::ptr::null(), CStr::as_ptr);
    let value = value.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: `key` and `value` are null or NUL-terminated strings that outlive the call; the
    // kernel only reads them. `fs_fd` is a valid file descriptor for the call's duration.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.as_raw_fd(),
            cmd as libc::c_uint,
            key,
            value,
            aux,
        )
    };
    unit_result(ret)
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
    fsconfig(fs_fd, FsconfigCmd::SetString, Some(&key), Some(&value), 0)
}

/// `fsconfig(2)` `FSCONFIG_SET_FLAG`: sets the flag option `key` (one without a value).
pub fn fsconfig_set_flag(fs_fd: BorrowedFd<'_>, key: &str) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    fsconfig(fs_fd, FsconfigCmd::SetFlag, Some(&key), None, 0)
}

/// `fsconfig(2)` `FSCONFIG_SET_FD`: sets the option `key` to the open file `fd` (for overlayfs
/// layers, an `O_RDONLY | O_DIRECTORY` descriptor — `O_PATH` ones are refused; Linux 6.13+).
pub fn fsconfig_set_fd(fs_fd: BorrowedFd<'_>, key: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
    let key = cstring(key.as_bytes())?;
    fsconfig(fs_fd, FsconfigCmd::SetFd, Some(&key), None, fd.as_raw_fd())
}

/// `fsconfig(2)` `FSCONFIG_CMD_CREATE`: creates the superblock from the configured context.
/// On failure, the reason is often in the context's log: see [`fs_context_log`].
pub fn fsconfig_create(fs_fd: BorrowedFd<'_>) -> io::Result<()> {
    fsconfig(fs_fd, FsconfigCmd::CmdCreate, None, None, 0)
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
        // SAFETY: `buf` is writable for `buf.len()` bytes for the duration of the call and
        // `fs_fd` is a valid file descriptor.
        let n = unsafe { libc::read(fs_fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
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
    // SAFETY: plain integer arguments; `fs_fd` is a valid file descriptor for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs_fd.as_raw_fd(),
            flags.bits(),
            // The attribute argument is an `unsigned int`; every defined attribute fits.
            attrs.bits() as libc::c_uint,
        )
    };
    fd_result(ret)
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
    // SAFETY: both paths are NUL-terminated strings that outlive the call; the kernel only
    // reads them. The file descriptors are valid (or `AT_FDCWD`) for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from_dirfd.as_raw_fd(),
            from.as_ptr(),
            to_dirfd.as_raw_fd(),
            to.as_ptr(),
            flags.bits(),
        )
    };
    unit_result(ret)
}

/// `open_tree(2)`: opens the mount at `dirfd`/`path`. With [`OpenTreeFlags::CLONE`] the result
/// is a detached copy of it (with [`OpenTreeFlags::RECURSIVE`], of the whole tree below it),
/// ready for [`mount_setattr`] and [`move_mount`].
pub fn open_tree(dirfd: BorrowedFd<'_>, path: &Path, flags: OpenTreeFlags) -> io::Result<OwnedFd> {
    let path = path_cstring(path)?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call; the kernel only reads
    // it. `dirfd` is valid (or `AT_FDCWD`) for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dirfd.as_raw_fd(),
            path.as_ptr(),
            flags.bits(),
        )
    };
    fd_result(ret)
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

/// `umount2(2)`: unmounts the mount at `target`.
pub fn umount2(target: &Path, flags: UnmountFlags) -> io::Result<()> {
    let target = path_cstring(target)?;
    // SAFETY: `target` is a NUL-terminated string that outlives the call.
    let ret = unsafe { libc::umount2(target.as_ptr(), flags.bits()) };
    unit_result(ret.into())
}

/// The legacy `mount(2)`. `data` is the file system's option string; the kernel copies at most
/// one page of it.
pub fn mount(
    source: Option<&OsStr>,
    target: &Path,
    fstype: Option<&CStr>,
    flags: MountFlags,
    data: Option<&CStr>,
) -> io::Result<()> {
    let source = source.map(|s| cstring(s.as_bytes())).transpose()?;
    let target = path_cstring(target)?;
    let source_ptr = source.as_deref().map_or(std::ptr::null(), CStr::as_ptr);
    let fstype_ptr = fstype.map_or(std::ptr::null(), CStr::as_ptr);
    let data_ptr = data.map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is null or a NUL-terminated string that outlives the call; the
    // kernel only reads them.
    let ret = unsafe {
        libc::mount(
            source_ptr,
            target.as_ptr(),
            fstype_ptr,
            flags.bits(),
            data_ptr,
        )
    };
    unit_result(ret.into())
}
