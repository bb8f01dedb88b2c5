//! Typed values for cgroup limits. Each type checks its range when it is made, so a value that
//! reaches a cgroup file is one the kernel documents as valid.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// A size in bytes (`memory.max`, `io.max` rates, statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `n` kibibytes.
    pub const fn kib(n: u64) -> Bytes {
        Bytes(n << 10)
    }
    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Bytes {
        Bytes(n << 20)
    }
    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Bytes {
        Bytes(n << 30)
    }
    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Parses sizes the way `docker run --memory` does: a number with an optional binary suffix
/// `b`, `k`, `m`, `g`, `t` (any case, optionally followed by `b` or `ib`): `64M`, `1.5g`,
/// `512kib`, `4096`.
impl FromStr for Bytes {
    type Err = Error;

    fn from_str(s: &str) -> Result<Bytes> {
        let bad = |reason| Error::invalid("size", s, reason);
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
            .unwrap_or(&unit);
        let shift = match unit {
            "" | "b" => 0,
            "k" => 10,
            "m" => 20,
            "g" => 30,
            "t" => 40,
            _ => return Err(bad("unknown unit (use b, k, m, g or t)")),
        };
        if num.is_empty() {
            return Err(bad("no number"));
        }
        let bytes = if let Ok(n) = num.parse::<u64>() {
            n.checked_mul(1u64 << shift)
        } else {
            let f: f64 = num.parse().map_err(|_| bad("not a number"))?;
            let v = f * (1u64 << shift) as f64;
            (v.is_finite() && v < u64::MAX as f64).then_some(v.round() as u64)
        };
        bytes.map(Bytes).ok_or_else(|| bad("too large"))
    }
}

impl fmt::Display for Bytes {
    /// Human-readable, with binary units: `64.0MiB`, `512B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{}B", self.0);
        }
        let mut v = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while v >= 1024.0 && unit < UNITS.len() - 1 {
            v /= 1024.0;
            unit += 1;
        }
        write!(f, "{v:.1}{}", UNITS[unit])
    }
}

/// A limit that can be lifted: a value, or `max` (no limit), as in `memory.max` or `pids.max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Max<T> {
    /// Limited to this value.
    Limit(T),
    /// No limit (`max` in cgroup v2, `-1` in v1).
    Unlimited,
}

impl<T: Copy> Max<T> {
    /// The limit, or `None` when unlimited.
    pub fn limit(self) -> Option<T> {
        match self {
            Max::Limit(v) => Some(v),
            Max::Unlimited => None,
        }
    }
}

impl<T> From<T> for Max<T> {
    fn from(v: T) -> Max<T> {
        Max::Limit(v)
    }
}

/// A CPU bandwidth limit (`cpu.max` in v2, `cpu.cfs_quota_us`/`cpu.cfs_period_us` in v1): the
/// group may run for `quota` in each `period`, summed over all CPUs (see the kernel's
/// *CFS Bandwidth Control*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuMax {
    quota_us: Option<u64>,
    period_us: u64,
}

