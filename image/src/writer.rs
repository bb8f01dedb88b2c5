//! Writing OCI image layouts (OCI image-spec, "Image Layout"): layers built entry by entry as
//! tar streams, image configs, manifests and `index.json`, without docker or any other tool.
//!
//! A [`LayoutWriter`] creates the layout directory; each [`LayerBuilder`] lists the entries of
//! one layer (directories, files, symbolic and hard links, OCI whiteouts and opaque markers),
//! which [`LayoutWriter::add_layer`] writes as a blob; [`LayoutWriter::finish_manifest`] writes
//! an image config and a manifest for the layers added since the previous manifest and tags it;
//! [`LayoutWriter::close`] writes `index.json`. [`LayoutWriter::finish`] does the last two for a
//! layout of one image.
//!
//! The output is deterministic: every entry has uid and gid 0, no user or group name, the same
//! modification time (0 unless [`LayerBuilder::mtime`] says otherwise), and entries are written
//! in the order they were given, so the same layer built twice, in one layout or in two, has
//! the same `diff_id` and blob digest — which is what lets a [`LayerStore`](crate::LayerStore)
//! share it between images. Configs carry no `created` time or `history` for the same reason.
//!
//! See [`LayoutWriter`] for an example.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::io_error;
use crate::layout::{oci_arch, REF_NAME};
use crate::ImageConfig;
use crate::{Error, Result};

const OCI_LAYOUT_VERSION: &str = "1.0.0";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The prefix of a whiteout's name (OCI image-spec, "Image Layer Filesystem Changeset" §
/// "Whiteouts").
const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker (same section, "Opaque Whiteout").
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The prefix of blobs being written, in `blobs/sha256/`.
const TMP_PREFIX: &str = ".palisade-tmp-";

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// How a layer blob is compressed, which fixes its media type (OCI image-spec, "Image Layer
/// Filesystem Changeset" § "Representation", and "Image Manifest" § `layers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar stream: `application/vnd.oci.image.layer.v1.tar`. The blob digest equals the
    /// `diff_id`.
    None,
    /// gzip (RFC 1952): `application/vnd.oci.image.layer.v1.tar+gzip`, the most widely read.
    #[default]
    Gzip,
    /// Zstandard (RFC 8878) at the pure-Rust `ruzstd` encoder's fastest level:
    /// `application/vnd.oci.image.layer.v1.tar+zstd`. The layer's tar stream is held in memory
    /// while it is compressed.
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer blob compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Where a file entry's content comes from.
#[derive(Clone, Debug)]
enum Content {
    Bytes(Vec<u8>),
    Host(PathBuf),
}

/// One entry of a [`LayerBuilder`], paths as given (checked when the layer is written).
#[derive(Clone, Debug)]
enum Entry {
    Dir {
        path: PathBuf,
        mode: u32,
    },
    File {
        path: PathBuf,
        content: Content,
        mode: u32,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    Hardlink {
        path: PathBuf,
        target: PathBuf,
    },
    Whiteout {
        path: PathBuf,
    },
    Opaque {
        dir: PathBuf,
    },
}

/// The entries of one layer, written as a tar stream (OCI image-spec, "Image Layer Filesystem
/// Changeset") by [`LayoutWriter::add_layer`].
///
/// Paths are paths in the image: absolute (`/etc/passwd`) or relative to its root
/// (`etc/passwd`), the same either way; `.` components are dropped. Paths with `..` components
/// and names beginning with `.wh.` (reserved for whiteouts: use [`whiteout`](Self::whiteout)
/// and [`opaque`](Self::opaque)) are refused when the layer is written. Entries are written in
/// the order they are given. Parent directories are not added implicitly: a file whose
/// directory has no entry of its own gets one from whoever unpacks the layer (the
/// [`LayerStore`](crate::LayerStore) makes it with mode `0755`), so give directories whose mode
/// matters, before their contents.
///
/// Every entry is owned by uid and gid 0 and has the builder's modification time.
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: Vec<Entry>,
    compression: Compression,
    mtime: u64,
}

