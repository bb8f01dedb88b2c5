//! OCI images for Palisade sandboxes, and for anything else that mounts image layers: images
//! pulled from registries, imported from layouts and archives, and kept unpacked in a
//! content-addressed [`LayerStore`] whose layer directories become overlayfs lower layers. The
//! crate depends on no other Palisade crate: `palisade` composes it with `palisade-overlay`.
//!
//! - [`LayerStore::pull`] ([`registry`]): registry pulls (OCI distribution spec), every blob
//!   verified while it streams in, resumable, authenticated, with [`Progress`] reports.
//! - [`LayerStore::import`]: OCI image layouts; [`LayerStore::import_archive`]: `docker save`
//!   archives and oci-archives ([`ArchiveFormat`]). [`LayoutWriter`] and [`LayerBuilder`] write
//!   layouts.
//! - The store records images by name ([`LayerStore::tag`], [`LayerStore::image`],
//!   [`LayerStore::images`]), survives crashes (the leftovers of dead importers are collected,
//!   layers are durable before they are published) and bit rot ([`LayerStore::verify`]
//!   quarantines a damaged layer), and collects unused layers ([`LayerStore::gc`]).
//! - [`Image::resolve_user`] and [`read_file`] read an image's `/etc/passwd` and other files
//!   through its layers as overlayfs merges them, never following a link out of the image.
//!
//! `examples/pull.rs` pulls an image with this crate alone:
//! `cargo run -p palisade-image --example pull -- localhost:5000/busybox /tmp/pal-store --insecure`.
//!
//! [`LayerStore::import`] reads an OCI image layout directory (OCI image-spec, "Image Layout":
//! `oci-layout`, `index.json`, `blobs/sha256/…`), picks an image by tag, follows nested image
//! indexes to the manifest for `linux` and this machine's architecture, checks every blob it
//! reads against its descriptor (size and sha256 digest), and unpacks each layer once into its
//! own directory of the store. Two images with a layer in common get the same directory.
//!
//! Layers may be plain tar, gzip or zstd (OCI media types
//! `application/vnd.oci.image.layer.v1.tar`, `…tar+gzip`, `…tar+zstd`, and Docker's
//! `application/vnd.docker.image.rootfs.diff.tar.gzip`). While unpacking, OCI whiteouts (OCI
//! image-spec, "Image Layer Filesystem Changeset" § "Whiteouts") become overlayfs ones (kernel
//! documentation `filesystems/overlayfs.rst`): `.wh.NAME` becomes a character device 0:0 named
//! `NAME` (`mknod(2)`), and `.wh..wh..opq` sets the xattr `trusted.overlay.opaque` (or
//! `user.overlay.opaque`, see [`OpaqueXattr`]) to `y` on its directory. A whiteout of something
//! only a lower layer has is kept as is: overlayfs resolves it at mount time.
//!
//! Unpacking never writes outside the layer's directory and never follows a symbolic link of
//! the layer: entries with `..` components or absolute paths, hard links to outside the layer
//! or to something not yet extracted, and entries whose parent is a symbolic link (such as
//! `evil -> /etc` followed by `evil/passwd`) are refused with [`Error::UnsafeEntry`].
//! Symbolic links themselves may point anywhere: their targets are only resolved at run time,
//! inside the sandbox's root.
//!
//! The store is a boundary of its own, not only of the sandboxes that use it:
//!
//! - Its directories (the root, `layers/`, every layer's directory, `locks/`, `tmp/`, …) are
//!   mode `0700`, so no other host user can reach the unpacked files, such as an image's
//!   set-user-ID-root programs, through the store's paths; a store found with looser modes is
//!   tightened when it is opened. Only the layers' own trees (the `diff/` directories used as
//!   overlayfs lower layers) keep the modes the image gives them. Overlayfs reaches its lower
//!   layers with the credentials of whoever mounted it (kernel documentation
//!   `filesystems/overlayfs.rst`, "Permission model"), the store's owner, so sandboxes are not
//!   affected.
//! - Character and block devices of a layer are never created (they are counted in
//!   [`Layer::skipped_devices`]): the only device nodes in the store are overlayfs whiteouts,
//!   character devices 0:0, made from OCI whiteouts or from a layer's own character device
//!   0:0 entries (an overlayfs whiteout as found in an upper directory). FIFOs are created.
//! - GNU sparse files are unpacked with holes (their data is written at its offsets with
//!   `pwrite(2)` and their length set with `ftruncate(2)`), and an import is bounded in what it
//!   expands to ([`StoreOptions::max_expanded_size`]), so that a small layer cannot fill the
//!   disk.
//!
//! ```no_run
//! use palisade_image::LayerStore;
//!
//! let store = LayerStore::open("/var/lib/palisade/layers")?;
//! let image = store.import("/tmp/alpine-oci", Some("3.20"))?;
//! let lower: Vec<_> = image.lower_dirs(); // top layer first, as overlayfs wants
//! println!("{:?} runs {:?}", lower, image.config.process_args());
//! # Ok::<(), palisade_image::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod archive;
mod digest;
mod error;
mod extract;
mod layout;
#[cfg(feature = "registry")]
pub mod registry;
mod spec;
mod store;
mod sys;
mod users;
mod writer;
mod zstd;

