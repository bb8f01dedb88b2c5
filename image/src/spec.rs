//! One reading of the OCI image JSON formats (OCI image-spec, "Content Descriptors", "Image
//! Index", "Image Manifest"; Docker image manifest v2 schema 2 and manifest lists), their media
//! types, and the choice of a platform's manifest, for image layouts, oci-archives and registry
//! pulls alike.
//!
//! The `oci-spec` crate's image types are not used because they check while deserializing: a
//! digest such as `sha256:../../etc` fails as malformed JSON instead of as
//! [`Error::InvalidDigest`] naming it, and they refuse documents read today (descriptors
//! without `mediaType`, indexes without `schemaVersion`) while accepting digests other than
//! sha256. Here serde reads the JSON as it is, and every digest is then converted to a
//! [`Digest`] (sha256, 64 lowercase hexadecimal digits) before anything uses it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Digest, Error, Result};

/// OCI image manifest (OCI image-spec, "Image Manifest").
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker image manifest v2 schema 2.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image index (OCI image-spec, "Image Index").
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list (v2 schema 2).
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config (OCI image-spec, "Image Configuration").
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config (v2 schema 2).
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The annotation that tags a manifest in `index.json` (OCI image-spec, "Pre-Defined
/// Annotation Keys").
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How deep image indexes may nest before an image is refused.
pub(crate) const MAX_INDEX_DEPTH: usize = 4;

/// What a media type names, of what an image reference may lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An image manifest, OCI or Docker v2 schema 2.
    Manifest,
    /// An image index, OCI or a Docker manifest list.
    Index,
}

impl Kind {
    /// The kind of a manifest or index media type; `None` for anything else.
    pub(crate) fn of(media_type: &str) -> Option<Kind> {
        match media_type {
            OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
            OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
            _ => None,
        }
    }
}

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

/// A platform (OCI image-spec, "Image Index" § `platform`): `os`, `architecture` and, for ARM,
/// `variant`, in Go's spelling (`linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`).
///
/// Choosing from an image index: the `os` and `architecture` must be equal. A platform with a
/// variant takes the entry of that variant, or, for `arm64` asking `v8`, an entry without one
/// (`v8` is the only `arm64` variant in use). A platform without a variant takes the first
/// entry of its architecture, preferring one without a variant or, for `arm64`, with `v8`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    os: String,
    architecture: String,
    variant: Option<String>,
}

impl Platform {
    /// `os/architecture[/variant]`.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// This machine's: `linux` and its architecture (with `v8` for `arm64`, and for 32-bit
    /// ARM the variant the crate was built for).
    pub fn host() -> Platform {
        let architecture = oci_arch();
        let variant = match architecture {
            "arm64" => Some("v8"),
            "arm" if cfg!(target_feature = "v7") => Some("v7"),
            "arm" => Some("v6"),
            _ => None,
        };
        Platform::new("linux", architecture, variant)
    }

    /// Parses `os/architecture[/variant]`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for anything else.
    pub fn parse(value: &str) -> Result<Platform> {
        let parts: Vec<&str> = value.split('/').collect();
        let ok = |s: &&str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(Error::InvalidValue {
                what: "platform",
                value: value.to_owned(),
                reason: "expected os/architecture[/variant] in lowercase, e.g. linux/arm64/v8",
            }),
        }
    }

    /// The operating system (`linux`).
    pub fn os(&self) -> &str {
        &self.os
    }

    /// The architecture (`amd64`, `arm64`, …).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The variant (`v8`, `v7`, …), if any.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// How well the platform of an index entry, `entry`, fits this one: `None` if it does not,
    /// else a rank, lower being better.
    pub(crate) fn rank(&self, entry: &Platform) -> Option<u8> {
        if entry.os != self.os || entry.architecture != self.architecture {
            return None;
        }
        let arm64_v8 =
            |v: Option<&str>| entry.architecture == "arm64" && matches!(v, None | Some("v8"));
        let (wanted, offered) = (self.variant(), entry.variant());
        match (wanted, offered) {
            (Some(w), Some(o)) if w == o => Some(0),
            (Some(_), _) if arm64_v8(wanted) && arm64_v8(offered) => Some(1),
            (Some(_), _) => None,
            (None, None) => Some(0),
            (None, o) if arm64_v8(o) => Some(0),
            (None, Some(_)) => Some(1),
        }
    }

    /// The entry of an index's `manifests` for this platform: the best ranked (see
    /// [`Platform`]), the first of equals. Entries without a platform never match.
    pub(crate) fn choose<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let mut best: Option<(u8, &Descriptor)> = None;
        for entry in manifests {
            let Some(rank) = entry.platform.as_ref().and_then(|p| self.rank(p)) else {
                continue;
            };
            if best.is_none_or(|(r, _)| rank < r) {
                best = Some((rank, entry));
            }
        }
        best.map(|(_, entry)| entry)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = Error;

    fn from_str(s: &str) -> Result<Platform> {
        Platform::parse(s)
    }
}

