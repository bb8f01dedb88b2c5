//! The content-addressed layer store: layers unpacked once, published atomically and durably,
//! checked against a digest of their tree; images recorded by name; leftovers of dead
//! processes collected.

mod owner;
mod records;
mod tree;
mod verify;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::error::io_error;
use crate::extract::{extract_layer, ExtractOptions, Extracted};
use crate::layout::{Compression, LayerRef, Layout};
use crate::{sys, Image, Layer, OpaqueXattr, StoreOptions};
use crate::{Error, Result};

// Re-exported by the crate root.
pub use records::{ImageRecord, MAX_IMAGE_NAME};
pub use verify::{
    DamagedRecord, IncompleteImage, LayerCheck, LayerDamage, QuarantinedLayer, VerifyReport,
};

/// The file that records a store's settings.
const SETTINGS: &str = "store.json";
/// The file in a layer's directory that describes it.
const LAYER_META: &str = "layer.json";
/// The directory in a layer's directory that holds its files: the overlayfs lower dir.
const DIFF: &str = "diff";
/// The directory of image records.
const IMAGES: &str = "images";
/// The directory damaged layers and records are moved to.
const QUARANTINE: &str = "quarantine";
/// The directory of temporary files and directories.
const TMP: &str = "tmp";
/// The mode of every directory of the store's own (all but the layers' trees): owner only.
pub(crate) const PRIVATE: u32 = 0o700;

#[derive(Serialize, Deserialize)]
struct Settings {
    opaque_xattr: String,
}

#[derive(Serialize, Deserialize)]
struct LayerMeta {
    digest: String,
    diff_id: String,
    size: u64,
    media_type: String,
    /// Absent in layers recorded before it was.
    #[serde(default)]
    expanded_size: u64,
    #[serde(default)]
    skipped_devices: u64,
    /// The digest of the unpacked tree (see `tree.rs`); absent in layers stored before it was
    /// recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tree_digest: Option<String>,
}

/// What the directory of a layer holds.
enum Stored {
    /// Nothing: the layer is not in the store.
    Absent,
    /// Something that is not a whole layer: never used, and replaced by the next import.
    Damaged(String),
    /// A layer, and the tree digest recorded for it.
    Good(Layer, Option<Digest>),
}

/// A store of unpacked image layers on disk, each layer unpacked once and shared by every image
/// that has it, and of images recorded by name.
///
/// Layers are keyed by the digest of their **compressed blob** — the `digest` of the layer's
/// descriptor in the image manifest (OCI image-spec, "Image Manifest" § `layers`) — which is
/// what is checked before anything of the layer is trusted. The same content compressed in two
/// ways is thus stored twice; for uncompressed layers the key equals the `diff_id`. The
/// `diff_id` is checked too (against the config's `rootfs.diff_ids`) and kept with the layer.
///
/// On disk, under the root (every directory but the layers' `diff/` trees mode `0700`, see the
/// [crate documentation](crate)):
///
/// ```text
/// store.json                     settings fixed at creation (the opaque xattr name)
/// layers/sha256/<hex>/diff/      the unpacked layer: an overlayfs lower directory
/// layers/sha256/<hex>/layer.json digest, diff_id, size, media type and tree digest
/// images/<sha256 of name>.json   an image recorded by name (LayerStore::tag)
/// locks/sha256-<hex>.lock        flock(2) lock serializing imports and removal of a layer
/// tmp/palisade-<what>-<pid>-<start>-<n>
///                                layers being unpacked or removed, records being written, …
/// quarantine/                    damaged layers and records found by LayerStore::verify
/// ```
///
/// (`blobs/` and `downloads/` belong to registry pulls.)
///
/// # Crashes
///
/// A layer is unpacked into `tmp/` and renamed into `layers/` (`rename(2)` is atomic), under an
/// exclusive `flock(2)` on its lock file, so concurrent imports of the same layer, in threads or
/// processes, unpack it once and never see it half-made; if a rename still finds the layer there
/// (a store shared without working locks), the copy just made is discarded.
///
/// Before that rename, the layer's files, directories and `layer.json` are made durable with
/// one `syncfs(2)` of the store's file system, and after it the directory `layers/sha256/` is
/// `fsync(2)`ed: a layer that is visible after a power loss is whole. (`syncfs` rather than an
/// `fsync` of every file: on ext4 each `fsync` commits the journal, and a layer of 3000 files
/// took 0.7 s that way against 0.04 s for one `syncfs`; the price is that `syncfs` also writes
/// back what other programs left dirty on that file system.) Image records and the settings file
/// are written to a temporary name, `fsync`ed, renamed (or linked) into place, and their
/// directory `fsync`ed.
///
/// Everything in `tmp/` is named after the process that made it: its pid and its start time
/// (field 22 of `/proc/PID/stat`, `proc_pid_stat(5)`), which a reused pid does not share.
/// [`LayerStore::open`] (and [`LayerStore::gc`]) remove the entries whose process is dead, and
/// leave those of live ones: what a killed import leaves is collected by the next open. `/proc`
/// must be mounted, and show the processes that use the store (the same PID namespace).
///
/// # Damage
///
/// Each layer's `layer.json` records a digest of its unpacked tree, computed right after
/// unpacking (names, types, modes, owners, sizes, content, link targets, whiteouts, opaque
/// xattrs). [`LayerStore::verify`] recomputes it for every layer and moves a layer that differs,
/// or whose `layer.json` does not parse or names another layer, into `quarantine/`; the next
/// import or pull of an image that has it stores it again. A layer whose `layer.json` is
/// damaged is never used, verified or not: [`LayerStore::layer`] and [`LayerStore::layers`]
/// treat it as absent, and an import replaces it. Layers stored by a version of this crate that
/// did not record a tree digest are reported as unverifiable and taken as good.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    options: StoreOptions,
}

