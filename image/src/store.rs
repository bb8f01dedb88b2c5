//! The content-addressed layer store.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::extract::{extract_layer, ExtractOptions, Extracted};
use crate::layout::{Compression, LayerRef, Layout};
use crate::{sys, Image, Layer, OpaqueXattr, StoreOptions};
use crate::{Error, Result};

/// The file that records a store's settings.
const SETTINGS: &str = "store.json";
/// The file in a layer's directory that describes it.
const LAYER_META: &str = "layer.json";
/// The directory in a layer's directory that holds its files: the overlayfs lower dir.
const DIFF: &str = "diff";
/// The prefix of everything made in `tmp/`.
const TMP_PREFIX: &str = "palisade-";
/// The prefix of a layer being removed, in `tmp/`.
const RM_PREFIX: &str = "palisade-rm-";
/// The mode of every directory of the store's own (all but the layers' trees): owner only.
const PRIVATE: u32 = 0o700;

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
}

/// A store of unpacked image layers on disk, each layer unpacked once and shared by every image
/// that has it.
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
/// layers/sha256/<hex>/layer.json digest, diff_id, size and media type
/// locks/sha256-<hex>.lock        flock(2) lock serializing imports and removal of a layer
/// tmp/palisade-…                 layers being unpacked or removed
/// ```
///
/// A layer is unpacked into `tmp/` and renamed into `layers/` (`rename(2)` is atomic), under an
/// exclusive `flock(2)` on its lock file, so concurrent imports of the same layer, in threads or
/// processes, unpack it once and never see it half-made; if a rename still finds the layer there
/// (a store shared without working locks), the copy just made is discarded.
#[derive(Debug)]
pub struct LayerStore {
    root: PathBuf,
    options: StoreOptions,
}

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes the store's own directory `path` (its parent must exist) mode `0700`, or, if it is
/// there, tightens it to `0700`: an existing store of looser modes lets other users reach the
/// layers' files (such as set-user-ID programs) through it. A symbolic link is refused, but for
/// the root (`follow`), which may be one.
fn private_dir(path: &Path, follow: bool) -> Result<()> {
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
    #[allow(dead_code)] // until pulls and archive imports use it
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
        let tmp = root.join("tmp");
        for dir in [&layers, &sha256, &root.join("locks"), &tmp] {
            private_dir(dir, false)?;
        }
        tighten_children(&sha256)?;
        tighten_children(&tmp)?;
        let store = LayerStore { root, options };
        store.check_settings()?;
        Ok(store)
    }

    /// Records the settings on creation, or checks them against the recorded ones.
    fn check_settings(&self) -> Result<()> {
        let path = self.root.join(SETTINGS);
        let wanted = self.options.opaque_xattr.name();
        if !path.exists() {
            // Written aside and hard-linked into place, so that of two stores created at once
            // exactly one records its settings and the other checks them.
            let tmp = self.tmp_path("settings");
            let json = serde_json::to_vec(&Settings {
                opaque_xattr: wanted.to_owned(),
            })
            .map_err(|e| Error::Io {
                op: "write",
                path: tmp.clone(),
                source: e.into(),
            })?;
            fs::write(&tmp, json).map_err(io_error("write", &tmp))?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => return Ok(()),
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

    fn tmp_path(&self, what: &str) -> PathBuf {
        let n = NEXT_TMP.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{TMP_PREFIX}{what}-{}-{n}", std::process::id()))
    }

    /// Makes a private directory in the store's `tmp/` for work of this process (`what` names
    /// it), removed when the returned value is dropped; if the process dies first, the store
    /// collects it.
    #[allow(dead_code)] // until pulls and archive imports use it
    pub(crate) fn scratch_dir(&self, what: &str) -> Result<TmpDir> {
        let dir = TmpDir {
            path: self.tmp_path(what),
            keep: false,
        };
        fs::DirBuilder::new()
            .mode(PRIVATE)
            .create(&dir.path)
            .map_err(io_error("create", &dir.path))?;
        Ok(dir)
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

    /// The stored layer `digest`, if it is in the store.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when its description cannot be read.
    pub fn layer(&self, digest: &Digest) -> Result<Option<Layer>> {
        let dir = self.layer_dir(digest);
        let meta_path = dir.join(LAYER_META);
        let bytes = match fs::read(&meta_path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    op: "read",
                    path: meta_path,
                    source: e,
                })
            }
        };
        let meta: LayerMeta = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            op: "parse",
            path: meta_path.clone(),
            source: e.into(),
        })?;
        Ok(Some(Layer {
            digest: digest.clone(),
            diff_id: Digest::parse(&meta.diff_id)?,
            path: dir.join(DIFF),
            size: meta.size,
            expanded_size: meta.expanded_size,
            skipped_devices: meta.skipped_devices,
        }))
    }

    /// Every layer in the store, ordered by digest.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store cannot be read.
    pub fn layers(&self) -> Result<Vec<Layer>> {
        let dir = self.root.join("layers").join("sha256");
        let mut layers = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("read", &dir))? {
            let entry = entry.map_err(io_error("read", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            if let Some(layer) = self.layer(&digest)? {
                layers.push(layer);
            }
        }
        layers.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(layers)
    }

    /// Imports the image tagged `tag` (annotation `org.opencontainers.image.ref.name` in
    /// `index.json`; `None` takes the only image of the layout) from the OCI image layout
    /// directory `layout_dir` (OCI image-spec, "Image Layout"). Nested image indexes are followed
    /// to the manifest for `linux` and this machine's architecture. Every blob read is checked
    /// against its descriptor's size and sha256 digest, and every layer's uncompressed stream
    /// against the config's `rootfs.diff_ids`. Layers already in the store are not unpacked again.
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
    /// [`Error::Io`] otherwise.
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
        if let Some(stored) = self.layer(digest)? {
            return check(stored);
        }
        let file = layout.open_blob(&layer.descriptor, "layer")?;
        let mut tmp = TmpDir {
            path: self.tmp_path(digest.hex()),
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
        let meta = LayerMeta {
            digest: digest.to_string(),
            diff_id: extracted.diff_id.to_string(),
            size: layer.descriptor.size,
            media_type: layer.descriptor.media_type.clone(),
            expanded_size: extracted.expanded_size,
            skipped_devices: extracted.skipped_devices,
        };
        let meta_path = tmp.path.join(LAYER_META);
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Io {
            op: "write",
            path: meta_path.clone(),
            source: e.into(),
        })?;
        fs::write(&meta_path, json).map_err(io_error("write", &meta_path))?;

        let dest = self.layer_dir(digest);
        match fs::rename(&tmp.path, &dest) {
            Ok(()) => tmp.keep = true,
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

    /// Removes a layer from the store. Returns whether it was there. Any image still using it
    /// (a mounted overlay, say) keeps its open files but loses the directory; callers decide
    /// what is in use (see [`LayerStore::gc`]).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the layer cannot be removed.
    pub fn remove_layer(&self, digest: &Digest) -> Result<bool> {
        let _lock = self.lock(digest, false)?;
        let dir = self.layer_dir(digest);
        let doomed = self.tmp_path(&format!("rm-{}", digest.hex()));
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

    /// Removes every layer that none of `keep` uses, and what failed or crashed imports and
    /// removals left in `tmp/`. Returns the digests of the layers removed. Imports running at
    /// the same time are not disturbed (their layers are locked), but a layer an import has
    /// just returned, for an image not in `keep`, may be removed: callers run this when no
    /// import is under way or pass every image they hold.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the store cannot be read or a layer cannot be removed.
    pub fn gc(&self, keep: &[&Image]) -> Result<Vec<Digest>> {
        let used: BTreeSet<&Digest> = keep
            .iter()
            .flat_map(|image| image.layers.iter().map(|l| &l.digest))
            .collect();
        let mut removed = Vec::new();
        for layer in self.layers()? {
            if !used.contains(&layer.digest) && self.remove_layer(&layer.digest)? {
                removed.push(layer.digest);
            }
        }
        let tmp = self.root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_error("read", &tmp))? {
            let entry = entry.map_err(io_error("read", &tmp))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(RM_PREFIX) {
                remove_tree(&entry.path())?;
            } else if let Some(rest) = name.strip_prefix(TMP_PREFIX) {
                // palisade-<hex>-<pid>-<n>: an import, stale unless its layer is locked.
                let hex = rest.split('-').next().unwrap_or("");
                let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                    continue;
                };
                if let Some(_lock) = self.lock(&digest, true)? {
                    remove_tree(&entry.path())?;
                }
            }
        }
        Ok(removed)
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