/// A content descriptor (OCI image-spec, "Content Descriptors") as it is in the JSON.
#[derive(Deserialize)]
struct RawDescriptor {
    /// Missing in some documents: the media type is then the document's own.
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

/// A descriptor's `platform` as it is in the JSON.
#[derive(Deserialize)]
struct RawPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// A content descriptor whose digest was checked.
#[derive(Clone, Debug)]
pub(crate) struct Descriptor {
    /// The media type, empty when the JSON has none.
    pub(crate) media_type: String,
    pub(crate) digest: Digest,
    /// The size the descriptor announces: callers check the content against it.
    pub(crate) size: u64,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) platform: Option<Platform>,
}

impl Descriptor {
    fn from_raw(raw: &RawDescriptor) -> Result<Descriptor> {
        Ok(Descriptor {
            media_type: raw.media_type.clone(),
            digest: Digest::parse(&raw.digest)?,
            size: raw.size,
            annotations: raw.annotations.clone().unwrap_or_default(),
            platform: raw.platform.as_ref().map(|p| Platform {
                os: p.os.clone(),
                architecture: p.architecture.clone(),
                variant: p.variant.clone(),
            }),
        })
    }

    /// The value of an annotation.
    pub(crate) fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// The tag of an `index.json` entry ([`REF_NAME`]).
    pub(crate) fn ref_name(&self) -> Option<&str> {
        self.annotation(REF_NAME)
    }

    /// Checks the size of content read for the descriptor (OCI image-spec, "Content
    /// Descriptors" § `size`: content of another length must not be trusted). `what` names
    /// the content in the error (`"manifest"`, `"config"`, `"layer"`, …).
    ///
    /// # Errors
    ///
    /// [`Error::SizeMismatch`].
    pub(crate) fn check_size(&self, what: &'static str, actual: u64) -> Result<()> {
        if actual != self.size {
            return Err(Error::SizeMismatch {
                what,
                digest: self.digest.clone(),
                expected: self.size,
                actual,
            });
        }
        Ok(())
    }

