use std::io;
use std::path::PathBuf;

use crate::Namespace;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `palisade-ns`. Each variant names the call or file that failed
/// and carries the OS error (`errno`) where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `clone3(2)` (or the `clone(2)` fallback) failed.
    #[error("{call} with flags {flags:#x} failed: {source}")]
    Clone {
        /// `"clone3"` or `"clone"`.
        call: &'static str,
        /// The raw clone flags that were passed.
        flags: u64,
        /// The OS error.
        source: io::Error,
    },
    /// A clone option needs `clone3(2)`, which this kernel lacks (`ENOSYS`).
    #[error("{option} needs clone3(2), which this kernel does not have")]
    NeedsClone3 {
        /// The option, e.g. `"CLONE_INTO_CGROUP"`.
        option: &'static str,
    },
    /// [`CloneArgs::share_memory`](crate::CloneArgs::share_memory) or
    /// [`vfork`](crate::CloneArgs::vfork) were asked of a clone with fork semantics.
    #[error("CLONE_VM and CLONE_VFORK need a child stack: use clone3_with_stack")]
    NeedsOwnStack,
    /// The stack given to [`clone3_with_stack`](crate::clone3_with_stack) is empty or its top
    /// is not 16-byte aligned.
    #[error("the child stack is empty or its top is not 16-byte aligned")]
    InvalidStack,
    /// [`clone3_with_stack`](crate::clone3_with_stack) is not implemented for this architecture.
    #[error("clone3 with a child stack is not implemented for this architecture")]
    Unsupported,
    /// `mmap(2)` of a child stack failed.
    #[error("cannot map a {size}-byte child stack: {source}")]
    Stack {
        /// The requested size.
        size: usize,
        /// The OS error.
        source: io::Error,
    },
    /// `unshare(2)` failed.
    #[error("unshare({namespaces}) failed: {source}")]
    Unshare {
        /// The kinds asked for.
        namespaces: Namespace,
        /// The OS error.
        source: io::Error,
    },
    /// `setns(2)` failed.
    #[error("setns({namespaces}) failed: {source}")]
    Setns {
        /// The kinds asked for (empty: any kind the file refers to).
        namespaces: Namespace,
        /// The OS error.
        source: io::Error,
    },
    /// A file could not be opened, read, written or inspected.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done: `"open"`, `"write"`, `"stat"`, ….
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A namespace file turned out to be of another kind than expected.
    #[error("{path} is a {found} namespace, expected {expected}")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// What the caller asked for.
        expected: Namespace,
        /// What the kernel says it is.
        found: Namespace,
    },
    /// A `pidfd_open(2)` or `waitid(2)` on a process failed.
    #[error("{call} on pid {pid} failed: {source}")]
    Process {
        /// The system call.
        call: &'static str,
        /// The process.
        pid: i32,
        /// The OS error.
        source: io::Error,
    },
    /// An id map line could not be parsed.
    #[error("invalid id map line {line:?}: {reason}")]
    ParseIdMap {
        /// The offending line.
        line: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An id map breaks a rule of `user_namespaces(7)`.
    #[error("invalid id map: {0}")]
    InvalidIdMap(String),
    /// A time namespace offset is out of range.
    #[error("invalid time offset: {0}")]
    InvalidOffset(String),
    /// A mount or unmount for namespace persistence failed.
    #[error("{op} {path}: {source}")]
    Mount {
        /// `"bind-mount namespace onto"` or `"unmount"`.
        op: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Clone { source, .. }
            | Error::Unshare { source, .. }
            | Error::Setns { source, .. }
            | Error::Io { source, .. }
            | Error::Process { source, .. }
            | Error::Stack { source, .. }
            | Error::Mount { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Turns a `-1` return into the current `errno` as an [`io::Error`].
pub(crate) fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