impl LayerBuilder {
    /// An empty layer, gzip-compressed, with modification times of 0 (the Unix epoch).
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    /// Adds a directory with permission bits `mode` (e.g. `0o755`, `0o1777`). The root
    /// directory, `/`, may be given to set the mode of the layer's root.
    pub fn dir(&mut self, path: impl AsRef<Path>, mode: u32) -> &mut LayerBuilder {
        self.entries.push(Entry::Dir {
            path: path.as_ref().to_path_buf(),
            mode,
        });
        self
    }

    /// Adds a regular file holding `content`, with permission bits `mode` (e.g. `0o644`,
    /// `0o4755`).
    pub fn file(
        &mut self,
        path: impl AsRef<Path>,
        content: impl Into<Vec<u8>>,
        mode: u32,
    ) -> &mut LayerBuilder {
        self.entries.push(Entry::File {
            path: path.as_ref().to_path_buf(),
            content: Content::Bytes(content.into()),
            mode,
        });
        self
    }

    /// Adds a regular file at `path` in the layer whose content is that of the host file
    /// `host_path` (a symbolic link is followed), read when the layer is written, with
    /// permission bits `mode`: e.g. a static binary such as `/bin/busybox`.
    pub fn file_from(
        &mut self,
        path: impl AsRef<Path>,
        host_path: impl AsRef<Path>,
        mode: u32,
    ) -> &mut LayerBuilder {
        self.entries.push(Entry::File {
            path: path.as_ref().to_path_buf(),
            content: Content::Host(host_path.as_ref().to_path_buf()),
            mode,
        });
        self
    }

