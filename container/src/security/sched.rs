//! How the command is scheduled and what it runs as: its I/O priority (`ioprio_set(2)`), its
//! scheduling policy (`sched_setattr(2)`), the CPUs it may run on (`sched_setaffinity(2)`) and
//! its execution domain (`personality(2)`).
//!
//! The types here are what the builder takes
//! ([`io_priority`](crate::SandboxBuilder::io_priority),
//! [`scheduler`](crate::SandboxBuilder::scheduler),
//! [`cpu_affinity`](crate::SandboxBuilder::cpu_affinity),
//! [`initial_cpu_affinity`](crate::SandboxBuilder::initial_cpu_affinity),
//! [`personality`](crate::SandboxBuilder::personality)); they are turned into the kernel's
//! values before the clone, and the child sets them with one system call each (see the order in
//! [`crate::security`]). Whether the command may have them is the kernel's to say (a real-time
//! class or policy, or a lower nice value, takes `CAP_SYS_NICE` or `CAP_SYS_ADMIN` in the
//! initial user namespace, or a matching `RLIMIT_RTPRIO`/`RLIMIT_NICE`); a refusal comes back
//! as [`Error::Child`](crate::Error::Child) naming the step and the errno.

use std::fmt;

use palisade_cgroup::CpuSet;
use rustix::io::Errno;

use crate::error::{Error, Result};

/// An I/O scheduling class (`ioprio_set(2)`, `ionice(1)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoClass {
    /// `IOPRIO_CLASS_RT`: served first, whatever else is waiting. Takes `CAP_SYS_ADMIN` or
    /// `CAP_SYS_NICE` (`ioprio_set(2)`).
    RealTime,
    /// `IOPRIO_CLASS_BE`: the default class, levels shared with other processes.
    BestEffort,
    /// `IOPRIO_CLASS_IDLE`: served only when nothing else wants the disk.
    Idle,
}

impl IoClass {
    /// The kernel's number of the class (`IOPRIO_CLASS_*`).
    fn raw(self) -> u32 {
        match self {
            IoClass::RealTime => 1,
            IoClass::BestEffort => 2,
            IoClass::Idle => 3,
        }
    }
}

/// An I/O priority: a class and a level within it, 0 (highest) to 7 (`ioprio_set(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IoPriority {
    class: IoClass,
    level: u8,
}

impl IoPriority {
    /// The priority `level` (0 highest, 7 lowest) of `class`; the idle class has no levels, and
    /// its level is ignored by the kernel.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for a level above 7.
    pub fn new(class: IoClass, level: u8) -> Result<IoPriority> {
        if level > 7 {
            return Err(Error::InvalidValue {
                what: "I/O priority level",
                value: level.to_string(),
                reason: "must be 0 (highest) to 7 (lowest), as ioprio_set(2) takes it",
            });
        }
        Ok(IoPriority { class, level })
    }

    /// The class.
    pub fn class(&self) -> IoClass {
        self.class
    }

    /// The level within the class.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The value `ioprio_set(2)` takes: the class in the bits above 13, the level below.
    pub fn to_raw(&self) -> u32 {
        (self.class.raw() << 13) | u32::from(self.level)
    }
}

/// A scheduling policy (`sched(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedPolicy {
    /// `SCHED_OTHER`, the default time-sharing policy, weighted by the nice value.
    Other,
    /// `SCHED_BATCH`: like `Other`, for CPU-bound work that is not interactive.
    Batch,
    /// `SCHED_IDLE`: runs only when nothing else wants the CPU.
    Idle,
    /// `SCHED_FIFO`, real-time first-in first-out, with a priority of 1 to 99.
    Fifo,
    /// `SCHED_RR`, real-time round-robin, with a priority of 1 to 99.
    RoundRobin,
    /// `SCHED_DEADLINE`, with a runtime, deadline and period.
    Deadline,
}

impl SchedPolicy {
    /// The kernel's number of the policy (`SCHED_*`).
    fn raw(self) -> u32 {
        match self {
            SchedPolicy::Other => 0,
            SchedPolicy::Fifo => 1,
            SchedPolicy::RoundRobin => 2,
            SchedPolicy::Batch => 3,
            SchedPolicy::Idle => 5,
            SchedPolicy::Deadline => 6,
        }
    }

