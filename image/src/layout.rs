//! Reading an OCI image layout (OCI image-spec, "Image Layout"): `oci-layout`, `index.json`,
//! image indexes, manifests and configs, every blob checked against its descriptor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::digest::Digest;
use crate::ImageConfig;
use crate::{Error, Result};

/// The annotation that tags a manifest in `index.json` (OCI image-spec, "Pre-Defined
/// Annotation Keys").
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

/// How deep image indexes may nest before the layout is refused.
const MAX_INDEX_DEPTH: usize = 4;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// How a layer blob is compressed, from its media type (OCI image-spec, "Image Layer
/// Filesystem Changeset" § "Representation"; Docker image manifest v2 schema 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar stream.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// Zstandard (RFC 8878), possibly several frames.
    Zstd,
}

impl Compression {
    /// The compression of a layer media type, or `None` when the media type is not a layer one.
    pub(crate) fn of_media_type(media_type: &str) -> Option<Compression> {
        Some(match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Compression::None,
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Compression::Zstd,
            _ => return None,
        })
    }
}

/// A content descriptor (OCI image-spec, "Content Descriptors") as it is in the JSON.
#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}

/// A platform (OCI image-spec, "Image Index" § `platform`).
#[derive(Deserialize, Clone, Debug)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

/// A validated content descriptor.
#[derive(Clone, Debug)]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    annotations: BTreeMap<String, String>,
    platform: Option<Platform>,
}

impl Descriptor {
    fn from_raw(raw: RawDescriptor) -> Result<Descriptor> {
        Ok(Descriptor {
            media_type: raw.media_type,
            digest: Digest::parse(&raw.digest)?,
            size: raw.size,
            annotations: raw.annotations.unwrap_or_default(),
            platform: raw.platform,
        })
    }

    fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    fn matches_platform(&self) -> bool {
        self.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == oci_arch())
    }
}

/// An image index (OCI image-spec, "Image Index"), also `index.json` and Docker manifest lists.
#[derive(Deserialize)]
struct RawIndex {
    #[serde(default)]
    manifests: Vec<RawDescriptor>,
}

/// An image manifest (OCI image-spec, "Image Manifest"; Docker v2 schema 2).
#[derive(Deserialize)]
struct RawManifest {
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
}

/// An image config (OCI image-spec, "Image Configuration"), the fields that are read.
#[derive(Deserialize, Default)]
struct RawConfigFile {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RawRunConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

/// `config` of an image config: the defaults for running a container.
#[derive(Deserialize, Default)]
struct RawRunConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: Option<String>,
    /// A map whose values are empty objects (OCI image-spec, "Image Configuration").
    #[serde(rename = "ExposedPorts", default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One layer of a resolved image: its descriptor, compression, and the digest its
/// uncompressed stream must have (from the config's `rootfs.diff_ids`).
#[derive(Debug)]
pub(crate) struct LayerRef {
    pub(crate) descriptor: Descriptor,
    pub(crate) compression: Compression,
    pub(crate) diff_id: Option<Digest>,
}

/// An image resolved from a layout: manifest, config, and layers (bottom first).
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) manifest_digest: Digest,
    pub(crate) config_digest: Digest,
    pub(crate) config: ImageConfig,
    pub(crate) layers: Vec<LayerRef>,
}

