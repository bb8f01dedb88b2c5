//! Resource limits (`setrlimit(2)`), named and parsed as Docker's `--ulimit` does.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A resource that `setrlimit(2)` limits, named as `docker run --ulimit` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RlimitResource {
    /// `RLIMIT_AS` (`as`): the size of the virtual address space, in bytes.
    As,
    /// `RLIMIT_CORE` (`core`): the largest core dump, in bytes (0: none).
    Core,
    /// `RLIMIT_CPU` (`cpu`): CPU time, in seconds (`SIGXCPU` at the soft limit).
    Cpu,
    /// `RLIMIT_DATA` (`data`): the data segment and heap, in bytes.
    Data,
    /// `RLIMIT_FSIZE` (`fsize`): the largest file the process may create, in bytes.
    Fsize,
    /// `RLIMIT_LOCKS` (`locks`): `flock(2)` and `fcntl(2)` leases (no effect on Linux since
    /// 2.4.25, kept for compatibility).
    Locks,
    /// `RLIMIT_MEMLOCK` (`memlock`): memory locked into RAM, in bytes.
    Memlock,
    /// `RLIMIT_MSGQUEUE` (`msgqueue`): bytes in POSIX message queues, per real user.
    Msgqueue,
    /// `RLIMIT_NICE` (`nice`): the ceiling of the nice value, as `20 - nice`.
    Nice,
    /// `RLIMIT_NOFILE` (`nofile`): one more than the largest file descriptor number.
    Nofile,
    /// `RLIMIT_NPROC` (`nproc`): processes and threads of the real user (all of the user's, not
    /// only the sandbox's; a cgroup's `pids.max` limits the sandbox alone).
    Nproc,
    /// `RLIMIT_RSS` (`rss`): resident set size (no effect since Linux 2.6).
    Rss,
    /// `RLIMIT_RTPRIO` (`rtprio`): the ceiling of the real-time priority.
    Rtprio,
    /// `RLIMIT_RTTIME` (`rttime`): CPU time under a real-time policy without blocking, in
    /// microseconds.
    Rttime,
    /// `RLIMIT_SIGPENDING` (`sigpending`): signals queued for the real user.
    Sigpending,
    /// `RLIMIT_STACK` (`stack`): the main thread's stack, in bytes.
    Stack,
}

impl RlimitResource {
    /// Every resource, in alphabetical order of their names.
    pub const ALL: [RlimitResource; 16] = [
        RlimitResource::As,
        RlimitResource::Core,
        RlimitResource::Cpu,
        RlimitResource::Data,
        RlimitResource::Fsize,
        RlimitResource::Locks,
        RlimitResource::Memlock,
        RlimitResource::Msgqueue,
        RlimitResource::Nice,
        RlimitResource::Nofile,
        RlimitResource::Nproc,
        RlimitResource::Rss,
        RlimitResource::Rtprio,
        RlimitResource::Rttime,
        RlimitResource::Sigpending,
        RlimitResource::Stack,
    ];

