//! Loads compiled filters into forked children and checks what the real kernel does.

mod child;

use std::ffi::CString;

use child::{errno, in_child, sys, Exit};
use palisade_seccomp::{
    set_no_new_privs, Action, Arch, BpfProgram, CmpOp, Cond, Filter, LoadFlags, Profile, Rule,
};

const EPERM: u16 = libc::EPERM as u16;

fn load(prog: &BpfProgram, flags: LoadFlags) -> bool {
    set_no_new_privs().is_ok() && prog.load(flags).is_ok()
}

/// A filter that allows everything except the given rules.
fn allow_all_but(rules: Vec<Rule>) -> Filter {
    let mut f = Filter::new(Arch::native(), Action::Allow);
    for r in rules {
        f.add(r).unwrap();
    }
    f
}

#[test]
fn errno_and_allow() {
    let f = allow_all_but(vec![Rule::new("getpid", Action::Errno(EPERM))]);
    for prog in [f.compile().unwrap(), f.compile_linear().unwrap()] {
        let exit = in_child(|| {
            if !load(&prog, LoadFlags::empty()) {
                return 10;
            }
            if sys(libc::SYS_getpid, 0, 0, 0) != Err(libc::EPERM) {
                return 11;
            }
            // SAFETY: getppid cannot fail.
            let ppid = i64::from(unsafe { libc::getppid() });
            if sys(libc::SYS_getppid, 0, 0, 0) != Ok(ppid) || ppid <= 1 {
                return 12;
            }
            0
        });
        assert_eq!(exit, Exit::Code(0));
    }
}

#[test]
fn argument_conditions_use_all_64_bits() {
    // The kernel truncates dup's fd to 32 bits, but the filter sees the full 64-bit argument.
    let f = allow_all_but(vec![
        Rule::new("dup", Action::Errno(libc::EXDEV as u16))
            .when(Cond::new(0, CmpOp::Eq, 0x1_0000_0001).unwrap()),
        Rule::new("dup", Action::Errno(libc::ENOTSUP as u16))
            .when(Cond::new(0, CmpOp::Gt, 100).unwrap())
            .when(Cond::new(0, CmpOp::Lt, 200).unwrap()),
    ]);
    let prog = f.compile().unwrap();
    let exit = in_child(|| {
        if !load(&prog, LoadFlags::empty()) {
            return 10;
        }
        if sys(libc::SYS_dup, 0x1_0000_0001, 0, 0) != Err(libc::EXDEV) {
            return 11;
        }
        if sys(libc::SYS_dup, 150, 0, 0) != Err(libc::ENOTSUP) {
            return 12;
        }
        // Not matched by either rule: the kernel runs it (fd 300 is not open).
        if sys(libc::SYS_dup, 300, 0, 0) != Err(libc::EBADF) {
            return 13;
        }
        if sys(libc::SYS_dup, 1, 0, 0).is_err() {
            return 14;
        }
        0
    });
    assert_eq!(exit, Exit::Code(0));
}

#[test]
fn kill_process_is_sigsys() {
    let f = allow_all_but(vec![Rule::new("getppid", Action::KillProcess)]);
    let prog = f.compile().unwrap();
    let exit = in_child(|| {
        if !load(&prog, LoadFlags::LOG) {
            return 10;
        }
        let _ = sys(libc::SYS_getppid, 0, 0, 0);
        0
    });
    assert_eq!(exit, Exit::Signal(libc::SIGSYS));
}

#[test]
fn raw_sock_fprog_load() {
    // What a sandbox child does after clone: one raw syscall with a prepared sock_fprog.
    let f = allow_all_but(vec![Rule::new(
        "getpid",
        Action::Errno(libc::ENOSYS as u16),
    )]);
    let prog = f.compile().unwrap();
    let fprog = prog.sock_fprog();
    let exit = in_child(|| {
        // SAFETY: integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return 10;
        }
        // SAFETY: `fprog` points into `prog`, which outlives this call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                palisade_seccomp::load::SECCOMP_SET_MODE_FILTER,
                LoadFlags::empty().bits(),
                &fprog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return 11;
        }
        if sys(libc::SYS_getpid, 0, 0, 0) != Err(libc::ENOSYS) {
            return 12;
        }
        0
    });
    assert_eq!(exit, Exit::Code(0));
}

