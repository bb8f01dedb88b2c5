//! Linux namespaces, one kernel primitive done completely.
//!
//! A namespace wraps a global system resource so that the processes inside see their own isolated
//! instance of it (`namespaces(7)`). This crate wraps the system calls that create and join them
//! and the `/proc` files that describe and configure them:
//!
//! | module | kernel interface |
//! |---|---|
//! | [`Namespace`] | the eight `CLONE_NEW*` kinds as typed flags |
//! | [`clone3`], [`clone`] | `clone3(2)` with `CLONE_PIDFD` / `CLONE_INTO_CGROUP`, `clone(2)` fallback |
//! | [`clone3_with_stack`], [`ChildStack`] | `clone3(2)` running a function on its own stack, for `CLONE_VM` |
//! | [`unshare`], [`setns`] | `unshare(2)`, `setns(2)` by namespace file or by pidfd |
//! | [`NsFile`], [`NsId`] | `/proc/<pid>/ns/<kind>` handles and their (dev, inode) identity |
//! | [`IdMap`] | `user_namespaces(7)`: `uid_map`, `gid_map`, `setgroups` |
//! | [`persist`] | keeping a namespace alive by bind-mounting its nsfs file (`ip netns add`) |
//! | [`TimeOffsets`] | `time_namespaces(7)`: `/proc/<pid>/timens_offsets` |
//! | [`child`] | what a cloned child calls on its way to `execve(2)` that rustix lacks: `execve`, `execveat`, `close_range`, the signal mask, `exit_group`, placing descriptors |
//!
//! The crate has no global state and never shells out. Everything that must run in a freshly
//! cloned child before `execve(2)` is available as typed, errno-free, allocation-free calls on
//! prepared data (rustix, and [`child`]), so callers stay async-signal-safe after the clone.
//!
//! ```no_run
//! use palisade_ns::{clone3, CloneArgs, Forked, Namespace};
//!
//! let args = CloneArgs::new(Namespace::UTS | Namespace::IPC);
//! // SAFETY: the child only calls async-signal-safe functions before `_exit`.
//! match unsafe { clone3(&args) }? {
//!     Forked::Child => unsafe { libc::_exit(0) },
//!     Forked::Parent(child) => {
//!         let status = child.wait()?;
//!         assert!(libc::WIFEXITED(status));
//!     }
//! }
//! # Ok::<(), palisade_ns::Error>(())
//! ```

pub mod child;
mod clone;
mod error;
mod handle;
mod idmap;
mod kind;
mod ops;
mod persist;
mod stack;
mod time;

pub use clone::{
    clone, clone3, clone3_with_stack, ChildEntry, CloneArgs, ClonedChild, Forked, CLONE3_WITH_STACK,
};
pub use error::{Error, Result};
pub use handle::{pidfd_exited, pidfd_open, NsFile, NsId};
pub use idmap::{write_gid_map, write_setgroups, write_uid_map, IdMap, IdMapping, SetGroups};
pub use kind::Namespace;
pub use ops::{setns, unshare};
pub use persist::{persist, PersistedNs};
pub use stack::ChildStack;
pub use time::{write_timens_offsets, Offset, TimeOffsets};