    /// The name `--ulimit` uses: `nofile`, `nproc`, ….
    pub const fn name(self) -> &'static str {
        match self {
            RlimitResource::As => "as",
            RlimitResource::Core => "core",
            RlimitResource::Cpu => "cpu",
            RlimitResource::Data => "data",
            RlimitResource::Fsize => "fsize",
            RlimitResource::Locks => "locks",
            RlimitResource::Memlock => "memlock",
            RlimitResource::Msgqueue => "msgqueue",
            RlimitResource::Nice => "nice",
            RlimitResource::Nofile => "nofile",
            RlimitResource::Nproc => "nproc",
            RlimitResource::Rss => "rss",
            RlimitResource::Rtprio => "rtprio",
            RlimitResource::Rttime => "rttime",
            RlimitResource::Sigpending => "sigpending",
            RlimitResource::Stack => "stack",
        }
    }

    /// The kernel's number for the resource (`RLIMIT_*`).
    pub fn as_raw(self) -> u32 {
        let raw = match self {
            RlimitResource::As => libc::RLIMIT_AS,
            RlimitResource::Core => libc::RLIMIT_CORE,
            RlimitResource::Cpu => libc::RLIMIT_CPU,
            RlimitResource::Data => libc::RLIMIT_DATA,
            RlimitResource::Fsize => libc::RLIMIT_FSIZE,
            RlimitResource::Locks => libc::RLIMIT_LOCKS,
            RlimitResource::Memlock => libc::RLIMIT_MEMLOCK,
            RlimitResource::Msgqueue => libc::RLIMIT_MSGQUEUE,
            RlimitResource::Nice => libc::RLIMIT_NICE,
            RlimitResource::Nofile => libc::RLIMIT_NOFILE,
            RlimitResource::Nproc => libc::RLIMIT_NPROC,
            RlimitResource::Rss => libc::RLIMIT_RSS,
            RlimitResource::Rtprio => libc::RLIMIT_RTPRIO,
            RlimitResource::Rttime => libc::RLIMIT_RTTIME,
            RlimitResource::Sigpending => libc::RLIMIT_SIGPENDING,
            RlimitResource::Stack => libc::RLIMIT_STACK,
        };
        // The constants are small and non-negative; their C type differs between C libraries.
        #[allow(clippy::unnecessary_cast)]
        let raw = raw as u32;
        raw
    }
}

impl RlimitResource {
    /// The resource as rustix names it, for `prlimit(2)`.
    pub(crate) fn to_kernel(self) -> rustix::process::Resource {
        use rustix::process::Resource as K;
        match self {
            RlimitResource::As => K::As,
            RlimitResource::Core => K::Core,
            RlimitResource::Cpu => K::Cpu,
            RlimitResource::Data => K::Data,
            RlimitResource::Fsize => K::Fsize,
            RlimitResource::Locks => K::Locks,
            RlimitResource::Memlock => K::Memlock,
            RlimitResource::Msgqueue => K::Msgqueue,
            RlimitResource::Nice => K::Nice,
            RlimitResource::Nofile => K::Nofile,
            RlimitResource::Nproc => K::Nproc,
            RlimitResource::Rss => K::Rss,
            RlimitResource::Rtprio => K::Rtprio,
            RlimitResource::Rttime => K::Rttime,
            RlimitResource::Sigpending => K::Sigpending,
            RlimitResource::Stack => K::Stack,
        }
    }
}

impl fmt::Display for RlimitResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RlimitResource {
    type Err = Error;

    /// A `--ulimit` name (`nofile`), in any case, with or without the `RLIMIT_` prefix.
    fn from_str(s: &str) -> Result<RlimitResource> {
        let lower = s.trim().to_ascii_lowercase();
        let bare = lower.strip_prefix("rlimit_").unwrap_or(&lower);
        RlimitResource::ALL
            .into_iter()
            .find(|r| r.name() == bare)
            .ok_or_else(|| Error::InvalidValue {
                what: "rlimit resource",
                value: s.to_owned(),
                reason: "unknown resource (as, core, cpu, data, fsize, locks, memlock, msgqueue, \
                         nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)",
            })
    }
}

/// A resource limit for the sandboxed command: a soft limit, which the kernel enforces, and a
/// hard limit, the ceiling up to which an unprivileged process may raise the soft one
/// (`setrlimit(2)`). [`Rlimit::INFINITY`] means no limit.
///
/// Parses from Docker's `--ulimit` form, `NAME=SOFT[:HARD]` (one value sets both), where a limit
/// is a number, `unlimited` or `-1`:
///
/// ```
/// use palisade::{Rlimit, RlimitResource};
///
/// let nofile: Rlimit = "nofile=1024:2048".parse()?;
/// assert_eq!(nofile, Rlimit::new(RlimitResource::Nofile, 1024, 2048));
/// let core: Rlimit = "core=0".parse()?;
/// assert_eq!((core.soft, core.hard), (0, 0));
/// let stack: Rlimit = "stack=8388608:unlimited".parse()?;
/// assert_eq!(stack.hard, Rlimit::INFINITY);
/// assert!("nofile=2048:1024".parse::<Rlimit>().is_err()); // soft above hard
/// # Ok::<(), palisade::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rlimit {
    /// What is limited.
    pub resource: RlimitResource,
    /// The limit the kernel enforces; at most `hard`.
    pub soft: u64,
    /// The ceiling for `soft`. Raising it above the current hard limit takes `CAP_SYS_RESOURCE`
    /// in the initial user namespace (so a rootless sandbox can only lower it).
    pub hard: u64,
}