impl CpuMax {
    /// The default period, 100 ms, as the kernel and docker use.
    pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);
    const MIN_US: u64 = 1_000;
    const MAX_PERIOD_US: u64 = 1_000_000;
    // The kernel's bound on a quota (`max_cfs_runtime`, about 35 minutes).
    const MAX_QUOTA_US: u64 = (1 << 44) / 1000;

    /// `quota` of CPU time per `period`. The kernel accepts periods from 1 ms to 1 s and
    /// quotas from 1 ms.
    pub fn new(quota: Duration, period: Duration) -> Result<CpuMax> {
        let period_us = Self::period(period)?;
        let quota_us = quota.as_micros();
        if quota_us < u128::from(Self::MIN_US) || quota_us > u128::from(Self::MAX_QUOTA_US) {
            return Err(Error::invalid(
                "cpu quota",
                format!("{quota:?}"),
                "must be between 1ms and about 35 minutes",
            ));
        }
        Ok(CpuMax {
            quota_us: Some(quota_us as u64),
            period_us,
        })
    }

    /// At most `cpus` CPUs' worth of time (like `docker run --cpus`): `cpus(1.5)` is a quota of
    /// 150 ms per 100 ms period.
    pub fn cpus(cpus: f64) -> Result<CpuMax> {
        let period = Self::DEFAULT_PERIOD.as_micros() as f64;
        if !cpus.is_finite() || cpus <= 0.0 {
            return Err(Error::invalid("cpus", cpus, "must be a positive number"));
        }
        let quota = (cpus * period).round();
        if quota < Self::MIN_US as f64 || quota > Self::MAX_QUOTA_US as f64 {
            return Err(Error::invalid(
                "cpus",
                cpus,
                "must be between 0.01 and 20000",
            ));
        }
        Ok(CpuMax {
            quota_us: Some(quota as u64),
            period_us: period as u64,
        })
    }

    /// No bandwidth limit, with the given period.
    pub fn unlimited(period: Duration) -> Result<CpuMax> {
        Ok(CpuMax {
            quota_us: None,
            period_us: Self::period(period)?,
        })
    }

    fn period(period: Duration) -> Result<u64> {
        let us = period.as_micros();
        if us < u128::from(Self::MIN_US) || us > u128::from(Self::MAX_PERIOD_US) {
            return Err(Error::invalid(
                "cpu period",
                format!("{period:?}"),
                "must be between 1ms and 1s",
            ));
        }
        Ok(us as u64)
    }

    /// The quota in microseconds, `None` when unlimited.
    pub fn quota_us(&self) -> Option<u64> {
        self.quota_us
    }
    /// The period in microseconds.
    pub fn period_us(&self) -> u64 {
        self.period_us
    }
    /// The limit as a number of CPUs, `None` when unlimited.
    pub fn as_cpus(&self) -> Option<f64> {
        self.quota_us.map(|q| q as f64 / self.period_us as f64)
    }
}

/// The `cpu.max` format: `"150000 100000"` or `"max 100000"`.
impl fmt::Display for CpuMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quota_us {
            Some(q) => write!(f, "{q} {}", self.period_us),
            None => write!(f, "max {}", self.period_us),
        }
    }
}

/// A proportional weight, `1..=10000` with 100 the default (`cpu.weight`, `io.weight`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u16);

impl Weight {
    /// The kernel's default weight.
    pub const DEFAULT: Weight = Weight(100);

    /// A weight in `1..=10000`.
    pub fn new(weight: u16) -> Result<Weight> {
        if (1..=10000).contains(&weight) {
            Ok(Weight(weight))
        } else {
            Err(Error::invalid("weight", weight, "must be in 1..=10000"))
        }
    }
    /// The weight.
    pub fn get(self) -> u16 {
        self.0
    }
    /// The cgroup v1 `cpu.shares` equivalent (2..=262144), by the linear mapping runtimes use
    /// between the two ranges.
    pub fn to_cpu_shares(self) -> u64 {
        2 + (u64::from(self.0) - 1) * 262_142 / 9_999
    }
    /// The cgroup v1 `blkio.weight` equivalent (10..=1000), by the linear mapping between the
    /// two ranges, rounded to the nearest: the inverse of
    /// [`from_blkio_weight`](Self::from_blkio_weight).
    pub fn to_blkio_weight(self) -> u64 {
        10 + ((u64::from(self.0) - 1) * 990 + 9_999 / 2) / 9_999
    }

