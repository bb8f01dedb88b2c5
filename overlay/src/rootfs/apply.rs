//! The child side of a [`RootfsPlan`]: its ops carried out one by one, in the sandbox child's own
//! mount namespace, on the C strings the parent prepared.
//!
//! Paths in the sandbox are never resolved against the host: each is opened from the new root
//! with `openat2(2)` and `RESOLVE_IN_ROOT` (plus `RESOLVE_NO_SYMLINKS` and `O_NOFOLLOW` for
//! [`At::RootStrict`]), and the mount goes onto exactly the object opened: a bind is cloned with
//! `open_tree(2)` and attached to the descriptor with `move_mount(2)`, a new file system is
//! mounted on `.` after `fchdir(2)` to it. Directories and files are created with `mkdirat(2)`
//! and `openat2(2)` in a parent opened the same way. Device nodes are made with `mknodat(2)` in
//! the plan's own staging area only, and bound into the root like a volume.

use std::ffi::CStr;
use std::fmt;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid, XattrFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags,
};

use super::idmap::Slots;
use super::{At, KernelFs, Op, RootfsPlan};
use crate::mount::sys::{mount_setattr_cstr, MountAttr, MountAttrChange, MountSetattrFlags};

/// Why [`RootfsPlan::apply`] stopped: the op that failed and the kernel's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyFailure {
    /// The failing op's index in [`RootfsPlan::ops`], or `ops.len()` when the final return to
    /// the new root (`fchdir(2)`) failed.
    pub index: u32,
    /// The error the system call returned.
    pub errno: Errno,
}

impl ApplyFailure {
    /// The op of `plan` that failed, or `None` for the final return to the root.
    pub fn op<'p>(&self, plan: &'p RootfsPlan) -> Option<&'p Op> {
        usize::try_from(self.index)
            .ok()
            .and_then(|i| plan.ops.get(i))
    }
}

impl fmt::Display for ApplyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "root file system op {} failed: {}",
            self.index, self.errno
        )
    }
}

impl std::error::Error for ApplyFailure {}

impl RootfsPlan {
    /// Carries out the plan's ops in order, in the calling process: the sandbox child, in a mount
    /// namespace of its own, before it executes the program. On success the working directory
    /// is the new root (or unchanged if the plan never opened one).
    ///
    /// Modes are the plan's exactly (a sticky `/tmp`, a `0700` `/root`): the umask is 0 while the
    /// ops run and restored afterwards, on failure too. Mounts already made are not undone on
    /// failure: they die with the mount namespace.
    ///
    /// # Errors
    ///
    /// [`ApplyFailure`] with the index of the first op that failed and its `errno`; `EXDEV` when
    /// a mask or read-only target is not on the file system the op expects
    /// ([`KernelFs`]), `EBADF` for a path in the root before [`Op::OpenRoot`].
    ///
    /// # Child safety
    ///
    /// Made to run in a child cloned with `CLONE_VM` (sharing the parent's memory and thread
    /// data, `errno` included): it allocates nothing, takes no lock, never reads or writes
    /// `errno` and cannot panic (no indexing, no unwrapping, checked integer conversions).
    /// Every system call goes through `rustix`'s `linux_raw` backend, which issues it with an
    /// inline `syscall` instruction and returns the kernel's error value, or through
    /// [`mount_setattr_cstr`] (the `syscalls` crate, the same way); every path is a `&CStr`
    /// the parent prepared, which `rustix` passes through without copying (`path::Arg` for
    /// `&CStr` hands the string itself to the call). The calls used are, each one system call
    /// of the same name: `rustix::fs::{openat, openat2, mkdirat, symlinkat, mknodat, lsetxattr,
    /// statat, fstatfs, chownat}`, `rustix::process::{umask, chdir, fchdir, pivot_root}`,
    /// `rustix::mount::{mount, mount_change, unmount, fsopen, fsconfig_set_string,
    /// fsconfig_set_flag, fsconfig_create, fsmount, open_tree, move_mount}` and
    /// `rustix::io::try_close`. Descriptors are closed with `rustix::io::try_close` rather than
    /// by dropping an `OwnedFd`, whose drop calls libc's `close`, which writes `errno` when it
    /// fails (and `rustix::io::close` asserts success in debug builds). The only assertions left
    /// on the way are `rustix`'s debug checks that the kernel returned an error value in
    /// `-4095..0`, which the kernel guarantees. All of this holds with `rustix`'s default
    /// `linux_raw` backend only: no crate in the build may enable its `use-libc` feature.
    ///
    /// The plan must stay alive and unchanged until the call returns (in a `CLONE_VM` child, the
    /// parent must not free or modify it before the child has executed the program or exited).
    /// A plan with id-mapped volumes needs a [`RootfsPlan::prepare`] of this spawn first, alive
    /// as long, its descriptors open in the calling process: [`Op::AttachPrepared`] reads their
    /// numbers with an atomic load and attaches them, `EBADF` without one.
    pub fn apply(&self) -> Result<(), ApplyFailure> {
        let saved = rustix::process::umask(Mode::empty());
        let result = self.run();
        rustix::process::umask(saved);
        result
    }

