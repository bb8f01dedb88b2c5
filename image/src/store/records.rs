//! Images recorded in the store by name: `images/<sha256 of the name>.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::{Error, ImageConfig, Result};

/// The longest name an image may be recorded under, in bytes. A reference is at most a few
/// hundred bytes (a repository name of up to 255 characters, a tag of up to 128, a digest).
pub const MAX_IMAGE_NAME: usize = 1024;

/// An image as the store records it under a name (see [`LayerStore::tag`](crate::LayerStore::tag)):
/// what [`LayerStore::images`](crate::LayerStore::images) lists, without looking its layers up.
/// [`LayerStore::image`](crate::LayerStore::image) gives the [`Image`](crate::Image), its layers
/// read from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageRecord {
    /// The name the image is recorded under: a reference such as `localhost:5000/x/y:1`, or a
    /// layout's tag.
    pub name: String,
    /// The digest of the image manifest.
    pub manifest_digest: Digest,
    /// The digest of the image config blob.
    pub config_digest: Digest,
    /// The layers' digests (their compressed blobs'), bottom layer first.
    pub layers: Vec<Digest>,
    /// The image's config.
    pub config: ImageConfig,
}

/// [`ImageConfig`] as it is written in a record.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    working_dir: Option<String>,
    user: Option<String>,
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    /// Absent in records written before it was.
    #[serde(default)]
    exposed_ports: Vec<String>,
    os: Option<String>,
    architecture: Option<String>,
}

/// A record as it is written.
#[derive(Serialize, Deserialize)]
struct RecordJson {
    name: String,
    manifest_digest: String,
    config_digest: String,
    layers: Vec<String>,
    config: ConfigJson,
}

/// Refuses a name that cannot be recorded: empty, longer than [`MAX_IMAGE_NAME`] bytes, or
/// holding a control character (a NUL byte or a line break would break what prints or parses
/// names).
pub(super) fn check_name(name: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidValue {
        what: "image name",
        value: name.chars().take(MAX_IMAGE_NAME).collect(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_IMAGE_NAME {
        return Err(invalid("longer than 1024 bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("has a control character (NUL, line break, …)"));
    }
    Ok(())
}

/// The file name of the record of `name`: the hex sha256 of the name, so that nothing of the
/// name reaches the file system.
pub(super) fn file_name(name: &str) -> String {
    format!("{}.json", Digest::of(name.as_bytes()).hex())
}

/// The bytes of a record.
pub(super) fn to_json(record: &ImageRecord) -> Result<Vec<u8>> {
    let c = &record.config;
    let json = RecordJson {
        name: record.name.clone(),
        manifest_digest: record.manifest_digest.to_string(),
        config_digest: record.config_digest.to_string(),
        layers: record.layers.iter().map(Digest::to_string).collect(),
        config: ConfigJson {
            env: c.env.clone(),
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            working_dir: c.working_dir.clone(),
            user: c.user.clone(),
            labels: c.labels.clone(),
            stop_signal: c.stop_signal.clone(),
            exposed_ports: c.exposed_ports.clone(),
            os: c.os.clone(),
            architecture: c.architecture.clone(),
        },
    };
    serde_json::to_vec_pretty(&json).map_err(|_| Error::InvalidValue {
        what: "image record",
        value: record.name.clone(),
        reason: "cannot be serialized as JSON",
    })
}

/// Parses the record in the file `path`: `Err` with the reason when it is damaged (not JSON,
/// a field missing or invalid, a name that does not match the file name).
pub(super) fn parse(path: &Path, bytes: &[u8]) -> std::result::Result<ImageRecord, String> {
    let json: RecordJson = serde_json::from_slice(bytes).map_err(|e| format!("bad JSON: {e}"))?;
    check_name(&json.name).map_err(|e| e.to_string())?;
    let expected = file_name(&json.name);
    if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
        return Err(format!(
            "records the name {:?}, which belongs in {expected}",
            json.name
        ));
    }
    let digest = |s: &str| Digest::parse(s).map_err(|e| e.to_string());
    let c = json.config;
    Ok(ImageRecord {
        name: json.name,
        manifest_digest: digest(&json.manifest_digest)?,
        config_digest: digest(&json.config_digest)?,
        layers: json
            .layers
            .iter()
            .map(|l| digest(l))
            .collect::<std::result::Result<_, _>>()?,
        config: ImageConfig {
            env: c.env,
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            working_dir: c.working_dir,
            user: c.user,
            labels: c.labels,
            stop_signal: c.stop_signal,
            exposed_ports: c.exposed_ports,
            os: c.os,
            architecture: c.architecture,
        },
    })
}