    /// The weight for a cgroup v1 `blkio.weight` of `weight` (10..=1000, the range of the OCI
    /// runtime specification's `blockIO.weight`), by the linear mapping between the two ranges,
    /// rounded to the nearest. [`to_blkio_weight`](Self::to_blkio_weight) gives `weight` back.
    pub fn from_blkio_weight(weight: u16) -> Result<Weight> {
        if !(10..=1000).contains(&weight) {
            return Err(Error::invalid(
                "blkio weight",
                weight,
                "must be in 10..=1000",
            ));
        }
        let w = 1 + ((u64::from(weight) - 10) * 9_999 + 990 / 2) / 990;
        // At most 1 + 990 * 9999 / 990 = 10000.
        Ok(Weight(w as u16))
    }
}

/// A huge page size the kernel offers (`/sys/kernel/mm/hugepages/hugepages-<n>kB`), which names
/// the hugetlb controller's files: `hugetlb.2MB.max` (cgroup v2),
/// `hugetlb.2MB.limit_in_bytes` (v1). See the kernel's `admin-guide/mm/hugetlbpage.rst` and
/// `admin-guide/cgroup-v1/hugetlb.rst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HugePageSize(u64);

impl HugePageSize {
    /// Where the kernel lists the sizes it supports, one directory each.
    const SYSFS: &'static str = "/sys/kernel/mm/hugepages";

    /// A size of `bytes`: a power of two, from 4 KiB (one base page) up. Whether this kernel
    /// offers it is [`supported`](Self::supported)'s question.
    pub fn new(bytes: u64) -> Result<HugePageSize> {
        if bytes < 4096 || !bytes.is_power_of_two() {
            return Err(Error::invalid(
                "huge page size",
                bytes,
                "must be a power of two of at least 4 KiB",
            ));
        }
        Ok(HugePageSize(bytes))
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// The sizes this kernel offers, ascending, from the directories of
    /// `/sys/kernel/mm/hugepages`; none if the kernel has no huge page support.
    pub fn supported() -> Result<Vec<HugePageSize>> {
        let dir = Path::new(Self::SYSFS);
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    op: "read",
                    path: dir.to_owned(),
                    source,
                })
            }
        };
        let mut sizes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                op: "read",
                path: dir.to_owned(),
                source,
            })?;
            let name = entry.file_name();
            let kib = name
                .to_str()
                .and_then(|n| n.strip_prefix("hugepages-"))
                .and_then(|n| n.strip_suffix("kB"))
                .and_then(|n| n.parse::<u64>().ok());
            let size = kib
                .and_then(|k| k.checked_mul(1024))
                .and_then(|b| HugePageSize::new(b).ok());
            match size {
                Some(size) => sizes.push(size),
                None => {
                    return Err(Error::Parse {
                        path: entry.path(),
                        reason: "expected a directory named hugepages-<size>kB".to_owned(),
                    })
                }
            }
        }
        sizes.sort_unstable();
        Ok(sizes)
    }

    /// Whether this kernel offers the size ([`supported`](Self::supported)).
    pub fn is_supported(self) -> Result<bool> {
        Ok(Self::supported()?.contains(&self))
    }
}

/// Parses the spelling of the kernel's hugetlb file names and of the OCI runtime
/// specification's `pageSize`: a number and `KB`, `MB` or `GB` (binary units; the unit's case
/// is ignored), e.g. `64KB`, `2MB`, `1GB`.
impl FromStr for HugePageSize {
    type Err = Error;

    fn from_str(s: &str) -> Result<HugePageSize> {
        let bad = |reason| Error::invalid("huge page size", s, reason);
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let shift = match unit.to_ascii_uppercase().as_str() {
            "KB" => 10,
            "MB" => 20,
            "GB" => 30,
            _ => return Err(bad("expected a number and KB, MB or GB, e.g. 2MB")),
        };
        let n: u64 = num.parse().map_err(|_| bad("no number"))?;
        let bytes = n.checked_mul(1 << shift).ok_or_else(|| bad("too large"))?;
        HugePageSize::new(bytes)
    }
}