pub use archive::ArchiveFormat;
pub use digest::Digest;
pub use error::{Error, Result};
#[cfg(feature = "registry")]
pub use registry::{Credentials, LayerOutcome, NoProgress, Progress, PullOptions, Reference};
pub use spec::Platform;
pub use store::{
    DamagedRecord, ImageRecord, IncompleteImage, LayerCheck, LayerDamage, LayerStore,
    QuarantinedLayer, VerifyReport, MAX_IMAGE_NAME,
};
pub use users::{read_file, resolve_user, User, MAX_FILE_SIZE, MAX_SYMLINK_HOPS};
pub use writer::{Compression, LayerBuilder, LayoutWriter, WrittenLayer};

/// The xattr that marks a directory opaque in an unpacked layer (kernel documentation
/// `filesystems/overlayfs.rst`, "whiteouts and opaque directories" and "User xattr").
///
/// It is a setting of the [`LayerStore`], fixed when the store is created, because it must match
/// how the layers are mounted: `trusted.*` xattrs need `CAP_SYS_ADMIN` to be set and read, so an
/// overlay mounted without it (rootless, in a user namespace) uses the `userxattr` mount option
/// and reads `user.overlay.*` instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpaqueXattr {
    /// `trusted.overlay.opaque`: overlayfs's default; setting it needs `CAP_SYS_ADMIN`.
    #[default]
    Trusted,
    /// `user.overlay.opaque`: for overlays mounted with `userxattr`.
    User,
}

impl OpaqueXattr {
    /// The xattr's name.
    pub fn name(self) -> &'static str {
        match self {
            OpaqueXattr::Trusted => "trusted.overlay.opaque",
            OpaqueXattr::User => "user.overlay.opaque",
        }
    }
}

/// The default of [`StoreOptions::max_expanded_size`]: 16 GiB.
pub const DEFAULT_MAX_EXPANDED_SIZE: u64 = 16 << 30;

/// Settings of a [`LayerStore`].
///
/// The opaque-xattr namespace is recorded in the store when it is created and checked whenever
/// it is opened. The bound on the expanded size is that of the handle that imports an image.
#[derive(Clone, Copy, Debug)]
pub struct StoreOptions {
    opaque_xattr: OpaqueXattr,
    max_expanded_size: u64,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            opaque_xattr: OpaqueXattr::default(),
            max_expanded_size: DEFAULT_MAX_EXPANDED_SIZE,
        }
    }
}

impl StoreOptions {
    /// The defaults: [`OpaqueXattr::Trusted`], and imports bounded to
    /// [`DEFAULT_MAX_EXPANDED_SIZE`] bytes.
    pub fn new() -> StoreOptions {
        StoreOptions::default()
    }

    /// Sets which xattr marks opaque directories.
    pub fn opaque_xattr(mut self, xattr: OpaqueXattr) -> StoreOptions {
        self.opaque_xattr = xattr;
        self
    }

    /// Sets the bound on what an import may expand to, in bytes: the sum, over every layer of
    /// the image (those already in the store included, so the answer does not depend on what
    /// the store holds), of the sizes of the regular files the layer unpacks to. A sparse file
    /// counts with its logical size (its length, holes included), although it is unpacked with
    /// holes; directories, links and other nodes count nothing. A file that an entry later in
    /// the archive replaces still counts. An import that would cross the bound fails with
    /// [`Error::ExpandedSizeExceeded`], before the entry
    /// that crosses it is written, and leaves nothing of that layer in the store (layers of the
    /// image unpacked before it stay: they are whole). The default is
    /// [`DEFAULT_MAX_EXPANDED_SIZE`]; `u64::MAX` means no bound.
    pub fn max_expanded_size(mut self, bytes: u64) -> StoreOptions {
        self.max_expanded_size = bytes;
        self
    }

