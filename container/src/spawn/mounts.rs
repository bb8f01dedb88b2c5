//! The child side of the root file system: carries out a [`RootfsPlan`]'s ops with raw system
//! calls on prepared C strings.
//!
//! Paths in the sandbox are never resolved against the host: each is opened from the new root
//! with `openat2(2)` and `RESOLVE_IN_ROOT` (and `RESOLVE_NO_SYMLINKS` where the plan says so),
//! and the mount goes onto exactly the object opened: a bind is cloned with `open_tree(2)` and
//! attached to the descriptor with `move_mount(2)`, a new file system is mounted on `.` after
//! `fchdir(2)` to it. Directories and files are created with `mkdirat(2)` in a parent opened
//! the same way.

use palisade_overlay::rootfs::{At, KernelFs, Op, RootfsPlan};

use super::child::{fail_at, ChildFds};
use super::sys::raw;
use crate::error::ChildStep;

const SYS_MOVE_MOUNT: libc::c_long = 429;
const SYS_FSOPEN: libc::c_long = 430;
const SYS_FSCONFIG: libc::c_long = 431;
const SYS_FSMOUNT: libc::c_long = 432;
const FSOPEN_CLOEXEC: usize = 0x1;
const FSMOUNT_CLOEXEC: usize = 0x1;
const FSCONFIG_SET_FLAG: usize = 0;
const FSCONFIG_SET_STRING: usize = 1;
const FSCONFIG_CMD_CREATE: usize = 6;
const SYS_MOUNT_SETATTR: libc::c_long = 442;
const SYS_OPEN_TREE: libc::c_long = 428;
const SYS_OPENAT2: libc::c_long = 437;
const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: usize = 0x40;
const OPEN_TREE_CLONE: usize = 0x1;
const MOUNT_ATTR_NODEV: usize = 0x4;
const AT_RECURSIVE: usize = 0x8000;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `struct open_how` of `openat2(2)`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Runs every op of `plan`. On a failure, reports the op's index with [`ChildStep::Rootfs`] and
/// exits.
///
/// # Safety
///
/// Only in the sandbox child, in its own mount namespace, with `plan` prepared by the parent and
/// alive until the program is executed.
pub(super) unsafe fn run(plan: &RootfsPlan, fds: &ChildFds) {
    // Modes are the plan's exactly (a sticky /tmp, a 0700 /root), whatever the caller's umask.
    // SAFETY: umask(2) cannot fail.
    let umask = unsafe { raw!(libc::SYS_umask, 0) };
    let mut root = -1;
    for (i, op) in plan.ops.iter().enumerate() {
        // SAFETY: forwarded from the caller; every pointer is a prepared NUL-terminated string or
        // a live local.
        let ret = unsafe { step(op, &mut root) };
        if ret < 0 {
            fail_at(fds, ChildStep::Rootfs, i as u32, -ret);
        }
    }
    // SAFETY: fchdir(2) and close(2) of our own descriptor, umask(2) back to the caller's.
    unsafe {
        if root >= 0 {
            // Mounts went onto `.`: back to the root (`/` since the pivot).
            let r = raw!(libc::SYS_fchdir, root);
            raw!(libc::SYS_close, root);
            if r < 0 {
                fail_at(fds, ChildStep::Rootfs, plan.ops.len() as u32, -r);
            }
        }
        raw!(libc::SYS_umask, umask);
    }
}

/// A descriptor of this process, closed when dropped.
struct Fd(isize);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: closes a descriptor this module opened.
        unsafe { raw!(libc::SYS_close, self.0) };
    }
}