    /// Checks the digest of content read for the descriptor (OCI image-spec, "Content
    /// Descriptors" § "Verification").
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`].
    pub(crate) fn check_digest(&self, what: &'static str, actual: Digest) -> Result<()> {
        if actual != self.digest {
            return Err(Error::DigestMismatch {
                what,
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Checks content read whole for the descriptor: its size, then its digest.
    ///
    /// # Errors
    ///
    /// [`Error::SizeMismatch`], [`Error::DigestMismatch`].
    pub(crate) fn verify(&self, what: &'static str, bytes: &[u8]) -> Result<()> {
        self.check_size(what, bytes.len() as u64)?;
        self.check_digest(what, Digest::of(bytes))
    }
}

fn from_raw_list(raw: &[RawDescriptor]) -> Result<Vec<Descriptor>> {
    raw.iter().map(Descriptor::from_raw).collect()
}

/// A manifest or an index, before it is known which: the fields of both, as in the JSON.
#[derive(Deserialize)]
pub(crate) struct RawDocument {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// An image index (OCI image-spec, "Image Index"), `index.json`, or a Docker manifest list.
pub(crate) struct Index {
    pub(crate) manifests: Vec<Descriptor>,
}

/// An image manifest (OCI image-spec, "Image Manifest"; Docker v2 schema 2).
pub(crate) struct Manifest {
    /// The manifest's own `mediaType`, when it has a non-empty one.
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    /// Bottom (base) layer first.
    pub(crate) layers: Vec<Descriptor>,
}

impl RawDocument {
    /// Parses JSON; `invalid` makes the caller's error from a reason.
    pub(crate) fn parse(bytes: &[u8], invalid: &dyn Fn(String) -> Error) -> Result<RawDocument> {
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("bad JSON: {e}")))
    }

    /// The document's own `mediaType`, when it has a non-empty one.
    pub(crate) fn media_type(&self) -> Option<&str> {
        self.media_type.as_deref().filter(|m| !m.is_empty())
    }

    /// Whether the document has `manifests`, as an index does.
    #[cfg(any(feature = "registry", test))]
    pub(crate) fn lists_manifests(&self) -> bool {
        self.manifests.is_some()
    }

    /// Reads the document as an index (no `manifests` is an empty list), every digest checked.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDigest`].
    pub(crate) fn index(&self) -> Result<Index> {
        Ok(Index {
            manifests: from_raw_list(self.manifests.as_deref().unwrap_or_default())?,
        })
    }

    /// Reads the document as an image manifest, every digest checked. `invalid` makes the
    /// caller's error for a manifest without `config` or `layers`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidDigest`], or what `invalid` makes.
    pub(crate) fn manifest(&self, invalid: &dyn Fn(String) -> Error) -> Result<Manifest> {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| invalid("manifest has no config".into()))?;
        let layers = self
            .layers
            .as_deref()
            .ok_or_else(|| invalid("manifest has no layers".into()))?;
        Ok(Manifest {
            media_type: self.media_type().map(str::to_owned),
            config: Descriptor::from_raw(config)?,
            layers: from_raw_list(layers)?,
        })
    }
}

/// Parses an image index (see [`RawDocument::index`]).
pub(crate) fn parse_index(bytes: &[u8], invalid: &dyn Fn(String) -> Error) -> Result<Index> {
    RawDocument::parse(bytes, invalid)?.index()
}

/// Parses an image manifest (see [`RawDocument::manifest`]).
pub(crate) fn parse_manifest(bytes: &[u8], invalid: &dyn Fn(String) -> Error) -> Result<Manifest> {
    RawDocument::parse(bytes, invalid)?.manifest(invalid)
}

impl Manifest {
    /// Checks that the config is an image config and every layer a layer this crate unpacks;
    /// returns the layers' compressions, in order.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedMediaType`] naming the first media type refused.
    pub(crate) fn compressions(&self) -> Result<Vec<Compression>> {
        if !matches!(self.config.media_type.as_str(), OCI_CONFIG | DOCKER_CONFIG) {
            return Err(Error::UnsupportedMediaType {
                what: "config",
                media_type: self.config.media_type.clone(),
            });
        }
        self.layers
            .iter()
            .map(|layer| {
                Compression::of_media_type(&layer.media_type).ok_or_else(|| {
                    Error::UnsupportedMediaType {
                        what: "layer",
                        media_type: layer.media_type.clone(),
                    }
                })
            })
            .collect()
    }
}

/// Why `index.json` gives no image: the caller names the layout or archive in its error.
#[derive(Debug)]
pub(crate) enum Unpicked {
    /// No manifest is listed (for the tag asked for, when the caller filtered by tag).
    Empty,
    /// Several images: they are given back, for the caller to name.
    Ambiguous(Vec<Descriptor>),
}

/// The entry to read of those `index.json` lists for an image (all the entries of the tag
/// asked for, or all of them). Several entries that all have a platform are one image for
/// several platforms, listed in `index.json` itself (as `docker save` and `skopeo copy
/// --all` write it): the platform chooses, and `Ok(None)` means none fits. Otherwise there
/// must be exactly one, taken whatever its platform.
fn pick_listed(
    mut candidates: Vec<Descriptor>,
    platform: &Platform,
) -> std::result::Result<Option<Descriptor>, Unpicked> {
    if candidates.len() > 1 && candidates.iter().all(|d| d.platform.is_some()) {
        return Ok(platform.choose(&candidates).cloned());
    }
    match candidates.len() {
        0 => Err(Unpicked::Empty),
        1 => Ok(candidates.pop()),
        _ => Err(Unpicked::Ambiguous(candidates)),
    }
}

