//! `root`, `mounts` and the mount-related fields of `linux`: the container's root file system.
//!
//! - Bind mounts become [`Volume`]s, their options as runc takes them: `bind` (the mount
//!   holding the source only) or `rbind` (with the mounts below it); `ro` (read-only, on every
//!   mount of the tree, as Palisade always makes it) and `rw`; `nosuid`/`suid`,
//!   `noexec`/`exec`, `nosymfollow`/`symfollow`, the access-time modes (`noatime`, `relatime`,
//!   `strictatime`, `atime`, `norelatime`, `nostrictatime`) and `nodiratime`/`diratime` on the
//!   bound mount itself; the same prefixed with `r` (`rro`, `rrw`, `rnosuid`, …) on every mount
//!   of the tree (`mount_setattr(2)` with `AT_RECURSIVE`); a propagation type (`private`,
//!   `shared`, `slave`, `unbindable`, and `r…` for the tree) made in the container's own mount
//!   namespace, every mount of which was made private first: nothing propagates to or from the
//!   host. `nodev` and `rnodev` are what Palisade always applies; `dev` and `rdev` are refused
//!   (a device reaches the container only through `linux.devices`), and so is every other
//!   option, by name. The destination is resolved inside the root.
//! - A bind mount's `uidMappings` and `gidMappings` (or, with an `idmap` or `ridmap` option
//!   and none of its own, the container's) make it an id-mapped mount ([`MountIdMap`], see
//!   [`id_map`]), which the runtime prepares for each container before its clone.
//! - Other tmpfs mounts become [`Tmpfs`] mounts: `mode=`, `size=`, `nr_inodes=`, `uid=`,
//!   `gid=`, `noexec`/`exec`, `ro`/`rw`, the access-time modes, `nosymfollow` and the
//!   propagation types; `nosuid` and `nodev` are always applied, so `suid` and `dev` are
//!   refused.
//! - `linux.devices` become [`Device`] nodes, each with an allow rule (`rwm`) appended to the
//!   device policy the `linux` module set (see [`device`]).
//! - `linux.rootfsPropagation`: see [`root_propagation`].

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType, LinuxIdMapping, Mount, Process};
use palisade::cgroup::{DeviceAccess, DeviceRule};
use palisade::overlay::rootfs::{
    Device, DeviceKind, IdRange, MountAttr, MountAttrChange, MountIdMap, Propagation, Tmpfs,
    TmpfsOptions, Volume, MASKED_PATHS, READ_ONLY_PATHS,
};
use palisade::{Access, Rootfs, SandboxBuilder};

use super::{unsupported, Bundle};
use crate::error::{Error, Result};

/// A mount Palisade makes in every root of its own, with the options a bundle may give it.
struct Standard {
    destination: &'static str,
    types: &'static [&'static str],
    accepted: &'static [&'static str],
    /// An option the bundle must give, because Palisade always applies it.
    required: Option<&'static str>,
}

/// Palisade's own mounts (`palisade::overlay::rootfs`), and the options of theirs, or without
/// effect on them, that a bundle may ask for.
const STANDARD: &[Standard] = &[
    Standard {
        destination: "/proc",
        types: &["proc"],
        accepted: &["nosuid", "noexec", "nodev", "relatime", "rw"],
        required: None,
    },
    Standard {
        destination: "/dev",
        types: &["tmpfs"],
        accepted: &[
            "nosuid",
            "nodev",
            "noexec",
            "strictatime",
            "mode=755",
            "mode=0755",
            "size=65536k",
            "rw",
        ],
        required: None,
    },
    Standard {
        destination: "/dev/pts",
        types: &["devpts"],
        // gid=5 is not applied: the terminals belong to the group of the process that opens
        // them (devpts(5) without gid=).
        accepted: &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "ptmxmode=666",
            "mode=0620",
            "mode=620",
            "gid=5",
            "rw",
        ],
        required: None,
    },
    Standard {
        destination: "/dev/shm",
        types: &["tmpfs"],
        accepted: &[
            "nosuid",
            "noexec",
            "nodev",
            "mode=1777",
            "size=65536k",
            "rw",
        ],
        required: None,
    },
    Standard {
        destination: "/dev/mqueue",
        types: &["mqueue"],
        accepted: &["nosuid", "noexec", "nodev", "relatime", "rw"],
        required: None,
    },
    Standard {
        destination: "/sys",
        types: &["sysfs"],
        accepted: &["nosuid", "noexec", "nodev", "relatime", "ro"],
        required: Some("ro"),
    },
    // Palisade mounts cgroup2 read-only there on a pure v2 host when the container has a group
    // and a cgroup namespace of its own (its own group is then the root of what it sees); on
    // hybrid and v1 hosts the directory stays the empty mount point of (read-only) sysfs.
    Standard {
        destination: "/sys/fs/cgroup",
        types: &["cgroup", "cgroup2"],
        accepted: &[
            "nosuid", "noexec", "nodev", "relatime", "ro", "private", "rprivate",
        ],
        required: Some("ro"),
    },
];

