//! The HTTP side of a pull: requests to one repository of a registry (OCI distribution spec,
//! "Pull"), with authentication and redirects.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use serde::Deserialize;
use ureq::http::{Response, StatusCode, Uri};
use ureq::Body;

use super::auth::{parse_challenge, Challenge, Credentials};
use super::{PullOptions, Reference};
use crate::{Error, Result};

/// The largest JSON answer read into memory: manifests, indexes, configs, token answers.
pub(crate) const MAX_DOCUMENT: u64 = 4 << 20;
/// The most of an error answer's body kept for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// How many redirects a blob request follows (registries send blobs to their storage).
const MAX_REDIRECTS: usize = 5;

/// The manifest media types asked for, preferred first (OCI image-spec "Image Manifest" and
/// "Image Index"; Docker image manifest v2 schema 2 and manifest list).
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// What the `Authorization` header of registry requests is, shared by the pull's threads.
#[derive(Default)]
struct AuthState {
    /// The header sent with every request to the registry, once a challenge was answered.
    header: Option<String>,
    /// Tokens already obtained in this pull, by scope.
    tokens: HashMap<String, String>,
}

/// A client of one repository of a registry.
pub(crate) struct Client {
    agent: ureq::Agent,
    /// `scheme://host[:port]` of the registry's API.
    origin: String,
    registry: String,
    repository: String,
    insecure: bool,
    credentials: Option<Credentials>,
    auth: Mutex<AuthState>,
}

/// An answer, with the URL it finally came from.
pub(crate) struct Answer {
    pub(crate) response: Response<Body>,
    pub(crate) url: String,
}

fn transport(url: &str, e: ureq::Error) -> Error {
    let source = match e {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(t) => io::Error::new(io::ErrorKind::TimedOut, t.to_string()),
        other => io::Error::other(other.to_string()),
    };
    Error::RegistryTransport {
        url: url.to_owned(),
        source,
    }
}

