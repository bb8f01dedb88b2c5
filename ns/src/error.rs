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
    /// `clone3(2)` (or the `clone(2)` fallback) failed. Displays the namespaces it was to
    /// create by name, and for `EPERM` what creating them takes.
    #[error(
        "{call} of a child in {} failed: {source}{}",
        describe_new_namespaces(*flags),
        clone_advice(*flags, source)
    )]
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

/// The kinds in the order `docker run` lists what it isolates, with the names `clone(2)` gives
/// them (`CLONE_NEWNS` is the mount namespace).
const NAMED_KINDS: [(Namespace, &str); 8] = [
    (Namespace::MOUNT, "mount"),
    (Namespace::UTS, "uts"),
    (Namespace::IPC, "ipc"),
    (Namespace::PID, "pid"),
    (Namespace::NET, "net"),
    (Namespace::CGROUP, "cgroup"),
    (Namespace::USER, "user"),
    (Namespace::TIME, "time"),
];

/// The namespace kinds among raw clone `flags`, by name: `"mount, pid, net"`.
fn namespace_names(namespaces: Namespace) -> String {
    NAMED_KINDS
        .iter()
        .filter(|(kind, _)| namespaces.contains(*kind))
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"new mount, pid namespaces"`, or `"its parent's namespaces"` when the flags ask for none.
fn describe_new_namespaces(flags: u64) -> String {
    let namespaces = namespaces_of(flags);
    if namespaces.is_empty() {
        "its parent's namespaces".to_owned()
    } else {
        format!("new {} namespaces", namespace_names(namespaces))
    }
}

/// The namespace kinds among raw clone flags, which hold other bits too (and with `clone(2)`
/// the exit signal, a number below 128, which leaves `CLONE_NEWTIME`'s bit clear).
fn namespaces_of(flags: u64) -> Namespace {
    Namespace::from_bits_truncate(flags)
}

/// What `EPERM` from a clone that creates namespaces means (`clone(2)`, `user_namespaces(7)`).
fn clone_advice(flags: u64, source: &io::Error) -> &'static str {
    let namespaces = namespaces_of(flags);
    if source.raw_os_error() != Some(libc::EPERM) || namespaces.is_empty() {
        return "";
    }
    if namespaces.contains(Namespace::USER) {
        "; the kernel refused an unprivileged user namespace: check the sysctls \
         user.max_user_namespaces, kernel.unprivileged_userns_clone and \
         kernel.apparmor_restrict_unprivileged_userns"
    } else {
        "; creating namespaces needs CAP_SYS_ADMIN, unless the same call also creates a user \
         namespace, in which the child holds it (user_namespaces(7))"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn clone_error(namespaces: Namespace, errno: i32) -> String {
        Error::Clone {
            call: "clone3",
            flags: namespaces.bits() | 0x1000, // CLONE_PIDFD: not a namespace, not named
            source: io::Error::from_raw_os_error(errno),
        }
        .to_string()
    }

    #[test]
    fn clone_errors_name_the_namespaces_and_what_they_need() {
        let docker = Namespace::MOUNT
            | Namespace::UTS
            | Namespace::IPC
            | Namespace::PID
            | Namespace::NET
            | Namespace::CGROUP;
        let text = clone_error(docker, libc::EPERM);
        assert!(
            text.starts_with(
                "clone3 of a child in new mount, uts, ipc, pid, net, cgroup namespaces failed: "
            ),
            "{text}"
        );
        assert!(text.contains("CAP_SYS_ADMIN"), "{text}");
        assert!(!text.contains("0x"), "{text}");

        let text = clone_error(docker | Namespace::USER, libc::EPERM);
        assert!(text.contains("unprivileged_userns_clone"), "{text}");

        // Other errors carry no advice they do not need.
        let text = clone_error(Namespace::PID, libc::ENOMEM);
        assert!(text.ends_with("(os error 12)"), "{text}");
        let text = clone_error(Namespace::empty(), libc::EPERM);
        assert!(text.contains("in its parent's namespaces"), "{text}");
        assert!(!text.contains("CAP_SYS_ADMIN"), "{text}");
    }
}