    fn real_time(self) -> bool {
        matches!(self, SchedPolicy::Fifo | SchedPolicy::RoundRobin)
    }
}

/// Flags of `sched_setattr(2)` (`SCHED_FLAG_*`), combined with `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SchedFlags(u64);

impl SchedFlags {
    /// No flags.
    pub const EMPTY: SchedFlags = SchedFlags(0);
    /// `SCHED_FLAG_RESET_ON_FORK`: children of the command start with the default policy.
    pub const RESET_ON_FORK: SchedFlags = SchedFlags(0x01);
    /// `SCHED_FLAG_RECLAIM`: a deadline task may reclaim bandwidth others leave unused.
    pub const RECLAIM: SchedFlags = SchedFlags(0x02);
    /// `SCHED_FLAG_DL_OVERRUN`: a deadline task gets `SIGXCPU` when it overruns.
    pub const DL_OVERRUN: SchedFlags = SchedFlags(0x04);
    /// `SCHED_FLAG_KEEP_POLICY`: the policy is left as it is.
    pub const KEEP_POLICY: SchedFlags = SchedFlags(0x08);
    /// `SCHED_FLAG_KEEP_PARAMS`: the parameters are left as they are.
    pub const KEEP_PARAMS: SchedFlags = SchedFlags(0x10);

    /// The flags as `sched_attr.sched_flags` holds them.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: SchedFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SchedFlags {
    type Output = SchedFlags;
    fn bitor(self, rhs: SchedFlags) -> SchedFlags {
        SchedFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for SchedFlags {
    fn bitor_assign(&mut self, rhs: SchedFlags) {
        self.0 |= rhs.0;
    }
}

/// A scheduling policy and its parameters, as `sched_setattr(2)` sets them:
/// `Scheduler::new(SchedPolicy::Batch).nice(5)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheduler {
    policy: SchedPolicy,
    flags: SchedFlags,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

impl Scheduler {
    /// `policy` with nice value 0, no priority, no flags.
    pub fn new(policy: SchedPolicy) -> Scheduler {
        Scheduler {
            policy,
            flags: SchedFlags::EMPTY,
            nice: 0,
            priority: 0,
            runtime: 0,
            deadline: 0,
            period: 0,
        }
    }

    /// The nice value, -20 (most favourable) to 19, of the `Other` and `Batch` policies
    /// (`sched(7)`). Lowering it below the caller's takes `CAP_SYS_NICE` or `RLIMIT_NICE`.
    pub fn nice(mut self, nice: i32) -> Scheduler {
        self.nice = nice;
        self
    }

    /// The static priority of the real-time policies, 1 to 99; 0 for the others.
    pub fn priority(mut self, priority: u32) -> Scheduler {
        self.priority = priority;
        self
    }

    /// The flags.
    pub fn flags(mut self, flags: SchedFlags) -> Scheduler {
        self.flags = flags;
        self
    }

    /// The `Deadline` policy's runtime, deadline and period, in nanoseconds (a period of 0
    /// means the deadline; `sched(7)`).
    pub fn deadline(mut self, runtime: u64, deadline: u64, period: u64) -> Scheduler {
        self.runtime = runtime;
        self.deadline = deadline;
        self.period = period;
        self
    }

    /// The policy.
    pub fn policy(&self) -> SchedPolicy {
        self.policy
    }

    /// Checks what the kernel would refuse with a bare `EINVAL`, naming the value, and makes
    /// the `sched_attr` (its first version, 48 bytes, which every kernel since 3.14 takes).
    pub(crate) fn to_attr(self) -> Result<SchedAttr> {
        let invalid = |value: String, reason| Error::InvalidValue {
            what: "scheduler",
            value,
            reason,
        };
        if !(-20..=19).contains(&self.nice) {
            return Err(invalid(
                format!("nice {}", self.nice),
                "the nice value is -20 to 19 (sched(7))",
            ));
        }
        let priorities = if self.policy.real_time() {
            1..=99
        } else {
            0..=0
        };
        if !priorities.contains(&self.priority) {
            return Err(invalid(
                format!("{:?} priority {}", self.policy, self.priority),
                "SCHED_FIFO and SCHED_RR take a priority of 1 to 99, the other policies 0 \
                 (sched(7))",
            ));
        }
        let timed = self.runtime != 0 || self.deadline != 0 || self.period != 0;
        if self.policy == SchedPolicy::Deadline {
            let period = if self.period == 0 {
                self.deadline
            } else {
                self.period
            };
            if self.runtime == 0 || self.runtime > self.deadline || self.deadline > period {
                return Err(invalid(
                    format!(
                        "runtime {} deadline {} period {}",
                        self.runtime, self.deadline, self.period
                    ),
                    "SCHED_DEADLINE needs 0 < runtime <= deadline <= period (sched(7))",
                ));
            }
        } else if timed {
            return Err(invalid(
                format!("{:?} with a runtime, deadline or period", self.policy),
                "only SCHED_DEADLINE takes a runtime, deadline and period",
            ));
        }
        Ok(SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: self.policy.raw(),
            sched_flags: self.flags.bits(),
            sched_nice: self.nice,
            sched_priority: self.priority,
            sched_runtime: self.runtime,
            sched_deadline: self.deadline,
            sched_period: self.period,
        })
    }
}

/// The kernel's `struct sched_attr`, first version (`SCHED_ATTR_SIZE_VER0`, `sched_setattr(2)`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// An execution domain (`personality(2)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecDomain {
    /// `PER_LINUX`, the native one.
    Linux,
    /// `PER_LINUX32`: `uname(2)` reports a 32-bit machine (`i686` on x86-64), as `linux32(1)`
    /// does.
    Linux32,
}

