//! The sandbox's root file system and mount table, as a plan computed before the clone.
//!
//! A [`Rootfs`] says what the sandbox's `/` is (the host's `/` under a throwaway writable layer,
//! a directory, or an overlay of layers) and what is mounted in it ([`Volume`]s, [`Tmpfs`]
//! mounts, [`Device`] nodes). Its [`plan`](Rootfs::plan) turns that into a list of [`Op`]s with
//! every path already a C string, which the sandbox child carries out with
//! [`RootfsPlan::apply`], in order, in its own mount namespace. The child does all the mounting,
//! so the same plan works for a privileged caller and, with [`Rootfs::plan_rootless`], inside a
//! user namespace the caller created without privilege. The one exception is an id-mapped
//! volume ([`MountIdMap`]): the kernel maps only a mount not yet attached, so the caller makes a
//! detached, id-mapped copy for each spawn before the clone ([`RootfsPlan::prepare`]) and the
//! child attaches it.
//!
//! The order follows `mount_namespaces(7)` and `pivot_root(2)`:
//!
//! 1. make every mount private, so nothing propagates back to the host;
//! 2. mount a tmpfs over a staging directory (one that holds no layer, volume or root directory,
//!    and is covered only in the sandbox's namespace), and the root on a directory in it: an
//!    overlay with its writable layer on that tmpfs, or a bind of a directory;
//! 3. mount `/proc`, a minimal `/dev` (device nodes bound from the host's, which also works in a
//!    user namespace, `devpts`, `shm`, `mqueue`), `/sys` read-only and a tmpfs `/tmp` in the new
//!    root, bind the volumes (each then given its attributes and propagation with
//!    `mount_setattr(2)`, always `nodev`) and mount the extra tmpfs, in the order given (a later
//!    one may go inside an earlier one; one at the place of a later one, or of the sandbox's
//!    own `/tmp`, `/dev/shm`, `/dev/mqueue` or `/dev/pts`, is left out rather than hidden
//!    under it), and bind the extra device nodes — while the host's paths can still be reached, and the host's `/proc` is still
//!    visible (a user namespace may mount `proc` only then, `mount_namespaces(7)`);
//! 4. `pivot_root` into the new root and detach the old one — from then on every path, symbolic
//!    links included, resolves inside the new root;
//! 5. mask the paths runc masks and make the kernel tunables read-only;
//! 6. give the root its propagation type ([`Rootfs::root_propagation`]), and make it read-only,
//!    if asked.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::mount;
pub use crate::mount::sys::{MountAttr, MountAttrChange, Propagation};

mod apply;
mod idmap;

pub use apply::ApplyFailure;
pub use idmap::PreparedMounts;

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
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
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
    /// (`/proc`, `/home` on a partition of its own, …) are not included. In a user namespace,
    /// each top-level directory is a layer of its own instead (see
    /// [`Rootfs::plan_rootless`]), which includes a file system mounted on it.
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

/// A bind mount from the host into the sandbox ([`Rootfs::volume_with`]).
///
/// The bind is a copy of the host's mount (`open_tree(2)` with `OPEN_TREE_CLONE`), so it starts
/// with the host mount's attributes; [`top`](Self::top) then changes those of the bound mount
/// itself and [`tree`](Self::tree) those of every mount of the bound tree (`mount_setattr(2)`,
/// `AT_RECURSIVE`), the tree first. Every mount of it is `nodev` whatever they say: a device
/// node reaches the sandbox only as a [`Device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The host path (a directory or a file).
    pub host: PathBuf,
    /// Where it appears in the sandbox (absolute).
    pub guest: PathBuf,
    /// Whether the sandbox may only read it: `MOUNT_ATTR_RDONLY` on every mount of the tree.
    pub read_only: bool,
    /// Whether the mounts below `host` are bound too (`rbind`, the default) or only the mount
    /// holding `host` (`bind`), which shows the directories the host mounted over.
    pub recursive: bool,
    /// Attributes and propagation of the bound mount itself (see `mount_setattr(2)`; its
    /// `propagation` is made in the sandbox's own mount namespace, see
    /// [`Rootfs::root_propagation`]).
    pub top: MountAttrChange,
    /// Attributes and propagation of every mount of the bound tree.
    pub tree: MountAttrChange,
    /// Maps the ids of the bound mount (an id-mapped mount, `mount_setattr(2)`
    /// `MOUNT_ATTR_IDMAP`), prepared by the caller for each spawn
    /// ([`RootfsPlan::prepare`]).
    pub id_map: Option<MountIdMap>,
}

/// One range of a [`MountIdMap`]: a line of a user namespace's `uid_map` or `gid_map`
/// (`user_namespaces(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdRange {
    /// The first id of the range as the file system stores it.
    pub stored: u32,
    /// The first id of the range as the mount shows it (a kernel id of the caller's user
    /// namespace).
    pub shown: u32,
    /// The number of ids.
    pub count: u32,
}

/// The id maps of an id-mapped volume: a file the file system says `stored + k` owns is shown
/// owned by `shown + k` through the mount, and a file `shown + k` makes through it is stored
/// owned by `stored + k`; ids outside every range show as the overflow id (65534) and cannot
/// make files. These are the maps of the user namespace the mount is mapped through, written as
/// `stored shown count` (`mount_setattr(2)`, "Extensible argument: idmapped mounts").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountIdMap {
    /// The user id ranges (at most 340, as for a user namespace).
    pub uid: Vec<IdRange>,
    /// The group id ranges.
    pub gid: Vec<IdRange>,
    /// Map every mount of the bound tree, not only the bound mount itself.
    pub recursive: bool,
}

impl Volume {
    /// `host` bound recursively at `guest`, read-only with [`Access::ReadOnly`], its other
    /// attributes the host mount's.
    pub fn new(host: impl Into<PathBuf>, guest: impl Into<PathBuf>, access: Access) -> Volume {
        Volume {
            host: host.into(),
            guest: guest.into(),
            read_only: access == Access::ReadOnly,
            recursive: true,
            top: MountAttrChange::default(),
            tree: MountAttrChange::default(),
            id_map: None,
        }
    }
}

/// Options of a [`Tmpfs`] beyond its mode, size and `noexec` ([`Rootfs::tmpfs_with_options`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TmpfsOptions {
    /// The bound on its number of inodes (`nr_inodes=`, `tmpfs(5)`); `None`: the kernel's
    /// default (half the host's pages of memory).
    pub nr_inodes: Option<u64>,
    /// The owner of its root directory (`uid=`), an id of the sandbox's user namespace (the
    /// mount fails with `EINVAL` where it is not mapped).
    pub uid: Option<u32>,
    /// The group of its root directory (`gid=`), likewise.
    pub gid: Option<u32>,
    /// Attributes and propagation of the mount, set once it is mounted (`mount_setattr(2)`):
    /// `MOUNT_ATTR_RDONLY`, the access-time ones, `MOUNT_ATTR_NOSYMFOLLOW`. `nosuid` and
    /// `nodev` stay whatever it says.
    pub attrs: MountAttrChange,
}

/// The kind of a [`Device`] node (`mknod(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A character device (`S_IFCHR`).
    Char,
    /// A block device (`S_IFBLK`).
    Block,
    /// A named pipe (`S_IFIFO`), which has no device number.
    Fifo,
}

/// A device node made in the sandbox ([`Rootfs::device`]), at a path resolved inside its root.
///
/// Without a user namespace the child makes the node with `mknod(2)` on a small tmpfs of its
/// own (mounted without `nodev`, in the staging area the sandbox never sees), with exactly this
/// mode and owner, and binds it onto the path: every other mount of the sandbox being `nodev`,
/// only a node bound in this way opens. In a user namespace, where `mknod(2)` of a device is
/// refused (`user_namespaces(7)`), the host's node at the same path is bound instead (it must
/// exist and have the same kind and numbers; its own mode and owner stay). A FIFO is always
/// made.
///
/// Whether the sandbox may open the device is also up to its device policy (the cgroup's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Where it appears in the sandbox (absolute, without `.` or `..`).
    pub guest: PathBuf,
    /// Its kind.
    pub kind: DeviceKind,
    /// Its major number (0 for a FIFO).
    pub major: u32,
    /// Its minor number (0 for a FIFO).
    pub minor: u32,
    /// Its permission bits (at most `0o777`).
    pub mode: u32,
    /// Its owner.
    pub uid: u32,
    /// Its group.
    pub gid: u32,
}

/// An empty tmpfs mounted in the sandbox ([`Rootfs::tmpfs_with`]): always `nosuid` and `nodev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    /// Where it appears in the sandbox (absolute).
    pub guest: PathBuf,
    /// The mode of its root directory (default `0o1777`, as `/tmp`'s).
    pub mode: u32,
    /// Its size bound in bytes; `None`: the rootfs's scratch bound
    /// ([`Rootfs::scratch_size`]), never the kernel's default of half the host's memory.
    pub size: Option<u64>,
    /// `noexec`: nothing on it can be executed.
    pub noexec: bool,
}

