//! `linux.resources`: the cgroup limits of `create` and `update`, as typed
//! [`palisade::cgroup::Resource`]s. One mapping, [`Bundle::cgroup_resources`], serves both.
//!
//! | field | resource (cgroup v2 file; v1 file) |
//! | --- | --- |
//! | `memory.limit`, `reservation`, `swap` | `MemoryMax`, `MemoryLow`, `MemorySwapMax` (swap minus limit) |
//! | `cpu.shares`, `quota`/`period`, `cpus`, `mems` | `CpuWeight` (runc's conversion), `CpuMax`, `CpusetCpus`, `CpusetMems` |
//! | `pids.limit` | `PidsMax` |
//! | `devices` | `Devices`: the rules in order, then runc's always-allowed devices |
//! | `blockIO.weight` (10..=1000) | `IoWeight` (`io.weight`, else BFQ's `io.bfq.weight`; `blkio.bfq.weight`) |
//! | `blockIO.weightDevice[].weight` | `IoDeviceWeight` (the same files, per device) |
//! | `blockIO.throttle{Read,Write}{Bps,IOPS}Device` | one `IoMax` per device (`io.max`; `blkio.throttle.*_device`): a device's limits not given (or 0) are lifted |
//! | `hugepageLimits[]` | per page size, `HugetlbRsvdMax` and `HugetlbMax` (`hugetlb.<size>.rsvd.max` and `.max`; `hugetlb.<size>.rsvd.limit_in_bytes` and `.limit_in_bytes`) |
//! | `rdma` | `RdmaMax` per device (`rdma.max`) |
//! | `unified` | each file parsed into its typed resource ([`Resource::parse_v2`]), applied last |
//!
//! Refused by name ([`Error::Unsupported`](crate::Error::Unsupported), the field as a JSON
//! path): `blockIO.leafWeight` and `weightDevice[].leafWeight` (leaf weights were CFQ's, which
//! Linux 5.0 removed; BFQ and io.cost have none); `hugepageLimits` where the host has no
//! hugetlb controller, and a `pageSize` this kernel does not offer
//! (`/sys/kernel/mm/hugepages`); `rdma` where the host has no rdma controller; `network`
//! always (`net_cls` and `net_prio` exist on cgroup v1 only, and Palisade does not manage
//! them); `unified` unless the host is pure cgroup v2 (as runc: its files are v2's, with v2's
//! semantics), and any `unified` key that is no setting Palisade applies
//! (`linux.resources.unified.<key>`: unknown files, `cgroup.*` interface files, names with
//! `/` or starting with `.`); `memory.kernel`, `kernelTCP`, `swappiness`, `disableOOMKiller`
//! (true) and `cpu.realtimeRuntime`, `realtimePeriod`, `idle`, `burst` (non-zero). A value out
//! of range is an [`Error::Config`](crate::Error::Config) naming the field. A write the kernel
//! refuses when the resources are applied (a device it does not know, a weight on a queue
//! without a weight policy) fails `create` or `update` with the cgroup error, which names the
//! file and value; a setting whose file this kernel lacks (a weight without io.cost or BFQ) is
//! found before the first write, and changes nothing.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit, LinuxMemory,
    LinuxNetwork, LinuxRdma, LinuxResources, LinuxThrottleDevice,
};
use palisade::cgroup::{
    Backend, Bytes, Controller, CpuMax, CpuSet, Device, DeviceAccess, DeviceKind, DevicePolicy,
    DeviceRule, Hierarchy, HugePageSize, IoMax, Max, RdmaMax, Resource, Weight, MAX_MAJOR,
    MAX_MINOR,
};

use super::{unsupported, Bundle};
use crate::error::Result;

/// The host's cgroup layout, given, or detected when a field first needs it (most bundles need
/// none of it).
struct Host<'a> {
    given: Option<&'a Hierarchy>,
    detected: OnceCell<Hierarchy>,
}

impl Host<'_> {
    fn get(&self) -> Result<&Hierarchy> {
        if let Some(h) = self.given {
            return Ok(h);
        }
        if let Some(h) = self.detected.get() {
            return Ok(h);
        }
        let h = Hierarchy::detect().map_err(palisade::Error::from)?;
        Ok(self.detected.get_or_init(|| h))
    }
}