    /// Adds a symbolic link at `path` to `target`, which is kept as given: relative (resolved
    /// from the link's directory) or absolute (resolved in the sandbox's root at run time).
    pub fn symlink(
        &mut self,
        path: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> &mut LayerBuilder {
        self.entries.push(Entry::Symlink {
            path: path.as_ref().to_path_buf(),
            target: target.as_ref().to_path_buf(),
        });
        self
    }

    /// Adds a hard link at `path` to `target`, a path in the layer of an entry given before
    /// (tar hard links name an earlier entry of the same archive).
    pub fn hardlink(
        &mut self,
        path: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> &mut LayerBuilder {
        self.entries.push(Entry::Hardlink {
            path: path.as_ref().to_path_buf(),
            target: target.as_ref().to_path_buf(),
        });
        self
    }

    /// Deletes `path` (and, for a directory, all it holds) of the layers below: writes the
    /// whiteout file `.wh.NAME` in its directory (OCI image-spec, "Image Layer Filesystem
    /// Changeset" § "Whiteouts"). The [`LayerStore`](crate::LayerStore) turns it into an
    /// overlayfs whiteout, a character device 0:0 named `NAME`.
    pub fn whiteout(&mut self, path: impl AsRef<Path>) -> &mut LayerBuilder {
        self.entries.push(Entry::Whiteout {
            path: path.as_ref().to_path_buf(),
        });
        self
    }

    /// Makes the directory `dir` opaque: what the layers below have in it is hidden, only what
    /// this layer puts there is seen. Writes the marker `DIR/.wh..wh..opq` (OCI image-spec,
    /// "Image Layer Filesystem Changeset" § "Opaque Whiteout"), which the
    /// [`LayerStore`](crate::LayerStore) turns into the overlayfs opaque xattr on `DIR`. Give
    /// `dir` its own [`dir`](Self::dir) entry too, to choose its mode.
    pub fn opaque(&mut self, dir: impl AsRef<Path>) -> &mut LayerBuilder {
        self.entries.push(Entry::Opaque {
            dir: dir.as_ref().to_path_buf(),
        });
        self
    }

    /// Sets how the layer blob is compressed (default: [`Compression::Gzip`]). The `diff_id`
    /// does not depend on it; the blob digest does.
    pub fn compression(&mut self, compression: Compression) -> &mut LayerBuilder {
        self.compression = compression;
        self
    }

    /// Sets the modification time of every entry, in seconds since the Unix epoch (default 0),
    /// e.g. from `SOURCE_DATE_EPOCH`.
    pub fn mtime(&mut self, seconds: u64) -> &mut LayerBuilder {
        self.mtime = seconds;
        self
    }

    /// How many entries the layer has so far (a whiteout or opaque marker counts as one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the layer has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A layer blob written into a layout by [`LayoutWriter::add_layer`]: what its descriptor in
/// the manifest (OCI image-spec, "Image Manifest" § `layers`) and the config's
/// `rootfs.diff_ids` say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WrittenLayer {
    /// The digest of the blob (of the compressed stream): the layer's name in the manifest and
    /// the key of a [`LayerStore`](crate::LayerStore).
    pub digest: Digest,
    /// The digest of the uncompressed tar stream (OCI image-spec, "Image Configuration" §
    /// "Layer DiffID").
    pub diff_id: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// How the blob is compressed.
    pub compression: Compression,
}

impl WrittenLayer {
    /// The blob's media type.
    pub fn media_type(&self) -> &'static str {
        self.compression.media_type()
    }
}

/// A manifest listed in `index.json`.
#[derive(Debug)]
struct IndexEntry {
    digest: Digest,
    size: u64,
    tag: Option<String>,
}

/// Writes an OCI image layout directory (OCI image-spec, "Image Layout"): `oci-layout`,
/// `blobs/sha256/<hex>` for every layer, config and manifest, and `index.json` listing the
/// manifests with their tags (annotation `org.opencontainers.image.ref.name`, OCI image-spec,
/// "Pre-Defined Annotation Keys").
///
/// Add the layers of an image, bottom (base) layer first, with [`add_layer`](Self::add_layer),
/// then write its config and manifest with [`finish_manifest`](Self::finish_manifest); repeat
/// for more images (tags) in the same layout, and end with [`close`](Self::close), which
/// writes `index.json`. A layout dropped before it is closed has no `index.json` and is not
/// readable. Blobs are written under a temporary name and renamed into place, so a blob is
/// whole whenever it has its name; the same layer added twice is stored once.
///
/// Manifests and configs use the OCI media types (`application/vnd.oci.image.manifest.v1+json`,
/// `application/vnd.oci.image.config.v1+json`); the config's `os` and `architecture` are those
/// of the [`ImageConfig`] given, or `linux` and this machine's architecture in OCI (Go `GOARCH`)
/// spelling (`amd64`, `arm64`, …).
///
/// The output is deterministic: layer entries have uid and gid 0, no user or group names and
/// one modification time, in the order given, and configs have no `created` time or `history`.
/// The same [`LayerBuilder`] written twice, in one layout or in two, gives the same `diff_id` and
/// blob digest, so a [`LayerStore`](crate::LayerStore) unpacks it once for every image that has
/// it; the same layers and config give the same manifest digest.
///
/// ```no_run
/// use palisade_image::{Compression, ImageConfig, LayerBuilder, LayoutWriter};
///
/// let mut base = LayerBuilder::new();
/// base.dir("/bin", 0o755)
///     .file_from("/bin/busybox", "/bin/busybox", 0o755)
///     .symlink("/bin/sh", "busybox")
///     .dir("/etc", 0o755)
///     .file("/etc/motd", "hello\n", 0o644);
/// let mut top = LayerBuilder::new();
/// top.whiteout("/etc/motd").compression(Compression::Zstd);
///
/// let mut config = ImageConfig::default();
/// config.cmd = vec!["/bin/sh".into()];
///
/// let mut layout = LayoutWriter::create("/tmp/my-image")?;
/// layout.add_layer(&base)?;
/// layout.add_layer(&top)?;
/// let manifest = layout.finish(Some("latest"), &config)?;
/// println!("wrote manifest {manifest}");
/// # Ok::<(), palisade_image::Error>(())
/// ```
#[derive(Debug)]
pub struct LayoutWriter {
    dir: PathBuf,
    pending: Vec<WrittenLayer>,
    manifests: Vec<IndexEntry>,
    tags: BTreeSet<String>,
}

impl LayoutWriter {
    /// Starts a layout in `dir`, which must be absent (it is created, with its parents) or an
    /// empty directory. Writes `oci-layout` (`imageLayoutVersion` 1.0.0) and `blobs/sha256/`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] when `dir` is not an empty directory; [`Error::Io`] when it
    /// cannot be created or written.
    pub fn create(dir: impl AsRef<Path>) -> Result<LayoutWriter> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        let not_empty = fs::read_dir(&dir)
            .map_err(io_error("read", &dir))?
            .next()
            .is_some();
        if not_empty {
            return Err(Error::InvalidValue {
                what: "image layout directory",
                value: dir.display().to_string(),
                reason: "not empty",
            });
        }
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_error("create", &blobs))?;
        let oci_layout = dir.join("oci-layout");
        let json = format!("{{\"imageLayoutVersion\":\"{OCI_LAYOUT_VERSION}\"}}");
        fs::write(&oci_layout, json).map_err(io_error("write", &oci_layout))?;
        Ok(LayoutWriter {
            dir,
            pending: Vec::new(),
            manifests: Vec::new(),
            tags: BTreeSet::new(),
        })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layers added since the last manifest: those the next one will list, bottom first.
    pub fn pending_layers(&self) -> &[WrittenLayer] {
        &self.pending
    }

