//! Imports of `docker save` archives (docker-archive) and tars of OCI layouts (oci-archive).
//!
//! An archive is never unpacked. Its tar stream is read once to index its entries (name, type,
//! link target, where the data lies in the file); the names its own manifest gives are then
//! resolved in that index, following the archive's symbolic and hard links in the archive's
//! name space only, never on the file system. The regular files wanted are copied, with
//! `pread(2)`, into a private scratch directory of the store under names made here
//! (`blobs/sha256/<hex of the content hashed while copying>`), with a manifest and an
//! `index.json` written here too: an OCI image layout that [`LayerStore::import`] then checks
//! and unpacks. No name, link or type of the archive ever becomes a path on the host.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::digest::{Digest, HashingReader};
use crate::error::io_error;
use crate::spec::{self, Descriptor, Unpicked, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME};
use crate::{Error, Image, LayerStore, Result};

/// The largest JSON document of an archive read (`manifest.json`, `oci-layout`, `index.json`,
/// image indexes, manifests, configs).
const MAX_JSON: u64 = 4 << 20;
/// How many links a name may go through, as Linux's `MAXSYMLINKS` (`path_resolution(7)`).
const MAX_LINKS: u32 = 40;
/// The first bytes of a gzip member (RFC 1952, section 2.3.1).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The first bytes of a Zstandard frame (RFC 8878, section 3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// What a decompressed archive may grow to beyond twice the store's bound on expanded images:
/// room for the tar headers of the archive and of layers of many small files.
const DECOMPRESSED_SLACK: u64 = 64 << 20;
/// The annotation containerd and Docker 25+ give an image's full reference in `index.json`.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// The kind of image archive, told apart by the files at its top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// A `docker save` archive: `manifest.json`, a list of images, each with its `Config` file,
    /// `RepoTags` and `Layers` (tar files, possibly compressed) by their names in the archive.
    Docker,
    /// A tar of an OCI image layout (OCI image-spec, "Image Layout"): `oci-layout`,
    /// `index.json`, `blobs/sha256/<hex>`. Docker 25 and later write their `docker save`
    /// archives this way too (with a `manifest.json` besides): those read as this format.
    Oci,
}

impl ArchiveFormat {
    /// Tells what kind of image archive `path` is, reading its tar stream (decompressed if the
    /// file is gzip or zstd) through once, without writing anything.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be opened; [`Error::ArchiveRead`] for a malformed or
    /// truncated archive; [`Error::InvalidArchive`] when it has neither `oci-layout` nor
    /// `manifest.json`; [`Error::ArchiveEntry`] when one of those is a link that loops or
    /// leaves the archive, or not a regular file.
    pub fn detect(path: impl AsRef<Path>) -> Result<ArchiveFormat> {
        let path = path.as_ref();
        let file = open_archive(path)?;
        let outer = Outer::sniff(&file, path)?;
        let reader = outer.reader(BufReader::new(file));
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(read_error(path))?;
        let index = Index::build(entries, path, None)?;
        index.format(path)
    }
}

/// How the archive file itself is compressed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outer {
    Plain,
    Gzip,
    Zstd,
}

impl Outer {
    /// Tells by the file's first bytes.
    fn sniff(file: &File, path: &Path) -> Result<Outer> {
        let mut head = [0u8; 4];
        let n = read_full_at(file, &mut head, 0).map_err(read_error(path))?;
        let head = head.get(..n).unwrap_or_default();
        Ok(if head.starts_with(&GZIP_MAGIC) {
            Outer::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            Outer::Zstd
        } else {
            Outer::Plain
        })
    }

