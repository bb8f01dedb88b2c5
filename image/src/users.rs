//! Files and users of an image's root, read through its layers as overlayfs would merge them.
//!
//! An image's root exists as a file tree only once a sandbox has mounted it; before that, a
//! caller that needs one of its files (its `/etc/passwd`, to run the image's `User` by name)
//! must read it from the layer directories. [`read_file`] does so with overlayfs's rules
//! (kernel documentation `filesystems/overlayfs.rst`, "Directories", "whiteouts and opaque
//! directories", "Multiple lower layers"):
//!
//! - layers are given top first (as [`Image::lower_dirs`] returns them); the topmost layer that
//!   has a name decides what it is;
//! - a whiteout (a character device 0:0) deletes the name from the layers below;
//! - a directory merges with the directories of the same name below it, down to a layer where
//!   the name is not a directory, or to one where the directory is opaque (its
//!   `trusted.overlay.opaque` or `user.overlay.opaque` xattr is `y`);
//! - a symbolic link is resolved inside the root, as `path_resolution(7)` describes with the
//!   root as `/`: an absolute target starts again at the root, `..` at the root stays there,
//!   and after [`MAX_SYMLINK_HOPS`] links the lookup fails with `ELOOP`.
//!
//! Every component is looked up with `fstatat(2)` (`AT_SYMLINK_NOFOLLOW`) and opened with
//! `openat(2)` (`O_NOFOLLOW`) relative to the directory of its layer, so no symbolic link of an
//! image, and no `..` of one, ever reaches a host path. A file is read only if it is a regular
//! file (a FIFO is never opened for reading, which could block), and only up to
//! [`MAX_FILE_SIZE`] bytes. A plain directory is a root of one layer.
//!
//! [`resolve_user`] turns a user spec (`user`, `uid`, `user:group`, `uid:gid`, `user:gid`,
//! `uid:group`, as `docker run --user` and the image config's `User` take it) into ids with the
//! root's `/etc/passwd` and `/etc/group` (`passwd(5)`, `group(5)`), with the rules of Docker and
//! runc: a number is an id even when no entry has it, a name must have an entry; a user found
//! in `/etc/passwd` gets its primary group from there, unless the spec names a group, and its
//! supplementary groups from the groups of `/etc/group` that list it as a member.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::{Error, Image, ImageConfig, Result};

/// The largest file [`read_file`] reads: 16 MiB.
pub const MAX_FILE_SIZE: u64 = 16 << 20;

/// How many symbolic links one lookup of [`read_file`] follows before it fails with `ELOOP`:
/// the kernel's own bound (`MAXSYMLINKS`, `path_resolution(7)`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// The longest symbolic link target followed (`PATH_MAX`, `limits.h`).
const MAX_LINK_TARGET: usize = 4096;

/// How many path components one lookup may step through, links' targets and the re-walks of
/// `..` included: a bound on the work a crafted chain of links can ask for.
const MAX_STEPS: usize = 1 << 14;

/// The xattrs that make a directory opaque, in either namespace a layer store may use.
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// A user a sandbox's command can run as: what a user spec resolved to in a root.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct User {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary group ids: those of the `/etc/group` entries that list the user as a
    /// member, when the user was found in `/etc/passwd` and the spec named no group (Docker's
    /// and runc's rule); empty otherwise.
    pub groups: Vec<u32>,
    /// The user's home directory from `/etc/passwd` (for `HOME`); `/` when the user has no
    /// entry, or an empty one (as runc defaults it).
    pub home: String,
    /// The user's name, when it was found in `/etc/passwd`.
    pub name: Option<String>,
}

