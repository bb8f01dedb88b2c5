//! One typed cgroup setting per variant, and how it is spelled on each backend.

use std::fmt;

use crate::devices::DevicePolicy;
use crate::error::{Error, Result};
use crate::units::{Bytes, CpuMax, CpuSet, Device, IoMax, Max, Weight};

/// A resource controller (`cgroups(7)`). Each maps to a cgroup v2 controller and, on v1 and
/// hybrid hosts, to a v1 hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// CPU bandwidth and weight (`cpu`; v1 `cpu`, with usage from `cpuacct`).
    Cpu,
    /// CPU and memory-node placement (`cpuset`).
    Cpuset,
    /// Memory limits and accounting (`memory`).
    Memory,
    /// Block I/O limits and accounting (`io`; v1 `blkio`).
    Io,
    /// Process count limit (`pids`).
    Pids,
    /// Device access (v1 `devices`). cgroup v2 has no such controller: a group's device policy
    /// is an eBPF program attached to its directory, which needs nothing from the parent.
    Devices,
}

impl Controller {
    /// All controllers this crate manages.
    pub const ALL: [Controller; 6] = [
        Controller::Cpu,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Io,
        Controller::Pids,
        Controller::Devices,
    ];

    /// The controller's name in cgroup v2 (`cgroup.controllers`).
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Io => "io",
            Controller::Pids => "pids",
            Controller::Devices => "devices",
        }
    }

    /// Whether cgroup v2 enables it through `cgroup.subtree_control` (every controller but
    /// [`Devices`](Self::Devices), which is an eBPF program there).
    pub fn in_subtree_control(self) -> bool {
        self != Controller::Devices
    }

    /// The name of the cgroup v1 hierarchy that carries it.
    pub fn v1_name(self) -> &'static str {
        match self {
            Controller::Io => "blkio",
            other => other.v2_name(),
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// One limit or setting for a group. Build values with the typed constructors in
/// [`units`](crate::units) (`Bytes::mib(64)`, `CpuMax::cpus(1.5)`, …), which reject invalid input
/// before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Resource {
    /// `memory.max`: the hard limit; above it the kernel reclaims, then OOM-kills.
    /// v1: `memory.limit_in_bytes`.
    MemoryMax(Max<Bytes>),
    /// `memory.high`: the throttling limit. No v1 equivalent.
    MemoryHigh(Max<Bytes>),
    /// `memory.low`: best-effort protection from reclaim. v1: `memory.soft_limit_in_bytes`.
    MemoryLow(Bytes),
    /// `memory.swap.max`: swap the group may use. v1 has only a memory+swap limit
    /// (`memory.memsw.limit_in_bytes`), set to `memory.max` plus this; it needs a `MemoryMax`
    /// in the same set of resources.
    MemorySwapMax(Max<Bytes>),
    /// `cpu.max`: CPU bandwidth. v1: `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    CpuMax(CpuMax),
    /// `cpu.weight`: the share of CPU under contention. v1: `cpu.shares`.
    CpuWeight(Weight),
    /// `cpuset.cpus`: the CPUs the group may run on.
    CpusetCpus(CpuSet),
    /// `cpuset.mems`: the memory nodes the group may allocate from.
    CpusetMems(CpuSet),
    /// `io.max` for one device. v1: `blkio.throttle.{read,write}_{bps,iops}_device`.
    IoMax(IoMax),
    /// `io.weight` (the default weight for all devices). v1: `blkio.weight`.
    IoWeight(Weight),
    /// `io.weight` for one device, overriding the default. v1: `blkio.weight_device`.
    IoDeviceWeight(Device, Weight),
    /// `pids.max`: how many processes and threads the group may hold.
    PidsMax(Max<u64>),
    /// Which devices the group's processes may open and create. v2: a
    /// `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the group (replacing one set earlier);
    /// v1: `devices.deny` and `devices.allow`, which need a group without child groups.
    Devices(DevicePolicy),
}

