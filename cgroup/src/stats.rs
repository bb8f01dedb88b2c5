//! Typed statistics, read from the v2 files or their v1 counterparts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::parse;
use crate::sys::read_parsed;
use crate::units::{Bytes, Device};

/// A group's resource usage: what `docker stats` shows, and more. A part is `None` when the
/// group does not have that controller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Memory use.
    pub memory: Option<MemoryStats>,
    /// CPU time.
    pub cpu: Option<CpuStats>,
    /// Process count.
    pub pids: Option<PidsStats>,
    /// Block I/O.
    pub io: Option<IoStats>,
}

/// Memory use: `memory.current`, `memory.peak`, `memory.max`, `memory.stat`
/// (v1: `memory.usage_in_bytes`, `memory.max_usage_in_bytes`, `memory.limit_in_bytes`,
/// `memory.stat`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Memory charged to the group now, page cache included.
    pub current: Bytes,
    /// The highest `current` seen, if the kernel records it (v2 since Linux 5.19).
    pub peak: Option<Bytes>,
    /// The hard limit, `None` for unlimited.
    pub limit: Option<Bytes>,
    /// Every counter of `memory.stat` (v1 names carry a `total_` prefix for hierarchical sums).
    pub stat: BTreeMap<String, u64>,
}

impl MemoryStats {
    /// `current` minus inactive page cache, which the kernel can reclaim at no cost: the
    /// "usage" figure `docker stats` shows.
    pub fn working_set(&self) -> Bytes {
        let inactive = self
            .stat
            .get("inactive_file")
            .or_else(|| self.stat.get("total_inactive_file"))
            .copied()
            .unwrap_or(0);
        Bytes(self.current.0.saturating_sub(inactive))
    }
}

/// CPU time: `cpu.stat` (v1: `cpuacct.usage*` and `cpu.stat`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CpuStats {
    /// CPU time used, all CPUs summed.
    pub usage: Duration,
    /// Of which in user mode.
    pub user: Duration,
    /// Of which in the kernel.
    pub system: Duration,
    /// Bandwidth periods that have elapsed with a quota in force.
    pub nr_periods: u64,
    /// Periods in which the group ran out of quota.
    pub nr_throttled: u64,
    /// Time the group spent throttled.
    pub throttled: Duration,
}

/// Process count: `pids.current` and `pids.max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PidsStats {
    /// Processes and threads in the group now.
    pub current: u64,
    /// The limit, `None` for unlimited.
    pub limit: Option<u64>,
}

/// Block I/O per device: `io.stat` (v1: `blkio.throttle.io_service*_recursive`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Counters per device.
    pub devices: BTreeMap<Device, IoDeviceStats>,
}

impl IoStats {
    /// The counters summed over devices.
    pub fn total(&self) -> IoDeviceStats {
        self.devices
            .values()
            .fold(IoDeviceStats::default(), |a, d| IoDeviceStats {
                read_bytes: a.read_bytes + d.read_bytes,
                write_bytes: a.write_bytes + d.write_bytes,
                read_ops: a.read_ops + d.read_ops,
                write_ops: a.write_ops + d.write_ops,
            })
    }
}

/// Block I/O counters of one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoDeviceStats {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub read_ops: u64,
    /// Write operations.
    pub write_ops: u64,
}

/// Memory events: `memory.events`, counted for the group and its descendants
/// (v1: `memory.oom_control` and `memory.failcnt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryEvents {
    /// Reclaims below `memory.low` (v2 only).
    pub low: u64,
    /// Throttles over `memory.high` (v2 only).
    pub high: u64,
    /// Times usage hit `memory.max` (v1: `memory.failcnt`).
    pub max: u64,
    /// Times the group ran out of memory and the OOM killer was invoked (v1: equal to
    /// `oom_kill`, which is all v1 reports).
    pub oom: u64,
    /// Processes the OOM killer killed in the group.
    pub oom_kill: u64,
}

