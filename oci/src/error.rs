//! The runtime's errors.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime.
///
/// Each message names what it is about (a file, or a field of `config.json` by its JSON path,
/// such as `linux.resources.blockIO`), as runc's do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sandbox operation failed.
    #[error(transparent)]
    Palisade(#[from] palisade::Error),
    /// A bundle's file could not be read: `config.json` missing or unreadable, or the root
    /// file system directory (`root.path`) missing.
    #[error("bundle: {path}: {source}")]
    Bundle {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `config.json` is not a valid runtime configuration: malformed JSON, a value of the wrong
    /// type or unknown to the specification, or a value out of range.
    #[error("{path}: {message}")]
    Config {
        /// The `config.json` file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A valid setting that Palisade cannot apply (here, or at all).
    #[error("{field}: unsupported value {value}: {reason}")]
    Unsupported {
        /// The field, as a JSON path: `linux.resources.blockIO`, `mounts[3].options`.
        field: String,
        /// The value, as given (or summarised).
        value: String,
        /// Why it cannot be applied.
        reason: &'static str,
    },
}