/// The flags of a personality that `<sys/personality.h>` names (`personality(2)`), by name.
const PERSONALITY_FLAGS: [(&str, u32); 11] = [
    ("UNAME26", 0x002_0000),
    ("ADDR_NO_RANDOMIZE", 0x004_0000),
    ("FDPIC_FUNCPTRS", 0x008_0000),
    ("MMAP_PAGE_ZERO", 0x010_0000),
    ("ADDR_COMPAT_LAYOUT", 0x020_0000),
    ("READ_IMPLIES_EXEC", 0x040_0000),
    ("ADDR_LIMIT_32BIT", 0x080_0000),
    ("SHORT_INODE", 0x100_0000),
    ("WHOLE_SECONDS", 0x200_0000),
    ("STICKY_TIMEOUTS", 0x400_0000),
    ("ADDR_LIMIT_3GB", 0x800_0000),
];

/// A process personality: an execution domain and flags (`personality(2)`), kept across
/// `execve(2)` (the kernel clears `ADDR_NO_RANDOMIZE`, `ADDR_COMPAT_LAYOUT`, `MMAP_PAGE_ZERO`
/// and `READ_IMPLIES_EXEC` when it executes a set-user-ID program or one with file
/// capabilities).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Personality {
    domain: ExecDomain,
    flags: u32,
}

impl Personality {
    /// `domain` without flags.
    pub fn new(domain: ExecDomain) -> Personality {
        Personality { domain, flags: 0 }
    }

    /// Adds a flag by its name in `<sys/personality.h>` (`ADDR_NO_RANDOMIZE`, `UNAME26`, …).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for a name `personality(2)` does not list.
    pub fn flag(mut self, name: &str) -> Result<Personality> {
        let bit = PERSONALITY_FLAGS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, bit)| bit)
            .ok_or_else(|| Error::InvalidValue {
                what: "personality flag",
                value: name.to_owned(),
                reason: "not a flag of personality(2) (ADDR_NO_RANDOMIZE, UNAME26, …)",
            })?;
        self.flags |= bit;
        Ok(self)
    }

    /// The domain.
    pub fn domain(&self) -> ExecDomain {
        self.domain
    }

    /// The value `personality(2)` takes.
    pub fn to_raw(&self) -> u32 {
        let domain = match self.domain {
            ExecDomain::Linux => 0x0000,
            ExecDomain::Linux32 => 0x0008,
        };
        domain | self.flags
    }
}

