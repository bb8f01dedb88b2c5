//! The parent's side of id-mapped volumes: a detached, id-mapped copy of each volume's tree,
//! made for one spawn before the clone, which the sandbox child attaches
//! ([`Op::AttachPrepared`](super::Op::AttachPrepared)).
//!
//! `mount_setattr(2)` maps a mount's ids through the maps of a user namespace, and only while
//! the mount is detached; a detached mount can be attached once. So each spawn gets its own:
//! `open_tree(2)` with `OPEN_TREE_CLONE` of the host's path, a user namespace carrying the
//! volume's maps (made by a short-lived child of the caller, cloned into it, which waits while
//! the maps are written and its namespace opened, and is then killed and reaped),
//! `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`. The child, in its new mount namespace, attaches
//! the copy with `move_mount(2)`: a detached mount may be attached in any mount namespace
//! whose owner the mover is privileged over.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::mount::sys;

/// One id-mapped tree to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prepare {
    /// The host's path.
    pub host: CString,
    /// Copy the mounts below it too (`rbind`).
    pub recursive: bool,
    /// Map every mount of the copy, not only its top one (`ridmap`).
    pub recursive_idmap: bool,
    /// The user namespace's `uid_map` and `gid_map` (`user_namespaces(7)`).
    pub uid_map: String,
    pub gid_map: String,
}

/// Where the child finds this spawn's detached mounts: one descriptor number per
/// [`Prepare`], written by the parent before the clone and read by the child (plain atomic
/// loads: no lock), and the lock one spawn holds from its preparation until the child no longer
/// needs them.
#[derive(Debug, Default)]
pub(super) struct Slots {
    pub fds: Vec<AtomicI32>,
    lock: Mutex<()>,
}

impl Slots {
    pub fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots {
            fds: (0..n).map(|_| AtomicI32::new(-1)).collect(),
            lock: Mutex::new(()),
        })
    }

    /// The descriptor of slot `i`, or `None` when none was prepared.
    pub fn get(&self, i: u32) -> Option<RawFd> {
        let fd = self
            .fds
            .get(usize::try_from(i).ok()?)?
            .load(Ordering::Acquire);
        (fd >= 0).then_some(fd)
    }
}

/// The detached mounts of one spawn, from [`RootfsPlan::prepare`](super::RootfsPlan::prepare):
/// keep it alive until the child has applied the plan (until its `execve(2)`), and keep its
/// [`fds`](Self::fds) open in the child. Dropping it closes the parent's descriptors and lets the
/// next spawn of the same plan prepare its own.
#[derive(Debug)]
pub struct PreparedMounts<'a> {
    fds: Vec<OwnedFd>,
    slots: Option<(&'a Slots, MutexGuard<'a, ()>)>,
}

impl PreparedMounts<'_> {
    /// The descriptors the child must keep (close-on-exec: they go with its `execve(2)`).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.fds.iter().map(AsRawFd::as_raw_fd)
    }
}

impl Drop for PreparedMounts<'_> {
    fn drop(&mut self) {
        if let Some((slots, _guard)) = &self.slots {
            for slot in &slots.fds {
                slot.store(-1, Ordering::Release);
            }
        }
    }
}

/// Prepares each of `list` (see the [module](self) docs), its descriptor numbered `floor` or
/// above, and publishes the numbers in `slots`.
pub(super) fn prepare<'a>(
    list: &[Prepare],
    slots: &'a Slots,
    floor: RawFd,
) -> Result<PreparedMounts<'a>> {
    if list.is_empty() {
        return Ok(PreparedMounts {
            fds: Vec::new(),
            slots: None,
        });
    }
    // A poisoned lock only means another spawn panicked while holding it; the slots are
    // rewritten below.
    let guard = slots.lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut prepared = PreparedMounts {
        fds: Vec::with_capacity(list.len()),
        slots: Some((slots, guard)),
    };
    for (p, slot) in list.iter().zip(&slots.fds) {
        let fd = one(p, floor)?;
        slot.store(fd.as_raw_fd(), Ordering::Release);
        prepared.fds.push(fd);
    }
    Ok(prepared)
}