/// The kernel's name for the size in hugetlb file names (its `mem_fmt`): the largest of `GB`,
/// `MB`, `KB` that divides it.
impl fmt::Display for HugePageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b % (1 << 30) == 0 {
            write!(f, "{}GB", b >> 30)
        } else if b % (1 << 20) == 0 {
            write!(f, "{}MB", b >> 20)
        } else {
            write!(f, "{}KB", b >> 10)
        }
    }
}

/// RDMA limits for one device (`rdma.max`, in cgroup v2 and the v1 `rdma` hierarchy; see the
/// kernel's `admin-guide/cgroup-v1/rdma.rst`): how many HCA handles and HCA objects the group
/// may hold. A limit left unset is not written, so the kernel keeps the one in force.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RdmaMax {
    device: String,
    hca_handles: Option<Max<u32>>,
    hca_objects: Option<Max<u32>>,
}

impl RdmaMax {
    /// The kernel's `IB_DEVICE_NAME_MAX`, with the terminating NUL.
    const NAME_MAX: usize = 64;
    /// The kernel parses each limit as an `int`.
    const LIMIT_MAX: u32 = i32::MAX as u32;

    /// No limit yet on the RDMA device `device` (as `/sys/class/infiniband` names it, e.g.
    /// `mlx5_0`). The name must be one word the `rdma.max` line can carry: not empty, at most
    /// 63 bytes, no whitespace, `=` or control characters.
    pub fn new(device: impl Into<String>) -> Result<RdmaMax> {
        let device = device.into();
        let bad = device.is_empty()
            || device.len() >= Self::NAME_MAX
            || device
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '=');
        if bad {
            return Err(Error::invalid(
                "RDMA device name",
                device,
                "must be one word of 1 to 63 bytes, without whitespace or `=`",
            ));
        }
        Ok(RdmaMax {
            device,
            hca_handles: None,
            hca_objects: None,
        })
    }

    fn limit(what: &'static str, limit: Max<u32>) -> Result<Max<u32>> {
        match limit {
            Max::Limit(n) if n > Self::LIMIT_MAX => Err(Error::invalid(
                what,
                n,
                "is above the kernel's limit (2147483647)",
            )),
            other => Ok(other),
        }
    }

    /// Limits the HCA handles (`hca_handle`).
    pub fn hca_handles(self, limit: Max<u32>) -> Result<RdmaMax> {
        Ok(RdmaMax {
            hca_handles: Some(Self::limit("RDMA hca_handle limit", limit)?),
            ..self
        })
    }

    /// Limits the HCA objects (`hca_object`).
    pub fn hca_objects(self, limit: Max<u32>) -> Result<RdmaMax> {
        Ok(RdmaMax {
            hca_objects: Some(Self::limit("RDMA hca_object limit", limit)?),
            ..self
        })
    }

    /// The device's name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Whether no limit is set (such a line would change nothing).
    pub fn is_empty(&self) -> bool {
        self.hca_handles.is_none() && self.hca_objects.is_none()
    }
}

/// The `rdma.max` line: `mlx5_0 hca_handle=2 hca_object=max`, with the limits that are set.
impl fmt::Display for RdmaMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.device)?;
        for (key, limit) in [
            ("hca_handle", self.hca_handles),
            ("hca_object", self.hca_objects),
        ] {
            match limit {
                Some(Max::Limit(n)) => write!(f, " {key}={n}")?,
                Some(Max::Unlimited) => write!(f, " {key}=max")?,
                None => {}
            }
        }
        Ok(())
    }
}

/// A set of CPU or memory-node numbers, in the kernel's list format (`0-3,5`; see
/// `cpuset(7)`), for `cpuset.cpus` and `cpuset.mems`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CpuSet {
    ranges: Vec<(u32, u32)>,
}

impl CpuSet {
    /// Far above any real machine; keeps a typo like `0-4000000000` from becoming a huge list.
    const MAX_ID: u32 = 1 << 16;

