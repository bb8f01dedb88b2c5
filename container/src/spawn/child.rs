//! The child side of a spawn: what runs between the clone and `execve(2)`.
//!
//! [`run`] is one fallible function: each step is a typed, errno-free call (rustix, or the
//! child-side modules of the crates that own the primitive: [`palisade_ns::child`],
//! [`palisade_netns::child`], the rootfs executor of palisade-overlay, palisade-seccomp's
//! loader) on data the parent prepared ([`Plan`], [`ChildFds`]), and `?` carries a failure out.
//! The entry points alone report it: one [`ChildFailure`] record (step, index, errno) written to
//! the close-on-exec error pipe, then exit status 127.
//!
//! No allocation, no locks, no panics, no `errno`: the child either shares the parent's memory
//! and thread-local storage (`CLONE_VM`, on a stack of its own) or is a fork-like copy of a
//! possibly multi-threaded process; either way, only reads of prepared, unchanging data are
//! safe.

use std::convert::Infallible;
use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use palisade_ns::child as process;
use rustix::io::Errno;

use super::exec::exec;
use super::init;
use super::plan::Plan;
use super::step::{finish, ChildCtx, ChildFailure, ChildFds, Exit, InStep, Step};
use crate::error::ChildStep;

/// Entry point of a child started by `clone3_with_stack`.
///
/// # Safety
///
/// `arg` points to a [`ChildCtx`] that stays valid until the program is executed.
pub(crate) unsafe extern "C" fn entry(arg: *mut c_void) -> ! {
    // SAFETY: guaranteed by the caller.
    let ctx = unsafe { &*(arg as *const ChildCtx<'_>) };
    start(ctx.plan, ctx.fds)
}

/// Runs the child's steps and executes the program (or becomes the init); reports a failure
/// and exits otherwise. Called first thing in a freshly cloned child.
pub(crate) fn start(plan: &Plan, fds: &ChildFds) -> ! {
    let Err(exit) = run(plan, fds);
    finish(fds, exit)
}

/// Joins the sandbox's v1 groups through their `tasks` descriptors, then closes them (kept
/// through the first close only for this).
pub(super) fn enter_v1_groups(fds: &ChildFds) -> Step<()> {
    for (i, tasks) in fds.cgroup_tasks.iter().enumerate() {
        palisade_cgroup::child::enter_v1(tasks.as_fd())
            .map_err(|e| ChildFailure::at(ChildStep::Cgroup, i as u32, e))?;
    }
    for tasks in fds.cgroup_tasks {
        // SAFETY: the child's own copy of the descriptor (its table is not shared), used no
        // more; the parent's stays open.
        unsafe { process::close_raw(tasks.as_raw_fd()) };
    }
    Ok(())
}

/// The child's steps, in order, ending in the exec of the program or of the init.
fn run(plan: &Plan, fds: &ChildFds) -> Step<Infallible> {
    use ChildStep::*;
    // Nothing of the caller's crosses unless named: its descriptors (close-on-exec or not, and
    // those other threads were opening during the clone) go first thing, before any path is
    // looked up, so none of them can serve as a way back to the host (`/proc/self/fd/N`,
    // `openat` of `..` from a directory descriptor). First thing also because this copy of the
    // table shares the caller's open files: a lock another thread holds (`flock(2)` follows the
    // open file, not the process) stays held while any copy is open.
    process::close_all_but(fds.keep);
    // Into the sandbox's v1 groups before anything else runs here (the unified one, if any,
    // it was born in or is moved to by the parent): through descriptors, so no path is looked
    // up for it.
    enter_v1_groups(fds)?;
    // Then the sandbox's setup runs on these CPUs (`execCPUAffinity.initial`; after joining a
    // cpuset group, which would set its own, `cpuset(7)`), the command switches to its own
    // just before its exec.
    if let Some(cpus) = plan.security.initial_affinity() {
        rustix::thread::sched_setaffinity(None, cpus).in_step(InitialCpuAffinity)?;
    }

    if let Some(user) = &plan.join_user {
        // The user namespace first, then the others, made in it so that they are its own and
        // its root is privileged over them (`user_namespaces(7)`).
        // The caller's supplementary groups go first, while it may still drop them: the
        // joined namespace may deny setgroups(2) (`user_namespaces(7)`), and its groups would
        // then come along. A caller without CAP_SETGID keeps its own, as with any sandbox.
        match rustix::thread::set_thread_groups(&[]) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(e) => return Err(ChildFailure::new(SetGroups, e).into()),
        }
        let user_kind = Some(rustix::thread::LinkNameSpaceType::User);
        rustix::thread::move_into_link_name_space(user.as_fd(), user_kind)
            .in_step(JoinNamespace)?;
        let flags = rustix::thread::UnshareFlags::from_bits_retain(plan.namespaces.as_raw() as u32);
        // SAFETY: the new namespaces are this process's alone; no other thread shares the
        // flags' effects (unshare(2)).
        unsafe { rustix::thread::unshare_unsafe(flags) }.in_step(JoinNamespace)?;
        // Its root, as a child writing id maps becomes the root of its new namespace: the
        // caller's ids are not that namespace's (the kernel shows them as the overflow ids).
        let (uid, gid) = (rustix::process::Uid::ROOT, rustix::process::Gid::ROOT);
        rustix::thread::set_thread_res_gid(gid, gid, gid).in_step(SetGid)?;
        rustix::thread::set_thread_res_uid(uid, uid, uid).in_step(SetUid)?;
        if let Some(pid_w) = fds.pid_w {
            // The new PID namespace is for children only: its first process is a sibling,
            // the caller's child as a cloned one would be, which goes on from here.
            // SAFETY: the copy only makes typed, errno-free calls and executes or exits.
            if let Some(pid) = unsafe { process::fork_sibling() }.in_step(InitFork)? {
                return Err(match rustix::io::write(pid_w, &pid.to_ne_bytes()) {
                    Ok(4) => Exit::Quietly(0),
                    Ok(_) => Exit::Quietly(1),
                    Err(e) => ChildFailure::new(InitFork, e).into(),
                });
            }
        }
    }

    if plan.death_signal {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .in_step(DeathSignal)?;
        if parent_died(fds) {
            return Err(Exit::Quietly(1));
        }
    }

    if let Some(sync) = fds.sync_r {
        // Wait until the parent has written uid_map/gid_map and attached this process to its
        // cgroups. End-of-file means it gave up (and is reporting its own error), so leave
        // quietly.
        let mut byte = [0u8; 1];
        loop {
            match rustix::io::read(sync, &mut byte) {
                Ok(1) => break,
                Err(Errno::INTR) => {}
                _ => return Err(Exit::Quietly(1)),
            }
        }
        // SAFETY: the child's own copy of the descriptor (its table is not shared), used no
        // more.
        unsafe { process::close_raw(sync.as_raw_fd()) };
    }
    if let Some(user) = &plan.user {
        if user.root_gid {
            if user.setgroups == palisade_ns::SetGroups::Allow {
                rustix::thread::set_thread_groups(&[]).in_step(SetGroups)?;
            }
            let root = rustix::process::Gid::ROOT;
            rustix::thread::set_thread_res_gid(root, root, root).in_step(SetGid)?;
        }
        if user.root_uid {
            let root = rustix::process::Uid::ROOT;
            rustix::thread::set_thread_res_uid(root, root, root).in_step(SetUid)?;
        }
    }

    if plan.unshare_cgroup_ns {
        // Now a member of its group in every hierarchy: the namespace is rooted there.
        // SAFETY: a new cgroup namespace changes only how this process sees cgroup paths; no
        // other thread shares the flag's effects (unshare(2)).
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
            .in_step(CgroupNamespace)?;
    }

    for fd in &plan.joins {
        // Its kind was checked at build; the kernel checks it again against the descriptor.
        rustix::thread::move_into_link_name_space(fd.as_fd(), None).in_step(JoinNamespace)?;
    }
    if let Some(fd) = &plan.join_net {
        let net = Some(rustix::thread::LinkNameSpaceType::Network);
        rustix::thread::move_into_link_name_space(fd.as_fd(), net).in_step(Network)?;
    }
    if plan.loopback_up {
        palisade_netns::child::loopback_up().in_step(Network)?;
    }
    if let Some(range) = &plan.ping_group_range {
        palisade_netns::child::set_ping_group_range(range).in_step(PingGroupRange)?;
    }
    // Still through the caller's `/proc`: a parameter under `/proc/sys` is that of the opener's
    // namespace (`proc(5)`), which is the sandbox's now.
    for (i, (path, value)) in plan.sysctls.iter().enumerate() {
        write_file(path, value.to_bytes()).map_err(|e| ChildFailure::at(Sysctl, i as u32, e))?;
    }

    if let Some(offsets) = &plan.time_offsets {
        // The new time namespace is for children and for this process after execve(2); its
        // offsets can be set until then (time_namespaces(7)).
        // SAFETY: as for the cgroup namespace above.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWTIME) }
            .in_step(TimeNamespace)?;
        write_file(c"/proc/self/timens_offsets", offsets.as_bytes()).in_step(TimeOffsets)?;
    }

    if let Some(name) = &plan.hostname {
        rustix::system::sethostname(name.as_bytes()).in_step(Hostname)?;
    }
    if let Some(name) = &plan.domainname {
        rustix::system::setdomainname(name.as_bytes()).in_step(Domainname)?;
    }

    if let Some(rootfs) = &plan.rootfs {
        rootfs
            .apply()
            .map_err(|f| ChildFailure::at(Rootfs, f.index, f.errno))?;
    }
    if plan.private_mounts {
        // Mounts made in the sandbox never propagate back to the host; host mounts still
        // propagate in (mount_namespaces(7)).
        use rustix::mount::MountPropagationFlags as P;
        rustix::mount::mount_change(c"/", P::DOWNSTREAM | P::REC).in_step(MountPropagation)?;
    }
    if plan.mount_proc {
        use rustix::mount::MountFlags as M;
        let flags = M::NOSUID | M::NODEV | M::NOEXEC;
        rustix::mount::mount(c"proc", c"/proc", c"proc", flags, None).in_step(MountProc)?;
    }

    for (target, fd) in fds.stdio.iter().enumerate() {
        if let Some(fd) = fd {
            process::install_fd(*fd, target as RawFd).in_step(Stdio)?;
        }
    }
    // Every source sits above every target (the parent saw to it), so no placement overwrites
    // a descriptor still to be placed.
    for (i, (source, target)) in plan.passed_fds.iter().enumerate() {
        process::install_fd(source.as_fd(), *target)
            .map_err(|e| ChildFailure::at(PassFds, i as u32, e))?;
    }

    if let Some(dir) = &plan.cwd {
        rustix::process::chdir(dir.as_c_str()).in_step(Chdir)?;
    }

    if plan.init {
        return init::start(plan, fds);
    }
    exec(plan.command(), fds, None)
}

/// Writes `bytes` to the existing file `path`, in one `write(2)`.
fn write_file(path: &std::ffi::CStr, bytes: &[u8]) -> rustix::io::Result<()> {
    let file = rustix::fs::openat(
        rustix::fs::CWD,
        path,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let written = rustix::io::write(&file, bytes);
    process::close(file);
    written.map(drop)
}

/// Whether the parent died before `PR_SET_PDEATHSIG` took effect.
fn parent_died(fds: &ChildFds) -> bool {
    match fds.parent_pidfd {
        Some(pidfd) => {
            let exited = palisade_ns::pidfd_exited(pidfd);
            // SAFETY: the child's own copy of the descriptor, used no more.
            unsafe { process::close_raw(pidfd.as_raw_fd()) };
            exited
        }
        None => rustix::process::Pid::as_raw(rustix::process::getppid()) != fds.parent_pid,
    }
}
