//! Pulls from registries (OCI distribution spec, "Pull").
//!
//! [`LayerStore::pull`] fetches an image named by a [`Reference`] into the store:
//!
//! 1. The manifest is asked for (`GET /v2/<name>/manifests/<tag or digest>`) with an `Accept`
//!    of the OCI manifest and index media types and Docker's v2 schema 2 manifest and manifest
//!    list. Its bytes are checked against the reference's digest, or else against the
//!    registry's `Docker-Content-Digest` header when it sends one. An image index (manifest
//!    list) is followed to the manifest for the platform (see [`Platform`]), checked against
//!    the index's descriptor.
//! 2. The config and every layer that the store does not hold yet
//!    ([`LayerStore::layer`]) are fetched (`GET /v2/<name>/blobs/<digest>`), layers several at
//!    a time ([`PullOptions::concurrency`]). Every blob is hashed (sha256) and counted while
//!    it streams to disk, and never read past its descriptor's size; a blob whose digest or
//!    size differs is refused ([`Error::DigestMismatch`], [`Error::SizeMismatch`]) and nothing
//!    of it is kept.
//! 3. Each verified layer is unpacked into the store as soon as it has arrived, on the thread
//!    that fetched it, so that unpacking overlaps the other downloads (checking the blob again
//!    and its `diff_id`, as any import does). The blobs are linked into a scratch OCI image
//!    layout in the store, which [`LayerStore::import`] then takes as a whole: the image's
//!    expanded size is bounded there, each layer's alone while it unpacks.
//!
//! What the pull keeps, next to the store's own directories (all `0700`):
//!
//! ```text
//! blobs/sha256/<hex>                     verified manifests and configs, by digest
//! downloads/sha256-<hex>.partial         a layer being downloaded (or interrupted)
//! downloads/sha256-<hex>.lock            flock(2) lock: one downloader per layer
//! downloads/sha256-<hex>                 a verified layer blob waiting to be unpacked
//! ```
//!
//! Manifests and configs are cached by digest, so pulling an image again costs one manifest
//! request (its tag may have moved): the config and layers are not fetched again. An
//! interrupted layer download is resumed, by a later attempt of the same pull (a dropped
//! connection is retried [`PullOptions::retries`] times) or by a later pull: the bytes already
//! there are hashed again and the rest is asked for with `Range: bytes=<n>-` (RFC 9110 § 14.2);
//! a registry that answers `200` instead of `206`, or bytes that do not verify, start the
//! download over from zero. Nothing unverified enters the store.
//!
//! ## Authentication
//!
//! A registry that wants authentication answers `401 Unauthorized` with a `WWW-Authenticate`
//! challenge (RFC 9110 § 11.6.1). Two schemes are answered, once per request:
//!
//! - `Basic` (RFC 7617): the request is sent again with the credentials;
//! - `Bearer realm="…",service="…",scope="…"`, the token protocol of distribution
//!   ("Token Authentication Specification") that Docker Hub and GHCR use: a token is asked from
//!   the realm with `service` and `scope` as query parameters, with the credentials as Basic
//!   authentication when there are some and anonymously otherwise; the answer's `token` (or,
//!   from OAuth 2 servers, `access_token`) is then sent as `Authorization: Bearer`. Tokens are
//!   kept per scope for the rest of the pull, and asked again when refused (expired).
//!
//! Credentials are [`PullOptions::credentials`], or else those of a Docker client
//! configuration file ([`PullOptions::docker_config`], by default
//! `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`): its `auths` entry for the
//! registry (keyed `host[:port]` or a URL of it; for Docker Hub also
//! `https://index.docker.io/v1/`), with `auth` (base64 of `user:password`) or `username` and
//! `password`. **Known limit:** credential helpers (`credsStore`, `credHelpers`) are not run;
//! a registry whose credentials only a helper knows is pulled from anonymously. Credentials
//! never appear in errors or in `Debug` output.
//!
//! Registries are reached over HTTPS (rustls, with the Mozilla roots of `webpki-roots`), or
//! over plain HTTP with [`PullOptions::insecure`]; a token realm or a redirect to plain HTTP is
//! refused without it. Connecting and every read of an answer have timeouts
//! ([`PullOptions::connect_timeout`], [`PullOptions::stall_timeout`]); manifests, configs and
//! token answers are bounded to 4 MiB.
//!
//! ## Why `ureq`
//!
//! The HTTP client is [`ureq`] 3: blocking, small, with rustls, and without an async runtime.
//! A pull is a handful of requests and a few long downloads, which threads
//! (`std::thread::scope`, a bounded number) serve as well as tasks; `oci-client` or `reqwest`
//! would bring tokio into every program that links this crate, including the sandbox spawner,
//! whose process must stay simple before `clone(2)`, and would force a runtime on callers that
//! have none. ureq gives what the protocol needs: per-read (stall) and connect timeouts,
//! bounded body reads, range requests and manual redirects (so the registry's
//! `Authorization` header is never sent to another host, such as the blob storage a registry
//! redirects to). The distribution protocol itself (manifests, blobs, token auth) is small
//! enough to speak here, on typed OCI structures this crate already reads.

use std::path::PathBuf;
use std::time::Duration;

mod auth;
mod client;
mod pull;
mod reference;

pub use crate::spec::Platform;
pub use auth::Credentials;
pub use reference::{Reference, DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API};

#[cfg(doc)]
use crate::Error;
use crate::{Digest, Image, LayerStore, Result};

/// The default of [`PullOptions::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 3;
/// The default of [`PullOptions::retries`].
pub const DEFAULT_RETRIES: u32 = 3;

