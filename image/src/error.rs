use std::io;
use std::path::{Path, PathBuf};

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
    /// An image reference was refused: it does not follow the grammar of
    /// [`Reference`](crate::registry::Reference).
    #[error("invalid image reference {value:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A request to a registry failed before an answer was read whole: the connection was
    /// refused, dropped or timed out, TLS failed, the host is unknown.
    #[error("registry request {url}: {source}")]
    RegistryTransport {
        /// The URL asked for (it never holds credentials).
        url: String,
        /// What went wrong; an OS error where there is one.
        source: io::Error,
    },
    /// A registry answered with an HTTP status other than the one expected (distribution
    /// spec, "Error Codes": the registry's own error code and message follow the status).
    #[error("registry request {url}: HTTP {status}: {message}")]
    RegistryStatus {
        /// The URL asked for.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's error codes and messages, when it gave any.
        message: String,
    },
    /// A registry (or its token server) refused the credentials, or demanded some when none
    /// were available.
    #[error("registry {registry}: not authorized: {reason}")]
    RegistryAuth {
        /// The registry (`host[:port]`).
        registry: String,
        /// What was refused. Credentials are never part of it.
        reason: String,
    },
    /// What a registry sent cannot be used: a manifest, index or token answer that does not
    /// parse, lacks a field, is larger than the bound, or has an unexpected media type.
    #[error("{what} from {url}: {reason}")]
    InvalidRegistryResponse {
        /// What was read: `"manifest"`, `"token answer"`, …
        what: &'static str,
        /// The URL it came from.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An image index (manifest list) of a registry has no manifest for the platform asked
    /// for.
    #[error("image index {index} has no manifest for {platform} (it has {available:?})")]
    PlatformNotFound {
        /// The index's digest.
        index: crate::Digest,
        /// The platform looked for, `os/architecture[/variant]`.
        platform: String,
        /// The platforms the index lists.
        available: Vec<String>,
    },
    /// A Docker client configuration file (`config.json`) with registry credentials cannot be
    /// used.
    #[error("registry credentials in {}: {reason}", path.display())]
    CredentialsFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the credentials themselves).
        reason: String,
    },
    // --- the store's image records, verification and recovery (store) ---
    /// An image recorded in the [`LayerStore`](crate::LayerStore) (or about to be) has a layer
    /// that is not in the store: removed, or quarantined by
    /// [`LayerStore::verify`](crate::LayerStore::verify). Importing or pulling the image again
    /// stores it again.
    #[error("image {image:?}: layer {layer} is not in the store (removed or quarantined): import or pull the image again")]
    LayerMissing {
        /// The name the image is recorded under.
        image: String,
        /// The missing layer.
        layer: crate::Digest,
    },
    // --- docker-archive and oci-archive imports (archive.rs) ---
    /// An image archive could not be read: an I/O error, bad compression, a malformed or
    /// truncated tar stream.
    #[error("cannot read the image archive {}: {source}", path.display())]
    ArchiveRead {
        /// The archive file.
        path: PathBuf,
        /// The error from the file, the decompressor or the tar reader.
        source: io::Error,
    },
    /// An image archive is neither a docker-archive nor an oci-archive, or its `manifest.json`,
    /// `oci-layout`, `index.json` or an image manifest in it is malformed.
    #[error("invalid image archive {}: {reason}", path.display())]
    InvalidArchive {
        /// The archive file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file the archive's own manifest names cannot be used: it is absent, its name escapes
    /// the archive with `..` or is absolute, it is a chain of links that loops or leaves the
    /// archive, or it is not a regular file.
    #[error("image archive {}: refused entry {entry:?}: {reason}", path.display())]
    ArchiveEntry {
        /// The archive file.
        path: PathBuf,
        /// The name as the archive's manifest gives it.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A part of an image archive is larger than what is read of it: a JSON document (over a
    /// few MiB), or a compressed archive that expands beyond its bound.
    #[error("image archive {}: {what} is larger than the limit of {limit} bytes", path.display())]
    ArchiveTooLarge {
        /// The archive file.
        path: PathBuf,
        /// What is too large: `"manifest.json"`, `"config"`, `"decompressed archive"`, …
        what: &'static str,
        /// The limit, in bytes.
        limit: u64,
    },
    /// No image of the archive has the name asked for.
    #[error("no image named {name:?} in {} (images: {available:?})", path.display())]
    ArchiveImageNotFound {
        /// The archive file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names the archive's images have.
        available: Vec<String>,
    },
    /// No name was given and the archive holds several images.
    #[error("{} holds several images: name one of {images:?}", path.display())]
    AmbiguousArchive {
        /// The archive file.
        path: PathBuf,
        /// Each image: its names, or for one without a name its config or manifest.
        images: Vec<String>,
    },
    // --- files and users of an image's root (users.rs) ---
    /// A user name of a user spec is not in the root's `/etc/passwd` (or the root has none).
    #[error("no user {name:?} in the root's /etc/passwd (user spec {spec:?})")]
    UnknownUser {
        /// The user spec as given, e.g. `"app:staff"`.
        spec: String,
        /// The name looked for.
        name: String,
    },
    /// A group name of a user spec is not in the root's `/etc/group` (or the root has none).
    #[error("no group {name:?} in the root's /etc/group (user spec {spec:?})")]
    UnknownGroup {
        /// The user spec as given.
        spec: String,
        /// The name looked for.
        name: String,
    },
    /// A file read from an image's root is larger than the bound on such reads.
    #[error("{path} in the root is larger than {limit} bytes")]
    FileTooLarge {
        /// The path inside the root.
        path: String,
        /// The bound, in bytes.
        limit: u64,
    },
    /// Neither the image (`Entrypoint`, `Cmd`) nor the caller gave a command to run.
    #[error("no command to run: the image has no Entrypoint or Cmd and none was given")]
    NoCommand,
}

impl Error {
    /// The OS error number behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. }
            | Error::LayerArchive { source, .. }
            | Error::Extract { source, .. }
            | Error::RegistryTransport { source, .. }
            | Error::ArchiveRead { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The [`Error::Io`] of `op` on `path`, for `map_err`.
pub(crate) fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