/// `cgroup.events` (v1: derived from `cgroup.procs` and `freezer.state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Events {
    /// Whether the group or a descendant holds a live process.
    pub populated: bool,
    /// Whether the group is frozen.
    pub frozen: bool,
}

fn keyed(path: &Path) -> Result<BTreeMap<String, u64>> {
    read_parsed(path, parse::flat_keyed)
}

fn opt_keyed(path: &Path) -> Result<Option<BTreeMap<String, u64>>> {
    if path.exists() {
        keyed(path).map(Some)
    } else {
        Ok(None)
    }
}

fn single(path: &Path) -> Result<u64> {
    read_parsed(path, parse::single)
}

fn limit(path: &Path) -> Result<Option<u64>> {
    read_parsed(path, parse::max_value)
}

/// `memory.peak`, which kernels before 5.19 lack.
pub(crate) fn memory_peak_v2(dir: &Path) -> Result<Option<Bytes>> {
    let peak = dir.join("memory.peak");
    Ok(if peak.exists() {
        Some(Bytes(single(&peak)?))
    } else {
        None
    })
}

pub(crate) fn memory_peak_v1(dir: &Path) -> Result<Option<Bytes>> {
    Ok(Some(Bytes(single(&dir.join("memory.max_usage_in_bytes"))?)))
}

pub(crate) fn memory_v2(dir: &Path) -> Result<MemoryStats> {
    Ok(MemoryStats {
        current: Bytes(single(&dir.join("memory.current"))?),
        peak: memory_peak_v2(dir)?,
        limit: limit(&dir.join("memory.max"))?.map(Bytes),
        stat: keyed(&dir.join("memory.stat"))?,
    })
}

pub(crate) fn memory_v1(dir: &Path) -> Result<MemoryStats> {
    Ok(MemoryStats {
        current: Bytes(single(&dir.join("memory.usage_in_bytes"))?),
        peak: memory_peak_v1(dir)?,
        limit: limit(&dir.join("memory.limit_in_bytes"))?.map(Bytes),
        stat: keyed(&dir.join("memory.stat"))?,
    })
}

pub(crate) fn cpu_v2(dir: &Path) -> Result<CpuStats> {
    let s = keyed(&dir.join("cpu.stat"))?;
    let us = |k: &str| Duration::from_micros(s.get(k).copied().unwrap_or(0));
    Ok(CpuStats {
        usage: us("usage_usec"),
        user: us("user_usec"),
        system: us("system_usec"),
        nr_periods: s.get("nr_periods").copied().unwrap_or(0),
        nr_throttled: s.get("nr_throttled").copied().unwrap_or(0),
        throttled: us("throttled_usec"),
    })
}

/// v1 CPU time: usage from `cpuacct` (nanoseconds), bandwidth counters from `cpu`'s `cpu.stat`.
pub(crate) fn cpu_v1(cpu: Option<&Path>, cpuacct: Option<&Path>) -> Result<CpuStats> {
    let mut out = CpuStats::default();
    if let Some(dir) = cpuacct {
        out.usage = Duration::from_nanos(single(&dir.join("cpuacct.usage"))?);
        let user = dir.join("cpuacct.usage_user");
        if user.exists() {
            out.user = Duration::from_nanos(single(&user)?);
            out.system = Duration::from_nanos(single(&dir.join("cpuacct.usage_sys"))?);
        } else if let Some(s) = opt_keyed(&dir.join("cpuacct.stat"))? {
            // SAFETY: sysconf has no memory-safety preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            let ticks = |k: &str| Duration::from_millis(s.get(k).copied().unwrap_or(0) * 1000 / hz);
            out.user = ticks("user");
            out.system = ticks("system");
        }
    }
    if let Some(s) = cpu
        .map(|d| opt_keyed(&d.join("cpu.stat")))
        .transpose()?
        .flatten()
    {
        out.nr_periods = s.get("nr_periods").copied().unwrap_or(0);
        out.nr_throttled = s.get("nr_throttled").copied().unwrap_or(0);
        out.throttled = Duration::from_nanos(s.get("throttled_time").copied().unwrap_or(0));
    }
    Ok(out)
}

