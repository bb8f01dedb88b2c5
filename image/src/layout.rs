//! Reading an OCI image layout (OCI image-spec, "Image Layout"): `oci-layout`, `index.json`,
//! image indexes, manifests and configs, every blob checked against its descriptor.

use crate::sys;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::digest::Digest;
use crate::ImageConfig;
use crate::{Error, Result};

use crate::spec::{self, Unpicked};
pub(crate) use crate::spec::{oci_arch, Compression, Descriptor, REF_NAME};

/// The largest JSON document (index, manifest, config) read into memory.
const MAX_JSON: u64 = 16 << 20;

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
        descriptor.check_size(what, meta.len())?;
        Ok(file)
    }

    /// Reads a JSON blob whole and checks its size and digest.
    fn read_json_bytes(&self, descriptor: &Descriptor, what: &'static str) -> Result<Vec<u8>> {
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
        let file = self.open_blob(descriptor, what)?;
        let bytes = sys::read_bounded(file, MAX_JSON, &path)?;
        descriptor.verify(what, &bytes)?;
        Ok(bytes)
    }

    /// The error of a JSON document of the layout: `InvalidImage` naming its path.
    fn invalid(path: &Path) -> impl Fn(String) -> Error + '_ {
        move |reason| Error::InvalidImage {
            path: path.to_path_buf(),
            reason,
        }
    }

    /// Finds the image: the manifest of `index.json` tagged `tag` (or its only manifest), then,
    /// through nested indexes, the manifest for linux and this machine's architecture.
    pub(crate) fn resolve(&self, tag: Option<&str>) -> Result<Resolved> {
        let index_path = self.dir.join("index.json");
        let bytes = read_limited(&index_path)?;
        let all = spec::parse_index(&bytes, &Layout::invalid(&index_path))?.manifests;
        let candidates: Vec<Descriptor> = match tag {
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
        let manifest = spec::choose_manifest(
            candidates,
            |unpicked| match unpicked {
                Unpicked::Empty => Error::InvalidImage {
                    path: index_path.clone(),
                    reason: "index.json lists no manifest".into(),
                },
                Unpicked::Ambiguous(candidates) => Error::AmbiguousImage {
                    path: self.dir.clone(),
                    count: candidates.len(),
                },
            },
            |d| {
                let bytes = self.read_json_bytes(d, "image index")?;
                spec::parse_index(&bytes, &Layout::invalid(&self.blob_path(&d.digest)))
            },
            || Error::InvalidImage {
                path: self.dir.clone(),
                reason: format!(
                    "image indexes nest more than {} deep",
                    spec::MAX_INDEX_DEPTH
                ),
            },
        )?;
        self.read_image(manifest)
    }

    /// Reads a manifest and its config.
    fn read_image(&self, manifest_descriptor: Descriptor) -> Result<Resolved> {
        let manifest_path = self.blob_path(&manifest_descriptor.digest);
        let bytes = self.read_json_bytes(&manifest_descriptor, "manifest")?;
        let manifest = spec::parse_manifest(&bytes, &Layout::invalid(&manifest_path))?;
        let compressions = manifest.compressions()?;
        let config_descriptor = manifest.config;
        let layers = manifest.layers;
        let config_path = self.blob_path(&config_descriptor.digest);
        let bytes = self.read_json_bytes(&config_descriptor, "config")?;
        let config: RawConfigFile = parse_json(&config_path, &bytes)?;
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
                path: config_path,
                reason: format!(
                    "config lists {} diff_ids for a manifest of {} layers",
                    diff_ids.len(),
                    layers.len()
                ),
            });
        }
        let refs = layers
            .into_iter()
            .zip(compressions)
            .enumerate()
            .map(|(i, (descriptor, compression))| LayerRef {
                descriptor,
                compression,
                diff_id: diff_ids.get(i).cloned(),
            })
            .collect();
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
    let bytes = sys::read_bounded(file, MAX_JSON, path)?;
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