impl Bundle {
    /// `linux.resources` as the cgroup resources Palisade applies: what `create` gives the
    /// sandbox's builder, and what `update` applies to a running sandbox
    /// ([`palisade::Handle::update`]). The fields that depend on the host (`hugepageLimits`,
    /// `rdma`, `network`, `unified`) are checked against this host's cgroup layout
    /// ([`Hierarchy::detect`]); [`cgroup_resources_on`](Self::cgroup_resources_on) takes one.
    /// A setting Palisade cannot apply (here, or at all) is refused by its JSON path
    /// (`linux.resources.blockIO.leafWeight`) with
    /// [`Error::Unsupported`](crate::Error::Unsupported); a value out of range is an
    /// [`Error::Config`](crate::Error::Config) about `source`, the file the resources came
    /// from. The module documentation lists the mapping.
    ///
    /// As runc, a zero (or absent) value leaves a limit as it is; a pids limit below zero
    /// lifts it (`pids.max` of `max`, see `cgroups(7)`).
    pub fn cgroup_resources(r: &LinuxResources, source: &Path) -> Result<Vec<Resource>> {
        map(
            r,
            source,
            &Host {
                given: None,
                detected: OnceCell::new(),
            },
        )
    }

    /// [`cgroup_resources`](Self::cgroup_resources) for the host whose cgroup layout is
    /// `host` (huge page sizes are still this kernel's).
    pub fn cgroup_resources_on(
        r: &LinuxResources,
        source: &Path,
        host: &Hierarchy,
    ) -> Result<Vec<Resource>> {
        map(
            r,
            source,
            &Host {
                given: Some(host),
                detected: OnceCell::new(),
            },
        )
    }
}

/// The mapping of [`Bundle::cgroup_resources`], in the order the resources are applied.
fn map(r: &LinuxResources, source: &Path, host: &Host<'_>) -> Result<Vec<Resource>> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        memory(source, m, &mut out)?;
    }
    if let Some(c) = r.cpu() {
        cpu(source, c, &mut out)?;
    }
    match r.pids().map(|p| p.limit()) {
        Some(limit) if limit > 0 => out.push(Resource::PidsMax(Max::Limit(limit.unsigned_abs()))),
        Some(limit) if limit < 0 => out.push(Resource::PidsMax(Max::Unlimited)),
        _ => {}
    }
    if let Some(rules) = r.devices() {
        out.push(Resource::Devices(device_policy(rules)?));
    }
    if let Some(io) = r.block_io() {
        block_io(source, io, &mut out)?;
    }
    if let Some(limits) = r.hugepage_limits().as_ref().filter(|h| !h.is_empty()) {
        hugepages(source, limits, host, &mut out)?;
    }
    if let Some(devices) = r.rdma().as_ref().filter(|m| !m.is_empty()) {
        rdma(source, devices, host, &mut out)?;
    }
    if let Some(n) = r.network() {
        network(n, host)?;
    }
    if let Some(files) = r.unified().as_ref().filter(|m| !m.is_empty()) {
        // Last: as runc, a file named here overrides the typed field that sets it too.
        let pure_v2 = host.get()?.backend() == Backend::V2;
        out.extend(unified(source, files, pure_v2)?);
    }
    Ok(out)
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

/// Leaf weights were CFQ's (`blkio.leaf_weight`); neither BFQ nor io.cost has one.
const NO_LEAF_WEIGHT: &str =
    "the kernel has no leaf weights since the CFQ scheduler was removed (Linux 5.0)";

/// A device number of the spec (`major`, `minor`) in the kernel's range.
fn device(source: &Path, field: &str, major: i64, minor: i64) -> Result<Device> {
    match (u32::try_from(major), u32::try_from(minor)) {
        (Ok(a), Ok(b)) if a <= MAX_MAJOR && b <= MAX_MINOR => Ok(Device::new(a, b)),
        _ => Err(config_error(
            source,
            format!("{field}: {major}:{minor} is not a block device number"),
        )),
    }
}