    fn run(&self) -> Result<(), ApplyFailure> {
        let mut root: Option<Fd> = None;
        let mut index = 0u32;
        for op in &self.ops {
            step(op, &mut root, &self.slots).map_err(|errno| ApplyFailure { index, errno })?;
            index = index.saturating_add(1);
        }
        // Mounts went onto `.`: back to the root (`/` after the pivot).
        match root {
            Some(root) => rustix::process::fchdir(&root).map_err(|errno| ApplyFailure {
                index: u32::try_from(self.ops.len()).unwrap_or(u32::MAX),
                errno,
            }),
            None => Ok(()),
        }
    }
}

/// A descriptor this module opened, closed with `rustix::io::try_close` when dropped (not through
/// `OwnedFd`'s drop, which uses libc's `close`).
struct Fd(ManuallyDrop<OwnedFd>);

impl Fd {
    fn new(fd: OwnedFd) -> Fd {
        Fd(ManuallyDrop::new(fd))
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // The error is ignored: Linux releases the descriptor whatever close(2) returns. Not
        // `rustix::io::close`, which asserts in debug builds that the call succeeded.
        // SAFETY: the descriptor belongs to this guard alone (it came from an `OwnedFd` that is
        // never dropped), and it is not used after this.
        let _ = unsafe { rustix::io::try_close(self.0.as_raw_fd()) };
    }
}

const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Opens `at` (close-on-exec, plus `flags`, with `mode` if it creates the file).
fn open(at: &At, root: Option<&Fd>, flags: OFlags, mode: Mode) -> Result<Fd, Errno> {
    let root_fd = || root.map(Fd::as_fd).ok_or(Errno::BADF);
    let (dirfd, path, resolve, flags) = match at {
        At::Host(p) => (CWD, p, ResolveFlags::empty(), flags),
        At::Root(p) => (root_fd()?, p, IN_ROOT, flags),
        At::RootStrict(p) => (
            root_fd()?,
            p,
            IN_ROOT | ResolveFlags::NO_SYMLINKS,
            flags | OFlags::NOFOLLOW,
        ),
    };
    // With `..` in the path (an image's link climbing out, clamped at the root), openat2(2)
    // fails with EAGAIN when a rename or mount anywhere on the host raced with the lookup,
    // and asks for a retry.
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            dirfd,
            path.as_c_str(),
            OFlags::CLOEXEC | flags,
            mode,
            resolve,
        ) {
            Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            r => return r.map(Fd::new),
        }
    }
}

/// How often [`open`] retries a lookup the host's renames and mounts raced with.
const OPENAT2_RETRIES: u32 = 128;

/// Opens `at` as an `O_PATH` descriptor.
fn open_path(at: &At, root: Option<&Fd>) -> Result<Fd, Errno> {
    open(at, root, OFlags::PATH, Mode::empty())
}

/// `EEXIST` is success: a later step decides whether the existing entry will do.
fn exists_ok(r: Result<(), Errno>) -> Result<(), Errno> {
    match r {
        Err(Errno::EXIST) => Ok(()),
        r => r,
    }
}

/// Mounts a new file system of `fstype` on the directory `target`: `mount(2)` on `.` after
/// `fchdir(2)` to it, so that the mount lands on the object opened, not on a path looked up
/// again.
fn mount_on(
    target: &Fd,
    source: &CStr,
    fstype: &CStr,
    flags: MountFlags,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    rustix::process::fchdir(target)?;
    rustix::mount::mount(source, c".", fstype, flags, data)
}

/// Binds `source` (a path as the child sees it) onto `target`: `open_tree(2)` clones it (with
/// everything below it if `recursive`), `move_mount(2)` attaches the clone to the descriptor.
fn bind_onto(target: &Fd, source: &CStr, recursive: bool) -> Result<(), Errno> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = Fd::new(rustix::mount::open_tree(CWD, source, flags)?);
    attach(&tree, target)
}