impl Tmpfs {
    /// A tmpfs at `guest`, mode `1777`, bounded by the scratch size, executable.
    pub fn new(guest: impl Into<PathBuf>) -> Tmpfs {
        Tmpfs {
            guest: guest.into(),
            mode: 0o1777,
            size: None,
            noexec: false,
        }
    }
}

/// The sandbox's root file system and the mounts in it. See the [module](self) docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootfs {
    source: RootSource,
    /// The volumes and tmpfs mounts, in the order given: a later one may be mounted inside an
    /// earlier one.
    mounts: Vec<Extra>,
    devices: Vec<Device>,
    /// The propagation type given to the root (and, if recursive, every mount of the
    /// sandbox) once it is built.
    propagation: Option<(Propagation, bool)>,
    read_only: bool,
    mask: bool,
    /// Show the host's data and secrets ([`HOST_DATA_DIRS`], [`HOST_SECRETS`]) in a
    /// [`RootSource::HostOverlay`] root.
    host_data: bool,
    /// Bytes the sandbox may write to its throwaway layer and `/tmp`, together.
    scratch: u64,
    /// Mount the cgroup2 file system at `/sys/fs/cgroup`.
    cgroup2: bool,
}

/// A mount of the sandbox besides Palisade's own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Extra {
    Volume(Volume),
    Tmpfs(Tmpfs, TmpfsOptions),
}

/// An [`Extra`] once checked: a volume with whether its source is a directory, or a tmpfs; each
/// with its path in the root.
enum Checked<'a> {
    Volume(&'a Volume, bool, String),
    Tmpfs(&'a Tmpfs, &'a TmpfsOptions, String),
}

/// The default bound on a sandbox's scratch space (its throwaway writable layer and `/tmp`):
/// 1 GiB. Without one, each tmpfs may take half of the host's memory (`tmpfs(5)`).
pub const DEFAULT_SCRATCH_SIZE: u64 = 1 << 30;

/// The host's directories that a [`Rootfs::host`] root shows empty: where the host keeps its
/// users' and services' data rather than its system.
pub const HOST_DATA_DIRS: &[&str] = &[
    "/root", "/home", "/var", "/srv", "/mnt", "/media", "/run", "/boot", "/tmp",
];

