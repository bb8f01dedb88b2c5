//! The child side of joining a group: what a freshly cloned, single-threaded process does for
//! itself before it executes anything.
//!
//! # Child safety
//!
//! One `write(2)` per call through rustix's `linux_raw` backend: no allocation, no lock, no
//! `errno`, no panic. The descriptors are opened by the parent before the clone
//! ([`Cgroup::v1_task_files`](crate::Cgroup::v1_task_files)).

use std::os::fd::BorrowedFd;

/// Moves the calling thread into the cgroup v1 group whose `tasks` file `tasks` is open for
/// writing.
///
/// Writing `0` names the writer itself (`cgroups(7)`). A thread that moves itself through
/// `tasks` is spared the global lock that moving a whole process through `cgroup.procs` takes
/// (the kernel's `cgroup_threadgroup_rwsem`, whose write side waits for an RCU grace period:
/// milliseconds on a busy host). For a single-threaded process, moving its one thread moves
/// the process. The kernel checks the permission against the credentials of whoever opened the
/// file, so a child already in a user namespace of its own still can.
pub fn enter_v1(tasks: BorrowedFd<'_>) -> rustix::io::Result<()> {
    rustix::io::write(tasks, b"0").map(|_| ())
}
