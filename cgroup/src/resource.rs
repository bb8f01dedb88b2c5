//! One typed cgroup setting per variant, and how it is spelled on each backend.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::devices::DevicePolicy;
use crate::error::{Error, Result};
use crate::units::{Bytes, CpuMax, CpuSet, Device, HugePageSize, IoMax, Max, RdmaMax, Weight};

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
    /// Huge page limits (`hugetlb`), one per page size.
    Hugetlb,
    /// RDMA resource limits (`rdma`).
    Rdma,
}

impl Controller {
    /// All controllers this crate manages.
    pub const ALL: [Controller; 8] = [
        Controller::Cpu,
        Controller::Cpuset,
        Controller::Memory,
        Controller::Io,
        Controller::Pids,
        Controller::Devices,
        Controller::Hugetlb,
        Controller::Rdma,
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
            Controller::Hugetlb => "hugetlb",
            Controller::Rdma => "rdma",
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
    /// `io.weight` (the default weight for all devices), which blk-iocost serves; where only
    /// the BFQ scheduler offers weights, `io.bfq.weight`. v1: `blkio.weight` (CFQ, gone since
    /// Linux 5.0), or else `blkio.bfq.weight`. BFQ's files take the v1 range (10..=1000,
    /// [`Weight::to_blkio_weight`]). Without either the write is refused as
    /// [`Error::Unsupported`], naming the file.
    IoWeight(Weight),
    /// `io.weight` for one device, overriding the default, with the same fallbacks (v1:
    /// `blkio.weight_device`, `blkio.bfq.weight_device`). The kernel refuses it for a device
    /// whose queue does not run the weight policy (`EOPNOTSUPP`: no io.cost, or another
    /// scheduler than BFQ).
    IoDeviceWeight(Device, Weight),
    /// `pids.max`: how many processes and threads the group may hold.
    PidsMax(Max<u64>),
    /// Which devices the group's processes may open and create. v2: a
    /// `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the group (replacing one set earlier);
    /// v1: `devices.deny` and `devices.allow`, which need a group without child groups.
    Devices(DevicePolicy),
    /// `hugetlb.<size>.max`: the huge pages of one size the group may fault in, in bytes (the
    /// kernel rounds it down to whole pages); a fault beyond it is a `SIGBUS`. v1:
    /// `hugetlb.<size>.limit_in_bytes`.
    HugetlbMax(HugePageSize, Max<Bytes>),
    /// `hugetlb.<size>.rsvd.max` (Linux 5.7): the huge pages of one size the group may
    /// reserve, in bytes; a `mmap(2)` or `shmget(2)` beyond it fails with `ENOMEM` instead of
    /// a later `SIGBUS`. v1: `hugetlb.<size>.rsvd.limit_in_bytes`.
    HugetlbRsvdMax(HugePageSize, Max<Bytes>),
    /// `rdma.max` for one RDMA device (the same file in v1). The kernel refuses a device it
    /// does not know (`ENODEV`).
    RdmaMax(RdmaMax),
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
            Resource::HugetlbMax(..) | Resource::HugetlbRsvdMax(..) => Controller::Hugetlb,
            Resource::RdmaMax(_) => Controller::Rdma,
        }
    }

    /// The cgroup v2 file that holds it; `devices` for [`Devices`](Self::Devices), which has
    /// no file (it is an eBPF program), and `hugetlb.<size>.max` or `hugetlb.<size>.rsvd.max`
    /// for [`HugetlbMax`](Self::HugetlbMax) and [`HugetlbRsvdMax`](Self::HugetlbRsvdMax),
    /// whose files are named after their page size ([`v2_file_name`](Self::v2_file_name)).
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
            Resource::HugetlbMax(..) => "hugetlb.<size>.max",
            Resource::HugetlbRsvdMax(..) => "hugetlb.<size>.rsvd.max",
            Resource::RdmaMax(_) => "rdma.max",
        }
    }

    /// The name of the cgroup v2 file that holds it: [`v2_file`](Self::v2_file), with the
    /// page size of a hugetlb setting filled in (`hugetlb.2MB.max`).
    pub fn v2_file_name(&self) -> Cow<'static, str> {
        match self {
            Resource::HugetlbMax(size, _) => Cow::Owned(format!("hugetlb.{size}.max")),
            Resource::HugetlbRsvdMax(size, _) => Cow::Owned(format!("hugetlb.{size}.rsvd.max")),
            other => Cow::Borrowed(other.v2_file()),
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
            | Resource::HugetlbMax(_, Max::Limit(b))
            | Resource::HugetlbRsvdMax(_, Max::Limit(b))
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
            Resource::RdmaMax(r) if r.is_empty() => Err(Error::invalid(
                "rdma.max",
                r,
                "sets no limit (neither hca_handle nor hca_object)",
            )),
            _ => Ok(()),
        }
    }

    /// [`validate`](Self::validate), then checks the value against this host: a CPU bandwidth
    /// limit ([`CpuMax`](Self::CpuMax)) of more CPUs than are online
    /// ([`CpuSet::online`]) is refused with [`Error::CpusAboveHost`], since the group could
    /// never use it up (Docker refuses `--cpus` above the host's CPUs as well).
    ///
    /// Kept apart from [`validate`](Self::validate): a limit written for another machine (an
    /// OCI bundle's) may still be applied as it is.
    ///
    /// ```no_run
    /// use palisade_cgroup::{Error, Resource};
    ///
    /// let err = Resource::cpus(10_000.0)?.validate_on_host().unwrap_err();
    /// assert!(matches!(err, Error::CpusAboveHost { .. }));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn validate_on_host(&self) -> Result<()> {
        self.validate()?;
        if let Resource::CpuMax(max) = self {
            if let Some(cpus) = max.as_cpus() {
                let online = CpuSet::online()?.len();
                if cpus > online as f64 {
                    return Err(Error::CpusAboveHost {
                        cpus,
                        online: u32::try_from(online).unwrap_or(u32::MAX),
                    });
                }
            }
        }
        Ok(())
    }

    /// The value written to [`v2_file`](Self::v2_file); for [`Devices`](Self::Devices), the
    /// policy's rules, one a line.
    pub fn v2_value(&self) -> String {
        fn max<T: ToString + Copy>(m: Max<T>) -> String {
            m.limit()
                .map_or_else(|| "max".to_owned(), |v| v.to_string())
        }
        match self {
            Resource::MemoryMax(m)
            | Resource::MemoryHigh(m)
            | Resource::MemorySwapMax(m)
            | Resource::HugetlbMax(_, m)
            | Resource::HugetlbRsvdMax(_, m) => max(m.map(Bytes::get)),
            Resource::MemoryLow(b) => b.0.to_string(),
            Resource::CpuMax(c) => c.to_string(),
            Resource::CpuWeight(w) => w.get().to_string(),
            Resource::CpusetCpus(s) | Resource::CpusetMems(s) => s.to_string(),
            Resource::IoMax(io) => io.to_string(),
            Resource::IoWeight(w) => format!("default {}", w.get()),
            Resource::IoDeviceWeight(d, w) => format!("{d} {}", w.get()),
            Resource::PidsMax(m) => max(*m),
            Resource::Devices(p) => p.to_string(),
            Resource::RdmaMax(r) => r.to_string(),
        }
    }

    /// Where a file of its writes (v2's [`v2_file_name`](Self::v2_file_name), or one of
    /// v1's) is missing: the file that serves the same setting on this kernel instead, and its
    /// value. Proportional I/O weights have two providers since CFQ's removal (Linux 5.0):
    /// blk-iocost (`io.weight`, v2 only) and the BFQ scheduler (`io.bfq.weight`,
    /// `blkio.bfq.weight`), which takes the v1 range.
    pub(crate) fn fallback(&self, file: &str) -> Option<(&'static str, String)> {
        match (self, file) {
            (Resource::IoWeight(w), "io.weight") => {
                Some(("io.bfq.weight", format!("default {}", w.to_blkio_weight())))
            }
            (Resource::IoDeviceWeight(d, w), "io.weight") => {
                Some(("io.bfq.weight", format!("{d} {}", w.to_blkio_weight())))
            }
            (Resource::IoWeight(w), "blkio.weight") => {
                Some(("blkio.bfq.weight", w.to_blkio_weight().to_string()))
            }
            (Resource::IoDeviceWeight(d, w), "blkio.weight_device") => Some((
                "blkio.bfq.weight_device",
                format!("{d} {}", w.to_blkio_weight()),
            )),
            _ => None,
        }
    }

    /// The `(file, value)` writes that express it on cgroup v1, in order. `memory_max` is the
    /// memory limit in the same set (for the memory+swap limit).
    pub(crate) fn v1_writes(
        &self,
        memory_max: Option<Max<Bytes>>,
    ) -> Result<Vec<(Cow<'static, str>, String)>> {
        fn v1_max(m: Max<Bytes>) -> String {
            m.limit()
                .map_or_else(|| "-1".to_owned(), |b| b.0.to_string())
        }
        let writes: Vec<(&'static str, String)> = match self {
            Resource::HugetlbMax(size, m) => {
                return Ok(vec![(
                    Cow::Owned(format!("hugetlb.{size}.limit_in_bytes")),
                    v1_max(*m),
                )])
            }
            Resource::HugetlbRsvdMax(size, m) => {
                return Ok(vec![(
                    Cow::Owned(format!("hugetlb.{size}.rsvd.limit_in_bytes")),
                    v1_max(*m),
                )])
            }
            Resource::RdmaMax(r) => vec![("rdma.max", r.to_string())],
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
        };
        Ok(writes
            .into_iter()
            .map(|(file, value)| (Cow::Borrowed(file), value))
            .collect())
    }

    fn unsupported_v1(&self) -> Error {
        Error::Unsupported {
            setting: self.v2_file(),
            path: "(cgroup v1 has no such file)".into(),
        }
    }
}