/// The host's secrets that a [`Rootfs::host`] root leaves out, besides the SSH host private
/// keys (`/etc/ssh/ssh_host_*_key`). Directories among them show empty.
pub const HOST_SECRETS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssl/private",
];

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
            mounts: Vec::new(),
            devices: Vec::new(),
            propagation: None,
            read_only: false,
            mask: true,
            host_data: false,
            scratch: DEFAULT_SCRATCH_SIZE,
            cgroup2: false,
        }
    }

    /// The host's system as a read-only layer under a throwaway writable one
    /// ([`RootSource::HostOverlay`]): works on any machine, with no image.
    ///
    /// Only the system: the directories in [`HOST_DATA_DIRS`] (`/root`, `/home`, `/var`, …)
    /// show empty, and the secrets in [`HOST_SECRETS`] and the SSH host private keys are left
    /// out, so that untrusted code sees `/usr`, `/bin`, `/lib*`, `/etc` and `/opt` but not the
    /// host's data. [`show_host_data`](Self::show_host_data) shows everything instead.
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
        self,
        host: impl Into<PathBuf>,
        guest: impl Into<PathBuf>,
        access: Access,
    ) -> Rootfs {
        self.volume_with(Volume::new(host, guest, access))
    }

    /// Binds a host path as `volume` describes it (recursion, attributes, propagation).
    ///
    /// A volume or tmpfs at the same place as a later one is left out of the plan, and one at
    /// the place of the sandbox's own `/tmp`, `/dev/shm`, `/dev/mqueue`, `/dev/pts` or a
    /// device of [`DEVICES`] takes that mount's place: the mount a sandbox sees there is the
    /// last one given, with nothing underneath. The sandbox's own `/proc`, `/dev` and `/sys`
    /// cannot be replaced ([`plan`](Self::plan) refuses it). A missing mount point is
    /// created, resolved inside the root.
    pub fn volume_with(mut self, volume: Volume) -> Rootfs {
        self.mounts.push(Extra::Volume(volume));
        self
    }

    /// The volumes, in the order given, to change before the root is planned (for example the
    /// id maps of id-mapped ones, once the ids they show are known).
    pub fn volumes_mut(&mut self) -> impl Iterator<Item = &mut Volume> {
        self.mounts.iter_mut().filter_map(|m| match m {
            Extra::Volume(v) => Some(v),
            Extra::Tmpfs(..) => None,
        })
    }

    /// Makes a device node in the sandbox (see [`Device`]).
    pub fn device(mut self, device: Device) -> Rootfs {
        self.devices.push(device);
        self
    }

    /// Gives the sandbox's root mount (with `recursive`, every mount of the sandbox) the
    /// propagation type `propagation` once the root is built, after the pivot
    /// (`mount_namespaces(7)`). Every mount was made private first, so a shared mount is
    /// shared only with the copies of it in mount namespaces made from the sandbox's (the
    /// sandbox's own `unshare(2)`, or a nested sandbox): nothing propagates to or from the
    /// host. Default: every mount stays private.
    pub fn root_propagation(mut self, propagation: Propagation, recursive: bool) -> Rootfs {
        self.propagation = Some((propagation, recursive));
        self
    }

    /// Mounts an empty tmpfs at `guest`: mode `1777`, bounded by the scratch size
    /// ([`Rootfs::scratch_size`]).
    pub fn tmpfs(self, guest: impl Into<PathBuf>) -> Rootfs {
        self.tmpfs_with(Tmpfs::new(guest))
    }

    /// Mounts an empty tmpfs as `tmpfs` describes it (its mode, size and `noexec`).
    pub fn tmpfs_with(self, tmpfs: Tmpfs) -> Rootfs {
        self.tmpfs_with_options(tmpfs, TmpfsOptions::default())
    }

    /// Mounts an empty tmpfs as `tmpfs` and `options` describe it (`tmpfs(5)`: `mode=`,
    /// `size=`, `nr_inodes=`, `uid=`, `gid=`), replacing a mount at its place as
    /// [`volume_with`](Self::volume_with) says. [`plan`](Self::plan) refuses a mode above
    /// `07777`, a size or number of inodes of 0, and an id of -1.
    pub fn tmpfs_with_options(mut self, tmpfs: Tmpfs, options: TmpfsOptions) -> Rootfs {
        self.mounts.push(Extra::Tmpfs(tmpfs, options));
        self
    }

    /// Mounts the cgroup2 file system, read-only, at `/sys/fs/cgroup` (default: no), where
    /// programs read their limits (`memory.max`, `cpu.max`, …). Meant for a sandbox in a
    /// cgroup namespace of its own on a pure cgroup v2 host: there the mount shows the
    /// sandbox's own group as its root (`cgroup_namespaces(7)`). Left out, as `/sys` itself
    /// is, where the kernel refuses it.
    pub fn cgroup2(mut self, on: bool) -> Rootfs {
        self.cgroup2 = on;
        self
    }

    /// Makes the root read-only (volumes and tmpfs keep their own modes).
    pub fn read_only(mut self, read_only: bool) -> Rootfs {
        self.read_only = read_only;
        self
    }

    /// Whether a [`Rootfs::host`] root shows the host's data and secrets too (default: no; see
    /// [`HOST_DATA_DIRS`] and [`HOST_SECRETS`]): the whole host view, read-only under the
    /// throwaway layer, as an explicit choice.
    pub fn show_host_data(mut self, show: bool) -> Rootfs {
        self.host_data = show;
        self
    }

    /// Bounds what the sandbox may write to its throwaway layer and `/tmp`, together (default
    /// [`DEFAULT_SCRATCH_SIZE`]): both live on one tmpfs of this size, whose pages are charged
    /// to the memory cgroup of the process that writes them (`tmpfs(5)`), so a sandbox with a
    /// memory limit pays for its scratch space within it. Past the bound, writes fail with
    /// `ENOSPC`.
    pub fn scratch_size(mut self, bytes: u64) -> Rootfs {
        self.scratch = bytes;
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
    /// `user.overlay.opaque` (`palisade_image::OpaqueXattr::User`).
    ///
    /// The host root ([`Rootfs::host`]) gets a throwaway writable layer too, built otherwise: in
    /// a user namespace the mounts below the host's `/` are locked, and overlayfs refuses a
    /// layer with locked mounts below it (`clone_private_mount()`), so `/` itself cannot be
    /// the lower layer. The root is a directory of the scratch space instead, and each of the
    /// host's top-level directories (`/usr`, `/etc`, `/opt`, …) an overlay of its own in it,
    /// with its own writable layer on the scratch space; a directory with mounts below it is
    /// bound read-only with them, a top-level link copied, a top-level file bound read-only.
    /// The sandbox may then create anything at the top level and in the host's top-level
    /// directories, and mount points anywhere (their parents are made in the writable layer
    /// beforehand). Files and directories deeper down that belong to ids its user namespace
    /// does not map (the host's root, for a caller mapped to root) show as owned by the
    /// overflow id (65534, `user_namespaces(7)`) and stay read-only: overlayfs copies up no
    /// file whose owner has no id in the mounter's namespace.
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
        if self.scratch < MIN_SCRATCH_SIZE {
            return Err(Error::InvalidValue {
                what: "scratch size",
                value: self.scratch.to_string(),
                reason: "must be at least 1 MiB",
            });
        }
        let devices = self
            .devices
            .iter()
            .map(|d| Ok((d, check_device(d, userxattr)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut mounts = Vec::new();
        for m in &self.mounts {
            mounts.push(match m {
                Extra::Volume(v) => {
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
                    check_change("volume", &v.guest, &v.top)?;
                    check_change("volume", &v.guest, &v.tree)?;
                    used.push(v.host.clone());
                    Checked::Volume(v, meta.is_dir(), guest_path("volume", &v.guest)?)
                }
                Extra::Tmpfs(t, o) => {
                    if o.uid == Some(u32::MAX) || o.gid == Some(u32::MAX) {
                        return Err(Error::InvalidValue {
                            what: "tmpfs",
                            value: format!("{} uid {:?} gid {:?}", t.guest.display(), o.uid, o.gid),
                            reason: "-1 is no user or group id",
                        });
                    }
                    if t.mode > 0o7777 || t.size == Some(0) || o.nr_inodes == Some(0) {
                        return Err(Error::InvalidValue {
                            what: "tmpfs",
                            value: format!(
                                "{} mode {:o} size {:?}",
                                t.guest.display(),
                                t.mode,
                                t.size
                            ),
                            reason: "a mode is at most 07777, a size and a number of inodes \
                                     more than 0",
                        });
                    }
                    check_change("tmpfs", &t.guest, &o.attrs)?;
                    Checked::Tmpfs(t, o, guest_path("tmpfs", &t.guest)?)
                }
            });
        }
        // A mount at the place of a later one would only lie hidden under it: the later one
        // replaces it, Palisade's own (`/tmp`, `/dev/shm`, …) included.
        let targets: Vec<&str> = mounts
            .iter()
            .map(|m| match m {
                Checked::Volume(.., g) | Checked::Tmpfs(.., g) => g.as_str(),
            })
            .collect();
        if let Some(t) = targets.iter().find(|t| OWN_FILE_SYSTEMS.contains(t)) {
            return Err(Error::InvalidValue {
                what: "mount target",
                value: (*t).to_owned(),
                reason: "the sandbox's own /proc, /dev and /sys cannot be replaced; mount \
                         inside them instead",
            });
        }
        let covered = |path: &str| targets.contains(&path);
        let replaced: Vec<bool> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| targets.get(i + 1..).is_some_and(|later| later.contains(t)))
            .collect();
        let staging = staging_dir(&used)?;
        let root = format!("{staging}/root");
        let mut p = Planner {
            ops: Vec::new(),
            userns: userxattr,
            bound: Vec::new(),
        };

        p.push(Op::MakePrivate);
        // The scratch space: the throwaway layer and /tmp share this one bounded tmpfs.
        let scratch = format!("mode=0755,size={}", self.scratch);
        p.mount(
            "tmpfs",
            At::Host(c(&staging)?),
            "tmpfs",
            NOSUID | NODEV,
            Some(&scratch),
            false,
        )?;
        p.mkdir_at(&root, 0o755)?;
        p.mkdir_at(&format!("{staging}/tmp"), 0o1777)?;
        let hide = matches!(self.source, RootSource::HostOverlay) && !self.host_data;
        match &self.source {
            // In a user namespace the host's `/` carries locked submounts (`/proc`, `/sys`,
            // `/dev`, …), and overlayfs refuses a layer with locked mounts below it ("failed to
            // clone lowerpath", `clone_private_mount()`). Each of the host's top-level
            // directories is then an overlay of its own on a directory of the scratch space,
            // which is the root.
            RootSource::HostOverlay if userxattr => {
                p.host_layers(&staging, &root, hide, &targets)?;
            }
            RootSource::HostOverlay => {
                let upper = format!("{staging}/upper");
                p.mkdir_at(&upper, 0o755)?;
                if hide {
                    p.hide_in_upper(&upper)?;
                }
                p.overlay(&[PathBuf::from("/")], None, &staging, userxattr)?;
                p.push(Op::OpenRoot { path: c(&root)? });
            }
            RootSource::Layers { lower, upper } => {
                if upper.is_none() {
                    p.mkdir_at(&format!("{staging}/upper"), 0o755)?;
                }
                p.overlay(lower, upper.as_ref(), &staging, userxattr)?;
                p.push(Op::OpenRoot { path: c(&root)? });
            }
            RootSource::Dir(dir) => {
                p.mount(
                    &dir.to_string_lossy(),
                    At::Host(c(&root)?),
                    "",
                    BIND | REC,
                    None,
                    false,
                )?;
                p.push(Op::OpenRoot { path: c(&root)? });
                p.set_attr(At::Root(c(".")?), NODEV_ATTR, true);
            }
        }

        // From here on, every target is resolved inside the new root (`At::Root`). The kernel's
        // file systems go on their own directories only: an image whose /proc, /sys or /dev is
        // a symbolic link (which could point anywhere, the host included) is refused.
        p.mkdir("proc")?;
        p.mount(
            "proc",
            p.strict("proc")?,
            "proc",
            NOSUID | NODEV | NOEXEC,
            None,
            false,
        )?;
        p.mkdir("dev")?;
        // nodev: only the device nodes bound below can be opened; noexec: nothing there is a
        // program (podman's default).
        p.mount(
            "tmpfs",
            p.strict("dev")?,
            "tmpfs",
            NOSUID | NODEV | NOEXEC | libc::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
            false,
        )?;
        for name in DEVICES {
            if covered(&format!("/dev/{name}")) {
                continue;
            }
            let path = format!("dev/{name}");
            p.push(Op::CreateFile {
                at: p.strict(&path)?,
            });
            p.mount(
                &format!("/dev/{name}"),
                p.strict(&path)?,
                "",
                BIND,
                None,
                false,
            )?;
        }
        p.mkdir("dev/pts")?;
        p.mount_unless(
            covered("/dev/pts"),
            "devpts",
            p.strict("dev/pts")?,
            "devpts",
            NOSUID | NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
            false,
        )?;
        p.mkdir("dev/shm")?;
        p.mount_unless(
            covered("/dev/shm"),
            "shm",
            p.strict("dev/shm")?,
            "tmpfs",
            NOSUID | NODEV | NOEXEC,
            Some("mode=1777,size=65536k"),
            false,
        )?;
        p.mkdir("dev/mqueue")?;
        // Needs an IPC namespace of the sandbox's own; without one it is left out.
        p.mount_unless(
            covered("/dev/mqueue"),
            "mqueue",
            p.strict("dev/mqueue")?,
            "mqueue",
            NOSUID | NODEV | NOEXEC,
            None,
            true,
        )?;
        p.mkdir("sys")?;
        // sysfs needs a network namespace the sandbox owns; without one /sys stays empty.
        p.mount(
            "sysfs",
            p.strict("sys")?,
            "sysfs",
            libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
            None,
            true,
        )?;
        if self.cgroup2 {
            p.mount_unless(
                covered("/sys/fs/cgroup"),
                "cgroup2",
                p.strict("sys/fs/cgroup")?,
                "cgroup2",
                libc::MS_RDONLY | NOSUID | NODEV | NOEXEC,
                None,
                true,
            )?;
        }
        p.mkdir("tmp")?;
        p.mount_unless(
            covered("/tmp"),
            &format!("{staging}/tmp"),
            At::Root(c("tmp")?),
            "",
            BIND,
            None,
            false,
        )?;
        if hide && userxattr {
            p.hide_with_mounts(&staging)?;
        }

        let mut prepare = Vec::new();
        for (m, replaced) in mounts.iter().zip(replaced) {
            if replaced {
                continue;
            }
            match m {
                Checked::Volume(v, is_dir, guest) => {
                    if *is_dir {
                        p.mkdir_all(guest)?;
                    } else {
                        if let Some(parent) = Path::new(guest).parent() {
                            p.mkdir_all(&parent.to_string_lossy())?;
                        }
                        p.push(Op::CreateFile { at: p.at(guest)? });
                    }
                    let rec = if v.recursive { REC } else { 0 };
                    match &v.id_map {
                        Some(map) => {
                            let slot = u32::try_from(prepare.len()).unwrap_or(u32::MAX);
                            prepare.push(idmap::Prepare {
                                host: c(&v.host.to_string_lossy())?,
                                recursive: v.recursive,
                                recursive_idmap: map.recursive,
                                uid_map: map_text(&v.guest, &map.uid)?,
                                gid_map: map_text(&v.guest, &map.gid)?,
                            });
                            p.push(Op::AttachPrepared {
                                slot,
                                target: p.at(guest)?,
                            });
                        }
                        None => p.mount(
                            &v.host.to_string_lossy(),
                            p.at(guest)?,
                            "",
                            BIND | rec,
                            None,
                            false,
                        )?,
                    }
                    // The top mount's change, then the tree's, which holds read-only and nodev: no
                    // option undoes them.
                    let mut tree = v.tree;
                    if v.read_only {
                        tree.set |= MountAttr::RDONLY;
                        tree.clear -= MountAttr::RDONLY;
                    }
                    tree.set |= MountAttr::NODEV;
                    tree.clear -= MountAttr::NODEV;
                    p.change(p.at(guest)?, &v.top, false);
                    p.change(p.at(guest)?, &tree, true);
                }
                Checked::Tmpfs(t, o, guest) => {
                    p.mkdir_all(guest)?;
                    let noexec = if t.noexec { NOEXEC } else { 0 };
                    let mut data =
                        format!("mode={:o},size={}", t.mode, t.size.unwrap_or(self.scratch));
                    if let Some(n) = o.nr_inodes {
                        data.push_str(&format!(",nr_inodes={n}"));
                    }
                    if let Some(uid) = o.uid {
                        data.push_str(&format!(",uid={uid}"));
                    }
                    if let Some(gid) = o.gid {
                        data.push_str(&format!(",gid={gid}"));
                    }
                    p.mount(
                        "tmpfs",
                        p.at(guest)?,
                        "tmpfs",
                        NOSUID | NODEV | noexec,
                        Some(&data),
                        false,
                    )?;
                    let mut attrs = o.attrs;
                    attrs.clear -= MountAttr::NOSUID | MountAttr::NODEV;
                    if t.noexec {
                        attrs.clear -= MountAttr::NOEXEC;
                    }
                    if attrs != MountAttrChange::default() {
                        p.change(p.at(guest)?, &attrs, false);
                    }
                }
            }
        }
        if !devices.is_empty() {
            p.devices(&devices, &staging)?;
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
                p.push(Op::Mask {
                    at: p.strict(path)?,
                    on: KernelFs::of(path),
                });
            }
            for path in READ_ONLY_PATHS {
                p.push(Op::SetAttr {
                    at: p.strict(path)?,
                    on: KernelFs::of(path),
                    bind: true,
                    recursive: true,
                    attr: libc::MOUNT_ATTR_RDONLY,
                    clear: 0,
                    propagation: None,
                });
            }
        }
        if let Some((propagation, recursive)) = self.propagation {
            let change = MountAttrChange {
                propagation: Some(propagation),
                ..MountAttrChange::default()
            };
            p.change(At::Root(c(".")?), &change, recursive);
        }
        if self.read_only {
            p.set_attr(At::Root(c(".")?), libc::MOUNT_ATTR_RDONLY, false);
        }
        Ok(RootfsPlan {
            rootfs: self.clone(),
            ops: p.ops,
            slots: idmap::Slots::new(prepare.len()),
            prepare,
        })
    }
}

