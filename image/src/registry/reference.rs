//! Image references: `[registry/]repository[:tag][@digest]`, with Docker Hub's naming rules.

use std::fmt;
use std::str::FromStr;

use crate::{Digest, Error, Result};

/// The registry of references that name none.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's registry API (`docker.io` itself only redirects).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The tag of references that name neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// The longest repository name, registry included (distribution's `reference` grammar).
const MAX_NAME: usize = 255;
/// The longest tag: one word character then up to 127 more (distribution spec, "Pulling
/// manifests").
const MAX_TAG: usize = 128;

/// A reference to an image in a registry: `[registry/]repository[:tag][@digest]`.
///
/// The grammar is distribution's (the `reference` package of the registry the OCI
/// distribution spec grew from, and the spec's own patterns for `<name>` and `<reference>`):
///
/// - repository: path components of lowercase letters and digits, joined inside a component by
///   one `.`, one or two `_`, or any number of `-`, and separated by `/`
///   (`[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`);
/// - tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`;
/// - digest: `sha256:` and 64 lowercase hexadecimal digits (the only algorithm this crate
///   accepts, see [`Digest`]).
///
/// Docker's rules fill in what is left out: the first component names a registry when it
/// has a `.` or a `:` (a port), is `localhost`, or has an uppercase letter (which a repository
/// cannot); otherwise the registry is `docker.io`, where a one-component repository lives
/// under `library/` (`alpine` is `docker.io/library/alpine`). With neither a tag nor a digest
/// the tag is `latest`. `index.docker.io` is `docker.io`.
///
/// [`Display`](fmt::Display) writes the full form, which parses back to the same reference:
/// `alpine:3.20` is `docker.io/library/alpine:3.20`.
///
/// ```
/// use palisade_image::registry::Reference;
///
/// let r: Reference = "alpine".parse()?;
/// assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
/// assert_eq!(r.api_host(), "registry-1.docker.io");
/// let r: Reference = "localhost:5000/x/y:tag".parse()?;
/// assert_eq!((r.registry(), r.repository(), r.tag()), ("localhost:5000", "x/y", Some("tag")));
/// # Ok::<(), palisade_image::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference (see [`Reference`] for the grammar and the defaults).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidReference`] for a reference that does not follow the grammar, and
    /// [`Error::InvalidDigest`] for a digest that is not a sha256 one.
    pub fn parse(value: &str) -> Result<Reference> {
        let invalid = |reason| Error::InvalidReference {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(invalid("empty reference"));
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (value, None),
        };
        // A tag follows the last `:` after the last `/`; a `:` before it is a registry's port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(invalid)?;
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry(first) => (first, path),
            _ => (DOCKER_HUB, name),
        };
        check_registry(registry).map_err(invalid)?;
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        check_repository(path).map_err(invalid)?;
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(invalid("the name is longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry: a host name or address, with a port if one was given
    /// (`docker.io`, `localhost:5000`, `ghcr.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host (and port) that serves the registry's API: the registry, but for `docker.io`,
    /// served by `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The repository, the `<name>` of the distribution spec's API paths (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag: the one given, `latest` when neither a tag nor a digest was, `None` for a
    /// reference by digest alone.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, for a reference by digest.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What a manifest request names (distribution spec, "Pulling manifests"): the digest if
    /// there is one (it pins the content), else the tag.
    pub fn manifest_reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag,
            (None, None) => DEFAULT_TAG,
        }
    }
}

/// Whether the first component of a name is a registry (Docker's rule).
fn is_registry(first: &str) -> bool {
    first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

/// `host[:port]`: DNS labels of letters, digits and inner `-` joined by `.`, or a bracketed IPv6
/// address.
fn check_registry(registry: &str) -> std::result::Result<(), &'static str> {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err("unclosed `[` in the registry's IPv6 address");
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("bad IPv6 address in the registry");
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return Err("unexpected characters after the registry's IPv6 address"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the registry's port is not a number");
        }
    }
    if !registry.starts_with('[') {
        if host.is_empty() {
            return Err("empty registry host");
        }
        for label in host.split('.') {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_alphanumeric();
            if bytes.is_empty()
                || !bytes.first().is_some_and(alnum)
                || !bytes.last().is_some_and(alnum)
                || !bytes.iter().all(|b| alnum(b) || *b == b'-')
            {
                return Err("the registry host is not a valid host name");
            }
        }
    }
    Ok(())
}

