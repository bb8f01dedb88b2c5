//! Palisade: start sandboxed processes on Linux with a builder shaped like
//! [`std::process::Command`].
//!
//! A sandbox is a process with kernel-enforced boundaries. This crate composes Palisade's
//! primitive crates — re-exported as [`ns`], [`cgroup`], [`overlay`], [`image`], [`netns`] and [`seccomp`] —
//! into one spawn: everything is prepared before the clone, and the child only makes system calls
//! until it executes the program.
//!
//! ```no_run
//! use palisade::{Sandbox, Stdio};
//!
//! let mut child = Sandbox::builder("sh")
//!     .args(["-c", "hostname; echo $$"])
//!     .hostname("box")
//!     .stdout(Stdio::piped())
//!     .spawn()?;
//! let out = child.wait_with_output()?;
//! assert_eq!(out.stdout, b"box\n2\n"); // PID 2: the sandbox's init is PID 1
//! assert!(out.status.success());
//! # Ok::<(), palisade::Error>(())
//! ```
//!
//! # The spawn, step by step
//!
//! 1. [`SandboxBuilder::build`] turns the configuration into a prepared [`Sandbox`]: argv and
//!    envp as C arrays, the `PATH` candidates for the program, id maps, signal sets.
//! 2. [`Sandbox::spawn`] creates the pipes and a stack, and clones the child into its namespaces
//!    with `clone3(2)` (`CLONE_PIDFD`, `CLONE_CLEAR_SIGHAND`, and `CLONE_VM` so that no page
//!    tables are copied: the cost does not grow with the caller's resident memory).
//!    With limits ([`SandboxBuilder::memory_max`], [`cpus`](SandboxBuilder::cpus), …) a cgroup
//!    is created first and the child is born in it (`CLONE_INTO_CGROUP`).
//! 3. With a user namespace, the parent writes `uid_map`, `setgroups` and `gid_map` while the child
//!    waits on a pipe, then releases it (`user_namespaces(7)`). On hybrid and v1 hosts the parent
//!    also writes the child's pid into the v1 controllers' `cgroup.procs` meanwhile; the child
//!    then creates its cgroup namespace, rooted at its group (`cgroup_namespaces(7)`).
//! 4. The child, making typed, errno-free system calls only (rustix, and the child-side modules
//!    of the crates that own each primitive; no allocation, no `errno`), first closes every
//!    descriptor of the caller's but those it was named, then becomes root of its user
//!    namespace, creates its time namespace, sets the hostname, sets up its root file system
//!    ([`SandboxBuilder::rootfs`]: by default the host's system under a throwaway overlay layer,
//!    then `pivot_root(2)`, its own `/proc`, `/dev`, `/sys` and `/tmp`, masked kernel paths,
//!    volumes; every path resolved inside the new root) or, with
//!    [`SandboxBuilder::host_mounts`], makes its mounts `rslave` and mounts a fresh `/proc`; then
//!    it installs stdio and the passed descriptors, changes directory, and executes the program,
//!    or becomes the init: it starts the command, drops to the command's privileges and executes
//!    the init program from a sealed memfd, after which the command goes on (see
//!    `spawn::init`). Once `spawn` returns nothing in the sandbox shares the caller's memory.
//! 5. Last, right before `execve(2)`, the command's privileges are set ([`security`]): resource
//!    limits, the capability bounding set, user and groups, the remaining capability sets,
//!    `no_new_privs` and the seccomp filter, in the order the kernel requires. By default that
//!    is root with Docker's default capabilities, `no_new_privs` and the default seccomp profile.
//! 6. Any failure in the child is sent back as a step and an errno, and `spawn` returns it as
//!    [`Error::Child`].
//!
//! # A sandbox and its command
//!
//! A [`Sandbox`] is the environment and the command together, prepared once and spawned any
//! number of times, as `std::process::Command` is spawned again. hakoniwa and std itself keep a
//! `Container`/`Command` split instead; this crate does not, for now, because everything a spawn
//! prepares is prepared for its one command (the exec's C arrays, the filter compiled for its
//! capabilities, the init image), and a split would move that work into every spawn. Running a
//! further command in a sandbox that already runs (the OCI runtime's `exec`) joins that
//! sandbox's namespaces and cgroup with a command of its own; that is its own entry point
//! ([`Child::exec`], or [`Handle::exec`] from any process), built from the running sandbox's
//! handle rather than from a template. A pool of
//! prepared sandboxes is a pool of [`Sandbox`] values.
//!
//! # Named, detached and created sandboxes
//!
//! A sandbox given a [name](SandboxBuilder::name) is recorded under a state root, so that any
//! process can [open](Sandbox::open) it, [list](Sandbox::list) it, run commands in it, signal,
//! wait for and delete it; [detached](SandboxBuilder::detach), it outlives the process that made
//! it; [created](Sandbox::create), it waits before its command's `execve(2)` until
//! [started](Handle::start), as the OCI runtime's `create` and `start`. See [`state`].
//!
//! # Signals
//!
//! [`Signal`] is `nix`'s enum, and `nix` (its `signal` feature only) stays in the public API for
//! it alone: it is the signal type Rust process code already uses, exhaustive, with names to
//! print and parse. No system call goes through `nix`.

mod builder;
mod derive;
mod entry;
mod error;
mod gc;
mod process;
pub mod security;
mod spawn;
pub mod state;
mod status;
mod stdio;
pub mod terminal;
#[cfg(feature = "tokio")]
pub mod tokio;

pub use builder::{Sandbox, SandboxBuilder};
pub use error::{ChildStep, Context, Error, Result};
pub use gc::{gc, GcReport};
pub use nix::sys::signal::Signal;
pub use palisade_ns::{IdMap, IdMapping, Namespace, Offset, TimeOffsets};
// The leaf crates' types that the builder's methods take, at the root so that the docs show
// them beside the builder.
#[cfg(feature = "tokio")]
pub use crate::tokio::AsyncChild;
pub use palisade_cgroup::Bytes;
pub use palisade_image::{Image, LayerStore};
pub use palisade_netns::{Network, PortMap, Proto};
pub use palisade_overlay::rootfs::{Access, Rootfs};
pub use palisade_seccomp::Profile;
pub use process::{Child, Output};
pub use security::{parse_capability, Capabilities, Capability, Rlimit, RlimitResource};
pub use spawn::enter::Exec;
pub use state::{Handle, State, Status};
pub use status::ExitStatus;
pub use status::ExitStatusError;
pub use stdio::Stdio;
pub use terminal::{Pty, TerminalSize};

/// Namespaces: `clone3`, `unshare`, `setns`, id maps, persistence ([`palisade_ns`]).
pub use palisade_ns as ns;

/// cgroups ([`palisade_cgroup`]).
pub use palisade_cgroup as cgroup;

/// Root filesystems ([`palisade_overlay`]).
pub use palisade_overlay as overlay;

/// OCI images: layouts, registry pulls and the layer store ([`palisade_image`]).
pub use palisade_image as image;

/// Networking ([`palisade_netns`]).
pub use palisade_netns as netns;

/// Syscall filters ([`palisade_seccomp`]).
pub use palisade_seccomp as seccomp;

/// The README's library example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
