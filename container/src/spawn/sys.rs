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

/// Closes every descriptor of this process but those in `keep`, which must be ascending (`-1`
/// entries are ignored). Uses `close_range(2)` (Linux 5.9) on the gaps, and where the kernel
/// lacks it closes one by one up to the `RLIMIT_NOFILE` soft limit.
pub(crate) fn close_all_but(keep: &[i32]) {
    let mut from = 0u32;
    let mut ok = true;
    // SAFETY: close_range(2) and close(2) only close descriptors of this process.
    unsafe {
        for &fd in keep {
            if fd < 0 {
                continue;
            }
            let fd = fd as u32;
            if fd > from {
                ok &= raw!(libc::SYS_close_range, from, fd - 1, 0u32) >= 0;
            }
            from = from.max(fd.saturating_add(1));
        }
        ok &= raw!(libc::SYS_close_range, from, u32::MAX, 0u32) >= 0;
    }
    if ok {
        return;
    }
    let mut limit = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64(2) on this process writes one rlimit64 into a live local.
    let ret = unsafe {
        raw!(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            0,
            &mut limit as *mut libc::rlimit64
        )
    };
    let max = if ret == 0 {
        limit.rlim_cur.min(1 << 20) as i32
    } else {
        1 << 16
    };
    for fd in 0..max {
        if !keep.contains(&fd) {
            // SAFETY: as above.
            unsafe { raw!(libc::SYS_close, fd) };
        }
    }
}

/// Writes `n` in decimal, NUL-terminated, into `buf`; returns the digits (with the NUL) as a C
/// string. Allocation-free, for the child's argv.
pub(crate) fn decimal(n: i64, buf: &mut [u8; 24]) -> &std::ffi::CStr {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut v = n.unsigned_abs();
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let mut at = 0;
    if n < 0 {
        buf[0] = b'-';
        at = 1;
    }
    for i in 0..len {
        buf[at + i] = digits[len - 1 - i];
    }
    buf[at + len] = 0;
    // The bytes up to and including the NUL just written contain no other NUL.
    match std::ffi::CStr::from_bytes_with_nul(&buf[..=at + len]) {
        Ok(s) => s,
        Err(_) => c"",
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut buf = [0u8; 24];
        for n in [0i64, 7, -1, 42, 2147483647, -2147483648, i64::MIN, i64::MAX] {
            assert_eq!(decimal(n, &mut buf).to_str().unwrap(), n.to_string());
        }
    }
}