    /// Writes `layer` as a blob and adds it on top of the layers of the image being built.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for an entry path that is refused (see [`LayerBuilder`]) or a
    /// [`file_from`](LayerBuilder::file_from) source that is not a regular file; [`Error::Io`]
    /// when a source cannot be read (or changed size while it was read) or the blob cannot be
    /// written.
    pub fn add_layer(&mut self, layer: &LayerBuilder) -> Result<WrittenLayer> {
        let blob = BlobFile::create(&self.dir)?;
        let tmp_path = blob.path.clone();
        let sink = Sink::new(blob.writer()?, layer.compression);
        let mut tar = tar::Builder::new(HashingWriter::new(sink));
        for entry in &layer.entries {
            append_entry(&mut tar, entry, layer.mtime, &tmp_path)?;
        }
        let written = tar.into_inner().map_err(io_error("write", &tmp_path))?;
        self.store_layer(blob, written, layer.compression)
    }

    /// Adds a layer from an existing tar stream (e.g. the output of `tar -c` or `docker
    /// export`), compressed with `compression`. The stream is written as it is: nothing in it
    /// is checked or made deterministic.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `tar` cannot be read or the blob cannot be written.
    pub fn add_tar_layer(
        &mut self,
        mut tar: impl Read,
        compression: Compression,
    ) -> Result<WrittenLayer> {
        let blob = BlobFile::create(&self.dir)?;
        let tmp_path = blob.path.clone();
        let mut sink = HashingWriter::new(Sink::new(blob.writer()?, compression));
        io::copy(&mut tar, &mut sink).map_err(io_error("write", &tmp_path))?;
        self.store_layer(blob, sink, compression)
    }

    /// Finishes a layer blob, names it by its digest, and records it.
    fn store_layer(
        &mut self,
        blob: BlobFile,
        written: HashingWriter<Sink>,
        compression: Compression,
    ) -> Result<WrittenLayer> {
        let (diff_id, _, sink) = written.finish();
        let (digest, size) = sink.finish().map_err(io_error("write", &blob.path))?;
        blob.persist(&digest)?;
        let layer = WrittenLayer {
            digest,
            diff_id,
            size,
            compression,
        };
        self.pending.push(layer.clone());
        Ok(layer)
    }