/// Docker's smallest memory limit: below it a container cannot even start its first process.
pub const MIN_MEMORY_MAX: Bytes = Bytes(6 << 20);

/// The kernel's `PID_MAX_LIMIT` on 64-bit: no group can hold more tasks.
const PID_MAX_LIMIT: u64 = 4 * 1024 * 1024;

impl Resource {
    /// A `memory.max` limit.
    pub fn memory_max(bytes: Bytes) -> Resource {
        Resource::MemoryMax(Max::Limit(bytes))
    }
    /// A `cpu.max` limit of `cpus` CPUs' worth of time.
    pub fn cpus(cpus: f64) -> Result<Resource> {
        CpuMax::cpus(cpus).map(Resource::CpuMax)
    }
    /// A `pids.max` limit.
    pub fn pids_max(n: u64) -> Resource {
        Resource::PidsMax(Max::Limit(n))
    }

    /// The controller that enforces it.
    pub fn controller(&self) -> Controller {
        match self {
            Resource::MemoryMax(_)
            | Resource::MemoryHigh(_)
            | Resource::MemoryLow(_)
            | Resource::MemorySwapMax(_) => Controller::Memory,
            Resource::CpuMax(_) | Resource::CpuWeight(_) => Controller::Cpu,
            Resource::CpusetCpus(_) | Resource::CpusetMems(_) => Controller::Cpuset,
            Resource::IoMax(_) | Resource::IoWeight(_) | Resource::IoDeviceWeight(..) => {
                Controller::Io
            }
            Resource::PidsMax(_) => Controller::Pids,
            Resource::Devices(_) => Controller::Devices,
        }
    }

