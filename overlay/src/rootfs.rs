//! The sandbox's root file system and mount table, as a plan computed before the clone.
//!
//! A [`Rootfs`] says what the sandbox's `/` is (the host's `/` under a throwaway writable layer,
//! a directory, or an overlay of layers) and what is mounted in it (volumes, tmpfs). Its
//! [`plan`](Rootfs::plan) turns that into a list of [`Op`]s with every path already a C string,
//! which the sandbox child carries out with raw system calls, in order, in its own mount
//! namespace. The child does all the mounting, so the same plan works for a privileged caller
//! and, with [`Rootfs::plan_rootless`], inside a user namespace the caller created without
//! privilege.
//!
//! The order follows `mount_namespaces(7)` and `pivot_root(2)`:
//!
//! 1. make every mount private, so nothing propagates back to the host;
//! 2. mount a tmpfs over a staging directory (one that holds no layer, volume or root directory,
//!    and is covered only in the sandbox's namespace), and the root on a directory in it: an
//!    overlay with its writable layer on that tmpfs, or a bind of a directory;
//! 3. mount `/proc`, a minimal `/dev` (device nodes bound from the host's, which also works in a
//!    user namespace, `devpts`, `shm`, `mqueue`), `/sys` read-only and a tmpfs `/tmp` in the new
//!    root, bind the volumes and mount the extra tmpfs — while the host's paths can still be
//!    reached, and the host's `/proc` is still visible (a user namespace may mount `proc` only
//!    then, `mount_namespaces(7)`);
//! 4. `pivot_root` into the new root and detach the old one — from then on every path, symbolic
//!    links included, resolves inside the new root;
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

    /// Validates the description and computes the ops, for a sandbox without a user namespace.
    /// Host paths are checked to exist; guest paths must be absolute, without `..`.
    pub fn plan(&self) -> Result<RootfsPlan> {
        self.plan_with(false)
    }

    /// As [`plan`](Self::plan), for a sandbox in a user namespace of its own (rootless): the
    /// overlay is mounted with `userxattr`, so image layers must mark opaque directories with
    /// `user.overlay.opaque` ([`OpaqueXattr::User`](crate::image::OpaqueXattr::User)). The host
    /// root ([`Rootfs::host`]) is then a read-only bind of `/` rather than an overlay: in a user
    /// namespace the host's submounts are locked, and overlayfs refuses such a tree as a layer.
    pub fn plan_rootless(&self) -> Result<RootfsPlan> {
        self.plan_with(true)
    }

    fn plan_with(&self, userxattr: bool) -> Result<RootfsPlan> {
        let mut used: Vec<PathBuf> = Vec::new();
        match &self.source {
            RootSource::HostOverlay => {}
            RootSource::Dir(dir) => {
                check_dir("root directory", dir)?;
                used.push(dir.clone());
            }
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
                    used.push(l.clone());
                }
                if let Some((u, w)) = upper {
                    check_dir("upper layer", u)?;
                    check_dir("work directory", w)?;
                    used.extend([u.clone(), w.clone()]);
                }
            }
        }
        let mut volumes = Vec::new();
        for v in &self.volumes {
            let meta = std::fs::metadata(&v.host).map_err(|source| Error::Io {
                op: "find volume",
                path: v.host.clone(),
                source,
            })?;
            if v.host.to_str().is_none() {
                return Err(Error::InvalidValue {
                    what: "volume",
                    value: v.host.display().to_string(),
                    reason: "must be valid UTF-8",
                });
            }
            used.push(v.host.clone());
            volumes.push((v, meta.is_dir(), guest_path("volume", &v.guest)?));
        }
        let tmpfs = self
            .tmpfs
            .iter()
            .map(|t| guest_path("tmpfs", t))
            .collect::<Result<Vec<_>>>()?;
        let staging = staging_dir(&used)?;
        let root = format!("{staging}/root");
        let mut p = Planner {
            ops: Vec::new(),
            root: root.clone(),
        };

        p.push(Op::MakePrivate);
        p.mount_at(
            "tmpfs",
            &staging,
            "tmpfs",
            NOSUID | NODEV,
            Some("mode=0755"),
            false,
        )?;
        p.mkdir_at(&root)?;
        match &self.source {
            // In a user namespace the host's `/` carries locked submounts, which overlayfs
            // refuses as a layer ("failed to clone lowerpath"): the root is then a read-only
            // recursive bind of it instead, without a writable layer.
            RootSource::HostOverlay if userxattr => {
                p.mount_at("/", &root, "", libc::MS_BIND | libc::MS_REC, None, false)?;
                p.push(Op::ReadOnly {
                    path: c(&root)?,
                    bind: false,
                    recursive: true,
                });
            }
            RootSource::HostOverlay => {
                p.overlay(&[PathBuf::from("/")], None, &staging, userxattr)?
            }
            RootSource::Layers { lower, upper } => {
                p.overlay(lower, upper.as_ref(), &staging, userxattr)?
            }
            RootSource::Dir(dir) => p.mount_at(
                &dir.to_string_lossy(),
                &root,
                "",
                libc::MS_BIND | libc::MS_REC,
                None,
                false,
            )?,
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
        for name in DEVICES {
            let path = format!("/dev/{name}");
            p.push(Op::CreateFile {
                path: p.inside(&path)?,
            });
            let host = format!("/dev/{name}");
            p.mount_from_host(&host, &path, libc::MS_BIND)?;
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

        for (v, is_dir, guest) in &volumes {
            if *is_dir {
                p.mkdir_all(guest)?;
            } else {
                if let Some(parent) = Path::new(guest).parent() {
                    p.mkdir_all(&parent.to_string_lossy())?;
                }
                p.push(Op::CreateFile {
                    path: p.inside(guest)?,
                });
            }
            p.mount_from_host(
                &v.host.to_string_lossy(),
                guest,
                libc::MS_BIND | libc::MS_REC,
            )?;
            if v.read_only {
                p.push(Op::ReadOnly {
                    path: p.inside(guest)?,
                    bind: false,
                    recursive: true,
                });
            }
        }
        for guest in &tmpfs {
            p.mkdir_all(guest)?;
            p.mount(
                "tmpfs",
                guest,
                "tmpfs",
                NOSUID | NODEV,
                Some("mode=1777"),
                false,
            )?;
        }

        p.push(Op::PivotRoot {
            new_root: c(&root)?,
        });
        for (target, link) in [
            ("pts/ptmx", "/dev/ptmx"),
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
        ] {
            p.push(Op::Symlink {
                target: c(target)?,
                link: c(link)?,
            });
        }
        if self.mask {
            for path in MASKED_PATHS {
                p.push(Op::Mask { path: c(path)? });
            }
            for path in READ_ONLY_PATHS {
                p.push(Op::ReadOnly {
                    path: c(path)?,
                    bind: true,
                    recursive: true,
                });
            }
        }
        if self.read_only {
            p.push(Op::ReadOnly {
                path: c("/")?,
                bind: false,
                recursive: false,
            });
        }
        Ok(RootfsPlan {
            rootfs: self.clone(),
            ops: p.ops,
        })
    }
}