/// What a mount option does to a mount's attributes (`mount_setattr(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Sets these attributes.
    Set(MountAttr),
    /// Clears them.
    Clear(MountAttr),
    /// Makes this the access-time mode (empty: `relatime`, the kernel's default).
    Atime(MountAttr),
    /// Sets the propagation type.
    Propagate(Propagation),
    /// Nothing: Palisade applies it anyway.
    None,
}

/// The option `o` without its `r` prefix (the recursive form), and whether it had one; `None`
/// for an option that is no attribute, access-time mode or propagation type.
fn effect(o: &str) -> Option<(Effect, bool)> {
    let of = |o: &str| {
        Some(match o {
            "ro" => Effect::Set(MountAttr::RDONLY),
            "rw" => Effect::Clear(MountAttr::RDONLY),
            "nosuid" => Effect::Set(MountAttr::NOSUID),
            "suid" => Effect::Clear(MountAttr::NOSUID),
            "noexec" => Effect::Set(MountAttr::NOEXEC),
            "exec" => Effect::Clear(MountAttr::NOEXEC),
            "nosymfollow" => Effect::Set(MountAttr::NOSYMFOLLOW),
            "symfollow" => Effect::Clear(MountAttr::NOSYMFOLLOW),
            "nodiratime" => Effect::Set(MountAttr::NODIRATIME),
            "diratime" => Effect::Clear(MountAttr::NODIRATIME),
            "noatime" => Effect::Atime(MountAttr::NOATIME),
            "strictatime" | "norelatime" => Effect::Atime(MountAttr::STRICTATIME),
            "relatime" | "atime" | "nostrictatime" => Effect::Atime(MountAttr::empty()),
            "private" => Effect::Propagate(Propagation::Private),
            "shared" => Effect::Propagate(Propagation::Shared),
            "slave" => Effect::Propagate(Propagation::Slave),
            "unbindable" => Effect::Propagate(Propagation::Unbindable),
            "nodev" => Effect::None,
            _ => return None,
        })
    };
    match of(o) {
        Some(e) => Some((e, false)),
        // `rro`, `rnosuid`, `rprivate`, … (and not `rw`, which is `of` already).
        None => o.strip_prefix('r').and_then(of).map(|e| (e, true)),
    }
}

/// Applies `effect` to `change`, the later option winning over an earlier one.
fn apply_effect(change: &mut MountAttrChange, effect: Effect) {
    match effect {
        Effect::Set(a) => {
            change.set |= a;
            change.clear -= a;
        }
        Effect::Clear(a) => {
            change.clear |= a;
            change.set -= a;
        }
        Effect::Atime(mode) => {
            change.clear |= MountAttr::ATIME_MASK;
            change.set -= MountAttr::ATIME_MASK;
            change.set |= mode;
        }
        Effect::Propagate(p) => change.propagation = Some(p),
        Effect::None => {}
    }
}

/// A number of `tmpfs(5)`'s options: decimal, with an optional `k`, `m` or `g` suffix.
fn tmpfs_number(value: &str) -> Option<u64> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_lowercase()),
        _ => (value, 'b'),
    };
    let shift = match unit {
        'b' => 0,
        'k' => 10,
        'm' => 20,
        'g' => 30,
        _ => return None,
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_shl(shift).filter(|v| v >> shift == n)
}