/// Reads the file at `path` (absolute, or relative to the root) of the root made of `layers`,
/// top layer first (as [`Image::lower_dirs`] gives them; a plain directory is a root of one
/// layer), merged as overlayfs merges them (kernel documentation `filesystems/overlayfs.rst`):
/// the topmost layer that has a name decides what it is; a whiteout (a character device 0:0)
/// deletes it; a directory merges with those of the same name below it, down to a layer where
/// the name is not a directory or to an opaque directory (xattr `trusted.overlay.opaque` or
/// `user.overlay.opaque` = `y`).
///
/// Symbolic links are resolved inside the root, as `path_resolution(7)` describes with the root
/// as `/`: an absolute target starts again at the root, `..` at the root stays there. Every
/// component is looked up with `fstatat(2)` (`AT_SYMLINK_NOFOLLOW`) and opened with `openat(2)`
/// (`O_NOFOLLOW`) relative to its layer's directory, so nothing resolves to a host path. Only a
/// regular file is opened (a FIFO, which could block, never is), and at most
/// [`MAX_FILE_SIZE`] bytes are read.
///
/// Returns `Ok(None)` when nothing has that name: a component is missing or deleted by a
/// whiteout, or is a file where a directory should be. A path that names a directory fails
/// with `EISDIR`, one that names a device, FIFO or socket with [`Error::Io`] (no errno), a
/// symbolic link loop with `ELOOP`, a file larger than [`MAX_FILE_SIZE`] with
/// [`Error::FileTooLarge`].
pub fn read_file(layers: &[&Path], path: &str) -> Result<Option<Vec<u8>>> {
    read_file_limited(layers, path, MAX_FILE_SIZE)
}

/// [`read_file`] with a bound of `limit` bytes.
fn read_file_limited(layers: &[&Path], path: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let fail = |source: io::Error| Error::Io {
        op: "read (in the layers' merged root)",
        path: PathBuf::from(path),
        source,
    };
    let Some(file) = open_in_root(layers, path).map_err(|e| match e {
        Lookup::Io(source) => fail(source),
        Lookup::Layer(layer, source) => Error::Io {
            op: "open the layer",
            path: layer,
            source,
        },
        Lookup::Invalid(reason) => Error::InvalidValue {
            what: "path in the root",
            value: path.to_owned(),
            reason,
        },
    })?
    else {
        return Ok(None);
    };
    let size = rustix::fs::fstat(&file)
        .map_err(|e| fail(e.into()))?
        .st_size;
    let too_large = || Error::FileTooLarge {
        path: path.to_owned(),
        limit,
    };
    if u64::try_from(size).unwrap_or(u64::MAX) > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    // The size may have changed since the fstat(2); the read itself is bounded.
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(Some(bytes))
}