/// Candidate staging directories, covered with a tmpfs in the sandbox's mount namespace only.
const STAGING: &[&str] = &[
    "/mnt", "/media", "/srv", "/opt", "/run", "/tmp", "/var", "/home",
];

/// The first existing candidate that holds none of `used` (a layer, root or volume the child
/// must still reach after covering it).
fn staging_dir(used: &[PathBuf]) -> Result<String> {
    STAGING
        .iter()
        .find(|cand| Path::new(cand).is_dir() && !used.iter().any(|u| u.starts_with(cand)))
        .map(|s| (*s).to_owned())
        .ok_or(Error::InvalidValue {
            what: "root file system",
            value: String::new(),
            reason:
                "no directory to stage the root in: /mnt, /media, /srv, /opt, /run, /tmp, /var \
                     and /home are all missing or hold a layer, root or volume",
        })
}

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
    if dir.to_str().is_none() {
        return Err(Error::InvalidValue {
            what,
            value: dir.display().to_string(),
            reason: "must be valid UTF-8",
        });
    }
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

struct Planner {
    ops: Vec<Op>,
    /// Where the new root is mounted until the pivot: guest paths are made under it.
    root: String,
}

impl Planner {
    fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// A guest path as seen before the pivot.
    fn inside(&self, guest: &str) -> Result<CString> {
        c(&format!("{}{guest}", self.root))
    }

    fn mkdir_at(&mut self, path: &str) -> Result<()> {
        self.push(Op::Mkdir { path: c(path)? });
        Ok(())
    }

    fn mkdir(&mut self, guest: &str) -> Result<()> {
        let path = self.inside(guest)?;
        self.push(Op::Mkdir { path });
        Ok(())
    }

