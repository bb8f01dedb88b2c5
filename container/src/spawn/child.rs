//! The child side of a spawn: what runs between the clone and `execve(2)`.
//!
//! Everything here is a raw system call (see [`sys`](super::sys)) on data the parent prepared
//! ([`Plan`], [`ChildFds`]): no allocation, no locks, no panics, no `errno`. The child either
//! shares the parent's memory (`CLONE_VM`, on a stack of its own) or is a fork-like copy of a
//! possibly multi-threaded process; either way, only reads of prepared, unchanging data are safe.
//! A failing step writes `(step, errno)` to the close-on-exec error pipe and exits with status 127.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, RawFd};

use palisade_ns::SetGroups;

use super::init;
use super::plan::Plan;
use super::sys::{close_all_but, raw, send_with_fd, KernelSigaction, SIGSET_SIZE};
use crate::error::ChildStep;

/// The descriptors the child works with, as raw numbers (`-1`: none).
#[derive(Debug)]
pub(crate) struct ChildFds<'a> {
    /// Write end of the error pipe.
    pub err_w: RawFd,
    /// Read end of the pipe on which the parent says the id maps are written.
    pub sync_r: RawFd,
    /// Write end of the pipe on which the init reports the command's wait status.
    pub status_w: RawFd,
    /// What to install as fds 0, 1, 2 (`-1`: inherit).
    pub stdio: [RawFd; 3],
    /// The child's end of the control socket (`SOCK_SEQPACKET`, close-on-exec): the seccomp
    /// listener goes to the parent through it, and the init makes sockets in the sandbox's
    /// network namespace on request through it (see [`init`]).
    pub control: RawFd,
    /// The init's own open file description of the caller's death pipe (`-1`: none): `F_SETOWN`
    /// belongs to the description, so each init needs its own to be told.
    pub death: RawFd,
    /// Every descriptor the child may keep, ascending: 0 to 2, the above, and the plan's own.
    /// Everything else the caller had open, close-on-exec or not, is closed first thing.
    pub keep: &'a [RawFd],
    /// A pidfd of the parent, to notice that it died before `PR_SET_PDEATHSIG` took effect when
    /// `getppid(2)` cannot tell (in a new PID namespace it returns 0).
    pub parent_pidfd: RawFd,
    /// The parent's pid, in the parent's PID namespace.
    pub parent_pid: libc::pid_t,
}

/// What the child entry points receive: the plan and descriptors, which live in the parent's
/// `spawn` frame and `Sandbox` until the program has been executed.
pub(crate) struct ChildCtx<'a> {
    pub plan: &'a Plan,
    pub fds: &'a ChildFds<'a>,
}

/// Exits the child; never returns.
pub(super) fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group ends this process (a thread group of its own).
        unsafe { raw!(libc::SYS_exit_group, code) };
    }
}

/// Reports `step` with `errno` to the parent and exits.
pub(super) fn fail(fds: &ChildFds, step: ChildStep, errno: isize) -> ! {
    fail_at(fds, step, 0, errno)
}

/// Reports `step`, the index of the item it was working on (a mount op), and `errno`, then exits.
pub(super) fn fail_at(fds: &ChildFds, step: ChildStep, index: u32, errno: isize) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32 | index << 8).to_ne_bytes());
    msg[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
    // SAFETY: 8 bytes from a live buffer; atomic on a pipe (below PIPE_BUF).
    unsafe { raw!(libc::SYS_write, fds.err_w, msg.as_ptr(), msg.len()) };
    exit(127)
}

/// Fails with `step` if a raw system call returned `-errno`.
fn check(fds: &ChildFds, step: ChildStep, ret: isize) {
    if ret < 0 {
        fail(fds, step, -ret);
    }
}