/// Opens `at` (`O_PATH`, close-on-exec, plus `flags`); returns the descriptor or `-errno`.
fn open(at: &At, root: i32, flags: i32, mode: u32) -> isize {
    let (dirfd, path, resolve) = match at {
        At::Host(p) => (libc::AT_FDCWD, p, 0),
        At::Root(p) => (root, p, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
        At::RootStrict(p) => (
            root,
            p,
            RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
        ),
        _ => return -(libc::ENOSYS as isize),
    };
    if dirfd != libc::AT_FDCWD && root < 0 {
        return -(libc::EBADF as isize);
    }
    let strict = matches!(at, At::RootStrict(_));
    let how = OpenHow {
        flags: (libc::O_CLOEXEC | flags | if strict { libc::O_NOFOLLOW } else { 0 }) as u64,
        mode: mode as u64,
        resolve,
    };
    // SAFETY: openat2(2) reads the path and the open_how on this stack.
    unsafe {
        raw!(
            SYS_OPENAT2,
            dirfd,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>()
        )
    }
}

/// Opens `at` as an `O_PATH` descriptor.
fn open_path(at: &At, root: i32) -> Result<Fd, isize> {
    match open(at, root, libc::O_PATH, 0) {
        fd if fd >= 0 => Ok(Fd(fd)),
        e => Err(e),
    }
}

/// Mounts a new file system of `fstype` on the directory `target` (`mount(2)` on `.` after
/// `fchdir(2)` to it); returns 0 or `-errno`.
fn mount_on(
    target: &Fd,
    source: &std::ffi::CStr,
    fstype: &std::ffi::CStr,
    flags: libc::c_ulong,
    data: *const libc::c_char,
) -> isize {
    // SAFETY: fchdir(2) to our descriptor and mount(2) with prepared strings.
    unsafe {
        let r = raw!(libc::SYS_fchdir, target.0);
        if r < 0 {
            return r;
        }
        raw!(
            libc::SYS_mount,
            source.as_ptr(),
            c".".as_ptr(),
            fstype.as_ptr(),
            flags,
            data
        )
    }
}

/// Binds `source` (a path as the child sees it) onto `target`: `open_tree(2)` clones it (with
/// everything below it if `recursive`), `move_mount(2)` attaches the clone; 0 or `-errno`.
fn bind_onto(target: &Fd, source: &std::ffi::CStr, recursive: bool) -> isize {
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as usize | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: open_tree(2) of a prepared path; the tree's descriptor is ours.
    let tree = unsafe { raw!(SYS_OPEN_TREE, libc::AT_FDCWD, source.as_ptr(), flags) };
    if tree < 0 {
        return tree;
    }
    let tree = Fd(tree);
    // SAFETY: move_mount(2) between two descriptors of ours.
    unsafe {
        raw!(
            SYS_MOVE_MOUNT,
            tree.0,
            c"".as_ptr(),
            target.0,
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
        )
    }
}

/// Whether the file system of `fd` is `on` (`fstatfs(2)`): `0`, or `-EXDEV` when it is not.
fn check_fs(fd: &Fd, on: KernelFs) -> isize {
    let Some(magic) = on.magic() else {
        return 0;
    };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs(2) fills a statfs on this stack.
    let r = unsafe { raw!(libc::SYS_fstatfs, fd.0, st.as_mut_ptr()) };
    if r < 0 {
        return r;
    }
    // SAFETY: initialised by the successful call above.
    let f_type = unsafe { st.assume_init_ref().f_type };
    if f_type == magic {
        0
    } else {
        -(libc::EXDEV as isize)
    }
}

/// One op; returns 0 or `-errno`.
unsafe fn step(op: &Op, root: &mut i32) -> isize {
    const EEXIST: isize = -(libc::EEXIST as isize);
    const ENOENT: isize = -(libc::ENOENT as isize);
    // SAFETY: raw system calls on prepared strings, locals and descriptors of this module (see
    // `run`).
    unsafe {
        match op {
            Op::MakePrivate => raw!(
                libc::SYS_mount,
                0,
                c"/".as_ptr(),
                0,
                libc::MS_REC | libc::MS_PRIVATE,
                0
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
                r if r == -(libc::EINVAL as isize) => match legacy {
                    Some(data) => raw!(
                        libc::SYS_mount,
                        c"overlay".as_ptr(),
                        target.as_ptr(),
                        c"overlay".as_ptr(),
                        libc::MS_NODEV,
                        data.as_ptr()
                    ),
                    None => r,
                },
                r => r,
            },
            Op::OpenRoot { path } => {
                let fd = raw!(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC
                );
                if fd >= 0 {
                    *root = fd as i32;
                    0
                } else {
                    fd
                }
            }
            Op::PivotRoot { new_root } => {
                let dot = c".".as_ptr();
                let mut r = raw!(libc::SYS_chdir, new_root.as_ptr());
                if r == 0 {
                    r = raw!(libc::SYS_pivot_root, dot, dot);
                }
                if r == 0 {
                    r = raw!(libc::SYS_umount2, dot, libc::MNT_DETACH);
                }
                if r == 0 {
                    r = raw!(libc::SYS_chdir, c"/".as_ptr());
                }
                r
            }
            Op::Mkdir { parent, name, mode } => {
                let dir = match open(parent, *root, libc::O_PATH | libc::O_DIRECTORY, 0) {
                    fd if fd >= 0 => Fd(fd),
                    e => return e,
                };
                match raw!(libc::SYS_mkdirat, dir.0, name.as_ptr(), *mode) {
                    EEXIST => 0,
                    r => r,
                }
            }
            Op::CreateFile { at } => {
                let fd = open(at, *root, libc::O_CREAT | libc::O_WRONLY, 0o644);
                if fd >= 0 {
                    drop(Fd(fd));
                    0
                } else {
                    fd
                }
            }
            Op::Symlink { target, link } => match raw!(
                libc::SYS_symlinkat,
                target.as_ptr(),
                libc::AT_FDCWD,
                link.as_ptr()
            ) {
                EEXIST => 0,
                r => r,
            },
            Op::Whiteout { path } => match raw!(
                libc::SYS_mknodat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::S_IFCHR,
                0
            ) {
                EEXIST => 0,
                r => r,
            },
            Op::Opaque { path, mode } => {
                let r = raw!(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), *mode);
                if r < 0 && r != EEXIST {
                    return r;
                }
                let value = b"y";
                raw!(
                    libc::SYS_lsetxattr,
                    path.as_ptr(),
                    c"trusted.overlay.opaque".as_ptr(),
                    value.as_ptr(),
                    value.len(),
                    0
                )
            }
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                optional,
            } => {
                let target = match open_path(target, *root) {
                    Ok(fd) => fd,
                    Err(e) => return e,
                };
                let r = if fstype.is_empty() && flags & libc::MS_BIND != 0 {
                    bind_onto(&target, source, flags & libc::MS_REC != 0)
                } else {
                    let data = data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
                    mount_on(&target, source, fstype, *flags, data)
                };
                let refused = r == -(libc::EPERM as isize) || r == -(libc::EACCES as isize);
                if *optional && refused {
                    0
                } else {
                    r
                }
            }
            Op::Mask { at, on } => {
                let target = match open_path(at, *root) {
                    Ok(fd) => fd,
                    Err(ENOENT) => return 0,
                    Err(e) => return e,
                };
                let r = check_fs(&target, *on);
                if r < 0 {
                    return r;
                }
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                let r = raw!(
                    libc::SYS_newfstatat,
                    target.0,
                    c"".as_ptr(),
                    st.as_mut_ptr(),
                    libc::AT_EMPTY_PATH
                );
                if r < 0 {
                    return r;
                }
                let mode = st.assume_init_ref().st_mode;
                if mode & libc::S_IFMT == libc::S_IFDIR {
                    mount_on(
                        &target,
                        c"tmpfs",
                        c"tmpfs",
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=0".as_ptr(),
                    )
                } else {
                    bind_onto(&target, c"/dev/null", false)
                }
            }
            Op::SetAttr {
                at,
                on,
                bind,
                recursive,
                attr,
            } => {
                let target = match open_path(at, *root) {
                    Ok(fd) => fd,
                    Err(ENOENT) if *bind => return 0,
                    Err(e) => return e,
                };
                let r = check_fs(&target, *on);
                if r < 0 {
                    return r;
                }
                let attrs = MountAttr {
                    attr_set: *attr,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                let flags =
                    libc::AT_EMPTY_PATH as usize | if *recursive { AT_RECURSIVE } else { 0 };
                if !*bind {
                    return raw!(
                        SYS_MOUNT_SETATTR,
                        target.0,
                        c"".as_ptr(),
                        flags,
                        &attrs as *const MountAttr,
                        std::mem::size_of::<MountAttr>()
                    );
                }
                // A copy of the tree, its flags set before it is attached: never writable.
                let tree = raw!(
                    SYS_OPEN_TREE,
                    target.0,
                    c"".as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as usize | flags
                );
                if tree < 0 {
                    return tree;
                }
                let tree = Fd(tree);
                let r = raw!(
                    SYS_MOUNT_SETATTR,
                    tree.0,
                    c"".as_ptr(),
                    flags,
                    &attrs as *const MountAttr,
                    std::mem::size_of::<MountAttr>()
                );
                if r < 0 {
                    return r;
                }
                raw!(
                    SYS_MOVE_MOUNT,
                    tree.0,
                    c"".as_ptr(),
                    target.0,
                    c"".as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
                )
            }
            // An op this child does not know: refuse rather than skip it.
            _ => -(libc::ENOSYS as isize),
        }
    }
}