    /// The set of the given numbers.
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Result<CpuSet> {
        let mut ids: Vec<u32> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        if let Some(&id) = ids.iter().find(|&&id| id > Self::MAX_ID) {
            return Err(Error::invalid("cpu or node number", id, "is beyond 65536"));
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for id in ids {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == id => *end = id,
                _ => ranges.push((id, id)),
            }
        }
        Ok(CpuSet { ranges })
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The numbers in the set, ascending.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|&(a, b)| a..=b)
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u32) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&id))
    }
}

impl CpuSet {
    /// The CPUs online on this host, from `/sys/devices/system/cpu/online` (the kernel's
    /// `Documentation/ABI/testing/sysfs-devices-system-cpu`; what `sysconf(3)`'s
    /// `_SC_NPROCESSORS_ONLN` counts).
    pub fn online() -> Result<CpuSet> {
        const ONLINE: &str = "/sys/devices/system/cpu/online";
        let text = std::fs::read_to_string(ONLINE).map_err(|source| Error::Io {
            op: "read",
            path: ONLINE.into(),
            source,
        })?;
        text.parse()
    }

    /// How many CPUs the set holds.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|&(a, b)| (b - a) as usize + 1).sum()
    }
}

/// Parses the kernel's list format: `0-3,5,7-8`; whitespace around it is ignored, an empty
/// string is the empty set.
impl FromStr for CpuSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<CpuSet> {
        let bad = |reason| Error::invalid("cpu list", s, reason);
        let t = s.trim();
        let mut ids = Vec::new();
        if t.is_empty() {
            return Ok(CpuSet::default());
        }
        for part in t.split(',') {
            let num = |n: &str| n.trim().parse::<u32>().map_err(|_| bad("not a number"));
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if a > b {
                return Err(bad("a range runs backwards"));
            }
            if b > Self::MAX_ID {
                return Err(bad("a number is beyond 65536"));
            }
            ids.extend(a..=b);
        }
        CpuSet::from_ids(ids)
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// A block device number, as `io.max` and `io.stat` name devices (`8:0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Device {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl Device {
    /// The device `major:minor`.
    pub const fn new(major: u32, minor: u32) -> Device {
        Device { major, minor }
    }

    /// The block device at `path` (e.g. `/dev/sda`), from `stat(2)`'s `st_rdev`.
    pub fn of_path(path: impl AsRef<Path>) -> Result<Device> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            op: "stat",
            path: path.to_owned(),
            source,
        })?;
        if !meta.file_type().is_block_device() {
            return Err(Error::invalid(
                "block device",
                path.display(),
                "is not a block device",
            ));
        }
        let rdev = meta.rdev();
        Ok(Device::new(libc::major(rdev), libc::minor(rdev)))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl FromStr for Device {
    type Err = Error;

    /// Parses `major:minor`.
    fn from_str(s: &str) -> Result<Device> {
        let bad = || Error::invalid("device", s, "expected major:minor");
        let (a, b) = s.trim().split_once(':').ok_or_else(bad)?;
        Ok(Device::new(
            a.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
        ))
    }
}

/// I/O limits for one block device (`io.max` in v2, `blkio.throttle.*_device` in v1). Limits
/// that are not set stay unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoMax {
    device: Device,
    rbps: Option<u64>,
    wbps: Option<u64>,
    riops: Option<u64>,
    wiops: Option<u64>,
}