/// One detached, id-mapped copy.
fn one(p: &Prepare, floor: RawFd) -> Result<OwnedFd> {
    let path = || PathBuf::from(p.host.to_string_lossy().into_owned());
    let mount_err = |call, source| Error::Mount {
        call,
        path: Some(path()),
        source,
    };
    let mut flags = sys::OpenTreeFlags::CLONE | sys::OpenTreeFlags::CLOEXEC;
    if p.recursive {
        flags |= sys::OpenTreeFlags::RECURSIVE;
    }
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        p.host.as_c_str(),
        rustix::mount::OpenTreeFlags::from_bits_retain(flags.bits()),
    )
    .map_err(|e| mount_err("open_tree", e.into()))?;
    let userns = user_namespace(&p.uid_map, &p.gid_map)?;
    sys::mount_setattr_idmap(tree.as_fd(), p.recursive_idmap, userns.as_fd())
        .map_err(|e| mount_err("mount_setattr MOUNT_ATTR_IDMAP", e))?;
    // Above every descriptor number the child places, so that none overwrites it.
    rustix::io::fcntl_dupfd_cloexec(&tree, floor).map_err(|e| mount_err("fcntl F_DUPFD", e.into()))
}

/// A child of this process in a new user namespace, waiting on a pipe until it is killed;
/// killed and reaped when dropped.
struct Holder {
    pid: libc::pid_t,
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: kill(2) and waitpid(2) of our own child, which nothing else reaps (it was
        // cloned without a signal other than SIGCHLD and is waited for by its pid).
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            let mut status = 0;
            while libc::waitpid(self.pid, &mut status, libc::__WALL) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
            {}
        }
    }
}

/// A user namespace with `uid_map` and `gid_map`, as a descriptor of it (`/proc/PID/ns/user`).
fn user_namespace(uid_map: &str, gid_map: &str) -> Result<OwnedFd> {
    let io = |op, path: String| {
        move |source| Error::Io {
            op,
            path: PathBuf::from(path),
            source,
        }
    };
    let (wait_r, _wait_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io("create a pipe", String::new())(e.into()))?;
    let raw_wait = wait_r.as_raw_fd();
    // SAFETY: getpid(2) takes nothing.
    let parent = unsafe { libc::getpid() };
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack: the child runs on a copy of this
    // stack). The child calls only prctl(2), getppid(2), read(2) and _exit(2), all
    // async-signal-safe, so the locks other threads held at the clone do not matter to it. It
    // holds a copy of the pipe's write end too, so the read never ends by itself: the parent
    // kills it, or the kernel does when the parent dies first (`PR_SET_PDEATHSIG`), so that a
    // caller killed meanwhile leaves no process behind.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        let mut byte = 0u8;
        // SAFETY: see above; `byte` is a live local.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            libc::read(raw_wait, std::ptr::from_mut(&mut byte).cast(), 1);
            libc::_exit(0);
        }
    }
    if pid < 0 {
        return Err(io(
            "clone a process into a new user namespace",
            String::new(),
        )(std::io::Error::last_os_error()));
    }
    // The child's pid fits a pid_t (the kernel's own type).
    let holder = Holder {
        pid: pid as libc::pid_t,
    };
    for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{}/{file}", holder.pid);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("open", path.clone()))?;
        // One write(2): the kernel takes a map whole or not at all (`user_namespaces(7)`).
        let n = f.write(map.as_bytes()).map_err(io("write", path.clone()))?;
        if n != map.len() {
            return Err(io("write", path)(std::io::Error::from(
                std::io::ErrorKind::WriteZero,
            )));
        }
    }
    let path = format!("/proc/{}/ns/user", holder.pid);
    let ns = std::fs::File::open(&path).map_err(io("open", path))?;
    drop(holder);
    Ok(ns.into())
}
