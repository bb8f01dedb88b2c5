//! `linux`: namespaces, id maps, the cgroup's place, seccomp and the fields Palisade refuses.

use std::path::Path;

use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};
use palisade::cgroup::Resource;
use palisade::seccomp::JsonOptions;
use palisade::{
    IdMap, IdMapping, Namespace, Network, Offset, Profile, SandboxBuilder, TimeOffsets,
};

use super::{selinux_enabled, unsupported, Bundle};
use crate::error::Result;

/// Applies `linux` (its mount-related fields are the `mounts` module's).
pub(super) fn apply(bundle: &Bundle, b: &mut SandboxBuilder) -> Result<()> {
    let default = Linux::default();
    let linux = bundle.spec.linux().as_ref().unwrap_or(&default);
    refuse_unsupported(linux)?;
    // Checked at build: only those of the container's own namespaces.
    for (key, value) in linux.sysctl().iter().flatten() {
        b.sysctl(key.clone(), value.clone());
    }
    namespaces(bundle, linux, b)?;
    if let Some(resources) = linux.resources() {
        for resource in Bundle::cgroup_resources(resources, &bundle.config_path())? {
            match resource {
                // The builder starts its device policy from Docker's; this one replaces it.
                Resource::Devices(policy) => b.devices(policy),
                other => b.resource(other),
            };
        }
    }
    if let Some(path) = linux.cgroups_path() {
        cgroups_path(path, b)?;
    }
    match linux.seccomp() {
        Some(seccomp) => {
            if let Some(listener) = seccomp.listener_path() {
                return Err(unsupported(
                    "linux.seccomp.listenerPath",
                    listener.display(),
                    "Palisade hands the notification listener to its caller, not to an agent",
                ));
            }
            let json = serde_json::to_string(seccomp)
                .map_err(|e| bundle.config(format!("linux.seccomp: {e}")))?;
            let profile = Profile::from_json(&json, &JsonOptions::default())
                .map_err(|e| bundle.config(format!("linux.seccomp: {e}")))?;
            b.seccomp(profile);
        }
        // No filter at all, as runc installs none.
        None => {
            b.seccomp(Profile::unconfined());
        }
    }
    Ok(())
}

/// Fields Palisade has no equivalent for: refused when set.
fn refuse_unsupported(linux: &Linux) -> Result<()> {
    if let Some((name, _)) = linux.net_devices().iter().flatten().next() {
        return Err(unsupported(
            format!("linux.netDevices.{name}"),
            "{…}",
            "Palisade does not move network devices into the container",
        ));
    }
    if let Some(rdt) = linux.intel_rdt() {
        return Err(unsupported(
            "linux.intelRdt",
            format!("{rdt:?}"),
            "Palisade does not configure resctrl",
        ));
    }
    if let Some(policy) = linux.memory_policy() {
        return Err(unsupported(
            "linux.memoryPolicy",
            format!("{policy:?}"),
            "Palisade does not set NUMA memory policies (set_mempolicy(2))",
        ));
    }
    // `linux.personality` is applied with the process (`process::apply`).
    if let Some(label) = linux.mount_label().as_deref().filter(|l| !l.is_empty()) {
        if selinux_enabled() {
            return Err(unsupported(
                "linux.mountLabel",
                label,
                "Palisade does not apply SELinux labels, and SELinux is enabled here",
            ));
        }
    }
    Ok(())
}

