//! Unpacking one layer's tar stream into a directory, converting OCI whiteouts (OCI image-spec,
//! "Image Layer Filesystem Changeset" § "Whiteouts") to overlayfs ones (kernel documentation
//! `filesystems/overlayfs.rst`, "whiteouts and opaque directories").
//!
//! Nothing in the layer is ever resolved through a symbolic link: every entry's parent is
//! reached one component at a time with `openat(2)` and `O_NOFOLLOW | O_DIRECTORY` from the
//! layer's root, and every node is created with an `*at(2)` call naming a single component. A
//! parent that is a symbolic link (say `evil -> /etc` then `evil/passwd`) is refused with
//! [`Error::UnsafeEntry`], as are `..` components, absolute paths and hard links to anything
//! not already extracted into the layer.
//!
//! No device node is ever created (a character device 0:0, an overlayfs whiteout, is taken as
//! one); a GNU sparse file is written with holes; and the sum of the regular files' sizes is
//! checked against the import's bound before each file is written.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::digest::{Digest, HashingReader};
use crate::sys;
use crate::{Error, Result};

/// The OCI whiteout prefix.
const WHITEOUT: &[u8] = b".wh.";
/// The OCI opaque whiteout (a whole directory of lower layers hidden).
const OPAQUE: &[u8] = b".wh..wh..opq";
/// The prefix of other AUFS metadata entries, which are skipped.
const WHITEOUT_META: &[u8] = b".wh..wh.";

/// How a layer is extracted.
pub(crate) struct ExtractOptions {
    /// The xattr that marks a directory opaque (`trusted.overlay.opaque` or
    /// `user.overlay.opaque`).
    pub(crate) opaque_xattr: &'static CStr,
    /// How many bytes of regular files this layer may still unpack to (see
    /// `StoreOptions::max_expanded_size`).
    pub(crate) budget: u64,
    /// The bound on the whole image, for the error.
    pub(crate) limit: u64,
    /// What the image's layers before this one expanded to.
    pub(crate) before: u64,
    /// Whether to give entries the owner in the archive (only root can).
    pub(crate) chown: bool,
}

/// Why an entry's path was refused.
#[derive(Clone, Copy)]
enum BadPath {
    Absolute,
    DotDot,
    Nul,
}

impl BadPath {
    fn reason(self, hard_link_target: bool) -> &'static str {
        match (self, hard_link_target) {
            (BadPath::Absolute, false) => "absolute path",
            (BadPath::DotDot, false) => "path has a `..` component",
            (BadPath::Nul, false) => "path has a NUL byte",
            (BadPath::Absolute, true) => "hard link target is an absolute path",
            (BadPath::DotDot, true) => "hard link target has a `..` component",
            (BadPath::Nul, true) => "hard link target has a NUL byte",
        }
    }
}

/// Splits an archive path into its components, dropping empty and `.` ones.
fn split_path(raw: &[u8]) -> std::result::Result<Vec<&[u8]>, BadPath> {
    if raw.first() == Some(&b'/') {
        return Err(BadPath::Absolute);
    }
    let mut components = Vec::new();
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(BadPath::DotDot),
            c if c.contains(&0) => return Err(BadPath::Nul),
            c => components.push(c),
        }
    }
    Ok(components)
}

/// A numeric header field that some writers leave blank (all NUL bytes or spaces) reads as 0;
/// anything else that is not a number is an error.
fn blank_is_zero(parsed: io::Result<u64>, raw: &[u8]) -> io::Result<u64> {
    match parsed {
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        other => other,
    }
}

/// The final mode and time of a directory, applied once everything is extracted.
#[derive(Clone, Copy)]
struct DirMeta {
    mode: u32,
    mtime: Option<i64>,
}

/// The metadata of one entry.
struct Meta {
    mode: u32,
    uid: libc::uid_t,
    gid: libc::gid_t,
    mtime: i64,
    xattrs: Vec<(CString, Vec<u8>)>,
}

