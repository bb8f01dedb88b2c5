//! The pull itself: manifest resolution, the blob cache, resumable layer downloads, and the
//! scratch layout handed to [`LayerStore::import`].

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use ureq::http::StatusCode;

use super::client::{read_document, status_error, Client, MANIFEST_ACCEPT, MAX_DOCUMENT};
use super::{LayerOutcome, Platform, Progress, PullOptions, Reference};
use crate::error::io_error;
use crate::layout::{LayerRef, Layout};
use crate::spec::{
    self, Descriptor, RawDocument, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, REF_NAME,
};
use crate::store::{fsync_dir, private_dir, PRIVATE};
use crate::{sys, Digest, Error, Image, LayerStore, Result};

/// The size of the reads of a download.
const CHUNK: usize = 64 << 10;

static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

/// The store's directories of the pull: the blob cache and the downloads.
struct Dirs {
    blobs: PathBuf,
    downloads: PathBuf,
}

/// Opens a file of the store's own without following a symbolic link.
fn open_nofollow(path: &Path, write: bool, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .create(create)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

impl Dirs {
    fn open(root: &Path) -> Result<Dirs> {
        let blobs_root = root.join("blobs");
        let blobs = blobs_root.join("sha256");
        let downloads = root.join("downloads");
        for dir in [&blobs_root, &blobs, &downloads] {
            private_dir(dir, false)?;
        }
        let dirs = Dirs { blobs, downloads };
        dirs.collect_dead_writers()?;
        Ok(dirs)
    }

    /// Removes the cache's temporary files left by processes that died writing them
    /// (`.tmp-<pid>-<n>` of a pid that no longer runs).
    fn collect_dead_writers(&self) -> Result<()> {
        for entry in fs::read_dir(&self.blobs).map_err(io_error("read", &self.blobs))? {
            let entry = entry.map_err(io_error("read", &self.blobs))?;
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(".tmp-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io_error("remove", &path)(e))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Empties the cache and the downloads, but for downloads in progress (locked). Lock
    /// files stay (they are empty).
    fn clear(&self) -> Result<()> {
        for entry in fs::read_dir(&self.blobs).map_err(io_error("read", &self.blobs))? {
            let path = entry.map_err(io_error("read", &self.blobs))?.path();
            let is_tmp = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(".tmp-"));
            if !is_tmp {
                remove_if_there(&path)?;
            }
        }
        for entry in fs::read_dir(&self.downloads).map_err(io_error("read", &self.downloads))? {
            let name = entry
                .map_err(io_error("read", &self.downloads))?
                .file_name();
            let Some(hex) = name
                .to_str()
                .and_then(|n| n.strip_prefix("sha256-"))
                .and_then(|n| n.strip_suffix(".lock"))
            else {
                continue;
            };
            let Ok(digest) = Digest::parse(&format!("sha256:{hex}")) else {
                continue;
            };
            let path = self.lock_path(&digest);
            let fd =
                OwnedFd::from(open_nofollow(&path, true, false).map_err(io_error("open", &path))?);
            if !sys::flock_exclusive(fd.as_fd(), true).map_err(io_error("lock", &path))? {
                continue; // A pull is downloading it.
            }
            remove_if_there(&self.partial_path(&digest))?;
            remove_if_there(&self.done_path(&digest))?;
            // The lock file stays: removing it while another puller may have it open would let
            // a third make a new one and download the layer alongside the second.
        }
        Ok(())
    }

    fn blob(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// A cached document, if there is one whose content still has its digest (a damaged one
    /// is removed, and fetched again).
    fn cached(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.blob(digest);
        let file = match open_nofollow(&path, false, false) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &path)(e)),
        };
        let bytes = sys::read_bounded(file, MAX_DOCUMENT, &path)?;
        if Digest::of(&bytes) == *digest {
            return Ok(Some(bytes));
        }
        fs::remove_file(&path).map_err(io_error("remove", &path))?;
        Ok(None)
    }

    /// Caches a verified document: written aside, made durable, renamed into place.
    fn cache(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let tmp = self.blobs.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT_TMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(io_error("write", &tmp))
            .and_then(|()| {
                let dest = self.blob(digest);
                fs::rename(&tmp, &dest).map_err(io_error("rename into place", &dest))
            });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        fsync_dir(&self.blobs)
    }

    fn lock_path(&self, digest: &Digest) -> PathBuf {
        self.downloads.join(format!("sha256-{}.lock", digest.hex()))
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.downloads
            .join(format!("sha256-{}.partial", digest.hex()))
    }

    fn done_path(&self, digest: &Digest) -> PathBuf {
        self.downloads.join(format!("sha256-{}", digest.hex()))
    }

    /// Takes the layer's download lock (`flock(2)`), released when the descriptor is dropped.
    fn lock(&self, digest: &Digest) -> Result<OwnedFd> {
        let path = self.lock_path(digest);
        let fd = OwnedFd::from(open_nofollow(&path, true, true).map_err(io_error("open", &path))?);
        sys::flock_exclusive(fd.as_fd(), false).map_err(io_error("lock", &path))?;
        Ok(fd)
    }
}

/// The media type of a manifest or index: the `Content-Type` if it is one of the four, else
/// its `mediaType` field, else what its fields say.
fn media_type_of(content_type: Option<&str>, document: &RawDocument) -> String {
    let known = [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST];
    let header = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| known.contains(c));
    match (header, document.media_type()) {
        (Some(h), _) => h.to_owned(),
        (None, Some(m)) => m.to_owned(),
        _ if document.lists_manifests() => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

/// A manifest or index, verified.
struct Document {
    media_type: String,
    bytes: Vec<u8>,
    digest: Digest,
    parsed: RawDocument,
}

/// The error of a manifest or index the registry served at `url`.
fn invalid_document(url: &str) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::InvalidRegistryResponse {
        what: "manifest",
        url: url.to_owned(),
        reason,
    }
}

fn parse_document(url: &str, bytes: &[u8]) -> Result<RawDocument> {
    RawDocument::parse(bytes, &invalid_document(url))
}

/// Fetches the manifest named `reference` (a tag or a digest), from the cache when its digest
/// is known and cached. `expected` is the digest and size it must have, when known.
fn fetch_manifest(
    client: &Client,
    dirs: &Dirs,
    reference: &str,
    expected: Option<&Descriptor>,
    media_type_hint: Option<&str>,
) -> Result<Document> {
    let url = client.url(&format!("manifests/{reference}"));
    if let Some(expected) = expected {
        if let Some(bytes) = dirs.cached(&expected.digest)? {
            let parsed = parse_document(&url, &bytes)?;
            return Ok(Document {
                media_type: media_type_of(media_type_hint, &parsed),
                bytes,
                digest: expected.digest.clone(),
                parsed,
            });
        }
        if expected.size > MAX_DOCUMENT {
            return Err(Error::InvalidRegistryResponse {
                what: "manifest",
                url,
                reason: format!(
                    "{} bytes, more than the limit of {MAX_DOCUMENT}",
                    expected.size
                ),
            });
        }
    }
    let answer = client.get(
        &format!("manifests/{reference}"),
        &[("Accept", MANIFEST_ACCEPT)],
    )?;
    if answer.response.status() != StatusCode::OK {
        return Err(status_error(&answer.url, answer.response));
    }
    let header = |name: &str| {
        answer
            .response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let announced = header("docker-content-digest");
    let bytes = read_document(&url, answer.response, "manifest")?;
    let digest = Digest::of(&bytes);
    if let Some(expected) = expected {
        expected.check_size("manifest", bytes.len() as u64)?;
        expected.check_digest("manifest", digest.clone())?;
    } else if let Some(announced) = announced.as_deref() {
        // Only a sha256 digest can be compared; another algorithm says nothing here.
        if let Ok(announced) = Digest::parse(announced.trim()) {
            if announced != digest {
                return Err(Error::DigestMismatch {
                    what: "manifest",
                    expected: announced,
                    actual: digest,
                });
            }
        }
    }
    let parsed = parse_document(&url, &bytes)?;
    let media_type = media_type_of(content_type.as_deref().or(media_type_hint), &parsed);
    // A document that says it is something else than it was served as is refused, rather than
    // read as one or the other.
    if let Some(own) = parsed.media_type() {
        if own != media_type {
            return Err(Error::InvalidRegistryResponse {
                what: "manifest",
                url,
                reason: format!("served as {media_type} but its mediaType is {own}"),
            });
        }
    }
    dirs.cache(&digest, &bytes)?;
    Ok(Document {
        media_type,
        bytes,
        digest,
        parsed,
    })
}

/// Resolves a reference to the platform's image manifest, following image indexes.
fn resolve(
    client: &Client,
    dirs: &Dirs,
    reference: &Reference,
    platform: &Platform,
) -> Result<Document> {
    let pinned = reference.digest().map(|d| Descriptor {
        media_type: String::new(),
        digest: d.clone(),
        // Unknown: checked by digest only.
        size: 0,
        annotations: BTreeMap::new(),
        platform: None,
    });
    let doc = match &pinned {
        // A digest pins the bytes: the cache may answer, and the digest is checked.
        Some(pinned) => match dirs.cached(&pinned.digest)? {
            Some(bytes) => {
                let url = client.url(&format!("manifests/{}", pinned.digest));
                let parsed = parse_document(&url, &bytes)?;
                Document {
                    media_type: media_type_of(None, &parsed),
                    bytes,
                    digest: pinned.digest.clone(),
                    parsed,
                }
            }
            None => {
                let doc = fetch_manifest(client, dirs, pinned.digest.as_str(), None, None)?;
                pinned.check_digest("manifest", doc.digest.clone())?;
                doc
            }
        },
        None => fetch_manifest(client, dirs, reference.manifest_reference(), None, None)?,
    };
    spec::follow_indexes(
        doc,
        |doc: &Document| doc.media_type.as_str(),
        |doc| {
            let index = doc.parsed.index()?;
            let Some(entry) = platform.choose(&index.manifests) else {
                return Err(Error::PlatformNotFound {
                    index: doc.digest.clone(),
                    platform: platform.to_string(),
                    available: index
                        .manifests
                        .iter()
                        .filter_map(|m| m.platform.as_ref().map(Platform::to_string))
                        .collect(),
                });
            };
            fetch_manifest(
                client,
                dirs,
                entry.digest.as_str(),
                Some(entry),
                Some(&entry.media_type),
            )
        },
        || Error::InvalidRegistryResponse {
            what: "image index",
            url: client.url(&format!("manifests/{}", reference.manifest_reference())),
            reason: format!(
                "image indexes nest more than {} deep",
                spec::MAX_INDEX_DEPTH
            ),
        },
    )
}

/// The config blob: from the cache, or fetched, verified and cached.
fn fetch_config(client: &Client, dirs: &Dirs, desc: &Descriptor) -> Result<Vec<u8>> {
    if let Some(bytes) = dirs.cached(&desc.digest)? {
        return Ok(bytes);
    }
    let path = format!("blobs/{}", desc.digest);
    let url = client.url(&path);
    if desc.size > MAX_DOCUMENT {
        return Err(Error::InvalidRegistryResponse {
            what: "config",
            url,
            reason: format!("{} bytes, more than the limit of {MAX_DOCUMENT}", desc.size),
        });
    }
    let answer = client.get(&path, &[])?;
    if answer.response.status() != StatusCode::OK {
        return Err(status_error(&answer.url, answer.response));
    }
    let bytes = read_document(&answer.url, answer.response, "config")?;
    desc.verify("config", &bytes)?;
    dirs.cache(&desc.digest, &bytes)?;
    Ok(bytes)
}

/// How one attempt at a layer download ended badly.
enum Failure {
    /// The connection dropped or stalled: what arrived is kept, and another attempt resumes.
    Retry(Error),
    /// Nothing more to try.
    Fatal(Error),
}

/// The sha256 and length of the first bytes of `file`, up to `limit`.
fn hash_prefix(file: &mut File, path: &Path, limit: u64) -> Result<(Sha256, u64)> {
    file.seek(SeekFrom::Start(0))
        .map_err(io_error("seek", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut reader = (&mut *file).take(limit);
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io_error("read", path))?;
        let Some(data) = buf.get(..n) else { break };
        if n == 0 {
            break;
        }
        hasher.update(data);
        total += n as u64;
    }
    Ok((hasher, total))
}

/// Empties a partial download.
fn restart(file: &File, path: &Path) -> Result<()> {
    file.set_len(0).map_err(io_error("truncate", path))
}

/// One download attempt into the partial file: resumes from what it holds. Returns whether
/// it resumed (asked only for the rest).
fn attempt(
    client: &Client,
    desc: &Descriptor,
    partial: &Path,
    progress: &dyn Progress,
    first: bool,
) -> std::result::Result<bool, Failure> {
    let fatal = Failure::Fatal;
    let mut file = open_nofollow(partial, true, true)
        .map_err(io_error("open", partial))
        .map_err(fatal)?;
    let len = file
        .metadata()
        .map_err(io_error("stat", partial))
        .map_err(fatal)?
        .len();
    if len > desc.size {
        restart(&file, partial).map_err(fatal)?;
    }
    let (mut hasher, mut have) = hash_prefix(&mut file, partial, desc.size).map_err(fatal)?;
    if first {
        progress.layer_start(&desc.digest, desc.size, have);
    }
    let mut from_zero_once = false;
    loop {
        if have == desc.size {
            let actual = Digest::from_sha256(hasher.clone().finalize().into());
            if actual == desc.digest {
                // Whole already (an empty blob needs nothing at all).
                return Ok(desc.size > 0);
            }
            // Complete but wrong: the bytes on disk are bad, start over.
            restart(&file, partial).map_err(fatal)?;
            (hasher, have) = (Sha256::new(), 0);
        }
        let path = format!("blobs/{}", desc.digest);
        let range = format!("bytes={have}-");
        let headers: Vec<(&str, &str)> = if have > 0 {
            vec![("Range", range.as_str())]
        } else {
            Vec::new()
        };
        let answer = client.get(&path, &headers).map_err(|e| match e {
            Error::RegistryTransport { .. } => Failure::Retry(e),
            e => Failure::Fatal(e),
        })?;
        let status = answer.response.status();
        let resumed = match status {
            StatusCode::PARTIAL_CONTENT if have > 0 => {
                let content_range = answer
                    .response
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !content_range.starts_with(&format!("bytes {have}-")) {
                    // Not the range asked for: start over, asking for everything.
                    restart(&file, partial).map_err(fatal)?;
                    (hasher, have) = (Sha256::new(), 0);
                    continue;
                }
                true
            }
            StatusCode::OK => {
                if have > 0 {
                    // The registry sends the whole blob: it replaces what is on disk.
                    restart(&file, partial).map_err(fatal)?;
                    (hasher, have) = (Sha256::new(), 0);
                }
                false
            }
            StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => {
                restart(&file, partial).map_err(fatal)?;
                (hasher, have) = (Sha256::new(), 0);
                continue;
            }
            _ => return Err(Failure::Fatal(status_error(&answer.url, answer.response))),
        };
        let url = answer.url;
        file.seek(SeekFrom::Start(have))
            .map_err(io_error("seek", partial))
            .map_err(fatal)?;
        let remaining = desc.size - have;
        // One byte more than the descriptor allows, to notice a blob that is too long.
        let mut body = answer
            .response
            .into_body()
            .into_with_config()
            .reader()
            .take(remaining + 1);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match body.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Failure::Retry(Error::RegistryTransport { url, source }));
                }
            };
            let Some(data) = buf.get(..n) else { break };
            if n == 0 {
                break;
            }
            if have + n as u64 > desc.size {
                let _ = restart(&file, partial);
                return Err(Failure::Fatal(Error::SizeMismatch {
                    what: "layer",
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: have + n as u64,
                }));
            }
            file.write_all(data)
                .map_err(io_error("write", partial))
                .map_err(fatal)?;
            hasher.update(data);
            have += n as u64;
            progress.layer_progress(&desc.digest, have);
        }
        if have < desc.size {
            return Err(Failure::Retry(Error::RegistryTransport {
                url,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the answer ended after {have} of {} bytes", desc.size),
                ),
            }));
        }
        let actual = Digest::from_sha256(hasher.clone().finalize().into());
        if actual == desc.digest {
            // Not synced: a download is hashed again whenever it is used (resumed, reused, or
            // unpacked), so one torn by a crash is found and fetched again, and the layer made
            // from it is what is made durable.
            return Ok(resumed);
        }
        restart(&file, partial).map_err(fatal)?;
        if resumed && !from_zero_once {
            // The bytes kept from before may be what is wrong: once more, from zero.
            from_zero_once = true;
            (hasher, have) = (Sha256::new(), 0);
            continue;
        }
        let _ = fs::remove_file(partial);
        return Err(Failure::Fatal(Error::DigestMismatch {
            what: "layer",
            expected: desc.digest.clone(),
            actual,
        }));
    }
}