/// `linux.namespaces`, the id maps and the time offsets.
fn namespaces(bundle: &Bundle, linux: &Linux, b: &mut SandboxBuilder) -> Result<()> {
    let mut set = Namespace::empty();
    let mut network = Network::host();
    let mut joined_user = None;
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let flag = match ns.typ() {
            LinuxNamespaceType::Mount => Namespace::MOUNT,
            LinuxNamespaceType::Cgroup => Namespace::CGROUP,
            LinuxNamespaceType::Uts => Namespace::UTS,
            LinuxNamespaceType::Ipc => Namespace::IPC,
            LinuxNamespaceType::User => Namespace::USER,
            LinuxNamespaceType::Pid => Namespace::PID,
            LinuxNamespaceType::Network => Namespace::NET,
            LinuxNamespaceType::Time => Namespace::TIME,
        };
        if set.contains(flag) {
            return Err(bundle.config(format!(
                "linux.namespaces[{i}]: namespace {} is listed twice",
                ns.typ()
            )));
        }
        match ns.path() {
            Some(path) if flag == Namespace::NET => network = Network::join_path(path),
            // As a pod's containers share the pause container's; a mount namespace is refused.
            Some(path) => {
                let field = format!("linux.namespaces[{i}].path");
                if flag == Namespace::MOUNT {
                    return Err(unsupported(
                        field,
                        path.display(),
                        "Palisade sets up the container's root in a mount namespace of its own",
                    ));
                }
                let found = palisade::ns::NsFile::open_path(path)
                    .map_err(|e| bundle.config(format!("{field}: {e}")))?
                    .kind();
                if found != flag {
                    return Err(bundle.config(format!(
                        "{field}: {} is a {} namespace, not a {} namespace",
                        path.display(),
                        found.proc_name().unwrap_or("different"),
                        ns.typ()
                    )));
                }
                if flag == Namespace::USER {
                    joined_user = Some(path.clone());
                }
                b.join_namespace(path);
            }
            None if flag == Namespace::NET => {
                set |= flag;
                network = Network::none();
            }
            None => set |= flag,
        }
    }
    if !set.contains(Namespace::MOUNT) {
        return Err(unsupported(
            "linux.namespaces",
            "no mount namespace",
            "Palisade needs a mount namespace to give the container its root file system",
        ));
    }
    let user = set.contains(Namespace::USER);
    for (field, mappings) in [
        ("linux.uidMappings", linux.uid_mappings()),
        ("linux.gidMappings", linux.gid_mappings()),
    ] {
        let Some(mappings) = mappings.as_deref().filter(|m| !m.is_empty()) else {
            continue;
        };
        let map = id_map(mappings).map_err(|e| bundle.config(format!("{field}: {e}")))?;
        if let Some(path) = &joined_user {
            // A joined namespace has its maps: those given must be them (an engine gives them
            // for its id-mapped mounts), and are not written again.
            joined_maps_match(path, field, &map)?;
            continue;
        }
        if !user {
            return Err(bundle.config(format!("{field} is set without a user namespace")));
        }
        if field == "linux.uidMappings" {
            b.uid_map(map);
        } else {
            b.gid_map(map);
        }
    }
    if let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) {
        if !set.contains(Namespace::TIME) {
            return Err(bundle.config("linux.timeOffsets is set without a time namespace"));
        }
        let mut t = TimeOffsets::default();
        for (clock, offset) in offsets {
            let field = format!("linux.timeOffsets.{clock}");
            let value = Offset::new(offset.secs().unwrap_or(0), offset.nanosecs().unwrap_or(0))
                .map_err(|e| bundle.config(format!("{field}: {e}")))?;
            match clock.as_str() {
                "monotonic" => t.monotonic = value,
                "boottime" => t.boottime = value,
                _ => {
                    return Err(unsupported(
                        field,
                        clock,
                        "a time namespace offsets only the monotonic and boottime clocks \
                         (time_namespaces(7))",
                    ))
                }
            }
        }
        b.time_offsets(t);
    }
    b.namespaces(set).network(network);
    Ok(())
}

/// Checks that the user namespace joined at `path` has the map `map` of `field`: read from its
/// process's `uid_map` or `gid_map` (`user_namespaces(7)`), so only a `/proc/<pid>/ns/user`
/// path can be checked.
fn joined_maps_match(path: &Path, field: &str, map: &IdMap) -> Result<()> {
    let file = if field == "linux.uidMappings" {
        "uid_map"
    } else {
        "gid_map"
    };
    let refuse = |reason| unsupported(field, path.display(), reason);
    let process = path
        .strip_prefix("/proc")
        .ok()
        .and_then(|rest| rest.to_str())
        .and_then(|rest| rest.strip_suffix("/ns/user"))
        .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            refuse("the maps of a user namespace joined by a path other than /proc/<pid>/ns/user cannot be checked")
        })?;
    let text = std::fs::read_to_string(format!("/proc/{process}/{file}"))
        .map_err(|_| refuse("the joined namespace's maps cannot be read"))?;
    let has = IdMap::new(text.lines().filter_map(|line| {
        let mut n = line.split_whitespace().map(|n| n.parse::<u32>().ok());
        Some(IdMapping::new(n.next()??, n.next()??, n.next()??))
    }))
    .map_err(|_| refuse("the joined namespace's maps cannot be read"))?;
    if has.mappings() != map.mappings() {
        return Err(refuse(
            "differs from the maps of the user namespace joined by linux.namespaces",
        ));
    }
    Ok(())
}

fn id_map(mappings: &[LinuxIdMapping]) -> palisade::Result<IdMap> {
    IdMap::new(
        mappings
            .iter()
            .map(|m| IdMapping::new(m.container_id(), m.host_id(), m.size())),
    )
    .map_err(palisade::Error::from)
}

/// A plain absolute path: the sandbox's group goes beneath its parent.
fn cgroups_path(path: &Path, b: &mut SandboxBuilder) -> Result<()> {
    let text = path.to_string_lossy();
    // Every component a group's name: `..` would lead out of the cgroup file system.
    let plain = path.components().all(|c| {
        matches!(c, std::path::Component::RootDir)
            || matches!(c, std::path::Component::Normal(n) if !n.to_string_lossy().starts_with("cgroup."))
    });
    if !plain || text.contains("//") {
        return Err(unsupported(
            "linux.cgroupsPath",
            text,
            "each component must be a cgroup's name (no `.`, `..` or `cgroup.*`)",
        ));
    }
    if text.contains(':') {
        return Err(unsupported(
            "linux.cgroupsPath",
            text,
            "systemd's slice:prefix:name form is not supported (Palisade manages cgroupfs \
             groups itself)",
        ));
    }
    let parent = path
        .is_absolute()
        .then(|| path.parent())
        .flatten()
        .ok_or_else(|| {
            unsupported(
                "linux.cgroupsPath",
                text.clone(),
                "an absolute path below the root group is needed",
            )
        })?;
    b.cgroup_parent(parent.to_string_lossy());
    Ok(())
}

/// The parent group of `linux.cgroupsPath`, where the container's group goes, if it names one.
pub(crate) fn cgroup_parent(path: &Path) -> Option<String> {
    if path.to_string_lossy().contains(':') || !path.is_absolute() {
        return None;
    }
    path.parent().map(|p| p.to_string_lossy().into_owned())
}
