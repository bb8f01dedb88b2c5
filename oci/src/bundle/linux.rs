//! `linux`: namespaces, id maps, resources, cgroup, seccomp and the fields Palisade refuses.

use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::{
    Linux, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxIdMapping, LinuxMemory,
    LinuxNamespaceType, LinuxPersonalityDomain, LinuxResources,
};
use palisade::cgroup::{
    Bytes, CpuMax, CpuSet, DeviceAccess, DeviceKind, DevicePolicy, DeviceRule, Max, Resource,
    Weight,
};
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
    if let Some(p) = linux.personality() {
        let flags = p.flags().as_deref().unwrap_or_default();
        if p.domain() != LinuxPersonalityDomain::PerLinux || !flags.is_empty() {
            return Err(unsupported(
                "linux.personality",
                format!("{} {flags:?}", p.domain()),
                "only the native LINUX personality without flags is supported",
            ));
        }
    }
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
            // As a pod's containers share the pause container's: its kind is checked against
            // the file when the sandbox is built.
            Some(path) if (Namespace::IPC | Namespace::UTS | Namespace::CGROUP).contains(flag) => {
                b.join_namespace(path);
            }
            Some(path) => {
                return Err(unsupported(
                    format!("linux.namespaces[{i}].path"),
                    path.display(),
                    "Palisade joins an existing namespace by path only for the network, IPC, \
                     UTS and cgroup kinds",
                ))
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
        if !user {
            return Err(bundle.config(format!("{field} is set without a user namespace")));
        }
        let map = id_map(mappings).map_err(|e| bundle.config(format!("{field}: {e}")))?;
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

fn id_map(mappings: &[LinuxIdMapping]) -> palisade::Result<IdMap> {
    IdMap::new(
        mappings
            .iter()
            .map(|m| IdMapping::new(m.container_id(), m.host_id(), m.size())),
    )
    .map_err(palisade::Error::from)
}

impl Bundle {
    /// `linux.resources` as the cgroup resources Palisade applies: what `create` gives the
    /// sandbox's builder, and what `update` applies to a running sandbox
    /// ([`palisade::Handle::update`]). A setting Palisade cannot apply is refused by its JSON
    /// path (`linux.resources.blockIO`) with [`Error::Unsupported`](crate::Error::Unsupported);
    /// a value out of range is an [`Error::Config`](crate::Error::Config) about `source`, the
    /// file the resources came from.
    ///
    /// As runc, a zero (or absent) value leaves a limit as it is; a pids limit below zero
    /// lifts it (`pids.max` of `max`, see `cgroups(7)`).
    pub fn cgroup_resources(r: &LinuxResources, source: &Path) -> Result<Vec<Resource>> {
        let mut out = Vec::new();
        let refuse = |field: &str, value: String| {
            Err(unsupported(
                format!("linux.resources.{field}"),
                value,
                "Palisade does not apply this limit",
            ))
        };
        if let Some(io) = r.block_io() {
            return refuse("blockIO", format!("{io:?}"));
        }
        if let Some(h) = r.hugepage_limits().as_ref().filter(|h| !h.is_empty()) {
            return refuse("hugepageLimits", format!("{h:?}"));
        }
        if let Some(n) = r.network() {
            return refuse("network", format!("{n:?}"));
        }
        if let Some(rdma) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
            return refuse("rdma", format!("{rdma:?}"));
        }
        if let Some(u) = r.unified().as_ref().filter(|m| !m.is_empty()) {
            return refuse("unified", format!("{u:?}"));
        }
        if let Some(m) = r.memory() {
            memory(source, m, &mut out)?;
        }
        if let Some(c) = r.cpu() {
            cpu(source, c, &mut out)?;
        }
        match r.pids().map(|p| p.limit()) {
            Some(limit) if limit > 0 => {
                out.push(Resource::PidsMax(Max::Limit(limit.unsigned_abs())))
            }
            Some(limit) if limit < 0 => out.push(Resource::PidsMax(Max::Unlimited)),
            _ => {}
        }
        if let Some(rules) = r.devices() {
            out.push(Resource::Devices(device_policy(rules)?));
        }
        Ok(out)
    }
}

/// An [`Error::Config`](crate::Error::Config) about the file `source`.
fn config_error(source: &Path, message: String) -> crate::Error {
    crate::Error::Config {
        path: source.to_owned(),
        message,
    }
}