/// The image manifest of an image layout or oci-archive for this machine ([`Platform::host`]):
/// the entry of `index.json` picked from `candidates` (see [`pick_listed`]), then, through
/// nested indexes (each read by `read_index`, its digest and size checked), the entry for the
/// platform (see [`follow_indexes`]).
///
/// # Errors
///
/// What `unpicked` makes when `index.json` gives no image; [`Error::NoMatchingPlatform`] when
/// an index (or a multi-platform `index.json`) has no entry for this machine;
/// [`Error::UnsupportedMediaType`]; what `read_index` and `too_deep` return.
pub(crate) fn choose_manifest(
    candidates: Vec<Descriptor>,
    unpicked: impl FnOnce(Unpicked) -> Error,
    mut read_index: impl FnMut(&Descriptor) -> Result<Index>,
    too_deep: impl FnOnce() -> Error,
) -> Result<Descriptor> {
    let platform = Platform::host();
    let no_match = |index: String| Error::NoMatchingPlatform {
        index,
        os: "linux",
        architecture: oci_arch(),
    };
    let chosen = pick_listed(candidates, &platform)
        .map_err(unpicked)?
        .ok_or_else(|| no_match("index.json".into()))?;
    follow_indexes(
        chosen,
        |d: &Descriptor| d.media_type.as_str(),
        |d| {
            let index = read_index(d)?;
            platform
                .choose(&index.manifests)
                .cloned()
                .ok_or_else(|| no_match(d.digest.to_string()))
        },
        too_deep,
    )
}