/// Settings of a pull ([`LayerStore::pull`]).
#[derive(Clone, Debug)]
pub struct PullOptions {
    pub(crate) platform: Platform,
    pub(crate) insecure: bool,
    pub(crate) concurrency: usize,
    pub(crate) retries: u32,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) docker_config: Option<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            platform: Platform::host(),
            insecure: false,
            concurrency: DEFAULT_CONCURRENCY,
            retries: DEFAULT_RETRIES,
            credentials: None,
            docker_config: None,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

impl PullOptions {
    /// The defaults: this machine's platform, HTTPS, 3 layers at a time, 3 retries of a
    /// dropped download, credentials from Docker's default `config.json`, a connect timeout of
    /// 30 s and a stall timeout of 60 s.
    pub fn new() -> PullOptions {
        PullOptions::default()
    }

    /// The platform to take from an image index (default: [`Platform::host`]). An image that
    /// is a single manifest is pulled whatever its platform.
    pub fn platform(mut self, platform: Platform) -> PullOptions {
        self.platform = platform;
        self
    }

    /// Whether to speak plain HTTP to the registry (and accept plain-HTTP token realms and
    /// redirects) instead of HTTPS. Meant for registries on localhost; contents are still
    /// verified by digest, but credentials and tokens travel in clear.
    pub fn insecure(mut self, insecure: bool) -> PullOptions {
        self.insecure = insecure;
        self
    }

    /// How many layers are downloaded at once (at least 1; default
    /// [`DEFAULT_CONCURRENCY`]).
    pub fn concurrency(mut self, layers: usize) -> PullOptions {
        self.concurrency = layers.max(1);
        self
    }

    /// How many times a layer download whose connection dropped (or stalled) is resumed within
    /// one pull (default [`DEFAULT_RETRIES`]; 0 gives up at the first drop, leaving the partial
    /// download for a later pull to resume).
    pub fn retries(mut self, retries: u32) -> PullOptions {
        self.retries = retries;
        self
    }

    /// Credentials to use instead of those of Docker's `config.json`.
    pub fn credentials(mut self, credentials: Credentials) -> PullOptions {
        self.credentials = Some(credentials);
        self
    }

    /// The Docker client configuration file to read credentials from, instead of
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
    pub fn docker_config(mut self, path: impl Into<PathBuf>) -> PullOptions {
        self.docker_config = Some(path.into());
        self
    }

    /// How long to wait for a connection to the registry (default 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> PullOptions {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request may wait for the next bytes of an answer before it is given up as
    /// stalled (default 60 s). A stalled layer download is retried like a dropped one.
    pub fn stall_timeout(mut self, timeout: Duration) -> PullOptions {
        self.stall_timeout = timeout;
        self
    }
}

/// How a layer of a pull was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerOutcome {
    /// The store held it already: nothing was fetched.
    InStore,
    /// Downloaded whole.
    Fetched,
    /// Downloaded in part: the rest of an earlier, interrupted download was asked for.
    Resumed,
    /// A complete, verified download left by an earlier pull that did not get to unpack it
    /// was used: nothing was fetched.
    Reused,
}

/// What a pull reports as it goes. Methods may be called from several threads at once (layers
/// download concurrently); every method does nothing by default.
pub trait Progress: Sync {
    /// The manifest of `reference` was resolved to `digest` (the platform's manifest, for an
    /// index).
    fn manifest(&self, reference: &Reference, digest: &Digest) {
        let _ = (reference, digest);
    }

    /// A layer of `total` bytes starts; `already` bytes of it are on disk from an earlier
    /// attempt (0 for a fresh download).
    fn layer_start(&self, layer: &Digest, total: u64, already: u64) {
        let _ = (layer, total, already);
    }

    /// `done` bytes of the layer are downloaded (those already there included).
    fn layer_progress(&self, layer: &Digest, done: u64) {
        let _ = (layer, done);
    }

    /// A layer is verified and ready (or was in the store already).
    fn layer_done(&self, layer: &Digest, outcome: LayerOutcome) {
        let _ = (layer, outcome);
    }

    /// Every layer is fetched and unpacked (each is unpacked as soon as it has arrived): the
    /// image is being checked as a whole and recorded.
    fn unpacking(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

impl LayerStore {
    /// Pulls the image `reference` from its registry into the store, records it under the
    /// reference's full name (its [`Display`](Reference#impl-Display-for-Reference) form, for
    /// [`LayerStore::image`]) and returns it, as [`LayerStore::import`] does for a layout: see the
    /// [module documentation](self) for what is fetched, verified, cached and resumed.
    ///
    /// # Errors
    ///
    /// [`Error::RegistryTransport`] when the registry cannot be reached or a download keeps
    /// failing; [`Error::RegistryStatus`] for an unexpected HTTP status (such as 404 for an
    /// unknown image); [`Error::RegistryAuth`] when authentication fails;
    /// [`Error::CredentialsFile`] for a bad `config.json`; [`Error::InvalidRegistryResponse`]
    /// for a manifest, index or token answer that cannot be used;
    /// [`Error::PlatformNotFound`] when an index has no manifest for the platform;
    /// [`Error::DigestMismatch`] and [`Error::SizeMismatch`] for content that does not match
    /// its digest; [`Error::UnsupportedMediaType`]; the errors of [`LayerStore::import`];
    /// [`Error::Io`] for the store's files.
    pub fn pull(
        &self,
        reference: &Reference,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<Image> {
        pull::pull(self, reference, options, progress)
    }

    /// Empties what pulls keep beside the layers: the cache of manifests and configs
    /// (`blobs/`) and the interrupted or unused downloads (`downloads/`), but for downloads
    /// that a pull is making now. The next pull of an image fetches its config again, and
    /// starts its interrupted downloads over. Layers and images are not touched.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when a file cannot be read or removed.
    pub fn clear_pull_cache(&self) -> Result<()> {
        pull::clear_cache(self.root())
    }
}
