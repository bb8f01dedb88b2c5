//! Control groups for Palisade sandboxes: how much a sandbox may use (`cgroups(7)`).
//!
//! A [`Cgroup`] is created with typed limits ([`Resource`], built from [`Bytes`], [`CpuMax`],
//! [`Weight`], [`CpuSet`], [`IoMax`], [`HugePageSize`], [`RdmaMax`], or parsed from cgroup v2
//! file names and values with [`Resource::parse_v2`]), which are validated before anything is
//! written. It reports typed [`Stats`], [`MemoryEvents`] (OOM kills) and [`Events`], can be
//! frozen, thawed and killed as a whole, and hands out an open directory descriptor for
//! `clone3(2)`'s `CLONE_INTO_CGROUP`, so that a child is born inside its group.
//!
//! ```no_run
//! use palisade_cgroup::{Bytes, Cgroup, Resource};
//!
//! let group = Cgroup::builder()
//!     .resource(Resource::memory_max(Bytes::mib(256)))
//!     .resource(Resource::cpus(1.5)?)
//!     .resource(Resource::pids_max(64))
//!     .create()?;
//! println!("{} on {}", group.name(), group.backend());
//! let stats = group.stats()?;
//! println!("memory: {:?}", stats.memory.map(|m| m.current));
//! group.delete()?; // also done on drop
//! # Ok::<(), palisade_cgroup::Error>(())
//! ```
//!
//! # Backends
//!
//! The crate reads `/proc/self/mountinfo` to find the host's layout ([`Backend`]):
//!
//! - **cgroup v2** (the unified hierarchy, the kernel's `Documentation/admin-guide/cgroup-v2.rst`):
//!   every controller is in one tree; limits are the v2 files (`memory.max`, `cpu.max`, …).
//! - **hybrid**: controllers are on v1 hierarchies (`/sys/fs/cgroup/memory`, …) and a cgroup2
//!   mount (usually `/sys/fs/cgroup/unified`) carries none or few. A group then gets a directory
//!   in the unified tree — for `cgroup.kill`, `cgroup.freeze`, `cgroup.events` and
//!   `CLONE_INTO_CGROUP` — and one in each v1 hierarchy whose controller it needs, where the same
//!   [`Resource`]s are written as their v1 equivalents (`memory.limit_in_bytes`,
//!   `cpu.cfs_quota_us`, `cpu.shares`, `blkio.throttle.*`, `blkio.bfq.weight`, `pids.max`,
//!   `cpuset.cpus`, `hugetlb.<size>.limit_in_bytes`, `rdma.max`). A controller no v1
//!   hierarchy carries may still be on the cgroup2 mount (hybrid hosts often have `hugetlb`
//!   there), and is used there.
//! - **cgroup v1**: as hybrid, with the v1 `freezer` for freezing and a kill loop instead of
//!   `cgroup.kill`.
//!
//! Each controller is used where the host serves it, and [`Cgroup::served`] tells which.
//!
//! ## Why v1 is written by hand
//!
//! The v1 fallback writes about a dozen files, whose formats `cgroups(7)` and the kernel's
//! `Documentation/admin-guide/cgroup-v1/` describe. The `cgroups-rs` crate covers them, but it
//! pulls in D-Bus (`zbus`) and an old `nix`, and models v1 and v2 as separate APIs. Writing the
//! files directly keeps one typed API over both, one error type with the failing path and
//! errno, and the dependency list at `libc`, `bitflags` and `thiserror`.
//!
//! # Placement and delegation
//!
//! A group is created beneath this process's own group (from `/proc/self/cgroup`), beneath a
//! path the caller names ([`CgroupBuilder::parent_path`]), or inside another group
//! ([`CgroupBuilder::inside`]). The library writes only into groups it created: it never moves
//! other processes, and never changes the `cgroup.subtree_control` of a group it did not
//! create. On cgroup v2 the parent must therefore already hand the needed controllers down;
//! when it does not, creation fails with [`Error::NotDelegated`], which names the file to
//! change. This is what makes the crate work under delegation (a non-root user owning a
//! subtree, e.g. a systemd unit with `Delegate=yes`): it stays inside what it was given.
//!
//! Groups are named `palisade-<pid>-<starttime>-<n>` unless named otherwise; the library never
//! adopts an existing directory. A group is deleted on drop — processes killed, child groups
//! removed depth-first — so nothing is left behind after an error or a panic that unwinds. An
//! owner killed by `SIGKILL` drops nothing: [`gc`] then finds its groups by the owner's pid and
//! start time in their names, and removes them.
//!
//! # Devices
//!
//! [`Resource::Devices`] limits which device nodes a group may open and create, with a
//! [`DevicePolicy`] such as Docker's default ([`DevicePolicy::docker_default`]). cgroup v1
//! enforces it with the `devices` controller, cgroup v2 with an eBPF program
//! (`BPF_PROG_TYPE_CGROUP_DEVICE`) that this crate generates from the policy and attaches to the
//! group.

mod bpf;
mod cgroup;
pub mod child;
mod devices;
mod devnum;
mod error;
mod gc;
mod hierarchy;
pub mod parse;
mod resource;
mod stats;
mod sys;
pub mod units;

pub use cgroup::{make_path, Cgroup, CgroupBuilder};
pub use devices::{DeviceAccess, DeviceKind, DevicePolicy, DeviceRule};
pub use devnum::{MAX_MAJOR, MAX_MINOR};
pub use error::{DeviceRuleError, Error, Result};
pub use gc::{gc, GcReport, Owner};
pub use hierarchy::{Backend, Hierarchy, Mount, Served};
pub use resource::{Controller, Resource, MIN_MEMORY_MAX};
pub use stats::{
    CpuStats, Events, IoDeviceStats, IoStats, MemoryEvents, MemoryStats, PidsStats, Stats,
};
pub use units::{Bytes, CpuMax, CpuSet, Device, HugePageSize, IoMax, Max, RdmaMax, Weight};