    /// The cgroup v2 file that holds it; `devices` for [`Devices`](Self::Devices), which has
    /// no file (it is an eBPF program).
    pub fn v2_file(&self) -> &'static str {
        match self {
            Resource::MemoryMax(_) => "memory.max",
            Resource::MemoryHigh(_) => "memory.high",
            Resource::MemoryLow(_) => "memory.low",
            Resource::MemorySwapMax(_) => "memory.swap.max",
            Resource::CpuMax(_) => "cpu.max",
            Resource::CpuWeight(_) => "cpu.weight",
            Resource::CpusetCpus(_) => "cpuset.cpus",
            Resource::CpusetMems(_) => "cpuset.mems",
            Resource::IoMax(_) => "io.max",
            Resource::IoWeight(_) | Resource::IoDeviceWeight(..) => "io.weight",
            Resource::PidsMax(_) => "pids.max",
            Resource::Devices(_) => "devices",
        }
    }

    /// Checks what the value types cannot: ranges that depend on the setting. A `memory.max`
    /// below [`MIN_MEMORY_MAX`] is refused ([`Error::MemoryTooSmall`]).
    pub fn validate(&self) -> Result<()> {
        match self {
            Resource::MemoryMax(Max::Limit(b)) if *b < MIN_MEMORY_MAX => {
                Err(Error::MemoryTooSmall {
                    setting: "memory.max",
                    value: b.0,
                    min: MIN_MEMORY_MAX.0,
                })
            }
            Resource::Devices(policy) => policy.validate(),
            Resource::PidsMax(Max::Limit(n)) if *n > PID_MAX_LIMIT => Err(Error::invalid(
                "pids.max",
                n,
                "is above the kernel's PID_MAX_LIMIT",
            )),
            Resource::MemoryMax(Max::Limit(b))
            | Resource::MemoryHigh(Max::Limit(b))
            | Resource::MemorySwapMax(Max::Limit(b))
            | Resource::MemoryLow(b)
                if b.0 > i64::MAX as u64 =>
            {
                Err(Error::invalid(
                    self.v2_file(),
                    b.0,
                    "is larger than the kernel can count",
                ))
            }
            Resource::CpusetCpus(set) | Resource::CpusetMems(set) if set.is_empty() => {
                Err(Error::invalid(self.v2_file(), "", "must not be empty"))
            }
            _ => Ok(()),
        }
    }

    /// The value written to [`v2_file`](Self::v2_file); for [`Devices`](Self::Devices), the
    /// policy's rules, one a line.
    pub fn v2_value(&self) -> String {
        fn max<T: ToString + Copy>(m: Max<T>) -> String {
            m.limit()
                .map_or_else(|| "max".to_owned(), |v| v.to_string())
        }
        match self {
            Resource::MemoryMax(m) | Resource::MemoryHigh(m) | Resource::MemorySwapMax(m) => {
                max(m.map(Bytes::get))
            }
            Resource::MemoryLow(b) => b.0.to_string(),
            Resource::CpuMax(c) => c.to_string(),
            Resource::CpuWeight(w) => w.get().to_string(),
            Resource::CpusetCpus(s) | Resource::CpusetMems(s) => s.to_string(),
            Resource::IoMax(io) => io.to_string(),
            Resource::IoWeight(w) => format!("default {}", w.get()),
            Resource::IoDeviceWeight(d, w) => format!("{d} {}", w.get()),
            Resource::PidsMax(m) => max(*m),
            Resource::Devices(p) => p.to_string(),
        }
    }

    /// The `(file, value)` writes that express it on cgroup v1, in order. `memory_max` is the
    /// memory limit in the same set (for the memory+swap limit).
    pub(crate) fn v1_writes(
        &self,
        memory_max: Option<Max<Bytes>>,
    ) -> Result<Vec<(&'static str, String)>> {
        fn v1_max(m: Max<Bytes>) -> String {
            m.limit()
                .map_or_else(|| "-1".to_owned(), |b| b.0.to_string())
        }
        Ok(match self {
            Resource::MemoryMax(m) => vec![("memory.limit_in_bytes", v1_max(*m))],
            Resource::MemoryHigh(_) => return Err(self.unsupported_v1()),
            Resource::MemoryLow(b) => vec![("memory.soft_limit_in_bytes", b.0.to_string())],
            Resource::MemorySwapMax(swap) => {
                let Some(mem) = memory_max else {
                    return Err(Error::invalid(
                        "memory.swap.max",
                        self.v2_value(),
                        "needs memory.max in the same set on cgroup v1 (memory+swap limit)",
                    ));
                };
                let total = match (mem, swap) {
                    (Max::Limit(m), Max::Limit(s)) => Max::Limit(Bytes(m.0.saturating_add(s.0))),
                    _ => Max::Unlimited,
                };
                vec![("memory.memsw.limit_in_bytes", v1_max(total))]
            }
            Resource::CpuMax(c) => vec![
                ("cpu.cfs_period_us", c.period_us().to_string()),
                (
                    "cpu.cfs_quota_us",
                    c.quota_us()
                        .map_or_else(|| "-1".to_owned(), |q| q.to_string()),
                ),
            ],
            Resource::CpuWeight(w) => vec![("cpu.shares", w.to_cpu_shares().to_string())],
            Resource::CpusetCpus(s) => vec![("cpuset.cpus", s.to_string())],
            Resource::CpusetMems(s) => vec![("cpuset.mems", s.to_string())],
            Resource::IoMax(io) => {
                let files = [
                    "blkio.throttle.read_bps_device",
                    "blkio.throttle.write_bps_device",
                    "blkio.throttle.read_iops_device",
                    "blkio.throttle.write_iops_device",
                ];
                // v1 removes a device's limit when 0 is written.
                files
                    .iter()
                    .zip(io.limits())
                    .map(|(file, (_, v))| (*file, format!("{} {}", io.device(), v.unwrap_or(0))))
                    .collect()
            }
            Resource::IoWeight(w) => vec![("blkio.weight", w.to_blkio_weight().to_string())],
            Resource::IoDeviceWeight(d, w) => vec![(
                "blkio.weight_device",
                format!("{d} {}", w.to_blkio_weight()),
            )],
            Resource::PidsMax(m) => vec![(
                "pids.max",
                m.limit()
                    .map_or_else(|| "max".to_owned(), |v| v.to_string()),
            )],
            Resource::Devices(p) => std::iter::once(("devices.deny", "a".to_owned()))
                .chain(
                    p.v1_exceptions()?
                        .iter()
                        .map(|r| ("devices.allow", r.v1_text())),
                )
                .collect(),
        })
    }

    fn unsupported_v1(&self) -> Error {
        Error::Unsupported {
            setting: self.v2_file(),
            path: "(cgroup v1 has no such file)".into(),
        }
    }
}