/// A tmpfs mount: `mode=` (octal), `size=` and `nr_inodes=` (with a `k`, `m` or `g` suffix,
/// as `tmpfs(5)` takes them), `uid=`, `gid=`, `noexec`, and the attributes and propagation
/// of [`effect`]; `nosuid` and `nodev` (always applied) accepted; any other option refused
/// by name.
fn tmpfs(field: &str, destination: &Path, options: &[String]) -> Result<(Tmpfs, TmpfsOptions)> {
    let mut t = Tmpfs::new(destination);
    let mut extra = TmpfsOptions::default();
    for (j, o) in options.iter().enumerate() {
        let bad = || {
            unsupported(
                format!("{field}.options[{j}]"),
                o,
                "Palisade cannot mount a tmpfs with this option (it is always nosuid and nodev)",
            )
        };
        let id = |v: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|&n| n != u32::MAX)
                .ok_or_else(bad)
        };
        if let Some(mode) = o.strip_prefix("mode=") {
            t.mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
        } else if let Some(size) = o.strip_prefix("size=") {
            t.size = Some(tmpfs_number(size).ok_or_else(bad)?);
        } else if let Some(n) = o.strip_prefix("nr_inodes=") {
            extra.nr_inodes = Some(tmpfs_number(n).filter(|&n| n > 0).ok_or_else(bad)?);
        } else if let Some(uid) = o.strip_prefix("uid=") {
            extra.uid = Some(id(uid)?);
        } else if let Some(gid) = o.strip_prefix("gid=") {
            extra.gid = Some(id(gid)?);
        } else {
            // A tmpfs has no mounts below it yet: `rro` is `ro`.
            match effect(o) {
                Some((Effect::Set(a), _)) if a == MountAttr::NOEXEC => t.noexec = true,
                Some((Effect::Clear(a), _)) if a == MountAttr::NOEXEC => t.noexec = false,
                Some((Effect::Set(a), _)) if a == MountAttr::NOSUID => {}
                Some((Effect::Clear(a), _)) if a == MountAttr::NOSUID => return Err(bad()),
                Some((e, _)) => apply_effect(&mut extra.attrs, e),
                None => return Err(bad()),
            }
        }
    }
    Ok((t, extra))
}

/// What an entry of `mounts` became.
enum Kind {
    Standard(usize),
    Bind,
    Tmpfs,
}

/// Applies `root`, `mounts`, `linux.rootfsPropagation`, `maskedPaths`, `readonlyPaths` and
/// `linux.devices`. Runs after the `linux` module's `apply`, whose device policy the device
/// nodes' rules are appended to.
pub(super) fn apply(bundle: &Bundle, _process: &Process, b: &mut SandboxBuilder) -> Result<()> {
    let default = Linux::default();
    let linux = bundle.spec.linux().as_ref().unwrap_or(&default);
    let mut rootfs = Rootfs::dir(bundle.root_dir()?);
    if bundle
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        rootfs = rootfs.read_only(true);
    }
    if let Some(propagation) = root_propagation(bundle, linux)? {
        rootfs = rootfs.root_propagation(propagation.0, propagation.1);
    }
    let mounts = bundle.spec.mounts().as_deref().unwrap_or_default();
    let mut seen: Vec<(usize, Kind, PathBuf)> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        let destination = m.destination();
        if !destination.is_absolute() {
            return Err(bundle.config(format!(
                "{field}.destination {:?} is not an absolute path",
                destination.display()
            )));
        }
        let options = m.options().as_deref().unwrap_or_default();
        let typ = m.typ().as_deref().unwrap_or("");
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let which = if m.uid_mappings().is_some() {
            Some("uidMappings")
        } else {
            m.gid_mappings().as_ref().map(|_| "gidMappings")
        };
        if let (Some(which), false) = (which, bind) {
            return Err(unsupported(
                format!("{field}.{which}"),
                destination.display(),
                "Palisade id-maps bind mounts only",
            ));
        }
        // An engine's `/dev/shm` bind (podman's directory, a CRI pod's shared one) is bound
        // over Palisade's own, so that a pod's containers share it, as with runc.
        let kind = if bind {
            rootfs = rootfs.volume_with(volume(bundle, linux, &field, m)?);
            Kind::Bind
        } else if let Some(s) = standard(destination, typ) {
            check_options(&field, options, STANDARD[s].accepted, &[])?;
            if let Some(required) = STANDARD[s].required {
                if !options.iter().any(|o| o == required) {
                    return Err(unsupported(
                        format!("{field}.options"),
                        format!("{typ} at {} without {required}", destination.display()),
                        "Palisade mounts it read-only",
                    ));
                }
            }
            if seen
                .iter()
                .any(|(_, k, _)| matches!(k, Kind::Standard(t) if *t == s))
            {
                return Err(unsupported(
                    field,
                    destination.display(),
                    "mounted twice: Palisade mounts its own once",
                ));
            }
            Kind::Standard(s)
        } else if typ == "tmpfs" {
            let (t, extra) = tmpfs(&field, destination, options)?;
            rootfs = rootfs.tmpfs_with_options(t, extra);
            Kind::Tmpfs
        } else {
            return Err(unsupported(
                format!("{field}.type"),
                format!("{typ:?} at {}", destination.display()),
                "Palisade mounts only bind mounts, tmpfs and its own kernel file systems",
            ));
        };
        check_order(&field, &kind, destination, &seen)?;
        seen.push((i, kind, destination.to_owned()));
    }
    rootfs = masks(bundle, linux, rootfs)?;
    for (i, d) in linux.devices().iter().flatten().enumerate() {
        if let Some((device, rule)) = device(bundle, i, d)? {
            rootfs = rootfs.device(device);
            if let Some(rule) = rule {
                b.device(rule);
            }
        }
    }
    b.rootfs(rootfs);
    Ok(())
}