/// Follows image indexes from `start` to an image manifest: while `media_type` of the current
/// one names an index, `next` reads it and gives the entry chosen in it. At most
/// [`MAX_INDEX_DEPTH`] indexes are followed; past that, `too_deep` makes the error.
///
/// # Errors
///
/// [`Error::UnsupportedMediaType`] for something neither a manifest nor an index; what `next`
/// and `too_deep` return.
pub(crate) fn follow_indexes<T>(
    start: T,
    media_type: impl Fn(&T) -> &str,
    mut next: impl FnMut(&T) -> Result<T>,
    too_deep: impl FnOnce() -> Error,
) -> Result<T> {
    let mut current = start;
    for _ in 0..=MAX_INDEX_DEPTH {
        current = match Kind::of(media_type(&current)) {
            Some(Kind::Manifest) => return Ok(current),
            Some(Kind::Index) => next(&current)?,
            None => {
                return Err(Error::UnsupportedMediaType {
                    what: "manifest",
                    media_type: media_type(&current).to_owned(),
                })
            }
        };
    }
    Err(too_deep())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn invalid(reason: String) -> Error {
        Error::InvalidImage {
            path: "test".into(),
            reason,
        }
    }

    fn entry(digest: &str, platform: &str) -> serde_json::Value {
        let mut parts = platform.split('/');
        let mut p = serde_json::json!({
            "os": parts.next().unwrap(),
            "architecture": parts.next().unwrap(),
        });
        if let Some(v) = parts.next() {
            p["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": DOCKER_MANIFEST, "digest": digest, "size": 7, "platform": p,
        })
    }

    fn index(entries: &[serde_json::Value]) -> Index {
        let list = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": entries,
        });
        parse_index(list.to_string().as_bytes(), &invalid).unwrap()
    }

    fn chosen<'a>(index: &'a Index, platform: &str) -> Option<&'a str> {
        let platform = Platform::parse(platform).unwrap();
        platform.choose(&index.manifests).map(|d| d.digest.as_str())
    }

    /// A Docker v2 schema 2 manifest, as `docker push` and docker-registry 2.8 serve it.
    #[test]
    fn docker_v2_schema2_manifest() {
        let json = format!(
            r#"{{"schemaVersion": 2,
                "mediaType": "{DOCKER_MANIFEST}",
                "config": {{"mediaType": "{DOCKER_CONFIG}", "size": 1469, "digest": "{A}"}},
                "layers": [
                  {{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 2207025, "digest": "{B}"}},
                  {{"mediaType": "application/vnd.docker.image.rootfs.diff.tar",
                    "size": 10, "digest": "{C}"}}]}}"#
        );
        let document = RawDocument::parse(json.as_bytes(), &invalid).unwrap();
        assert_eq!(document.media_type(), Some(DOCKER_MANIFEST));
        assert!(!document.lists_manifests());
        let manifest = document.manifest(&invalid).unwrap();
        assert_eq!(manifest.media_type.as_deref(), Some(DOCKER_MANIFEST));
        assert_eq!(manifest.config.digest.as_str(), A);
        assert_eq!(manifest.config.size, 1469);
        assert_eq!(manifest.layers.len(), 2);
        assert_eq!(manifest.layers[0].digest.as_str(), B);
        assert_eq!(
            manifest.compressions().unwrap(),
            [Compression::Gzip, Compression::None]
        );
        assert_eq!(Kind::of(DOCKER_MANIFEST), Some(Kind::Manifest));
    }

    /// An OCI manifest, with annotations and a zstd layer; its `mediaType` is optional.
    #[test]
    fn oci_manifest() {
        let json = format!(
            r#"{{"schemaVersion": 2,
                "config": {{"mediaType": "{OCI_CONFIG}", "size": 3, "digest": "{A}"}},
                "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                             "size": 5, "digest": "{B}",
                             "annotations": {{"org.example": "x"}}}}],
                "annotations": {{"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}}}"#
        );
        let manifest = parse_manifest(json.as_bytes(), &invalid).unwrap();
        assert_eq!(manifest.media_type, None);
        assert_eq!(manifest.layers[0].annotation("org.example"), Some("x"));
        assert_eq!(manifest.compressions().unwrap(), [Compression::Zstd]);
        assert_eq!(Kind::of(OCI_MANIFEST), Some(Kind::Manifest));
        assert_eq!(Kind::of(OCI_INDEX), Some(Kind::Index));
        assert_eq!(Kind::of(OCI_CONFIG), None);
    }

    /// What the readers refuse: a digest that is not sha256 in canonical form (so never a
    /// path), a manifest without config or layers, media types that are not image ones.
    #[test]
    fn refusals() {
        for bad in [
            "sha256:../../../etc/passwd",
            "sha512:aaaa",
            &A.to_uppercase().replace("SHA256", "sha256"),
        ] {
            let json = format!(r#"{{"manifests": [{{"digest": "{bad}", "size": 1}}]}}"#);
            match parse_index(json.as_bytes(), &invalid) {
                Err(Error::InvalidDigest { value, .. }) => assert_eq!(value, bad),
                other => panic!("expected an invalid digest, got {:?}", other.err()),
            }
        }
        let no_config = format!(r#"{{"layers": [{{"digest": "{A}", "size": 1}}]}}"#);
        assert!(matches!(
            parse_manifest(no_config.as_bytes(), &invalid),
            Err(Error::InvalidImage { reason, .. }) if reason == "manifest has no config"
        ));
        let no_layers = format!(r#"{{"config": {{"digest": "{A}", "size": 1}}}}"#);
        assert!(matches!(
            parse_manifest(no_layers.as_bytes(), &invalid),
            Err(Error::InvalidImage { reason, .. }) if reason == "manifest has no layers"
        ));
        assert!(matches!(
            parse_index(b"{\"manifests\": 3}", &invalid),
            Err(Error::InvalidImage { reason, .. }) if reason.starts_with("bad JSON")
        ));
        let bad_layer = format!(
            r#"{{"config": {{"mediaType": "{OCI_CONFIG}", "digest": "{A}", "size": 1}},
                "layers": [{{"mediaType": "application/x-bzip2", "digest": "{B}", "size": 1}}]}}"#
        );
        let manifest = parse_manifest(bad_layer.as_bytes(), &invalid).unwrap();
        assert!(matches!(
            manifest.compressions(),
            Err(Error::UnsupportedMediaType { what: "layer", media_type }) if media_type == "application/x-bzip2"
        ));
        let bad_config = bad_layer.replace(OCI_CONFIG, "application/octet-stream");
        let manifest = parse_manifest(bad_config.as_bytes(), &invalid).unwrap();
        assert!(matches!(
            manifest.compressions(),
            Err(Error::UnsupportedMediaType { what: "config", .. })
        ));
    }

    #[test]
    fn content_is_checked_against_its_descriptor() {
        let content = b"{}";
        let json = format!(
            r#"{{"manifests": [{{"digest": "{}", "size": 2}}]}}"#,
            Digest::of(content)
        );
        let descriptor = parse_index(json.as_bytes(), &invalid).unwrap().manifests[0].clone();
        descriptor.verify("config", content).unwrap();
        assert!(matches!(
            descriptor.verify("config", b"{} "),
            Err(Error::SizeMismatch {
                what: "config",
                expected: 2,
                actual: 3,
                ..
            })
        ));
        match descriptor.verify("config", b"[]") {
            Err(Error::DigestMismatch {
                expected, actual, ..
            }) => {
                assert_eq!(expected, Digest::of(content));
                assert_eq!(actual, Digest::of(b"[]"));
            }
            other => panic!("expected a digest mismatch, got {other:?}"),
        }
    }

    /// A Docker manifest list as Docker Hub serves it (`linux/arm64/v8`, `linux/arm/v7`, …),
    /// with an attestation entry whose platform is `unknown/unknown`.
    #[test]
    fn docker_manifest_list_and_variants() {
        let list = index(&[
            entry(A, "linux/amd64"),
            entry(B, "linux/arm/v7"),
            entry(C, "linux/arm64/v8"),
            entry(A, "unknown/unknown"),
        ]);
        assert_eq!(list.manifests.len(), 4);
        assert_eq!(chosen(&list, "linux/amd64"), Some(A));
        assert_eq!(chosen(&list, "linux/arm64/v8"), Some(C));
        assert_eq!(chosen(&list, "linux/arm64"), Some(C));
        assert_eq!(chosen(&list, "linux/arm/v7"), Some(B));
        assert_eq!(chosen(&list, "linux/arm"), Some(B));
        // arm/v6 is not arm/v7, and arm64/v8 is not arm/v7.
        assert_eq!(chosen(&list, "linux/arm/v6"), None);
        assert_eq!(chosen(&list, "windows/amd64"), None);

        // An arm64 entry without a variant serves arm64/v8, after one that names v8.
        let bare = index(&[entry(A, "linux/arm64"), entry(B, "linux/arm64/v8")]);
        assert_eq!(chosen(&bare, "linux/arm64/v8"), Some(B));
        assert_eq!(chosen(&bare, "linux/arm64"), Some(A));
        let only_bare = index(&[entry(A, "linux/arm64")]);
        assert_eq!(chosen(&only_bare, "linux/arm64/v8"), Some(A));
        assert_eq!(chosen(&only_bare, "linux/arm64/v9"), None);
        // Without a variant asked for, an entry without one is preferred, else the first.
        let amd = index(&[entry(A, "linux/amd64/v3"), entry(B, "linux/amd64")]);
        assert_eq!(chosen(&amd, "linux/amd64"), Some(B));
        let arm = index(&[entry(A, "linux/arm/v6"), entry(B, "linux/arm/v7")]);
        assert_eq!(chosen(&arm, "linux/arm"), Some(A));
    }

    /// An OCI index where no entry matches, and entries without a platform.
    #[test]
    fn oci_index_without_a_match() {
        let json = format!(
            r#"{{"schemaVersion": 2, "mediaType": "{OCI_INDEX}", "manifests": [
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{A}", "size": 1,
                  "platform": {{"os": "linux", "architecture": "s390x"}}}},
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{B}", "size": 1}}]}}"#
        );
        let document = RawDocument::parse(json.as_bytes(), &invalid).unwrap();
        assert!(document.lists_manifests());
        let index = document.index().unwrap();
        assert_eq!(chosen(&index, "linux/amd64"), None);
        assert_eq!(chosen(&index, "linux/arm64/v8"), None);
        assert_eq!(chosen(&index, "linux/s390x"), Some(A));
        assert_eq!(index.manifests[1].platform, None);
    }

    fn listed(entries: &[serde_json::Value]) -> Vec<Descriptor> {
        index(entries).manifests
    }

    #[test]
    fn pick_listed_chooses_as_index_json_means() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let picked = |entries, platform| match pick_listed(entries, platform) {
            Ok(Some(d)) => Ok(Some(d.digest.to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        // One entry is the image, whatever its platform.
        let one = listed(&[entry(A, "linux/s390x")]);
        assert_eq!(picked(one, &amd64).unwrap().as_deref(), Some(A));
        // Several entries, all with a platform: one image for several platforms.
        let multi = listed(&[entry(A, "linux/s390x"), entry(B, "linux/amd64")]);
        assert_eq!(picked(multi.clone(), &amd64).unwrap().as_deref(), Some(B));
        let riscv = Platform::parse("linux/riscv64").unwrap();
        assert_eq!(picked(multi, &riscv).unwrap(), None);
        // Several entries, one without a platform: several images.
        let mut several = listed(&[entry(A, "linux/amd64")]);
        let mut plain = several[0].clone();
        plain.platform = None;
        several.push(plain);
        assert!(matches!(
            picked(several, &amd64),
            Err(Unpicked::Ambiguous(c)) if c.len() == 2
        ));
        assert!(matches!(picked(Vec::new(), &amd64), Err(Unpicked::Empty)));
    }

    /// The whole choice for a layout or archive: `index.json`, then a nested index, for this
    /// machine; and an index with nothing for it.
    #[test]
    fn choose_manifest_follows_to_this_machine() {
        let host = Platform::host().to_string();
        let nested = index(&[entry(A, "linux/s390x"), entry(B, &host)]);
        let mut top = nested.manifests[0].clone();
        top.media_type = OCI_INDEX.into();
        top.digest = Digest::parse(C).unwrap();
        top.platform = None;
        let unpicked = |_| invalid("unpicked".into());
        let too_deep = || invalid("too deep".into());
        let found = choose_manifest(
            vec![top.clone()],
            unpicked,
            |_| Ok(index(&[entry(A, "linux/s390x"), entry(B, &host)])),
            too_deep,
        );
        assert_eq!(found.unwrap().digest.as_str(), B);
        match choose_manifest(
            vec![top],
            unpicked,
            |_| Ok(index(&[entry(A, "linux/s390x")])),
            too_deep,
        ) {
            Err(Error::NoMatchingPlatform {
                index,
                os: "linux",
                architecture,
            }) => {
                assert_eq!(index, C);
                assert_eq!(architecture, oci_arch());
            }
            other => panic!("expected no matching platform, got {other:?}"),
        }
        match choose_manifest(Vec::new(), unpicked, |_| unreachable!(), too_deep) {
            Err(Error::InvalidImage { reason, .. }) => assert_eq!(reason, "unpicked"),
            other => panic!("expected the caller's error, got {other:?}"),
        }
    }

    #[test]
    fn follow_indexes_stops_at_a_manifest_or_a_depth() {
        let too_deep = || invalid("too deep".into());
        // A manifest list, then a manifest.
        let mut steps = 0;
        let found = follow_indexes(
            DOCKER_LIST,
            |m| m,
            |_| {
                steps += 1;
                Ok(OCI_MANIFEST)
            },
            too_deep,
        );
        assert_eq!(found.unwrap(), OCI_MANIFEST);
        assert_eq!(steps, 1);
        // Indexes all the way down.
        let mut steps = 0;
        let deep = follow_indexes(
            OCI_INDEX,
            |m| m,
            |_| {
                steps += 1;
                Ok(OCI_INDEX)
            },
            too_deep,
        );
        assert!(matches!(deep, Err(Error::InvalidImage { reason, .. }) if reason == "too deep"));
        assert_eq!(steps, MAX_INDEX_DEPTH + 1);
        // Neither a manifest nor an index.
        match follow_indexes(OCI_CONFIG, |m| m, |_| Ok(OCI_MANIFEST), too_deep) {
            Err(Error::UnsupportedMediaType {
                what: "manifest",
                media_type,
            }) => assert_eq!(media_type, OCI_CONFIG),
            other => panic!("expected an unsupported media type, got {other:?}"),
        }
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        let offered = |s: &str| Platform::parse(s).unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert_eq!(p.rank(&offered("linux/arm64")), Some(1));
        assert_eq!(p.rank(&offered("linux/arm64/v8")), Some(0));
        assert_eq!(p.rank(&offered("linux/amd64")), None);
        let arm = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(arm.rank(&offered("linux/arm/v6")), None);
        assert_eq!(arm.rank(&offered("linux/arm/v7")), Some(0));
        let any_arm = Platform::parse("linux/arm").unwrap();
        assert_eq!(any_arm.rank(&offered("linux/arm/v7")), Some(1));
        assert_eq!(Platform::host().os(), "linux");
        assert_eq!(Platform::host().architecture(), oci_arch());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("Linux/amd64").is_err());
    }
}
