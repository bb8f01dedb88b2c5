//! The digest of an unpacked layer's tree, recorded when the layer is stored and checked by
//! `LayerStore::verify`: what finds a truncated, changed or lost file in the store.
//!
//! The walk is canonical: every entry of `diff/` (its root included) gives one record, the
//! records are ordered by path (component by component, names compared as bytes), and the
//! digest is the sha256 of a version tag followed by the records. A record holds, each field
//! length-prefixed or fixed-size so that no two trees give the same bytes: the path, the file
//! type, the mode (permission, set-user-ID, set-group-ID and sticky bits), uid and gid; then for
//! a regular file its size and its content digest (below), for a symbolic link its target, for a
//! character or block device (overlayfs whiteouts) its device number, and for a directory the
//! value of the opaque xattr, if any. Times, link counts, inode numbers and directories' sizes
//! are left out: they differ from one unpacking to another, or from one file system to
//! another, without the content changing.
//!
//! A file's content digest is over its 64 KiB blocks in order: a run of blocks that are all
//! zeros counts as its length, any other block as its bytes. The digest depends on the content
//! only, not on where the file has holes, and the holes of a sparse file (found with
//! `lseek(2)` `SEEK_DATA`) are counted without being read: a layer's 1 GiB sparse file costs
//! what its data costs.
//!
//! The walk reaches every node with `openat(2)` and `O_NOFOLLOW` from the tree's root, one
//! component at a time, and holds one directory open at a time (so a deep tree cannot exhaust
//! the descriptors). A store owned by an unprivileged user may hold files and directories that
//! their owner cannot read (mode `0000`, say): those are given the owner's read (and search)
//! permission for the walk and their mode back after it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::extract::all_zero;
use crate::sys;

/// Tags the record format, so that a later one cannot be mistaken for this one.
const VERSION: &[u8] = b"palisade-tree-v1\0";

/// The block of a file's content digest.
const BLOCK: u64 = 64 * 1024;

/// Why a tree could not be walked: the path inside the tree (`""` for its root), what was
/// attempted and the OS error.
#[derive(Debug)]
pub(super) struct WalkError {
    pub(super) path: String,
    pub(super) op: &'static str,
    pub(super) source: io::Error,
}

impl WalkError {
    /// The path on the host, for an error naming it.
    pub(super) fn host_path(&self, root: &Path) -> PathBuf {
        if self.path.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&self.path)
        }
    }
}

type Components = Vec<Vec<u8>>;

fn shown(components: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&components.join(&b'/')).into_owned()
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A permission change made for the walk, undone after it.
struct Opened {
    components: Components,
    mode: u32,
}

struct Walker<'a> {
    root: OwnedFd,
    opaque_xattr: &'a CStr,
    /// Whether a node the owner cannot read may be opened up (only without privilege: root
    /// reads everything).
    may_open_up: bool,
    records: BTreeMap<Components, Vec<u8>>,
    /// Content digests by inode: hard links are read once.
    contents: HashMap<(u64, u64), [u8; 32]>,
    opened: Vec<Opened>,
}

/// The tree digest of the directory `dir`, whose opaque directories carry `opaque_xattr`.
pub(super) fn tree_digest(dir: &Path, opaque_xattr: &CStr) -> Result<Digest, WalkError> {
    let error = |op, source| WalkError {
        path: String::new(),
        op,
        source,
    };
    let root = sys::open_dir_path(dir).map_err(|e| error("open", e))?;
    let mut walker = Walker {
        root,
        opaque_xattr,
        may_open_up: !sys::is_root(),
        records: BTreeMap::new(),
        contents: HashMap::new(),
        opened: Vec::new(),
    };
    let walked = walker.walk();
    let restored = walker.restore();
    walked?;
    restored?;
    let mut hasher = Sha256::new();
    hasher.update(VERSION);
    for record in walker.records.values() {
        hasher.update(record);
    }
    Ok(Digest::from_sha256(hasher.finalize().into()))
}