impl<T> Max<T> {
    /// Maps the limit's value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Max<U> {
        match self {
            Max::Limit(v) => Max::Limit(f(v)),
            Max::Unlimited => Max::Unlimited,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_spellings() {
        assert_eq!(Resource::memory_max(Bytes::mib(64)).v2_value(), "67108864");
        assert_eq!(Resource::MemoryHigh(Max::Unlimited).v2_value(), "max");
        assert_eq!(Resource::cpus(0.5).unwrap().v2_value(), "50000 100000");
        assert_eq!(Resource::pids_max(16).v2_value(), "16");
        assert_eq!(
            Resource::IoWeight(Weight::new(200).unwrap()).v2_value(),
            "default 200"
        );
    }

    #[test]
    fn v1_spellings() {
        let swap = Resource::MemorySwapMax(Max::Limit(Bytes::mib(16)));
        assert!(swap.v1_writes(None).is_err());
        assert_eq!(
            swap.v1_writes(Some(Max::Limit(Bytes::mib(64)))).unwrap(),
            [("memory.memsw.limit_in_bytes", (80u64 << 20).to_string())]
        );
        assert_eq!(
            Resource::cpus(1.5).unwrap().v1_writes(None).unwrap(),
            [
                ("cpu.cfs_period_us", "100000".into()),
                ("cpu.cfs_quota_us", "150000".into())
            ]
        );
        let io = IoMax::new(Device::new(8, 0))
            .write_bps(Bytes(1000))
            .unwrap();
        let w = Resource::IoMax(io).v1_writes(None).unwrap();
        assert_eq!(w[1], ("blkio.throttle.write_bps_device", "8:0 1000".into()));
        assert_eq!(w[0], ("blkio.throttle.read_bps_device", "8:0 0".into()));
        assert!(Resource::MemoryHigh(Max::Unlimited)
            .v1_writes(None)
            .is_err());
    }

    #[test]
    fn validation() {
        assert!(Resource::pids_max(1 << 30).validate().is_err());
        assert!(Resource::CpusetCpus(CpuSet::default()).validate().is_err());
        assert!(Resource::memory_max(Bytes(u64::MAX)).validate().is_err());
        assert!(Resource::pids_max(10).validate().is_ok());
    }

    #[test]
    fn memory_max_has_dockers_minimum() {
        for tiny in [0, 1, 4096, (6 << 20) - 1] {
            match Resource::memory_max(Bytes(tiny)).validate() {
                Err(Error::MemoryTooSmall { value, min, .. }) => {
                    assert_eq!((value, min), (tiny, 6 << 20));
                }
                other => panic!("{tiny}: {other:?}"),
            }
        }
        let err = Resource::memory_max(Bytes(1)).validate().unwrap_err();
        assert!(err.to_string().contains("memory.max of 1 bytes"), "{err}");
        assert!(Resource::memory_max(Bytes::mib(6)).validate().is_ok());
        assert!(Resource::MemoryMax(Max::Unlimited).validate().is_ok());
    }

    #[test]
    fn devices_on_v1() {
        let w = Resource::Devices(DevicePolicy::docker_default())
            .v1_writes(None)
            .unwrap();
        assert_eq!(w[0], ("devices.deny", "a".into()));
        assert_eq!(w[1], ("devices.allow", "c *:* m".into()));
        assert_eq!(w.len(), 11);
    }
}