    fn mkdir_all(&mut self, guest: &str) -> Result<()> {
        let mut prefix = String::new();
        for part in guest.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(part);
            self.mkdir(&prefix)?;
        }
        Ok(())
    }

    /// A mount on a guest path.
    fn mount(
        &mut self,
        source: &str,
        guest: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
        optional: bool,
    ) -> Result<()> {
        let target = format!("{}{guest}", self.root);
        self.mount_at(source, &target, fstype, flags, data, optional)
    }

    /// A bind of a host path onto a guest path.
    fn mount_from_host(&mut self, host: &str, guest: &str, flags: libc::c_ulong) -> Result<()> {
        let target = format!("{}{guest}", self.root);
        self.mount_at(host, &target, "", flags, None, false)
    }

    /// A mount on a path as seen before the pivot.
    fn mount_at(
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

    /// The root overlay on `{staging}/root`: `lower` under `upper`, or under a writable layer
    /// on the staging tmpfs.
    fn overlay(
        &mut self,
        lower: &[PathBuf],
        upper: Option<&(PathBuf, PathBuf)>,
        staging: &str,
        userxattr: bool,
    ) -> Result<()> {
        let (upper, work) = match upper {
            Some((u, w)) => (
                u.to_string_lossy().into_owned(),
                w.to_string_lossy().into_owned(),
            ),
            None => {
                let (u, w) = (format!("{staging}/upper"), format!("{staging}/work"));
                self.mkdir_at(&u)?;
                self.mkdir_at(&w)?;
                (u, w)
            }
        };
        // For kernels without `lowerdir+` (before 6.8): one option string, if it fits a page.
        let legacy = mount::Overlay::new()
            .lowers(lower.iter().cloned())
            .upper(&upper, &work)
            .userxattr(userxattr)
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
        let target = c(&self.root)?;
        self.push(Op::Overlay {
            lowers,
            upper: c(&upper)?,
            work: c(&work)?,
            target,
            userxattr,
            legacy,
        });
        Ok(())
    }
}

/// One step of the child's mount work. Paths after [`Op::PivotRoot`] are inside the new root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`.
    MakePrivate,
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
        /// Whether to mount with `userxattr` (in a user namespace).
        userxattr: bool,
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
        /// Whether the mounts below it become read-only too (`AT_RECURSIVE`).
        recursive: bool,
    },
}

impl Op {
    /// A short description for error messages: what the op acted on.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::MakePrivate => "make mounts private".into(),
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

/// A [`Rootfs`] turned into ops, for the sandbox child to carry out.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    rootfs: Rootfs,
    /// The ops, in order.
    pub ops: Vec<Op>,
}

impl RootfsPlan {
    /// The description the plan was made from.
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }
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
    fn host_plan_mounts_inside_then_pivots_then_masks() {
        let plan = Rootfs::host().read_only(true).plan().unwrap();
        let pos = |f: &dyn Fn(&Op) -> bool| plan.ops.iter().position(f).unwrap();
        let overlay = pos(&|o| {
            matches!(
                o,
                Op::Overlay {
                    userxattr: false,
                    ..
                }
            )
        });
        let proc = pos(&|o| matches!(o, Op::Mount { fstype, .. } if fstype.as_bytes() == b"proc"));
        let pivot = pos(&|o| matches!(o, Op::PivotRoot { .. }));
        let mask = pos(&|o| matches!(o, Op::Mask { .. }));
        let ro_root = pos(&|o| {
            matches!(
                o,
                Op::ReadOnly {
                    bind: false,
                    recursive: false,
                    ..
                }
            )
        });
        assert_eq!(plan.ops[0], Op::MakePrivate);
        assert!(overlay < proc && proc < pivot && pivot < mask && mask < ro_root);
        assert_eq!(ro_root, plan.ops.len() - 1);
        // Before the pivot, guest paths are under the staging root.
        let Op::Mount { target, .. } = &plan.ops[proc] else {
            unreachable!()
        };
        assert_eq!(target.to_str().unwrap(), "/mnt/root/proc");
        let rootless = Rootfs::layers([std::env::temp_dir()])
            .plan_rootless()
            .unwrap();
        assert!(rootless.ops.iter().any(
            |o| matches!(o, Op::Overlay { userxattr: true, legacy: Some(l), .. }
                if l.to_str().unwrap().contains("userxattr"))
        ));
        let host = Rootfs::host().plan_rootless().unwrap();
        assert!(!host.ops.iter().any(|o| matches!(o, Op::Overlay { .. })));
    }

    #[test]
    fn staging_avoids_used_paths() {
        assert_eq!(staging_dir(&[]).unwrap(), "/mnt");
        assert_eq!(
            staging_dir(&[PathBuf::from("/mnt/layers/x")]).unwrap(),
            "/media"
        );
        assert_eq!(
            staging_dir(&[PathBuf::from("/mnt/a"), PathBuf::from("/media/b")]).unwrap(),
            "/srv"
        );
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
        assert!(mkdirs.contains(&"/mnt/root/data".to_owned()));
        assert!(mkdirs.contains(&"/mnt/root/data/in".to_owned()));
        assert!(mkdirs.contains(&"/mnt/root/scratch".to_owned()));
        assert!(plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::ReadOnly { path, recursive: true, .. }
            if path.to_str().unwrap() == "/mnt/root/data/in")));
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