/// Refuses a change `mount_setattr(2)` would refuse: unknown bits, or an access-time mode set
/// or cleared without clearing all of `MOUNT_ATTR__ATIME`, or more than one mode set.
fn check_change(what: &'static str, guest: &Path, change: &MountAttrChange) -> Result<()> {
    let atime = MountAttr::ATIME_MASK;
    let known = MountAttr::all();
    let modes = change.set & atime;
    let ok = known.contains(change.set)
        && known.contains(change.clear)
        && (!(change.set | change.clear).intersects(atime) || change.clear.contains(atime))
        && (modes.is_empty() || modes == MountAttr::NOATIME || modes == MountAttr::STRICTATIME);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidValue {
            what,
            value: format!("{} {change:?}", guest.display()),
            reason: "mount attributes mount_setattr(2) refuses: an access-time mode needs all \
                     of MOUNT_ATTR__ATIME cleared, and only one may be set",
        })
    }
}

/// The most ranges a user namespace's map takes (`user_namespaces(7)`).
const MAX_ID_RANGES: usize = 340;

/// A map as `uid_map` takes it: one `stored shown count` line per range, none empty or
/// overflowing.
fn map_text(guest: &Path, ranges: &[IdRange]) -> Result<String> {
    let ok = !ranges.is_empty()
        && ranges.len() <= MAX_ID_RANGES
        && ranges.iter().all(|r| {
            r.count > 0
                && r.stored.checked_add(r.count - 1).is_some()
                && r.shown.checked_add(r.count - 1).is_some()
        });
    if !ok {
        return Err(Error::InvalidValue {
            what: "id-mapped volume",
            value: format!("{} {ranges:?}", guest.display()),
            reason: "needs 1 to 340 ranges of uids and of gids, none empty or past 2^32",
        });
    }
    Ok(ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.stored, r.shown, r.count))
        .collect())
}

/// Whether the child makes the node itself (else it binds the host's).
fn made_here(d: &Device, userns: bool) -> bool {
    !userns || d.kind == DeviceKind::Fifo
}

/// Checks a device node and returns its path in the sandbox: permission bits only, an owner
/// and group that are ids, and, where the host's node is bound, a host node of the same kind
/// and numbers at the same path.
fn check_device(d: &Device, userns: bool) -> Result<String> {
    let bad = |reason| Error::InvalidValue {
        what: "device node",
        value: format!(
            "{} {:?} {}:{} mode {:o} owner {}:{}",
            d.guest.display(),
            d.kind,
            d.major,
            d.minor,
            d.mode,
            d.uid,
            d.gid
        ),
        reason,
    };
    if d.mode > 0o777 {
        return Err(bad("its mode has only permission bits (at most 0777)"));
    }
    if d.uid == u32::MAX || d.gid == u32::MAX {
        return Err(bad("-1 is no user or group id"));
    }
    if d.kind == DeviceKind::Fifo && (d.major, d.minor) != (0, 0) {
        return Err(bad("a FIFO has no device number"));
    }
    let guest = guest_path("device node", &d.guest)?;
    if !made_here(d, userns) {
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::metadata(&guest).map_err(|source| Error::Io {
            op: "find the host's device node (a user namespace cannot make one)",
            path: PathBuf::from(&guest),
            source,
        })?;
        let kind = if d.kind == DeviceKind::Char {
            meta.file_type().is_char_device()
        } else {
            meta.file_type().is_block_device()
        };
        if !kind || meta.rdev() != libc::makedev(d.major, d.minor) {
            return Err(bad(
                "in a user namespace the host's node at this path is bound, and it is not \
                 this device",
            ));
        }
    }
    Ok(guest)
}

/// The sandbox's own kernel file systems, which no mount of the caller's may replace.
const OWN_FILE_SYSTEMS: &[&str] = &["/proc", "/dev", "/sys"];

/// The smallest scratch space accepted.
const MIN_SCRATCH_SIZE: u64 = 1 << 20;

const BIND: libc::c_ulong = libc::MS_BIND;
const REC: libc::c_ulong = libc::MS_REC;
const NODEV_ATTR: u64 = libc::MOUNT_ATTR_NODEV;

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
    /// Whether the plan is for a sandbox in a user namespace of its own.
    userns: bool,
    /// The host's top-level directories a rootless host root binds read-only instead of
    /// overlaying them (they have mounts below them).
    bound: Vec<String>,
}

impl Planner {
    fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    /// A guest path (`/a/b` or `a/b`) as [`At::Root`].
    fn at(&self, guest: &str) -> Result<At> {
        Ok(At::Root(c(guest.trim_start_matches('/'))?))
    }

    /// A guest path (`/a/b` or `a/b`) as [`At::RootStrict`].
    fn strict(&self, guest: &str) -> Result<At> {
        Ok(At::RootStrict(c(guest.trim_start_matches('/'))?))
    }

    /// A directory on the host side, made by the plan itself (the staging area).
    fn mkdir_at(&mut self, path: &str, mode: u32) -> Result<()> {
        let (parent, name) = split(path);
        self.push(Op::Mkdir {
            parent: At::Host(c(if parent.is_empty() { "/" } else { parent })?),
            name: c(name)?,
            mode,
        });
        Ok(())
    }