/// What extracting a layer gave.
pub(crate) struct Extracted {
    /// The digest of the whole uncompressed stream (the layer's `diff_id`).
    pub(crate) diff_id: Digest,
    /// The sum of the sizes of the regular files (sparse ones with their logical size).
    pub(crate) expanded_size: u64,
    /// How many character and block device entries were left out.
    pub(crate) skipped_devices: u64,
}

/// The read buffer of a file's content. Large, so that a sparse file's holes, which the tar
/// reader hands out as zeros, are skipped in few steps.
const BUFFER: usize = 256 * 1024;

/// Extracts the (decompressed) tar stream `stream` of `layer` into the empty directory `dest`.
pub(crate) fn extract_layer<R: Read>(
    layer: &Digest,
    stream: R,
    dest: &Path,
    options: &ExtractOptions,
) -> Result<Extracted> {
    let root = sys::open_dir_path(dest).map_err(|source| Error::Io {
        op: "open",
        path: dest.to_path_buf(),
        source,
    })?;
    let mut extractor = Extractor {
        layer,
        root,
        options,
        dirs: BTreeMap::new(),
        expanded_size: 0,
        skipped_devices: 0,
    };
    extractor.dirs.insert(
        Vec::new(),
        DirMeta {
            mode: 0o755,
            mtime: None,
        },
    );
    let mut archive = tar::Archive::new(HashingReader::new(stream));
    {
        let entries = archive.entries().map_err(|e| extractor.archive_error(e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| extractor.archive_error(e))?;
            extractor.entry(&mut entry)?;
        }
    }
    extractor.finish()?;
    let mut rest = archive.into_inner();
    rest.drain().map_err(|e| extractor.archive_error(e))?;
    let (diff_id, _, _) = rest.finish();
    Ok(Extracted {
        diff_id,
        expanded_size: extractor.expanded_size,
        skipped_devices: extractor.skipped_devices,
    })
}

struct Extractor<'a> {
    layer: &'a Digest,
    root: OwnedFd,
    options: &'a ExtractOptions,
    /// Every directory made, by its components, with the mode and time to give it at the end.
    dirs: BTreeMap<Vec<Vec<u8>>, DirMeta>,
    /// The sum of the sizes of the regular files so far.
    expanded_size: u64,
    /// How many device entries were left out so far.
    skipped_devices: u64,
}

/// Whether `data` is all zero bytes. Compares the slice with itself shifted by one byte, which
/// is a `memcmp` and so fast even without optimizations.
pub(crate) fn all_zero(data: &[u8]) -> bool {
    match data.split_first() {
        None => true,
        Some((&first, rest)) => first == 0 && rest == &data[..rest.len()],
    }
}