/// Reading settings as cgroup v2 files spell them (the OCI runtime specification's
/// `linux.resources.unified`, the kernel's `admin-guide/cgroup-v2.rst`).
impl Resource {
    /// The settings that writing `value` to the cgroup v2 file `file` makes: one for most files,
    /// one per line for the nested keyed files (`io.max`, `io.weight`, `rdma.max`).
    ///
    /// `file` must name a setting this crate applies: `memory.max`, `memory.high`,
    /// `memory.low`, `memory.swap.max`, `pids.max`, `cpu.max`, `cpu.weight`, `cpuset.cpus`,
    /// `cpuset.mems`, `io.weight`, `io.max`, `hugetlb.<size>.max`, `hugetlb.<size>.rsvd.max`
    /// and `rdma.max`. Anything else
    /// is an [`Error::UnknownSetting`]: other files, and names that are no file of the group
    /// at all (`cgroup.procs`, `cgroup.subtree_control`, `../x`, `a/b`), so that a caller's
    /// map of file names can never write outside these settings. A value the file would not
    /// take is an [`Error::InvalidValue`] naming the file.
    ///
    /// Keys a nested line leaves out are lifted (`io.max`'s `wbps=max`), except in `rdma.max`,
    /// whose kernel keeps a limit that is not named.
    pub fn parse_v2(file: &str, value: &str) -> Result<Vec<Resource>> {
        let unknown = |reason| Error::UnknownSetting {
            file: file.to_owned(),
            reason,
        };
        let not_a_file = file.is_empty()
            || file.starts_with('.')
            || file.starts_with("cgroup.")
            || file
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control());
        if not_a_file {
            return Err(unknown(
                "it names no setting file of the group (an interface file, another directory \
                 or a path)",
            ));
        }
        let v = value.trim();
        let one = |r: Resource| Ok(vec![r]);
        // One setting per line; at least one line.
        fn lines(
            what: &'static str,
            v: &str,
            line: fn(&str) -> Result<Resource>,
        ) -> Result<Vec<Resource>> {
            if v.is_empty() {
                return Err(Error::invalid(what, v, "has no line"));
            }
            v.lines().map(line).collect()
        }
        match file {
            "memory.max" => one(Resource::MemoryMax(max_bytes("memory.max", v)?)),
            "memory.high" => one(Resource::MemoryHigh(max_bytes("memory.high", v)?)),
            "memory.swap.max" => one(Resource::MemorySwapMax(max_bytes("memory.swap.max", v)?)),
            "memory.low" => one(Resource::MemoryLow(Bytes(number("memory.low", v)?))),
            "pids.max" => one(Resource::PidsMax(max_of(v, |n| number("pids.max", n))?)),
            "cpu.max" => one(Resource::CpuMax(cpu_max(v)?)),
            "cpu.weight" => {
                let w = u16::try_from(number("cpu.weight", v)?)
                    .map_err(|_| Error::invalid("cpu.weight", v, "must be in 1..=10000"))?;
                one(Resource::CpuWeight(Weight::new(w)?))
            }
            "cpuset.cpus" => one(Resource::CpusetCpus(v.parse()?)),
            "cpuset.mems" => one(Resource::CpusetMems(v.parse()?)),
            "io.weight" => lines("io.weight", v, io_weight),
            "io.max" => lines("io.max", v, io_max),
            "rdma.max" => lines("rdma.max", v, rdma_max),
            _ => {
                let hugetlb = file
                    .strip_prefix("hugetlb.")
                    .and_then(|f| f.strip_suffix(".max"))
                    .map(|f| match f.strip_suffix(".rsvd") {
                        Some(size) => (size, true),
                        None => (f, false),
                    });
                match hugetlb.and_then(|(size, rsvd)| Some((size.parse().ok()?, rsvd))) {
                    Some((size, false)) => one(Resource::HugetlbMax(
                        size,
                        max_bytes("hugetlb.<size>.max", v)?,
                    )),
                    Some((size, true)) => one(Resource::HugetlbRsvdMax(
                        size,
                        max_bytes("hugetlb.<size>.rsvd.max", v)?,
                    )),
                    None => Err(unknown("palisade-cgroup applies no such cgroup v2 setting")),
                }
            }
        }
    }
}