/// Makes sure a verified blob of the layer is linked at `dest` (unless the store holds the
/// layer), downloading or resuming it under the layer's download lock.
fn fetch_layer(
    store: &LayerStore,
    client: &Client,
    dirs: &Dirs,
    desc: &Descriptor,
    dest: &Path,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<LayerOutcome> {
    let _lock = dirs.lock(&desc.digest)?;
    if store.layer(&desc.digest)?.is_some() {
        return Ok(LayerOutcome::InStore);
    }
    let done = dirs.done_path(&desc.digest);
    let mut outcome = None;
    if let Ok(mut file) = open_nofollow(&done, false, false) {
        // Left by a pull that did not unpack it: used if it still verifies.
        let (hasher, len) = hash_prefix(&mut file, &done, desc.size + 1)?;
        if len == desc.size && Digest::from_sha256(hasher.finalize().into()) == desc.digest {
            outcome = Some(LayerOutcome::Reused);
        } else {
            fs::remove_file(&done).map_err(io_error("remove", &done))?;
        }
    }
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => {
            let partial = dirs.partial_path(&desc.digest);
            let mut tries = 0;
            let resumed = loop {
                match attempt(client, desc, &partial, progress, tries == 0) {
                    Ok(resumed) => break resumed || tries > 0,
                    Err(Failure::Retry(e)) if tries >= options.retries => return Err(e),
                    Err(Failure::Retry(_)) => tries += 1,
                    Err(Failure::Fatal(e)) => return Err(e),
                }
            };
            fs::rename(&partial, &done).map_err(io_error("rename into place", &done))?;
            fsync_dir(&dirs.downloads)?;
            if resumed {
                LayerOutcome::Resumed
            } else {
                LayerOutcome::Fetched
            }
        }
    };
    fs::hard_link(&done, dest).map_err(io_error("link", dest))?;
    Ok(outcome)
}

