use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `palisade-image`. System-call errors name the call and the
/// path it acted on and carry the OS error (`errno`); layer errors name the layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value was refused before anything was done.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What the value is for, e.g. `"opaque xattr namespace"`.
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
    /// A digest was refused. Only `sha256:` followed by 64 lowercase hexadecimal digits is
    /// accepted (OCI image-spec, "Digests"): a digest names files in the layout and the store.
    #[error("invalid digest {value:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Content read from an image does not hash to the digest its descriptor (or, for a
    /// layer's uncompressed stream, the config's `rootfs.diff_ids`) names.
    #[error("{what} {expected}: content has digest {actual}")]
    DigestMismatch {
        /// What was read: `"manifest"`, `"config"`, `"layer"`, `"layer diff_id"`, …
        what: &'static str,
        /// The digest the image names.
        expected: crate::Digest,
        /// The digest of what was read.
        actual: crate::Digest,
    },
    /// A blob's length differs from the `size` of its descriptor (OCI image-spec, "Content
    /// Descriptors").
    #[error("{what} {digest}: descriptor says {expected} bytes, blob has {actual}")]
    SizeMismatch {
        /// What was read: `"manifest"`, `"config"`, `"layer"`, …
        what: &'static str,
        /// The blob's digest.
        digest: crate::Digest,
        /// The size in the descriptor.
        expected: u64,
        /// The blob's size (or a lower bound, when it was too large to read).
        actual: u64,
    },
    /// An OCI image layout is malformed: a missing or wrong `oci-layout`, an `index.json`,
    /// manifest or config that does not parse or lacks a required field, a missing blob.
    #[error("invalid OCI image layout {}: {reason}", path.display())]
    InvalidImage {
        /// The layout directory, or the file in it that was refused.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No manifest of the layout's `index.json` carries the tag (annotation
    /// `org.opencontainers.image.ref.name`).
    #[error("no image tagged {tag:?} in {} (tags: {available:?})", path.display())]
    TagNotFound {
        /// The layout directory.
        path: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags the layout has.
        available: Vec<String>,
    },
    /// No tag was given and the layout's `index.json` lists more than one image.
    #[error("{} holds {count} images: give a tag to choose one", path.display())]
    AmbiguousImage {
        /// The layout directory.
        path: PathBuf,
        /// How many manifests `index.json` lists.
        count: usize,
    },
    /// An image index (manifest list) has no manifest for this machine's platform.
    #[error("image index {index} has no manifest for {os}/{architecture}")]
    NoMatchingPlatform {
        /// The index: its digest, or `index.json`.
        index: String,
        /// The operating system looked for (`linux`).
        os: &'static str,
        /// The architecture looked for, in OCI/Go spelling (`amd64`, `arm64`, …).
        architecture: &'static str,
    },
    /// A descriptor's media type is not one this crate can read.
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        /// What the descriptor is for: `"layer"`, `"manifest"`, …
        what: &'static str,
        /// The media type as given.
        media_type: String,
    },
    /// A layer entry was refused because extracting it could write outside the layer or
    /// through a symbolic link: `..` components, absolute paths, a hard link to outside the
    /// layer, a path whose parent is a symbolic link.
    #[error("layer {layer}: refused entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The layer (its compressed blob digest).
        layer: crate::Digest,
        /// The entry's path as given in the archive (lossily converted to UTF-8).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A layer's archive could not be read: bad compression, a malformed tar stream.
    #[error("layer {layer}: cannot read the archive: {source}")]
    LayerArchive {
        /// The layer (its compressed blob digest).
        layer: crate::Digest,
        /// The error from the decompressor or the tar reader.
        source: io::Error,
    },
    /// Unpacking an image would make its layers larger than the bound of the
    /// [`LayerStore`](crate::LayerStore)
    /// ([`StoreOptions::max_expanded_size`](crate::StoreOptions::max_expanded_size)): a
    /// small compressed layer may describe far more data (long runs of zeros, a sparse file with
    /// a huge logical size) and fill the disk. Nothing of the layer is left in the store.
    #[error(
        "layer {layer}: the image expands to at least {size} bytes, more than the store's \
         bound of {limit} bytes"
    )]
    ExpandedSizeExceeded {
        /// The layer (its compressed blob digest) whose unpacking crossed the bound.
        layer: crate::Digest,
        /// The expanded size of the image's layers up to and including the entry that crossed
        /// the bound (a lower bound of the whole).
        size: u64,
        /// The bound, in bytes.
        limit: u64,
    },
    /// Creating an entry of a layer in the store failed.
    #[error("layer {layer}: cannot {op} {path:?}: {source}")]
    Extract {
        /// The layer (its compressed blob digest).
        layer: crate::Digest,
        /// The entry's path inside the layer.
        path: String,
        /// What was attempted: `"mknod"`, `"create"`, `"set xattr on"`, …
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    // --- registry pulls (registry/) ---
    // --- the store's image records, verification and recovery (store) ---
    // --- docker-archive and oci-archive imports (archive.rs) ---
    // --- files and users of an image's root (users.rs) ---
}

impl Error {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. }
            | Error::LayerArchive { source, .. }
            | Error::Extract { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