impl Rlimit {
    /// The limit as `prlimit(2)` takes it through rustix: `RLIM_INFINITY` is `None`.
    pub(crate) fn to_kernel(self) -> (rustix::process::Resource, rustix::process::Rlimit) {
        let finite = |value: u64| (value != Rlimit::INFINITY).then_some(value);
        let limit = rustix::process::Rlimit {
            current: finite(self.soft),
            maximum: finite(self.hard),
        };
        (self.resource.to_kernel(), limit)
    }

    /// No limit (`RLIM_INFINITY`).
    pub const INFINITY: u64 = libc::RLIM_INFINITY;

    /// A limit with separate soft and hard values (checked when the sandbox is built: `soft`
    /// must not exceed `hard`).
    pub const fn new(resource: RlimitResource, soft: u64, hard: u64) -> Rlimit {
        Rlimit {
            resource,
            soft,
            hard,
        }
    }

    /// A limit whose soft and hard values are both `limit`.
    pub const fn fixed(resource: RlimitResource, limit: u64) -> Rlimit {
        Rlimit::new(resource, limit, limit)
    }

    /// No limit at all on `resource`.
    pub const fn unlimited(resource: RlimitResource) -> Rlimit {
        Rlimit::fixed(resource, Rlimit::INFINITY)
    }

    /// Checks that the soft limit does not exceed the hard one.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.soft > self.hard {
            return Err(Error::InvalidValue {
                what: "rlimit",
                value: self.to_string(),
                reason: "the soft limit exceeds the hard limit",
            });
        }
        Ok(())
    }
}

/// Writes a limit as `--ulimit` reads it.
fn write_limit(f: &mut fmt::Formatter<'_>, limit: u64) -> fmt::Result {
    if limit == Rlimit::INFINITY {
        f.write_str("unlimited")
    } else {
        write!(f, "{limit}")
    }
}

impl fmt::Display for Rlimit {
    /// `nofile=1024:2048`, `core=0`, `stack=8388608:unlimited`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=", self.resource)?;
        write_limit(f, self.soft)?;
        if self.hard != self.soft {
            f.write_str(":")?;
            write_limit(f, self.hard)?;
        }
        Ok(())
    }
}

impl FromStr for Rlimit {
    type Err = Error;