fn block_io(source: &Path, io: &LinuxBlockIo, out: &mut Vec<Resource>) -> Result<()> {
    if let Some(w) = io.leaf_weight().filter(|&w| w != 0) {
        return Err(unsupported(
            "linux.resources.blockIO.leafWeight",
            w,
            NO_LEAF_WEIGHT,
        ));
    }
    let weight = |field: &str, w: u16| {
        Weight::from_blkio_weight(w).map_err(|e| config_error(source, format!("{field}: {e}")))
    };
    if let Some(w) = io.weight().filter(|&w| w != 0) {
        out.push(Resource::IoWeight(weight(
            "linux.resources.blockIO.weight",
            w,
        )?));
    }
    for (i, d) in io.weight_device().iter().flatten().enumerate() {
        let field = format!("linux.resources.blockIO.weightDevice[{i}]");
        if let Some(w) = d.leaf_weight().filter(|&w| w != 0) {
            return Err(unsupported(
                format!("{field}.leafWeight"),
                w,
                NO_LEAF_WEIGHT,
            ));
        }
        let dev = device(source, &field, d.major(), d.minor())?;
        if let Some(w) = d.weight().filter(|&w| w != 0) {
            out.push(Resource::IoDeviceWeight(
                dev,
                weight(&format!("{field}.weight"), w)?,
            ));
        }
    }
    // The four lists, per device, as one io.max line (v1: one line in each throttle file).
    type Set = fn(IoMax, u64) -> palisade::cgroup::Result<IoMax>;
    let lists: [(&str, &Option<Vec<LinuxThrottleDevice>>, Set); 4] = [
        (
            "throttleReadBpsDevice",
            io.throttle_read_bps_device(),
            |m, v| m.read_bps(Bytes(v)),
        ),
        (
            "throttleWriteBpsDevice",
            io.throttle_write_bps_device(),
            |m, v| m.write_bps(Bytes(v)),
        ),
        (
            "throttleReadIOPSDevice",
            io.throttle_read_iops_device(),
            IoMax::read_iops,
        ),
        (
            "throttleWriteIOPSDevice",
            io.throttle_write_iops_device(),
            IoMax::write_iops,
        ),
    ];
    let mut per_device: BTreeMap<Device, IoMax> = BTreeMap::new();
    for (name, list, set) in lists {
        for (i, t) in list.iter().flatten().enumerate() {
            let field = format!("linux.resources.blockIO.{name}[{i}]");
            let dev = device(source, &field, t.major(), t.minor())?;
            let limit = per_device.entry(dev).or_insert_with(|| IoMax::new(dev));
            // A rate of 0 lifts the limit, as in cgroup v1's throttle files.
            if t.rate() != 0 {
                *limit = set(*limit, t.rate())
                    .map_err(|e| config_error(source, format!("{field}.rate: {e}")))?;
            }
        }
    }
    out.extend(per_device.into_values().map(Resource::IoMax));
    Ok(())
}

fn hugepages(
    source: &Path,
    limits: &[LinuxHugepageLimit],
    host: &Host<'_>,
    out: &mut Vec<Resource>,
) -> Result<()> {
    let sizes = HugePageSize::supported().map_err(palisade::Error::from)?;
    for (i, h) in limits.iter().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{i}]");
        let size: HugePageSize = h
            .page_size()
            .parse()
            .map_err(|e| config_error(source, format!("{field}.pageSize: {e}")))?;
        if !sizes.contains(&size) {
            return Err(unsupported(
                format!("{field}.pageSize"),
                h.page_size(),
                "this kernel offers no huge pages of this size (see /sys/kernel/mm/hugepages)",
            ));
        }
        let limit = u64::try_from(h.limit()).map_err(|_| {
            config_error(
                source,
                format!("{field}.limit: {} is not a number of bytes", h.limit()),
            )
        })?;
        // The specification limits reservations where the kernel can (Linux 5.7, which
        // CLONE_INTO_CGROUP needs too), so that an mmap(2) beyond the limit fails rather than
        // a later page fault; the fault limit is set alike.
        out.push(Resource::HugetlbRsvdMax(size, Max::Limit(Bytes(limit))));
        out.push(Resource::HugetlbMax(size, Max::Limit(Bytes(limit))));
    }
    if host.get()?.served(Controller::Hugetlb).is_none() {
        return Err(unsupported(
            "linux.resources.hugepageLimits",
            format!("{limits:?}"),
            "this host has no hugetlb cgroup controller (neither on cgroup v2 nor as a v1 \
             hierarchy)",
        ));
    }
    Ok(())
}

