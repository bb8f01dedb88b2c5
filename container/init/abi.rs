//! The slice of the Linux kernel ABI the init uses, under the names the program uses: system
//! call numbers from the `syscalls` crate, and constants and structure layouts from
//! `linux-raw-sys` (bindings generated from the kernel's own headers, those rustix builds on),
//! for x86_64 and aarch64. Nothing here is a number or a layout written out by hand.

use core::mem::{offset_of, size_of};

use linux_raw_sys::general as g;
use linux_raw_sys::net as n;
use linux_raw_sys::prctl as p;
use linux_raw_sys::ptrace as s;
use syscalls::Sysno;

// System calls.
pub const NR_READ: usize = Sysno::read as usize;
pub const NR_WRITE: usize = Sysno::write as usize;
pub const NR_CLOSE: usize = Sysno::close as usize;
pub const NR_RT_SIGACTION: usize = Sysno::rt_sigaction as usize;
pub const NR_RT_SIGPROCMASK: usize = Sysno::rt_sigprocmask as usize;
pub const NR_RT_SIGRETURN: usize = Sysno::rt_sigreturn as usize;
pub const NR_GETPID: usize = Sysno::getpid as usize;
pub const NR_SOCKET: usize = Sysno::socket as usize;
pub const NR_RECVFROM: usize = Sysno::recvfrom as usize;
pub const NR_SENDMSG: usize = Sysno::sendmsg as usize;
pub const NR_EXIT: usize = Sysno::exit as usize;
pub const NR_WAIT4: usize = Sysno::wait4 as usize;
pub const NR_KILL: usize = Sysno::kill as usize;
pub const NR_FCNTL: usize = Sysno::fcntl as usize;
pub const NR_RT_SIGTIMEDWAIT: usize = Sysno::rt_sigtimedwait as usize;
pub const NR_PRCTL: usize = Sysno::prctl as usize;
pub const NR_RESTART_SYSCALL: usize = Sysno::restart_syscall as usize;
pub const NR_EXIT_GROUP: usize = Sysno::exit_group as usize;
pub const NR_PPOLL: usize = Sysno::ppoll as usize;
pub const NR_SECCOMP: usize = Sysno::seccomp as usize;
pub const NR_CLOSE_RANGE: usize = Sysno::close_range as usize;
pub const NR_GETRUSAGE: usize = Sysno::getrusage as usize;

#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = s::AUDIT_ARCH_X86_64;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = s::AUDIT_ARCH_AARCH64;

// Errors (as `-errno` results).
pub const EINTR: isize = linux_raw_sys::errno::EINTR as isize;
pub const ECHILD: isize = linux_raw_sys::errno::ECHILD as isize;
pub const EINVAL: isize = linux_raw_sys::errno::EINVAL as isize;

// Signals.
pub const SIGHUP: i32 = g::SIGHUP as i32;
pub const SIGINT: i32 = g::SIGINT as i32;
pub const SIGQUIT: i32 = g::SIGQUIT as i32;
pub const SIGKILL: i32 = g::SIGKILL as i32;
pub const SIGUSR1: i32 = g::SIGUSR1 as i32;
pub const SIGUSR2: i32 = g::SIGUSR2 as i32;
pub const SIGPIPE: i32 = g::SIGPIPE as i32;
pub const SIGTERM: i32 = g::SIGTERM as i32;
pub const SIGCHLD: i32 = g::SIGCHLD as i32;
pub const SIGWINCH: i32 = g::SIGWINCH as i32;
pub const SIGIO: i32 = g::SIGIO as i32;
pub const SIG_SETMASK: usize = g::SIG_SETMASK as usize;
/// The kernel's signal set, as `rt_sigprocmask(2)` and friends take its size.
pub const SIGSET_SIZE: usize = size_of::<g::kernel_sigset_t>();

/// The kernel's `struct sigaction` of `rt_sigaction(2)` (not libc's, which differs).
pub type KernelSigaction = g::kernel_sigaction;
/// The kernel's signal set.
pub type KernelSigset = g::kernel_sigset_t;

// wait4(2).
pub const WNOHANG: usize = g::WNOHANG as usize;
pub const WALL: usize = g::__WALL as usize;

// getrusage(2).
pub const RUSAGE_CHILDREN: i32 = g::RUSAGE_CHILDREN;
pub type Rusage = g::rusage;
pub type Timeval = g::__kernel_old_timeval;