/// Resolves the user spec `spec` (`user`, `uid`, `user:group`, `uid:gid`, `user:gid` or
/// `uid:group`) with the `/etc/passwd` and `/etc/group` of the root made of `layers`, top layer
/// first, read with [`read_file`] (so never through a link out of the root).
///
/// A part made only of digits is an id, which need not have an entry: a uid absent from
/// `/etc/passwd` runs with group 0 (or the group given) and home `/`, as with Docker. A name
/// with no entry fails with [`Error::UnknownUser`] or [`Error::UnknownGroup`]; an empty part,
/// more than one `:`, or an id of `4294967295` (`-1`, "unchanged" to `setresuid(2)`) with
/// [`Error::InvalidValue`]. The first entry that matches wins. Lines that are empty, comments
/// (`#`), NIS references (`+`, `-`) or malformed are skipped.
pub fn resolve_user(layers: &[&Path], spec: &str) -> Result<User> {
    let invalid = |reason| Error::InvalidValue {
        what: "user spec",
        value: spec.to_owned(),
        reason,
    };
    let (user_part, group_part) = match spec.split_once(':') {
        Some((_, group)) if group.contains(':') => {
            return Err(invalid("expected USER[:GROUP], with one ':' at most"))
        }
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(invalid("the user and the group must not be empty"));
    }
    let user_id = parse_id(user_part).map_err(invalid)?;
    let group_id = group_part
        .map(parse_id)
        .transpose()
        .map_err(invalid)?
        .flatten();

    let passwd = read_file(layers, "/etc/passwd")?.unwrap_or_default();
    let entry = passwd_entries(&passwd).find(|e| match user_id {
        Some(uid) => e.uid == uid,
        None => e.name == user_part,
    });
    let mut user = match (entry, user_id) {
        (Some(e), _) => User {
            uid: e.uid,
            gid: e.gid,
            groups: Vec::new(),
            home: if e.home.is_empty() { "/" } else { e.home }.to_owned(),
            name: Some(e.name.to_owned()),
        },
        (None, Some(uid)) => User {
            uid,
            gid: 0,
            groups: Vec::new(),
            home: "/".to_owned(),
            name: None,
        },
        (None, None) => {
            return Err(Error::UnknownUser {
                spec: spec.to_owned(),
                name: user_part.to_owned(),
            })
        }
    };
    let needs_groups = group_part.is_some_and(|_| group_id.is_none()) || user.name.is_some();
    if !needs_groups {
        if let Some(gid) = group_id {
            user.gid = gid;
        }
        return Ok(user);
    }
    let group = read_file(layers, "/etc/group")?.unwrap_or_default();
    match (group_part, group_id) {
        (Some(_), Some(gid)) => user.gid = gid,
        (Some(name), None) => {
            user.gid = group_entries(&group)
                .find(|g| g.name == name)
                .map(|g| g.gid)
                .ok_or_else(|| Error::UnknownGroup {
                    spec: spec.to_owned(),
                    name: name.to_owned(),
                })?;
        }
        (None, _) => {
            // Supplementary groups only in the implicit form, for a user with a name.
            if let Some(name) = &user.name {
                user.groups = group_entries(&group)
                    .filter(|g| g.members.split(',').any(|m| m == name))
                    .map(|g| g.gid)
                    .collect();
            }
        }
    }
    Ok(user)
}

/// `Ok(Some(id))` for a decimal id, `Ok(None)` for a name.
fn parse_id(part: &str) -> std::result::Result<Option<u32>, &'static str> {
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match part.parse::<u32>() {
        Ok(u32::MAX) => Err("4294967295 (-1) means \"unchanged\" to setresuid(2), not an id"),
        Ok(id) => Ok(Some(id)),
        Err(_) => Err("an id must be below 4294967295"),
    }
}

/// The lines of a `passwd(5)` or `group(5)` file that may be entries.
fn entry_lines(bytes: &[u8]) -> impl Iterator<Item = Vec<&str>> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|line| std::str::from_utf8(line).ok())
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with(['#', '+', '-']))
        .map(|line| line.split(':').collect())
}

/// A `passwd(5)` entry: `name:password:UID:GID:GECOS:directory:shell`.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(bytes: &[u8]) -> impl Iterator<Item = PasswdEntry<'_>> {
    entry_lines(bytes).filter_map(|fields| {
        let name = *fields.first().filter(|n| !n.is_empty())?;
        Some(PasswdEntry {
            name,
            uid: fields.get(2)?.parse().ok().filter(|id| *id != u32::MAX)?,
            gid: fields.get(3)?.parse().ok().filter(|id| *id != u32::MAX)?,
            home: fields.get(5).copied().unwrap_or(""),
        })
    })
}

/// A `group(5)` entry: `group_name:password:GID:user_list`.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: &'a str,
}

fn group_entries(bytes: &[u8]) -> impl Iterator<Item = GroupEntry<'_>> {
    entry_lines(bytes).filter_map(|fields| {
        let name = *fields.first().filter(|n| !n.is_empty())?;
        Some(GroupEntry {
            name,
            gid: fields.get(2)?.parse().ok().filter(|id| *id != u32::MAX)?,
            members: fields.get(3).copied().unwrap_or(""),
        })
    })
}

