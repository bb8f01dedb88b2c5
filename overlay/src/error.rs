use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `palisade-overlay`. System-call errors name the call and the
/// path it acted on and carry the OS error (`errno`); layer errors name the layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value was refused before anything was done.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What the value is for, e.g. `"lower layer"`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A file-system operation on a path failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted: `"read"`, `"create"`, `"open"`, …
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    // --- mount errors (mount/) ---
    /// A mount system call failed (`fsopen(2)`, `fsconfig(2)`, `fsmount(2)`, `move_mount(2)`,
    /// `mount(2)`, `umount2(2)`, …).
    #[error("{call} {}: {source}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_default())]
    Mount {
        /// The system call, with the option it set where that matters (`"fsconfig lowerdir+"`).
        call: &'static str,
        /// The path it acted on, if any.
        path: Option<PathBuf>,
        /// The OS error.
        source: io::Error,
    },
    /// One layer of an overlay was refused (missing, not a directory, or rejected by the
    /// kernel when it was added).
    #[error("overlay {role} layer {index} ({}): {source}", path.display())]
    Layer {
        /// `"lower"`, `"upper"` or `"work"`.
        role: &'static str,
        /// The layer's position (lower layers: 0 is the top one).
        index: usize,
        /// The layer's directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel refused to create a file system from a configured fs-context
    /// (`fsconfig(2)` `FSCONFIG_CMD_CREATE`) or to set an option on it. `log` holds the
    /// context's messages (`"e overlay: ..."`, see `fsopen(2)`); some overlayfs checks only
    /// report to the kernel log (`dmesg`), in which case `log` is empty.
    #[error(
        "{call} ({fstype}): {source}{}",
        if .log.is_empty() { String::new() } else { format!(" [{}]", .log.join("; ")) }
    )]
    FsContext {
        /// The file-system type, e.g. `"overlay"`.
        fstype: &'static str,
        /// The call and option, e.g. `"fsconfig FSCONFIG_CMD_CREATE"` or `"fsconfig index"`.
        call: &'static str,
        /// The OS error.
        source: io::Error,
        /// The fs-context's log messages, oldest first.
        log: Vec<String>,
    },
    /// The overlay's layers do not fit the interface the kernel offers: the `mount(2)` option
    /// string is at most one page, an `fsconfig(2)` string value at most 255 bytes (a single
    /// `lowerdir` string is all kernels before 6.8 take, they lack `lowerdir+`).
    #[error(
        "too many overlay layers for {interface}: {layers} lower layers need {needed} bytes, \
         the limit is {limit}"
    )]
    TooManyLayers {
        /// The interface: `"mount(2) options"` or `"fsconfig(2) lowerdir"`.
        interface: &'static str,
        /// How many lower layers were given.
        layers: usize,
        /// The bytes the option string needs (with its terminating NUL).
        needed: usize,
        /// The most bytes the interface takes.
        limit: usize,
    },
}

impl Error {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. }
            | Error::Mount { source, .. }
            | Error::Layer { source, .. } => source.raw_os_error(),
            Error::FsContext { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