impl Walker<'_> {
    fn error(components: &[Vec<u8>], op: &'static str, source: io::Error) -> WalkError {
        WalkError {
            path: shown(components),
            op,
            source,
        }
    }

    /// Visits every directory, breadth first; each visit records the directory and every
    /// non-directory in it.
    fn walk(&mut self) -> Result<(), WalkError> {
        let mut queue: std::collections::VecDeque<Components> = [Vec::new()].into();
        while let Some(components) = queue.pop_front() {
            let dir = self.open_dir(&components)?;
            let mut st =
                sys::fstat(dir.as_fd()).map_err(|e| Self::error(&components, "stat", e))?;
            // The mode the tree has, not the one given for the walk.
            if let Some(opened) = self.opened.iter().find(|o| o.components == components) {
                st.st_mode = (st.st_mode & !0o7777) | opened.mode;
            }
            let opaque = sys::fgetxattr(dir.as_fd(), self.opaque_xattr)
                .map_err(|e| Self::error(&components, "read the opaque xattr of", e))?;
            let mut record = self.head(&components, b'd', &st);
            match opaque {
                None => record.push(0),
                Some(value) => {
                    record.push(1);
                    field(&mut record, &value);
                }
            }
            self.records.insert(components.clone(), record);

            let names =
                sys::dir_names(dir.as_fd()).map_err(|e| Self::error(&components, "list", e))?;
            for name in names {
                let mut child = components.clone();
                child.push(name.as_bytes().to_vec());
                let st = sys::lstatat(dir.as_fd(), &name)
                    .map_err(|e| Self::error(&child, "stat", e))?
                    .ok_or_else(|| {
                        Self::error(&child, "stat", io::Error::from_raw_os_error(libc::ENOENT))
                    })?;
                match st.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => queue.push_back(child),
                    libc::S_IFREG => {
                        let sum = self.content(dir.as_fd(), &name, &child, &st)?;
                        let mut record = self.head(&child, b'f', &st);
                        record.extend_from_slice(&(st.st_size as u64).to_le_bytes());
                        record.extend_from_slice(&sum);
                        self.records.insert(child, record);
                    }
                    libc::S_IFLNK => {
                        let target = sys::readlinkat(dir.as_fd(), &name)
                            .map_err(|e| Self::error(&child, "read the link", e))?;
                        let mut record = self.head(&child, b'l', &st);
                        field(&mut record, &target);
                        self.records.insert(child, record);
                    }
                    kind @ (libc::S_IFCHR | libc::S_IFBLK) => {
                        let tag = if kind == libc::S_IFCHR { b'c' } else { b'b' };
                        let mut record = self.head(&child, tag, &st);
                        record.extend_from_slice(&st.st_rdev.to_le_bytes());
                        self.records.insert(child, record);
                    }
                    kind => {
                        let tag = if kind == libc::S_IFIFO { b'p' } else { b's' };
                        let record = self.head(&child, tag, &st);
                        self.records.insert(child, record);
                    }
                }
            }
        }
        Ok(())
    }

    /// The fields every record starts with.
    fn head(&self, components: &[Vec<u8>], kind: u8, st: &rustix::fs::Stat) -> Vec<u8> {
        let mut record = Vec::with_capacity(128);
        field(&mut record, &components.join(&b'/'));
        record.push(kind);
        record.extend_from_slice(&(st.st_mode & 0o7777).to_le_bytes());
        record.extend_from_slice(&st.st_uid.to_le_bytes());
        record.extend_from_slice(&st.st_gid.to_le_bytes());
        record
    }

    /// Opens the directory `components`, one component at a time from the root; a directory
    /// the owner cannot search or read is opened up (and recorded to be restored).
    fn open_dir(&mut self, components: &[Vec<u8>]) -> Result<OwnedFd, WalkError> {
        let mut current = self
            .root
            .try_clone()
            .map_err(|e| Self::error(components, "open", e))?;
        for (i, component) in components.iter().enumerate() {
            let here = &components[..=i];
            let name = sys::cstring(component).map_err(|e| Self::error(here, "open", e))?;
            current = match sys::open_subdir(current.as_fd(), &name) {
                Ok(fd) => fd,
                Err(e) if self.may_open_up && e.raw_os_error() == Some(libc::EACCES) => {
                    self.open_up(current.as_fd(), &name, here, 0o500)?;
                    sys::open_subdir(current.as_fd(), &name)
                        .map_err(|e| Self::error(here, "open", e))?
                }
                Err(e) => return Err(Self::error(here, "open", e)),
            };
        }
        // Listing needs read permission and reaching the entries search permission, which
        // opening did not check.
        let st = sys::fstat(current.as_fd()).map_err(|e| Self::error(components, "stat", e))?;
        let mine = st.st_uid == rustix::process::geteuid().as_raw();
        if self.may_open_up && mine && st.st_mode & 0o500 != 0o500 {
            self.opened.push(Opened {
                components: components.to_vec(),
                mode: st.st_mode & 0o7777,
            });
            sys::fchmod(current.as_fd(), (st.st_mode & 0o7777) | 0o500)
                .map_err(|e| Self::error(components, "chmod", e))?;
        }
        Ok(current)
    }

    /// Gives the node `name` in `parent` the owner permissions `bits` too, remembering its
    /// mode.
    fn open_up(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        components: &[Vec<u8>],
        bits: u32,
    ) -> Result<(), WalkError> {
        let st = sys::lstatat(parent, name)
            .map_err(|e| Self::error(components, "stat", e))?
            .ok_or_else(|| {
                Self::error(
                    components,
                    "stat",
                    io::Error::from_raw_os_error(libc::ENOENT),
                )
            })?;
        let mode = st.st_mode & 0o7777;
        sys::fchmodat(parent, name, mode | bits)
            .map_err(|e| Self::error(components, "chmod", e))?;
        self.opened.push(Opened {
            components: components.to_vec(),
            mode,
        });
        Ok(())
    }

    /// The sha256 of a regular file's content.
    fn content(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CString,
        components: &[Vec<u8>],
        st: &rustix::fs::Stat,
    ) -> Result<[u8; 32], WalkError> {
        let key = (st.st_dev, st.st_ino);
        if let Some(sum) = self.contents.get(&key) {
            return Ok(*sum);
        }
        // O_NONBLOCK: should the file have been replaced by a FIFO, opening it does not wait.
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK;
        let fd = match sys::openat(dir, name, flags, 0) {
            Ok(fd) => fd,
            Err(e) if self.may_open_up && e.raw_os_error() == Some(libc::EACCES) => {
                let mode = st.st_mode & 0o7777;
                sys::fchmodat(dir, name, mode | 0o400)
                    .map_err(|e| Self::error(components, "chmod", e))?;
                let opened = sys::openat(dir, name, flags, 0);
                // The mode goes back at once: the descriptor reads whatever the mode says now.
                let restored = sys::fchmodat(dir, name, mode);
                let fd = opened.map_err(|e| Self::error(components, "open", e))?;
                restored.map_err(|e| Self::error(components, "chmod", e))?;
                fd
            }
            Err(e) => return Err(Self::error(components, "open", e)),
        };
        let opened = sys::fstat(fd.as_fd()).map_err(|e| Self::error(components, "stat", e))?;
        if opened.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Self::error(
                components,
                "read",
                io::Error::new(io::ErrorKind::InvalidData, "changed while read"),
            ));
        }
        let sum =
            hash_content(fd, st.st_size as u64).map_err(|e| Self::error(components, "read", e))?;
        self.contents.insert(key, sum);
        Ok(sum)
    }

    /// Gives back the modes changed for the walk, deepest directories first (their parents
    /// are still searchable when they are reached).
    fn restore(&mut self) -> Result<(), WalkError> {
        let mut first = Ok(());
        let opened = std::mem::take(&mut self.opened);
        let may_open_up = std::mem::replace(&mut self.may_open_up, false);
        let mut ordered: Vec<&Opened> = opened.iter().collect();
        ordered.sort_by_key(|o| std::cmp::Reverse(o.components.len()));
        for change in ordered {
            let result = match change.components.split_last() {
                None => sys::fchmod(self.root.as_fd(), change.mode)
                    .map_err(|e| Self::error(&[], "chmod", e)),
                Some((name, parents)) => self.open_dir(parents).and_then(|parent| {
                    let name = sys::cstring(name)
                        .map_err(|e| Self::error(&change.components, "chmod", e))?;
                    sys::fchmodat(parent.as_fd(), &name, change.mode)
                        .map_err(|e| Self::error(&change.components, "chmod", e))
                }),
            };
            if first.is_ok() {
                first = result;
            }
        }
        self.may_open_up = may_open_up;
        first
    }
}