/// Whether an error from `openat` means the component is a symlink or not a directory.
fn is_not_dir(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

fn display(components: &[&[u8]]) -> String {
    String::from_utf8_lossy(&components.join(&b'/')).into_owned()
}

impl Extractor<'_> {
    fn archive_error(&self, source: io::Error) -> Error {
        Error::LayerArchive {
            layer: self.layer.clone(),
            source,
        }
    }

    fn unsafe_entry(&self, path: &str, reason: &'static str) -> Error {
        Error::UnsafeEntry {
            layer: self.layer.clone(),
            path: path.to_owned(),
            reason,
        }
    }

    fn extract_error(&self, path: &str, op: &'static str, source: io::Error) -> Error {
        Error::Extract {
            layer: self.layer.clone(),
            path: path.to_owned(),
            op,
            source,
        }
    }

    /// Opens the directory reached by `components` from the layer root, one component at a
    /// time and never through a symbolic link. With `create`, missing directories are made
    /// (mode 0755 in the end, like tar's implied parents).
    fn walk(&mut self, components: &[&[u8]], create: bool, path: &str) -> Result<OwnedFd> {
        let mut current = self
            .root
            .try_clone()
            .map_err(|e| self.extract_error(path, "open", e))?;
        for (i, component) in components.iter().enumerate() {
            let name = sys::cstring(component)
                .map_err(|_| self.unsafe_entry(path, "path has a NUL byte"))?;
            let next = match sys::open_subdir(current.as_fd(), &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    sys::mkdirat(current.as_fd(), &name, 0o700)
                        .map_err(|e| self.extract_error(path, "create parent directory of", e))?;
                    let key: Vec<Vec<u8>> = components[..=i].iter().map(|c| c.to_vec()).collect();
                    self.dirs.entry(key).or_insert(DirMeta {
                        mode: 0o755,
                        mtime: None,
                    });
                    sys::open_subdir(current.as_fd(), &name)
                        .map_err(|e| self.extract_error(path, "open", e))?
                }
                Err(e) if is_not_dir(&e) => {
                    return Err(self.unsafe_entry(
                        path,
                        "a parent directory is a symbolic link or not a directory",
                    ))
                }
                Err(e) => return Err(self.extract_error(path, "open parent directory of", e)),
            };
            current = next;
        }
        Ok(current)
    }

    /// Clears the way for a new node `name` in `parent`: an existing non-directory is removed;
    /// an existing directory is kept if the new node is a directory too (its metadata is
    /// updated), else removed if empty. Returns whether a directory was kept.
    fn make_room(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        key: &[&[u8]],
        new_is_dir: bool,
        path: &str,
    ) -> Result<bool> {
        let Some(st) =
            sys::lstatat(parent, name).map_err(|e| self.extract_error(path, "stat", e))?
        else {
            return Ok(false);
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if new_is_dir {
                return Ok(true);
            }
            sys::unlinkat(parent, name, libc::AT_REMOVEDIR)
                .map_err(|e| self.extract_error(path, "replace directory", e))?;
            let key: Vec<Vec<u8>> = key.iter().map(|c| c.to_vec()).collect();
            self.dirs.remove(&key);
        } else {
            sys::unlinkat(parent, name, 0).map_err(|e| self.extract_error(path, "replace", e))?;
        }
        Ok(false)
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
        let header = entry.header();
        let old = header.as_old();
        let mode = header.mode().map_err(|e| self.archive_error(e))? & 0o7777;
        let uid = blank_is_zero(header.uid(), &old.uid).map_err(|e| self.archive_error(e))?;
        let gid = blank_is_zero(header.gid(), &old.gid).map_err(|e| self.archive_error(e))?;
        let mtime = blank_is_zero(header.mtime(), &old.mtime).map_err(|e| self.archive_error(e))?;
        let mut mtime = i64::try_from(mtime).unwrap_or(i64::MAX);
        let (Ok(uid), Ok(gid)) = (libc::uid_t::try_from(uid), libc::gid_t::try_from(gid)) else {
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            return Err(self.unsafe_entry(&path, "uid or gid out of range"));
        };
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions().map_err(|e| self.archive_error(e))? {
            for extension in extensions {
                let extension = extension.map_err(|e| self.archive_error(e))?;
                let Ok(key) = extension.key() else { continue };
                if key == "mtime" {
                    // Decimal seconds, possibly negative and with a fraction.
                    let value = extension.value().unwrap_or("");
                    let whole = value.split('.').next().unwrap_or("");
                    if let Ok(seconds) = whole.parse::<i64>() {
                        mtime = seconds;
                    }
                } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    // Only unprivileged user xattrs are carried over: trusted.* / security.*
                    // from an image could forge overlayfs metadata or file capabilities.
                    if name.starts_with("user.") && !name.starts_with("user.overlay.") {
                        if let Ok(name) = CString::new(name) {
                            xattrs.push((name, extension.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }

    fn set_xattrs(&self, fd: BorrowedFd<'_>, meta: &Meta, path: &str) -> Result<()> {
        for (name, value) in &meta.xattrs {
            match sys::fsetxattr(fd, name, value) {
                Ok(()) => {}
                // A file system without user xattrs: they are not essential.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                Err(e) => return Err(self.extract_error(path, "set xattr on", e)),
            }
        }
        Ok(())
    }

    /// Extracts one entry.
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let components =
            split_path(&raw).map_err(|bad| self.unsafe_entry(&shown, bad.reason(false)))?;
        let meta = self.meta(entry)?;

        let Some((&name, parents)) = components.split_last() else {
            // `./`: the layer's root directory.
            if !kind.is_dir() {
                return Err(self.unsafe_entry(
                    &shown,
                    "an entry for the layer root that is not a directory",
                ));
            }
            let root = self
                .root
                .try_clone()
                .map_err(|e| self.extract_error(&shown, "open", e))?;
            if self.options.chown {
                sys::fchown(root.as_fd(), meta.uid, meta.gid)
                    .map_err(|e| self.extract_error(&shown, "chown", e))?;
            }
            self.set_xattrs(root.as_fd(), &meta, &shown)?;
            self.dirs.insert(
                Vec::new(),
                DirMeta {
                    mode: meta.mode,
                    mtime: Some(meta.mtime),
                },
            );
            return Ok(());
        };

        if name.starts_with(WHITEOUT) {
            return self.whiteout(name, parents, &shown);
        }

        if kind.is_character_special() || kind.is_block_special() {
            return self.device(entry, parents, name, &shown);
        }

        let parent = self.walk(parents, true, &shown)?;
        let c_name =
            sys::cstring(name).map_err(|_| self.unsafe_entry(&shown, "path has a NUL byte"))?;
        let parent = parent.as_fd();
        let is_dir = kind.is_dir();
        // A hard link clears its way itself, once its target is known to be there.
        let kept_dir =
            !kind.is_hard_link() && self.make_room(parent, &c_name, &components, is_dir, &shown)?;

        if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            self.regular(entry, parent, &c_name, &meta, &shown)
        } else if is_dir {
            if !kept_dir {
                sys::mkdirat(parent, &c_name, 0o700)
                    .map_err(|e| self.extract_error(&shown, "create directory", e))?;
            }
            let dir = sys::open_subdir(parent, &c_name)
                .map_err(|e| self.extract_error(&shown, "open", e))?;
            if self.options.chown {
                sys::fchown(dir.as_fd(), meta.uid, meta.gid)
                    .map_err(|e| self.extract_error(&shown, "chown", e))?;
            }
            self.set_xattrs(dir.as_fd(), &meta, &shown)?;
            let key = components.iter().map(|c| c.to_vec()).collect();
            self.dirs.insert(
                key,
                DirMeta {
                    mode: meta.mode,
                    mtime: Some(meta.mtime),
                },
            );
            Ok(())
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| self.unsafe_entry(&shown, "symbolic link without a target"))?;
            let target = sys::cstring(&target)
                .map_err(|_| self.unsafe_entry(&shown, "link target has a NUL byte"))?;
            sys::symlinkat(&target, parent, &c_name)
                .map_err(|e| self.extract_error(&shown, "create symbolic link", e))?;
            self.node_metadata(parent, &c_name, &meta, false, &shown)
        } else if kind.is_hard_link() {
            self.hard_link(entry, &components, parent, &c_name, &shown)
        } else if kind.is_fifo() {
            sys::mknodat(parent, &c_name, libc::S_IFIFO | 0o600, 0)
                .map_err(|e| self.extract_error(&shown, "mknod", e))?;
            self.node_metadata(parent, &c_name, &meta, true, &shown)
        } else {
            Err(self.archive_error(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unsupported tar entry type {kind:?} for {shown:?}"),
            )))
        }
    }

    /// A character or block device entry. None is created: a device node in the store would be
    /// reachable from any sandbox whose image has it (a disk, `/dev/mem`, …), whatever the
    /// sandbox's own `/dev` says. The one exception is a character device 0:0, which is what an
    /// overlayfs whiteout is (kernel documentation `filesystems/overlayfs.rst`, "whiteouts and
    /// opaque directories") and grants access to nothing: it is taken as the whiteout of its
    /// name, like `.wh.NAME`.
    fn device<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        parents: &[&[u8]],
        name: &[u8],
        path: &str,
    ) -> Result<()> {
        let header = entry.header();
        let (major, minor) = match (header.device_major(), header.device_minor()) {
            (Ok(major), Ok(minor)) => (major.unwrap_or(0), minor.unwrap_or(0)),
            (Err(e), _) | (_, Err(e)) => return Err(self.archive_error(e)),
        };
        if header.entry_type().is_character_special() && major == 0 && minor == 0 {
            return self.overlay_whiteout(parents, name, path);
        }
        self.skipped_devices = self.skipped_devices.saturating_add(1);
        Ok(())
    }

    /// Owner, mode (unless a symlink) and time of a node that is not opened (symlinks,
    /// FIFOs).
    fn node_metadata(
        &self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        chmod: bool,
        path: &str,
    ) -> Result<()> {
        if self.options.chown {
            sys::lchownat(parent, name, meta.uid, meta.gid)
                .map_err(|e| self.extract_error(path, "chown", e))?;
        }
        if chmod {
            sys::fchmodat(parent, name, meta.mode)
                .map_err(|e| self.extract_error(path, "chmod", e))?;
        }
        sys::lutimensat(parent, name, meta.mtime)
            .map_err(|e| self.extract_error(path, "set times of", e))
    }

    fn regular<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
        path: &str,
    ) -> Result<()> {
        // The tar reader gives a GNU sparse file's logical size, holes included.
        let size = entry.size();
        let expanded = self.expanded_size.saturating_add(size);
        if expanded > self.options.budget {
            return Err(Error::ExpandedSizeExceeded {
                layer: self.layer.clone(),
                size: self.options.before.saturating_add(expanded),
                limit: self.options.limit,
            });
        }
        self.expanded_size = expanded;
        let sparse = entry.header().entry_type().is_gnu_sparse();
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = sys::openat(parent, name, flags, 0o600)
            .map_err(|e| self.extract_error(path, "create", e))?;
        let file = std::fs::File::from(fd);
        let mut buf = vec![0u8; BUFFER];
        let mut offset = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.archive_error(e)),
            };
            let data = buf.get(..n).unwrap_or(&[]);
            // The tar reader fills a sparse file's holes with zeros: a block of zeros is left
            // as a hole (the data of the file, written at its offset with pwrite(2), and its
            // length, set with ftruncate(2) below, make the same content).
            if !(sparse && all_zero(data)) {
                file.write_all_at(data, offset)
                    .map_err(|e| self.extract_error(path, "write", e))?;
            }
            offset = offset.saturating_add(n as u64);
        }
        if sparse {
            file.set_len(offset)
                .map_err(|e| self.extract_error(path, "set the length of", e))?;
        }
        // chown before chmod: chown clears the set-user-ID and set-group-ID bits.
        if self.options.chown {
            sys::fchown(file.as_fd(), meta.uid, meta.gid)
                .map_err(|e| self.extract_error(path, "chown", e))?;
        }
        sys::fchmod(file.as_fd(), meta.mode).map_err(|e| self.extract_error(path, "chmod", e))?;
        self.set_xattrs(file.as_fd(), meta, path)?;
        sys::futimens(file.as_fd(), meta.mtime)
            .map_err(|e| self.extract_error(path, "set times of", e))
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        components: &[&[u8]],
        parent: BorrowedFd<'_>,
        name: &CStr,
        path: &str,
    ) -> Result<()> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| self.unsafe_entry(path, "hard link without a target"))?
            .into_owned();
        let target_components =
            split_path(&target).map_err(|bad| self.unsafe_entry(path, bad.reason(true)))?;
        let Some((&target_name, target_parents)) = target_components.split_last() else {
            return Err(self.unsafe_entry(path, "hard link to the layer root"));
        };
        if target_components == components {
            return Ok(());
        }
        const NOT_IN_LAYER: &str =
            "hard link target is not in the layer (not extracted before the link)";
        let target_parent = match self.walk(target_parents, false, path) {
            Ok(fd) => fd,
            Err(Error::Extract { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Err(self.unsafe_entry(path, NOT_IN_LAYER))
            }
            Err(Error::UnsafeEntry { .. }) => {
                return Err(self.unsafe_entry(
                    path,
                    "hard link target's parent is a symbolic link or not a directory",
                ))
            }
            Err(e) => return Err(e),
        };
        let target_name = sys::cstring(target_name)
            .map_err(|_| self.unsafe_entry(path, "hard link target has a NUL byte"))?;
        let target = sys::lstatat(target_parent.as_fd(), &target_name)
            .map_err(|e| self.extract_error(path, "stat the hard link target of", e))?;
        match target {
            None => return Err(self.unsafe_entry(path, NOT_IN_LAYER)),
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(self.unsafe_entry(path, "hard link to a directory"))
            }
            Some(_) => {}
        }
        self.make_room(parent, name, components, false, path)?;
        match sys::linkat(target_parent.as_fd(), &target_name, parent, name) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                Err(self.unsafe_entry(path, NOT_IN_LAYER))
            }
            Err(e) => Err(self.extract_error(path, "hard link", e)),
        }
    }

    /// An OCI whiteout: `.wh..wh..opq` makes the parent opaque; `.wh.NAME` becomes the overlayfs
    /// whiteout NAME, a character device 0:0. Per the OCI spec a whiteout only hides what lower
    /// layers have: if this layer already has NAME, the whiteout is dropped (and a later entry
    /// NAME replaces the whiteout).
    fn whiteout(&mut self, name: &[u8], parents: &[&[u8]], path: &str) -> Result<()> {
        if name == OPAQUE {
            let parent = self.walk(parents, true, path)?;
            return sys::fsetxattr(parent.as_fd(), self.options.opaque_xattr, b"y")
                .map_err(|e| self.extract_error(path, "set the opaque xattr on the parent of", e));
        }
        if name.starts_with(WHITEOUT_META) {
            return Ok(());
        }
        let hidden = &name[WHITEOUT.len()..];
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(self.unsafe_entry(path, "whiteout of an invalid name"));
        }
        self.overlay_whiteout(parents, hidden, path)
    }

    /// Makes the overlayfs whiteout `hidden` (a character device 0:0, which `mknod(2)` allows
    /// without `CAP_MKNOD`) in the directory `parents`, unless this layer already has
    /// something of that name.
    fn overlay_whiteout(&mut self, parents: &[&[u8]], hidden: &[u8], path: &str) -> Result<()> {
        let parent = self.walk(parents, true, path)?;
        let hidden =
            sys::cstring(hidden).map_err(|_| self.unsafe_entry(path, "path has a NUL byte"))?;
        if sys::lstatat(parent.as_fd(), &hidden)
            .map_err(|e| self.extract_error(path, "stat", e))?
            .is_some()
        {
            return Ok(());
        }
        sys::mknodat(parent.as_fd(), &hidden, libc::S_IFCHR, libc::makedev(0, 0))
            .map_err(|e| self.extract_error(path, "create the overlay whiteout for", e))
    }

    /// Gives every directory its final mode and time, deepest first, now that nothing more is
    /// created in them (a read-only directory no longer blocks extraction).
    fn finish(&mut self) -> Result<()> {
        let dirs = std::mem::take(&mut self.dirs);
        for (key, meta) in dirs.iter().rev() {
            let components: Vec<&[u8]> = key.iter().map(Vec::as_slice).collect();
            let path = display(&components);
            let dir = match self.walk(&components, false, &path) {
                Ok(fd) => fd,
                // Replaced by a non-directory later in the archive.
                Err(Error::UnsafeEntry { .. }) => continue,
                Err(Error::Extract { source, .. })
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            };
            sys::fchmod(dir.as_fd(), meta.mode)
                .map_err(|e| self.extract_error(&path, "chmod", e))?;
            if let Some(mtime) = meta.mtime {
                sys::futimens(dir.as_fd(), mtime)
                    .map_err(|e| self.extract_error(&path, "set times of", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_refuses_escapes() {
        assert!(matches!(split_path(b"/etc/passwd"), Err(BadPath::Absolute)));
        assert!(matches!(split_path(b"a/../../b"), Err(BadPath::DotDot)));
        assert!(matches!(split_path(b".."), Err(BadPath::DotDot)));
        assert_eq!(
            split_path(b"./a//b/./c/").ok(),
            Some(vec![&b"a"[..], b"b", b"c"])
        );
        assert_eq!(split_path(b"./").ok(), Some(vec![]));
    }
}