/// `linux.rootfsPropagation`: every mount of the container is made private first, in its own
/// mount namespace, so `private` and `slave` (and their `r` forms) leave them so: nothing
/// propagates to the host, nor from it once the container runs. `shared` and `unbindable`
/// (`rshared`, `runbindable` for every mount) are given to the root once it is built: a shared
/// root is shared with the mount namespaces made from the container's, never with the host's.
fn root_propagation(bundle: &Bundle, linux: &Linux) -> Result<Option<(Propagation, bool)>> {
    Ok(match linux.rootfs_propagation().as_deref().unwrap_or("") {
        "" | "private" | "rprivate" | "slave" | "rslave" => None,
        "shared" => Some((Propagation::Shared, false)),
        "rshared" => Some((Propagation::Shared, true)),
        "unbindable" => Some((Propagation::Unbindable, false)),
        "runbindable" => Some((Propagation::Unbindable, true)),
        other => {
            return Err(bundle.config(format!(
                "linux.rootfsPropagation {other:?} is no propagation type (private, slave, \
                 shared, unbindable, or one of them prefixed with r)"
            )))
        }
    })
}

/// The index in [`STANDARD`] of Palisade's mount at `destination` of type `typ`.
fn standard(destination: &Path, typ: &str) -> Option<usize> {
    STANDARD
        .iter()
        .position(|s| Path::new(s.destination) == destination && s.types.contains(&typ))
}

/// Refuses the first option that is neither in `accepted` nor in `also`.
fn check_options(field: &str, options: &[String], accepted: &[&str], also: &[&str]) -> Result<()> {
    match options
        .iter()
        .position(|o| !accepted.contains(&o.as_str()) && !also.contains(&o.as_str()))
    {
        Some(j) => Err(unsupported(
            format!("{field}.options[{j}]"),
            &options[j],
            "Palisade cannot mount with this option",
        )),
        None => Ok(()),
    }
}

/// A bind mount: a volume, its options applied (see the [module](self) docs), or refused by
/// name.
fn volume(bundle: &Bundle, linux: &Linux, field: &str, m: &Mount) -> Result<Volume> {
    let options = m.options().as_deref().unwrap_or_default();
    let source = m
        .source()
        .as_ref()
        .ok_or_else(|| bundle.config(format!("{field}: a bind mount needs a source")))?;
    let source = bundle.dir.join(source);
    // The host's path, trusted (the bundle names it); only checked to exist here, and to be
    // no device node, which a nodev mount could not open.
    let meta = std::fs::metadata(&source).map_err(|e| Error::Bundle {
        path: source.clone(),
        source: e,
    })?;
    {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_char_device() || meta.file_type().is_block_device() {
            return Err(unsupported(
                format!("{field}.source"),
                source.display(),
                "Palisade mounts volumes nodev: a device node reaches the container only \
                 through linux.devices",
            ));
        }
    }
    let mut v = Volume::new(source, m.destination(), Access::ReadWrite);
    v.recursive = options.iter().any(|o| o == "rbind");
    v.id_map = id_map(bundle, linux, field, m)?;
    for (j, o) in options.iter().enumerate() {
        match (o.as_str(), effect(o)) {
            ("bind" | "rbind" | "idmap" | "ridmap", _) => {}
            // Palisade's own read-only: every mount of the tree.
            ("ro", _) => v.read_only = true,
            ("rw", Some((e, _))) => {
                v.read_only = false;
                apply_effect(&mut v.top, e);
            }
            (_, Some((e, true))) => apply_effect(&mut v.tree, e),
            (_, Some((e, false))) => apply_effect(&mut v.top, e),
            (_, None) => {
                let reason = match o.as_str() {
                    "dev" | "rdev" => {
                        "Palisade mounts volumes nodev: a device node reaches the container \
                         only through linux.devices"
                    }
                    _ => "Palisade cannot bind with this option",
                };
                return Err(unsupported(format!("{field}.options[{j}]"), o, reason));
            }
        }
    }
    Ok(v)
}