impl Image {
    /// Reads the file at `path` of the image's root, through its layers as overlayfs merges
    /// them and never following a link out of the root: see the crate's `read_file`.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        read_file(&self.lower_dirs(), path)
    }

    /// Resolves a user spec (`user`, `uid`, `user:group`, `uid:gid`, …) with the image's own
    /// `/etc/passwd` and `/etc/group`: see the crate's `resolve_user`.
    pub fn resolve_user(&self, spec: &str) -> Result<User> {
        resolve_user(&self.lower_dirs(), spec)
    }
}

impl ImageConfig {
    /// The command line to run, with Docker's rules (`docker run` reference, "ENTRYPOINT" and
    /// "CMD"; OCI image-spec, "Image Configuration" § `Entrypoint`, `Cmd`): the image's
    /// `Entrypoint` followed by its `Cmd`; a non-empty `cmd` replaces the image's `Cmd`; an
    /// `entrypoint` replaces the image's `Entrypoint` and drops the image's `Cmd` (only `cmd`
    /// follows it). `Some(&[])` clears the entrypoint (`docker run --entrypoint ''`).
    ///
    /// Fails with [`Error::NoCommand`] when that leaves nothing, or a command whose program is
    /// the empty string.
    pub fn command(&self, entrypoint: Option<&[String]>, cmd: &[String]) -> Result<Vec<String>> {
        let (entrypoint, default_cmd) = match entrypoint {
            Some(given) => (given, &[][..]),
            None => (&self.entrypoint[..], &self.cmd[..]),
        };
        let cmd = if cmd.is_empty() { default_cmd } else { cmd };
        let line: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
        match line.first() {
            Some(program) if !program.is_empty() => Ok(line),
            _ => Err(Error::NoCommand),
        }
    }
}