    /// A directory in the new root, its parent resolved inside the root.
    fn mkdir(&mut self, guest: &str) -> Result<()> {
        let (parent, name) = split(guest.trim_start_matches('/'));
        self.push(Op::Mkdir {
            parent: At::Root(c(if parent.is_empty() { "." } else { parent })?),
            name: c(name)?,
            mode: 0o755,
        });
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

    /// [`mount`](Self::mount), unless a mount of the caller's replaces it (`skip`).
    #[allow(clippy::too_many_arguments)]
    fn mount_unless(
        &mut self,
        skip: bool,
        source: &str,
        target: At,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
        optional: bool,
    ) -> Result<()> {
        if skip {
            return Ok(());
        }
        self.mount(source, target, fstype, flags, data, optional)
    }

    fn mount(
        &mut self,
        source: &str,
        target: At,
        fstype: &str,
        flags: libc::c_ulong,
        data: Option<&str>,
        optional: bool,
    ) -> Result<()> {
        self.push(Op::Mount {
            source: c(source)?,
            target,
            fstype: c(fstype)?,
            flags,
            data: data.map(c).transpose()?,
            optional,
        });
        Ok(())
    }

    /// Sets mount attributes on an existing mount in the new root.
    fn set_attr(&mut self, at: At, attr: u64, recursive: bool) {
        self.push(Op::SetAttr {
            at,
            on: KernelFs::Any,
            bind: false,
            recursive,
            attr,
            clear: 0,
            propagation: None,
        });
    }

    /// Changes an existing mount in the new root as `change` says; nothing if it says nothing.
    fn change(&mut self, at: At, change: &MountAttrChange, recursive: bool) {
        if *change == MountAttrChange::default() {
            return;
        }
        self.push(Op::SetAttr {
            at,
            on: KernelFs::Any,
            bind: false,
            recursive,
            attr: change.set.bits(),
            clear: change.clear.bits(),
            propagation: change.propagation,
        });
    }

    /// The device nodes: each made on a tmpfs of their own in the staging area (without
    /// `nodev`, unlike every mount of the sandbox) or, for a device in a user namespace, the
    /// host's node, bound onto an empty file at its path in the root.
    fn devices(&mut self, devices: &[(&Device, String)], staging: &str) -> Result<()> {
        let dir = format!("{staging}/devices");
        if devices.iter().any(|(d, _)| made_here(d, self.userns)) {
            self.mkdir_at(&dir, 0o755)?;
            self.mount(
                "tmpfs",
                At::Host(c(&dir)?),
                "tmpfs",
                NOSUID | NOEXEC,
                Some("mode=755,size=64k"),
                false,
            )?;
        }
        for (i, (d, guest)) in devices.iter().enumerate() {
            let source = if made_here(d, self.userns) {
                let node = format!("{dir}/{i}");
                let (kind, dev) = match d.kind {
                    DeviceKind::Char => (libc::S_IFCHR, libc::makedev(d.major, d.minor)),
                    DeviceKind::Block => (libc::S_IFBLK, libc::makedev(d.major, d.minor)),
                    DeviceKind::Fifo => (libc::S_IFIFO, 0),
                };
                self.push(Op::Mknod {
                    at: At::Host(c(&node)?),
                    mode: kind | d.mode,
                    dev,
                    uid: d.uid,
                    gid: d.gid,
                });
                node
            } else {
                guest.clone()
            };
            if let Some(parent) = Path::new(guest).parent() {
                self.mkdir_all(&parent.to_string_lossy())?;
            }
            self.push(Op::CreateFile {
                at: self.at(guest)?,
            });
            self.mount(&source, self.at(guest)?, "", BIND, None, false)?;
        }
        Ok(())
    }

    /// Leaves the host's data and secrets out of a host overlay, in its throwaway upper layer
    /// (`upper`, not yet mounted): each data directory becomes an empty opaque directory, each
    /// secret a whiteout (overlayfs's "whiteouts and opaque directories"). Costs a few system
    /// calls on a tmpfs, no mount. Parents made on the way get the host's modes, since an
    /// upper directory's attributes are what the merged directory shows.
    fn hide_in_upper(&mut self, upper: &str) -> Result<()> {
        for host in hidden_host_paths() {
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            let rel = host.trim_start_matches('/');
            let mut prefix = String::new();
            let parts: Vec<&str> = rel.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                prefix.push('/');
                prefix.push_str(part);
                let mode = std::fs::metadata(&prefix).map_or(0o755, |m| m.mode() & 0o7777);
                self.mkdir_at(&format!("{upper}{prefix}"), mode)?;
            }
            let path = c(&format!("{upper}/{rel}"))?;
            if meta.is_dir() {
                self.push(Op::Opaque {
                    path,
                    mode: meta.mode() & 0o7777,
                    userxattr: self.userns,
                });
            } else {
                self.push(Op::Whiteout { path });
            }
        }
        Ok(())
    }

    /// The same inside the host's directories that a rootless host root binds rather than
    /// overlays ([`host_layers`](Self::host_layers)): an empty directory of the scratch space
    /// bound over each secret directory, `/dev/null` over each secret file.
    fn hide_with_mounts(&mut self, staging: &str) -> Result<()> {
        if self.bound.is_empty() {
            return Ok(());
        }
        let empty = format!("{staging}/empty");
        self.mkdir_at(&empty, 0o755)?;
        let bound = std::mem::take(&mut self.bound);
        for host in hidden_host_paths() {
            if !bound.iter().any(|b| host.starts_with(&format!("{b}/"))) {
                continue;
            }
            // /tmp has its own mount already.
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            if host == "/tmp" || meta.file_type().is_symlink() {
                continue;
            }
            let source = if meta.is_dir() {
                empty.as_str()
            } else {
                "/dev/null"
            };
            let at = At::Root(c(host.trim_start_matches('/'))?);
            self.mount(source, at, "", BIND, None, false)?;
        }
        Ok(())
    }