/// An unsigned number, in the file `what`.
fn number(what: &'static str, v: &str) -> Result<u64> {
    v.trim()
        .parse()
        .map_err(|_| Error::invalid(what, v, "is not an unsigned integer"))
}

/// `max` or a value.
fn max_of<T>(v: &str, value: impl FnOnce(&str) -> Result<T>) -> Result<Max<T>> {
    if v.trim() == "max" {
        Ok(Max::Unlimited)
    } else {
        value(v).map(Max::Limit)
    }
}

/// `max` or a number of bytes.
fn max_bytes(what: &'static str, v: &str) -> Result<Max<Bytes>> {
    max_of(v, |n| number(what, n).map(Bytes))
}

/// `cpu.max`: `$MAX [$PERIOD]`, the quota `max` or microseconds, the period 100000 if left out.
fn cpu_max(v: &str) -> Result<CpuMax> {
    let words: Vec<&str> = v.split_whitespace().collect();
    let (quota, period) = match words.as_slice() {
        [quota] => (*quota, None),
        [quota, period] => (*quota, Some(number("cpu.max", period)?)),
        _ => return Err(Error::invalid("cpu.max", v, "expected `$MAX [$PERIOD]`")),
    };
    let period = period.map_or(CpuMax::DEFAULT_PERIOD, Duration::from_micros);
    match quota {
        "max" => CpuMax::unlimited(period),
        q => CpuMax::new(Duration::from_micros(number("cpu.max", q)?), period),
    }
}