/// Removes a file of the pull's own, if it is there.
fn remove_if_there(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Empties the pull cache of the store at `root` (see [`LayerStore::clear_pull_cache`]).
pub(super) fn clear_cache(root: &Path) -> Result<()> {
    Dirs::open(root)?.clear()
}

/// Removes the verified download of a layer the pull is done with.
fn forget_download(dirs: &Dirs, digest: &Digest) -> Result<()> {
    let _lock = dirs.lock(digest)?;
    let done = dirs.done_path(digest);
    match fs::remove_file(&done) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("remove", &done)(e)),
        _ => Ok(()),
    }
}

/// Fetches the layers the store lacks, `concurrency` at a time, each linked into `blobs`.
fn fetch_layers(
    store: &LayerStore,
    client: &Client,
    dirs: &Dirs,
    layers: &[LayerRef],
    blobs: &Path,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Vec<Digest>> {
    let mut seen = HashSet::new();
    let mut todo = Vec::new();
    for layer in layers {
        let desc = &layer.descriptor;
        if !seen.insert(desc.digest.clone()) {
            continue;
        }
        if store.layer(&desc.digest)?.is_some() {
            progress.layer_done(&desc.digest, LayerOutcome::InStore);
        } else {
            todo.push(layer);
        }
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, Result<LayerOutcome>)>> = Mutex::new(Vec::new());
    let workers = options.concurrency.max(1).min(todo.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(layer) = todo.get(i) else { break };
                let desc = &layer.descriptor;
                if failed.load(Ordering::Relaxed) {
                    break;
                }
                let dest = blobs.join(desc.digest.hex());
                // Each layer is unpacked as soon as it is here, on the thread that fetched it:
                // unpacking overlaps the other downloads, and layers unpack side by side.
                let result = fetch_layer(store, client, dirs, desc, &dest, options, progress)
                    .and_then(|outcome| match outcome {
                        LayerOutcome::InStore => Ok(outcome),
                        _ => store.store_layer_blob(layer, &dest).map(|_| outcome),
                    });
                match &result {
                    Ok(outcome) => progress.layer_done(&desc.digest, *outcome),
                    Err(_) => failed.store(true, Ordering::Relaxed),
                }
                if let Ok(mut results) = results.lock() {
                    results.push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let mut fetched = Vec::new();
    let mut first_error = None;
    for (i, result) in results {
        match result {
            Ok(LayerOutcome::InStore) => {}
            Ok(_) => {
                if let Some(layer) = todo.get(i) {
                    fetched.push(layer.descriptor.digest.clone());
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        for digest in &fetched {
            let _ = forget_download(dirs, digest);
        }
        return Err(e);
    }
    Ok(fetched)
}

/// Writes a file of the scratch layout.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(io_error("write", path))
}

pub(super) fn pull(
    store: &LayerStore,
    reference: &Reference,
    options: &PullOptions,
    progress: &dyn Progress,
) -> Result<Image> {
    let dirs = Dirs::open(store.root())?;
    let client = Client::new(reference, options)?;
    let doc = resolve(&client, &dirs, reference, &options.platform)?;
    progress.manifest(reference, &doc.digest);
    let manifest_url = client.url(&format!("manifests/{}", doc.digest));
    let manifest = doc.parsed.manifest(&invalid_document(&manifest_url))?;
    manifest.compressions()?;
    let config = manifest.config;
    let config_bytes = fetch_config(&client, &dirs, &config)?;

    // The scratch layout: what import reads (OCI image-spec, "Image Layout").
    let scratch = store.scratch_dir("pull")?;
    let dir = scratch.path();
    let blobs = dir.join("blobs").join("sha256");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE)
        .create(&blobs)
        .map_err(io_error("create", &blobs))?;
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_file(&blobs.join(doc.digest.hex()), &doc.bytes)?;
    write_file(&blobs.join(config.digest.hex()), &config_bytes)?;
    let ref_name = reference.to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": doc.media_type,
            "digest": doc.digest.as_str(),
            "size": doc.bytes.len(),
            "annotations": BTreeMap::from([(REF_NAME, ref_name.as_str())]),
        }],
    });
    write_file(&dir.join("index.json"), index.to_string().as_bytes())?;
    // The layers as import sees them (compression, diff_id), to unpack each as it arrives.
    let resolved = Layout::open(dir)?.resolve(Some(&ref_name))?;

    let fetched = fetch_layers(
        store,
        &client,
        &dirs,
        &resolved.layers,
        &blobs,
        options,
        progress,
    )?;
    progress.unpacking();
    // Every layer is in the store now: this checks the image as a whole (its expanded size).
    let imported = store.import(dir, Some(&ref_name));
    let mut cleanup = Ok(());
    for digest in &fetched {
        let removed = forget_download(&dirs, digest);
        if cleanup.is_ok() {
            cleanup = removed;
        }
    }
    let image = imported?;
    cleanup?;
    // As `docker pull`: the image is known by its name afterwards (`LayerStore::image`).
    store.tag(&ref_name, &image)?;
    Ok(image)
}
