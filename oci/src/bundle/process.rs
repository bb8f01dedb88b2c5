//! `process`: the command, its environment, user, capabilities, limits, terminal, scheduling
//! and CPU affinity; and `linux.personality`, which applies to the process too.

use oci_spec::runtime::{
    IOPriorityClass, LinuxCapabilities, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Process,
};
use palisade::cgroup::CpuSet;
use palisade::security::{
    CapSets, ExecDomain, IoClass, IoPriority, Personality, SchedFlags, SchedPolicy, Scheduler,
};
use std::path::Path;

use palisade::{Capabilities, Rlimit, RlimitResource, SandboxBuilder, TerminalSize};

use super::{apparmor_enabled, selinux_enabled, unsupported, Bundle};
use crate::error::Result;

/// Applies `process` but `args[0]` (the builder's program) and what the caller applies itself
/// (`umask`, `oomScoreAdj`).
pub(super) fn apply(bundle: &Bundle, p: &Process, b: &mut SandboxBuilder) -> Result<()> {
    // Exactly the configured environment: nothing of Palisade's minimal one.
    b.env_clear();
    for (i, entry) in p.env().iter().flatten().enumerate() {
        let (key, value) = entry
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| bundle.config(format!("process.env[{i}] {entry:?} is not KEY=VALUE")))?;
        b.env(key, value);
    }
    if !p.cwd().is_absolute() {
        return Err(bundle.config(format!(
            "process.cwd {:?} is not an absolute path",
            p.cwd().display()
        )));
    }
    b.current_dir(p.cwd());

    let user = p.user();
    b.user(user.uid(), user.gid());
    b.groups(user.additional_gids().iter().flatten().copied());
    if let Some(name) = user.username().as_deref().filter(|n| !n.is_empty()) {
        return Err(unsupported(
            "process.user.username",
            name,
            "a Windows field: a Linux process takes uid and gid",
        ));
    }

    capabilities(p.capabilities().as_ref(), b)?;

    for limit in rlimits(p, &bundle.config_path())? {
        b.rlimit(limit);
    }
    b.no_new_privs(p.no_new_privileges().unwrap_or(false));

    if p.terminal().unwrap_or(false) {
        b.tty(true);
        if let Some(size) = p.console_size() {
            let cells = |v: u64, what: &str| {
                u16::try_from(v).map_err(|_| {
                    bundle.config(format!("process.consoleSize.{what} {v} is above 65535"))
                })
            };
            b.tty_size(TerminalSize {
                rows: cells(size.height(), "height")?,
                cols: cells(size.width(), "width")?,
            });
        }
    }

    check_labels(
        p.apparmor_profile().as_deref(),
        p.selinux_label().as_deref(),
        ["process.apparmorProfile", "process.selinuxLabel"],
    )?;
    if let Some(line) = p.command_line().as_deref() {
        return Err(unsupported(
            "process.commandLine",
            line,
            "a Windows field: a Linux process takes args",
        ));
    }
    scheduling(bundle, p, b)?;
    personality(bundle, b)
}

/// `ioPriority`, `scheduler` and `execCPUAffinity`.
fn scheduling(bundle: &Bundle, p: &Process, b: &mut SandboxBuilder) -> Result<()> {
    if let Some(io) = p.io_priority() {
        let class = match io.class() {
            IOPriorityClass::IoprioClassRt => IoClass::RealTime,
            IOPriorityClass::IoprioClassBe => IoClass::BestEffort,
            IOPriorityClass::IoprioClassIdle => IoClass::Idle,
        };
        let level = u8::try_from(io.priority())
            .ok()
            .and_then(|level| IoPriority::new(class, level).ok())
            .ok_or_else(|| {
                bundle.config(format!(
                    "process.ioPriority.priority {} is not 0 to 7 (ioprio_set(2))",
                    io.priority()
                ))
            })?;
        b.io_priority(level);
    }
    if let Some(s) = p.scheduler() {
        b.scheduler(scheduler(bundle, s)?);
    }
    if let Some(a) = p.exec_cpu_affinity() {
        let list = |field: &str, text: &str| {
            text.parse::<CpuSet>().map_err(|e| {
                bundle.config(format!("process.execCPUAffinity.{field} {text:?}: {e}"))
            })
        };
        if let Some(initial) = a.initial() {
            b.initial_cpu_affinity(list("initial", initial)?);
        }
        if let Some(last) = a.cpu_affinity_final() {
            b.cpu_affinity(list("final", last)?);
        }
    }
    Ok(())
}