/// Makes the store's own directory `path` (its parent must exist) mode `0700`, or, if it is
/// there, tightens it to `0700`: an existing store of looser modes lets other users reach the
/// layers' files (such as set-user-ID programs) through it. A symbolic link is refused, but for
/// the root (`follow`), which may be one.
pub(crate) fn private_dir(path: &Path, follow: bool) -> Result<()> {
    match fs::DirBuilder::new().mode(PRIVATE).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("create", path)(e)),
    }
    tighten(path, follow)
}

/// Gives the existing directory `path` mode `0700` if it has another.
fn tighten(path: &Path, follow: bool) -> Result<()> {
    let meta = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    }
    .map_err(io_error("stat", path))?;
    if !meta.is_dir() {
        return Err(io_error("use as a store directory", path)(
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    if meta.permissions().mode() & 0o7777 != PRIVATE {
        fs::set_permissions(path, fs::Permissions::from_mode(PRIVATE))
            .map_err(io_error("chmod", path))?;
    }
    Ok(())
}

/// Tightens every directory directly in `dir` (layers' directories, temporary ones).
fn tighten_children(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(io_error("read", dir))? {
        let entry = entry.map_err(io_error("read", dir))?;
        let is_dir = entry
            .file_type()
            .map_err(io_error("stat", &entry.path()))?
            .is_dir();
        if is_dir {
            match tighten(&entry.path(), false) {
                // Removed meanwhile by a concurrent gc or removal.
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

/// Removes a directory tree, first giving the owner access to every directory in it (a layer
/// may hold read-only directories that would otherwise stop an unprivileged removal).
/// `remove_dir_all` never follows symbolic links.
fn remove_tree(path: &Path) -> Result<()> {
    fn open_up(path: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Ok(());
        }
        if meta.permissions().mode() & 0o700 != 0o700 {
            fs::set_permissions(
                path,
                fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
            )?;
        }
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                open_up(&entry.path())?;
            }
        }
        Ok(())
    }
    if !sys::is_root() {
        // Best effort: remove_dir_all reports what still stands in the way.
        let _ = open_up(path);
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A directory in `tmp/` removed on drop unless kept.
pub(crate) struct TmpDir {
    path: PathBuf,
    keep: bool,
}

impl TmpDir {
    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = remove_tree(&self.path);
        }
    }
}

/// `fsync(2)`s the directory `path`: a rename or removal in it is durable once this returns.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    let dir = sys::open_dir_path(path).map_err(io_error("open", path))?;
    sys::fsync(dir.as_fd()).map_err(io_error("sync", path))
}

/// Writes `bytes` to the new file `path` (mode `0600`, never through a symbolic link) and
/// `fsync(2)`s it; the file is removed again if that fails.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_error("create", path))?;
        file.write_all(bytes).map_err(io_error("write", path))?;
        sys::fsync(file.as_fd()).map_err(io_error("sync", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}

impl LayerStore {
    /// Opens the store at `root`, creating it (and its parents) with the default
    /// [`StoreOptions`] if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the directories cannot be made or read; [`Error::InvalidValue`] when
    /// the store was created with another opaque-xattr namespace.
    pub fn open(root: impl AsRef<Path>) -> Result<LayerStore> {
        LayerStore::open_with(root, StoreOptions::default())
    }

    /// Opens the store at `root` with `options`, creating it if needed. The opaque-xattr
    /// namespace is recorded when the store is created: layers already unpacked carry it, so
    /// opening the store with another one is refused.
    ///
    /// The root and every directory of the store's own are made (or, in a store that has other
    /// modes, changed to) mode `0700`, owner only, whether the store is root's or an
    /// unprivileged user's: see the [crate documentation](crate). The root's parents, made
    /// when missing, get the usual modes.
    ///
    /// Opening collects what dead processes left in `tmp/` (see [`LayerStore`] § "Crashes"):
    /// the temporary directories of killed imports, removals and pulls, and their temporary
    /// files. This is done as far as it can be: an entry that cannot be removed is left for
    /// [`LayerStore::gc`], which reports the error.
    ///
    /// # Errors
    ///
    /// As [`LayerStore::open`]; [`Error::Io`] too when a directory of the store cannot be
    /// given mode `0700` (it belongs to another user, say).
    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<LayerStore> {
        let root = root.as_ref().to_path_buf();
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io_error("create", parent))?;
        }
        private_dir(&root, true)?;
        let layers = root.join("layers");
        let sha256 = layers.join("sha256");
        let tmp = root.join(TMP);
        let quarantine = root.join(QUARANTINE);
        for dir in [
            &layers,
            &sha256,
            &root.join("locks"),
            &tmp,
            &root.join(IMAGES),
            &quarantine,
        ] {
            private_dir(dir, false)?;
        }
        tighten_children(&sha256)?;
        tighten_children(&tmp)?;
        tighten_children(&quarantine)?;
        let store = LayerStore { root, options };
        store.check_settings()?;
        // Best effort, see above.
        let _ = store.collect_leftovers();
        Ok(store)
    }

    /// Removes what dead processes left in `tmp/`.
    fn collect_leftovers(&self) -> Result<Vec<PathBuf>> {
        owner::collect(&self.root.join(TMP), &|digest| {
            Ok(self.lock(digest, true)?.is_some())
        })
    }

    /// Records the settings on creation, or checks them against the recorded ones.
    fn check_settings(&self) -> Result<()> {
        let path = self.root.join(SETTINGS);
        let wanted = self.options.opaque_xattr.name();
        if !path.exists() {
            // Written aside and hard-linked into place, so that of two stores created at once
            // exactly one records its settings and the other checks them.
            let tmp = self.tmp_path("settings")?;
            let json = serde_json::to_vec(&Settings {
                opaque_xattr: wanted.to_owned(),
            })
            .map_err(|e| Error::Io {
                op: "write",
                path: tmp.clone(),
                source: e.into(),
            })?;
            write_synced(&tmp, &json)?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => return fsync_dir(&self.root),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::Io {
                        op: "create",
                        path,
                        source: e,
                    })
                }
            }
        }
        let bytes = fs::read(&path).map_err(io_error("read", &path))?;
        let settings: Settings = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            op: "parse",
            path: path.clone(),
            source: e.into(),
        })?;
        if settings.opaque_xattr != wanted {
            return Err(Error::InvalidValue {
                what: "opaque xattr namespace",
                value: wanted.to_owned(),
                reason: "the store was created with the other namespace",
            });
        }
        Ok(())
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// A fresh name in `tmp/` for something of this process (`what` says what).
    fn tmp_path(&self, what: &str) -> Result<PathBuf> {
        owner::tmp_name(&self.root.join(TMP), what)
    }

    /// Makes a private directory in the store's `tmp/` for work of this process (`what` names
    /// it), removed when the returned value is dropped; if the process dies first, the next
    /// [`LayerStore::open`] collects it.
    pub(crate) fn scratch_dir(&self, what: &str) -> Result<TmpDir> {
        let dir = TmpDir {
            path: self.tmp_path(what)?,
            keep: false,
        };
        fs::DirBuilder::new()
            .mode(PRIVATE)
            .create(&dir.path)
            .map_err(io_error("create", &dir.path))?;
        Ok(dir)
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Takes the layer's lock; released when the returned descriptor is dropped.
    fn lock(&self, digest: &Digest, nonblocking: bool) -> Result<Option<OwnedFd>> {
        let path =
            self.root
                .join("locks")
                .join(format!("{}-{}.lock", digest.algorithm(), digest.hex()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_error("open", &path))?;
        let fd = OwnedFd::from(file);
        let locked =
            sys::flock_exclusive(fd.as_fd(), nonblocking).map_err(io_error("lock", &path))?;
        Ok(locked.then_some(fd))
    }

    /// What the directory of layer `digest` holds. Only I/O errors other than a missing file
    /// are errors: anything that is there but is not a whole, self-consistent layer is
    /// [`Stored::Damaged`].
    fn stored(&self, digest: &Digest) -> Result<Stored> {
        let dir = self.layer_dir(digest);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(Stored::Damaged("not a directory".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::Absent),
            Err(e) => return Err(io_error("stat", &dir)(e)),
        }
        let meta_path = dir.join(LAYER_META);
        let bytes = match fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Stored::Damaged(format!("{LAYER_META} is missing")))
            }
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                return Ok(Stored::Damaged(format!("{LAYER_META} is a directory")))
            }
            Err(e) => return Err(io_error("read", &meta_path)(e)),
        };
        let meta: LayerMeta = match serde_json::from_slice(&bytes) {
            Ok(meta) => meta,
            Err(e) => return Ok(Stored::Damaged(format!("{LAYER_META}: bad JSON: {e}"))),
        };
        if meta.digest != digest.as_str() {
            return Ok(Stored::Damaged(format!(
                "{LAYER_META} describes the layer {:?}",
                meta.digest
            )));
        }
        let Ok(diff_id) = Digest::parse(&meta.diff_id) else {
            return Ok(Stored::Damaged(format!(
                "{LAYER_META}: invalid diff_id {:?}",
                meta.diff_id
            )));
        };
        let tree_digest = match meta.tree_digest.as_deref().map(Digest::parse) {
            None => None,
            Some(Ok(tree)) => Some(tree),
            Some(Err(_)) => {
                return Ok(Stored::Damaged(format!(
                    "{LAYER_META}: invalid tree_digest {:?}",
                    meta.tree_digest
                )))
            }
        };
        let diff = dir.join(DIFF);
        match fs::symlink_metadata(&diff) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Ok(Stored::Damaged(format!("{DIFF} is not a directory"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Stored::Damaged(format!("{DIFF} is missing")))
            }
            Err(e) => return Err(io_error("stat", &diff)(e)),
        }
        Ok(Stored::Good(
            Layer {
                digest: digest.clone(),
                diff_id,
                path: diff,
                size: meta.size,
                expanded_size: meta.expanded_size,
                skipped_devices: meta.skipped_devices,
            },
            tree_digest,
        ))
    }

    /// The stored layer `digest`, if it is in the store. A layer whose description
    /// (`layer.json`) is damaged — it does not parse, or describes another layer — is never
    /// trusted: it is taken as absent (and [`LayerStore::verify`] reports it).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when its description cannot be read.
    pub fn layer(&self, digest: &Digest) -> Result<Option<Layer>> {
        Ok(match self.stored(digest)? {
            Stored::Good(layer, _) => Some(layer),
            Stored::Absent | Stored::Damaged(_) => None,
        })
    }

    /// Every layer in the store, ordered by digest. A layer that cannot be read, or whose
    /// description is damaged, is left out (see [`LayerStore::layer`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store's `layers/` directory cannot be read.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        let mut layers: Vec<Layer> = self
            .layer_names()?
            .into_iter()
            .filter_map(|(_, digest)| self.layer(&digest?).ok().flatten())
            .collect();
        layers.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(layers)
    }

    /// The names in `layers/sha256/`, each with its digest if it is one.
    fn layer_names(&self) -> Result<Vec<(String, Option<Digest>)>> {
        let dir = self.layers_dir();
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("read", &dir))? {
            let entry = entry.map_err(io_error("read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = Digest::parse(&format!("sha256:{name}")).ok();
            names.push((name, digest));
        }
        names.sort();
        Ok(names)
    }

    /// Imports the image tagged `tag` (annotation `org.opencontainers.image.ref.name` in
    /// `index.json`; `None` takes the only image of the layout) from the OCI image layout
    /// directory `layout_dir` (OCI image-spec, "Image Layout"). Nested image indexes are followed
    /// to the manifest for `linux` and this machine's architecture. Every blob read is checked
    /// against its descriptor's size and sha256 digest, and every layer's uncompressed stream
    /// against the config's `rootfs.diff_ids`. Layers already in the store are not unpacked again;
    /// one whose description is damaged is moved to `quarantine/` and unpacked again. The image
    /// is not recorded by name: see [`LayerStore::tag`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidImage`], [`Error::TagNotFound`], [`Error::AmbiguousImage`],
    /// [`Error::NoMatchingPlatform`], [`Error::UnsupportedMediaType`] and
    /// [`Error::InvalidDigest`] for what the layout holds; [`Error::DigestMismatch`] and
    /// [`Error::SizeMismatch`] for content that does not match; [`Error::UnsafeEntry`],
    /// [`Error::LayerArchive`] and [`Error::Extract`] for layers that cannot be unpacked, and
    /// [`Error::ExpandedSizeExceeded`] for an image that would unpack to more than
    /// [`StoreOptions::max_expanded_size`] (nothing of such a layer is left in the store);
    /// [`Error::Io`] otherwise (a full disk, say: nothing of the layer is left either).
    pub fn import(&self, layout_dir: impl AsRef<Path>, tag: Option<&str>) -> Result<Image> {
        let layout = Layout::open(layout_dir.as_ref())?;
        let resolved = layout.resolve(tag)?;
        let mut layers = Vec::with_capacity(resolved.layers.len());
        let mut expanded = 0u64;
        for layer in &resolved.layers {
            let stored = self.ensure_layer(&layout, layer, expanded)?;
            expanded = expanded.saturating_add(stored.expanded_size);
            // A layer already in the store (unpacked for another image, or under a larger
            // bound) counts too: the bound is on the image, whatever the store holds.
            if expanded > self.options.max_expanded_size {
                return Err(Error::ExpandedSizeExceeded {
                    layer: stored.digest,
                    size: expanded,
                    limit: self.options.max_expanded_size,
                });
            }
            layers.push(stored);
        }
        Ok(Image {
            layers,
            config: resolved.config,
            manifest_digest: resolved.manifest_digest,
            config_digest: resolved.config_digest,
        })
    }

    /// Returns the stored layer, unpacking it first if it is not there; the image's layers
    /// before it expanded to `before` bytes.
    fn ensure_layer(&self, layout: &Layout, layer: &LayerRef, before: u64) -> Result<Layer> {
        self.ensure_layer_from(layer, before, || {
            layout.open_blob(&layer.descriptor, "layer")
        })
    }

    /// Stores the layer `layer` of an image from its blob at `blob` (a pull's download, which
    /// the unpacking checks again like any blob), unless it is in the store already, and
    /// returns it. The layer alone is held to [`StoreOptions::max_expanded_size`]; the image
    /// as a whole is, when it is imported.
    #[cfg(feature = "registry")]
    pub(crate) fn store_layer_blob(&self, layer: &LayerRef, blob: &Path) -> Result<Layer> {
        self.ensure_layer_from(layer, 0, || {
            File::open(blob).map_err(io_error("open", blob))
        })
    }

    /// [`ensure_layer`](Self::ensure_layer) with the blob opened by `open`, once the layer is
    /// known to be missing.
    fn ensure_layer_from(
        &self,
        layer: &LayerRef,
        before: u64,
        open: impl FnOnce() -> Result<File>,
    ) -> Result<Layer> {
        let digest = &layer.descriptor.digest;
        let check = |stored: Layer| match &layer.diff_id {
            Some(expected) if *expected != stored.diff_id => Err(Error::DigestMismatch {
                what: "layer diff_id",
                expected: expected.clone(),
                actual: stored.diff_id,
            }),
            _ => Ok(stored),
        };
        if let Some(stored) = self.layer(digest)? {
            return check(stored);
        }
        let _lock = self.lock(digest, false)?;
        match self.stored(digest)? {
            Stored::Good(stored, _) => return check(stored),
            Stored::Damaged(_) => {
                self.quarantine(&self.layer_dir(digest), digest.hex())?;
            }
            Stored::Absent => {}
        }
        let file = open()?;
        let mut tmp = TmpDir {
            path: self.tmp_path(digest.hex())?,
            keep: false,
        };
        let diff = tmp.path.join(DIFF);
        fs::DirBuilder::new()
            .mode(PRIVATE)
            .create(&tmp.path)
            .map_err(io_error("create", &tmp.path))?;
        // Its final mode is the image's (the layer's root entry, or 0755), set once unpacked.
        fs::DirBuilder::new()
            .mode(PRIVATE)
            .create(&diff)
            .map_err(io_error("create", &diff))?;

        let extracted = self.unpack(layer, file, &diff, before)?;
        let tree = tree::tree_digest(&diff, self.options.opaque_xattr.c_name()).map_err(|e| {
            Error::Io {
                op: e.op,
                path: e.host_path(&diff),
                source: e.source,
            }
        })?;
        let meta = LayerMeta {
            digest: digest.to_string(),
            diff_id: extracted.diff_id.to_string(),
            size: layer.descriptor.size,
            media_type: layer.descriptor.media_type.clone(),
            expanded_size: extracted.expanded_size,
            skipped_devices: extracted.skipped_devices,
            tree_digest: Some(tree.to_string()),
        };
        let meta_path = tmp.path.join(LAYER_META);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Io {
            op: "write",
            path: meta_path.clone(),
            source: e.into(),
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&meta_path)
            .map_err(io_error("create", &meta_path))?;
        file.write_all(&json)
            .map_err(io_error("write", &meta_path))?;
        // One syncfs(2) makes the whole tree and its description durable (see LayerStore §
        // "Crashes" for why not an fsync of each file).
        sys::syncfs(file.as_fd()).map_err(io_error("sync", &tmp.path))?;
        drop(file);

        let dest = self.layer_dir(digest);
        match fs::rename(&tmp.path, &dest) {
            Ok(()) => {
                tmp.keep = true;
                fsync_dir(&self.layers_dir())?;
            }
            // Someone else stored it first: theirs is as good, ours is dropped.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {}
            Err(e) => {
                return Err(Error::Io {
                    op: "rename into place",
                    path: dest,
                    source: e,
                })
            }
        }
        match self.layer(digest)? {
            Some(stored) => check(stored),
            None => Err(Error::Io {
                op: "read",
                path: dest.join(LAYER_META),
                source: io::Error::from(io::ErrorKind::NotFound),
            }),
        }
    }

    /// Decompresses and unpacks `file` into `diff`, checking the blob's digest and size and the
    /// `diff_id`; the image's layers before it expanded to `before` bytes.
    fn unpack(&self, layer: &LayerRef, file: File, diff: &Path, before: u64) -> Result<Extracted> {
        let digest = &layer.descriptor.digest;
        let limit = self.options.max_expanded_size;
        let options = ExtractOptions {
            opaque_xattr: self.options.opaque_xattr.c_name(),
            budget: limit.saturating_sub(before),
            limit,
            before,
            chown: sys::is_root(),
        };
        let mut blob = HashingReader::new(file);
        let extracted = {
            let stream: Result<Box<dyn Read + '_>> = match layer.compression {
                Compression::None => Ok(Box::new(&mut blob)),
                Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(
                    BufReader::new(&mut blob),
                ))),
                Compression::Zstd => Ok(Box::new(crate::zstd::ZstdReader::new(BufReader::new(
                    &mut blob,
                )))),
            };
            stream.and_then(|stream| extract_layer(digest, stream, diff, &options))
        };
        // Hash whatever the decompressor or the tar reader left, then judge the blob before
        // reporting anything about its content: a corrupt blob is a digest mismatch.
        let drained = blob.drain();
        let (actual, length, _) = blob.finish();
        if drained.is_ok() {
            if length != layer.descriptor.size {
                return Err(Error::SizeMismatch {
                    what: "layer",
                    digest: digest.clone(),
                    expected: layer.descriptor.size,
                    actual: length,
                });
            }
            if actual != *digest {
                return Err(Error::DigestMismatch {
                    what: "layer",
                    expected: digest.clone(),
                    actual,
                });
            }
        }
        let extracted = extracted?;
        drained.map_err(|e| Error::LayerArchive {
            layer: digest.clone(),
            source: e,
        })?;
        if let Some(expected) = &layer.diff_id {
            if *expected != extracted.diff_id {
                return Err(Error::DigestMismatch {
                    what: "layer diff_id",
                    expected: expected.clone(),
                    actual: extracted.diff_id,
                });
            }
        }
        Ok(extracted)
    }

    /// Removes a layer from the store (whole or damaged). Returns whether it was there. Any
    /// image still using it (a mounted overlay, say) keeps its open files but loses the
    /// directory; callers decide what is in use (see [`LayerStore::gc`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the layer cannot be removed.
    pub fn remove_layer(&self, digest: &Digest) -> Result<bool> {
        let _lock = self.lock(digest, false)?;
        let dir = self.layer_dir(digest);
        let doomed = self.tmp_path(&format!("rm-{}", digest.hex()))?;
        match fs::rename(&dir, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(Error::Io {
                    op: "remove",
                    path: dir,
                    source: e,
                })
            }
        }
        remove_tree(&doomed)?;
        Ok(true)
    }

    /// Removes every layer that neither one of `keep` nor an image recorded by name (see
    /// [`LayerStore::tag`]) uses, damaged ones included; what dead processes left in `tmp/`
    /// (as [`LayerStore::open`] does); and everything in `quarantine/`. Returns the digests of
    /// the layers removed. Imports running at the same time are not disturbed (their layers are
    /// locked, their temporary directories belong to live processes), but a layer an import has
    /// just returned, for an image neither in `keep` nor recorded yet, may be removed: callers
    /// run this when no import is under way or pass every image they hold.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store cannot be read or a layer cannot be removed.
    pub fn gc(&self, keep: &[&Image]) -> Result<Vec<Digest>> {
        let recorded = self.images()?;
        let used: BTreeSet<&Digest> = keep
            .iter()
            .flat_map(|image| image.layers.iter().map(|l| &l.digest))
            .chain(recorded.iter().flat_map(|r| r.layers.iter()))
            .collect();
        let mut removed = Vec::new();
        for (_, digest) in self.layer_names()? {
            let Some(digest) = digest else { continue };
            if !used.contains(&digest) && self.remove_layer(&digest)? {
                removed.push(digest);
            }
        }
        self.collect_leftovers()?;
        let quarantine = self.root.join(QUARANTINE);
        for entry in fs::read_dir(&quarantine).map_err(io_error("read", &quarantine))? {
            let path = entry.map_err(io_error("read", &quarantine))?.path();
            let is_dir = fs::symlink_metadata(&path)
                .map_err(io_error("stat", &path))?
                .is_dir();
            if is_dir {
                remove_tree(&path)?;
            } else {
                fs::remove_file(&path).map_err(io_error("remove", &path))?;
            }
        }
        Ok(removed)
    }

    /// Moves `path` (a layer's directory or an image record) into `quarantine/`, under a
    /// fresh name made from `name`. Returns where it went.
    fn quarantine(&self, path: &Path, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(QUARANTINE);
        let dest = owner::tmp_name(&dir, name)?;
        fs::rename(path, &dest).map_err(io_error("quarantine", path))?;
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
        fsync_dir(&dir)?;
        Ok(dest)
    }

    /// Checks every layer of the store against the tree digest recorded when it was stored (see
    /// [`LayerStore`] § "Damage"), and every image record. A damaged layer — its tree differs
    /// or cannot be read, its `layer.json` is missing, does not parse or describes another
    /// layer, its directory's name is not a digest — is moved into `quarantine/`, and so is a
    /// damaged image record; the next import or pull of an image stores its missing layers
    /// again, and [`LayerStore::gc`] removes what is in quarantine. Each layer is checked under
    /// its lock, so an import or removal of it waits.
    ///
    /// Layers stored by a version of this crate that recorded no tree digest are reported as
    /// unverifiable (`VerifyReport::unverifiable`), and taken as good.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store's directories cannot be read or something damaged cannot
    /// be moved into quarantine. Damage is not an error: it is in the report.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (name, digest) in self.layer_names()? {
            let Some(digest) = digest else {
                let moved_to = self.quarantine(&self.layers_dir().join(&name), &name)?;
                report.quarantined.push(QuarantinedLayer {
                    digest: None,
                    name,
                    damage: LayerDamage::Metadata {
                        reason: "the name is not a sha256 digest".into(),
                    },
                    moved_to,
                });
                continue;
            };
            match self.verify_layer(&digest)? {
                LayerCheck::Verified => report.verified.push(digest),
                LayerCheck::Unverifiable => report.unverifiable.push(digest),
                LayerCheck::Absent => {}
                LayerCheck::Quarantined(q) => report.quarantined.push(q),
            }
        }
        let images = self.root.join(IMAGES);
        for entry in fs::read_dir(&images).map_err(io_error("read", &images))? {
            let entry = entry.map_err(io_error("read", &images))?;
            let path = entry.path();
            let reason = match self.read_record(&path) {
                // Removed meanwhile (untagged).
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue
                }
                Ok(Ok(record)) => {
                    let mut missing = Vec::new();
                    for layer in &record.layers {
                        if self.layer(layer)?.is_none() {
                            missing.push(layer.clone());
                        }
                    }
                    if !missing.is_empty() {
                        report.incomplete_images.push(IncompleteImage {
                            name: record.name,
                            missing,
                        });
                    }
                    continue;
                }
                Ok(Err(reason)) => reason,
                Err(e) => e.to_string(),
            };
            let name = format!("record-{}", entry.file_name().to_string_lossy());
            let moved_to = self.quarantine(&path, &name)?;
            report.damaged_records.push(DamagedRecord {
                path,
                reason,
                moved_to,
            });
        }
        report.incomplete_images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(report)
    }

    /// Checks one layer as [`LayerStore::verify`] does, moving it into quarantine if it is
    /// damaged.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the layer's lock cannot be taken, its directory cannot be examined,
    /// or it is damaged and cannot be moved into quarantine.
    pub fn verify_layer(&self, digest: &Digest) -> Result<LayerCheck> {
        let _lock = self.lock(digest, false)?;
        let dir = self.layer_dir(digest);
        let damage = match self.stored(digest)? {
            Stored::Absent => return Ok(LayerCheck::Absent),
            Stored::Good(_, None) => return Ok(LayerCheck::Unverifiable),
            Stored::Damaged(reason) => LayerDamage::Metadata { reason },
            Stored::Good(layer, Some(expected)) => {
                match tree::tree_digest(&layer.path, self.options.opaque_xattr.c_name()) {
                    Ok(actual) if actual == expected => return Ok(LayerCheck::Verified),
                    Ok(actual) => LayerDamage::Tree { expected, actual },
                    Err(e) => LayerDamage::Unreadable {
                        path: e.host_path(&layer.path),
                        op: e.op,
                        errno: e.source.raw_os_error(),
                        message: e.source.to_string(),
                    },
                }
            }
        };
        let moved_to = self.quarantine(&dir, digest.hex())?;
        Ok(LayerCheck::Quarantined(QuarantinedLayer {
            digest: Some(digest.clone()),
            name: digest.hex().to_owned(),
            damage,
            moved_to,
        }))
    }

    /// Records `image` (as [`LayerStore::import`] or a pull returned it) under `name`, a
    /// reference such as `localhost:5000/x/y:1` or a layout's tag, replacing what was recorded
    /// under that name. The record holds the name, the manifest and config digests, the layers'
    /// digests and the image's config; it is written to a temporary file, `fsync(2)`ed, renamed
    /// into `images/` and that directory `fsync`ed, so a crash leaves the old record or the new
    /// one. The file's name is the sha256 of `name`: nothing of the name reaches the file
    /// system. Recorded images keep their layers through [`LayerStore::gc`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for a name that is empty, longer than `MAX_IMAGE_NAME` (1024) bytes
    /// or has a control character (NUL, a line break, …); [`Error::LayerMissing`] when a layer
    /// of the image is not in the store; [`Error::Io`] when the record cannot be written.
    pub fn tag(&self, name: &str, image: &Image) -> Result<()> {
        records::check_name(name)?;
        for layer in &image.layers {
            if self.layer(&layer.digest)?.is_none() {
                return Err(Error::LayerMissing {
                    image: name.to_owned(),
                    layer: layer.digest.clone(),
                });
            }
        }
        let record = ImageRecord {
            name: name.to_owned(),
            manifest_digest: image.manifest_digest.clone(),
            config_digest: image.config_digest.clone(),
            layers: image.layers.iter().map(|l| l.digest.clone()).collect(),
            config: image.config.clone(),
        };
        let bytes = records::to_json(&record)?;
        let tmp = self.tmp_path("record")?;
        write_synced(&tmp, &bytes)?;
        let images = self.root.join(IMAGES);
        let dest = images.join(records::file_name(name));
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("rename into place", &dest)(e));
        }
        fsync_dir(&images)
    }

    /// Removes the record of `name`. Returns whether there was one. The image's layers stay
    /// until [`LayerStore::gc`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for a name [`LayerStore::tag`] refuses; [`Error::Io`] when the
    /// record cannot be removed.
    pub fn untag(&self, name: &str) -> Result<bool> {
        records::check_name(name)?;
        let images = self.root.join(IMAGES);
        let path = images.join(records::file_name(name));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error("remove", &path)(e)),
        }
        fsync_dir(&images)?;
        Ok(true)
    }

    /// Reads a record: the outer error for I/O, the inner one (a reason) for damage.
    fn read_record(&self, path: &Path) -> Result<std::result::Result<ImageRecord, String>> {
        let meta = fs::symlink_metadata(path).map_err(io_error("stat", path))?;
        if !meta.is_file() {
            return Ok(Err("not a regular file".into()));
        }
        if meta.len() > 16 << 20 {
            return Ok(Err("larger than 16 MiB".into()));
        }
        let bytes = fs::read(path).map_err(io_error("read", path))?;
        Ok(records::parse(path, &bytes))
    }

    /// The image recorded under `name`, its layers read from the store, or `None` when
    /// nothing is (a damaged record counts as nothing: [`LayerStore::verify`] reports it).
    ///
    /// # Errors
    ///
    /// [`Error::LayerMissing`] when a layer of the image is not in the store (removed, or
    /// quarantined by [`LayerStore::verify`]): import or pull the image again;
    /// [`Error::InvalidValue`] for a name [`LayerStore::tag`] refuses; [`Error::Io`] when the
    /// record or a layer's description cannot be read.
    pub fn image(&self, name: &str) -> Result<Option<Image>> {
        records::check_name(name)?;
        let path = self.root.join(IMAGES).join(records::file_name(name));
        match self.read_record(&path) {
            Ok(Ok(record)) => self.resolve(record).map(Some),
            Ok(Err(_)) => Ok(None),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The image of manifest `manifest` recorded under some name, if any (see
    /// [`LayerStore::image`]).
    ///
    /// # Errors
    ///
    /// As [`LayerStore::image`].
    pub fn image_by_digest(&self, manifest: &Digest) -> Result<Option<Image>> {
        match self
            .images()?
            .into_iter()
            .find(|r| r.manifest_digest == *manifest)
        {
            Some(record) => self.resolve(record).map(Some),
            None => Ok(None),
        }
    }

    /// Every image recorded by name, ordered by name, as recorded (their layers are not looked
    /// up: [`LayerStore::image`] does). A damaged record, or one that cannot be read, is left
    /// out ([`LayerStore::verify`] reports it).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store's `images/` directory cannot be read.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let images = self.root.join(IMAGES);
        let mut found = Vec::new();
        for entry in fs::read_dir(&images).map_err(io_error("read", &images))? {
            let entry = entry.map_err(io_error("read", &images))?;
            if let Ok(Ok(record)) = self.read_record(&entry.path()) {
                found.push(record);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// The image a record describes, its layers read from the store.
    fn resolve(&self, record: ImageRecord) -> Result<Image> {
        let mut layers = Vec::with_capacity(record.layers.len());
        for digest in &record.layers {
            match self.layer(digest)? {
                Some(layer) => layers.push(layer),
                None => {
                    return Err(Error::LayerMissing {
                        image: record.name,
                        layer: digest.clone(),
                    })
                }
            }
        }
        Ok(Image {
            layers,
            config: record.config,
            manifest_digest: record.manifest_digest,
            config_digest: record.config_digest,
        })
    }
}

impl OpaqueXattr {
    fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            OpaqueXattr::Trusted => c"trusted.overlay.opaque",
            OpaqueXattr::User => c"user.overlay.opaque",
        }
    }
}
