//! The sandbox's root file system and mount table, as a plan computed before the clone.
//!
//! A [`Rootfs`] says what the sandbox's `/` is (the host's `/` under a throwaway writable layer,
//! a directory, or an overlay of layers) and what is mounted in it (volumes, tmpfs). Its
//! [`plan`](Rootfs::plan) turns that into a list of [`Op`]s with every path already a C string,
//! which the sandbox child carries out with raw system calls, in order, in its new mount
//! namespace; [`RootfsPlan::prepare`] makes, in the parent, the detached mount trees the ops
//! attach (`open_tree(2)`, `fsmount(2)`), so that the child needs no host path after it has
//! changed root.
//!
//! The order follows `mount_namespaces(7)` and `pivot_root(2)`:
//!
//! 1. make every mount private, so nothing propagates back to the host;
//! 2. attach the root tree over a staging directory, `pivot_root` into it and detach the old
//!    root — from then on every path, symbolic links included, resolves inside the new root;
//! 3. mount `/proc`, a minimal `/dev` (device nodes bound from the host, `devpts`, `shm`,
//!    `mqueue`, the `fd` links), `/sys` read-only and a tmpfs `/tmp`;
//! 4. attach the volumes and mount the extra tmpfs;
//! 5. mask the paths runc masks and make the kernel tunables read-only;
//! 6. make the root read-only, if asked.

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::mount;

/// Paths hidden from the sandbox, as runc and Docker hide them: files are covered with
/// `/dev/null`, directories with an empty read-only tmpfs.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Kernel interfaces the sandbox may read but not change.
pub const READ_ONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The device nodes of the sandbox's `/dev`, bound from the host's (which also works in a user
/// namespace, where `mknod(2)` is refused).
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What the sandbox's `/` is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RootSource {
    /// The host's root file system as a read-only lower layer, under a writable layer on a tmpfs
    /// that lives as long as the sandbox: the sandbox sees the host's files, and its writes go
    /// nowhere. Only the root file system itself: file systems mounted below it on the host
    /// (`/proc`, `/home` on a partition of its own, …) are not included.
    HostOverlay,
    /// A directory, bound (recursively) as the root. Writes land in it.
    Dir(PathBuf),
    /// Overlay layers: `lower` top-most first, and an optional `upper`/`work` pair that keeps the
    /// sandbox's writes (without one, a throwaway tmpfs layer is used).
    Layers {
        /// The read-only layers, top-most first.
        lower: Vec<PathBuf>,
        /// The writable layer and its work directory, on the same file system.
        upper: Option<(PathBuf, PathBuf)>,
    },
}

/// Whether the sandbox may write to a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read and write.
    ReadWrite,
    /// Read only (`MOUNT_ATTR_RDONLY` on the bound tree).
    ReadOnly,
}

/// A bind mount from the host into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path (a directory or a file).
    pub host: PathBuf,
    /// Where it appears in the sandbox (absolute).
    pub guest: PathBuf,
    /// Whether the sandbox may only read it.
    pub read_only: bool,
}

/// The sandbox's root file system and the mounts in it. See the [module](self) docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    source: RootSource,
    volumes: Vec<Volume>,
    tmpfs: Vec<PathBuf>,
    read_only: bool,
    mask: bool,
}

impl Default for Rootfs {
    /// [`Rootfs::host`].
    fn default() -> Self {
        Rootfs::host()
    }
}

impl Rootfs {
    fn with(source: RootSource) -> Rootfs {
        Rootfs {
            source,
            volumes: Vec::new(),
            tmpfs: Vec::new(),
            read_only: false,
            mask: true,
        }
    }

    /// The host's `/` as a read-only layer under a throwaway writable one
    /// ([`RootSource::HostOverlay`]): works on any machine, with no image.
    pub fn host() -> Rootfs {
        Rootfs::with(RootSource::HostOverlay)
    }

    /// A directory as the root, bound read-write ([`RootSource::Dir`]).
    pub fn dir(path: impl Into<PathBuf>) -> Rootfs {
        Rootfs::with(RootSource::Dir(path.into()))
    }