/// `process.scheduler` as Palisade's [`Scheduler`]; the ranges are checked when the sandbox is
/// built.
fn scheduler(bundle: &Bundle, s: &oci_spec::runtime::Scheduler) -> Result<Scheduler> {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => SchedPolicy::Other,
        LinuxSchedulerPolicy::SchedBatch => SchedPolicy::Batch,
        LinuxSchedulerPolicy::SchedIdle => SchedPolicy::Idle,
        LinuxSchedulerPolicy::SchedFifo => SchedPolicy::Fifo,
        LinuxSchedulerPolicy::SchedRr => SchedPolicy::RoundRobin,
        LinuxSchedulerPolicy::SchedDeadline => SchedPolicy::Deadline,
        LinuxSchedulerPolicy::SchedIso => {
            return Err(unsupported(
                "process.scheduler.policy",
                "SCHED_ISO",
                "not a policy of the Linux kernel (sched(7))",
            ))
        }
    };
    let mut flags = SchedFlags::EMPTY;
    for flag in s.flags().iter().flatten() {
        flags |= match flag {
            LinuxSchedulerFlag::SchedResetOnFork => SchedFlags::RESET_ON_FORK,
            LinuxSchedulerFlag::SchedFlagReclaim => SchedFlags::RECLAIM,
            LinuxSchedulerFlag::SchedFlagDLOverrun => SchedFlags::DL_OVERRUN,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => SchedFlags::KEEP_POLICY,
            LinuxSchedulerFlag::SchedFlagKeepParams => SchedFlags::KEEP_PARAMS,
            LinuxSchedulerFlag::SchedFlagUtilClampMin
            | LinuxSchedulerFlag::SchedFlagUtilClampMax => {
                return Err(unsupported(
                    "process.scheduler.flags",
                    flag,
                    "a utilization clamp needs its bounds, which the configuration cannot give",
                ))
            }
        };
    }
    let priority = u32::try_from(s.priority().unwrap_or(0)).map_err(|_| {
        bundle.config(format!(
            "process.scheduler.priority {:?} is negative",
            s.priority()
        ))
    })?;
    Ok(Scheduler::new(policy)
        .nice(s.nice().unwrap_or(0))
        .priority(priority)
        .flags(flags)
        .deadline(
            s.runtime().unwrap_or(0),
            s.deadline().unwrap_or(0),
            s.period().unwrap_or(0),
        ))
}

/// `linux.personality`: its domain and the flags `personality(2)` names.
fn personality(bundle: &Bundle, b: &mut SandboxBuilder) -> Result<()> {
    let Some(p) = bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.personality().as_ref())
    else {
        return Ok(());
    };
    let domain = match p.domain() {
        LinuxPersonalityDomain::PerLinux => ExecDomain::Linux,
        LinuxPersonalityDomain::PerLinux32 => ExecDomain::Linux32,
    };
    let mut persona = Personality::new(domain);
    for flag in p.flags().iter().flatten() {
        persona = persona.flag(flag).map_err(|_| {
            unsupported(
                "linux.personality.flags",
                flag,
                "not a flag of personality(2) (ADDR_NO_RANDOMIZE, UNAME26, …)",
            )
        })?;
    }
    // The native domain without flags is every process's already.
    if persona != Personality::new(ExecDomain::Linux) {
        b.personality(persona);
    }
    Ok(())
}