/// Palisade mounts its own file systems first, then the bind mounts and tmpfs in the bundle's
/// order: refuses an entry whose place in that order would hide what the bundle's order shows,
/// or the reverse.
fn check_order(
    field: &str,
    kind: &Kind,
    dest: &Path,
    seen: &[(usize, Kind, PathBuf)],
) -> Result<()> {
    // Palisade's rank of each kind of mount.
    let rank = |k: &Kind| match k {
        Kind::Standard(_) => 0,
        Kind::Bind | Kind::Tmpfs => 1,
    };
    for (j, earlier, earlier_dest) in seen {
        let nested = dest.starts_with(earlier_dest) || earlier_dest.starts_with(dest);
        if nested && rank(earlier) > rank(kind) {
            return Err(unsupported(
                field,
                format!(
                    "{} (nested with mounts[{j}] at {})",
                    dest.display(),
                    earlier_dest.display()
                ),
                "Palisade would mount the two in the other order (its own kernel file \
                 systems before the bundle's bind mounts and tmpfs)",
            ));
        }
    }
    Ok(())
}

/// `linux.maskedPaths` and `readonlyPaths`, against Palisade's own masks: none at all when
/// both are empty; otherwise each must be among Palisade's (a path Palisade masks counts as
/// read-only too) or missing on this kernel (which makes it a no-op, as in runc).
fn masks(bundle: &Bundle, linux: &Linux, rootfs: Rootfs) -> Result<Rootfs> {
    let masked = linux.masked_paths().as_deref().unwrap_or_default();
    let read_only = linux.readonly_paths().as_deref().unwrap_or_default();
    if masked.is_empty() && read_only.is_empty() {
        return Ok(rootfs.mask_kernel_paths(false));
    }
    let missing = |path: &str| {
        (path.starts_with("/proc/") || path.starts_with("/sys/")) && !Path::new(path).exists()
    };
    for (field, list, covered) in [
        ("linux.maskedPaths", masked, &[MASKED_PATHS][..]),
        (
            "linux.readonlyPaths",
            read_only,
            &[READ_ONLY_PATHS, MASKED_PATHS][..],
        ),
    ] {
        for (i, path) in list.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(bundle.config(format!("{field}[{i}] {path:?} is not absolute")));
            }
            if !covered.iter().any(|set| set.contains(&path.as_str())) && !missing(path) {
                return Err(unsupported(
                    format!("{field}[{i}]"),
                    path,
                    "Palisade masks a fixed set of kernel paths, which does not include this one",
                ));
            }
        }
    }
    Ok(rootfs)
}