/// This machine's architecture in OCI/Go spelling (OCI image-spec, "Image Index" §
/// `platform.architecture`, which uses Go's `GOARCH` values).
pub(crate) fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// An OCI image layout directory.
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// Checks the `oci-layout` file (`imageLayoutVersion` 1.x).
    pub(crate) fn open(dir: &Path) -> Result<Layout> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        #[derive(Deserialize)]
        struct OciLayout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let path = dir.join("oci-layout");
        let bytes = read_limited(&path)?;
        let file: OciLayout = parse_json(&path, &bytes)?;
        if !(file.version == "1.0.0" || file.version.starts_with("1.")) {
            return Err(Error::InvalidImage {
                path,
                reason: format!("unsupported imageLayoutVersion {:?}", file.version),
            });
        }
        Ok(layout)
    }

    /// The path of a blob: `blobs/sha256/<hex>`.
    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm())
            .join(digest.hex())
    }

    /// Opens a blob that must be a regular file of the descriptor's size.
    pub(crate) fn open_blob(&self, descriptor: &Descriptor, what: &'static str) -> Result<File> {
        let path = self.blob_path(&descriptor.digest);
        let file = File::open(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::InvalidImage {
                path: path.clone(),
                reason: format!("{what} blob {} is missing", descriptor.digest),
            },
            _ => Error::Io {
                op: "open",
                path: path.clone(),
                source,
            },
        })?;
        let meta = file.metadata().map_err(|source| Error::Io {
            op: "stat",
            path: path.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(Error::InvalidImage {
                path,
                reason: format!("{what} blob is not a regular file"),
            });
        }
        if meta.len() != descriptor.size {
            return Err(Error::SizeMismatch {
                what,
                digest: descriptor.digest.clone(),
                expected: descriptor.size,
                actual: meta.len(),
            });
        }
        Ok(file)
    }

    /// Reads a JSON blob, checks its size and digest, and parses it.
    fn read_json_blob<T: DeserializeOwned>(
        &self,
        descriptor: &Descriptor,
        what: &'static str,
    ) -> Result<T> {
        if descriptor.size > MAX_JSON {
            return Err(Error::InvalidImage {
                path: self.blob_path(&descriptor.digest),
                reason: format!(
                    "{what} of {} bytes is larger than the limit of {MAX_JSON}",
                    descriptor.size
                ),
            });
        }
        let path = self.blob_path(&descriptor.digest);
        let mut file = self.open_blob(descriptor, what)?;
        let mut bytes = Vec::new();
        (&mut file)
            .take(MAX_JSON + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| Error::Io {
                op: "read",
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 != descriptor.size {
            return Err(Error::SizeMismatch {
                what,
                digest: descriptor.digest.clone(),
                expected: descriptor.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != descriptor.digest {
            return Err(Error::DigestMismatch {
                what,
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        parse_json(&path, &bytes)
    }

    /// Finds the image: the manifest of `index.json` tagged `tag` (or its only manifest), then,
    /// through nested indexes, the manifest for linux and this machine's architecture.
    pub(crate) fn resolve(&self, tag: Option<&str>) -> Result<Resolved> {
        let index_path = self.dir.join("index.json");
        let bytes = read_limited(&index_path)?;
        let index: RawIndex = parse_json(&index_path, &bytes)?;
        let all = index
            .manifests
            .into_iter()
            .map(Descriptor::from_raw)
            .collect::<Result<Vec<_>>>()?;
        let mut candidates: Vec<Descriptor> = match tag {
            Some(tag) => {
                let found: Vec<Descriptor> = all
                    .iter()
                    .filter(|d| d.ref_name() == Some(tag))
                    .cloned()
                    .collect();
                if found.is_empty() {
                    let available = all
                        .iter()
                        .filter_map(|d| d.ref_name().map(str::to_owned))
                        .collect();
                    return Err(Error::TagNotFound {
                        path: self.dir.clone(),
                        tag: tag.to_owned(),
                        available,
                    });
                }
                found
            }
            None => all,
        };
        if candidates.is_empty() {
            return Err(Error::InvalidImage {
                path: index_path,
                reason: "index.json lists no manifest".into(),
            });
        }
        if candidates.len() > 1 && candidates.iter().all(|d| d.platform.is_some()) {
            // A multi-platform index.json: the platform chooses.
            candidates.retain(Descriptor::matches_platform);
            candidates.truncate(1);
            if candidates.is_empty() {
                return Err(Error::NoMatchingPlatform {
                    index: "index.json".into(),
                    os: "linux",
                    architecture: oci_arch(),
                });
            }
        }
        if candidates.len() > 1 {
            return Err(Error::AmbiguousImage {
                path: self.dir.clone(),
                count: candidates.len(),
            });
        }
        let mut descriptor = candidates.remove(0);
        for _ in 0..=MAX_INDEX_DEPTH {
            match descriptor.media_type.as_str() {
                OCI_MANIFEST | DOCKER_MANIFEST => return self.read_image(descriptor),
                OCI_INDEX | DOCKER_LIST => {
                    let index: RawIndex = self.read_json_blob(&descriptor, "image index")?;
                    let manifests = index
                        .manifests
                        .into_iter()
                        .map(Descriptor::from_raw)
                        .collect::<Result<Vec<_>>>()?;
                    descriptor = manifests
                        .into_iter()
                        .find(Descriptor::matches_platform)
                        .ok_or_else(|| Error::NoMatchingPlatform {
                            index: descriptor.digest.to_string(),
                            os: "linux",
                            architecture: oci_arch(),
                        })?;
                }
                other => {
                    return Err(Error::UnsupportedMediaType {
                        what: "manifest",
                        media_type: other.to_owned(),
                    })
                }
            }
        }
        Err(Error::InvalidImage {
            path: self.dir.clone(),
            reason: format!("image indexes nest more than {MAX_INDEX_DEPTH} deep"),
        })
    }

    /// Reads a manifest and its config.
    fn read_image(&self, manifest_descriptor: Descriptor) -> Result<Resolved> {
        let manifest_path = self.blob_path(&manifest_descriptor.digest);
        let manifest: RawManifest = self.read_json_blob(&manifest_descriptor, "manifest")?;
        let invalid = |reason: &str| Error::InvalidImage {
            path: manifest_path.clone(),
            reason: reason.to_owned(),
        };
        let config_descriptor = Descriptor::from_raw(
            manifest
                .config
                .ok_or_else(|| invalid("manifest has no config"))?,
        )?;
        let layers = manifest
            .layers
            .ok_or_else(|| invalid("manifest has no layers"))?;
        if !matches!(
            config_descriptor.media_type.as_str(),
            OCI_CONFIG | DOCKER_CONFIG
        ) {
            return Err(Error::UnsupportedMediaType {
                what: "config",
                media_type: config_descriptor.media_type,
            });
        }
        let config: RawConfigFile = self.read_json_blob(&config_descriptor, "config")?;
        let diff_ids = config
            .rootfs
            .as_ref()
            .map(|r| {
                r.diff_ids
                    .iter()
                    .map(|d| Digest::parse(d))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?
            .unwrap_or_default();
        if !diff_ids.is_empty() && diff_ids.len() != layers.len() {
            return Err(Error::InvalidImage {
                path: self.blob_path(&config_descriptor.digest),
                reason: format!(
                    "config lists {} diff_ids for a manifest of {} layers",
                    diff_ids.len(),
                    layers.len()
                ),
            });
        }
        let mut refs = Vec::with_capacity(layers.len());
        for (i, raw) in layers.into_iter().enumerate() {
            let descriptor = Descriptor::from_raw(raw)?;
            let compression =
                Compression::of_media_type(&descriptor.media_type).ok_or_else(|| {
                    Error::UnsupportedMediaType {
                        what: "layer",
                        media_type: descriptor.media_type.clone(),
                    }
                })?;
            refs.push(LayerRef {
                descriptor,
                compression,
                diff_id: diff_ids.get(i).cloned(),
            });
        }
        let run = config.config.unwrap_or_default();
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let image_config = ImageConfig {
            env: run.env.unwrap_or_default(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            working_dir: non_empty(run.working_dir),
            user: non_empty(run.user),
            labels: run.labels.unwrap_or_default(),
            stop_signal: non_empty(run.stop_signal),
            exposed_ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
            os: non_empty(config.os),
            architecture: non_empty(config.architecture),
        };
        Ok(Resolved {
            manifest_digest: manifest_descriptor.digest,
            config_digest: config_descriptor.digest,
            config: image_config,
            layers: refs,
        })
    }
}

/// Reads a small file of the layout (`oci-layout`, `index.json`) whole.
fn read_limited(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::InvalidImage {
            path: path.to_path_buf(),
            reason: "missing (not an OCI image layout?)".into(),
        },
        _ => Error::Io {
            op: "open",
            path: path.to_path_buf(),
            source,
        },
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_JSON {
        return Err(Error::InvalidImage {
            path: path.to_path_buf(),
            reason: format!("larger than the limit of {MAX_JSON} bytes"),
        });
    }
    Ok(bytes)
}

fn parse_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage {
        path: path.to_path_buf(),
        reason: format!("bad JSON: {e}"),
    })
}
