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