pub(crate) fn pids(dir: &Path) -> Result<PidsStats> {
    Ok(PidsStats {
        current: single(&dir.join("pids.current"))?,
        limit: limit(&dir.join("pids.max"))?,
    })
}

fn device(key: &str) -> Option<Device> {
    key.parse().ok()
}

pub(crate) fn io_v2(dir: &Path) -> Result<IoStats> {
    let map = read_parsed(&dir.join("io.stat"), parse::nested_keyed)?;
    let devices = map
        .into_iter()
        .filter_map(|(dev, kv)| {
            let get = |k: &str| kv.get(k).copied().unwrap_or(0);
            Some((
                device(&dev)?,
                IoDeviceStats {
                    read_bytes: get("rbytes"),
                    write_bytes: get("wbytes"),
                    read_ops: get("rios"),
                    write_ops: get("wios"),
                },
            ))
        })
        .collect();
    Ok(IoStats { devices })
}

pub(crate) fn io_v1(dir: &Path) -> Result<IoStats> {
    let bytes = read_parsed(
        &dir.join("blkio.throttle.io_service_bytes_recursive"),
        parse::blkio_v1,
    )?;
    let ops = read_parsed(
        &dir.join("blkio.throttle.io_serviced_recursive"),
        parse::blkio_v1,
    )?;
    let mut devices: BTreeMap<Device, IoDeviceStats> = BTreeMap::new();
    for (dev, kv) in &bytes {
        if let Some(d) = device(dev) {
            let e = devices.entry(d).or_default();
            e.read_bytes = kv.get("read").copied().unwrap_or(0);
            e.write_bytes = kv.get("write").copied().unwrap_or(0);
        }
    }
    for (dev, kv) in &ops {
        if let Some(d) = device(dev) {
            let e = devices.entry(d).or_default();
            e.read_ops = kv.get("read").copied().unwrap_or(0);
            e.write_ops = kv.get("write").copied().unwrap_or(0);
        }
    }
    Ok(IoStats { devices })
}

pub(crate) fn memory_events_v2(dir: &Path) -> Result<MemoryEvents> {
    let s = keyed(&dir.join("memory.events"))?;
    let get = |k: &str| s.get(k).copied().unwrap_or(0);
    Ok(MemoryEvents {
        low: get("low"),
        high: get("high"),
        max: get("max"),
        oom: get("oom"),
        oom_kill: get("oom_kill"),
    })
}

pub(crate) fn memory_events_v1(dir: &Path) -> Result<MemoryEvents> {
    let oom = keyed(&dir.join("memory.oom_control"))?;
    let kills = oom.get("oom_kill").copied().unwrap_or(0);
    Ok(MemoryEvents {
        max: single(&dir.join("memory.failcnt"))?,
        oom: kills,
        oom_kill: kills,
        ..MemoryEvents::default()
    })
}

pub(crate) fn events_v2(dir: &Path) -> Result<Events> {
    let s = keyed(&dir.join("cgroup.events"))?;
    Ok(Events {
        populated: s.get("populated") == Some(&1),
        frozen: s.get("frozen") == Some(&1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_subtracts_inactive_file() {
        let mut m = MemoryStats {
            current: Bytes(1000),
            ..MemoryStats::default()
        };
        m.stat.insert("inactive_file".into(), 300);
        assert_eq!(m.working_set(), Bytes(700));
        m.stat.clear();
        m.stat.insert("total_inactive_file".into(), 2000);
        assert_eq!(m.working_set(), Bytes(0));
    }

    #[test]
    fn io_total_sums_devices() {
        let mut io = IoStats::default();
        for (i, d) in [Device::new(8, 0), Device::new(8, 16)]
            .into_iter()
            .enumerate()
        {
            io.devices.insert(
                d,
                IoDeviceStats {
                    read_bytes: 10 * (i as u64 + 1),
                    write_ops: 1,
                    ..IoDeviceStats::default()
                },
            );
        }
        let t = io.total();
        assert_eq!((t.read_bytes, t.write_ops), (30, 2));
    }
}