    /// Overlay layers, top-most first, under a throwaway writable layer.
    pub fn layers<I, P>(lower: I) -> Rootfs
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        Rootfs::with(RootSource::Layers {
            lower: lower.into_iter().map(Into::into).collect(),
            upper: None,
        })
    }

    /// An imported OCI image's layers (see [`LayerStore::import`](crate::image::LayerStore::import))
    /// under a throwaway writable layer: two sandboxes from one image share its layers, each
    /// with its own writes.
    pub fn image(image: &crate::image::Image) -> Rootfs {
        Rootfs::layers(image.lower_dirs())
    }

    /// Keeps the sandbox's writes in `upper` (with `work`, an empty directory on the same file
    /// system) instead of a throwaway layer. Only for [`layers`](Self::layers).
    pub fn upper(mut self, upper: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Rootfs {
        if let RootSource::Layers { upper: u, .. } = &mut self.source {
            *u = Some((upper.into(), work.into()));
        }
        self
    }

    /// What the root is.
    pub fn source(&self) -> &RootSource {
        &self.source
    }

    /// Binds `host` (recursively) at `guest` in the sandbox.
    pub fn volume(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<PathBuf>,
        access: Access,
    ) -> Rootfs {
        self.volumes.push(Volume {
            host: host.into(),
            guest: guest.into(),
            read_only: access == Access::ReadOnly,
        });
        self
    }

    /// Mounts an empty tmpfs at `guest`.
    pub fn tmpfs(mut self, guest: impl Into<PathBuf>) -> Rootfs {
        self.tmpfs.push(guest.into());
        self
    }

    /// Makes the root read-only (volumes and tmpfs keep their own modes).
    pub fn read_only(mut self, read_only: bool) -> Rootfs {
        self.read_only = read_only;
        self
    }

    /// Whether to mask [`MASKED_PATHS`] and make [`READ_ONLY_PATHS`] read-only (default: yes).
    pub fn mask_kernel_paths(mut self, mask: bool) -> Rootfs {
        self.mask = mask;
        self
    }

    /// Validates the description and computes the ops. Host paths are checked to exist; guest
    /// paths must be absolute, without `..`.
    pub fn plan(&self) -> Result<RootfsPlan> {
        let mut p = Planner::default();
        match &self.source {
            RootSource::HostOverlay => {}
            RootSource::Dir(dir) => check_dir("root directory", dir)?,
            RootSource::Layers { lower, upper } => {
                if lower.is_empty() {
                    return Err(Error::InvalidValue {
                        what: "overlay layers",
                        value: String::new(),
                        reason: "at least one lower layer is needed",
                    });
                }
                for l in lower {
                    check_dir("lower layer", l)?;
                }
                if let Some((u, w)) = upper {
                    check_dir("upper layer", u)?;
                    check_dir("work directory", w)?;
                }
            }
        }
        p.push(Op::MakePrivate);
        match &self.source {
            RootSource::HostOverlay => p.throwaway_overlay(&[PathBuf::from("/")])?,
            RootSource::Layers { lower, upper: None } => p.throwaway_overlay(lower)?,
            RootSource::Dir(_) | RootSource::Layers { .. } => {
                let root = p.tree(Tree::Root);
                p.push(Op::Attach {
                    tree: root,
                    target: c(STAGING)?,
                });
                p.push(Op::PivotRoot {
                    new_root: c(STAGING)?,
                });
            }
        }

        p.mkdir("/proc")?;
        p.mount(
            "proc",
            "/proc",
            "proc",
            NOSUID | NODEV | NOEXEC,
            None,
            false,
        )?;

        p.mkdir("/dev")?;
        p.mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            NOSUID | libc::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
            false,
        )?;
        for (i, name) in DEVICES.iter().enumerate() {
            let path = format!("/dev/{name}");
            p.push(Op::CreateFile { path: c(&path)? });
            let tree = p.tree(Tree::Device(i));
            p.push(Op::Attach {
                tree,
                target: c(&path)?,
            });
        }
        p.mkdir("/dev/pts")?;
        p.mount(
            "devpts",
            "/dev/pts",
            "devpts",
            NOSUID | NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
            false,
        )?;
        p.symlink("pts/ptmx", "/dev/ptmx")?;
        p.mkdir("/dev/shm")?;
        p.mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            NOSUID | NODEV | NOEXEC,
            Some("mode=1777,size=65536k"),
            false,
        )?;
        p.mkdir("/dev/mqueue")?;
        // Needs an IPC namespace of the sandbox's own; without one it is left out.
        p.mount(
            "mqueue",
            "/dev/mqueue",
            "mqueue",
            NOSUID | NODEV | NOEXEC,
            None,
            true,
        )?;
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            p.symlink(target, link)?;
        }

        p.mkdir("/sys")?;
        // sysfs needs a network namespace the sandbox owns; without one /sys stays empty.
        p.mount(
            "sysfs",
            "/sys",
            "sysfs",
            libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
            None,
            true,
        )?;
        p.mkdir("/tmp")?;
        p.mount(
            "tmpfs",
            "/tmp",
            "tmpfs",
            NOSUID | NODEV,
            Some("mode=1777"),
            false,
        )?;

        for (i, v) in self.volumes.iter().enumerate() {
            let meta = std::fs::metadata(&v.host).map_err(|source| Error::Io {
                op: "find volume",
                path: v.host.clone(),
                source,
            })?;
            let guest = guest_path("volume", &v.guest)?;
            if meta.is_dir() {
                p.mkdir_all(&guest)?;
            } else {
                if let Some(parent) = Path::new(&guest).parent() {
                    p.mkdir_all(&parent.to_string_lossy())?;
                }
                p.push(Op::CreateFile { path: c(&guest)? });
            }
            let tree = p.tree(Tree::Volume(i));
            p.push(Op::Attach {
                tree,
                target: c(&guest)?,
            });
        }
        for t in &self.tmpfs {
            let guest = guest_path("tmpfs", t)?;
            p.mkdir_all(&guest)?;
            p.mount(
                "tmpfs",
                &guest,
                "tmpfs",
                NOSUID | NODEV,
                Some("mode=1777"),
                false,
            )?;
        }

        if self.mask {
            for path in MASKED_PATHS {
                p.push(Op::Mask { path: c(path)? });
            }
            for path in READ_ONLY_PATHS {
                p.push(Op::ReadOnly {
                    path: c(path)?,
                    bind: true,
                });
            }
        }
        if self.read_only {
            p.push(Op::ReadOnly {
                path: c("/")?,
                bind: false,
            });
        }
        Ok(RootfsPlan {
            rootfs: self.clone(),
            ops: p.ops,
            trees: p.trees,
        })
    }
}