impl IoMax {
    /// No limit yet on `device`.
    pub fn new(device: Device) -> IoMax {
        IoMax {
            device,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        }
    }
    /// Limits reads to `bytes` per second.
    pub fn read_bps(self, bytes: Bytes) -> Result<IoMax> {
        Ok(IoMax {
            rbps: Some(Self::positive("read bytes per second", bytes.0)?),
            ..self
        })
    }
    /// Limits writes to `bytes` per second.
    pub fn write_bps(self, bytes: Bytes) -> Result<IoMax> {
        Ok(IoMax {
            wbps: Some(Self::positive("write bytes per second", bytes.0)?),
            ..self
        })
    }
    /// Limits reads to `ops` operations per second.
    pub fn read_iops(self, ops: u64) -> Result<IoMax> {
        Ok(IoMax {
            riops: Some(Self::positive("read operations per second", ops)?),
            ..self
        })
    }
    /// Limits writes to `ops` operations per second.
    pub fn write_iops(self, ops: u64) -> Result<IoMax> {
        Ok(IoMax {
            wiops: Some(Self::positive("write operations per second", ops)?),
            ..self
        })
    }

    fn positive(what: &'static str, v: u64) -> Result<u64> {
        if v == 0 {
            return Err(Error::invalid(
                what,
                v,
                "must be positive (leave it unset for no limit)",
            ));
        }
        Ok(v)
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The four limits in `io.max` key order: `rbps`, `wbps`, `riops`, `wiops`.
    pub(crate) fn limits(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("rbps", self.rbps),
            ("wbps", self.wbps),
            ("riops", self.riops),
            ("wiops", self.wiops),
        ]
    }
}

