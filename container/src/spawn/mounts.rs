//! The child side of the root file system: carries out a [`RootfsPlan`]'s ops with raw system
//! calls on prepared C strings.

use palisade_overlay::rootfs::{Op, RootfsPlan};

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
const MOVE_MOUNT_F_EMPTY_PATH: usize = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: usize = 0x8000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Runs every op of `plan`. On a failure, reports the op's index with [`ChildStep::Rootfs`] and
/// exits.
///
/// # Safety
///
/// Only in the sandbox child, in its own mount namespace, with `plan` prepared by the parent and
/// alive until the program is executed.
pub(super) unsafe fn run(plan: &RootfsPlan, fds: &ChildFds) {
    for (i, op) in plan.ops.iter().enumerate() {
        // SAFETY: forwarded from the caller; every pointer is a prepared NUL-terminated string or
        // a live local.
        let ret = unsafe { step(op) };
        if ret < 0 {
            fail_at(fds, ChildStep::Rootfs, i as u32, -ret);
        }
    }
}

/// One op; returns 0 or `-errno`.
unsafe fn step(op: &Op) -> isize {
    const EEXIST: isize = -(libc::EEXIST as isize);
    const ENOENT: isize = -(libc::ENOENT as isize);
    // SAFETY: raw system calls on prepared strings and locals (see `run`).
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
                        0,
                        data.as_ptr()
                    ),
                    None => r,
                },
                r => r,
            },
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
            Op::Mkdir { path } => match raw!(libc::SYS_mkdir, path.as_ptr(), 0o755) {
                EEXIST => 0,
                r => r,
            },
            Op::CreateFile { path } => {
                let fd = raw!(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644
                );
                if fd >= 0 {
                    raw!(libc::SYS_close, fd);
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
            Op::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                optional,
            } => {
                let data = data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
                let r = raw!(
                    libc::SYS_mount,
                    source.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    *flags,
                    data
                );
                let refused = r == -(libc::EPERM as isize) || r == -(libc::EACCES as isize);
                if *optional && refused {
                    0
                } else {
                    r
                }
            }
            Op::Mask { path } => {
                let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
                let r = raw!(
                    libc::SYS_newfstatat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    st.as_mut_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW
                );
                if r == ENOENT {
                    return 0;
                }
                if r < 0 {
                    return r;
                }
                let mode = st.assume_init_ref().st_mode;
                if mode & libc::S_IFMT == libc::S_IFDIR {
                    raw!(
                        libc::SYS_mount,
                        c"tmpfs".as_ptr(),
                        path.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=0".as_ptr()
                    )
                } else {
                    raw!(
                        libc::SYS_mount,
                        c"/dev/null".as_ptr(),
                        path.as_ptr(),
                        0,
                        libc::MS_BIND,
                        0
                    )
                }
            }
            Op::ReadOnly {
                path,
                bind,
                recursive,
            } => {
                if *bind {
                    let r = raw!(
                        libc::SYS_mount,
                        path.as_ptr(),
                        path.as_ptr(),
                        0,
                        libc::MS_BIND | libc::MS_REC,
                        0
                    );
                    if r == ENOENT {
                        return 0;
                    }
                    if r < 0 {
                        return r;
                    }
                }
                let attr = MountAttr {
                    attr_set: MOUNT_ATTR_RDONLY,
                    attr_clr: 0,
                    propagation: 0,
                    userns_fd: 0,
                };
                raw!(
                    SYS_MOUNT_SETATTR,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    if *recursive { AT_RECURSIVE } else { 0 },
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>()
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
        let mnt = raw!(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, 0);
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