/// Where the child stages its root before `pivot_root(2)`, covering the host's `/proc` in its
/// own mount namespace only: no layer, volume or root directory can live on procfs, so covering
/// it hides nothing the staging needs (a tmpfs over `/tmp` would hide layers kept there).
const STAGING: &str = "/proc";

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

fn c(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidValue {
        what: "path",
        value: s.to_owned(),
        reason: "contains a NUL byte",
    })
}

fn check_dir(what: &'static str, dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::Io {
            op: "use as a directory",
            path: dir.to_owned(),
            source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        }),
        Err(source) => Err(Error::Io {
            op: what_op(what),
            path: dir.to_owned(),
            source,
        }),
    }
}

fn what_op(what: &'static str) -> &'static str {
    match what {
        "root directory" => "find root directory",
        "lower layer" => "find lower layer",
        "upper layer" => "find upper layer",
        _ => "find",
    }
}

/// An absolute path without `..`, `.` or repeated separators, as a string.
fn guest_path(what: &'static str, p: &Path) -> Result<String> {
    let bad = |reason| Error::InvalidValue {
        what,
        value: p.display().to_string(),
        reason,
    };
    if !p.is_absolute() {
        return Err(bad("the path in the sandbox must be absolute"));
    }
    let mut out = String::new();
    for comp in p.components() {
        match comp {
            Component::RootDir => {}
            Component::Normal(n) => {
                let n = n.to_str().ok_or_else(|| bad("is not UTF-8"))?;
                out.push('/');
                out.push_str(n);
            }
            _ => return Err(bad("must not contain `.` or `..`")),
        }
    }
    if out.is_empty() {
        return Err(bad("must not be `/`"));
    }
    Ok(out)
}

#[derive(Default)]
struct Planner {
    ops: Vec<Op>,
    trees: Vec<Tree>,
}

impl Planner {
    fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    fn tree(&mut self, t: Tree) -> usize {
        self.trees.push(t);
        self.trees.len() - 1
    }

    /// The root as an overlay of `lower` under a writable layer on a tmpfs, all made by the
    /// child in its own mount namespace: a tmpfs over the staging directory holds the upper and
    /// work directories and the overlay's mount point, into which the child pivots. The tmpfs
    /// lives as long as the overlay, and only the sandbox ever sees it. (A tmpfs made in the
    /// parent as a detached mount cannot be an upper layer before Linux 6.15 or so: overlayfs
    /// refuses to clone a path outside the caller's mount namespace.)
    fn throwaway_overlay(&mut self, lower: &[PathBuf]) -> Result<()> {
        self.mount(
            "tmpfs",
            STAGING,
            "tmpfs",
            NOSUID | NODEV,
            Some("mode=0755"),
            false,
        )?;
        for dir in ["upper", "work", "root"] {
            self.mkdir(&format!("{STAGING}/{dir}"))?;
        }
        let upper = format!("{STAGING}/upper");
        let work = format!("{STAGING}/work");
        let target = format!("{STAGING}/root");
        // For kernels without `lowerdir+` (before 6.8): one option string, if it fits a page.
        let legacy = mount::Overlay::new()
            .lowers(lower.iter().cloned())
            .upper(&upper, &work)
            .legacy_options()
            .ok();
        let lowers = lower
            .iter()
            .map(|l| {
                CString::new(l.as_os_str().as_encoded_bytes()).map_err(|_| Error::InvalidValue {
                    what: "lower layer",
                    value: l.display().to_string(),
                    reason: "contains a NUL byte",
                })
            })
            .collect::<Result<_>>()?;
        self.push(Op::Overlay {
            lowers,
            upper: c(&upper)?,
            work: c(&work)?,
            target: c(&target)?,
            legacy,
        });
        self.push(Op::PivotRoot {
            new_root: c(&target)?,
        });
        Ok(())
    }

    fn mkdir(&mut self, path: &str) -> Result<()> {
        self.push(Op::Mkdir { path: c(path)? });
        Ok(())
    }

    fn mkdir_all(&mut self, path: &str) -> Result<()> {
        let mut prefix = String::new();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            self.mkdir(&prefix)?;
        }
        Ok(())
    }

    fn symlink(&mut self, target: &str, link: &str) -> Result<()> {
        self.push(Op::Symlink {
            target: c(target)?,
            link: c(link)?,
        });
        Ok(())
    }

    fn mount(
        &mut self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
        optional: bool,
    ) -> Result<()> {
        self.push(Op::Mount {
            source: c(source)?,
            target: c(target)?,
            fstype: c(fstype)?,
            flags,
            data: data.map(c).transpose()?,
            optional,
        });
        Ok(())
    }
}