    fn reader<'a, R: io::BufRead + 'a>(self, source: R) -> Box<dyn Read + 'a> {
        match self {
            Outer::Plain => Box::new(source),
            Outer::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(source)),
            Outer::Zstd => Box::new(crate::zstd::ZstdReader::new(source)),
        }
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns how much was read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::ArchiveRead {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidArchive {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn open_archive(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let meta = file.metadata().map_err(io_error("stat", path))?;
    if !meta.is_file() {
        return Err(invalid(path, "not a regular file"));
    }
    Ok(file)
}

/// What an entry of the archive is.
#[derive(Clone)]
enum Node {
    /// A regular file: where its data lies in the (decompressed) tar file, and its length.
    File {
        offset: u64,
        size: u64,
    },
    Dir,
    /// A symbolic link: its target, relative to the link's directory unless absolute.
    Symlink(String),
    /// A hard link: the name of the entry it repeats, relative to the archive's top.
    Hardlink(String),
    /// Anything else (devices, FIFOs, sparse files, names or link targets that are not UTF-8):
    /// never read.
    Other,
}

/// Why a name could not be resolved to a regular file of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    Absent,
    Absolute,
    Escapes,
    LeavesArchive,
    Loops,
    NotADirectory,
    NotAFile,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Absent => "absent from the archive",
            Refusal::Absolute => "an absolute name",
            Refusal::Escapes => "its `..` components climb out of the archive",
            Refusal::LeavesArchive => "a link that leaves the archive (an absolute target)",
            Refusal::Loops => "a chain of links that loops (or is longer than 40 links)",
            Refusal::NotADirectory => "a component of the name is not a directory",
            Refusal::NotAFile => "not a regular file",
        }
    }
}

/// The entries of an archive by normalized name: no empty or `.` components. Entries whose
/// names are absolute or have `..` components can never be named by a resolved name, so they
/// are left out; of two entries of one name the later wins, as when a tar is extracted.
struct Index {
    nodes: HashMap<String, Node>,
}

/// The name's components, or `None` for a name that is absolute, has `..` components, is empty
/// or is not UTF-8.
fn normalize(raw: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(raw).ok()?;
    if name.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return None;
    }
    Some(parts.join("/"))
}

impl Index {
    /// Indexes every entry; with the file's length (`len`), refuses an entry whose data runs
    /// past the end of the file (a truncated archive, which a seeking tar reader does not see).
    fn build<R: Read>(
        entries: tar::Entries<'_, R>,
        path: &Path,
        len: Option<u64>,
    ) -> Result<Index> {
        let mut nodes = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(read_error(path))?;
            let link = || {
                entry
                    .link_name_bytes()
                    .and_then(|b| String::from_utf8(b.into_owned()).ok())
            };
            let node = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let offset = entry.raw_file_position();
                    let size = entry.size();
                    if let Some(len) = len {
                        if offset.checked_add(size).is_none_or(|end| end > len) {
                            return Err(read_error(path)(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the archive is truncated: an entry's data runs past its end",
                            )));
                        }
                    }
                    Node::File { offset, size }
                }
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => link().map_or(Node::Other, Node::Symlink),
                tar::EntryType::Link => link().map_or(Node::Other, Node::Hardlink),
                _ => Node::Other,
            };
            if let Some(name) = normalize(&entry.path_bytes()) {
                nodes.insert(name, node);
            }
        }
        Ok(Index { nodes })
    }

    /// Resolves `name` to a regular file (offset and size), following the archive's links in
    /// its own name space as `path_resolution(7)` describes for a file system whose root is the
    /// archive's top: a symbolic link's target is taken relative to the link's directory, a hard
    /// link's relative to the top, `..` at the top and absolute targets are refused, and at most
    /// [`MAX_LINKS`] links are followed. A name with no entry of its own is an implied directory
    /// (tars need not list directories).
    fn resolve(&self, name: &str) -> std::result::Result<(u64, u64), Refusal> {
        if name.starts_with('/') {
            return Err(Refusal::Absolute);
        }
        let mut pending: Vec<String> = Vec::new();
        push_components(&mut pending, name);
        let mut current: Vec<String> = Vec::new();
        let mut links = 0u32;
        // `pending` is a stack: its last element is the next component.
        while let Some(component) = pending.pop() {
            if component == ".." {
                current.pop().ok_or(Refusal::Escapes)?;
                continue;
            }
            current.push(component);
            let last = pending.is_empty();
            match self.nodes.get(&current.join("/")) {
                None if last => return Err(Refusal::Absent),
                None | Some(Node::Dir) if !last => {}
                Some(Node::Dir) => return Err(Refusal::NotAFile),
                Some(Node::Symlink(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Refusal::Loops);
                    }
                    if target.starts_with('/') {
                        return Err(Refusal::LeavesArchive);
                    }
                    current.pop();
                    push_components(&mut pending, target);
                }
                Some(Node::Hardlink(target)) if last => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(Refusal::Loops);
                    }
                    if target.starts_with('/') {
                        return Err(Refusal::LeavesArchive);
                    }
                    current.clear();
                    push_components(&mut pending, target);
                }
                Some(Node::File { offset, size }) if last => return Ok((*offset, *size)),
                Some(Node::Other) if last => return Err(Refusal::NotAFile),
                Some(_) => return Err(Refusal::NotADirectory),
                None => return Err(Refusal::Absent),
            }
        }
        // Only a name of no components (or one resolving to the top) ends here.
        Err(Refusal::NotAFile)
    }

    /// The format, from the files at the archive's top.
    fn format(&self, path: &Path) -> Result<ArchiveFormat> {
        for (name, format) in [
            ("oci-layout", ArchiveFormat::Oci),
            ("manifest.json", ArchiveFormat::Docker),
        ] {
            match self.resolve(name) {
                Ok(_) => return Ok(format),
                Err(Refusal::Absent) => {}
                Err(refusal) => return Err(entry_error(path, name, refusal)),
            }
        }
        Err(invalid(
            path,
            "neither an oci-archive (no oci-layout) nor a docker-archive (no manifest.json)",
        ))
    }
}