impl fmt::Debug for Personality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        list.entry(&self.domain);
        for (name, bit) in PERSONALITY_FLAGS {
            if self.flags & bit != 0 {
                list.entry(&format_args!("{name}"));
            }
        }
        list.finish()
    }
}

/// What the builder was told of the command's scheduling and personality.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchedSpec {
    pub(crate) io_priority: Option<IoPriority>,
    pub(crate) scheduler: Option<Scheduler>,
    pub(crate) initial_affinity: Option<CpuSet>,
    pub(crate) final_affinity: Option<CpuSet>,
    pub(crate) personality: Option<Personality>,
}

/// [`SchedSpec`] as the kernel takes it, prepared before the clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct SchedPlan {
    pub(crate) personality: Option<u32>,
    pub(crate) io_priority: Option<u32>,
    pub(crate) scheduler: Option<SchedAttr>,
    pub(crate) initial_affinity: Option<rustix::thread::CpuSet>,
    pub(crate) final_affinity: Option<rustix::thread::CpuSet>,
    /// The values as given, for messages.
    pub(crate) given: SchedSpec,
}

impl SchedSpec {
    /// Checks the values and turns them into the kernel's.
    pub(crate) fn prepare(&self) -> Result<SchedPlan> {
        Ok(SchedPlan {
            personality: self.personality.map(|p| p.to_raw()),
            io_priority: self.io_priority.map(|p| p.to_raw()),
            scheduler: self.scheduler.map(Scheduler::to_attr).transpose()?,
            initial_affinity: self
                .initial_affinity
                .as_ref()
                .map(|s| cpu_mask("initial CPU affinity", s))
                .transpose()?,
            final_affinity: self
                .final_affinity
                .as_ref()
                .map(|s| cpu_mask("CPU affinity", s))
                .transpose()?,
            given: self.clone(),
        })
    }
}

impl SchedPlan {
    /// What a failed step of these was setting, for the error's context.
    pub(crate) fn describe(&self, step: crate::error::ChildStep) -> Option<String> {
        use crate::error::ChildStep;
        let g = &self.given;
        match step {
            ChildStep::Personality => g.personality.map(|p| format!("{p:?}")),
            ChildStep::IoPriority => g
                .io_priority
                .map(|p| format!("{:?} level {}", p.class(), p.level())),
            ChildStep::Scheduler => g.scheduler.map(|s| format!("{s:?}")),
            ChildStep::CpuAffinity => g.final_affinity.as_ref().map(|c| format!("CPUs {c}")),
            ChildStep::InitialCpuAffinity => {
                g.initial_affinity.as_ref().map(|c| format!("CPUs {c}"))
            }
            _ => None,
        }
    }
}

/// The kernel's CPU mask of a list: not empty (`sched_setaffinity(2)` refuses that with
/// `EINVAL`), and within the mask's size.
fn cpu_mask(what: &'static str, set: &CpuSet) -> Result<rustix::thread::CpuSet> {
    let invalid = |reason| Error::InvalidValue {
        what,
        value: set.to_string(),
        reason,
    };
    if set.is_empty() {
        return Err(invalid("an affinity needs at least one CPU"));
    }
    let mut mask = rustix::thread::CpuSet::new();
    for id in set.ids() {
        let id = id as usize;
        if id >= rustix::thread::CpuSet::MAX_CPU {
            return Err(invalid(
                "a CPU number is beyond the kernel's mask (1024 CPUs)",
            ));
        }
        mask.set(id);
    }
    Ok(mask)
}

/// The kernel's error of a raw system call, as rustix's.
fn errno(e: syscalls::Errno) -> Errno {
    Errno::from_raw_os_error(e.into_raw())
}