/// A mount tree [`RootfsPlan::prepare`] makes in the parent, detached, for an [`Op::Attach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// The root.
    Root,
    /// [`DEVICES`]`[i]`, bound from the host's `/dev`.
    Device(usize),
    /// The `i`-th volume.
    Volume(usize),
}

/// One step of the child's mount work. Paths after [`Op::PivotRoot`] are inside the new root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`.
    MakePrivate,
    /// `move_mount(2)` of the prepared tree number `tree` (an index into
    /// [`RootfsPlan::trees`] and [`Prepared::fds`]) onto `target`.
    Attach {
        /// The tree.
        tree: usize,
        /// Where.
        target: CString,
    },
    /// An overlay mounted by the child: `fsopen(2)` of `overlay`, one `fsconfig(2)`
    /// `lowerdir+` per layer (Linux 6.8), `upperdir`, `workdir`, create, `fsmount(2)` and
    /// `move_mount(2)` onto `target`; where `lowerdir+` is refused, `mount(2)` with `legacy`,
    /// the same as one option string (absent when it would not fit a page).
    Overlay {
        /// The read-only layers, top-most first.
        lowers: Vec<CString>,
        /// The writable layer.
        upper: CString,
        /// Its work directory.
        work: CString,
        /// The mount point.
        target: CString,
        /// The `mount(2)` data for kernels without `lowerdir+`.
        legacy: Option<CString>,
    },
    /// `chdir(new_root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`: the
    /// old root is stacked under the new one and detached (`pivot_root(2)`).
    PivotRoot {
        /// The new root's mount point.
        new_root: CString,
    },
    /// `mkdir(path, 0755)`; an existing directory is fine.
    Mkdir {
        /// The directory.
        path: CString,
    },
    /// Creates an empty file to bind a file over; an existing one is fine.
    CreateFile {
        /// The file.
        path: CString,
    },
    /// `symlink(target, link)`; an existing link is fine.
    Symlink {
        /// What the link points to.
        target: CString,
        /// The link.
        link: CString,
    },
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        /// The source (a device or a name).
        source: CString,
        /// The mount point.
        target: CString,
        /// The file-system type.
        fstype: CString,
        /// `MS_*` flags.
        flags: libc::c_ulong,
        /// File-system options.
        data: Option<CString>,
        /// Whether `EPERM`/`EACCES` (not allowed in this sandbox's namespaces) skips the mount
        /// instead of failing the spawn.
        optional: bool,
    },
    /// Hides `path`: a file is covered with `/dev/null`, a directory with an empty read-only
    /// tmpfs; a missing path is skipped.
    Mask {
        /// The path.
        path: CString,
    },
    /// Makes `path` read-only with `mount_setattr(2)` (`MOUNT_ATTR_RDONLY`), after binding it
    /// onto itself if `bind` (so that it becomes a mount of its own); a missing path is skipped.
    ReadOnly {
        /// The path.
        path: CString,
        /// Whether to bind it onto itself first.
        bind: bool,
    },
}