/// Pushes the components of `name` on the stack `pending`, first component last (on top).
fn push_components(pending: &mut Vec<String>, name: &str) {
    pending.extend(
        name.split('/')
            .rev()
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned),
    );
}

fn entry_error(path: &Path, entry: &str, refusal: Refusal) -> Error {
    Error::ArchiveEntry {
        path: path.to_path_buf(),
        entry: entry.to_owned(),
        reason: refusal.reason(),
    }
}

/// Reads `len` bytes of `file` from `offset` with `pread(2)`, ending early at the end of the
/// file.
struct At<'a> {
    file: &'a File,
    offset: u64,
    left: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let Some(buf) = buf.get_mut(..want) else {
            return Ok(0);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

/// A blob copied out of the archive.
#[derive(Clone)]
struct Blob {
    digest: Digest,
    size: u64,
    /// Its first bytes, to tell its compression.
    head: [u8; 4],
}

/// An opened archive: the (decompressed) tar file and its index, and the layout being made.
struct Source<'a> {
    path: &'a Path,
    file: File,
    index: Index,
    /// The layout directory in the scratch directory.
    out: PathBuf,
    /// Blobs already copied, by where their data lies in the tar file.
    copied: HashMap<u64, Blob>,
}

impl<'a> Source<'a> {
    /// Opens and indexes the archive at `path`. A compressed archive is first decompressed into
    /// an unnamed file of `scratch` (created and unlinked at once), of at most `limit` bytes.
    fn open(path: &'a Path, scratch: &Path, limit: u64) -> Result<Source<'a>> {
        let file = open_archive(path)?;
        let file = match Outer::sniff(&file, path)? {
            Outer::Plain => file,
            outer => decompress(outer, file, path, scratch, limit)?,
        };
        let len = file.metadata().map_err(io_error("stat", path))?.len();
        let mut archive = tar::Archive::new(&file);
        let entries = archive.entries_with_seek().map_err(read_error(path))?;
        let index = Index::build(entries, path, Some(len))?;
        let out = scratch.join("layout");
        let blobs = out.join("blobs").join("sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&blobs)
            .map_err(io_error("create", &blobs))?;
        Ok(Source {
            path,
            file,
            index,
            out,
            copied: HashMap::new(),
        })
    }

    fn entry(&self, name: &str) -> Result<(u64, u64)> {
        self.index
            .resolve(name)
            .map_err(|refusal| entry_error(self.path, name, refusal))
    }

    /// Reads the JSON document `name` whole (at most [`MAX_JSON`] bytes).
    fn read_json(&self, name: &str, what: &'static str) -> Result<Vec<u8>> {
        let (offset, size) = self.entry(name)?;
        if size > MAX_JSON {
            return Err(Error::ArchiveTooLarge {
                path: self.path.to_path_buf(),
                what,
                limit: MAX_JSON,
            });
        }
        let mut bytes = Vec::new();
        At {
            file: &self.file,
            offset,
            left: size,
        }
        .read_to_end(&mut bytes)
        .map_err(read_error(self.path))?;
        if bytes.len() as u64 != size {
            return Err(self.truncated());
        }
        Ok(bytes)
    }

    fn truncated(&self) -> Error {
        read_error(self.path)(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive is truncated",
        ))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, name: &str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| invalid(self.path, format!("{name}: bad JSON: {e}")))
    }