/// `process.rlimits` as Palisade's limits, for `create` and for a process file of `exec`: each
/// type known, its soft limit at most its hard one ([`Error::Config`](crate::Error::Config)
/// about `source` otherwise).
pub fn rlimits(p: &Process, source: &Path) -> Result<Vec<Rlimit>> {
    let mut out = Vec::new();
    for (i, limit) in p.rlimits().iter().flatten().enumerate() {
        let name = limit.typ().to_string();
        let resource: RlimitResource = name
            .parse()
            .map_err(|_| unsupported(format!("process.rlimits[{i}].type"), &name, "unknown"))?;
        if limit.soft() > limit.hard() {
            return Err(crate::Error::Config {
                path: source.to_owned(),
                message: format!(
                    "process.rlimits[{i}]: {name} soft limit {} exceeds its hard limit {}",
                    limit.soft(),
                    limit.hard()
                ),
            });
        }
        out.push(Rlimit::new(resource, limit.soft(), limit.hard()));
    }
    Ok(out)
}

/// Refuses a security label this host would enforce and Palisade does not apply, naming its
/// field (`fields`: the AppArmor profile's, the SELinux label's); one for an LSM the host lacks
/// means nothing here and is ignored, as runc ignores it.
pub fn check_labels(
    apparmor: Option<&str>,
    selinux: Option<&str>,
    fields: [&str; 2],
) -> Result<()> {
    if let Some(profile) = apparmor.filter(|s| !s.is_empty()) {
        if apparmor_enabled() {
            return Err(unsupported(
                fields[0],
                profile,
                "Palisade does not apply AppArmor profiles, and AppArmor is enabled here",
            ));
        }
    }
    if let Some(label) = selinux.filter(|s| !s.is_empty()) {
        if selinux_enabled() {
            return Err(unsupported(
                fields[1],
                label,
                "Palisade does not apply SELinux labels, and SELinux is enabled here",
            ));
        }
    }
    Ok(())
}

/// One of the five capability sets of `process.capabilities` (`name`: `bounding`,
/// `effective`, `inheritable`, `permitted` or `ambient`), as Palisade's type; absent is empty.
pub fn capability_set(caps: &LinuxCapabilities, name: &'static str) -> Result<Capabilities> {
    let list = match name {
        "bounding" => caps.bounding(),
        "effective" => caps.effective(),
        "inheritable" => caps.inheritable(),
        "permitted" => caps.permitted(),
        _ => caps.ambient(),
    };
    let mut out = Capabilities::empty();
    for cap in list.iter().flatten() {
        let cap = palisade::parse_capability(&cap.to_string()).map_err(|_| {
            unsupported(
                format!("process.capabilities.{name}"),
                cap,
                "a capability Palisade does not know",
            )
        })?;
        out.insert(cap);
    }
    Ok(out)
}

/// One of the five sets; absent is empty.
fn set(caps: Option<&LinuxCapabilities>, name: &'static str) -> Result<Capabilities> {
    caps.map_or(Ok(Capabilities::empty()), |c| capability_set(c, name))
}