/// `scheme://authority` of a URI.
fn origin_of(uri: &Uri) -> Option<String> {
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// Percent-encodes a query value (RFC 3986 § 2.1), leaving the unreserved characters.
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for the repository of `reference`, with the options' credentials (given, or
    /// found in the Docker configuration file).
    pub(crate) fn new(reference: &Reference, options: &PullOptions) -> Result<Client> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Redirects are followed here, to control where the Authorization header goes.
            .max_redirects(0)
            .https_only(!options.insecure)
            .timeout_connect(Some(options.connect_timeout))
            .timeout_recv_response(Some(options.stall_timeout))
            .timeout_per_read(Some(options.stall_timeout))
            .user_agent(concat!("palisade-image/", env!("CARGO_PKG_VERSION")))
            .build();
        let scheme = if options.insecure { "http" } else { "https" };
        let credentials = match &options.credentials {
            Some(c) => Some(c.clone()),
            None => match options
                .docker_config
                .clone()
                .or_else(super::auth::default_docker_config)
            {
                Some(path) => super::auth::credentials_from_file(&path, reference.registry())?,
                None => None,
            },
        };
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            origin: format!("{scheme}://{}", reference.api_host()),
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            insecure: options.insecure,
            credentials,
            auth: Mutex::new(AuthState::default()),
        })
    }

    /// The URL of an API path of the repository: `/v2/<name>/<path>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.origin, self.repository)
    }

    fn current_auth(&self) -> Option<String> {
        self.auth.lock().ok().and_then(|s| s.header.clone())
    }

    /// GETs an API path of the repository with `headers`, answering an authentication
    /// challenge once and following redirects to other hosts (without the registry's
    /// `Authorization`). Any status is returned but 401 after authenticating.
    pub(crate) fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        let url = self.url(path);
        let mut authenticated = false;
        loop {
            let sent_auth = self.current_auth();
            let answer = self.get_following(&url, headers, sent_auth.as_deref())?;
            if answer.response.status() != StatusCode::UNAUTHORIZED || authenticated {
                if answer.response.status() == StatusCode::UNAUTHORIZED {
                    return Err(Error::RegistryAuth {
                        registry: self.registry.clone(),
                        reason: format!(
                            "{url} is refused{}",
                            if self.credentials.is_some() {
                                " with the credentials given"
                            } else {
                                " without credentials (none found)"
                            }
                        ),
                    });
                }
                return Ok(answer);
            }
            let challenge = answer
                .response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            let Some(challenge) = challenge else {
                return Err(Error::RegistryAuth {
                    registry: self.registry.clone(),
                    reason: format!("{url} answered 401 without a Basic or Bearer challenge"),
                });
            };
            self.authenticate(&challenge, sent_auth.as_deref())?;
            authenticated = true;
        }
    }

    /// Answers a challenge: sets the header later requests send.
    fn authenticate(&self, challenge: &Challenge, refused: Option<&str>) -> Result<()> {
        let header = match challenge {
            Challenge::Basic => match &self.credentials {
                Some(c) => c.basic_header(),
                None => {
                    return Err(Error::RegistryAuth {
                        registry: self.registry.clone(),
                        reason: "the registry asks for credentials (Basic) and none were found"
                            .into(),
                    })
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let cached = self
                    .auth
                    .lock()
                    .ok()
                    .and_then(|s| s.tokens.get(&scope).cloned())
                    .map(|t| format!("Bearer {t}"));
                match cached {
                    // A token another thread just got, not the one refused.
                    Some(h) if Some(h.as_str()) != refused => h,
                    _ => {
                        let token = self.fetch_token(realm, service.as_deref(), &scope)?;
                        if let Ok(mut state) = self.auth.lock() {
                            state.tokens.insert(scope, token.clone());
                        }
                        format!("Bearer {token}")
                    }
                }
            }
        };
        if let Ok(mut state) = self.auth.lock() {
            state.header = Some(header);
        }
        Ok(())
    }

    /// Asks the token server `realm` for a token (distribution's "Token Authentication
    /// Specification", "Requesting a Token").
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let refuse = |reason: String| Error::RegistryAuth {
            registry: self.registry.clone(),
            reason,
        };
        let realm_uri: Uri = realm
            .parse()
            .map_err(|_| refuse(format!("bad token realm {realm:?}")))?;
        match realm_uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.insecure => {}
            _ => {
                return Err(refuse(format!(
                    "token realm {realm:?} is not https (plain HTTP needs `insecure`)"
                )))
            }
        }
        let mut url = realm.to_owned();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        if let Some(service) = service {
            url.push_str(&format!("{sep}service={}", query_escape(service)));
            sep = '&';
        }
        url.push_str(&format!("{sep}scope={}", query_escape(scope)));
        let mut request = self.agent.get(&url);
        if let Some(c) = &self.credentials {
            request = request.header("Authorization", c.basic_header());
        }
        let response = request.call().map_err(|e| transport(&url, e))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(refuse(format!(
                "the token server {realm} refused {} (HTTP {})",
                if self.credentials.is_some() {
                    "the credentials"
                } else {
                    "an anonymous token"
                },
                status.as_u16()
            )));
        }
        if status != StatusCode::OK {
            return Err(status_error(&url, response));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let bytes = read_document(&url, response, "token answer")?;
        let answer: TokenAnswer =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidRegistryResponse {
                what: "token answer",
                url: url.clone(),
                reason: format!("bad JSON (line {}, column {})", e.line(), e.column()),
            })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| Error::InvalidRegistryResponse {
                what: "token answer",
                url,
                reason: "no usable `token` or `access_token`".into(),
            })
    }

    /// GETs `url`, following redirects; the registry's `auth` goes only to the registry.
    fn get_following(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        auth: Option<&str>,
    ) -> Result<Answer> {
        let mut url = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let uri: Uri = url.parse().map_err(|_| Error::InvalidRegistryResponse {
                what: "redirect",
                url: url.clone(),
                reason: "not a valid URL".into(),
            })?;
            let same_origin = origin_of(&uri).as_deref() == Some(self.origin.as_str());
            let mut request = self.agent.get(&url);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let (true, Some(auth)) = (same_origin, auth) {
                request = request.header("Authorization", auth);
            }
            let response = request.call().map_err(|e| transport(&url, e))?;
            if !response.status().is_redirection() {
                return Ok(Answer { response, url });
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::InvalidRegistryResponse {
                    what: "redirect",
                    url: url.clone(),
                    reason: format!("HTTP {} without a Location", response.status().as_u16()),
                })?;
            url = resolve(&uri, location).ok_or_else(|| Error::InvalidRegistryResponse {
                what: "redirect",
                url: url.clone(),
                reason: format!("bad Location {location:?}"),
            })?;
            if url.starts_with("http://") && !self.insecure {
                return Err(Error::InvalidRegistryResponse {
                    what: "redirect",
                    url,
                    reason: "redirected to plain HTTP (that needs `insecure`)".into(),
                });
            }
        }
        Err(Error::InvalidRegistryResponse {
            what: "redirect",
            url,
            reason: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}

/// Resolves a `Location` against the URL it came from (RFC 3986 § 5, for the forms registries
/// and storage services send: absolute, network-path and absolute-path references).
fn resolve(base: &Uri, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    let scheme = base.scheme_str()?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    let origin = origin_of(base)?;
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = base.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{origin}{dir}{location}"))
}

/// Reads a JSON answer whole, refusing one larger than [`MAX_DOCUMENT`].
pub(crate) fn read_document(
    url: &str,
    response: Response<Body>,
    what: &'static str,
) -> Result<Vec<u8>> {
    response
        .into_body()
        .into_with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => Error::InvalidRegistryResponse {
                what,
                url: url.to_owned(),
                reason: format!("larger than the limit of {MAX_DOCUMENT} bytes"),
            },
            e => transport(url, e),
        })
}

/// The error for an unexpected status, with the registry's error codes and messages
/// (distribution spec, "Error Codes").
pub(crate) fn status_error(url: &str, response: Response<Body>) -> Error {
    let status = response.status().as_u16();
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let body = response
        .into_body()
        .into_with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec()
        .unwrap_or_default();
    let message = match serde_json::from_slice::<Errors>(&body) {
        Ok(errors) => errors
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::from_utf8_lossy(&body)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
    };
    Error::RegistryStatus {
        url: url.to_owned(),
        status,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let base: Uri = "https://reg.io:5000/v2/x/blobs/sha256:ab".parse().unwrap();
        assert_eq!(
            resolve(&base, "https://s3.example/b?sig=1").as_deref(),
            Some("https://s3.example/b?sig=1")
        );
        assert_eq!(
            resolve(&base, "//cdn.example/b").as_deref(),
            Some("https://cdn.example/b")
        );
        assert_eq!(
            resolve(&base, "/other").as_deref(),
            Some("https://reg.io:5000/other")
        );
        assert_eq!(
            resolve(&base, "y").as_deref(),
            Some("https://reg.io:5000/v2/x/blobs/y")
        );
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