    /// The host's system for a sandbox in a user namespace: the root is a directory of the
    /// scratch space (bound onto itself, to be a mount `pivot_root(2)` takes), and each of the
    /// host's top-level directories is in it as an overlay of its own, the host's directory the
    /// lower layer of a writable layer `{staging}/upper/NAME` (overlayfs with `userxattr`,
    /// mounted by the user namespace's root, `overlayfs(5)` since Linux 5.11). The host's
    /// top-level links are copied, its data directories are empty directories (unless
    /// `hide` is off), its top-level files are bound read-only. A directory with mounts below
    /// it, which overlayfs refuses in a user namespace (they are locked), is bound read-only
    /// with them instead. The secrets are whiteouts and opaque directories in the writable
    /// layers, as for the privileged host root.
    ///
    /// The parents of the mount targets `targets` are made in the writable layers beforehand,
    /// where the host has a directory or nothing, with the host's modes: the host's directories
    /// belong to ids the user namespace does not map (shown as the overflow id), in which its
    /// root may not create the mount points through the overlay.
    fn host_layers(
        &mut self,
        staging: &str,
        root: &str,
        hide: bool,
        targets: &[&str],
    ) -> Result<()> {
        let upper = format!("{staging}/upper");
        let work = format!("{staging}/work");
        self.mkdir_at(&upper, 0o755)?;
        self.mkdir_at(&work, 0o755)?;
        self.mount(root, At::Host(c(root)?), "", BIND, None, false)?;
        if hide {
            self.hide_in_upper(&upper)?;
        }
        let submounts = host_mount_points();
        let mut entries: Vec<(String, std::fs::Metadata)> = std::fs::read_dir("/")
            .map_err(|source| Error::Io {
                op: "list the host's root directory",
                path: PathBuf::from("/"),
                source,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let meta = e.metadata().ok()?;
                Some((name, meta))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta) in entries {
            // The sandbox's own, made later.
            if ["proc", "sys", "dev", "tmp"].contains(&name.as_str()) {
                continue;
            }
            let host = format!("/{name}");
            let target = format!("{root}/{name}");
            let ty = meta.file_type();
            // A mount of the caller's replaces it: only its mount point is made. The staging
            // directory, covered by the scratch space in the sandbox's namespace, shows empty:
            // as a layer or a bind it would be the scratch space itself.
            if targets.contains(&host.as_str()) || host == staging {
                if ty.is_dir() {
                    self.mkdir_at(&target, meta.mode() & 0o7777)?;
                } else if ty.is_file() {
                    self.push(Op::CreateFile {
                        at: At::Host(c(&target)?),
                    });
                }
                continue;
            }
            if ty.is_symlink() {
                let Ok(link) = std::fs::read_link(&host) else {
                    continue;
                };
                self.push(Op::Symlink {
                    target: CString::new(link.as_os_str().as_encoded_bytes()).map_err(|_| {
                        Error::InvalidValue {
                            what: "host link",
                            value: host.clone(),
                            reason: "its target contains a NUL byte",
                        }
                    })?,
                    link: c(&target)?,
                });
            } else if ty.is_dir() {
                let mode = meta.mode() & 0o7777;
                if hide && HOST_DATA_DIRS.contains(&host.as_str()) {
                    self.mkdir_at(&target, mode)?;
                    continue;
                }
                self.mkdir_at(&target, 0o755)?;
                let prefix = format!("{host}/");
                if submounts.iter().any(|m| m.starts_with(&prefix)) {
                    self.mount(&host, At::Host(c(&target)?), "", BIND | REC, None, false)?;
                    self.set_attr(
                        At::Host(c(&target)?),
                        libc::MOUNT_ATTR_RDONLY | NODEV_ATTR,
                        true,
                    );
                    self.bound.push(host);
                    continue;
                }
                let (up, wk) = (format!("{upper}/{name}"), format!("{work}/{name}"));
                // The merged directory shows its upper directory's mode.
                self.mkdir_at(&up, mode)?;
                self.mkdir_at(&wk, 0o755)?;
                for t in targets.iter().filter(|t| t.starts_with(&prefix)) {
                    self.parents_in_upper(&upper, t)?;
                }
                self.overlay_at(&[PathBuf::from(&host)], &up, &wk, &target, true)?;
            } else if ty.is_file() {
                self.push(Op::CreateFile {
                    at: At::Host(c(&target)?),
                });
                self.mount(&host, At::Host(c(&target)?), "", BIND, None, false)?;
                self.set_attr(
                    At::Host(c(&target)?),
                    libc::MOUNT_ATTR_RDONLY | NODEV_ATTR,
                    false,
                );
            }
        }
        self.push(Op::OpenRoot { path: c(root)? });
        Ok(())
    }

    /// The parent directories of `guest` (below its top-level directory) in the writable layer
    /// `upper`, before the overlay is mounted: each with the mode of the host's directory, or
    /// `0755` where the host has none. It stops at the first that is anything else on the
    /// host (a link, which the sandbox resolves in its root, or a file), which the mount's own
    /// steps then meet in the merged tree.
    fn parents_in_upper(&mut self, upper: &str, guest: &str) -> Result<()> {
        let Some((parents, _)) = guest.rsplit_once('/') else {
            return Ok(());
        };
        let mut host = String::new();
        let mut missing = false;
        for (i, part) in parents.split('/').filter(|p| !p.is_empty()).enumerate() {
            host.push('/');
            host.push_str(part);
            // The top-level directory is the layer itself.
            if i == 0 {
                continue;
            }
            let mode = if missing {
                0o755
            } else {
                match std::fs::symlink_metadata(&host) {
                    Ok(m) if m.is_dir() => m.mode() & 0o7777,
                    Ok(_) => return Ok(()),
                    Err(_) => {
                        missing = true;
                        0o755
                    }
                }
            };
            self.mkdir_at(&format!("{upper}{host}"), mode)?;
        }
        Ok(())
    }

    /// The root overlay on `{staging}/root`: `lower` under `upper`, or under the writable layer
    /// `{staging}/upper` on the scratch tmpfs.
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
                let work = format!("{staging}/work");
                self.mkdir_at(&work, 0o755)?;
                (format!("{staging}/upper"), work)
            }
        };
        self.overlay_at(lower, &upper, &work, &format!("{staging}/root"), userxattr)
    }

    /// An overlay of `lower` under `upper` (with `work`) on `target`, in the staging area.
    fn overlay_at(
        &mut self,
        lower: &[PathBuf],
        upper: &str,
        work: &str,
        target: &str,
        userxattr: bool,
    ) -> Result<()> {
        // For kernels without `lowerdir+` (before 6.8): one option string, if it fits a page.
        let legacy = mount::Overlay::new()
            .lowers(lower.iter().cloned())
            .upper(upper, work)
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
        self.push(Op::Overlay {
            lowers,
            upper: c(upper)?,
            work: c(work)?,
            target: c(target)?,
            userxattr,
            legacy,
        });
        Ok(())
    }
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`); `/c` → (``, `c`).
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}

/// The caller's mount points (`/proc/self/mountinfo`, `proc(5)`), unescaped; none if it cannot
/// be read (then every directory is overlaid, and one with mounts below it fails the spawn).
fn host_mount_points() -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .collect()
}

/// A mountinfo field with its octal escapes (`\040` for a space, …) decoded.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`HOST_DATA_DIRS`], [`HOST_SECRETS`] and the SSH host private keys present on this host.
fn hidden_host_paths() -> Vec<String> {
    let mut paths: Vec<String> = HOST_DATA_DIRS
        .iter()
        .chain(HOST_SECRETS)
        .map(|s| (*s).to_owned())
        .collect();
    if let Ok(dir) = std::fs::read_dir("/etc/ssh") {
        let mut keys: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
            .map(|n| format!("/etc/ssh/{n}"))
            .collect();
        keys.sort();
        paths.extend(keys);
    }
    paths
}

/// Where an op's path is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum At {
    /// An absolute path as the child sees it before the pivot: only the plan's own staging
    /// area and the host paths the caller named.
    Host(CString),
    /// A path inside the new root, relative to it (`.` for the root itself), resolved from the
    /// root with `openat2(2)`'s `RESOLVE_IN_ROOT`: symbolic links are followed, but as if the
    /// root were `/`, so never out of it; magic links (`/proc/self/fd/N`) are refused.
    Root(CString),
    /// As [`At::Root`], but no symbolic link may appear anywhere in it
    /// (`RESOLVE_NO_SYMLINKS`): for the kernel's file systems and their masks, where an image's
    /// link must fail the spawn rather than redirect the mount.
    RootStrict(CString),
}

impl At {
    fn describe(&self) -> String {
        match self {
            At::Host(p) => p.to_string_lossy().into_owned(),
            At::Root(p) => format!("/{} (in the root)", p.to_string_lossy()),
            At::RootStrict(p) => format!(
                "/{} (in the root; it must not be or pass through a symbolic link)",
                p.to_string_lossy()
            ),
        }
    }
}

/// The kernel file system a mask or read-only step expects its target on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KernelFs {
    /// No expectation.
    Any,
    /// procfs (`PROC_SUPER_MAGIC`, `statfs(2)`).
    Proc,
    /// sysfs (`SYSFS_MAGIC`).
    Sys,
}

impl KernelFs {
    fn of(path: &str) -> KernelFs {
        if path.starts_with("/proc/") {
            KernelFs::Proc
        } else if path.starts_with("/sys/") {
            KernelFs::Sys
        } else {
            KernelFs::Any
        }
    }

    /// The `f_type` of `statfs(2)` the target must have, if any.
    pub fn magic(self) -> Option<libc::c_long> {
        match self {
            KernelFs::Any => None,
            KernelFs::Proc => Some(libc::PROC_SUPER_MAGIC),
            KernelFs::Sys => Some(libc::SYSFS_MAGIC),
        }
    }
}

/// One step of the child's mount work, in a private mount namespace.
///
/// Until [`Op::OpenRoot`] only the plan's own staging area is touched ([`At::Host`]); from
/// there on every path in the sandbox is resolved inside its root ([`At::Root`],
/// [`At::RootStrict`]), before and after the pivot alike, and mounts go onto the resolved
/// descriptor (`/proc/self/fd/N`), so no symbolic link of the image or of the host can send a
/// mount, a directory or a file outside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)`.
    MakePrivate,
    /// An overlay mounted by the child: `fsopen(2)` of `overlay`, one `fsconfig(2)`
    /// `lowerdir+` per layer (Linux 6.8), `upperdir`, `workdir`, create, `fsmount(2)` with
    /// `MOUNT_ATTR_NODEV` and `move_mount(2)` onto `target`; where `lowerdir+` is refused,
    /// `mount(2)` with `legacy`, the same as one option string (absent when it would not fit a
    /// page).
    Overlay {
        /// The read-only layers, top-most first.
        lowers: Vec<CString>,
        /// The writable layer.
        upper: CString,
        /// Its work directory.
        work: CString,
        /// The mount point (in the staging area).
        target: CString,
        /// Whether to mount with `userxattr` (in a user namespace).
        userxattr: bool,
        /// The `mount(2)` data for kernels without `lowerdir+`.
        legacy: Option<CString>,
    },
    /// Opens the new root (`O_PATH`), from which [`At::Root`] paths are resolved.
    OpenRoot {
        /// The new root's mount point.
        path: CString,
    },
    /// `chdir(new_root)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`: the
    /// old root is stacked under the new one and detached (`pivot_root(2)`).
    PivotRoot {
        /// The new root's mount point.
        new_root: CString,
    },
    /// `mkdirat(2)` of `name` in the directory `parent`, with exactly `mode`; an existing entry
    /// is fine (a later step on it decides whether it will do).
    Mkdir {
        /// The directory to create it in.
        parent: At,
        /// The new directory's name.
        name: CString,
        /// Its mode.
        mode: u32,
    },
    /// Creates an empty file to bind a file over; an existing one is fine.
    CreateFile {
        /// The file.
        at: At,
    },
    /// `symlink(target, link)`, `link` as the child sees it (after the pivot, or in the staging
    /// area before it); an existing link is fine.
    Symlink {
        /// What the link points to.
        target: CString,
        /// The link.
        link: CString,
    },
    /// An overlayfs whiteout (a character device 0:0) in a writable layer, hiding what the
    /// lower layers have there.
    Whiteout {
        /// The path in the writable layer.
        path: CString,
    },
    /// An empty opaque directory (`trusted.overlay.opaque` = `y`, or `user.overlay.opaque` for
    /// an overlay mounted with `userxattr`) in a writable layer, hiding what the lower layers
    /// hold in it.
    Opaque {
        /// The path in the writable layer.
        path: CString,
        /// Its mode.
        mode: u32,
        /// Mark it with `user.overlay.opaque` (an overlay in a user namespace).
        userxattr: bool,
    },
    /// `mount(source, target, fstype, flags, data)`, onto the resolved target.
    Mount {
        /// The source (a device, a name, or a host path for a bind).
        source: CString,
        /// The mount point.
        target: At,
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
    /// Hides a path on a kernel file system: a file is covered with `/dev/null`, a directory
    /// with an empty read-only tmpfs. A missing path is skipped; one that is a symbolic link or
    /// on another file system than `on` fails the spawn.
    Mask {
        /// The path.
        at: At,
        /// The file system it must be on.
        on: KernelFs,
    },
    /// `mknod(2)` of a node (`mode` holds its type and permissions, exactly, whatever the
    /// umask), then `chown(2)` of it to `uid`:`gid` (`fchownat(2)`, not following a link).
    /// An existing entry fails the spawn.
    Mknod {
        /// The node (in the staging area).
        at: At,
        /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`, and the permission bits.
        mode: u32,
        /// The device number (`makedev(3)`), 0 for a FIFO.
        dev: u64,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
    },
    /// Attaches (`move_mount(2)`) the detached mount [`RootfsPlan::prepare`] made for this
    /// spawn in slot `slot` onto `target`; `EBADF` if none was prepared.
    AttachPrepared {
        /// The prepared mount's index.
        slot: u32,
        /// The mount point.
        target: At,
    },
    /// Changes the mount at `at` (`mount_setattr(2)`): sets the `MOUNT_ATTR_*` flags `attr`,
    /// clears those of `clear`, and gives it the propagation type `propagation`; after binding
    /// it onto itself if `bind` (so that it becomes a mount of its own). With `bind`, a missing
    /// path is skipped; one on another file system than `on` fails the spawn.
    SetAttr {
        /// The path.
        at: At,
        /// The file system it must be on.
        on: KernelFs,
        /// Whether to bind it onto itself first.
        bind: bool,
        /// Whether the mounts below it get the flags too (`AT_RECURSIVE`).
        recursive: bool,
        /// The `MOUNT_ATTR_*` flags to set.
        attr: u64,
        /// The `MOUNT_ATTR_*` flags to clear (all of `MOUNT_ATTR__ATIME` to change the
        /// access-time mode).
        clear: u64,
        /// The new propagation type, if any.
        propagation: Option<Propagation>,
    },
}

impl Op {
    /// A short description for error messages: what the op acted on.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Op::MakePrivate => "make mounts private".into(),
            Op::PivotRoot { new_root } => format!("pivot_root into {}", s(new_root)),
            Op::OpenRoot { path } => format!("open the new root {}", s(path)),
            Op::Overlay { target, lowers, .. } => {
                format!(
                    "mount an overlay of {} layers on {}",
                    lowers.len(),
                    s(target)
                )
            }
            Op::Mkdir { parent, name, .. } => {
                let joined = |p: &CString| match p.to_bytes() {
                    b"." | b"/" => format!("/{}", s(name)),
                    _ => format!("/{}/{}", s(p).trim_start_matches('/'), s(name)),
                };
                match parent {
                    At::Host(p) => format!("create directory {}", joined(p)),
                    At::Root(p) | At::RootStrict(p) => {
                        format!("create directory {} (in the root)", joined(p))
                    }
                }
            }
            Op::CreateFile { at } => format!("create file {}", at.describe()),
            Op::Symlink { link, .. } => format!("create symlink {}", s(link)),
            Op::Whiteout { path } => format!("hide {}", s(path)),
            Op::Opaque { path, .. } => format!("hide the contents of {}", s(path)),
            Op::Mount { fstype, target, .. } if fstype.is_empty() => {
                format!("bind onto {}", target.describe())
            }
            Op::Mount { fstype, target, .. } => {
                format!("mount {} on {}", s(fstype), target.describe())
            }
            Op::Mask { at, on } => format!("mask {}{}", at.describe(), on_fs(*on)),
            Op::Mknod { at, .. } => format!("make the device node {}", at.describe()),
            Op::AttachPrepared { target, .. } => {
                format!("attach an id-mapped mount onto {}", target.describe())
            }
            Op::SetAttr {
                at,
                on,
                attr,
                propagation,
                ..
            } => {
                let what = if attr & libc::MOUNT_ATTR_RDONLY != 0 {
                    "make read-only"
                } else if propagation.is_some() {
                    "change the mount flags or propagation of"
                } else {
                    "set mount flags on"
                };
                format!("{what} {}{}", at.describe(), on_fs(*on))
            }
        }
    }
}

fn on_fs(on: KernelFs) -> &'static str {
    match on {
        KernelFs::Any => "",
        KernelFs::Proc => ", which must be on procfs",
        KernelFs::Sys => ", which must be on sysfs",
    }
}

/// A [`Rootfs`] turned into ops, for the sandbox child to carry out.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    rootfs: Rootfs,
    /// The ops, in order.
    pub ops: Vec<Op>,
    /// The id-mapped volumes, which each spawn prepares.
    prepare: Vec<idmap::Prepare>,
    /// Where the child finds them.
    slots: Arc<idmap::Slots>,
}

impl RootfsPlan {
    /// The description the plan was made from.
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }

    /// Whether a spawn must [`prepare`](Self::prepare) the plan (it has id-mapped volumes).
    pub fn needs_prepare(&self) -> bool {
        !self.prepare.is_empty()
    }

    /// The caller's part of one spawn, before the clone: a detached, id-mapped copy of each
    /// id-mapped volume (`open_tree(2)`, a user namespace with its maps made by a short-lived
    /// child of the caller, `mount_setattr(2)` with `MOUNT_ATTR_IDMAP`), its descriptor
    /// numbered `floor` or above, for [`apply`](Self::apply) to attach. Nothing to do, and no
    /// lock taken, without id-mapped volumes.
    ///
    /// The result must live until the child has applied the plan, and its
    /// [`fds`](PreparedMounts::fds) must stay open in the child; meanwhile other spawns of the
    /// same plan wait in this call. Making id-mapped mounts takes `CAP_SYS_ADMIN` in the
    /// initial user namespace, and a file system that supports them.
    ///
    /// # Errors
    ///
    /// [`Error::Mount`] naming the system call and the host path, [`Error::Io`] for the user
    /// namespace's maps.
    pub fn prepare(&self, floor: std::os::fd::RawFd) -> Result<PreparedMounts<'_>> {
        idmap::prepare(&self.prepare, &self.slots, floor)
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

    fn root(p: &str) -> At {
        At::Root(c(p).unwrap())
    }

    fn strict(p: &str) -> At {
        At::RootStrict(c(p).unwrap())
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
        let open_root = pos(&|o| matches!(o, Op::OpenRoot { .. }));
        let proc = pos(&|o| matches!(o, Op::Mount { fstype, .. } if fstype.as_bytes() == b"proc"));
        let pivot = pos(&|o| matches!(o, Op::PivotRoot { .. }));
        let mask = pos(&|o| matches!(o, Op::Mask { .. }));
        let ro_root = pos(&|o| {
            matches!(
                o,
                Op::SetAttr {
                    bind: false,
                    recursive: false,
                    ..
                }
            )
        });
        assert_eq!(plan.ops[0], Op::MakePrivate);
        assert!(overlay < open_root && open_root < proc && proc < pivot);
        assert!(pivot < mask && mask < ro_root);
        assert_eq!(ro_root, plan.ops.len() - 1);
        // The kernel's file systems go on paths resolved in the root, through no link.
        let Op::Mount { target, .. } = &plan.ops[proc] else {
            unreachable!()
        };
        assert_eq!(*target, strict("proc"));
        let Op::Mask { at, on } = &plan.ops[mask] else {
            unreachable!()
        };
        assert_eq!((at, *on), (&strict("proc/acpi"), KernelFs::Proc));
        let rootless = Rootfs::layers([std::env::temp_dir()])
            .plan_rootless()
            .unwrap();
        assert!(rootless.ops.iter().any(
            |o| matches!(o, Op::Overlay { userxattr: true, legacy: Some(l), .. }
                if l.to_str().unwrap().contains("userxattr"))
        ));
        // Rootless, the host's directories are each an overlay of their own, with `userxattr`.
        let host = Rootfs::host().plan_rootless().unwrap();
        assert!(host
            .ops
            .iter()
            .any(|o| matches!(o, Op::Overlay { userxattr: true, lowers, .. }
            if lowers == &[c("/usr").unwrap()])));
        assert!(!host
            .ops
            .iter()
            .any(|o| matches!(o, Op::Overlay { lowers, .. } if lowers == &[c("/").unwrap()])));
    }

    #[test]
    fn the_host_root_leaves_out_the_hosts_data_unless_asked() {
        let hidden = |plan: &RootfsPlan| {
            plan.ops
                .iter()
                .filter_map(|o| match o {
                    Op::Whiteout { path } | Op::Opaque { path, .. } => {
                        Some(path.to_str().unwrap().to_owned())
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let plan = Rootfs::host().plan().unwrap();
        let hidden_paths = hidden(&plan);
        assert!(hidden_paths.contains(&"/mnt/upper/root".to_owned()));
        assert!(hidden_paths.contains(&"/mnt/upper/etc/shadow".to_owned()));
        // Before the overlay is mounted over them.
        let overlay = plan
            .ops
            .iter()
            .position(|o| matches!(o, Op::Overlay { .. }))
            .unwrap();
        let last_hide = plan
            .ops
            .iter()
            .rposition(|o| matches!(o, Op::Whiteout { .. } | Op::Opaque { .. }))
            .unwrap();
        assert!(last_hide < overlay);
        assert!(hidden(&Rootfs::host().show_host_data(true).plan().unwrap()).is_empty());
        // Rootless: the data directories are empty directories of the scratch space, the
        // secrets whiteouts in the writable layer of the host's /etc, marked for `userxattr`.
        let rootless = Rootfs::host().plan_rootless().unwrap();
        assert!(rootless
            .ops
            .iter()
            .any(|o| matches!(o, Op::Mkdir { parent: At::Host(p), name, .. }
                if p.to_bytes() == b"/mnt/root" && name.to_bytes() == b"root")));
        assert!(!rootless
            .ops
            .iter()
            .any(|o| matches!(o, Op::Overlay { lowers, .. }
                if lowers == &[c("/root").unwrap()])));
        assert!(hidden(&rootless).contains(&"/mnt/upper/etc/shadow".to_owned()));
        assert!(rootless.ops.iter().all(|o| !matches!(
            o,
            Op::Opaque {
                userxattr: false,
                ..
            }
        )));
    }

    #[test]
    fn scratch_space_is_one_bounded_tmpfs() {
        let plan = Rootfs::host().scratch_size(64 << 20).plan().unwrap();
        let Op::Mount { data, .. } = &plan.ops[1] else {
            panic!("{:?}", plan.ops[1])
        };
        assert!(data
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .contains(&format!("size={}", 64u64 << 20)));
        assert!(plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::Mount { source, target, .. }
                if source.to_bytes() == b"/mnt/tmp" && *target == root("tmp"))));
        assert!(matches!(
            Rootfs::host().scratch_size(1).plan(),
            Err(Error::InvalidValue { .. })
        ));
    }

    #[test]
    fn options_become_ops_in_their_order() {
        let dir = std::env::temp_dir();
        let mut v = Volume::new(&dir, "/data", Access::ReadOnly);
        v.recursive = false;
        v.top.set = MountAttr::NOSUID;
        v.tree.clear = MountAttr::NOEXEC | MountAttr::NODEV;
        let options = TmpfsOptions {
            nr_inodes: Some(8),
            uid: Some(7),
            gid: Some(9),
            ..TmpfsOptions::default()
        };
        let plan = Rootfs::host()
            .volume_with(v)
            .tmpfs_with_options(Tmpfs::new("/scratch"), options)
            .root_propagation(Propagation::Shared, true)
            .read_only(true)
            .plan()
            .unwrap();
        let pos = |f: &dyn Fn(&Op) -> bool| plan.ops.iter().position(f).unwrap();
        // A plain bind, its top mount's change, then the tree's: read-only and nodev whatever
        // the tree's change clears.
        let bind = pos(&|o| {
            matches!(o, Op::Mount { target, flags, .. }
                if *target == root("data") && *flags == libc::MS_BIND)
        });
        let Op::SetAttr {
            attr, recursive, ..
        } = &plan.ops[bind + 1]
        else {
            panic!("{:?}", plan.ops[bind + 1])
        };
        assert_eq!((*attr, *recursive), (libc::MOUNT_ATTR_NOSUID, false));
        let Op::SetAttr {
            attr,
            clear,
            recursive,
            ..
        } = &plan.ops[bind + 2]
        else {
            panic!("{:?}", plan.ops[bind + 2])
        };
        assert_eq!(
            (*attr, *clear, *recursive),
            (
                libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV,
                libc::MOUNT_ATTR_NOEXEC,
                true
            )
        );
        assert!(plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::Mount { data: Some(d), .. }
            if d.to_str().unwrap().ends_with(",nr_inodes=8,uid=7,gid=9"))));
        // The root's propagation after the pivot, before it is made read-only.
        let pivot = pos(&|o| matches!(o, Op::PivotRoot { .. }));
        let shared = pos(&|o| {
            matches!(o, Op::SetAttr { propagation: Some(Propagation::Shared), recursive: true, at, .. }
                if *at == root("."))
        });
        assert!(pivot < shared && shared == plan.ops.len() - 2);
    }

    #[test]
    fn a_later_mount_replaces_an_earlier_one_at_the_same_place() {
        let dir = std::env::temp_dir();
        let plan = Rootfs::host()
            .volume(&dir, "/data", Access::ReadOnly)
            .tmpfs("/data")
            .tmpfs("/tmp")
            .tmpfs("/dev/shm")
            .plan()
            .unwrap();
        let onto = |guest: &str| {
            plan.ops
                .iter()
                .filter(|o| {
                    matches!(o, Op::Mount { target, .. } if *target == root(guest)
                    || *target == strict(guest))
                })
                .count()
        };
        assert_eq!(onto("data"), 1);
        assert_eq!(onto("tmp"), 1);
        assert_eq!(onto("dev/shm"), 1);
        assert!(!plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::Mount { source, .. } if source.to_bytes() == b"/mnt/tmp")));
        for own in ["/proc", "/dev", "/sys"] {
            assert!(matches!(
                Rootfs::host().tmpfs(own).plan(),
                Err(Error::InvalidValue { .. })
            ));
        }
        let options = TmpfsOptions {
            uid: Some(u32::MAX),
            ..TmpfsOptions::default()
        };
        assert!(Rootfs::host()
            .tmpfs_with_options(Tmpfs::new("/x"), options)
            .plan()
            .is_err());
    }

    #[test]
    fn a_rootless_host_root_makes_mount_points_in_its_writable_layers() {
        let dir = std::env::temp_dir();
        let plan = Rootfs::host()
            .volume(&dir, "/usr/local/pal/x", Access::ReadOnly)
            .volume(&dir, "/opt", Access::ReadOnly)
            .plan_rootless()
            .unwrap();
        let pos = |f: &dyn Fn(&Op) -> bool| plan.ops.iter().position(f);
        let made = |parent: &str, name: &str| {
            pos(&|o| {
                matches!(o, Op::Mkdir { parent: At::Host(p), name: n, .. }
                if p.to_bytes() == parent.as_bytes() && n.to_bytes() == name.as_bytes())
            })
        };
        let usr = pos(&|o| {
            matches!(o, Op::Overlay { lowers, .. }
            if lowers == &[c("/usr").unwrap()])
        })
        .unwrap();
        // Below the layer's own top directory, before the overlay is mounted.
        assert!(made("/mnt/upper/usr", "local").unwrap() < usr);
        assert!(made("/mnt/upper/usr/local", "pal").unwrap() < usr);
        assert!(made("/mnt/upper/usr/local/pal", "x").is_none());
        // A volume at a top-level directory replaces its layer.
        assert!(pos(&|o| matches!(o, Op::Overlay { lowers, .. }
            if lowers == &[c("/opt").unwrap()]))
        .is_none());
        assert!(made("/mnt/root", "opt").is_some());
        // The staging directory is never a layer, even with the host's data shown.
        let shown = Rootfs::host().show_host_data(true).plan_rootless().unwrap();
        assert!(!shown.ops.iter().any(|o| matches!(o,
            Op::Overlay { lowers, .. } if lowers == &[c("/mnt").unwrap()])
            || matches!(o, Op::Mount { source, .. } if source.to_bytes() == b"/mnt")));
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
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
    fn volumes_get_their_mount_points_inside_the_root() {
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
                Op::Mkdir { parent, name, .. } => Some((parent.clone(), name.to_owned())),
                _ => None,
            })
            .collect();
        assert!(mkdirs.contains(&(root("."), c("data").unwrap())));
        assert!(mkdirs.contains(&(root("data"), c("in").unwrap())));
        assert!(mkdirs.contains(&(root("."), c("scratch").unwrap())));
        assert!(plan.ops.iter().any(
            |o| matches!(o, Op::SetAttr { at, recursive: true, attr, .. }
            if *at == root("data/in")
                && *attr == libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV)
        ));
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