/// The five capability sets, applied exactly ([`SandboxBuilder::capability_sets`]); see the
/// module documentation of [`crate::bundle`] for the rules and why.
fn capabilities(caps: Option<&LinuxCapabilities>, b: &mut SandboxBuilder) -> Result<()> {
    let mut sets = CapSets {
        bounding: set(caps, "bounding")?,
        effective: set(caps, "effective")?,
        permitted: set(caps, "permitted")?,
        inheritable: set(caps, "inheritable")?,
        ambient: set(caps, "ambient")?,
    };
    let outside = |name: &str, s: Capabilities, of: Capabilities, reason| {
        let extra = s.difference(of);
        if extra.is_empty() {
            Ok(())
        } else {
            Err(unsupported(
                format!("process.capabilities.{name}"),
                extra,
                reason,
            ))
        }
    };
    outside(
        "effective",
        sets.effective,
        sets.permitted,
        "not permitted: capset(2) refuses an effective capability that is not permitted",
    )?;
    outside(
        "inheritable",
        sets.inheritable,
        sets.bounding,
        "not in the bounding set: capset(2) refuses to make it inheritable",
    )?;
    // The kernel raises an ambient capability only if it is permitted and inheritable
    // (prctl(2)); runc leaves the others out, and so does this runtime.
    sets.ambient = sets
        .ambient
        .intersection(sets.permitted.intersection(sets.inheritable));
    b.capability_sets(sets);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade::Capability;

    fn caps(json: &str) -> LinuxCapabilities {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_five_sets_are_taken_exactly() {
        let mut b = palisade::Sandbox::builder("true");
        let c = caps(
            r#"{"bounding":["CAP_KILL","CAP_SYS_ADMIN"],"effective":["CAP_KILL"],
                "permitted":["CAP_KILL"],"inheritable":["CAP_KILL"],"ambient":["CAP_KILL"]}"#,
        );
        capabilities(Some(&c), &mut b).unwrap();
        // containerd's for a non-root user: no ambient set.
        let c =
            caps(r#"{"bounding":["CAP_KILL"],"permitted":["CAP_KILL"],"effective":["CAP_KILL"]}"#);
        capabilities(Some(&c), &mut b).unwrap();
        // An ambient capability the kernel would not raise is left out, as runc does.
        let c = caps(r#"{"bounding":["CAP_KILL"],"ambient":["CAP_KILL"]}"#);
        capabilities(Some(&c), &mut b).unwrap();
        capabilities(None, &mut b).unwrap();
        for (json, field) in [
            (r#"{"effective":["CAP_KILL"]}"#, "effective"),
            (r#"{"inheritable":["CAP_KILL"]}"#, "inheritable"),
        ] {
            let err = capabilities(Some(&caps(json)), &mut b).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("process.capabilities.{field}")),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn schedulers_map_onto_palisades() {
        let dir = std::env::temp_dir();
        let bundle = Bundle {
            dir: dir.clone(),
            spec: oci_spec::runtime::Spec::default(),
        };
        let s: oci_spec::runtime::Scheduler = serde_json::from_str(
            r#"{"policy":"SCHED_FIFO","priority":10,"flags":["SCHED_RESET_ON_FORK"]}"#,
        )
        .unwrap();
        let got = scheduler(&bundle, &s).unwrap();
        assert_eq!(
            got,
            Scheduler::new(SchedPolicy::Fifo)
                .priority(10)
                .flags(SchedFlags::RESET_ON_FORK)
        );
        for (json, field) in [
            (r#"{"policy":"SCHED_ISO"}"#, "process.scheduler.policy"),
            (
                r#"{"policy":"SCHED_OTHER","flags":["SCHED_FLAG_UTIL_CLAMP_MIN"]}"#,
                "process.scheduler.flags",
            ),
            (
                r#"{"policy":"SCHED_RR","priority":-1}"#,
                "process.scheduler.priority",
            ),
        ] {
            let s: oci_spec::runtime::Scheduler = serde_json::from_str(json).unwrap();
            let err = scheduler(&bundle, &s).unwrap_err();
            assert!(err.to_string().contains(field), "{json}: {err}");
        }
    }

    #[test]
    fn every_oci_capability_is_known() {
        let all: Vec<String> = (0..=40)
            .filter_map(|i| Capabilities::from_bits_truncate(1 << i).iter().next())
            .map(|c: Capability| c.to_string())
            .collect();
        let json = format!(r#"{{"bounding":{}}}"#, serde_json::to_string(&all).unwrap());
        let c = caps(&json);
        assert_eq!(set(Some(&c), "bounding").unwrap(), Capabilities::all());
    }
}