    /// The xattr that marks opaque directories.
    pub fn opaque_xattr_setting(&self) -> OpaqueXattr {
        self.opaque_xattr
    }

    /// The bound on what an import may expand to, in bytes (see
    /// [`max_expanded_size`](Self::max_expanded_size)).
    pub fn max_expanded_size_setting(&self) -> u64 {
        self.max_expanded_size
    }
}

/// An unpacked layer in a [`LayerStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layer {
    /// The digest of the layer's blob as the manifest names it (usually compressed): the
    /// store's key for the layer.
    pub digest: Digest,
    /// The digest of the uncompressed tar stream (OCI image-spec, "Image Configuration"
    /// § `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The unpacked layer: a directory to use as an overlayfs lower layer. Shared by every image
    /// that has the layer; never write to it.
    pub path: PathBuf,
    /// The size in bytes of the layer's blob.
    pub size: u64,
    /// What the layer unpacked to, in bytes: the sum of the sizes of its regular files, sparse
    /// files counted with their logical size (see [`StoreOptions::max_expanded_size`]). 0 for a
    /// layer unpacked by a version of this crate that did not record it.
    pub expanded_size: u64,
    /// How many character and block devices of the layer's archive were left out: the store
    /// never creates device nodes (see [`LayerStore`]).
    pub skipped_devices: u64,
}

/// What an image config (OCI image-spec, "Image Configuration" § `config`) says about running
/// the image: defaults for a sandbox's process. Empty lists and `None` mean the image says
/// nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageConfig {
    /// `Env`: `NAME=value` entries.
    pub env: Vec<String>,
    /// `Entrypoint`: the start of the command line.
    pub entrypoint: Vec<String>,
    /// `Cmd`: the default arguments (or command, without an entrypoint).
    pub cmd: Vec<String>,
    /// `WorkingDir`: the process's working directory.
    pub working_dir: Option<String>,
    /// `User`: `user`, `uid`, `user:group`, `uid:gid`, …, resolved in the image.
    pub user: Option<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal`, e.g. `SIGTERM`.
    pub stop_signal: Option<String>,
    /// `ExposedPorts`: the ports the image's program listens on, as the image spells them
    /// (`80/tcp`, `53/udp`), sorted. Documentation only: nothing is published unless the caller
    /// publishes it.
    pub exposed_ports: Vec<String>,
    /// `os` of the image (`linux`).
    pub os: Option<String>,
    /// `architecture` of the image (`amd64`, …).
    pub architecture: Option<String>,
}

impl ImageConfig {
    /// The default command line: `Entrypoint` followed by `Cmd` (as `docker run` and the OCI
    /// image-spec's conversion to a runtime config, "Conversion" § "Verbatim Fields", combine
    /// them).
    pub fn process_args(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// An image imported into a [`LayerStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Image {
    /// The layers, bottom (base) layer first, as in the manifest.
    pub layers: Vec<Layer>,
    /// The image's config.
    pub config: ImageConfig,
    /// The digest of the image manifest.
    pub manifest_digest: Digest,
    /// The digest of the image config blob (the image ID of Docker).
    pub config_digest: Digest,
}

impl Image {
    /// The layers' directories top layer first: the order of overlayfs's `lowerdir` option
    /// (kernel documentation `filesystems/overlayfs.rst`, "Multiple lower layers").
    pub fn lower_dirs(&self) -> Vec<&Path> {
        self.layers.iter().rev().map(|l| l.path.as_path()).collect()
    }

    /// What the image's layers unpacked to, in bytes (the sum of [`Layer::expanded_size`]).
    pub fn expanded_size(&self) -> u64 {
        self.layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.expanded_size))
    }

    /// How many device entries of the image's layers were left out (the sum of
    /// [`Layer::skipped_devices`]).
    pub fn skipped_devices(&self) -> u64 {
        self.layers
            .iter()
            .fold(0u64, |sum, l| sum.saturating_add(l.skipped_devices))
    }
}