    fn from_str(s: &str) -> Result<Rlimit> {
        let invalid = |reason| Error::InvalidValue {
            what: "rlimit",
            value: s.to_owned(),
            reason,
        };
        let (name, limits) = s
            .trim()
            .split_once('=')
            .ok_or_else(|| invalid("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
        let resource: RlimitResource = name.parse()?;
        let parse = |value: &str| match value.trim() {
            "unlimited" | "infinity" | "-1" => Ok(Rlimit::INFINITY),
            v if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
                .parse::<u64>()
                .map_err(|_| invalid("the limit does not fit in 64 bits")),
            _ => Err(invalid("a limit must be a number, \"unlimited\" or -1")),
        };
        let limit = match limits.split_once(':') {
            Some((soft, hard)) => Rlimit::new(resource, parse(soft)?, parse(hard)?),
            None => Rlimit::fixed(resource, parse(limits)?),
        };
        limit
            .validate()
            .map_err(|_| invalid("the soft limit exceeds the hard limit"))?;
        Ok(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(s: &str) -> (&'static str, &'static str) {
        match s.parse::<Rlimit>() {
            Err(Error::InvalidValue { what, reason, .. }) => (what, reason),
            other => panic!("{s:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn ulimit_strings_parse() {
        let cases = [
            ("nofile=1024:2048", RlimitResource::Nofile, 1024, 2048),
            ("nofile=1024", RlimitResource::Nofile, 1024, 1024),
            ("nproc=0:0", RlimitResource::Nproc, 0, 0),
            ("core=0", RlimitResource::Core, 0, 0),
            (
                "cpu=10:unlimited",
                RlimitResource::Cpu,
                10,
                Rlimit::INFINITY,
            ),
            ("memlock=-1:-1", RlimitResource::Memlock, u64::MAX, u64::MAX),
            ("stack=unlimited", RlimitResource::Stack, u64::MAX, u64::MAX),
            (" NOFILE = 5 : 6 ", RlimitResource::Nofile, 5, 6),
            ("RLIMIT_AS=4096", RlimitResource::As, 4096, 4096),
        ];
        for (s, resource, soft, hard) in cases {
            assert_eq!(
                s.parse::<Rlimit>().unwrap(),
                Rlimit::new(resource, soft, hard),
                "{s}"
            );
        }
        for r in RlimitResource::ALL {
            let limit = Rlimit::new(r, 1, Rlimit::INFINITY);
            assert_eq!(limit.to_string().parse::<Rlimit>().unwrap(), limit);
            assert_eq!(r.name().parse::<RlimitResource>().unwrap(), r);
        }
        assert_eq!(
            Rlimit::new(RlimitResource::Nofile, 1024, 2048).to_string(),
            "nofile=1024:2048"
        );
        assert_eq!(Rlimit::fixed(RlimitResource::Core, 0).to_string(), "core=0");
        assert_eq!(
            Rlimit::unlimited(RlimitResource::Stack).to_string(),
            "stack=unlimited"
        );
    }

    #[test]
    fn bad_ulimit_strings_are_typed_errors() {
        let format = "expected NAME=SOFT[:HARD], e.g. nofile=1024:2048";
        let number = "a limit must be a number, \"unlimited\" or -1";
        assert_eq!(reason("nofile"), ("rlimit", format));
        assert_eq!(reason(""), ("rlimit", format));
        assert_eq!(reason("nofile=").1, number);
        assert_eq!(reason("nofile=1024:").1, number);
        assert_eq!(reason("nofile=:2048").1, number);
        assert_eq!(reason("nofile=1k").1, number);
        assert_eq!(reason("nofile=-2").1, number);
        assert_eq!(reason("nofile=1:2:3").1, number);
        assert_eq!(
            reason("nofile=99999999999999999999").1,
            "the limit does not fit in 64 bits"
        );
        assert_eq!(
            reason("nofile=2048:1024").1,
            "the soft limit exceeds the hard limit"
        );
        assert_eq!(
            reason("nofile=unlimited:1").1,
            "the soft limit exceeds the hard limit"
        );
        assert_eq!(reason("files=1").0, "rlimit resource");
        assert_eq!(reason("=1").0, "rlimit resource");
    }

    #[test]
    fn resources_map_to_the_kernel_numbers() {
        assert_eq!(RlimitResource::Nofile.as_raw(), 7);
        assert_eq!(RlimitResource::Nproc.as_raw(), 6);
        assert_eq!(RlimitResource::Core.as_raw(), 4);
        assert_eq!(RlimitResource::Rttime.as_raw(), 15);
        let mut raw: Vec<u32> = RlimitResource::ALL.iter().map(|r| r.as_raw()).collect();
        raw.sort_unstable();
        assert_eq!(raw, (0..16).collect::<Vec<u32>>());
        let mut names: Vec<&str> = RlimitResource::ALL.iter().map(|r| r.name()).collect();
        let sorted = names.clone();
        names.sort_unstable();
        assert_eq!(names, sorted);
    }
}