fn rdma(
    source: &Path,
    devices: &HashMap<String, LinuxRdma>,
    host: &Host<'_>,
    out: &mut Vec<Resource>,
) -> Result<()> {
    let mut names: Vec<&String> = devices.keys().collect();
    names.sort();
    for name in names {
        let Some(limits) = devices.get(name) else {
            continue;
        };
        let field = format!("linux.resources.rdma.{name}");
        let bad = |e: palisade::cgroup::Error| config_error(source, format!("{field}: {e}"));
        let mut max = RdmaMax::new(name.as_str()).map_err(bad)?;
        if let Some(n) = limits.hca_handles() {
            max = max.hca_handles(Max::Limit(n)).map_err(bad)?;
        }
        if let Some(n) = limits.hca_objects() {
            max = max.hca_objects(Max::Limit(n)).map_err(bad)?;
        }
        // Neither limit: nothing to change.
        if !max.is_empty() {
            out.push(Resource::RdmaMax(max));
        }
    }
    if host.get()?.served(Controller::Rdma).is_none() {
        return Err(unsupported(
            "linux.resources.rdma",
            format!("{devices:?}"),
            "this host has no rdma cgroup controller (neither on cgroup v2 nor as a v1 \
             hierarchy)",
        ));
    }
    Ok(())
}

/// `network` sets the cgroup v1 `net_cls.classid` and `net_prio.ifpriomap`; cgroup v2 has no
/// such controllers (it matches traffic by cgroup path instead, e.g. in nftables).
fn network(n: &LinuxNetwork, host: &Host<'_>) -> Result<()> {
    let empty = n.class_id().is_none() && n.priorities().as_ref().is_none_or(Vec::is_empty);
    if empty {
        return Ok(());
    }
    let h = host.get()?;
    let reason = if h.v1_mount("net_cls").is_none() && h.v1_mount("net_prio").is_none() {
        "this host mounts no net_cls or net_prio hierarchy (they exist on cgroup v1 only; \
         cgroup v2 has no network controller)"
    } else {
        "Palisade does not manage the cgroup v1 net_cls and net_prio controllers"
    };
    Err(unsupported(
        "linux.resources.network",
        format!("{n:?}"),
        reason,
    ))
}

