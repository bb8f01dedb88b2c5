//! The crate's error type.

use std::path::PathBuf;

use crate::arch::Arch;

/// Everything that can go wrong while building, compiling, loading or supervising a filter. Each
/// variant carries the value that was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A syscall name that the architecture's table does not know.
    #[error("unknown syscall `{name}` on {arch}")]
    UnknownSyscall {
        /// The name as given.
        name: String,
        /// The architecture it was resolved for.
        arch: Arch,
    },
    /// An argument index outside `0..=5` (`seccomp_data.args` has six slots).
    #[error("syscall argument index {index} is out of range (0..=5)")]
    BadArgIndex {
        /// The index as given.
        index: u64,
    },
    /// The compiled program exceeds `BPF_MAXINSNS`, which the kernel refuses to load.
    #[error("BPF program has {len} instructions, more than the kernel's limit of {max}")]
    ProgramTooLong {
        /// Number of instructions emitted.
        len: usize,
        /// The limit (`BPF_MAXINSNS`).
        max: usize,
    },
    /// The interpreter met an instruction it cannot execute, or ran off the program.
    #[error("invalid BPF program at instruction {pc}: {reason}")]
    InvalidBpf {
        /// Index of the offending instruction.
        pc: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// The operation, e.g. `seccomp(SECCOMP_SET_MODE_FILTER)`.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A profile file could not be read.
    #[error("reading seccomp profile {path}: {source}")]
    ReadProfile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A profile is not valid JSON or does not have the expected shape.
    #[error("seccomp profile JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A profile names an action this crate does not know.
    #[error("unknown seccomp action `{action}` in {field}")]
    UnknownAction {
        /// Where in the profile, e.g. `syscalls[3].action`.
        field: String,
        /// The action as written.
        action: String,
    },
    /// A profile names a comparison operator this crate does not know.
    #[error("unknown comparison operator `{op}` in {field}")]
    UnknownOp {
        /// Where in the profile.
        field: String,
        /// The operator as written.
        op: String,
    },
    /// A profile names an architecture this crate does not know.
    #[error("unknown architecture `{arch}` in {field}")]
    UnknownArch {
        /// Where in the profile.
        field: String,
        /// The architecture as written.
        arch: String,
    },
    /// A profile has an argument index outside `0..=5`.
    #[error("argument index {index} out of range (0..=5) in {field}")]
    BadProfileArgIndex {
        /// Where in the profile.
        field: String,
        /// The index as written.
        index: u64,
    },
    /// A profile field has a value this crate cannot use.
    #[error("invalid value `{value}` in {field}")]
    BadProfileValue {
        /// Where in the profile.
        field: String,
        /// The value as written.
        value: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error of the last failed libc call, attributed to `op`. Reads `errno`, so it is for
    /// ordinary code only, never for a child sharing its parent's memory; see [`Error::sys`].
    pub(crate) fn last_os(op: &'static str) -> Error {
        Error::Sys {
            op,
            source: std::io::Error::last_os_error(),
        }
    }

    /// The kernel's errno behind the error, if a system call or file operation failed (as
    /// every crate's error offers it); `None` for errors of the profile or its rules.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. } | Error::ReadProfile { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// [`Error::Sys`] for the kernel's error `errno`, attributed to `op`. `std::io::Error`
    /// holds an OS error inline, so this does not allocate and is usable in a child between
    /// `clone` and `execve`.
    pub(crate) fn sys(op: &'static str, errno: rustix::io::Errno) -> Error {
        Error::Sys {
            op,
            source: std::io::Error::from_raw_os_error(errno.raw_os_error()),
        }
    }
}
