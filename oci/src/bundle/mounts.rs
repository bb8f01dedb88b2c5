//! `root`, `mounts` and the mount-related fields of `linux`: the container's root file system.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Linux, LinuxDevice, LinuxDeviceType, Mount, Process};
use palisade::overlay::rootfs::{Tmpfs, MASKED_PATHS, READ_ONLY_PATHS};
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

/// Options of a bind mount that Palisade's volumes (recursive, `nodev`, private) satisfy.
const BIND_OPTIONS: &[&str] = &[
    "bind", "rbind", "ro", "rw", "nodev", "relatime", "private", "rprivate",
];

/// The options of podman's `/dev/shm` bind mount, besides the tmpfs's own.
const SHM_BIND_OPTIONS: &[&str] = &["bind", "rbind", "private", "rprivate"];

/// Options of a tmpfs that Palisade's (`nosuid`, `nodev`) satisfy, or whose access-time
/// bookkeeping is no matter of isolation.
const TMPFS_OPTIONS: &[&str] = &[
    "nosuid",
    "nodev",
    "rw",
    "relatime",
    "strictatime",
    "noatime",
];

/// A tmpfs mount: its `mode=` (octal), `size=` (bytes, or with a `k`, `m` or `g` suffix, as
/// `tmpfs(5)` takes it) and `noexec` applied, the options Palisade's tmpfs satisfies accepted,
/// any other refused by name.
fn tmpfs(field: &str, destination: &Path, options: &[String]) -> Result<Tmpfs> {
    let mut t = Tmpfs::new(destination);
    for (j, o) in options.iter().enumerate() {
        let bad = || {
            unsupported(
                format!("{field}.options[{j}]"),
                o,
                "Palisade cannot mount a tmpfs with this option",
            )
        };
        if let Some(mode) = o.strip_prefix("mode=") {
            t.mode = u32::from_str_radix(mode, 8).map_err(|_| bad())?;
        } else if let Some(size) = o.strip_prefix("size=") {
            let (digits, unit) = match size.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => (&size[..i], c.to_ascii_lowercase()),
                _ => (size, 'b'),
            };
            let shift = match unit {
                'b' => 0,
                'k' => 10,
                'm' => 20,
                'g' => 30,
                _ => return Err(bad()),
            };
            let n: u64 = digits.parse().map_err(|_| bad())?;
            t.size = Some(
                n.checked_shl(shift)
                    .filter(|v| v >> shift == n)
                    .ok_or_else(bad)?,
            );
        } else if o == "noexec" {
            t.noexec = true;
        } else if !TMPFS_OPTIONS.contains(&o.as_str()) {
            return Err(bad());
        }
    }
    Ok(t)
}

/// What an entry of `mounts` became.
enum Kind {
    Standard(usize),
    Bind,
    Tmpfs,
}

/// Applies `root`, `mounts`, `linux.rootfsPropagation`, `maskedPaths`, `readonlyPaths` and
/// `linux.devices`.
pub(super) fn apply(bundle: &Bundle, p: &Process, b: &mut SandboxBuilder) -> Result<()> {
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
    match linux.rootfs_propagation().as_deref().unwrap_or("") {
        "" | "private" | "rprivate" | "slave" | "rslave" => {}
        other => {
            return Err(unsupported(
                "linux.rootfsPropagation",
                other,
                "Palisade's mounts are private: none propagates back to the host",
            ))
        }
    }
    let nnp = p.no_new_privileges().unwrap_or(false);
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
        let which = if m.uid_mappings().is_some() {
            Some("uidMappings")
        } else {
            m.gid_mappings().as_ref().map(|_| "gidMappings")
        };
        if let Some(which) = which {
            return Err(unsupported(
                format!("{field}.{which}"),
                destination.display(),
                "Palisade does not make id-mapped mounts",
            ));
        }
        let options = m.options().as_deref().unwrap_or_default();
        let typ = m.typ().as_deref().unwrap_or("");
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let shm = standard(destination, "tmpfs").filter(|_| destination == Path::new("/dev/shm"));
        let kind = if let (true, Some(s)) = (bind, shm) {
            // podman's `/dev/shm` is a directory of its own bound there: the container gets
            // Palisade's own instead, a tmpfs of podman's default size with the same flags.
            check_options(&field, options, STANDARD[s].accepted, SHM_BIND_OPTIONS)?;
            Kind::Standard(s)
        } else if bind {
            rootfs = volume(bundle, &field, m, nnp, rootfs)?;
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
            rootfs = rootfs.tmpfs_with(tmpfs(&field, destination, options)?);
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
        device(i, d)?;
    }
    b.rootfs(rootfs);
    Ok(())
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

/// A bind mount: a volume, if its options allow.
fn volume(bundle: &Bundle, field: &str, m: &Mount, nnp: bool, rootfs: Rootfs) -> Result<Rootfs> {
    let options = m.options().as_deref().unwrap_or_default();
    // Under no_new_privs a set-user-ID bit grants nothing (prctl(2)), so nosuid changes nothing.
    let also: &[&str] = if nnp { &["nosuid"] } else { &[] };
    check_options(field, options, BIND_OPTIONS, also)?;
    let source = m
        .source()
        .as_ref()
        .ok_or_else(|| bundle.config(format!("{field}: a bind mount needs a source")))?;
    let source = bundle.dir.join(source);
    let meta = std::fs::metadata(&source).map_err(|e| Error::Bundle {
        path: source.clone(),
        source: e,
    })?;
    if meta.file_type().is_char_device() || meta.file_type().is_block_device() {
        return Err(unsupported(
            format!("{field}.source"),
            source.display(),
            "Palisade mounts volumes nodev: a device node cannot be used through one",
        ));
    }
    let access = if options.iter().any(|o| o == "ro") {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    Ok(rootfs.volume(source, m.destination(), access))
}

/// Palisade mounts its own file systems first, then the volumes, then the tmpfs: refuses an
/// entry whose place in that order would hide what the bundle's order shows, or the reverse.
fn check_order(
    field: &str,
    kind: &Kind,
    dest: &Path,
    seen: &[(usize, Kind, PathBuf)],
) -> Result<()> {
    // Palisade's rank of each kind of mount.
    let rank = |k: &Kind| match k {
        Kind::Standard(_) => 0,
        Kind::Bind => 1,
        Kind::Tmpfs => 2,
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
                "Palisade would mount the two in the other order (its kernel file systems, \
                 then bind mounts, then tmpfs)",
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

/// An entry of `linux.devices`: accepted for a node Palisade creates anyway, as it creates it.
fn device(i: usize, d: &LinuxDevice) -> Result<()> {
    let same = d.typ() == LinuxDeviceType::C
        && NODES.iter().any(|&(path, major, minor)| {
            Path::new(path) == d.path()
                && d.major() == i64::from(major)
                && d.minor() == i64::from(minor)
        })
        && d.file_mode().is_none_or(|m| m & 0o7777 == 0o666)
        && d.uid().is_none_or(|u| u == 0)
        && d.gid().is_none_or(|g| g == 0);
    if same {
        Ok(())
    } else {
        Err(unsupported(
            format!("linux.devices[{i}]"),
            format!(
                "{} {} {}:{}",
                d.path().display(),
                d.typ().as_str(),
                d.major(),
                d.minor()
            ),
            "Palisade's /dev holds only null, zero, full, random, urandom, tty and the \
             terminals (0666, root's)",
        ))
    }
}