impl Op {
    /// A short description for error messages: what the op acted on.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::MakePrivate => "make mounts private".into(),
            Op::Attach { target, .. } => format!("attach a mount at {}", s(target)),
            Op::PivotRoot { new_root } => format!("pivot_root into {}", s(new_root)),
            Op::Overlay { target, lowers, .. } => {
                format!(
                    "mount an overlay of {} layers on {}",
                    lowers.len(),
                    s(target)
                )
            }
            Op::Mkdir { path } => format!("create directory {}", s(path)),
            Op::CreateFile { path } => format!("create file {}", s(path)),
            Op::Symlink { link, .. } => format!("create symlink {}", s(link)),
            Op::Mount { fstype, target, .. } => format!("mount {} on {}", s(fstype), s(target)),
            Op::Mask { path } => format!("mask {}", s(path)),
            Op::ReadOnly { path, .. } => format!("make {} read-only", s(path)),
        }
    }
}

/// A [`Rootfs`] turned into ops, ready to be [prepared](Self::prepare) for each spawn.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    rootfs: Rootfs,
    /// The ops, in order.
    pub ops: Vec<Op>,
    /// The trees [`Op::Attach`] refers to, by index.
    pub trees: Vec<Tree>,
}

impl RootfsPlan {
    /// The description the plan was made from.
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }

    /// Makes this spawn's detached mount trees, in [`trees`](Self::trees) order: the root (an
    /// overlay from `fsmount(2)`, or a recursive `open_tree(2)` clone of a directory), the
    /// device nodes, and the volumes (read-only ones with `mount_setattr(2)`). Needs
    /// `CAP_SYS_ADMIN` in the caller's mount namespace. Nothing is attached anywhere yet: if the
    /// spawn fails, dropping the result unmounts everything.
    pub fn prepare(&self) -> Result<Prepared> {
        let mut fds = Vec::with_capacity(self.trees.len());
        for tree in &self.trees {
            fds.push(match *tree {
                Tree::Root => self.root_tree()?,
                Tree::Device(i) => {
                    let name = DEVICES.get(i).copied().unwrap_or("null");
                    mount::bind_tree(Path::new("/dev").join(name), false)?
                }
                Tree::Volume(i) => {
                    let Some(v) = self.rootfs.volumes.get(i) else {
                        return Err(Error::InvalidValue {
                            what: "volume",
                            value: i.to_string(),
                            reason: "is not in the plan",
                        });
                    };
                    let fd = mount::bind_tree(&v.host, true)?;
                    if v.read_only {
                        mount::set_read_only(&fd, true)?;
                    }
                    fd
                }
            });
        }
        Ok(Prepared { fds })
    }

    fn root_tree(&self) -> Result<std::os::fd::OwnedFd> {
        match &self.rootfs.source {
            RootSource::Layers {
                lower,
                upper: Some((upper, work)),
            } => mount::Overlay::new()
                .lowers(lower.iter().cloned())
                .upper(upper, work)
                .fsmount(),
            RootSource::Dir(dir) => mount::bind_tree(dir, true),
            // Made by the child (see `Planner::throwaway_overlay`), never a prepared tree.
            RootSource::HostOverlay | RootSource::Layers { upper: None, .. } => {
                Err(Error::InvalidValue {
                    what: "root",
                    value: format!("{:?}", self.rootfs.source),
                    reason: "is made by the sandbox child, not prepared",
                })
            }
        }
    }
}

