//! Raw system calls for the child side of a spawn.
//!
//! They return the result or `-errno` and never write `errno`: a child started with `CLONE_VM`
//! shares the parent thread's thread-local storage, `errno` included, while that thread runs on.
//! On architectures without the `CLONE_VM` path the child is a fork-like copy, and libc's
//! `syscall(2)` is used, its `errno` converted.

use std::ffi::c_long;

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn syscall6(nr: c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a valid system call and arguments; the syscall instruction
    // clobbers only rax (the result), rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) unsafe fn syscall6(nr: c_long, a: [usize; 6]) -> isize {
    // SAFETY: as above; the child owns its errno here (fork semantics).
    unsafe {
        let ret = libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        if ret == -1 {
            -(*libc::__errno_location() as isize)
        } else {
            ret as isize
        }
    }
}

/// `raw!(SYS_x, a, b, …)`: the system call with up to six arguments cast to `usize`.
macro_rules! raw {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        let mut args = [0usize; 6];
        let given = [$(($arg) as isize as usize),*];
        let mut i = 0;
        while i < given.len() {
            args[i] = given[i];
            i += 1;
        }
        $crate::spawn::sys::syscall6($nr, args)
    }};
}
pub(crate) use raw;

/// The kernel's `struct sigaction` for `rt_sigaction(2)` (not libc's, which differs).
#[repr(C)]
pub(crate) struct KernelSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    pub mask: u64,
}

/// Size of the kernel's signal set, as `rt_sigprocmask(2)` and friends expect it.
pub(crate) const SIGSET_SIZE: usize = 8;

/// Room for one `SCM_RIGHTS` control message carrying a single descriptor (`cmsg(3)`), aligned
/// as `struct cmsghdr` must be.
#[repr(C, align(8))]
pub(crate) struct FdCmsg(pub [u8; FdCmsg::SPACE]);

impl FdCmsg {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    const SPACE: usize = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;

    pub(crate) fn new() -> FdCmsg {
        FdCmsg([0; FdCmsg::SPACE])
    }
}

/// Sends `data` and, when `fd >= 0`, the descriptor `fd` as `SCM_RIGHTS` (`unix(7)`) on the
/// socket `sock`, without blocking; returns the bytes sent or `-errno`.
pub(crate) fn send_with_fd(sock: i32, data: &[u8], fd: i32) -> isize {
    let mut cmsg = FdCmsg::new();
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fd >= 0 {
        msg.msg_control = cmsg.0.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.0.len() as _;
        // SAFETY: the CMSG_* macros only compute addresses inside the control buffer, which is
        // aligned and large enough for one header and one descriptor; no allocation.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut i32, fd);
        }
    }
    // SAFETY: sendmsg(2) reads the message header, the iovec and the control buffer, all alive
    // on this stack for the call.
    unsafe {
        raw!(
            libc::SYS_sendmsg,
            sock,
            &msg as *const libc::msghdr,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL
        )
    }
}
