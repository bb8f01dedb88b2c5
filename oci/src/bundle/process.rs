//! `process`: the command, its environment, user, capabilities, limits and terminal.

use oci_spec::runtime::{LinuxCapabilities, Process};
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

    capabilities(p.capabilities().as_ref(), user.uid() == 0, b)?;

    for (i, limit) in p.rlimits().iter().flatten().enumerate() {
        let name = limit.typ().to_string();
        let resource: RlimitResource = name
            .parse()
            .map_err(|_| unsupported(format!("process.rlimits[{i}].type"), &name, "unknown"))?;
        if limit.soft() > limit.hard() {
            return Err(bundle.config(format!(
                "process.rlimits[{i}]: {name} soft limit {} exceeds its hard limit {}",
                limit.soft(),
                limit.hard()
            )));
        }
        b.rlimit(Rlimit::new(resource, limit.soft(), limit.hard()));
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

    if let Some(profile) = p.apparmor_profile().as_deref().filter(|s| !s.is_empty()) {
        if apparmor_enabled() {
            return Err(unsupported(
                "process.apparmorProfile",
                profile,
                "Palisade does not apply AppArmor profiles, and AppArmor is enabled here",
            ));
        }
    }
    if let Some(label) = p.selinux_label().as_deref().filter(|s| !s.is_empty()) {
        if selinux_enabled() {
            return Err(unsupported(
                "process.selinuxLabel",
                label,
                "Palisade does not apply SELinux labels, and SELinux is enabled here",
            ));
        }
    }
    refuse_scheduling(p)
}

/// Scheduling and Windows-only fields, which Palisade does not set.
fn refuse_scheduling(p: &Process) -> Result<()> {
    if let Some(line) = p.command_line().as_deref() {
        return Err(unsupported(
            "process.commandLine",
            line,
            "a Windows field: a Linux process takes args",
        ));
    }
    if let Some(io) = p.io_priority() {
        return Err(unsupported(
            "process.ioPriority",
            format!("{io:?}"),
            "Palisade does not set I/O priorities (ioprio_set(2))",
        ));
    }
    if let Some(s) = p.scheduler() {
        return Err(unsupported(
            "process.scheduler",
            format!("{s:?}"),
            "Palisade does not set scheduling policies (sched_setattr(2))",
        ));
    }
    if let Some(a) = p.exec_cpu_affinity() {
        return Err(unsupported(
            "process.execCPUAffinity",
            format!("{a:?}"),
            "Palisade does not set CPU affinities (sched_setaffinity(2))",
        ));
    }
    Ok(())
}

/// One of the five sets, as Palisade's type; absent is empty.
fn set(caps: Option<&LinuxCapabilities>, name: &'static str) -> Result<Capabilities> {
    let Some(caps) = caps else {
        return Ok(Capabilities::empty());
    };
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

/// Maps the five capability sets onto Palisade's one set and its explicit part; see the
/// module documentation of [`crate::bundle`] for the rules and why.
fn capabilities(
    caps: Option<&LinuxCapabilities>,
    root: bool,
    b: &mut SandboxBuilder,
) -> Result<()> {
    let bounding = set(caps, "bounding")?;
    let effective = set(caps, "effective")?;
    let inheritable = set(caps, "inheritable")?;
    let permitted = set(caps, "permitted")?;
    let ambient = set(caps, "ambient")?;
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
        effective,
        permitted,
        "not permitted: capset(2) refuses an effective capability that is not permitted",
    )?;
    if root {
        if !inheritable.is_empty() {
            return Err(unsupported(
                "process.capabilities.inheritable",
                inheritable,
                "Palisade leaves root's inheritable set empty",
            ));
        }
        outside(
            "permitted",
            permitted,
            bounding,
            "not in the bounding set: root holds exactly its bounding set after execve(2)",
        )?;
        b.capabilities(bounding);
        return Ok(());
    }
    outside(
        "ambient",
        ambient,
        permitted.intersection(inheritable),
        "not permitted and inheritable: the kernel refuses to raise it (prctl(2))",
    )?;
    outside(
        "ambient",
        ambient,
        bounding,
        "not in the bounding set: Palisade grants a non-root user only capabilities of its \
         bounding set",
    )?;
    if inheritable != ambient {
        return Err(unsupported(
            "process.capabilities.inheritable",
            inheritable,
            "Palisade gives a non-root user the same inheritable and ambient sets",
        ));
    }
    outside(
        "bounding",
        bounding.difference(ambient),
        Capabilities::docker_default(),
        "Palisade cannot keep a capability beyond Docker's defaults in a non-root user's \
         bounding set without granting it as ambient",
    )?;
    // From Docker's set (the builder's start), drop what the bounding set lacks, then grant
    // the ambient ones, which joins them to the set.
    for cap in Capabilities::docker_default().difference(bounding) {
        b.cap_drop(cap);
    }
    for cap in ambient {
        b.cap_add(cap);
    }
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
    fn root_takes_the_bounding_set() {
        let mut b = palisade::Sandbox::builder("true");
        let c = caps(
            r#"{"bounding":["CAP_KILL","CAP_SYS_ADMIN"],"effective":["CAP_KILL"],
                "permitted":["CAP_KILL"],"ambient":["CAP_KILL"]}"#,
        );
        capabilities(Some(&c), true, &mut b).unwrap();
        let c = caps(r#"{"bounding":["CAP_KILL"],"inheritable":["CAP_KILL"]}"#);
        let err = capabilities(Some(&c), true, &mut b).unwrap_err();
        assert!(err.to_string().contains("inheritable"), "{err}");
        let c = caps(r#"{"bounding":["CAP_KILL"],"permitted":["CAP_CHOWN"]}"#);
        let err = capabilities(Some(&c), true, &mut b).unwrap_err();
        assert!(err.to_string().contains("permitted"), "{err}");
        capabilities(None, true, &mut b).unwrap();
    }

    #[test]
    fn non_root_keeps_its_ambient_set() {
        let mut b = palisade::Sandbox::builder("true");
        let c = caps(
            r#"{"bounding":["CAP_KILL","CAP_NET_ADMIN"],"permitted":["CAP_NET_ADMIN"],
                "effective":["CAP_NET_ADMIN"],"inheritable":["CAP_NET_ADMIN"],
                "ambient":["CAP_NET_ADMIN"]}"#,
        );
        capabilities(Some(&c), false, &mut b).unwrap();
        // containerd's for a non-root user: no ambient set.
        let c =
            caps(r#"{"bounding":["CAP_KILL"],"permitted":["CAP_KILL"],"effective":["CAP_KILL"]}"#);
        capabilities(Some(&c), false, &mut b).unwrap();
        for (json, field) in [
            (r#"{"bounding":["CAP_NET_ADMIN"]}"#, "bounding"),
            (
                r#"{"ambient":["CAP_KILL"],"bounding":["CAP_KILL"]}"#,
                "ambient",
            ),
            (
                r#"{"bounding":["CAP_KILL"],"permitted":["CAP_KILL"],"inheritable":["CAP_KILL"]}"#,
                "inheritable",
            ),
            (r#"{"effective":["CAP_KILL"]}"#, "effective"),
        ] {
            let err = capabilities(Some(&caps(json)), false, &mut b).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("process.capabilities.{field}")),
                "{json}: {err}"
            );
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