    /// Writes a JSON document as a blob; returns its digest and size.
    fn write_json(&self, value: &impl Serialize) -> Result<(Digest, u64)> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::Io {
            op: "serialize",
            path: self.dir.clone(),
            source: e.into(),
        })?;
        let mut blob = BlobFile::create(&self.dir)?;
        blob.file
            .write_all(&bytes)
            .map_err(io_error("write", &blob.path))?;
        let digest = Digest::of(&bytes);
        blob.persist(&digest)?;
        Ok((digest, bytes.len() as u64))
    }

    /// Writes the config (OCI image-spec, "Image Configuration") and manifest ("Image
    /// Manifest") of an image of the layers added since the previous manifest, and lists the
    /// manifest in the index, tagged `tag` if given. Returns the manifest's digest.
    ///
    /// From `config`, the config gets `Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `User`,
    /// `Labels` and `StopSignal` (empty ones are left out), `os` (default `linux`) and
    /// `architecture` (default: this machine's, e.g. `amd64`); its `rootfs.diff_ids` are the
    /// layers' `diff_id`s.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for a tag that does not follow the grammar of
    /// `org.opencontainers.image.ref.name` (OCI image-spec, "Pre-Defined Annotation Keys") or
    /// that the layout already has; [`Error::Io`] when a blob cannot be written.
    pub fn finish_manifest(&mut self, tag: Option<&str>, config: &ImageConfig) -> Result<Digest> {
        if let Some(tag) = tag {
            check_ref_name(tag)?;
            if self.tags.contains(tag) {
                return Err(Error::InvalidValue {
                    what: "image tag",
                    value: tag.to_owned(),
                    reason: "the layout already has an image with this tag",
                });
            }
        }
        let diff_ids: Vec<&str> = self.pending.iter().map(|l| l.diff_id.as_str()).collect();
        let config_file = ConfigFile {
            architecture: non_empty(&config.architecture).unwrap_or(oci_arch()),
            os: non_empty(&config.os).unwrap_or("linux"),
            config: RunConfig {
                user: non_empty(&config.user),
                env: &config.env,
                entrypoint: &config.entrypoint,
                cmd: &config.cmd,
                working_dir: non_empty(&config.working_dir),
                labels: &config.labels,
                stop_signal: non_empty(&config.stop_signal),
                exposed_ports: config
                    .exposed_ports
                    .iter()
                    .map(|port| (port.as_str(), Empty {}))
                    .collect(),
            },
            rootfs: Rootfs {
                kind: "layers",
                diff_ids,
            },
        };
        let (config_digest, config_size) = self.write_json(&config_file)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            config: Descriptor {
                media_type: OCI_CONFIG,
                digest: config_digest.as_str(),
                size: config_size,
                annotations: None,
            },
            layers: self
                .pending
                .iter()
                .map(|l| Descriptor {
                    media_type: l.media_type(),
                    digest: l.digest.as_str(),
                    size: l.size,
                    annotations: None,
                })
                .collect(),
        };
        let (digest, size) = self.write_json(&manifest)?;
        self.pending.clear();
        if let Some(tag) = tag {
            self.tags.insert(tag.to_owned());
        }
        self.manifests.push(IndexEntry {
            digest: digest.clone(),
            size,
            tag: tag.map(str::to_owned),
        });
        Ok(digest)
    }

    /// Writes `index.json` (OCI image-spec, "Image Layout" § "index.json"), listing every
    /// manifest in the order they were finished, and ends the layout.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] when no manifest was written, or layers were added after the
    /// last one (they would belong to no image); [`Error::Io`] when the file cannot be written.
    pub fn close(self) -> Result<()> {
        let refuse = |reason| {
            Err(Error::InvalidValue {
                what: "image layout",
                value: self.dir.display().to_string(),
                reason,
            })
        };
        if self.manifests.is_empty() {
            return refuse("no manifest was written: call finish_manifest first");
        }
        if !self.pending.is_empty() {
            return refuse("layers were added after the last manifest");
        }
        let index = Index {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: self
                .manifests
                .iter()
                .map(|m| Descriptor {
                    media_type: OCI_MANIFEST,
                    digest: m.digest.as_str(),
                    size: m.size,
                    annotations: m
                        .tag
                        .as_deref()
                        .map(|tag| BTreeMap::from([(REF_NAME, tag)])),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&index).map_err(|e| Error::Io {
            op: "serialize",
            path: self.dir.clone(),
            source: e.into(),
        })?;
        // Written aside and renamed, so that `index.json` is never seen half-written.
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}index-{}-{}",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let path = self.dir.join("index.json");
        let written = fs::write(&tmp, &bytes)
            .map_err(io_error("write", &tmp))
            .and_then(|()| fs::rename(&tmp, &path).map_err(io_error("rename into place", &path)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// [`finish_manifest`](Self::finish_manifest) then [`close`](Self::close): ends a layout
    /// whose last (often only) image is made of the layers added since the previous manifest.
    /// Returns the manifest's digest.
    ///
    /// # Errors
    ///
    /// As [`finish_manifest`](Self::finish_manifest) and [`close`](Self::close).
    pub fn finish(mut self, tag: Option<&str>, config: &ImageConfig) -> Result<Digest> {
        let digest = self.finish_manifest(tag, config)?;
        self.close()?;
        Ok(digest)
    }
}

/// The value of an optional config string, `None` when it is empty.
fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

/// Checks a tag against the grammar of `org.opencontainers.image.ref.name` (OCI image-spec,
/// "Pre-Defined Annotation Keys"): `component ("/" component)*`, a component being
/// alphanumeric runs joined by one of `-._:@+` or by `--`.
fn check_ref_name(tag: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidValue {
            what: "image tag",
            value: tag.to_owned(),
            reason,
        })
    };
    for component in tag.split('/') {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return invalid("empty component");
        };
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return invalid("a component must begin and end with a letter or digit");
        }
        // The runs of separators between the alphanumeric runs.
        for separator in component
            .split(|c: char| c.is_ascii_alphanumeric())
            .filter(|s| !s.is_empty())
        {
            if !separator.chars().all(|c| "-._:@+".contains(c)) {
                return invalid("only letters, digits, '/' and -._:@+ are allowed");
            }
            if separator.len() > 1 && separator != "--" {
                return invalid("separators must be single (or \"--\")");
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tar entries

/// A layer path made relative and checked: `.` dropped, `..` and reserved names refused.
/// Returns the normal components.
fn layer_path(path: &Path, what: &'static str) -> Result<Vec<OsString>> {
    let refuse = |reason| Error::InvalidValue {
        what,
        value: path.display().to_string(),
        reason,
    };
    if path.as_os_str().as_bytes().contains(&0) {
        return Err(refuse("contains a NUL byte"));
    }
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(refuse("`..` components are not allowed")),
            Component::Normal(name) => {
                if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
                    return Err(refuse(
                        "names beginning with .wh. are reserved for whiteouts (use whiteout or opaque)",
                    ));
                }
                components.push(name.to_os_string());
            }
            Component::Prefix(_) => return Err(refuse("not a Unix path")),
        }
    }
    Ok(components)
}

