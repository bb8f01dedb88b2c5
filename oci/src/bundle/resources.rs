//! `linux.resources`: the cgroup limits of `create` and `update`.

use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};
use palisade::cgroup::{
    Bytes, CpuMax, CpuSet, DeviceAccess, DeviceKind, DevicePolicy, DeviceRule, Max, Resource,
    Weight,
};

use super::{unsupported, Bundle};
use crate::error::Result;

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
