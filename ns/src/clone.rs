//! `clone3(2)` and `clone(2)`.
//!
//! [`clone3`] and [`clone`] have fork semantics: the child continues on a copy of the caller's
//! stack and address space, like `fork(2)`, but is born in new namespaces, gets a pidfd, and can be
//! placed straight into a cgroup. [`clone3_with_stack`] instead starts the child in a function on a
//! stack of its own, which allows `CLONE_VM`: no page tables are copied, so the cost of the clone
//! does not grow with the caller's memory.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::Namespace;

const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` from `<linux/sched.h>`, up to `CLONE_ARGS_SIZE_VER2` (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct RawCloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What to ask of `clone3(2)`: the namespaces to create, the signal the parent gets when the child
/// exits, and optionally a cgroup to start the child in.
///
/// A pidfd (`CLONE_PIDFD`) is always requested: it names the child without the pid reuse race.
#[derive(Debug, Clone, Copy)]
pub struct CloneArgs<'fd> {
    namespaces: Namespace,
    exit_signal: libc::c_int,
    cgroup: Option<BorrowedFd<'fd>>,
    clear_sighand: bool,
    share_memory: bool,
    vfork: bool,
}

impl<'fd> CloneArgs<'fd> {
    /// Create the child in new namespaces of the given kinds; it signals `SIGCHLD` on exit.
    pub fn new(namespaces: Namespace) -> Self {
        CloneArgs {
            namespaces,
            exit_signal: libc::SIGCHLD,
            cgroup: None,
            clear_sighand: false,
            share_memory: false,
            vfork: false,
        }
    }

    /// The signal sent to the parent when the child terminates (`SIGCHLD` by default; 0 for none,
    /// in which case the child can only be waited for with `__WALL`/`__WCLONE`).
    pub fn exit_signal(mut self, signal: libc::c_int) -> Self {
        self.exit_signal = signal;
        self
    }

    /// Start the child as a member of the cgroup v2 directory `dir` (`CLONE_INTO_CGROUP`, Linux
    /// 5.7): it never runs outside it, and no write to `cgroup.procs` is needed.
    pub fn into_cgroup(mut self, dir: BorrowedFd<'fd>) -> Self {
        self.cgroup = Some(dir);
        self
    }

    /// Reset every signal handler of the child to the default disposition (`CLONE_CLEAR_SIGHAND`,
    /// Linux 5.5), so that no handler of the parent can run in the child before it executes a
    /// program. Ignored signals stay ignored. The [`clone`] fallback cannot express it and
    /// proceeds without.
    pub fn clear_signal_handlers(mut self, clear: bool) -> Self {
        self.clear_sighand = clear;
        self
    }

    /// Run the child in the caller's address space (`CLONE_VM`) instead of a copy of it. Only
    /// for [`clone3_with_stack`]: the child needs a stack of its own.
    pub fn share_memory(mut self, share: bool) -> Self {
        self.share_memory = share;
        self
    }

    /// Suspend the caller until the child calls `execve(2)` or exits (`CLONE_VFORK`), as
    /// `vfork(2)` does. Only for [`clone3_with_stack`].
    pub fn vfork(mut self, vfork: bool) -> Self {
        self.vfork = vfork;
        self
    }

    /// The namespaces the child will be created in.
    pub fn namespaces(&self) -> Namespace {
        self.namespaces
    }

    fn flags(&self) -> u64 {
        let mut flags = self.namespaces.bits() | CLONE_PIDFD;
        if self.cgroup.is_some() {
            flags |= CLONE_INTO_CGROUP;
        }
        if self.clear_sighand {
            flags |= CLONE_CLEAR_SIGHAND;
        }
        if self.share_memory {
            flags |= CLONE_VM;
        }
        if self.vfork {
            flags |= CLONE_VFORK;
        }
        flags
    }

    fn reject_stack_only_flags(&self) -> Result<()> {
        if self.share_memory || self.vfork {
            return Err(Error::NeedsOwnStack);
        }
        Ok(())
    }
}

/// The outcome of a clone, as seen by each of the two processes.
#[derive(Debug)]
pub enum Forked {
    /// This is the parent; the new child is described here.
    Parent(ClonedChild),
    /// This is the child.
    Child,
}

/// A child created by [`clone3`] or [`clone`], not yet reaped.
///
/// Dropping it closes the pidfd but neither kills nor reaps the process.
#[derive(Debug)]
pub struct ClonedChild {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

impl ClonedChild {
    /// The child's pid, in the caller's PID namespace.
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The pidfd referring to the child (`pidfd_open(2)`).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Splits into the pid and the owned pidfd.
    pub fn into_parts(self) -> (libc::pid_t, OwnedFd) {
        (self.pid, self.pidfd)
    }

    /// Blocks until the child terminates and reaps it, returning the raw wait status
    /// (`waitpid(2)`; decode it with `libc::WIFEXITED` and friends).
    pub fn wait(&self) -> Result<libc::c_int> {
        let mut status = 0;
        loop {
            // SAFETY: `status` is a valid out-pointer; waiting on our own child has no other
            // effect on memory.
            let ret = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if ret == self.pid {
                return Ok(status);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Process {
                    call: "waitpid",
                    pid: self.pid,
                    source: err,
                });
            }
        }
    }
}

/// Creates a child process with `clone3(2)` (Linux 5.3), falling back to [`clone`] when the kernel
/// answers `ENOSYS`.
///
/// The child resumes from this call on a copy of the caller's memory, exactly as after `fork(2)`.
///
/// # Safety
///
/// The same rules as for `fork(2)` in a possibly multi-threaded process apply to the child: until
/// it calls `execve(2)` or `_exit(2)` it may only call async-signal-safe functions (`signal-safety(7)`)
/// — no allocation, no locks, no panics, no returning from `main`. Only the calling thread exists in
/// the child.
pub unsafe fn clone3(args: &CloneArgs<'_>) -> Result<Forked> {
    args.reject_stack_only_flags()?;
    let mut pidfd: RawFd = -1;
    let mut raw = RawCloneArgs {
        flags: args.flags(),
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: args.exit_signal as u64,
        cgroup: args.cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        ..RawCloneArgs::default()
    };
    // SAFETY: `raw` is a valid, fully initialised `struct clone_args` whose size we pass; the
    // `pidfd` pointer is valid for the kernel to write. With a zero stack the child continues on
    // a copy of this stack (fork semantics), which the caller's contract makes sound.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut raw as *mut RawCloneArgs,
            std::mem::size_of::<RawCloneArgs>(),
        )
    };
    match ret {
        0 => Ok(Forked::Child),
        -1 => {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return Err(Error::Clone {
                    call: "clone3",
                    flags: raw.flags,
                    source: err,
                });
            }
            if args.cgroup.is_some() {
                return Err(Error::NeedsClone3 {
                    option: "CLONE_INTO_CGROUP",
                });
            }
            // SAFETY: forwarded from our caller.
            unsafe { clone(args) }
        }
        pid => Ok(Forked::Parent(ClonedChild {
            pid: pid as libc::pid_t,
            // SAFETY: the kernel stored a new pidfd that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        })),
    }
}

/// Creates a child process with the older `clone(2)` system call (`CLONE_PIDFD` needs Linux
/// 5.2). [`clone3`] uses it by itself where `clone3(2)` is missing.
///
/// `clone(2)` shares its flags word with the exit signal, so it cannot create a time namespace
/// (`CLONE_NEWTIME` overlaps `CSIGNAL`) nor place the child into a cgroup; both are rejected.
///
/// # Safety
///
/// As for [`clone3`].
pub unsafe fn clone(args: &CloneArgs<'_>) -> Result<Forked> {
    args.reject_stack_only_flags()?;
    if args.namespaces.contains(Namespace::TIME) {
        return Err(Error::NeedsClone3 {
            option: "CLONE_NEWTIME",
        });
    }
    if args.cgroup.is_some() {
        return Err(Error::NeedsClone3 {
            option: "CLONE_INTO_CGROUP",
        });
    }
    let flags = (args.flags() & !CLONE_CLEAR_SIGHAND) | (args.exit_signal as u64 & 0xff);
    let mut pidfd: RawFd = -1;
    let pidfd_ptr = &mut pidfd as *mut RawFd;
    // SAFETY: a null stack gives fork semantics; with CLONE_PIDFD the kernel writes the pidfd
    // through the parent_tid argument, which points at a live local. The remaining pointer
    // arguments are null and unused for these flags.
    let ret = unsafe {
        #[cfg(target_arch = "s390x")]
        {
            libc::syscall(libc::SYS_clone, 0usize, flags, pidfd_ptr, 0usize, 0usize)
        }
        #[cfg(not(target_arch = "s390x"))]
        {
            libc::syscall(libc::SYS_clone, flags, 0usize, pidfd_ptr, 0usize, 0usize)
        }
    };
    match ret {
        0 => Ok(Forked::Child),
        -1 => Err(Error::Clone {
            call: "clone",
            flags,
            source: io::Error::last_os_error(),
        }),
        pid => Ok(Forked::Parent(ClonedChild {
            pid: pid as libc::pid_t,
            // SAFETY: the kernel stored a new pidfd that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        })),
    }
}

/// The function a child started by [`clone3_with_stack`] runs. It must never return: it ends in
/// `execve(2)` or `_exit(2)`.
pub type ChildEntry = unsafe extern "C" fn(arg: *mut c_void) -> !;

/// Whether [`clone3_with_stack`] is implemented for this architecture.
pub const CLONE3_WITH_STACK: bool = cfg!(target_arch = "x86_64");

/// Creates a child with `clone3(2)` that runs `entry(arg)` on the given stack, the way
/// `clone(2)`'s glibc wrapper does, so that [`CloneArgs::share_memory`] and
/// [`CloneArgs::vfork`] can be used.
///
/// `stack` is the lowest address of the stack area and `stack_size` its length; the kernel starts
/// the child with its stack pointer at `stack + stack_size`, which must be 16-byte aligned.
/// Returns [`Error::Unsupported`] on architectures other than x86-64 ([`CLONE3_WITH_STACK`]) and
/// the `ENOSYS` [`Error::Clone`] on kernels without `clone3(2)`.
///
/// # Safety
///
/// - The stack must stay mapped, and unused by anything else, for as long as the child runs on
///   it — with `CLONE_VM` that is until the child calls `execve(2)` or exits.
/// - With `CLONE_VM`, the child shares the caller's memory *and thread-local storage* (its
///   `errno` included), while other threads of the caller keep running: it must only read memory
///   that nobody modifies or frees while it runs, must not allocate, lock or panic, and should
///   make its system calls without libc wrappers that write `errno`.
/// - Without `CLONE_VM` the child is a copy of the caller, with the rules of [`clone3`].
pub unsafe fn clone3_with_stack(
    args: &CloneArgs<'_>,
    stack: *mut u8,
    stack_size: usize,
    entry: ChildEntry,
    arg: *mut c_void,
) -> Result<ClonedChild> {
    if !CLONE3_WITH_STACK {
        return Err(Error::Unsupported);
    }
    if (stack as usize + stack_size) % 16 != 0 || stack.is_null() || stack_size == 0 {
        return Err(Error::InvalidStack);
    }
    let mut pidfd: RawFd = -1;
    let mut raw = RawCloneArgs {
        flags: args.flags(),
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: args.exit_signal as u64,
        stack: stack as u64,
        stack_size: stack_size as u64,
        cgroup: args.cgroup.map_or(0, |fd| fd.as_raw_fd() as u64),
        ..RawCloneArgs::default()
    };
    // SAFETY: forwarded from our caller: the stack is valid for the child and `entry` follows
    // the rules for running in it.
    let ret = unsafe { raw_clone3_entry(&mut raw, entry, arg) };
    if ret < 0 {
        return Err(Error::Clone {
            call: "clone3",
            flags: raw.flags,
            source: io::Error::from_raw_os_error(-ret as i32),
        });
    }
    Ok(ClonedChild {
        pid: ret as libc::pid_t,
        // SAFETY: the kernel stored a new pidfd that nothing else owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
    })
}

/// `clone3(2)` through a trampoline: in the child, on its new stack, call `entry(arg)`.
/// Returns the child's pid or `-errno`; never touches `errno`.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3_entry(args: &mut RawCloneArgs, entry: ChildEntry, arg: *mut c_void) -> isize {
    let ret: isize;
    // SAFETY: the system call reads `args` (valid, of the size passed) and writes the pidfd
    // through the pointer inside it. In the parent the block only returns the result. In the
    // child (rax == 0) the kernel has switched to the new, 16-byte aligned stack; the call
    // pushes the return address there, so `entry` starts with the alignment the ABI expects, and
    // it never returns (ud2 traps if it did). r12 and r13 survive the system call.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *mut RawCloneArgs,
            in("rsi") std::mem::size_of::<RawCloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn raw_clone3_entry(_: &mut RawCloneArgs, _: ChildEntry, _: *mut c_void) -> isize {
    -(libc::ENOSYS as isize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_args_have_the_ver2_size() {
        assert_eq!(std::mem::size_of::<RawCloneArgs>(), 88);
    }

    #[test]
    fn flags_always_ask_for_a_pidfd() {
        let args = CloneArgs::new(Namespace::PID);
        assert_eq!(args.flags(), Namespace::PID.bits() | CLONE_PIDFD);
    }

    fn exit_code_of(child: &ClonedChild) -> i32 {
        let status = child.wait().unwrap();
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn clone3_without_namespaces_works_unprivileged() {
        // SAFETY: the child only calls `_exit`.
        match unsafe { clone3(&CloneArgs::new(Namespace::empty())) }.unwrap() {
            // SAFETY: _exit is async-signal-safe and never returns.
            Forked::Child => unsafe { libc::_exit(42) },
            Forked::Parent(child) => {
                assert!(child.pid() > 0);
                assert_eq!(exit_code_of(&child), 42);
            }
        }
    }

    #[test]
    fn clone_fallback_rejects_what_it_cannot_express() {
        // SAFETY: rejected before any process is created.
        let err = unsafe { clone(&CloneArgs::new(Namespace::TIME)) }.unwrap_err();
        assert!(matches!(err, Error::NeedsClone3 { .. }), "{err}");
    }

    #[test]
    fn shared_memory_needs_a_stack_of_its_own() {
        let args = CloneArgs::new(Namespace::empty()).share_memory(true);
        // SAFETY: rejected before any process is created.
        let err = unsafe { clone3(&args) }.unwrap_err();
        assert!(matches!(err, Error::NeedsOwnStack), "{err}");
    }

    unsafe extern "C" fn exit_with(arg: *mut c_void) -> ! {
        // SAFETY: exit_group is a raw system call; nothing else runs in the child.
        unsafe {
            libc::syscall(libc::SYS_exit_group, arg as usize as libc::c_long);
        }
        unreachable!()
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn clone3_with_stack_runs_the_entry_in_shared_memory() {
        let stack = crate::ChildStack::new(64 * 1024).unwrap();
        for vfork in [false, true] {
            let args = CloneArgs::new(Namespace::empty())
                .share_memory(true)
                .vfork(vfork);
            // SAFETY: the entry makes one raw system call on its own stack, which outlives it.
            let child = unsafe {
                clone3_with_stack(
                    &args,
                    stack.base(),
                    stack.len(),
                    exit_with,
                    9 as *mut c_void,
                )
            }
            .unwrap();
            assert_eq!(exit_code_of(&child), 9);
        }
    }

    #[test]
    fn misaligned_stacks_are_refused() {
        let stack = crate::ChildStack::new(64 * 1024).unwrap();
        let args = CloneArgs::new(Namespace::empty());
        // SAFETY: rejected before any process is created.
        let err = unsafe {
            clone3_with_stack(
                &args,
                stack.base(),
                stack.len() - 8,
                exit_with,
                std::ptr::null_mut(),
            )
        }
        .unwrap_err();
        assert!(matches!(err, Error::InvalidStack), "{err}");
    }

    #[test]
    fn clone_fallback_works() {
        // SAFETY: the child only calls `getpid` and `_exit`.
        match unsafe { clone(&CloneArgs::new(Namespace::empty())) }.unwrap() {
            // SAFETY: _exit is async-signal-safe and never returns.
            Forked::Child => unsafe { libc::_exit(7) },
            Forked::Parent(child) => assert_eq!(exit_code_of(&child), 7),
        }
    }
}