/// An `io.weight` line: `default $W`, `$W`, or `$MAJ:$MIN $W`.
fn io_weight(line: &str) -> Result<Resource> {
    let weight = |w: &str| {
        let n = number("io.weight", w)?;
        u16::try_from(n)
            .map_err(|_| Error::invalid("io.weight", w, "must be in 1..=10000"))
            .and_then(Weight::new)
    };
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["default", w] | [w] => Ok(Resource::IoWeight(weight(w)?)),
        [dev, w] => Ok(Resource::IoDeviceWeight(device(dev)?, weight(w)?)),
        _ => Err(Error::invalid(
            "io.weight",
            line,
            "expected `default $WEIGHT` or `$MAJ:$MIN $WEIGHT`",
        )),
    }
}

/// A block device number within the kernel's range.
fn device(text: &str) -> Result<Device> {
    let d: Device = text.parse()?;
    if d.major > crate::MAX_MAJOR || d.minor > crate::MAX_MINOR {
        return Err(Error::invalid(
            "device",
            text,
            "is beyond the kernel's device numbers",
        ));
    }
    Ok(d)
}

/// An `io.max` line: `$MAJ:$MIN` and `rbps=`, `wbps=`, `riops=`, `wiops=` limits (`max` or a
/// positive number).
fn io_max(line: &str) -> Result<Resource> {
    let bad = |reason| Error::invalid("io.max", line, reason);
    let mut words = line.split_whitespace();
    let dev = words.next().ok_or_else(|| bad("no device"))?;
    let mut io = IoMax::new(device(dev)?);
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| bad("expected key=value"))?;
        if value == "max" {
            if !matches!(key, "rbps" | "wbps" | "riops" | "wiops") {
                return Err(bad("keys are rbps, wbps, riops and wiops"));
            }
            continue;
        }
        let n = number("io.max", value)?;
        io = match key {
            "rbps" => io.read_bps(Bytes(n))?,
            "wbps" => io.write_bps(Bytes(n))?,
            "riops" => io.read_iops(n)?,
            "wiops" => io.write_iops(n)?,
            _ => return Err(bad("keys are rbps, wbps, riops and wiops")),
        };
    }
    Ok(Resource::IoMax(io))
}