/// Joins components into an archive path; the root is `./`.
fn join(components: &[OsString], dir: bool) -> PathBuf {
    if components.is_empty() {
        return PathBuf::from("./");
    }
    let mut path = OsString::new();
    for (i, c) in components.iter().enumerate() {
        if i > 0 {
            path.push("/");
        }
        path.push(c);
    }
    if dir {
        path.push("/");
    }
    PathBuf::from(path)
}

/// A layer path that must name something other than the root.
fn non_root_path(path: &Path, what: &'static str) -> Result<Vec<OsString>> {
    let components = layer_path(path, what)?;
    if components.is_empty() {
        return Err(Error::InvalidValue {
            what,
            value: path.display().to_string(),
            reason: "the layer's root can only be a directory",
        });
    }
    Ok(components)
}

/// A header with the fixed metadata of every entry.
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Appends one builder entry to the archive. `blob` names the blob being written, for errors.
fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    entry: &Entry,
    mtime: u64,
    blob: &Path,
) -> Result<()> {
    use tar::EntryType as T;
    let write = io_error("write", blob);
    match entry {
        Entry::Dir { path, mode } => {
            let name = join(&layer_path(path, "layer directory")?, true);
            tar.append_data(
                &mut header(T::Directory, *mode, 0, mtime),
                name,
                io::empty(),
            )
            .map_err(write)
        }
        Entry::File {
            path,
            content: Content::Bytes(bytes),
            mode,
        } => {
            let name = join(&non_root_path(path, "layer file")?, false);
            let mut h = header(T::Regular, *mode, bytes.len() as u64, mtime);
            tar.append_data(&mut h, name, bytes.as_slice())
                .map_err(write)
        }
        Entry::File {
            path,
            content: Content::Host(host),
            mode,
        } => {
            let name = join(&non_root_path(path, "layer file")?, false);
            let file = File::open(host).map_err(io_error("open", host))?;
            let meta = file.metadata().map_err(io_error("stat", host))?;
            if !meta.is_file() {
                return Err(Error::InvalidValue {
                    what: "layer file source",
                    value: host.display().to_string(),
                    reason: "not a regular file",
                });
            }
            let mut source = ExactReader {
                inner: file.take(meta.len()),
                remaining: meta.len(),
                failed: false,
            };
            let mut h = header(T::Regular, *mode, meta.len(), mtime);
            match tar.append_data(&mut h, name, &mut source) {
                Ok(()) => Ok(()),
                Err(e) if source.failed => Err(Error::Io {
                    op: "read",
                    path: host.clone(),
                    source: e,
                }),
                Err(e) => Err(write(e)),
            }
        }
        Entry::Symlink { path, target } => {
            let name = join(&non_root_path(path, "layer symlink")?, false);
            if target.as_os_str().is_empty() || target.as_os_str().as_bytes().contains(&0) {
                return Err(Error::InvalidValue {
                    what: "symlink target",
                    value: target.display().to_string(),
                    reason: "empty or contains a NUL byte",
                });
            }
            let mut h = header(T::Symlink, 0o777, 0, mtime);
            tar.append_link(&mut h, name, target).map_err(write)
        }
        Entry::Hardlink { path, target } => {
            let name = join(&non_root_path(path, "layer hard link")?, false);
            let target = join(&non_root_path(target, "hard link target")?, false);
            let mut h = header(T::Link, 0o644, 0, mtime);
            tar.append_link(&mut h, name, target).map_err(write)
        }
        Entry::Whiteout { path } => {
            let mut components = non_root_path(path, "whiteout")?;
            if let Some(last) = components.last_mut() {
                let mut name = OsString::from(WHITEOUT_PREFIX);
                name.push(&*last);
                *last = name;
            }
            let name = join(&components, false);
            tar.append_data(&mut header(T::Regular, 0o644, 0, mtime), name, io::empty())
                .map_err(write)
        }
        Entry::Opaque { dir } => {
            let mut components = layer_path(dir, "opaque directory")?;
            components.push(OsStr::new(OPAQUE_MARKER).to_os_string());
            let name = join(&components, false);
            tar.append_data(&mut header(T::Regular, 0o644, 0, mtime), name, io::empty())
                .map_err(write)
        }
    }
}