    /// The error of the archive's JSON document `name`: `InvalidArchive`, naming both.
    fn invalid<'b>(&'b self, name: &'b str) -> impl Fn(String) -> Error + 'b {
        move |reason| invalid(self.path, format!("{name}: {reason}"))
    }

    /// Copies the regular file `name` of the archive into the layout's blobs, named by the
    /// digest of what was copied.
    fn copy(&mut self, name: &str) -> Result<Blob> {
        let (offset, size) = self.entry(name)?;
        if let Some(blob) = self.copied.get(&offset) {
            return Ok(blob.clone());
        }
        let mut head = [0u8; 4];
        let head_len = head.len().min(usize::try_from(size).unwrap_or(usize::MAX));
        if let Some(head) = head.get_mut(..head_len) {
            read_full_at(&self.file, head, offset).map_err(read_error(self.path))?;
        }
        let blobs = self.out.join("blobs").join("sha256");
        let partial = self.out.join("partial");
        let mut dest = create_new(&partial)?;
        let mut reader = HashingReader::new(At {
            file: &self.file,
            offset,
            left: size,
        });
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(self.path)(e)),
            };
            dest.write_all(buf.get(..n).unwrap_or_default())
                .map_err(io_error("write", &partial))?;
        }
        drop(dest);
        let (digest, copied, _) = reader.finish();
        if copied != size {
            return Err(self.truncated());
        }
        let blob_path = blobs.join(digest.hex());
        fs::rename(&partial, &blob_path).map_err(io_error("rename", &blob_path))?;
        let blob = Blob { digest, size, head };
        self.copied.insert(offset, blob.clone());
        Ok(blob)
    }

    /// Writes `bytes` as a blob of the layout; returns its digest.
    fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let path = self.out.join("blobs").join("sha256").join(digest.hex());
        if !path.exists() {
            write_new(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Finishes the layout: `oci-layout`, and `index.json` listing the one manifest, tagged
    /// `name`.
    fn finish(&self, manifest: &Value, name: Option<&str>) -> Result<()> {
        write_new(
            &self.out.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let mut descriptor = manifest.clone();
        if let (Some(name), Some(object)) = (name, descriptor.as_object_mut()) {
            object.insert("annotations".into(), json!({ REF_NAME: name }));
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor],
        });
        write_new(&self.out.join("index.json"), index.to_string().as_bytes())
    }
}

/// Creates `path`, which must not exist (nor be a symbolic link), owner-only.
fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error("create", path))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    create_new(path)?
        .write_all(bytes)
        .map_err(io_error("write", path))
}