/// An `rdma.max` line: a device name and `hca_handle=`, `hca_object=` limits.
fn rdma_max(line: &str) -> Result<Resource> {
    let bad = |reason| Error::invalid("rdma.max", line, reason);
    let mut words = line.split_whitespace();
    let dev = words.next().ok_or_else(|| bad("no device"))?;
    let mut r = RdmaMax::new(dev)?;
    for word in words {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| bad("expected key=value"))?;
        let limit = max_of(value, |n| {
            u32::try_from(number("rdma.max", n)?).map_err(|_| bad("a limit is above 2147483647"))
        })?;
        r = match key {
            "hca_handle" => r.hca_handles(limit)?,
            "hca_object" => r.hca_objects(limit)?,
            _ => return Err(bad("keys are hca_handle and hca_object")),
        };
    }
    Ok(Resource::RdmaMax(r))
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
    fn cpu_limits_are_checked_against_the_cpus_online() {
        let online = CpuSet::online().unwrap().len();
        assert!(online >= 1);
        assert!(Resource::cpus(online as f64)
            .unwrap()
            .validate_on_host()
            .is_ok());
        assert!(Resource::cpus(0.01).unwrap().validate_on_host().is_ok());
        match Resource::cpus(online as f64 + 0.01)
            .unwrap()
            .validate_on_host()
        {
            Err(Error::CpusAboveHost { online: n, .. }) => assert_eq!(n as usize, online),
            other => panic!("{other:?}"),
        }
        // Other settings only get the checks of `validate`.
        assert!(Resource::pids_max(1).validate_on_host().is_ok());
        assert!(Resource::memory_max(Bytes(1)).validate_on_host().is_err());
    }

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
            [(
                "memory.memsw.limit_in_bytes".into(),
                (80u64 << 20).to_string()
            )]
        );
        assert_eq!(
            Resource::cpus(1.5).unwrap().v1_writes(None).unwrap(),
            [
                ("cpu.cfs_period_us".into(), "100000".into()),
                ("cpu.cfs_quota_us".into(), "150000".into())
            ]
        );
        let io = IoMax::new(Device::new(8, 0))
            .write_bps(Bytes(1000))
            .unwrap();
        let w = Resource::IoMax(io).v1_writes(None).unwrap();
        assert_eq!(
            w[1],
            ("blkio.throttle.write_bps_device".into(), "8:0 1000".into())
        );
        assert_eq!(
            w[0],
            ("blkio.throttle.read_bps_device".into(), "8:0 0".into())
        );
        let two = "2MB".parse().unwrap();
        let huge = Resource::HugetlbMax(two, Max::Limit(Bytes::mib(4)));
        assert_eq!(huge.v2_file_name(), "hugetlb.2MB.max");
        assert_eq!(huge.v2_value(), "4194304");
        assert_eq!(
            huge.v1_writes(None).unwrap(),
            [("hugetlb.2MB.limit_in_bytes".into(), "4194304".into())]
        );
        assert_eq!(
            Resource::HugetlbRsvdMax(two, Max::Limit(Bytes::mib(4)))
                .v1_writes(None)
                .unwrap(),
            [("hugetlb.2MB.rsvd.limit_in_bytes".into(), "4194304".into())]
        );
        assert_eq!(
            Resource::HugetlbMax(two, Max::Unlimited)
                .v1_writes(None)
                .unwrap()[0]
                .1,
            "-1"
        );
        let w = Weight::new(5000).unwrap();
        assert_eq!(
            Resource::IoWeight(w).fallback("blkio.weight"),
            Some(("blkio.bfq.weight", "505".into()))
        );
        assert_eq!(
            Resource::IoDeviceWeight(Device::new(8, 0), w).fallback("io.weight"),
            Some(("io.bfq.weight", "8:0 505".into()))
        );
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
        assert_eq!(w[0], ("devices.deny".into(), "a".into()));
        assert_eq!(w[1], ("devices.allow".into(), "c *:* m".into()));
        assert_eq!(w.len(), 11);
    }

    #[test]
    fn v2_files_parse_into_settings() {
        let one = |file: &str, value: &str| {
            let mut all = Resource::parse_v2(file, value).unwrap();
            assert_eq!(all.len(), 1, "{file}");
            all.remove(0)
        };
        assert_eq!(
            one("memory.max", "67108864"),
            Resource::memory_max(Bytes::mib(64))
        );
        assert_eq!(
            one("memory.high", "max\n"),
            Resource::MemoryHigh(Max::Unlimited)
        );
        assert_eq!(one("memory.low", "4096"), Resource::MemoryLow(Bytes(4096)));
        assert_eq!(
            one("memory.swap.max", "0"),
            Resource::MemorySwapMax(Max::Limit(Bytes(0)))
        );
        assert_eq!(one("pids.max", "max"), Resource::PidsMax(Max::Unlimited));
        assert_eq!(one("cpu.max", "50000 100000"), Resource::cpus(0.5).unwrap());
        assert_eq!(one("cpu.max", "50000"), Resource::cpus(0.5).unwrap());
        assert_eq!(one("cpu.max", "max 20000").v2_value(), "max 20000");
        assert_eq!(
            one("cpu.weight", "200"),
            Resource::CpuWeight(Weight::new(200).unwrap())
        );
        assert_eq!(one("cpuset.cpus", "0-1").v2_value(), "0-1");
        assert_eq!(one("cpuset.mems", "0").v2_value(), "0");
        assert_eq!(one("io.weight", "default 300").v2_value(), "default 300");
        assert_eq!(one("io.weight", "300").v2_value(), "default 300");
        let lines = Resource::parse_v2("io.weight", "default 100\n8:0 50").unwrap();
        assert_eq!(lines[1].v2_value(), "8:0 50");
        assert_eq!(
            one("io.max", "8:16 rbps=2097152 wiops=max").v2_value(),
            "8:16 rbps=2097152 wbps=max riops=max wiops=max"
        );
        assert_eq!(
            one("hugetlb.2MB.max", "max").v2_file_name(),
            "hugetlb.2MB.max"
        );
        assert_eq!(
            one("hugetlb.1GB.rsvd.max", "0").v2_file_name(),
            "hugetlb.1GB.rsvd.max"
        );
        assert_eq!(
            one("rdma.max", "mlx5_0 hca_handle=3 hca_object=max").v2_value(),
            "mlx5_0 hca_handle=3 hca_object=max"
        );
        for (file, value) in [
            ("memory.max", "lots"),
            ("memory.max", ""),
            ("memory.low", "max"),
            ("pids.max", "-1"),
            ("cpu.max", "1 2 3"),
            ("cpu.max", "10 100000"),
            ("cpu.weight", "0"),
            ("cpu.weight", "70000"),
            ("cpuset.cpus", "3-1"),
            ("io.weight", ""),
            ("io.weight", "8:0"),
            ("io.max", "8:0 rbps=0"),
            ("io.max", "8:0 bps=1"),
            ("io.max", "99999:0 rbps=1"),
            ("hugetlb.2MB.max", "2MB"),
            ("rdma.max", "mlx5_0 hca_handle=-1"),
            ("rdma.max", "mlx5_0 handles=1"),
        ] {
            match Resource::parse_v2(file, value) {
                Err(Error::InvalidValue { .. }) => {}
                other => panic!("{file}={value:?}: {other:?}"),
            }
        }
        for file in [
            "cgroup.procs",
            "cgroup.subtree_control",
            "../memory.max",
            "x/memory.max",
            "",
            ".",
            "memory.stat",
            "memory.oom.group",
            "hugetlb.3MB.max",
            "hugetlb.2MB.rsvd.current",
            "hugetlb.2MB.rsvd.rsvd.max",
            "io.bfq.weight",
        ] {
            match Resource::parse_v2(file, "1") {
                Err(Error::UnknownSetting { file: named, .. }) => assert_eq!(named, file),
                other => panic!("{file:?}: {other:?}"),
            }
        }
    }
}