/// The overlay through the new mount API; returns 0 or `-errno` (`-EINVAL` when the kernel does
/// not know `lowerdir+`).
///
/// # Safety
///
/// As for [`run`]: raw system calls on prepared strings.
unsafe fn overlay(
    lowers: &[std::ffi::CString],
    upper: &std::ffi::CStr,
    work: &std::ffi::CStr,
    target: &std::ffi::CStr,
    userxattr: bool,
) -> isize {
    // SAFETY: raw system calls on prepared NUL-terminated strings; the descriptors are ours and
    // closed on every path.
    unsafe {
        let fs = raw!(SYS_FSOPEN, c"overlay".as_ptr(), FSOPEN_CLOEXEC);
        if fs < 0 {
            return fs;
        }
        let set = |key: &std::ffi::CStr, value: &std::ffi::CStr| {
            raw!(
                SYS_FSCONFIG,
                fs,
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0
            )
        };
        let mut r = 0;
        for l in lowers {
            r = set(c"lowerdir+", l);
            if r < 0 {
                break;
            }
        }
        if r == 0 {
            r = set(c"upperdir", upper);
        }
        if r == 0 {
            r = set(c"workdir", work);
        }
        if r == 0 && userxattr {
            r = raw!(
                SYS_FSCONFIG,
                fs,
                FSCONFIG_SET_FLAG,
                c"userxattr".as_ptr(),
                0,
                0
            );
        }
        if r == 0 {
            r = raw!(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, 0, 0, 0);
        }
        if r < 0 {
            raw!(libc::SYS_close, fs);
            return r;
        }
        // nodev: a device node in an image, or made in the writable layer, cannot be opened.
        let mnt = raw!(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NODEV);
        raw!(libc::SYS_close, fs);
        if mnt < 0 {
            return mnt;
        }
        let r = raw!(
            SYS_MOVE_MOUNT,
            mnt,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH
        );
        raw!(libc::SYS_close, mnt);
        r
    }
}