/// Entry point of a child started by `clone3_with_stack`.
///
/// # Safety
///
/// `arg` points to a [`ChildCtx`] that stays valid until the program is executed.
pub(crate) unsafe extern "C" fn entry(arg: *mut c_void) -> ! {
    // SAFETY: guaranteed by the caller.
    let ctx = unsafe { &*(arg as *const ChildCtx<'_>) };
    // SAFETY: this is a freshly cloned child with the plan and descriptors prepared for it.
    unsafe { run(ctx.plan, ctx.fds) }
}

/// Runs the child's steps and executes the program (or the init). Never returns.
///
/// # Safety
///
/// Must be called only in a freshly cloned child, with `plan` and `fds` prepared by the parent.
pub(crate) unsafe fn run(plan: &Plan, fds: &ChildFds) -> ! {
    // SAFETY: for the whole body, every call is a raw system call on prepared, NUL-terminated
    // data that outlives the child's use of it.
    unsafe {
        // Nothing of the caller's crosses unless named: its descriptors (close-on-exec or not,
        // and those other threads were opening during the clone) go before any path is looked
        // up, so none of them can serve as a way back to the host (`/proc/self/fd/N`, `openat`
        // of `..` from a directory descriptor).
        close_all_but(fds.keep);

        if plan.death_signal {
            let ret = raw!(libc::SYS_prctl, libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            check(fds, ChildStep::DeathSignal, ret);
            if parent_died(fds) {
                exit(1);
            }
        }

        if fds.sync_r >= 0 {
            // Wait until the parent has written uid_map/gid_map and attached this process to its
            // cgroups. End-of-file means it gave up (and is reporting its own error), so leave
            // quietly.
            let mut byte = 0u8;
            loop {
                let n = raw!(libc::SYS_read, fds.sync_r, &mut byte as *mut u8, 1);
                if n == 1 {
                    break;
                }
                if n != -(libc::EINTR as isize) {
                    exit(1);
                }
            }
            raw!(libc::SYS_close, fds.sync_r);
        }
        if let Some(user) = &plan.user {
            if user.root_gid {
                if user.setgroups == SetGroups::Allow {
                    let ret = raw!(libc::SYS_setgroups, 0, 0);
                    check(fds, ChildStep::SetGroups, ret);
                }
                check(fds, ChildStep::SetGid, raw!(libc::SYS_setresgid, 0, 0, 0));
            }
            if user.root_uid {
                check(fds, ChildStep::SetUid, raw!(libc::SYS_setresuid, 0, 0, 0));
            }
        }

        if plan.unshare_cgroup_ns {
            // Now a member of its group in every hierarchy: the namespace is rooted there.
            let ret = raw!(libc::SYS_unshare, libc::CLONE_NEWCGROUP);
            check(fds, ChildStep::CgroupNamespace, ret);
        }

        if let Some(fd) = &plan.join_net {
            let ret = raw!(libc::SYS_setns, fd.as_raw_fd(), libc::CLONE_NEWNET);
            check(fds, ChildStep::Network, ret);
        }
        if plan.loopback_up {
            check(fds, ChildStep::Network, loopback_up());
        }
        if let Some(range) = &plan.ping_group_range {
            check(fds, ChildStep::PingGroupRange, ping_group_range(range));
        }

        if let Some(offsets) = &plan.time_offsets {
            // The new time namespace is for children and for this process after execve(2);
            // its offsets can be set until then (time_namespaces(7)).
            let ret = raw!(libc::SYS_unshare, libc::CLONE_NEWTIME);
            check(fds, ChildStep::TimeNamespace, ret);
            let path = c"/proc/self/timens_offsets";
            let fd = raw!(
                libc::SYS_openat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC
            );
            check(fds, ChildStep::TimeOffsets, fd);
            let bytes = offsets.as_bytes();
            let n = raw!(libc::SYS_write, fd, bytes.as_ptr(), bytes.len());
            check(fds, ChildStep::TimeOffsets, n);
            raw!(libc::SYS_close, fd);
        }

        if let Some(name) = &plan.hostname {
            let ret = raw!(libc::SYS_sethostname, name.as_ptr(), name.as_bytes().len());
            check(fds, ChildStep::Hostname, ret);
        }

        if let Some(rootfs) = &plan.rootfs {
            super::mounts::run(rootfs, fds);
        }
        if plan.private_mounts {
            // Mounts made in the sandbox never propagate back to the host; host mounts still
            // propagate in (mount_namespaces(7)).
            let ret = raw!(
                libc::SYS_mount,
                0,
                c"/".as_ptr(),
                0,
                libc::MS_REC | libc::MS_SLAVE,
                0
            );
            check(fds, ChildStep::MountPropagation, ret);
        }
        if plan.mount_proc {
            let proc = c"proc";
            let ret = raw!(
                libc::SYS_mount,
                proc.as_ptr(),
                c"/proc".as_ptr(),
                proc.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                0
            );
            check(fds, ChildStep::MountProc, ret);
        }

        for (target, &fd) in fds.stdio.iter().enumerate() {
            let ret = if fd < 0 {
                0
            } else if fd as usize == target {
                raw!(libc::SYS_fcntl, fd, libc::F_SETFD, 0)
            } else {
                raw!(libc::SYS_dup3, fd, target, 0)
            };
            check(fds, ChildStep::Stdio, ret);
        }
        // Every source sits above every target (the parent saw to it), so no placement
        // overwrites a descriptor still to be placed.
        for (i, (source, target)) in plan.passed_fds.iter().enumerate() {
            let ret = raw!(libc::SYS_dup3, source.as_raw_fd(), *target, 0);
            if ret < 0 {
                fail_at(fds, ChildStep::PassFds, i as u32, -ret);
            }
        }

        if let Some(dir) = &plan.cwd {
            check(fds, ChildStep::Chdir, raw!(libc::SYS_chdir, dir.as_ptr()));
        }

        if plan.init {
            init::start(plan, fds)
        }
        exec(plan, fds, None)
    }
}

/// Writes `range` to `net.ipv4.ping_group_range`, which belongs to the calling thread's network
/// namespace whichever `/proc` it is reached through, so that the sandbox's groups may open ICMP
/// datagram sockets (`icmp(7)`); returns 0 or `-errno`. A kernel without ping sockets has no
/// such file: `ping` then needs `CAP_NET_RAW` as before, and the step is skipped.
fn ping_group_range(range: &str) -> isize {
    // SAFETY: raw system calls on a static path, a descriptor of our own and the prepared
    // bytes of `range`, which outlive the calls.
    unsafe {
        let fd = raw!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c"/proc/sys/net/ipv4/ping_group_range".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC
        );
        if fd == -(libc::ENOENT as isize) {
            return 0;
        }
        if fd < 0 {
            return fd;
        }
        let n = raw!(libc::SYS_write, fd, range.as_ptr(), range.len());
        raw!(libc::SYS_close, fd);
        n.min(0)
    }
}

/// Sets `lo` up with the `SIOCGIFFLAGS`/`SIOCSIFFLAGS` ioctls of `netdevice(7)` (a new network
/// namespace starts with it down); returns 0 or `-errno`.
fn loopback_up() -> isize {
    // SAFETY: raw system calls on a socket of our own and an `ifreq` on this stack.
    unsafe {
        let sock = raw!(
            libc::SYS_socket,
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0
        );
        if sock < 0 {
            return sock;
        }
        let mut ifr: libc::ifreq = std::mem::MaybeUninit::zeroed().assume_init();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let ptr = &mut ifr as *mut libc::ifreq;
        let mut ret = raw!(libc::SYS_ioctl, sock, libc::SIOCGIFFLAGS, ptr);
        if ret == 0 {
            (*ptr).ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            ret = raw!(libc::SYS_ioctl, sock, libc::SIOCSIFFLAGS, ptr);
        }
        raw!(libc::SYS_close, sock);
        ret
    }
}

fn parent_died(fds: &ChildFds) -> bool {
    if fds.parent_pidfd >= 0 {
        let mut pfd = libc::pollfd {
            fd: fds.parent_pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: one valid pollfd and a zero timeout; a pidfd polls readable once the process
        // exited. Then close the pidfd, which this child no longer needs.
        unsafe {
            let ret = raw!(
                libc::SYS_ppoll,
                &mut pfd as *mut _,
                1,
                &zero as *const _,
                0,
                0
            );
            raw!(libc::SYS_close, fds.parent_pidfd);
            ret == 1
        }
    } else {
        // SAFETY: getppid has no failure mode and touches no memory.
        unsafe { raw!(libc::SYS_getppid) != fds.parent_pid as isize }
    }
}

/// Restores the signal state a fresh program expects and executes the program, trying each
/// `PATH` candidate as `execvp(3)` does.
///
/// A command started by the init passes its `gate`: it executes nothing of its own before
/// end-of-file there (see [`init`]). It confines itself first when its filter lets it wait on the
/// gate afterwards (`read(2)` allowed), so that loading the filter overlaps the init's exec.
pub(super) fn exec(plan: &Plan, fds: &ChildFds, gate: Option<i32>) -> ! {
    let exec = &plan.exec;
    let mut reported = libc::ENOENT as isize;
    let default_action = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: signal mask and disposition changes affect only this process; the candidates,
    // argv and envp are NUL-terminated strings and NULL-terminated arrays owned by the plan.
    unsafe {
        let empty = &plan.empty_signals as *const libc::sigset_t;
        raw!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            empty,
            0,
            SIGSET_SIZE
        );
        // The Rust runtime ignores SIGPIPE, and ignored signals survive execve(2).
        let action = &default_action as *const KernelSigaction;
        raw!(
            libc::SYS_rt_sigaction,
            libc::SIGPIPE,
            action,
            0,
            SIGSET_SIZE
        );
        let confine_first = plan.security.filter_allows_read();
        if let (Some(gate), false) = (gate, confine_first) {
            wait_for_gate(gate);
        }
        // The last step before the exec: user, capabilities, limits, no_new_privs and the
        // syscall filter (see `crate::security` for their order).
        match plan.security.apply(true) {
            Ok(listener) if listener >= 0 => {
                let sent = send_with_fd(fds.control, &0i32.to_ne_bytes(), listener);
                raw!(libc::SYS_close, listener);
                if sent < 0 {
                    fail(fds, ChildStep::Seccomp, -sent);
                }
            }
            Ok(_) => {}
            Err((step, errno)) => fail(fds, step, errno),
        }
        if let (Some(gate), true) = (gate, confine_first) {
            wait_for_gate(gate);
        }
        for path in exec.candidates.strings() {
            let ret = raw!(
                libc::SYS_execve,
                path.as_ptr(),
                exec.argv.as_ptr(),
                exec.envp.as_ptr()
            );
            match -ret as i32 {
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::EACCES => reported = libc::EACCES as isize,
                _ => {
                    reported = -ret;
                    break;
                }
            }
        }
    }
    fail(fds, ChildStep::Exec, reported)
}

/// Waits for end-of-file on the gate: nobody writes to it, so anything else means a broken
/// sandbox, and the command leaves without executing anything.
fn wait_for_gate(gate: i32) {
    let mut byte = 0u8;
    loop {
        // SAFETY: read(2) of one byte into this stack.
        let n = unsafe { raw!(libc::SYS_read, gate, &mut byte as *mut u8, 1) };
        match n {
            0 => return,
            n if n == -(libc::EINTR as isize) => {}
            _ => exit(127),
        }
    }
}