/// The content digest of the regular file `fd` of `size` bytes (see the module
/// documentation). Fails if the file does not hold exactly `size` bytes.
fn hash_content(fd: OwnedFd, size: u64) -> io::Result<[u8; 32]> {
    use std::os::unix::fs::FileExt;
    let changed = || io::Error::new(io::ErrorKind::InvalidData, "changed while read");
    let file = std::fs::File::from(fd);
    let mut hasher = Sha256::new();
    let mut zeros = 0u64;
    let flush_zeros = |hasher: &mut Sha256, zeros: &mut u64| {
        if *zeros > 0 {
            hasher.update(b"Z");
            hasher.update(zeros.to_le_bytes());
            *zeros = 0;
        }
    };
    let mut buf = vec![0u8; BLOCK as usize];
    let mut offset = 0u64;
    while offset < size {
        // Whole blocks before the next data are holes: zeros, known without reading them.
        let data = sys::seek_data(file.as_fd(), offset)?
            .unwrap_or(size)
            .min(size);
        let hole_end = data - data % BLOCK;
        if hole_end > offset {
            zeros += hole_end - offset;
            offset = hole_end;
            continue;
        }
        let len = BLOCK.min(size - offset) as usize;
        let block = buf.get_mut(..len).ok_or_else(changed)?;
        file.read_exact_at(block, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                changed()
            } else {
                e
            }
        })?;
        if all_zero(block) {
            zeros += len as u64;
        } else {
            flush_zeros(&mut hasher, &mut zeros);
            hasher.update(b"D");
            hasher.update((len as u64).to_le_bytes());
            hasher.update(&*block);
        }
        offset += len as u64;
    }
    flush_zeros(&mut hasher, &mut zeros);
    // Nothing may follow: a file that grew since its stat is not the one recorded.
    let mut probe = [0u8; 1];
    if file.read_at(&mut probe, size)? != 0 {
        return Err(changed());
    }
    Ok(hasher.finalize().into())
}
