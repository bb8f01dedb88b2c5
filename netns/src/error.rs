use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `palisade-netns`. Netlink errors name the request and the
/// object (link, address, route) and carry the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value was refused before anything was done (a name too long, a bad prefix length, …).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What the value is for, e.g. `"link name"`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file or namespace operation failed.
    #[error("cannot {op} {target}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// What it acted on (a path, a namespace).
        target: String,
        /// The OS error.
        source: io::Error,
    },
    // --- netlink errors (link/) ---
    // --- address allocation errors (ipam/) ---
}

impl Error {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
