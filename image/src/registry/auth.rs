//! Registry credentials (Docker's `config.json`) and `WWW-Authenticate` challenges: see the
//! [module documentation](super) for the rules.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::{Error, Result};

/// The largest `config.json` read.
const MAX_CONFIG: u64 = 4 << 20;

/// A user name and password (or token) for a registry.
///
/// Its [`Debug`](fmt::Debug) output shows the user name only; neither appears in errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// Credentials of `username` and `password` (or an access token used as one).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The value of an `Authorization` header for Basic authentication (RFC 7617 § 2).
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The default Docker client configuration file: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`.
pub(crate) fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The `host[:port]` of an `auths` key, which may be written as a URL
/// (`https://index.docker.io/v1/`).
fn key_host(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

/// The names a registry may have in `auths`: Docker Hub's are several.
fn registry_aliases(registry: &str) -> Vec<&str> {
    if registry == super::reference::DOCKER_HUB {
        vec![
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "registry.hub.docker.com",
        ]
    } else {
        vec![registry]
    }
}

/// The credentials for `registry` in the Docker client configuration file `path`; `None` when
/// the file does not exist or has no usable entry for the registry.
pub(crate) fn credentials_from_file(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let bad = |reason: String| Error::CredentialsFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                op: "open",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let bytes = crate::sys::read_bounded(file, MAX_CONFIG, path)?;
    if bytes.len() as u64 > MAX_CONFIG {
        return Err(bad(format!("larger than {MAX_CONFIG} bytes")));
    }
    // serde_json's messages quote no input text beyond a token's position, but a position is
    // all that is kept, so that a password never reaches an error.
    let config: DockerConfig = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!(
            "not a valid config.json (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let aliases = registry_aliases(registry);
    // Exact keys first, then any key whose host matches, in a fixed order.
    let mut keys: Vec<&String> = config.auths.keys().collect();
    keys.sort();
    let found = keys
        .iter()
        .find(|k| aliases.contains(&k.as_str()))
        .or_else(|| keys.iter().find(|k| aliases.contains(&key_host(k))));
    let Some(key) = found else {
        return Ok(None);
    };
    let Some(entry) = config.auths.get(*key) else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        if !username.is_empty() {
            return Ok(Some(Credentials::new(username.clone(), password.clone())));
        }
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad(format!("the `auth` of {key:?} is not base64")))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| bad(format!("the `auth` of {key:?} is not UTF-8")))?;
    match decoded.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(Some(Credentials::new(user, password))),
        _ => Err(bad(format!(
            "the `auth` of {key:?} is not base64 of `user:password`"
        ))),
    }
}

/// A `WWW-Authenticate` challenge (RFC 9110 § 11.6.1) of a scheme this client answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic` (RFC 7617).
    Basic,
    /// `Bearer` with the token server's parameters.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses the challenges of a `WWW-Authenticate` value: `scheme param=value, …` or
/// `param="quoted, value"`, several challenges separated by commas. Returns the first Bearer
/// challenge with a realm, else Basic if offered.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut challenges: Vec<(String, HashMap<String, String>)> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        // A token: either a scheme (followed by a space or the end) or a parameter name.
        let end = rest.find(['=', ' ', ',', '\t']).unwrap_or(rest.len());
        let token = &rest[..end];
        let after = &rest[end..];
        let after_trim = after.trim_start_matches([' ', '\t']);
        if let Some(value_part) = after_trim.strip_prefix('=') {
            let value_part = value_part.trim_start_matches([' ', '\t']);
            let (value, remaining) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut consumed = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            consumed = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[consumed.min(quoted.len())..])
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim().to_owned(), &value_part[end..])
            };
            if let Some((_, params)) = challenges.last_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remaining;
        } else {
            challenges.push((token.to_ascii_lowercase(), HashMap::new()));
            rest = after;
        }
    }
    let bearer = challenges.iter().find_map(|(scheme, params)| {
        (scheme == "bearer")
            .then(|| params.get("realm"))
            .flatten()
            .map(|realm| Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
    });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|(scheme, _)| scheme == "basic")
            .then_some(Challenge::Basic)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="a, b", Bearer realm="http://x/t", scope="a,b""#),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: Some("a,b".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn credentials_are_redacted() {
        let c = Credentials::new("me", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.basic_header(), "Basic bWU6czNjcmV0");
    }

    #[test]
    fn docker_config_entries() {
        let dir = std::env::temp_dir().join(format!("pal-auth-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"aHViOmh1YnB3"},
                "localhost:5000":{"username":"u","password":"p"},
                "http://127.0.0.1:9000/v2/":{"auth":"YTpiOmM="},
                "bad.io":{"auth":"!!"}
            },"credsStore":"desktop"}"#,
        )
        .unwrap();
        let get = |r| credentials_from_file(&path, r);
        assert_eq!(
            get("docker.io").unwrap(),
            Some(Credentials::new("hub", "hubpw"))
        );
        assert_eq!(
            get("localhost:5000").unwrap(),
            Some(Credentials::new("u", "p"))
        );
        assert_eq!(
            get("127.0.0.1:9000").unwrap(),
            Some(Credentials::new("a", "b:c"))
        );
        assert_eq!(get("ghcr.io").unwrap(), None);
        let err = get("bad.io").unwrap_err();
        assert!(matches!(err, Error::CredentialsFile { .. }));
        assert_eq!(
            credentials_from_file(&dir.join("none.json"), "x").unwrap(),
            None
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