/// Attaches the detached mount `tree` onto the object `target` (`move_mount(2)` between two
/// descriptors).
fn attach(tree: &Fd, target: &Fd) -> Result<(), Errno> {
    rustix::mount::move_mount(
        tree,
        c"",
        target,
        c"",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}

/// Whether the file system of `fd` is `on` (`fstatfs(2)`); `EXDEV` when it is not.
fn check_fs(fd: &Fd, on: KernelFs) -> Result<(), Errno> {
    let Some(magic) = on.magic() else {
        return Ok(());
    };
    if rustix::fs::fstatfs(fd)?.f_type == magic {
        Ok(())
    } else {
        Err(Errno::XDEV)
    }
}

/// The plan's `MS_*` flags as rustix's type (every defined flag fits 32 bits; more is refused).
fn mount_flags(flags: libc::c_ulong) -> Result<MountFlags, Errno> {
    u32::try_from(flags)
        .map(MountFlags::from_bits_retain)
        .map_err(|_| Errno::INVAL)
}

/// One op.
fn step(op: &Op, root: &mut Option<Fd>, slots: &Slots) -> Result<(), Errno> {
    match op {
        Op::AttachPrepared { slot, target } => {
            let raw = slots.get(*slot).ok_or(Errno::BADF)?;
            // SAFETY: the descriptor is the prepared mount's, which the caller keeps open in this
            // process until it has applied the plan (`RootfsPlan::prepare`); it is only
            // borrowed here, never closed.
            let tree = unsafe { BorrowedFd::borrow_raw(raw) };
            let target = open_path(target, root.as_ref())?;
            rustix::mount::move_mount(
                tree,
                c"",
                &target,
                c"",
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
            )
        }
        Op::MakePrivate => rustix::mount::mount_change(
            c"/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        ),
        Op::Overlay {
            lowers,
            upper,
            work,
            target,
            userxattr,
            legacy,
        } => match overlay(lowers, upper, work, target, *userxattr) {
            // No `lowerdir+` (before Linux 6.8): the whole list as one mount(2) string.
            Err(Errno::INVAL) => match legacy {
                Some(data) => rustix::mount::mount(
                    c"overlay",
                    target.as_c_str(),
                    c"overlay",
                    MountFlags::NODEV,
                    Some(data.as_c_str()),
                ),
                None => Err(Errno::INVAL),
            },
            r => r,
        },
        Op::OpenRoot { path } => {
            let fd = rustix::fs::openat(
                CWD,
                path.as_c_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            *root = Some(Fd::new(fd));
            Ok(())
        }
        Op::PivotRoot { new_root } => {
            rustix::process::chdir(new_root.as_c_str())?;
            rustix::process::pivot_root(c".", c".")?;
            rustix::mount::unmount(c".", UnmountFlags::DETACH)?;
            rustix::process::chdir(c"/")
        }
        Op::Mkdir { parent, name, mode } => {
            let dir = open(
                parent,
                root.as_ref(),
                OFlags::PATH | OFlags::DIRECTORY,
                Mode::empty(),
            )?;
            exists_ok(rustix::fs::mkdirat(
                &dir,
                name.as_c_str(),
                Mode::from_raw_mode(*mode),
            ))
        }
        Op::CreateFile { at } => {
            let file = open(
                at,
                root.as_ref(),
                OFlags::CREATE | OFlags::WRONLY,
                Mode::from_raw_mode(0o644),
            )?;
            drop(file);
            Ok(())
        }
        Op::Symlink { target, link } => exists_ok(rustix::fs::symlinkat(
            target.as_c_str(),
            CWD,
            link.as_c_str(),
        )),
        Op::Whiteout { path } => exists_ok(rustix::fs::mknodat(
            CWD,
            path.as_c_str(),
            FileType::CharacterDevice,
            Mode::empty(),
            0,
        )),
        Op::Opaque {
            path,
            mode,
            userxattr,
        } => {
            exists_ok(rustix::fs::mkdirat(
                CWD,
                path.as_c_str(),
                Mode::from_raw_mode(*mode),
            ))?;
            let name = if *userxattr {
                c"user.overlay.opaque"
            } else {
                c"trusted.overlay.opaque"
            };
            rustix::fs::lsetxattr(path.as_c_str(), name, b"y", XattrFlags::empty())
        }
        Op::Mount {
            source,
            target,
            fstype,
            flags,
            data,
            optional,
        } => {
            let target = open_path(target, root.as_ref())?;
            let r = if fstype.is_empty() && flags & libc::MS_BIND != 0 {
                bind_onto(&target, source, flags & libc::MS_REC != 0)
            } else {
                mount_flags(*flags)
                    .and_then(|flags| mount_on(&target, source, fstype, flags, data.as_deref()))
            };
            match r {
                Err(Errno::PERM | Errno::ACCESS) if *optional => Ok(()),
                r => r,
            }
        }
        Op::Mask { at, on } => {
            let target = match open_path(at, root.as_ref()) {
                Err(Errno::NOENT) => return Ok(()),
                r => r?,
            };
            check_fs(&target, *on)?;
            let st = rustix::fs::statat(&target, c"", AtFlags::EMPTY_PATH)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                mount_on(
                    &target,
                    c"tmpfs",
                    c"tmpfs",
                    MountFlags::RDONLY
                        | MountFlags::NOSUID
                        | MountFlags::NODEV
                        | MountFlags::NOEXEC,
                    Some(c"size=0"),
                )
            } else {
                bind_onto(&target, c"/dev/null", false)
            }
        }
        Op::Mknod {
            at,
            mode,
            dev,
            uid,
            gid,
        } => {
            let (dir, name) = match at {
                At::Host(path) => (CWD, path.as_c_str()),
                At::Root(_) | At::RootStrict(_) => return Err(Errno::INVAL),
            };
            rustix::fs::mknodat(
                dir,
                name,
                FileType::from_raw_mode(*mode),
                Mode::from_raw_mode(*mode),
                *dev,
            )?;
            // The plan refused -1, the one value `from_raw_unchecked` must not get.
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw_unchecked(*uid)),
                Some(Gid::from_raw_unchecked(*gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
        }
        Op::SetAttr {
            at,
            on,
            bind,
            recursive,
            attr,
            clear,
            propagation,
        } => {
            let target = match open_path(at, root.as_ref()) {
                Err(Errno::NOENT) if *bind => return Ok(()),
                r => r?,
            };
            check_fs(&target, *on)?;
            let change = MountAttrChange {
                set: MountAttr::from_bits_retain(*attr),
                clear: MountAttr::from_bits_retain(*clear),
                propagation: *propagation,
            };
            let mut flags = MountSetattrFlags::EMPTY_PATH;
            if *recursive {
                flags |= MountSetattrFlags::RECURSIVE;
            }
            if !*bind {
                return mount_setattr_cstr(target.as_fd(), c"", flags, &change);
            }
            // A copy of the tree, its flags set before it is attached: never writable.
            let mut tree_flags = OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH;
            if *recursive {
                tree_flags |= OpenTreeFlags::AT_RECURSIVE;
            }
            let tree = Fd::new(rustix::mount::open_tree(&target, c"", tree_flags)?);
            mount_setattr_cstr(tree.as_fd(), c"", flags, &change)?;
            attach(&tree, &target)
        }
    }
}

/// The overlay through the new mount API (`fsopen(2)`, one `fsconfig(2)` per option,
/// `fsmount(2)` with `MOUNT_ATTR_NODEV`, `move_mount(2)` onto `target`); `EINVAL` when the
/// kernel does not know `lowerdir+`.
fn overlay(
    lowers: &[std::ffi::CString],
    upper: &CStr,
    work: &CStr,
    target: &CStr,
    userxattr: bool,
) -> Result<(), Errno> {
    let fs = Fd::new(rustix::mount::fsopen(
        c"overlay",
        FsOpenFlags::FSOPEN_CLOEXEC,
    )?);
    for lower in lowers {
        rustix::mount::fsconfig_set_string(&fs, c"lowerdir+", lower.as_c_str())?;
    }
    rustix::mount::fsconfig_set_string(&fs, c"upperdir", upper)?;
    rustix::mount::fsconfig_set_string(&fs, c"workdir", work)?;
    if userxattr {
        rustix::mount::fsconfig_set_flag(&fs, c"userxattr")?;
    }
    rustix::mount::fsconfig_create(&fs)?;
    // nodev: a device node in an image, or made in the writable layer, cannot be opened.
    let mnt = Fd::new(rustix::mount::fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NODEV,
    )?);
    drop(fs);
    rustix::mount::move_mount(
        &mnt,
        c"",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}