/// `unified`: every file parsed into the typed resource it sets ([`Resource::parse_v2`]), in
/// the order of the file names; refused as a whole unless the host is pure cgroup v2.
fn unified(source: &Path, files: &HashMap<String, String>, pure_v2: bool) -> Result<Vec<Resource>> {
    let mut names: Vec<&String> = files.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Some(value) = files.get(name) else {
            continue;
        };
        match Resource::parse_v2(name, value) {
            Ok(resources) => out.extend(resources),
            Err(palisade::cgroup::Error::UnknownSetting { reason, .. }) => {
                return Err(unsupported(
                    format!("linux.resources.unified.{name}"),
                    value,
                    reason,
                ))
            }
            Err(e) => {
                return Err(config_error(
                    source,
                    format!("linux.resources.unified.{name}: {e}"),
                ))
            }
        }
    }
    if !pure_v2 {
        return Err(unsupported(
            "linux.resources.unified",
            format!("{files:?}"),
            "its keys are cgroup v2 files, and this host's controllers are not all on cgroup v2 \
             (like runc, Palisade applies it on a pure cgroup v2 host only)",
        ));
    }
    for r in &out {
        r.validate()
            .map_err(|e| config_error(source, format!("linux.resources.unified: {e}")))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn resources(json: serde_json::Value) -> Result<Vec<Resource>> {
        let r: LinuxResources = serde_json::from_value(json).unwrap();
        Bundle::cgroup_resources(&r, Path::new("config.json"))
    }

    /// The field an [`Error::Unsupported`] names.
    fn refused(json: serde_json::Value) -> String {
        match resources(json) {
            Err(Error::Unsupported { field, .. }) => field,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn config_message(json: serde_json::Value) -> String {
        match resources(json) {
            Err(Error::Config { message, .. }) => message,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn block_io_maps_to_weights_and_one_io_max_per_device() {
        let got = resources(serde_json::json!({"blockIO": {
            "weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}, {"major": 8, "minor": 1}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteIOPSDevice": [
                {"major": 8, "minor": 0, "rate": 100},
                {"major": 254, "minor": 0, "rate": 0}
            ],
            "throttleWriteBpsDevice": [{"major": 254, "minor": 0, "rate": 4096}],
            "throttleReadIOPSDevice": [{"major": 254, "minor": 0, "rate": 7}]
        }}))
        .unwrap();
        let text: Vec<String> = got.iter().map(Resource::v2_value).collect();
        assert_eq!(
            text,
            [
                "default 4950",
                "8:0 10000",
                "8:0 rbps=1048576 wbps=max riops=max wiops=100",
                "254:0 rbps=max wbps=4096 riops=7 wiops=max",
            ]
        );
        assert!(matches!(got[0], Resource::IoWeight(w) if w.to_blkio_weight() == 500));
    }

    #[test]
    fn block_io_refusals_name_the_field() {
        assert_eq!(
            refused(serde_json::json!({"blockIO": {"leafWeight": 300}})),
            "linux.resources.blockIO.leafWeight"
        );
        assert_eq!(
            refused(serde_json::json!({"blockIO": {"weightDevice": [
                {"major": 8, "minor": 0, "weight": 300},
                {"major": 8, "minor": 16, "leafWeight": 300}
            ]}})),
            "linux.resources.blockIO.weightDevice[1].leafWeight"
        );
        for (json, field) in [
            (
                serde_json::json!({"blockIO": {"weight": 5}}),
                "linux.resources.blockIO.weight",
            ),
            (
                serde_json::json!({"blockIO": {"weightDevice": [
                    {"major": -1, "minor": 0, "weight": 100}
                ]}}),
                "linux.resources.blockIO.weightDevice[0]",
            ),
            (
                serde_json::json!({"blockIO": {"throttleReadBpsDevice": [
                    {"major": 8, "minor": 0, "rate": 1},
                    {"major": 5000, "minor": 0, "rate": 1}
                ]}}),
                "linux.resources.blockIO.throttleReadBpsDevice[1]",
            ),
        ] {
            let message = config_message(json);
            assert!(message.starts_with(field), "{message}");
        }
        // Zero changes nothing, as runc.
        assert!(
            resources(serde_json::json!({"blockIO": {"weight": 0, "leafWeight": 0}}))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn huge_page_sizes_are_the_kernels() {
        let message = config_message(serde_json::json!({"hugepageLimits": [
            {"pageSize": "3MB", "limit": 0}
        ]}));
        assert!(
            message.starts_with("linux.resources.hugepageLimits[0].pageSize"),
            "{message}"
        );
        let offered = HugePageSize::supported().unwrap();
        let absent = (12..40)
            .map(|shift| HugePageSize::new(1 << shift).unwrap())
            .find(|s| !offered.contains(s))
            .unwrap();
        assert_eq!(
            refused(serde_json::json!({"hugepageLimits": [
                {"pageSize": absent.to_string(), "limit": 0}
            ]})),
            "linux.resources.hugepageLimits[0].pageSize"
        );
        if let Some(size) = offered.first() {
            let r: LinuxResources = serde_json::from_value(serde_json::json!({"hugepageLimits": [
                {"pageSize": size.to_string(), "limit": 4 * size.bytes()}
            ]}))
            .unwrap();
            let host = Hierarchy::detect().unwrap();
            let got = Bundle::cgroup_resources_on(&r, Path::new("config.json"), &host);
            if host.served(Controller::Hugetlb).is_some() {
                let limit = Max::Limit(Bytes(4 * size.bytes()));
                assert_eq!(
                    got.unwrap(),
                    [
                        Resource::HugetlbRsvdMax(*size, limit),
                        Resource::HugetlbMax(*size, limit)
                    ]
                );
            } else {
                match got {
                    Err(Error::Unsupported { field, .. }) => {
                        assert_eq!(field, "linux.resources.hugepageLimits")
                    }
                    other => panic!("{other:?}"),
                }
            }
            let message = config_message(serde_json::json!({"hugepageLimits": [
                {"pageSize": size.to_string(), "limit": -1}
            ]}));
            assert!(
                message.starts_with("linux.resources.hugepageLimits[0].limit"),
                "{message}"
            );
        }
    }

    #[test]
    fn network_is_refused_by_name() {
        assert_eq!(
            refused(serde_json::json!({"network": {"classID": 1048577}})),
            "linux.resources.network"
        );
        assert_eq!(
            refused(
                serde_json::json!({"network": {"priorities": [{"name": "eth0", "priority": 5}]}})
            ),
            "linux.resources.network"
        );
        assert!(resources(serde_json::json!({"network": {}}))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unified_files_become_typed_resources_on_pure_v2_only() {
        let files = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let source = Path::new("config.json");
        let all = files(&[
            ("memory.max", "67108864"),
            ("pids.max", "max"),
            ("io.max", "8:0 wbps=4096"),
            ("hugetlb.2MB.max", "0"),
            ("cpu.max", "50000 100000"),
        ]);
        let got = unified(source, &all, true).unwrap();
        let text: Vec<(String, String)> = got
            .iter()
            .map(|r| (r.v2_file_name().into_owned(), r.v2_value()))
            .collect();
        assert_eq!(
            text,
            [
                ("cpu.max".to_owned(), "50000 100000".to_owned()),
                ("hugetlb.2MB.max".to_owned(), "0".to_owned()),
                (
                    "io.max".to_owned(),
                    "8:0 rbps=max wbps=4096 riops=max wiops=max".to_owned()
                ),
                ("memory.max".to_owned(), "67108864".to_owned()),
                ("pids.max".to_owned(), "max".to_owned()),
            ]
        );
        // Not on a host whose controllers are (partly) on cgroup v1.
        match unified(source, &all, false) {
            Err(Error::Unsupported { field, .. }) => assert_eq!(field, "linux.resources.unified"),
            other => panic!("{other:?}"),
        }
        // Keys that are no setting, or lead out of the group, are refused by name, anywhere.
        for key in [
            "cgroup.procs",
            "cgroup.subtree_control",
            "../x",
            "../../memory.max",
            "a/memory.max",
            "memory.stat",
            "cpu.idle",
        ] {
            for pure_v2 in [true, false] {
                match unified(source, &files(&[(key, "1")]), pure_v2) {
                    Err(Error::Unsupported { field, .. }) => {
                        assert_eq!(field, format!("linux.resources.unified.{key}"))
                    }
                    other => panic!("{key}: {other:?}"),
                }
            }
        }
        match unified(source, &files(&[("memory.max", "lots")]), true) {
            Err(Error::Config { message, .. }) => {
                assert!(
                    message.starts_with("linux.resources.unified.memory.max"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        match unified(source, &files(&[("memory.max", "4096")]), true) {
            Err(Error::Config { message, .. }) => {
                assert!(message.contains("memory.max"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rdma_is_typed_and_needs_the_controller() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({"rdma": {
            "mlx5_1": {"hcaObjects": 9},
            "mlx5_0": {"hcaHandles": 2, "hcaObjects": 100},
            "idle_0": {}
        }}))
        .unwrap();
        let host = Hierarchy::detect().unwrap();
        let got = Bundle::cgroup_resources_on(&r, Path::new("config.json"), &host);
        if host.served(Controller::Rdma).is_some() {
            let text: Vec<String> = got.unwrap().iter().map(Resource::v2_value).collect();
            assert_eq!(
                text,
                ["mlx5_0 hca_handle=2 hca_object=100", "mlx5_1 hca_object=9"]
            );
        } else {
            match got {
                Err(Error::Unsupported { field, .. }) => assert_eq!(field, "linux.resources.rdma"),
                other => panic!("{other:?}"),
            }
        }
        let message = config_message(serde_json::json!({"rdma": {"a b": {"hcaHandles": 1}}}));
        assert!(message.starts_with("linux.resources.rdma.a b"), "{message}");
    }
}
