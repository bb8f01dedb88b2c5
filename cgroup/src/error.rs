use std::io;
use std::path::PathBuf;

use crate::devnum::{MAX_MAJOR, MAX_MINOR};
use crate::{Backend, Controller};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `palisade-cgroup`. File errors name the file and carry the OS
/// error (`errno`); value errors name the value and why it was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value was refused before anything was written (a zero CPU period, a weight out of range,
    /// an unparsable size, …).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What the value is for, e.g. `"cpu quota"`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Reading, writing, creating or removing a cgroup file or directory failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was attempted: `"read"`, `"write"`, `"create"`, `"remove"`, `"open"`.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing a value into a cgroup file was refused by the kernel.
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The OS error.
        source: io::Error,
    },
    /// A cgroup file did not have the format `cgroups(7)` documents.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// No cgroup hierarchy is mounted that carries this controller.
    #[error("the {controller} controller is not available on this host ({backend} cgroups)")]
    ControllerUnavailable {
        /// The missing controller.
        controller: Controller,
        /// The host's cgroup layout.
        backend: Backend,
    },
    /// The controller exists, but the parent group does not hand it down to its children: it is
    /// missing from the parent's `cgroup.subtree_control`. Whoever owns the parent (the system
    /// manager, or the delegating user) must enable it there; this library never writes into
    /// groups it did not create.
    #[error(
        "the {controller} controller is not enabled in {}/cgroup.subtree_control; enable it there \
         (e.g. `echo +{controller} > {}/cgroup.subtree_control`) or choose another parent",
        parent.display(), parent.display()
    )]
    NotDelegated {
        /// The controller.
        controller: Controller,
        /// The parent group's directory.
        parent: PathBuf,
    },
    /// The setting has no file on this backend (`memory.high` on cgroup v1, `io.weight` without
    /// a proportional I/O scheduler, `memory.swap.max` without swap accounting, …).
    #[error("{setting} is not supported here: {path} does not exist")]
    Unsupported {
        /// The setting, named as in cgroup v2.
        setting: &'static str,
        /// The file that would carry it.
        path: PathBuf,
    },
    /// A cgroup v2 file name that is no setting this crate applies
    /// ([`Resource::parse_v2`](crate::Resource::parse_v2)).
    #[error("{file:?} is not a cgroup v2 setting palisade-cgroup applies: {reason}")]
    UnknownSetting {
        /// The file name as given.
        file: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The caller's own cgroup could not be found in `/proc/self/cgroup`.
    #[error(
        "cannot find this process's cgroup for the {hierarchy} hierarchy in /proc/self/cgroup"
    )]
    NoOwnCgroup {
        /// `"unified"` or the v1 controller.
        hierarchy: String,
    },
    /// The group's processes did not reach the expected state in time (freezing, or exiting
    /// after a kill).
    #[error("timed out waiting for {path} to become {state}")]
    Timeout {
        /// The group directory.
        path: PathBuf,
        /// The awaited state: `"frozen"`, `"empty"`.
        state: &'static str,
    },
    /// A group was to be created inside a parent group that has no directory in one of the
    /// hierarchies the new group needs.
    #[error("parent group {parent:?} has no directory in the hierarchy at {}", hierarchy.display())]
    NotInParent {
        /// The hierarchy's mount point.
        hierarchy: PathBuf,
        /// The parent group's name.
        parent: String,
    },
    /// A `bpf(2)` call for the cgroup v2 device program failed.
    #[error(
        "cannot {op}{}: {source}{}",
        path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default(),
        if log.is_empty() { String::new() } else { format!("; verifier log:\n{log}") }
    )]
    Bpf {
        /// What was attempted.
        op: &'static str,
        /// The group directory, for attaching and detaching.
        path: Option<PathBuf>,
        /// The OS error.
        source: io::Error,
        /// The verifier's log, when it refused the program.
        log: String,
    },
    /// A device rule's text could not be parsed.
    #[error(transparent)]
    DeviceRule(#[from] DeviceRuleError),
    /// A memory limit below what a group needs to start a process at all.
    #[error(
        "{setting} of {value} bytes is below the minimum of {min} bytes (Docker's 6 MiB: below \
         it a group cannot reliably start a process at all); give at least {min} bytes"
    )]
    MemoryTooSmall {
        /// The setting, `memory.max`.
        setting: &'static str,
        /// The limit as given, in bytes.
        value: u64,
        /// The minimum, in bytes.
        min: u64,
    },
    /// A CPU bandwidth limit of more CPUs' worth of time than the host has CPUs online: the
    /// group could never use it up, so the limit would limit nothing
    /// ([`Resource::validate_on_host`](crate::Resource::validate_on_host)).
    #[error(
        "cpus {cpus} is more than the {online} CPU(s) online on this host \
         (/sys/devices/system/cpu/online), so it would limit nothing: give at most {online}"
    )]
    CpusAboveHost {
        /// The limit as given, in CPUs.
        cpus: f64,
        /// How many CPUs are online.
        online: u32,
    },
    /// A group name that is empty, absolute, or contains `..` or a NUL byte.
    #[error("invalid cgroup name {0:?}: must be one path component, not `.`, `..` or `cgroup.*`")]
    InvalidName(String),
    /// A group path (as `/proc/<pid>/cgroup` writes it) that is not absolute, or has a component
    /// that is no group name (`.`, `..`, empty, `cgroup.*`): it could lead out of the cgroup
    /// file system.
    #[error("invalid cgroup path {0:?}: must be absolute, each component a group name (not `.`, `..` or `cgroup.*`)")]
    InvalidPath(String),
}

impl Error {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Write { source, .. } | Error::Bpf { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: impl ToString, reason: &'static str) -> Error {
        Error::InvalidValue {
            what,
            value: value.to_string(),
            reason,
        }
    }
}

/// Why a device rule's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceRuleError {
    /// Not `[allow|deny] <type> <major>:<minor> <access>`.
    #[error("invalid device rule {rule:?}: expected `<a|c|b> <major>:<minor> <access>`")]
    Format {
        /// The rule as given.
        rule: String,
    },
    /// The type is not `a`, `c` or `b`.
    #[error("invalid device rule {rule:?}: type {kind:?} is not a, c or b")]
    Kind {
        /// The rule as given.
        rule: String,
        /// The type as given.
        kind: String,
    },
    /// A major or minor number that is neither a number in range nor `*`.
    #[error(
        "invalid device rule {rule:?}: {value:?} is not `*` or a number up to {MAX_MAJOR} (major) \
         or {MAX_MINOR} (minor)"
    )]
    Number {
        /// The rule as given.
        rule: String,
        /// The number as given.
        value: String,
    },
    /// The access is empty or has letters other than `r`, `w` and `m`, or one twice.
    #[error("invalid device rule {rule:?}: access {access:?} is not a non-empty subset of rwm")]
    Access {
        /// The rule as given.
        rule: String,
        /// The access as given.
        access: String,
    },
}