/// A bind mount's id maps: its `uidMappings` and `gidMappings` (both, or neither), or with an
/// `idmap`/`ridmap` option and no maps of its own, the container's `linux.uidMappings` and
/// `gidMappings`, as the runtime specification says. `containerID` is the id the file system
/// stores, `hostID` the one the mount shows (the maps of the user namespace the mount is mapped
/// through, as runc writes them); `ridmap` maps every mount of the bound tree.
fn id_map(bundle: &Bundle, linux: &Linux, field: &str, m: &Mount) -> Result<Option<MountIdMap>> {
    let options = m.options().as_deref().unwrap_or_default();
    let recursive = options.iter().any(|o| o == "ridmap");
    let asked = recursive || options.iter().any(|o| o == "idmap");
    let (uid, gid, whose) = match (m.uid_mappings(), m.gid_mappings()) {
        (Some(u), Some(g)) => (u, g, field.to_owned()),
        (None, None) if asked => match (linux.uid_mappings(), linux.gid_mappings()) {
            (Some(u), Some(g)) => (u, g, "linux".to_owned()),
            _ => {
                return Err(bundle.config(format!(
                    "{field}: an idmap option without maps of its own needs the container's \
                     linux.uidMappings and gidMappings"
                )))
            }
        },
        (None, None) => return Ok(None),
        _ => return Err(bundle.config(format!("{field}: uidMappings and gidMappings go together"))),
    };
    let ranges = |maps: &[LinuxIdMapping]| {
        maps.iter()
            .map(|r| IdRange {
                stored: r.container_id(),
                shown: r.host_id(),
                count: r.size(),
            })
            .collect::<Vec<_>>()
    };
    let map = MountIdMap {
        uid: ranges(uid),
        gid: ranges(gid),
        recursive,
    };
    if map.uid.is_empty() || map.gid.is_empty() {
        return Err(bundle.config(format!("{whose}: an id map is empty")));
    }
    Ok(Some(map))
}

/// The device nodes Palisade's `/dev` always has (bound from the host's: mode 0666, owned by
/// root), by name, type and number.
const NODES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The largest major and minor numbers of Linux's device numbers (12 and 20 bits,
/// `makedev(3)`).
const MAX_MAJOR: i64 = (1 << 12) - 1;
const MAX_MINOR: i64 = (1 << 20) - 1;

/// An entry of `linux.devices`: `None` for a node Palisade's `/dev` has anyway, as it has it;
/// else the [`Device`] and, for a character or block device, the rule appended to the device
/// policy (`rwm` of exactly it, as runc appends one). `fileMode` defaults to `0666`, `uid` and
/// `gid` to 0. The path must be absolute, without `.` or `..`: it is resolved inside the root,
/// symbolic links included, never out of it.
fn device(
    bundle: &Bundle,
    i: usize,
    d: &LinuxDevice,
) -> Result<Option<(Device, Option<DeviceRule>)>> {
    let field = format!("linux.devices[{i}]");
    let mode = d.file_mode().unwrap_or(0o666);
    let (uid, gid) = (d.uid().unwrap_or(0), d.gid().unwrap_or(0));
    let same = d.typ() == LinuxDeviceType::C
        && NODES.iter().any(|&(path, major, minor)| {
            Path::new(path) == d.path()
                && d.major() == i64::from(major)
                && d.minor() == i64::from(minor)
        })
        && mode & 0o7777 == 0o666
        && (uid, gid) == (0, 0);
    if same {
        return Ok(None);
    }
    let path = d.path();
    let clean = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && path.parent().is_some();
    if !clean {
        return Err(bundle.config(format!(
            "{field}.path {:?} must be an absolute path without `.` or `..`",
            path.display()
        )));
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
        LinuxDeviceType::B => DeviceKind::Block,
        LinuxDeviceType::P => DeviceKind::Fifo,
        LinuxDeviceType::A => {
            return Err(bundle.config(format!(
                "{field}.type \"a\" is no kind of node (c, b, u or p)"
            )))
        }
    };
    let (major, minor) = if kind == DeviceKind::Fifo {
        (0, 0)
    } else {
        let number = |what: &str, n: i64, max: i64| {
            u32::try_from(n).ok().filter(|_| n <= max).ok_or_else(|| {
                bundle.config(format!("{field}.{what} {n} is out of range (0 to {max})"))
            })
        };
        (
            number("major", d.major(), MAX_MAJOR)?,
            number("minor", d.minor(), MAX_MINOR)?,
        )
    };
    if mode & !0o777 != 0 {
        return Err(unsupported(
            format!("{field}.fileMode"),
            format!("{mode:o}"),
            "Palisade makes device nodes with permission bits only (at most 0777)",
        ));
    }
    let rule = match kind {
        DeviceKind::Char => Some(DeviceRule::allow_char(
            Some(major),
            Some(minor),
            DeviceAccess::RWM,
        )),
        DeviceKind::Block => Some(DeviceRule::allow_block(
            Some(major),
            Some(minor),
            DeviceAccess::RWM,
        )),
        DeviceKind::Fifo => None,
    };
    Ok(Some((
        Device {
            guest: path.to_owned(),
            kind,
            major,
            minor,
            mode,
            uid,
            gid,
        },
        rule,
    )))
}