/// Why a lookup failed.
enum Lookup {
    /// A system call on the root failed.
    Io(io::Error),
    /// A layer's directory could not be opened.
    Layer(PathBuf, io::Error),
    /// The path was refused.
    Invalid(&'static str),
}

impl From<Errno> for Lookup {
    fn from(e: Errno) -> Lookup {
        Lookup::Io(e.into())
    }
}

fn errno(code: Errno) -> Lookup {
    Lookup::Io(io::Error::from(code))
}

/// One directory of the merged tree: the directories of the layers that make it, top first.
struct Merged {
    dirs: Vec<OwnedFd>,
}

/// What a name is in a merged directory.
enum Entry {
    /// Nothing, or a whiteout.
    Absent,
    /// A directory.
    Dir(Merged),
    /// A symbolic link, with its target.
    Symlink(Vec<u8>),
    /// A regular file: its layer's directory (an index into the parent's `dirs`).
    File(usize),
    /// A device, FIFO or socket.
    Other,
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &CString) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name.as_c_str(),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Whether the directory carries overlayfs's opaque xattr with the value `y`.
fn is_opaque(dir: BorrowedFd<'_>) -> rustix::io::Result<bool> {
    for name in OPAQUE_XATTRS {
        let mut value = [0u8; 2];
        match rustix::fs::fgetxattr(dir, name, &mut value) {
            Ok(1) if value[0] == b'y' => return Ok(true),
            // Absent, another value, or xattrs not supported (or `trusted.*` not visible to
            // an unprivileged reader): not opaque by this name.
            Ok(_) | Err(Errno::NODATA) | Err(Errno::RANGE) | Err(Errno::NOTSUP) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// The root of the merged tree: every layer's directory.
fn root(layers: &[&Path]) -> std::result::Result<Merged, Lookup> {
    let dirs = layers
        .iter()
        .map(|layer| {
            let path = CString::new(layer.as_os_str().as_bytes())
                .map_err(|_| Lookup::Invalid("a layer's path holds a NUL byte"))?;
            rustix::fs::open(
                path.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Lookup::Layer(layer.to_path_buf(), e.into()))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok(Merged { dirs })
}

/// Looks `name` up in a merged directory, as overlayfs does.
fn lookup(merged: &Merged, name: &CString) -> std::result::Result<Entry, Lookup> {
    let mut dirs = Vec::new();
    for (i, dir) in merged.dirs.iter().enumerate() {
        let stat = match rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind == FileType::Directory {
            let sub = open_dir_at(dir.as_fd(), name)?;
            let opaque = is_opaque(sub.as_fd())?;
            dirs.push(sub);
            if opaque {
                break;
            }
            continue;
        }
        if !dirs.is_empty() {
            // A non-directory below a directory ends the merge: it is hidden, and so is all
            // that lies below it.
            break;
        }
        return Ok(match kind {
            FileType::CharacterDevice if stat.st_rdev == 0 => Entry::Absent,
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(dir, name.as_c_str(), Vec::new())?;
                let target = target.into_bytes();
                if target.len() > MAX_LINK_TARGET {
                    return Err(errno(Errno::NAMETOOLONG));
                }
                Entry::Symlink(target)
            }
            FileType::RegularFile => Entry::File(i),
            _ => Entry::Other,
        });
    }
    Ok(if dirs.is_empty() {
        Entry::Absent
    } else {
        Entry::Dir(Merged { dirs })
    })
}

/// The components of a path, without empty ones and `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

fn cstring(component: &[u8]) -> std::result::Result<CString, Lookup> {
    CString::new(component).map_err(|_| Lookup::Invalid("a path component holds a NUL byte"))
}

/// Opens the regular file at `path` in the merged root; `Ok(None)` when nothing has that name.
fn open_in_root(layers: &[&Path], path: &str) -> std::result::Result<Option<OwnedFd>, Lookup> {
    // The path, then the targets of the links met, are consumed from the end of `pending`.
    let mut pending: Vec<Vec<u8>> = components(path.as_bytes())
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    // Where the lookup stands: the names of merged directories from the root, and the last one.
    // `..` pops a name and walks down again from the root: every name of `at` is a directory
    // (links are replaced by their targets before they get there), so this is the parent.
    let mut at: Vec<CString> = Vec::new();
    let mut current = root(layers)?;
    let mut hops = 0;
    let mut steps = 0;
    let mut step = || {
        steps += 1;
        if steps > MAX_STEPS {
            Err(errno(Errno::NAMETOOLONG))
        } else {
            Ok(())
        }
    };
    while let Some(component) = pending.pop() {
        step()?;
        if component == b".." {
            if at.pop().is_some() {
                current = root(layers)?;
                for name in &at {
                    step()?;
                    current = match lookup(&current, name)? {
                        Entry::Dir(next) => next,
                        // A layer changed under the lookup.
                        _ => return Err(errno(Errno::NOENT)),
                    };
                }
            }
            continue;
        }
        let name = cstring(&component)?;
        let last = pending.is_empty();
        match lookup(&current, &name)? {
            Entry::Absent => return Ok(None),
            Entry::Dir(next) => {
                if last {
                    return Err(errno(Errno::ISDIR));
                }
                current = next;
                at.push(name);
            }
            Entry::Symlink(target) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(errno(Errno::LOOP));
                }
                if target.is_empty() {
                    return Ok(None);
                }
                if target.starts_with(b"/") {
                    at.clear();
                    current = root(layers)?;
                }
                pending.extend(components(&target).rev().map(<[u8]>::to_vec));
            }
            Entry::File(layer) if last => {
                let file = rustix::fs::openat(
                    &current.dirs[layer],
                    name.as_c_str(),
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                // Checked on the descriptor itself: the lookup's answer may be stale.
                let kind = FileType::from_raw_mode(rustix::fs::fstat(&file)?.st_mode);
                if kind != FileType::RegularFile {
                    return Err(not_a_file());
                }
                return Ok(Some(file));
            }
            // Only directories have names below them (ENOTDIR): nothing has this path.
            Entry::File(_) | Entry::Other if !last => return Ok(None),
            Entry::File(_) | Entry::Other => return Err(not_a_file()),
        }
    }
    // The root itself, or a path of only `.` and `..`.
    Err(errno(Errno::ISDIR))
}

fn not_a_file() -> Lookup {
    Lookup::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a regular file (a device, FIFO or socket)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root of layers built in a fresh directory: `layer(i)` is layer `i`, top first.
    struct Layers {
        dir: PathBuf,
        count: usize,
    }

    impl Layers {
        fn new(tag: &str, count: usize) -> Layers {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("palisade-users-{tag}-{}-{n}", std::process::id()));
            for i in 0..count {
                std::fs::create_dir_all(dir.join(i.to_string())).unwrap();
            }
            Layers { dir, count }
        }

        fn layer(&self, i: usize) -> PathBuf {
            self.dir.join(i.to_string())
        }

        fn write(&self, i: usize, path: &str, content: &str) {
            let path = self.layer(i).join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }

        fn link(&self, i: usize, path: &str, target: &str) {
            let path = self.layer(i).join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            symlink(target, path).unwrap();
        }

        fn paths(&self) -> Vec<PathBuf> {
            (0..self.count).map(|i| self.layer(i)).collect()
        }

        fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
            let paths = self.paths();
            let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            read_file(&refs, path)
        }

        fn text(&self, path: &str) -> Option<String> {
            self.read(path)
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        }

        fn user(&self, spec: &str) -> Result<User> {
            let paths = self.paths();
            let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
            resolve_user(&refs, spec)
        }
    }

    impl Drop for Layers {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn whiteout(path: &Path) {
        let name = CString::new(path.as_os_str().as_bytes()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            name.as_c_str(),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          # a comment\n\
                          +nis\n\
                          broken:x:notanumber:1::/:/bin/sh\n\
                          app:x:1000:1001:App:/home/app:/bin/sh\n\
                          nohome:x:1002:1002:::/bin/sh\n\
                          app:x:2000:2000:second app:/nowhere:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
                         appgroup:x:1001:\n\
                         staff:x:50:other,app\n\
                         audio:x:29:app\n\
                         video:x:44:application\n";

    #[test]
    fn upper_layers_hide_lower_ones_and_whiteouts_delete() {
        let l = Layers::new("merge", 3);
        l.write(2, "etc/a", "bottom a");
        l.write(2, "etc/b", "bottom b");
        l.write(2, "etc/c", "bottom c");
        l.write(1, "etc/a", "middle a");
        l.write(0, "etc/d", "top d");
        assert_eq!(l.text("/etc/a").as_deref(), Some("middle a"));
        assert_eq!(l.text("etc/b").as_deref(), Some("bottom b"));
        assert_eq!(l.text("/etc/d").as_deref(), Some("top d"));
        assert_eq!(l.text("/etc/none"), None);
        assert_eq!(l.text("/none/a"), None);
        // A file where a directory should be: nothing has the path.
        assert_eq!(l.text("/etc/a/x"), None);
        if is_root() {
            whiteout(&l.layer(0).join("etc/b"));
            assert_eq!(l.text("/etc/b"), None);
            // A whiteout of a whole directory.
            std::fs::create_dir_all(l.layer(0)).unwrap();
            let etc0 = l.layer(0).join("etc");
            std::fs::remove_dir_all(&etc0).unwrap();
            whiteout(&etc0);
            assert_eq!(l.text("/etc/c"), None);
        }
    }

    #[test]
    fn opaque_directories_and_non_directories_end_the_merge() {
        let l = Layers::new("opaque", 3);
        l.write(2, "etc/passwd", "bottom");
        l.write(1, "etc/group", "middle");
        l.write(0, "etc/other", "top");
        assert_eq!(l.text("/etc/passwd").as_deref(), Some("bottom"));
        let etc = CString::new(l.layer(1).join("etc").as_os_str().as_bytes()).unwrap();
        let xattr = if is_root() {
            "trusted.overlay.opaque"
        } else {
            "user.overlay.opaque"
        };
        rustix::fs::setxattr(etc.as_c_str(), xattr, b"y", rustix::fs::XattrFlags::empty()).unwrap();
        assert_eq!(l.text("/etc/passwd"), None, "hidden by the opaque middle");
        assert_eq!(l.text("/etc/group").as_deref(), Some("middle"));
        assert_eq!(l.text("/etc/other").as_deref(), Some("top"));

        // A file in a middle layer where the lower ones have a directory.
        let l = Layers::new("nondir", 3);
        l.write(2, "srv/x", "bottom");
        l.write(1, "srv", "a file");
        std::fs::create_dir_all(l.layer(0).join("srv")).unwrap();
        assert_eq!(l.text("/srv/x"), None);
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let l = Layers::new("links", 2);
        l.write(1, "real/passwd", "in the image");
        l.link(0, "etc", "/real");
        l.link(0, "abs", "/../../../../real/passwd");
        l.link(0, "rel/deep/up", "../../../../../../../real/passwd");
        l.link(0, "dotdot", "real/../real/./passwd");
        assert_eq!(l.text("/etc/passwd").as_deref(), Some("in the image"));
        assert_eq!(l.text("/abs").as_deref(), Some("in the image"));
        assert_eq!(l.text("/rel/deep/up").as_deref(), Some("in the image"));
        assert_eq!(l.text("/dotdot").as_deref(), Some("in the image"));
        assert_eq!(
            l.text("/../../real/passwd").as_deref(),
            Some("in the image")
        );
        // A link to a host path that the image lacks: nothing, whatever the host has.
        l.link(0, "host", "/proc/self/status");
        assert_eq!(l.text("/host"), None);
        l.link(0, "dangling", "/nowhere/../nothing");
        assert_eq!(l.text("/dangling"), None);
    }

    #[test]
    fn loops_and_other_files_fail_with_their_errno() {
        let l = Layers::new("loops", 1);
        l.link(0, "a", "b");
        l.link(0, "b", "/a");
        l.link(0, "self", "self/x");
        for path in ["/a", "/self"] {
            let err = l.read(path).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ELOOP), "{path}: {err}");
        }
        // Forty links are followed, not forty-one.
        for i in 0..MAX_SYMLINK_HOPS {
            l.link(0, &format!("chain{i}"), &format!("chain{}", i + 1));
        }
        l.write(0, &format!("chain{MAX_SYMLINK_HOPS}"), "end");
        assert_eq!(l.text("/chain0").as_deref(), Some("end"));
        l.link(0, "chainpre", "chain0");
        assert_eq!(l.read("/chainpre").unwrap_err().errno(), Some(libc::ELOOP));

        std::fs::create_dir(l.layer(0).join("dir")).unwrap();
        assert_eq!(l.read("/dir").unwrap_err().errno(), Some(libc::EISDIR));
        assert_eq!(l.read("/").unwrap_err().errno(), Some(libc::EISDIR));
        let fifo = CString::new(l.layer(0).join("fifo").as_os_str().as_bytes()).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            fifo.as_c_str(),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(l.read("/fifo"), Err(Error::Io { .. })));
        assert!(matches!(l.read("/a\0b"), Err(Error::InvalidValue { .. })));
    }

    #[test]
    fn reads_are_bounded() {
        let l = Layers::new("big", 1);
        l.write(0, "small", "12345");
        let big = std::fs::File::create(l.layer(0).join("big")).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap();
        let paths = l.paths();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        assert!(matches!(
            read_file(&refs, "/big"),
            Err(Error::FileTooLarge {
                limit: MAX_FILE_SIZE,
                ..
            })
        ));
        assert!(matches!(
            read_file_limited(&refs, "/small", 4),
            Err(Error::FileTooLarge { limit: 4, .. })
        ));
        assert_eq!(
            read_file_limited(&refs, "/small", 5).unwrap().unwrap(),
            b"12345"
        );
    }

    #[test]
    fn user_specs_resolve_as_docker_resolves_them() {
        let l = Layers::new("users", 2);
        l.write(1, "etc/passwd", PASSWD);
        l.write(1, "etc/group", GROUP);
        let app = l.user("app").unwrap();
        assert_eq!(
            app,
            User {
                uid: 1000,
                gid: 1001,
                groups: vec![50, 29],
                home: "/home/app".into(),
                name: Some("app".into()),
            }
        );
        // By uid: the same entry, the same groups.
        assert_eq!(l.user("1000").unwrap(), app);
        // An explicit group: no supplementary groups.
        let u = l.user("app:staff").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 50, vec![]));
        let u = l.user("app:7").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone()), (1000, 7, vec![]));
        let u = l.user("1000:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        // A uid without an entry: group 0, home /, no name.
        let u = l.user("4242").unwrap();
        assert_eq!(
            u,
            User {
                uid: 4242,
                gid: 0,
                groups: vec![],
                home: "/".into(),
                name: None,
            }
        );
        let u = l.user("4242:4343").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 4343));
        let u = l.user("4242:staff").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 50));
        // An empty home becomes /.
        assert_eq!(l.user("nohome").unwrap().home, "/");
        let root = l.user("root").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));

        // Unknown names are errors that name them.
        match l.user("nobody-here") {
            Err(Error::UnknownUser { name, .. }) => assert_eq!(name, "nobody-here"),
            other => panic!("{other:?}"),
        }
        match l.user("app:nogroup") {
            Err(Error::UnknownGroup { name, .. }) => assert_eq!(name, "nogroup"),
            other => panic!("{other:?}"),
        }
        // A malformed line is skipped, not matched.
        assert!(matches!(l.user("broken"), Err(Error::UnknownUser { .. })));
        for bad in [
            "",
            ":",
            "app:",
            ":staff",
            "a:b:c",
            "4294967295",
            "1:4294967295",
            "99999999999",
        ] {
            assert!(
                matches!(l.user(bad), Err(Error::InvalidValue { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_root_without_passwd_knows_only_numbers() {
        let l = Layers::new("nopasswd", 1);
        let u = l.user("5:6").unwrap();
        assert_eq!((u.uid, u.gid), (5, 6));
        assert!(matches!(l.user("root"), Err(Error::UnknownUser { .. })));
        assert!(matches!(l.user("5:wheel"), Err(Error::UnknownGroup { .. })));
    }

    #[test]
    fn commands_follow_dockers_rules() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut c = ImageConfig::default();
        assert!(matches!(c.command(None, &[]), Err(Error::NoCommand)));
        c.cmd = s(&["sh"]);
        assert_eq!(c.command(None, &[]).unwrap(), s(&["sh"]));
        c.entrypoint = s(&["/entry", "-x"]);
        assert_eq!(c.command(None, &[]).unwrap(), s(&["/entry", "-x", "sh"]));
        assert_eq!(
            c.command(None, &s(&["ls", "-l"])).unwrap(),
            s(&["/entry", "-x", "ls", "-l"])
        );
        // A given entrypoint drops the image's Cmd.
        assert_eq!(
            c.command(Some(&s(&["/bin/env"])), &[]).unwrap(),
            s(&["/bin/env"])
        );
        assert_eq!(
            c.command(Some(&s(&["/bin/env"])), &s(&["A=1"])).unwrap(),
            s(&["/bin/env", "A=1"])
        );
        assert_eq!(c.command(Some(&[]), &s(&["id"])).unwrap(), s(&["id"]));
        assert!(matches!(c.command(Some(&[]), &[]), Err(Error::NoCommand)));
        assert!(matches!(
            c.command(Some(&s(&[""])), &[]),
            Err(Error::NoCommand)
        ));
    }
}
