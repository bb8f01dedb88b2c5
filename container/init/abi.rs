//! The slice of the Linux kernel ABI the init uses: system call numbers, constants and structure
//! layouts for x86_64 and aarch64 (both LP64, sharing every value but the call numbers and the
//! audit architecture).

#[cfg(target_arch = "x86_64")]
mod arch {
    pub const NR_READ: usize = 0;
    pub const NR_WRITE: usize = 1;
    pub const NR_CLOSE: usize = 3;
    pub const NR_RT_SIGACTION: usize = 13;
    pub const NR_RT_SIGPROCMASK: usize = 14;
    pub const NR_RT_SIGRETURN: usize = 15;
    pub const NR_GETPID: usize = 39;
    pub const NR_SOCKET: usize = 41;
    pub const NR_RECVFROM: usize = 45;
    pub const NR_SENDMSG: usize = 46;
    pub const NR_EXIT: usize = 60;
    pub const NR_WAIT4: usize = 61;
    pub const NR_KILL: usize = 62;
    pub const NR_FCNTL: usize = 72;
    pub const NR_RT_SIGTIMEDWAIT: usize = 128;
    pub const NR_PRCTL: usize = 157;
    pub const NR_RESTART_SYSCALL: usize = 219;
    pub const NR_EXIT_GROUP: usize = 231;
    pub const NR_PPOLL: usize = 271;
    pub const NR_SECCOMP: usize = 317;
    pub const NR_CLOSE_RANGE: usize = 436;
    /// `AUDIT_ARCH_X86_64`.
    pub const AUDIT_ARCH: u32 = 0xc000_003e;
}

#[cfg(target_arch = "aarch64")]
mod arch {
    pub const NR_FCNTL: usize = 25;
    pub const NR_CLOSE: usize = 57;
    pub const NR_READ: usize = 63;
    pub const NR_WRITE: usize = 64;
    pub const NR_PPOLL: usize = 73;
    pub const NR_EXIT: usize = 93;
    pub const NR_EXIT_GROUP: usize = 94;
    pub const NR_RESTART_SYSCALL: usize = 128;
    pub const NR_KILL: usize = 129;
    pub const NR_RT_SIGACTION: usize = 134;
    pub const NR_RT_SIGPROCMASK: usize = 135;
    pub const NR_RT_SIGTIMEDWAIT: usize = 137;
    pub const NR_RT_SIGRETURN: usize = 139;
    pub const NR_PRCTL: usize = 167;
    pub const NR_GETPID: usize = 172;
    pub const NR_SOCKET: usize = 198;
    pub const NR_RECVFROM: usize = 207;
    pub const NR_SENDMSG: usize = 211;
    pub const NR_WAIT4: usize = 260;
    pub const NR_SECCOMP: usize = 277;
    pub const NR_CLOSE_RANGE: usize = 436;
    /// `AUDIT_ARCH_AARCH64`.
    pub const AUDIT_ARCH: u32 = 0xc000_00b7;
}

pub use arch::*;

// Errors (as `-errno` results).
pub const EINTR: isize = 4;
pub const ECHILD: isize = 10;
pub const EINVAL: isize = 22;

// Signals.
pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGQUIT: i32 = 3;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGPIPE: i32 = 13;
pub const SIGTERM: i32 = 15;
pub const SIGCHLD: i32 = 17;
pub const SIGWINCH: i32 = 28;
pub const SIGIO: i32 = 29;
pub const SIG_SETMASK: usize = 2;
pub const SIG_DFL: usize = 0;
/// The kernel's signal set size, as `rt_sigprocmask(2)` and friends expect it.
pub const SIGSET_SIZE: usize = 8;

/// The kernel's `struct sigaction` (`rt_sigaction(2)`), the same on both architectures.
#[repr(C)]
pub struct KernelSigaction {
    pub handler: usize,
    pub flags: u64,
    pub restorer: usize,
    pub mask: u64,
}

// wait4(2).
pub const WNOHANG: usize = 1;
/// `__WALL`: children whatever their exit signal.
pub const WALL: usize = 0x4000_0000;

// fcntl(2).
pub const F_GETFL: usize = 3;
pub const F_SETFL: usize = 4;
pub const F_SETOWN: usize = 8;
pub const O_NONBLOCK: usize = 0o4000;
pub const O_ASYNC: usize = 0o20000;

// prctl(2).
pub const PR_SET_DUMPABLE: usize = 4;
pub const PR_SET_NAME: usize = 15;
pub const PR_SET_NO_NEW_PRIVS: usize = 38;

// poll(2).
pub const POLLIN: i16 = 0x1;
pub const POLLERR: i16 = 0x8;
pub const POLLHUP: i16 = 0x10;

#[repr(C)]
pub struct PollFd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

#[repr(C)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: i64,
}

// socket(2), unix(7).
pub const AF_INET: usize = 2;
pub const SOCK_STREAM: usize = 1;
pub const SOCK_DGRAM: usize = 2;
pub const SOCK_CLOEXEC: usize = 0o2000000;
pub const MSG_TRUNC: usize = 0x20;
pub const MSG_DONTWAIT: usize = 0x40;
pub const MSG_NOSIGNAL: usize = 0x4000;
pub const SOL_SOCKET: i32 = 1;
pub const SCM_RIGHTS: i32 = 1;

#[repr(C)]
pub struct IoVec {
    pub base: usize,
    pub len: usize,
}

#[repr(C)]
pub struct MsgHdr {
    pub name: usize,
    pub namelen: u32,
    pub iov: *mut IoVec,
    pub iovlen: usize,
    pub control: usize,
    pub controllen: usize,
    pub flags: i32,
}

/// One control message carrying one descriptor: a `struct cmsghdr` and its data, padded to
/// `CMSG_SPACE(sizeof(int))` (`cmsg(3)`).
#[repr(C)]
pub struct FdCmsg {
    pub len: usize,
    pub level: i32,
    pub kind: i32,
    pub fd: i32,
    pub _pad: i32,
}

/// `CMSG_LEN(sizeof(int))`: the header (16 bytes) and the descriptor.
pub const CMSG_LEN_FD: usize = 16 + 4;
/// `CMSG_SPACE(sizeof(int))`: the same, padded to 8 bytes.
pub const CMSG_SPACE_FD: usize = core::mem::size_of::<FdCmsg>();

// seccomp(2).
pub const SECCOMP_SET_MODE_FILTER: usize = 1;
pub const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
/// Offsets in `struct seccomp_data`.
pub const SECCOMP_DATA_NR: u32 = 0;
pub const SECCOMP_DATA_ARCH: u32 = 4;
/// x32 system calls are x86_64 numbers with this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub const BPF_LD_W_ABS: u16 = 0x20;
pub const BPF_JEQ_K: u16 = 0x15;
pub const BPF_JGE_K: u16 = 0x35;
pub const BPF_RET_K: u16 = 0x06;

/// `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl SockFilter {
    pub const fn stmt(code: u16, k: u32) -> SockFilter {
        SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }
}

/// `struct sock_fprog`.
#[repr(C)]
pub struct SockFprog {
    pub len: u16,
    pub filter: *const SockFilter,
}