#[test]
fn default_profile_blocks_and_allows() {
    let prog = Profile::default_profile()
        .compile(Arch::native())
        .unwrap()
        .unwrap();
    let exit = in_child(|| {
        if !load(&prog, LoadFlags::empty()) {
            return 10;
        }
        if sys(libc::SYS_unshare, libc::CLONE_NEWUSER as u64, 0, 0) != Err(libc::EPERM) {
            return 11;
        }
        if sys(libc::SYS_clone3, 0, 0, 0) != Err(libc::ENOSYS) {
            return 12;
        }
        if sys(libc::SYS_umount2, 0, 0, 0) != Err(libc::EPERM) {
            return 13;
        }
        if sys(
            libc::SYS_socket,
            libc::AF_VSOCK as u64,
            libc::SOCK_STREAM as u64,
            0,
        ) != Err(libc::EPERM)
        {
            return 14;
        }
        // Invalid as a clone (CLONE_THREAD without CLONE_VM), so a filter bug cannot fork here.
        let flags = (libc::CLONE_NEWNET | libc::CLONE_THREAD) as u64;
        if sys(libc::SYS_clone, flags, 0, 0) != Err(libc::EPERM) {
            return 15;
        }
        if sys(libc::SYS_getppid, 0, 0, 0).is_err() {
            return 16;
        }
        // A plain fork (clone without namespace flags) still works.
        // SAFETY: the grandchild only _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: ends the grandchild.
            unsafe { libc::_exit(7) };
        }
        if pid < 0 || child::wait(pid) != Exit::Code(7) {
            return 17;
        }
        0
    });
    assert_eq!(exit, Exit::Code(0));
}

#[test]
fn default_profile_runs_a_shell() {
    let prog = Profile::default_profile()
        .compile(Arch::native())
        .unwrap()
        .unwrap();
    let script = "ls / >/dev/null && cat /proc/self/status | grep -q Seccomp:.2 \
                  && busybox sh -c 'echo hi | busybox wc -c' >/dev/null \
                  && (sleep 0 & wait) && exit 3";
    let argv = [
        CString::new("/bin/sh").unwrap(),
        CString::new("-c").unwrap(),
        CString::new(script).unwrap(),
    ];
    let ptrs = [
        argv[0].as_ptr(),
        argv[1].as_ptr(),
        argv[2].as_ptr(),
        std::ptr::null(),
    ];
    let exit = in_child(|| {
        if !load(&prog, LoadFlags::empty()) {
            return 10;
        }
        // SAFETY: argv is a null-terminated array of valid C strings; envp is our environ.
        unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
        11
    });
    assert_eq!(exit, Exit::Code(3));
}

#[test]
fn unconfined_has_no_program() {
    assert!(Profile::unconfined()
        .compile(Arch::native())
        .unwrap()
        .is_none());
}

/// `load_raw` hands back the kernel's error without touching `errno`, `load` wraps the same
/// error, and a listener comes back only when asked for.
#[test]
fn load_raw_returns_the_kernels_error() {
    let errno_getpid = allow_all_but(vec![Rule::new("getpid", Action::Errno(EPERM))])
        .compile()
        .unwrap();
    let notify_gettid = allow_all_but(vec![Rule::new("gettid", Action::UserNotify)])
        .compile()
        .unwrap();
    // NEW_LISTENER with TSYNC but without TSYNC_ESRCH is refused (`seccomp(2)`).
    let refused = LoadFlags::NEW_LISTENER | LoadFlags::TSYNC;
    let exit = in_child(|| {
        if set_no_new_privs().is_err() {
            return 10;
        }
        // SAFETY: errno is this thread's; the forked child has no other.
        unsafe { *libc::__errno_location() = 12345 };
        if errno_getpid.load_raw(refused).err() != Some(rustix::io::Errno::INVAL) {
            return 11;
        }
        if errno() != 12345 {
            return 12;
        }
        match errno_getpid.load(refused) {
            Err(palisade_seccomp::Error::Sys { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) => {}
            _ => return 13,
        }
        if !matches!(errno_getpid.load_raw(LoadFlags::empty()), Ok(None)) {
            return 14;
        }
        if sys(libc::SYS_getpid, 0, 0, 0) != Err(libc::EPERM) {
            return 15;
        }
        match notify_gettid.load_raw(LoadFlags::NEW_LISTENER) {
            Ok(Some(listener)) => {
                use std::os::fd::AsRawFd;
                // SAFETY: F_GETFD on a descriptor we own.
                let fd_flags = unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_GETFD) };
                if fd_flags != libc::FD_CLOEXEC {
                    return 16;
                }
            }
            _ => return 17,
        }
        0
    });
    assert_eq!(exit, Exit::Code(0));
}