/// The `io.max` line: `8:0 rbps=1048576 wbps=max riops=max wiops=max`.
impl fmt::Display for IoMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        for (key, v) in self.limits() {
            match v {
                Some(v) => write!(f, " {key}={v}")?,
                None => write!(f, " {key}=max")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_sets_count_their_cpus() {
        assert_eq!("".parse::<CpuSet>().unwrap().len(), 0);
        assert_eq!("0-3,5,7-8".parse::<CpuSet>().unwrap().len(), 7);
        let online = CpuSet::online().unwrap();
        assert!(!online.is_empty());
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!("64M".parse::<Bytes>().unwrap(), Bytes::mib(64));
        assert_eq!("64m".parse::<Bytes>().unwrap(), Bytes::mib(64));
        assert_eq!("1.5g".parse::<Bytes>().unwrap(), Bytes(3 << 29));
        assert_eq!("512KiB".parse::<Bytes>().unwrap(), Bytes::kib(512));
        assert_eq!("4096".parse::<Bytes>().unwrap(), Bytes(4096));
        assert_eq!("10b".parse::<Bytes>().unwrap(), Bytes(10));
        for bad in ["", "M", "12x", "-1", "1.2.3m", "99999999999999999999t"] {
            assert!(bad.parse::<Bytes>().is_err(), "{bad:?}");
        }
        assert_eq!(Bytes::mib(64).to_string(), "64.0MiB");
    }

    #[test]
    fn cpu_max_formats_and_validates() {
        let c = CpuMax::cpus(1.5).unwrap();
        assert_eq!(c.to_string(), "150000 100000");
        assert_eq!(c.as_cpus(), Some(1.5));
        assert_eq!(
            CpuMax::unlimited(CpuMax::DEFAULT_PERIOD)
                .unwrap()
                .to_string(),
            "max 100000"
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.001] {
            assert!(CpuMax::cpus(bad).is_err(), "{bad}");
        }
        assert!(CpuMax::new(Duration::from_millis(50), Duration::from_secs(2)).is_err());
        assert!(CpuMax::new(Duration::from_micros(10), Duration::from_millis(100)).is_err());
    }

    #[test]
    fn weights_map_to_v1_ranges() {
        assert!(Weight::new(0).is_err() && Weight::new(10001).is_err());
        assert_eq!(Weight::new(1).unwrap().to_cpu_shares(), 2);
        assert_eq!(Weight::new(10000).unwrap().to_cpu_shares(), 262_144);
        assert_eq!(Weight::new(1).unwrap().to_blkio_weight(), 10);
        assert_eq!(Weight::new(10000).unwrap().to_blkio_weight(), 1000);
        for blkio in 10..=1000u16 {
            let w = Weight::from_blkio_weight(blkio).unwrap();
            assert_eq!(w.to_blkio_weight(), u64::from(blkio), "{w:?}");
        }
        assert_eq!(Weight::from_blkio_weight(10).unwrap().get(), 1);
        assert_eq!(Weight::from_blkio_weight(1000).unwrap().get(), 10000);
        assert!(Weight::from_blkio_weight(9).is_err() && Weight::from_blkio_weight(1001).is_err());
    }

    #[test]
    fn huge_page_sizes() {
        let two: HugePageSize = "2MB".parse().unwrap();
        assert_eq!(two.bytes(), 2 << 20);
        assert_eq!(two.to_string(), "2MB");
        assert_eq!("1gb".parse::<HugePageSize>().unwrap().to_string(), "1GB");
        assert_eq!("64KB".parse::<HugePageSize>().unwrap().to_string(), "64KB");
        assert_eq!("2048KB".parse::<HugePageSize>().unwrap(), two);
        for bad in [
            "",
            "2",
            "MB",
            "3MB",
            "2 MB",
            "2MiB",
            "-2MB",
            "1KB",
            "99999999999GB",
        ] {
            assert!(bad.parse::<HugePageSize>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rdma_lines() {
        let r = RdmaMax::new("mlx5_0")
            .unwrap()
            .hca_handles(Max::Limit(2))
            .unwrap()
            .hca_objects(Max::Unlimited)
            .unwrap();
        assert_eq!(r.to_string(), "mlx5_0 hca_handle=2 hca_object=max");
        let only = RdmaMax::new("hfi1_0").unwrap();
        assert!(only.is_empty());
        let r = only.hca_objects(Max::Limit(7)).unwrap();
        assert_eq!(r.to_string(), "hfi1_0 hca_object=7");
        for bad in ["", "a b", "a=b", "a\nb", &"x".repeat(64)] {
            assert!(RdmaMax::new(bad).is_err(), "{bad:?}");
        }
        assert!(RdmaMax::new("x".repeat(63)).is_ok());
        assert!(RdmaMax::new("m")
            .unwrap()
            .hca_handles(Max::Limit(1 << 31))
            .is_err());
    }

    #[test]
    fn io_max_line() {
        let io = IoMax::new(Device::new(8, 0))
            .read_bps(Bytes::mib(1))
            .unwrap()
            .write_iops(100)
            .unwrap();
        assert_eq!(
            io.to_string(),
            "8:0 rbps=1048576 wbps=max riops=max wiops=100"
        );
        assert!(IoMax::new(Device::new(8, 0)).read_iops(0).is_err());
        assert_eq!("259:3".parse::<Device>().unwrap(), Device::new(259, 3));
    }

    #[test]
    fn cpu_lists() {
        let s: CpuSet = "0-3,5, 7-8".parse().unwrap();
        assert_eq!(s.to_string(), "0-3,5,7-8");
        assert!("3-1".parse::<CpuSet>().is_err());
        assert!("a".parse::<CpuSet>().is_err());
        assert!("".parse::<CpuSet>().unwrap().is_empty());
    }

    proptest! {
        #[test]
        fn cpu_lists_round_trip(ids in proptest::collection::btree_set(0u32..512, 0..64)) {
            let set = CpuSet::from_ids(ids.iter().copied()).unwrap();
            let back: CpuSet = set.to_string().parse().unwrap();
            prop_assert_eq!(&back, &set);
            prop_assert_eq!(back.ids().collect::<Vec<_>>(), ids.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn sizes_round_trip_in_bytes(n in 0u64..(1 << 50)) {
            prop_assert_eq!(n.to_string().parse::<Bytes>().unwrap(), Bytes(n));
            prop_assert_eq!(format!("{}k", n >> 10).parse::<Bytes>().unwrap(), Bytes((n >> 10) << 10));
        }

        #[test]
        fn size_parser_never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Bytes>();
        }
    }
}