fn memory(source: &Path, m: &LinuxMemory, out: &mut Vec<Resource>) -> Result<()> {
    let positive = |v: Option<i64>| v.filter(|&v| v > 0).map(i64::unsigned_abs);
    let limit = positive(m.limit());
    if let Some(limit) = limit {
        out.push(Resource::MemoryMax(Max::Limit(Bytes(limit))));
    }
    // runc's conversion for cgroup v2: the reservation is memory.low.
    if let Some(low) = positive(m.reservation()) {
        out.push(Resource::MemoryLow(Bytes(low)));
    }
    // The spec's swap is memory plus swap; cgroup v2 limits swap alone.
    match (m.swap(), limit) {
        (None | Some(0), _) => {}
        (Some(-1), _) => {
            if limit.is_some() {
                out.push(Resource::MemorySwapMax(Max::Unlimited));
            }
        }
        (Some(swap), Some(limit)) if swap > 0 && swap.unsigned_abs() >= limit => {
            out.push(Resource::MemorySwapMax(Max::Limit(Bytes(
                swap.unsigned_abs() - limit,
            ))));
        }
        (Some(swap), _) => {
            return Err(config_error(
                source,
                format!(
                    "linux.resources.memory.swap {swap} must be -1, or at least memory.limit \
                     (it limits memory and swap together)"
                ),
            ))
        }
    }
    let refuse = |field: &str, value: String, reason| {
        Err(unsupported(
            format!("linux.resources.memory.{field}"),
            value,
            reason,
        ))
    };
    if let Some(k) = m.kernel() {
        return refuse(
            "kernel",
            k.to_string(),
            "kernel memory limits are gone from the kernel",
        );
    }
    if let Some(k) = m.kernel_tcp() {
        return refuse(
            "kernelTCP",
            k.to_string(),
            "Palisade does not limit TCP buffer memory",
        );
    }
    if let Some(s) = m.swappiness() {
        return refuse(
            "swappiness",
            s.to_string(),
            "cgroup v2 has no per-group swappiness",
        );
    }
    if m.disable_oom_killer() == Some(true) {
        return refuse(
            "disableOOMKiller",
            "true".to_owned(),
            "Palisade keeps the OOM killer",
        );
    }
    Ok(())
}

fn cpu(source: &Path, c: &LinuxCpu, out: &mut Vec<Resource>) -> Result<()> {
    let bad = |field: &str, e: palisade::cgroup::Error| {
        config_error(source, format!("linux.resources.cpu.{field}: {e}"))
    };
    if let Some(shares) = c.shares().filter(|&s| s > 0) {
        // runc's conversion of cgroup v1 shares (2 to 262144) to a v2 weight (1 to 10000).
        let clamped = shares.clamp(2, 262_144);
        let weight = 1 + ((clamped - 2) * 9999) / 262_142;
        let weight = u16::try_from(weight)
            .map_err(|_| config_error(source, format!("linux.resources.cpu.shares {shares}")))?;
        out.push(Resource::CpuWeight(
            Weight::new(weight).map_err(|e| bad("shares", e))?,
        ));
    }
    let period = Duration::from_micros(c.period().unwrap_or(100_000));
    match c.quota() {
        Some(quota) if quota > 0 => {
            let max = CpuMax::new(Duration::from_micros(quota.unsigned_abs()), period)
                .map_err(|e| bad("quota", e))?;
            out.push(Resource::CpuMax(max));
        }
        _ if c.period().is_some() => {
            let max = CpuMax::unlimited(period).map_err(|e| bad("period", e))?;
            out.push(Resource::CpuMax(max));
        }
        _ => {}
    }
    if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        out.push(Resource::CpusetCpus(
            cpus.parse::<CpuSet>().map_err(|e| bad("cpus", e))?,
        ));
    }
    if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        let set = mems.parse::<CpuSet>().map_err(|e| bad("mems", e))?;
        out.push(Resource::CpusetMems(set));
    }
    let refuse = |field: &str, value: String| {
        Err(unsupported(
            format!("linux.resources.cpu.{field}"),
            value,
            "Palisade does not apply this CPU setting",
        ))
    };
    if let Some(v) = c.realtime_runtime().filter(|&v| v != 0) {
        return refuse("realtimeRuntime", v.to_string());
    }
    if let Some(v) = c.realtime_period().filter(|&v| v != 0) {
        return refuse("realtimePeriod", v.to_string());
    }
    if let Some(v) = c.idle().filter(|&v| v != 0) {
        return refuse("idle", v.to_string());
    }
    if let Some(v) = c.burst().filter(|&v| v != 0) {
        return refuse("burst", v.to_string());
    }
    Ok(())
}

/// The device rules in order, from nothing allowed, then the devices runc always allows
/// (which Palisade's `/dev` holds): the rules of [`DevicePolicy::docker_default`].
fn device_policy(rules: &[LinuxDeviceCgroup]) -> Result<DevicePolicy> {
    let mut policy = DevicePolicy::deny_all();
    for (i, r) in rules.iter().enumerate() {
        let field = format!("linux.resources.devices[{i}]");
        let kind = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::P => {
                return Err(unsupported(
                    format!("{field}.type"),
                    "p",
                    "a FIFO is no device the device controller knows",
                ))
            }
        };
        let number = |n: Option<i64>, what: &str| match n {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n)
                .map(Some)
                .map_err(|_| unsupported(format!("{field}.{what}"), n, "not a device number")),
        };
        let mut access = DeviceAccess::empty();
        let letters = r.access().as_deref().unwrap_or("rwm");
        for letter in letters.chars() {
            access |= match letter {
                'r' => DeviceAccess::READ,
                'w' => DeviceAccess::WRITE,
                'm' => DeviceAccess::MKNOD,
                _ => {
                    return Err(unsupported(
                        format!("{field}.access"),
                        letters,
                        "access is made of r, w and m",
                    ))
                }
            };
        }
        if letters.is_empty() {
            access = DeviceAccess::RWM;
        }
        policy.push(DeviceRule {
            allow: r.allow(),
            kind,
            major: number(r.major(), "major")?,
            minor: number(r.minor(), "minor")?,
            access,
        });
    }
    for rule in DevicePolicy::docker_default().rules() {
        policy.push(*rule);
    }
    Ok(policy)
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