// fcntl(2).
pub const F_GETFL: usize = g::F_GETFL as usize;
pub const F_SETFL: usize = g::F_SETFL as usize;
pub const F_SETOWN: usize = g::F_SETOWN as usize;
pub const O_NONBLOCK: usize = g::O_NONBLOCK as usize;
pub const O_ASYNC: usize = g::FASYNC as usize;

// prctl(2).
pub const PR_SET_DUMPABLE: usize = p::PR_SET_DUMPABLE as usize;
pub const PR_SET_NAME: usize = p::PR_SET_NAME as usize;
pub const PR_SET_NO_NEW_PRIVS: usize = p::PR_SET_NO_NEW_PRIVS as usize;

// poll(2).
pub const POLLIN: i16 = g::POLLIN as i16;
pub const POLLERR: i16 = g::POLLERR as i16;
pub const POLLHUP: i16 = g::POLLHUP as i16;
pub type PollFd = g::pollfd;
pub type Timespec = g::__kernel_timespec;

// socket(2), unix(7).
pub const AF_INET: usize = n::AF_INET as usize;
pub const SOCK_STREAM: usize = n::SOCK_STREAM as usize;
pub const SOCK_DGRAM: usize = n::SOCK_DGRAM as usize;
/// `SOCK_CLOEXEC` has `O_CLOEXEC`'s value (`socket(2)`).
pub const SOCK_CLOEXEC: usize = g::O_CLOEXEC as usize;
pub const MSG_TRUNC: usize = n::MSG_TRUNC as usize;
pub const MSG_DONTWAIT: usize = n::MSG_DONTWAIT as usize;
pub const MSG_NOSIGNAL: usize = n::MSG_NOSIGNAL as usize;
pub const SOL_SOCKET: i32 = n::SOL_SOCKET as i32;
pub const SCM_RIGHTS: i32 = n::SCM_RIGHTS as i32;
pub type IoVec = g::iovec;
pub type MsgHdr = n::msghdr;
pub type CmsgHdr = n::cmsghdr;

/// One control message carrying one descriptor: a `struct cmsghdr` and its data, padded to
/// `CMSG_SPACE(sizeof(int))` (`cmsg(3)`).
#[repr(C)]
pub struct FdCmsg {
    pub hdr: n::cmsghdr,
    pub fd: i32,
    pub _pad: i32,
}

/// `CMSG_LEN(sizeof(int))`: the header and the descriptor.
pub const CMSG_LEN_FD: usize = size_of::<n::cmsghdr>() + size_of::<i32>();
/// `CMSG_SPACE(sizeof(int))`: the same, padded to the header's alignment.
pub const CMSG_SPACE_FD: usize = size_of::<FdCmsg>();

// seccomp(2) and classic BPF.
pub const SECCOMP_SET_MODE_FILTER: usize = s::SECCOMP_SET_MODE_FILTER as usize;
pub const SECCOMP_RET_KILL_PROCESS: u32 = s::SECCOMP_RET_KILL_PROCESS;
pub const SECCOMP_RET_ALLOW: u32 = s::SECCOMP_RET_ALLOW;
/// Offsets in `struct seccomp_data`.
pub const SECCOMP_DATA_NR: u32 = offset_of!(s::seccomp_data, nr) as u32;
pub const SECCOMP_DATA_ARCH: u32 = offset_of!(s::seccomp_data, arch) as u32;
/// x32 system calls are x86_64 numbers with this bit set.
pub const X32_SYSCALL_BIT: u32 = g::__X32_SYSCALL_BIT;
pub const BPF_LD_W_ABS: u16 = (s::BPF_LD | s::BPF_W | s::BPF_ABS) as u16;
pub const BPF_JEQ_K: u16 = (s::BPF_JMP | s::BPF_JEQ | s::BPF_K) as u16;
pub const BPF_JGE_K: u16 = (s::BPF_JMP | s::BPF_JGE | s::BPF_K) as u16;
pub const BPF_RET_K: u16 = (s::BPF_RET | s::BPF_K) as u16;

/// `struct sock_filter`.
pub type SockFilter = s::sock_filter;
/// `struct sock_fprog`.
pub type SockFprog = s::sock_fprog;

/// A BPF statement (`BPF_STMT`).
pub const fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// A BPF jump (`BPF_JUMP`).
pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}