/// The detached mount trees of one spawn, in [`RootfsPlan::trees`] order. Dropping it closes
/// them; a tree not attached by then is unmounted by the kernel.
#[derive(Debug)]
pub struct Prepared {
    /// One descriptor per tree.
    pub fds: Vec<std::os::fd::OwnedFd>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_are_absolute_and_clean() {
        assert_eq!(guest_path("v", Path::new("/a//b/")).unwrap(), "/a/b");
        for bad in ["a/b", "/a/../b", "/"] {
            assert!(guest_path("v", Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_plan_pivots_before_mounting_inside() {
        let plan = Rootfs::host().read_only(true).plan().unwrap();
        let pos = |f: &dyn Fn(&Op) -> bool| plan.ops.iter().position(f).unwrap();
        let pivot = pos(&|o| matches!(o, Op::PivotRoot { .. }));
        let proc = pos(&|o| matches!(o, Op::Mount { fstype, .. } if fstype.as_bytes() == b"proc"));
        let ro_root = pos(&|o| matches!(o, Op::ReadOnly { bind: false, .. }));
        assert_eq!(plan.ops[0], Op::MakePrivate);
        assert!(pivot < proc && proc < ro_root);
        assert_eq!(ro_root, plan.ops.len() - 1);
        // The throwaway overlay is the child's work: only the device nodes are trees.
        assert!(plan.ops.iter().any(|o| matches!(o, Op::Overlay { .. })));
        assert_eq!(plan.trees.len(), DEVICES.len());
        let dir = Rootfs::dir(std::env::temp_dir()).plan().unwrap();
        assert_eq!(dir.trees[0], Tree::Root);
    }

    #[test]
    fn volumes_get_their_mount_points() {
        let dir = std::env::temp_dir();
        let plan = Rootfs::host()
            .volume(&dir, "/data/in", Access::ReadOnly)
            .tmpfs("/scratch")
            .plan()
            .unwrap();
        let mkdirs: Vec<_> = plan
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Mkdir { path } => Some(path.to_str().unwrap().to_owned()),
                _ => None,
            })
            .collect();
        assert!(mkdirs.contains(&"/data".to_owned()) && mkdirs.contains(&"/data/in".to_owned()));
        assert!(mkdirs.contains(&"/scratch".to_owned()));
        assert_eq!(*plan.trees.last().unwrap(), Tree::Volume(0));
        let err = Rootfs::host()
            .volume("/no/such/palisade", "/x", Access::ReadWrite)
            .plan();
        assert!(matches!(err, Err(Error::Io { .. })));
        let err = Rootfs::host()
            .volume(&dir, "relative", Access::ReadWrite)
            .plan();
        assert!(matches!(err, Err(Error::InvalidValue { .. })));
        assert!(Rootfs::layers(Vec::<PathBuf>::new()).plan().is_err());
    }
}