/// Decompresses the archive into a file of `scratch` that has no name (it is unlinked as soon
/// as it is made, so that it goes with its descriptor, even if the process dies).
fn decompress(outer: Outer, file: File, path: &Path, scratch: &Path, limit: u64) -> Result<File> {
    let tmp = scratch.join("archive.tar");
    let mut dest = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    fs::remove_file(&tmp).map_err(io_error("remove", &tmp))?;
    let mut source = outer
        .reader(BufReader::new(file))
        .take(limit.saturating_add(1));
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(path)(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(Error::ArchiveTooLarge {
                path: path.to_path_buf(),
                what: "decompressed archive",
                limit,
            });
        }
        dest.write_all(buf.get(..n).unwrap_or_default())
            .map_err(io_error("write", &tmp))?;
    }
    // The tar reader starts where the descriptor's offset is.
    dest.rewind().map_err(io_error("seek", &tmp))?;
    Ok(dest)
}

/// How an entry of an oci-archive's `index.json` is named: its tag
/// (`org.opencontainers.image.ref.name`) and the full reference containerd and Docker record.
impl Descriptor {
    /// Whether the entry is the image `name`: its tag is `name`, or it or the full reference
    /// name the same image once both are spelled in full (see [`canonical_reference`]).
    fn is_named(&self, name: &str) -> bool {
        let wanted = canonical_reference(name);
        let ref_name = self.ref_name();
        ref_name == Some(name)
            || [ref_name, self.annotation(CONTAINERD_NAME)]
                .into_iter()
                .flatten()
                .any(|n| canonical_reference(n) == wanted)
    }

    /// The entry's names, or its digest when it has none.
    fn names(&self) -> String {
        let names: Vec<&str> = [self.ref_name(), self.annotation(CONTAINERD_NAME)]
            .into_iter()
            .flatten()
            .collect();
        if names.is_empty() {
            self.digest.to_string()
        } else {
            names.join(" ")
        }
    }
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Deserialize)]
struct DockerImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

impl DockerImage {
    fn names(&self) -> String {
        match &self.repo_tags {
            Some(tags) if !tags.is_empty() => tags.join(" "),
            _ => self.config.clone(),
        }
    }
}