/// `personality(2)` of the calling process. It never fails; the previous persona is dropped.
pub(crate) fn set_personality(persona: u32) -> rustix::io::Result<()> {
    // SAFETY: personality takes an integer and changes only the calling process's persona.
    unsafe { syscalls::syscall1(syscalls::Sysno::personality, persona as usize) }
        .map(drop)
        .map_err(errno)
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, ioprio)`: the calling thread's I/O priority.
pub(crate) fn set_io_priority(ioprio: u32) -> rustix::io::Result<()> {
    const IOPRIO_WHO_PROCESS: usize = 1;
    // SAFETY: ioprio_set takes integers only.
    unsafe {
        syscalls::syscall3(
            syscalls::Sysno::ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            ioprio as usize,
        )
    }
    .map(drop)
    .map_err(errno)
}

/// `sched_setattr(0, attr, 0)`: the calling thread's policy and parameters.
pub(crate) fn set_scheduler(attr: &SchedAttr) -> rustix::io::Result<()> {
    // SAFETY: the kernel reads `attr.size` bytes of the struct the reference points to, which
    // is that size and lives for the call.
    unsafe {
        syscalls::syscall3(
            syscalls::Sysno::sched_setattr,
            0,
            attr as *const SchedAttr as usize,
            0,
        )
    }
    .map(drop)
    .map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_priorities_encode_as_the_kernel_reads_them() {
        let p = IoPriority::new(IoClass::BestEffort, 7).unwrap();
        assert_eq!(p.to_raw(), 2 << 13 | 7);
        assert_eq!(IoPriority::new(IoClass::Idle, 0).unwrap().to_raw(), 3 << 13);
        assert_eq!(
            IoPriority::new(IoClass::RealTime, 0).unwrap().to_raw(),
            1 << 13
        );
        assert!(matches!(
            IoPriority::new(IoClass::BestEffort, 8),
            Err(Error::InvalidValue { .. })
        ));
    }

    #[test]
    fn schedulers_are_checked_and_laid_out_as_sched_attr() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 48);
        let attr = Scheduler::new(SchedPolicy::Batch)
            .nice(5)
            .to_attr()
            .unwrap();
        assert_eq!((attr.sched_policy, attr.sched_nice), (3, 5));
        let fifo = Scheduler::new(SchedPolicy::Fifo)
            .priority(10)
            .flags(SchedFlags::RESET_ON_FORK);
        let attr = fifo.to_attr().unwrap();
        assert_eq!(
            (attr.sched_policy, attr.sched_priority, attr.sched_flags),
            (1, 10, 1)
        );
        for bad in [
            Scheduler::new(SchedPolicy::Other).nice(20),
            Scheduler::new(SchedPolicy::Other).priority(1),
            Scheduler::new(SchedPolicy::Fifo),
            Scheduler::new(SchedPolicy::RoundRobin).priority(100),
            Scheduler::new(SchedPolicy::Deadline),
            Scheduler::new(SchedPolicy::Deadline).deadline(20, 10, 30),
            Scheduler::new(SchedPolicy::Batch).deadline(1, 2, 3),
        ] {
            assert!(bad.to_attr().is_err(), "{bad:?}");
        }
        let dl = Scheduler::new(SchedPolicy::Deadline).deadline(10_000, 20_000, 0);
        assert_eq!(dl.to_attr().unwrap().sched_policy, 6);
    }

    #[test]
    fn personalities_take_the_headers_flags() {
        let p = Personality::new(ExecDomain::Linux32);
        assert_eq!(p.to_raw(), 8);
        let p = p.flag("ADDR_NO_RANDOMIZE").unwrap();
        assert_eq!(p.to_raw(), 0x0040008);
        assert_eq!(format!("{p:?}"), "[Linux32, ADDR_NO_RANDOMIZE]");
        assert!(p.flag("NOPE").is_err());
    }

    #[test]
    fn affinities_need_cpus_the_mask_can_hold() {
        let spec = SchedSpec {
            final_affinity: Some("0,2-3".parse().unwrap()),
            ..SchedSpec::default()
        };
        let mask = spec.prepare().unwrap().final_affinity.unwrap();
        assert_eq!(mask.count(), 3);
        assert!(mask.is_set(2) && !mask.is_set(1));
        for bad in ["", "1024"] {
            let spec = SchedSpec {
                initial_affinity: Some(bad.parse().unwrap()),
                ..SchedSpec::default()
            };
            assert!(spec.prepare().is_err(), "{bad:?}");
        }
    }
}
