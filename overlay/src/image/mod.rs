//! OCI image layouts imported into a content-addressed layer store.
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
//! `evil -> /etc` followed by `evil/passwd`) are refused with [`Error::UnsafeEntry`](crate::Error::UnsafeEntry).
//! Symbolic links themselves may point anywhere: their targets are only resolved at run time,
//! inside the sandbox's root.
//!
//! ```no_run
//! use palisade_overlay::image::LayerStore;
//!
//! let store = LayerStore::open("/var/lib/palisade/layers")?;
//! let image = store.import("/tmp/alpine-oci", Some("3.20"))?;
//! let lower: Vec<_> = image.lower_dirs(); // top layer first, as overlayfs wants
//! println!("{:?} runs {:?}", lower, image.config.process_args());
//! # Ok::<(), palisade_overlay::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod digest;
mod extract;
mod layout;
mod store;
mod sys;
mod writer;
mod zstd;

pub use digest::Digest;
pub use store::LayerStore;
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

/// What to do with the character and block devices of a layer (`mknod(2)` of a device needs
/// `CAP_MKNOD`). FIFOs are always created; whiteouts are not devices in this sense (overlayfs
/// whiteouts, character devices 0:0, may be made without privilege).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DevicePolicy {
    /// Create them; fail with [`Error::Extract`](crate::Error::Extract) (`EPERM`) when not
    /// permitted.
    Create,
    /// Create them when permitted and leave them out otherwise (the default).
    #[default]
    CreateIfPermitted,
    /// Never create them.
    Skip,
}

/// Settings of a [`LayerStore`].
///
/// The opaque-xattr namespace is recorded in the store when it is created and checked whenever
/// it is opened. The device policy is that of the handle that unpacks a layer: a layer unpacked
/// once is not unpacked again under another policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    opaque_xattr: OpaqueXattr,
    devices: DevicePolicy,
}

impl StoreOptions {
    /// The defaults: [`OpaqueXattr::Trusted`], [`DevicePolicy::CreateIfPermitted`].
    pub fn new() -> StoreOptions {
        StoreOptions::default()
    }

    /// Sets which xattr marks opaque directories.
    pub fn opaque_xattr(mut self, xattr: OpaqueXattr) -> StoreOptions {
        self.opaque_xattr = xattr;
        self
    }

    /// Sets what to do with device nodes.
    pub fn devices(mut self, policy: DevicePolicy) -> StoreOptions {
        self.devices = policy;
        self
    }

    /// The xattr that marks opaque directories.
    pub fn opaque_xattr_setting(&self) -> OpaqueXattr {
        self.opaque_xattr
    }

    /// What is done with device nodes.
    pub fn device_policy(&self) -> DevicePolicy {
        self.devices
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
}