/// Path components of `[a-z0-9]+` joined by `.`, `_`, `__` or `-+`.
fn check_repository(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty repository name");
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component in the repository name");
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("repository names must be lowercase");
        }
        let bytes = component.as_bytes();
        let mut i = 0;
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        loop {
            let start = i;
            while i < bytes.len() && alnum(bytes[i]) {
                i += 1;
            }
            if i == start {
                return Err("a repository path component must start and end with [a-z0-9]");
            }
            if i == bytes.len() {
                break;
            }
            let sep_start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let ok = match &component[sep_start..i] {
                "." | "_" | "__" => true,
                sep => sep.bytes().all(|b| b == b'-'),
            };
            if !ok {
                return Err("repository path components may only join [a-z0-9] runs with ., _, __ or dashes");
            }
        }
    }
    Ok(())
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn check_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    match bytes.first() {
        None => Err("empty tag"),
        Some(_) if bytes.len() > MAX_TAG => Err("a tag has at most 128 characters"),
        Some(&first) if !word(first) => Err("a tag starts with a letter, digit or `_`"),
        Some(_) if !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') => {
            Err("a tag has only letters, digits, `_`, `.` and `-`")
        }
        Some(_) => Ok(()),
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (
            r.registry().to_owned(),
            r.repository().to_owned(),
            r.tag().map(str::to_owned),
            r.digest().map(|d| d.to_string()),
        )
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(
            parts("alpine"),
            (
                "docker.io".into(),
                "library/alpine".into(),
                Some("latest".into()),
                None
            )
        );
        assert_eq!(parts("alpine:3.20").2.as_deref(), Some("3.20"));
        assert_eq!(parts("user/app").1, "user/app");
        assert_eq!(parts("index.docker.io/alpine").1, "library/alpine");
        let r = Reference::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn registries_and_digests() {
        let d = format!("sha256:{HEX}");
        assert_eq!(
            parts(&format!("docker.io/library/alpine@{d}")),
            (
                "docker.io".into(),
                "library/alpine".into(),
                None,
                Some(d.clone())
            )
        );
        assert_eq!(
            parts("localhost:5000/x/y:tag"),
            (
                "localhost:5000".into(),
                "x/y".into(),
                Some("tag".into()),
                None
            )
        );
        assert_eq!(
            parts(&format!("ghcr.io/o/r:t@{d}")),
            (
                "ghcr.io".into(),
                "o/r".into(),
                Some("t".into()),
                Some(d.clone())
            )
        );
        assert_eq!(parts("localhost/x").0, "localhost");
        assert_eq!(parts("Registry/x").0, "Registry");
        assert_eq!(parts("[::1]:5000/x").0, "[::1]:5000");
        assert_eq!(parts("a__b/c-----d.e_f:T_.-x").1, "a__b/c-----d.e_f");
        let r = Reference::parse(&format!("ghcr.io/o/r:t@{d}")).unwrap();
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.api_host(), "ghcr.io");
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "Alpine",
            "docker.io/Alpine",
            "alpine:",
            "alpine:-x",
            "alpine:a/b",
            "alpine@sha256:abc",
            "alpine@md5:0123",
            "a//b",
            "/a",
            "a/",
            "a..b",
            "a___b",
            "a.-b",
            "-a",
            "a-",
            "host:port/x",
            "bad_host.io/x",
            "[::1/x",
            "a b",
            "a:b:c",
        ] {
            assert!(
                matches!(
                    Reference::parse(bad),
                    Err(Error::InvalidReference { .. } | Error::InvalidDigest { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
        let long_name = "a".repeat(256);
        assert!(Reference::parse(&long_name).is_err());
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(
            registry in proptest::option::of("(localhost|[a-z][a-z0-9-]{0,8}[a-z0-9]\\.io)(:[0-9]{1,5})?"),
            path in "[a-z0-9]{1,5}(([._]|__|-{1,3})[a-z0-9]{1,4})?(/[a-z0-9]{1,5}){0,2}",
            tag in proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut s = String::new();
            if let Some(registry) = &registry {
                s.push_str(registry);
                s.push('/');
            }
            s.push_str(&path);
            if let Some(tag) = &tag {
                s.push(':');
                s.push_str(tag);
            }
            if let Some(hex) = &digest {
                s.push_str("@sha256:");
                s.push_str(hex);
            }
            let r = Reference::parse(&s).unwrap();
            let again = Reference::parse(&r.to_string()).unwrap();
            proptest::prop_assert_eq!(&r, &again);
            proptest::prop_assert_eq!(r.to_string(), again.to_string());
            proptest::prop_assert_eq!(r.tag().map(str::to_owned), tag.or_else(|| digest.is_none().then(|| "latest".to_owned())));
        }
    }
}