/// A reference spelled in full, as Docker normalizes names (the `distribution/reference`
/// rules): a first component without `.` or `:` that is not `localhost` is a Docker Hub path,
/// so `docker.io/` is prepended (`index.docker.io` is the same registry), a one-component Hub
/// path gets `library/`, and a name without tag or digest gets `:latest`. So `busybox`,
/// `busybox:latest` and `docker.io/library/busybox:latest` are one image.
fn canonical_reference(name: &str) -> String {
    let (rest, digest) = match name.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (name, None),
    };
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
        _ => (rest, None),
    };
    let tag = match (tag, digest) {
        (None, None) => Some("latest"),
        (tag, _) => tag,
    };
    let (domain, path) = match repository.split_once('/') {
        Some((domain, path))
            if domain.contains('.') || domain.contains(':') || domain == "localhost" =>
        {
            (domain, path.to_owned())
        }
        _ => ("docker.io", repository.to_owned()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let mut full = format!("{domain}/{path}");
    if let Some(tag) = tag {
        full.push(':');
        full.push_str(tag);
    }
    if let Some(digest) = digest {
        full.push('@');
        full.push_str(digest);
    }
    full
}

/// The OCI layer media type of a blob, from its first bytes.
fn layer_media_type(head: &[u8; 4]) -> &'static str {
    if head.starts_with(&GZIP_MAGIC) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head.starts_with(&ZSTD_MAGIC) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

impl Source<'_> {
    /// Lays out the image `name` of a docker-archive; returns the manifest's descriptor.
    fn docker(&mut self, name: Option<&str>) -> Result<Value> {
        let bytes = self.read_json("manifest.json", "manifest.json")?;
        let images: Vec<DockerImage> = self.parse("manifest.json", &bytes)?;
        let image = match name {
            Some(name) => {
                let wanted = canonical_reference(name);
                images
                    .iter()
                    .find(|image| {
                        image
                            .repo_tags
                            .iter()
                            .flatten()
                            .any(|tag| tag == name || canonical_reference(tag) == wanted)
                    })
                    .ok_or_else(|| Error::ArchiveImageNotFound {
                        path: self.path.to_path_buf(),
                        name: name.to_owned(),
                        available: images
                            .iter()
                            .flat_map(|i| i.repo_tags.iter().flatten().cloned())
                            .collect(),
                    })?
            }
            None => match images.as_slice() {
                [] => return Err(invalid(self.path, "manifest.json lists no image")),
                [image] => image,
                _ => {
                    return Err(Error::AmbiguousArchive {
                        path: self.path.to_path_buf(),
                        images: images.iter().map(DockerImage::names).collect(),
                    })
                }
            },
        };
        let config = self.read_json(&image.config, "config")?;
        let config_digest = self.write_blob(&config)?;
        let mut layers = Vec::with_capacity(image.layers.len());
        for layer in &image.layers {
            let blob = self.copy(layer)?;
            layers.push(json!({
                "mediaType": layer_media_type(&blob.head),
                "digest": blob.digest.as_str(),
                "size": blob.size,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": config_digest.as_str(),
                "size": config.len(),
            },
            "layers": layers,
        })
        .to_string();
        let digest = self.write_blob(manifest.as_bytes())?;
        Ok(json!({
            "mediaType": OCI_MANIFEST,
            "digest": digest.as_str(),
            "size": manifest.len(),
        }))
    }

    /// Reads the JSON blob of `descriptor`, checked against its size and digest.
    fn read_blob(&self, descriptor: &Descriptor, what: &'static str) -> Result<Vec<u8>> {
        let name = format!("blobs/sha256/{}", descriptor.digest.hex());
        let (_, size) = self.entry(&name)?;
        // Before reading: an entry of another size is not read at all.
        descriptor.check_size(what, size)?;
        let bytes = self.read_json(&name, what)?;
        descriptor.verify(what, &bytes)?;
        Ok(bytes)
    }

    /// Lays out the image `name` of an oci-archive; returns the manifest's descriptor.
    fn oci(&mut self, name: Option<&str>) -> Result<Value> {
        #[derive(Deserialize)]
        struct OciLayout {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let bytes = self.read_json("oci-layout", "oci-layout")?;
        let layout: OciLayout = self.parse("oci-layout", &bytes)?;
        if !layout.version.starts_with("1.") {
            return Err(invalid(
                self.path,
                format!("unsupported imageLayoutVersion {:?}", layout.version),
            ));
        }
        let bytes = self.read_json("index.json", "index.json")?;
        let all = spec::parse_index(&bytes, &self.invalid("index.json"))?.manifests;
        let candidates: Vec<Descriptor> = match name {
            Some(name) => {
                let found: Vec<_> = all.iter().filter(|d| d.is_named(name)).cloned().collect();
                if found.is_empty() {
                    return Err(Error::ArchiveImageNotFound {
                        path: self.path.to_path_buf(),
                        name: name.to_owned(),
                        available: all.iter().map(Descriptor::names).collect(),
                    });
                }
                found
            }
            None => all,
        };
        let manifest = spec::choose_manifest(
            candidates,
            |unpicked| match unpicked {
                Unpicked::Empty => invalid(self.path, "index.json lists no manifest"),
                Unpicked::Ambiguous(candidates) => Error::AmbiguousArchive {
                    path: self.path.to_path_buf(),
                    images: candidates.iter().map(Descriptor::names).collect(),
                },
            },
            |d| {
                let bytes = self.read_blob(d, "image index")?;
                spec::parse_index(&bytes, &self.invalid(d.digest.as_str()))
            },
            || {
                invalid(
                    self.path,
                    format!(
                        "image indexes nest more than {} deep",
                        spec::MAX_INDEX_DEPTH
                    ),
                )
            },
        )?;
        self.oci_manifest(manifest)
    }

    /// Copies an image manifest of an oci-archive, its config and its layers, each checked
    /// against its descriptor.
    fn oci_manifest(&mut self, descriptor: Descriptor) -> Result<Value> {
        let bytes = self.read_blob(&descriptor, "manifest")?;
        let manifest = spec::parse_manifest(&bytes, &self.invalid(descriptor.digest.as_str()))?;
        self.write_blob(&bytes)?;
        let config = self.read_blob(&manifest.config, "config")?;
        self.write_blob(&config)?;
        for layer in &manifest.layers {
            let name = format!("blobs/sha256/{}", layer.digest.hex());
            let (_, size) = self.entry(&name)?;
            layer.check_size("layer", size)?;
            let blob = self.copy(&name)?;
            layer.check_digest("layer", blob.digest)?;
        }
        let media_type = if descriptor.media_type.is_empty() {
            manifest.media_type.unwrap_or_default()
        } else {
            descriptor.media_type
        };
        Ok(json!({
            "mediaType": media_type,
            "digest": descriptor.digest.as_str(),
            "size": descriptor.size,
        }))
    }
}

impl LayerStore {
    /// Imports an image from an archive file: a `docker save` tarball (docker-archive) or a
    /// tar of an OCI image layout (oci-archive), either of them possibly compressed as a whole
    /// with gzip or zstd (told by the file's first bytes). The format is told by the files
    /// at the archive's top (see [`ArchiveFormat`]).
    ///
    /// `name` picks the image:
    ///
    /// - in a docker-archive, one of the `RepoTags` of `manifest.json`, in Docker's short or
    ///   full spelling (`busybox:latest` or `docker.io/library/busybox:latest`);
    /// - in an oci-archive, the tag of `index.json` (annotation
    ///   `org.opencontainers.image.ref.name`, as in [`LayerStore::import`]), or the full
    ///   reference that containerd and Docker 25+ record (`io.containerd.image.name`).
    ///
    /// `None` takes the only image of the archive.
    ///
    /// The archive is never unpacked: the files its manifest names are found in its own name
    /// space (its symbolic and hard links followed there, as Docker's
    /// `<id>/layer.tar -> ../<other>/layer.tar`, never on the file system), and only those
    /// regular files are copied, under names made from their digests, into a private scratch
    /// directory of the store. A compressed archive is first decompressed there into an
    /// unnamed file, of at most twice
    /// [`StoreOptions::max_expanded_size`](crate::StoreOptions::max_expanded_size) plus 64 MiB
    /// so that a small compressed archive cannot fill the disk. The copies form an OCI image
    /// layout, with a manifest written here for a docker-archive (layers as
    /// `application/vnd.oci.image.layer.v1.tar`, `…+gzip` or `…+zstd` by their first bytes),
    /// which [`LayerStore::import`] imports, checking every
    /// digest and the config's `rootfs.diff_ids`. The scratch directory is removed when the
    /// import ends, however it ends. For a docker-archive the image's
    /// [`manifest_digest`](Image::manifest_digest) is that of the manifest written here.
    ///
    /// # Errors
    ///
    /// [`Error::ArchiveRead`] for an archive that cannot be read (malformed, truncated, bad
    /// compression); [`Error::InvalidArchive`] for one that is neither format or whose JSON
    /// documents are malformed; [`Error::ArchiveEntry`] when a name its manifest gives is
    /// absent, climbs out with `..`, is absolute, or is a chain of links that loops or leaves
    /// the archive; [`Error::ArchiveTooLarge`] for a JSON document over 4 MiB or a compressed
    /// archive that decompresses beyond its bound; [`Error::ArchiveImageNotFound`] and
    /// [`Error::AmbiguousArchive`] when `name` picks no image or `None` is given for several;
    /// [`Error::DigestMismatch`], [`Error::SizeMismatch`], [`Error::InvalidDigest`],
    /// [`Error::UnsupportedMediaType`] and [`Error::NoMatchingPlatform`] for the blobs of an
    /// oci-archive; then whatever [`LayerStore::import`] returns; [`Error::Io`] otherwise.
    /// Nothing is left in the store but the layers of the image unpacked before a failing one
    /// (as with [`LayerStore::import`]): every refusal of the archive itself comes before any
    /// layer is unpacked.
    pub fn import_archive(&self, path: impl AsRef<Path>, name: Option<&str>) -> Result<Image> {
        let path = path.as_ref();
        let scratch = self.scratch_dir("archive")?;
        let limit = self
            .options()
            .max_expanded_size_setting()
            .saturating_mul(2)
            .saturating_add(DECOMPRESSED_SLACK);
        let out = {
            let mut source = Source::open(path, scratch.path(), limit)?;
            let manifest = match source.index.format(path)? {
                ArchiveFormat::Docker => source.docker(name)?,
                ArchiveFormat::Oci => source.oci(name)?,
            };
            source.finish(&manifest, name)?;
            // The source's descriptor (and a decompressed copy with it) goes before unpacking.
            source.out
        };
        self.import(&out, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_spelled_in_full() {
        for (short, full) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ),
            (
                "index.docker.io/library/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("me/tool:v1", "docker.io/me/tool:v1"),
            ("localhost:5000/x/y:tag", "localhost:5000/x/y:tag"),
            ("localhost/x", "localhost/x:latest"),
            ("ghcr.io/o/r@sha256:ab", "ghcr.io/o/r@sha256:ab"),
        ] {
            assert_eq!(canonical_reference(short), full, "{short}");
        }
    }

    fn index(entries: &[(&str, Node)]) -> Index {
        Index {
            nodes: entries
                .iter()
                .map(|(name, node)| ((*name).to_owned(), node.clone()))
                .collect(),
        }
    }

    #[test]
    fn names_resolve_in_the_archive_only() {
        let file = |offset| Node::File { offset, size: 1 };
        let link = |t: &str| Node::Symlink(t.to_owned());
        let idx = index(&[
            ("a/layer.tar", file(1)),
            ("b/layer.tar", link("../a/layer.tar")),
            ("c", link("b")),
            ("d/layer.tar", link("/etc/passwd")),
            ("e/layer.tar", link("../../etc/passwd")),
            ("loop1", link("loop2")),
            ("loop2", link("loop1")),
            ("hard", Node::Hardlink("a/layer.tar".to_owned())),
            ("hardout", Node::Hardlink("/etc/passwd".to_owned())),
            ("dir", Node::Dir),
            ("fifo", Node::Other),
        ]);
        assert_eq!(idx.resolve("a/layer.tar"), Ok((1, 1)));
        assert_eq!(idx.resolve("./a//layer.tar"), Ok((1, 1)));
        assert_eq!(idx.resolve("b/layer.tar"), Ok((1, 1)));
        assert_eq!(idx.resolve("c/layer.tar"), Ok((1, 1)));
        assert_eq!(idx.resolve("hard"), Ok((1, 1)));
        assert_eq!(idx.resolve("x/../a/layer.tar"), Ok((1, 1)));
        assert_eq!(idx.resolve("../a/layer.tar"), Err(Refusal::Escapes));
        assert_eq!(idx.resolve("../../etc/passwd"), Err(Refusal::Escapes));
        assert_eq!(idx.resolve("/etc/passwd"), Err(Refusal::Absolute));
        assert_eq!(idx.resolve("d/layer.tar"), Err(Refusal::LeavesArchive));
        assert_eq!(idx.resolve("e/layer.tar"), Err(Refusal::Escapes));
        assert_eq!(idx.resolve("hardout"), Err(Refusal::LeavesArchive));
        assert_eq!(idx.resolve("loop1"), Err(Refusal::Loops));
        assert_eq!(idx.resolve("dir"), Err(Refusal::NotAFile));
        assert_eq!(idx.resolve("fifo"), Err(Refusal::NotAFile));
        assert_eq!(idx.resolve("missing"), Err(Refusal::Absent));
        assert_eq!(idx.resolve("a/layer.tar/x"), Err(Refusal::NotADirectory));
        assert_eq!(idx.resolve(""), Err(Refusal::NotAFile));
    }

    #[test]
    fn unsafe_entry_names_are_never_indexed() {
        assert_eq!(normalize(b"./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize(b"/etc/passwd"), None);
        assert_eq!(normalize(b"blobs/sha256/../../x"), None);
        assert_eq!(normalize(b"./"), None);
        assert_eq!(normalize(b"\xff"), None);
    }
}