/// Reads exactly the length a header announced: a file that shrinks while it is archived is an
/// error, not a short entry that would corrupt the archive.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
    failed: bool,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match self.inner.read(buf) {
            Ok(0) if self.remaining > 0 && !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was archived",
            )),
            other => other,
        };
        match &result {
            Ok(n) => self.remaining = self.remaining.saturating_sub(*n as u64),
            Err(_) => self.failed = true,
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Blobs

/// A blob being written under a temporary name in `blobs/sha256/`, removed on drop unless it
/// was renamed to its digest.
struct BlobFile {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl BlobFile {
    fn create(layout: &Path) -> Result<BlobFile> {
        let dir = layout.join("blobs").join("sha256");
        let path = dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_error("create", &path))?;
        Ok(BlobFile {
            dir,
            path,
            file,
            persisted: false,
        })
    }

    /// A buffered writer of the file that hashes and counts what it writes.
    fn writer(&self) -> Result<HashingWriter<BufWriter<File>>> {
        let file = self
            .file
            .try_clone()
            .map_err(io_error("open", &self.path))?;
        Ok(HashingWriter::new(BufWriter::new(file)))
    }

    /// Renames the blob to `blobs/sha256/<hex>` (replacing an identical one).
    fn persist(mut self, digest: &Digest) -> Result<()> {
        self.file.sync_all().map_err(io_error("sync", &self.path))?;
        let dest = self.dir.join(digest.hex());
        fs::rename(&self.path, &dest).map_err(io_error("rename into place", &dest))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for BlobFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A writer that hashes (sha256) and counts everything written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The digest and length of what was written, and the inner writer.
    fn finish(self) -> (Digest, u64, W) {
        (
            Digest::from_sha256(self.hasher.finalize().into()),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // `n <= buf.len()` by the `Write` contract; `get` keeps a broken writer from panicking.
        if let Some(data) = buf.get(..n) {
            self.hasher.update(data);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressing end of a layer: the tar stream goes in, the blob comes out into the file.
enum Sink {
    Plain(HashingWriter<BufWriter<File>>),
    Gzip(flate2::write::GzEncoder<HashingWriter<BufWriter<File>>>),
    /// `ruzstd` compresses a whole input at once: the tar stream is gathered first.
    Zstd(Vec<u8>, HashingWriter<BufWriter<File>>),
}

impl Sink {
    fn new(file: HashingWriter<BufWriter<File>>, compression: Compression) -> Sink {
        match compression {
            Compression::None => Sink::Plain(file),
            // Level 6, no file name, mtime 0: the same input always gives the same bytes.
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Sink::Zstd(Vec::new(), file),
        }
    }

    /// Ends the compressed stream and flushes the file; returns the blob's digest and size.
    fn finish(self) -> io::Result<(Digest, u64)> {
        let file = match self {
            Sink::Plain(file) => file,
            Sink::Gzip(encoder) => encoder.finish()?,
            Sink::Zstd(tar, mut file) => {
                let compressed = ruzstd::encoding::compress_to_vec(
                    tar.as_slice(),
                    ruzstd::encoding::CompressionLevel::Fastest,
                );
                file.write_all(&compressed)?;
                file
            }
        };
        let (digest, size, mut file) = file.finish();
        file.flush()?;
        Ok((digest, size))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
            Sink::Zstd(tar, _) => tar.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
            Sink::Zstd(..) => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON documents

/// A content descriptor (OCI image-spec, "Content Descriptors").
#[derive(Serialize)]
struct Descriptor<'a> {
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    digest: &'a str,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<&'static str, &'a str>>,
}

/// An image manifest (OCI image-spec, "Image Manifest").
#[derive(Serialize)]
struct Manifest<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

/// An image index (OCI image-spec, "Image Index"): `index.json`.
#[derive(Serialize)]
struct Index<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Descriptor<'a>>,
}

/// An image config (OCI image-spec, "Image Configuration"), without `created` and `history`
/// to stay deterministic.
#[derive(Serialize)]
struct ConfigFile<'a> {
    architecture: &'a str,
    os: &'a str,
    config: RunConfig<'a>,
    rootfs: Rootfs<'a>,
}

/// `config` of an image config (OCI image-spec, "Image Configuration" § "Properties").
#[derive(Serialize)]
struct RunConfig<'a> {
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(rename = "Env", skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [String],
    #[serde(rename = "Entrypoint", skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [String],
    #[serde(rename = "Cmd", skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [String],
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(rename = "StopSignal", skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
    #[serde(rename = "ExposedPorts", skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<&'a str, Empty>,
}

/// The empty object the values of `ExposedPorts` are.
#[derive(Serialize)]
struct Empty {}

/// `rootfs` of an image config.
#[derive(Serialize)]
struct Rootfs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_the_annotation_grammar() {
        for good in ["latest", "v1.2.3", "a/b", "my--tag", "x_y", "1", "a:b@c+d"] {
            assert!(check_ref_name(good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "", "/a", "a/", "-a", "a-", "a..b", "a---b", "a b", "a-.b", "é",
        ] {
            assert!(check_ref_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn layer_paths_are_normalized_and_checked() {
        let ok = |p: &str| join(&layer_path(Path::new(p), "t").unwrap(), false);
        assert_eq!(ok("/etc/passwd"), Path::new("etc/passwd"));
        assert_eq!(ok("./etc/./passwd"), Path::new("etc/passwd"));
        assert_eq!(ok("/"), Path::new("./"));
        assert_eq!(
            join(&layer_path(Path::new("/etc"), "t").unwrap(), true),
            Path::new("etc/")
        );
        assert!(layer_path(Path::new("a/../b"), "t").is_err());
        assert!(layer_path(Path::new("a/.wh.b"), "t").is_err());
        assert!(non_root_path(Path::new("/"), "t").is_err());
    }
}
