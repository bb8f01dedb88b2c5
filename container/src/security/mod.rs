//! Privileges of the sandboxed command: capabilities, user and groups, resource limits,
//! `no_new_privs` and the seccomp filter.
//!
//! By default a sandbox runs its command the way `docker run` runs a container's: as root (of
//! the sandbox's user namespace, if it has one) holding only Docker's default capabilities less
//! `CAP_NET_RAW`, as podman's ([`Capabilities::docker_default`]; `ping` works through ICMP
//! datagram sockets, which a sandbox with its own network namespace opens to every group), with
//! `no_new_privs` set and the default seccomp profile ([`Profile::default_profile`]; with
//! capabilities added, the syscalls they exist for are allowed too:
//! [`Profile::default_with_capabilities`]). The builder changes that:
//!
//! ```no_run
//! use palisade::seccomp::Profile;
//! use palisade::{Capability, Rlimit, Sandbox};
//!
//! let status = Sandbox::builder("ping")
//!     .args(["-c1", "127.0.0.1"])
//!     .seccomp(Profile::default_profile())
//!     .cap_drop_all()
//!     .cap_add(Capability::CAP_NET_RAW) // kept by the non-root user, through exec
//!     .user(65534, 65534)
//!     .groups([65534])
//!     .rlimit("nofile=1024:2048".parse::<Rlimit>()?)
//!     .status()?;
//! assert!(status.success());
//! # Ok::<(), palisade::Error>(())
//! ```
//!
//! # Capability sets
//!
//! A process has five capability sets (`capabilities(7)`). The builder describes one set, the
//! sandbox's capabilities (Docker's defaults, changed by
//! [`cap_add`](crate::SandboxBuilder::cap_add) and
//! [`cap_drop`](crate::SandboxBuilder::cap_drop)), which becomes:
//!
//! | the command runs as | bounding | permitted, effective | inheritable, ambient |
//! |---|---|---|---|
//! | root (no [`user`](crate::SandboxBuilder::user), or uid 0) | the set | the set | empty |
//! | another user | the set | the set's capabilities added with `cap_add` | the same |
//!
//! Root's inheritable and ambient sets stay empty, as in Docker since CVE-2022-24769: a
//! capability there would survive into programs executed later without belonging to the
//! container's intent. A non-root user gets only what was explicitly added, as with podman, and
//! gets it as ambient capabilities, the only kind a non-root process keeps when it executes a
//! program without file capabilities (`capabilities(7)`, "Transformation of capabilities during
//! execve()"). Capabilities the running kernel does not know (above
//! `/proc/sys/kernel/cap_last_cap`) are left out, and so are, from every set but the bounding
//! set, those the caller does not hold itself (its permitted and bounding sets): a process
//! cannot grant what it lacks (`capset(2)`). In a user namespace all of this is relative to that
//! namespace, where the sandbox starts with every capability (`user_namespaces(7)`).
//!
//! [`capability_sets`](crate::SandboxBuilder::capability_sets) gives the five sets exactly
//! instead ([`CapSets`], as an OCI runtime's configuration does), for root and any other user:
//! they are applied as given (less what the kernel does not know or the child does not hold,
//! as above), and `execve(2)` then transforms them by the kernel's rules, described there. The
//! default seccomp profile follows their bounding set.
//!
//! # Scheduling and personality
//!
//! The command's I/O priority ([`IoPriority`]), scheduling policy ([`Scheduler`]), CPU affinity
//! and personality ([`Personality`]) are set by the command itself among these last steps; the
//! sandbox's init keeps the caller's (or the initial CPU affinity, which the child sets first
//! thing after the clone), and so does a command run in the sandbox later
//! ([`Child::exec`](crate::Child::exec)), as `runc exec` does without a process of its own.
//!
//! # Order
//!
//! The child applies the plan as its very last step before `execve(2)`, after the mounts, the
//! hostname and everything else that needs privilege. Each step below needs a privilege or a
//! state that a later one removes, which fixes the order:
//!
//! 1. **Resource limits**, `prlimit(2)` on itself. Raising a hard limit takes
//!    `CAP_SYS_RESOURCE` (`setrlimit(2)`), which the capability steps may drop.
//! 2. **Personality, I/O priority and scheduling policy**: `personality(2)`, `ioprio_set(2)`,
//!    `sched_setattr(2)`. A real-time class or policy, or a lower nice value, takes
//!    `CAP_SYS_NICE` or `CAP_SYS_ADMIN` (`sched(7)`, `ioprio_set(2)`), which step 6 may drop; and
//!    no filter judges them yet. With `no_new_privs` off, the final CPU affinity
//!    (`sched_setaffinity(2)`) too, since the filter goes in next.
//! 3. **The seccomp filter, when `no_new_privs` is off.** Without `no_new_privs`, `seccomp(2)`
//!    accepts a filter only from a thread with `CAP_SYS_ADMIN` in its user namespace, which step
//!    6 takes away. The filter then also judges the calls of steps 4 to 7 (`prctl`, `setgroups`,
//!    `setresgid`, `setresuid`, `capset`), which the default profile allows; a custom profile
//!    must allow them too.
//! 4. **The bounding set**: `prctl(PR_CAPBSET_DROP)` for each capability outside the set. It
//!    takes `CAP_SETPCAP` (`prctl(2)`), which step 6 may drop. Dropping from the bounding set
//!    leaves the current sets alone; it caps what any later `execve(2)` can grant.
//! 5. **User and groups**: `setgroups(2)`, `setresgid(2)`, then `setresuid(2)`. They take
//!    `CAP_SETGID` and `CAP_SETUID`, which the new sets may lack, and the groups go first
//!    because changing the user from root to another clears the effective set
//!    (`capabilities(7)`, "Effect of user ID changes on capabilities"). That change clears the
//!    permitted set too, unless `prctl(PR_SET_KEEPCAPS)` was set first, which is done when the
//!    new user keeps capabilities. The raw `setresuid` changes the calling thread only, which
//!    is the whole process here (the child is single-threaded); `setresuid(2)` explains why
//!    libc's wrapper signals every thread.
//! 6. **Permitted, effective and inheritable sets**, `capset(2)`: after the user switch, which
//!    needed the capabilities this may drop, and which cleared the effective set.
//! 7. **Ambient set**: cleared, then each capability raised with `prctl(PR_CAP_AMBIENT)`, which
//!    requires it to be permitted and inheritable already, i.e. after step 6.
//! 8. **`no_new_privs`**, `prctl(PR_SET_NO_NEW_PRIVS)` (if on): from here `execve(2)` grants no
//!    set-user-ID, set-group-ID or file capabilities (`prctl(2)`).
//! 9. **The final CPU affinity, when `no_new_privs` is on**: `sched_setaffinity(2)`, the last
//!    call before the exec that no filter judges.
//! 10. **The seccomp filter, when `no_new_privs` is on**: last, now allowed without
//!     `CAP_SYS_ADMIN` (`seccomp(2)`), so that it judges only what is left: the `execve(2)`,
//!     and on failure the `write(2)` of the error report and `exit_group(2)` (with a
//!     user-notification listener, also the `sendmsg(2)` and `close(2)` that hand it to the
//!     parent). A custom profile need not allow the privileged calls above.
//!
//! A profile with [`Action::UserNotify`] rules (or the `NEW_LISTENER` flag) is loaded with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and the listener it returns is handed to the parent;
//! [`Profile::unconfined`] loads no filter at all.

mod apply;
mod capabilities;
mod rlimit;
mod sched;

use std::sync::OnceLock;

use palisade_seccomp::{Action, Arch, BpfProgram, LoadFlags, Profile, SeccompData};
use rustix::process::{Gid, Uid};

pub use capabilities::{parse_capability, CapSets, Capabilities, Capability};
pub use rlimit::{Rlimit, RlimitResource};
pub(crate) use sched::SchedSpec;
pub use sched::{ExecDomain, IoClass, IoPriority, Personality, SchedFlags, SchedPolicy, Scheduler};

use crate::error::{ChildStep, Error, Result};

/// The kernel's limit on supplementary groups (`NGROUPS_MAX`, `setgroups(2)`).
const NGROUPS_MAX: usize = 65536;

/// What the builder was told of the command's privileges; its setters live with the builder
/// (`crate::builder::security`), its preparation here.
#[derive(Debug, Clone)]
pub(crate) struct SecuritySpec {
    /// The sandbox's capabilities: the bounding set, and root's permitted and effective sets.
    pub(crate) caps: Capabilities,
    /// Those of `caps` given explicitly ([`cap_add`](crate::SandboxBuilder::cap_add)), which a
    /// non-root user keeps.
    pub(crate) added: Capabilities,
    /// The five sets exactly ([`capability_sets`](crate::SandboxBuilder::capability_sets)),
    /// which replace what `caps` and `added` make; `caps` is then their bounding set.
    pub(crate) exact: Option<CapSets>,
    /// Scheduling, CPU affinity and personality of the command.
    pub(crate) sched: SchedSpec,
    /// `(uid, gid)` to switch to.
    pub(crate) user: Option<(u32, u32)>,
    /// Supplementary groups to set.
    pub(crate) groups: Option<Vec<u32>>,
    /// One per resource, in the order first given.
    pub(crate) rlimits: Vec<Rlimit>,
    pub(crate) no_new_privs: bool,
    /// `None`: the default profile, adapted to `caps`.
    pub(crate) seccomp: Option<Profile>,
}

impl Default for SecuritySpec {
    /// Docker's default capabilities, `no_new_privs`, the default seccomp profile; no user or
    /// group change, no limits.
    fn default() -> SecuritySpec {
        SecuritySpec {
            caps: Capabilities::docker_default(),
            added: Capabilities::empty(),
            exact: None,
            sched: SchedSpec::default(),
            user: None,
            groups: None,
            rlimits: Vec::new(),
            no_new_privs: true,
            seccomp: None,
        }
    }
}

/// Facts about the sandbox that the security plan depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SecurityContext {
    /// The sandbox has its own user namespace.
    pub user_ns: bool,
    /// Its user namespace denies `setgroups(2)` (`user_namespaces(7)`: an unprivileged writer
    /// of its `gid_map` must deny it).
    pub setgroups_denied: bool,
}

/// The capability sets to apply, as masks indexed by capability number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapMasks {
    pub bounding: u64,
    pub permitted: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub ambient: u64,
}

impl CapMasks {
    /// The sets for the capabilities `set` (of which `added` were given explicitly), for root
    /// or another user, on a kernel whose highest capability is `last_cap`, in a child that
    /// starts out holding `held`; see the module documentation.
    pub(crate) fn compute(
        set: Capabilities,
        added: Capabilities,
        root: bool,
        last_cap: u32,
        held: u64,
    ) -> CapMasks {
        let set = set.bits() & valid_mask(last_cap);
        // capset(2) cannot grant what the process does not hold.
        let grantable = set & held;
        let kept = if root {
            grantable
        } else {
            grantable & added.bits()
        };
        let passed_on = if root { 0 } else { kept };
        CapMasks {
            bounding: set,
            permitted: kept,
            effective: kept,
            inheritable: passed_on,
            ambient: passed_on,
        }
    }
}

impl CapMasks {
    /// The sets given exactly, checked (see [`CapSets`]), on a kernel whose highest capability
    /// is `last_cap`, in a child that starts out holding `held`: as for
    /// [`compute`](Self::compute), what the kernel does not know is left out, and so is, from
    /// every set but the bounding set, what the child does not hold.
    pub(crate) fn exact(sets: &CapSets, last_cap: u32, held: u64) -> Result<CapMasks> {
        sets.check()?;
        let valid = valid_mask(last_cap);
        let grantable = |set: Capabilities| set.bits() & valid & held;
        Ok(CapMasks {
            bounding: sets.bounding.bits() & valid,
            permitted: grantable(sets.permitted),
            effective: grantable(sets.effective),
            inheritable: grantable(sets.inheritable),
            ambient: grantable(sets.ambient),
        })
    }
}

/// The capabilities numbered 0 to `last_cap`.
fn valid_mask(last_cap: u32) -> u64 {
    u64::MAX >> (63 - last_cap.min(63))
}

/// Everything the child applies, prepared before the clone: plain data for raw system calls.
#[derive(Debug, Clone)]
pub(crate) struct SecurityPlan {
    /// The limits for `prlimit64(2)`, as the kernel's resources and values.
    rlimits: Vec<(rustix::process::Resource, rustix::process::Rlimit)>,
    /// Capabilities to drop from the bounding set (all at most the kernel's last).
    bounding_drop: u64,
    caps: CapMasks,
    /// Set `PR_SET_KEEPCAPS` before switching to a non-root user who keeps capabilities.
    keep_caps: bool,
    /// Supplementary groups for `setgroups(2)`; `None` leaves them alone.
    groups: Option<Vec<rustix::process::Gid>>,
    user: Option<(rustix::process::Uid, rustix::process::Gid)>,
    no_new_privs: bool,
    /// The compiled filter for the running architecture; `None` when unconfined.
    seccomp: Option<BpfProgram>,
    seccomp_flags: LoadFlags,
    /// The limits as given, for messages.
    rlimit_spec: Vec<Rlimit>,
    /// Whether the filter (if any) lets `read(2)` through.
    read_allowed: bool,
    /// Scheduling, CPU affinity and personality, for the sandbox's command only (neither its
    /// init nor a command run in the sandbox later takes them).
    sched: sched::SchedPlan,
}

impl SecuritySpec {
    /// Whether the command's capability set holds `cap`.
    pub(crate) fn grants(&self, cap: Capability) -> bool {
        self.caps.contains(cap)
    }

    /// The uid the command switches to, if any.
    pub(crate) fn user_id(&self) -> Option<u32> {
        self.user.map(|(uid, _)| uid)
    }

    /// Whether the command runs as root (of its user namespace).
    fn root(&self) -> bool {
        self.user.is_none_or(|(uid, _)| uid == 0)
    }

    /// Validates the settings and turns them into what the child needs (parent side, before
    /// the clone).
    pub(crate) fn prepare(&self, ctx: SecurityContext) -> Result<SecurityPlan> {
        // `-1` means "unchanged" to setresuid(2), setresgid(2) and chown(2).
        let unchanged = u32::MAX;
        if let Some((uid, gid)) = self.user {
            for (what, id) in [("user id", uid), ("group id", gid)] {
                if id == unchanged {
                    return Err(Error::InvalidValue {
                        what,
                        value: id.to_string(),
                        reason: "-1 (4294967295) means \"unchanged\" to setresuid(2), not an id",
                    });
                }
            }
        }
        if let Some(groups) = &self.groups {
            if groups.len() > NGROUPS_MAX {
                return Err(Error::InvalidValue {
                    what: "supplementary groups",
                    value: format!("{} groups", groups.len()),
                    reason: "more than the kernel's NGROUPS_MAX (65536)",
                });
            }
            if ctx.setgroups_denied {
                return Err(Error::InvalidValue {
                    what: "supplementary groups",
                    value: format!("{groups:?}"),
                    reason: "the sandbox's user namespace denies setgroups(2), as it must when \
                             an unprivileged caller maps it",
                });
            }
            if groups.contains(&unchanged) {
                return Err(Error::InvalidValue {
                    what: "supplementary group",
                    value: unchanged.to_string(),
                    reason: "-1 (4294967295) means \"unchanged\" to the kernel, not an id",
                });
            }
        }
        for limit in &self.rlimits {
            limit.validate()?;
        }

        let last = last_cap();
        let held = if ctx.user_ns {
            // A new user namespace starts with every capability in it (`user_namespaces(7)`).
            u64::MAX
        } else {
            held_by_caller()
        };
        let caps = match &self.exact {
            Some(sets) => CapMasks::exact(sets, last, held)?,
            None => CapMasks::compute(self.caps, self.added, self.root(), last, held),
        };
        let sched = self.sched.prepare()?;
        let groups = match (&self.groups, self.user) {
            (Some(groups), _) => Some(groups.clone()),
            // A new user starts without the caller's groups. In a user namespace setgroups(2)
            // may be denied (`user_namespaces(7)`); there the child has already dropped them
            // where it could.
            (None, Some(_)) if !ctx.user_ns => Some(Vec::new()),
            (None, _) => None,
        };

        let adapted;
        let profile = match &self.seccomp {
            Some(profile) => profile,
            None => {
                let names = self.caps.iter().map(|cap| cap.to_string());
                adapted = Profile::default_with_capabilities(names);
                &adapted
            }
        };
        let seccomp = profile.compile(Arch::native())?;
        // The child is single-threaded: TSYNC has nothing to synchronise, and it cannot be
        // combined with NEW_LISTENER on its own.
        let mut seccomp_flags = profile.load_flags() - (LoadFlags::TSYNC | LoadFlags::TSYNC_ESRCH);
        if seccomp.as_ref().is_some_and(notifies) {
            seccomp_flags |= LoadFlags::NEW_LISTENER;
        }
        if let Some(program) = &seccomp {
            check_can_finish(program, seccomp_flags.contains(LoadFlags::NEW_LISTENER))?;
        }
        if seccomp.is_none() {
            seccomp_flags = LoadFlags::empty();
        }

        let read_allowed = seccomp
            .as_ref()
            .is_none_or(|p| action(p, libc::SYS_read).is_ok_and(allowed));
        Ok(SecurityPlan {
            rlimits: self
                .rlimits
                .iter()
                .copied()
                .map(Rlimit::to_kernel)
                .collect(),
            bounding_drop: valid_mask(last) & !caps.bounding,
            keep_caps: !self.root() && caps.permitted != 0,
            caps,
            // -1, the one value these must not hold, was refused above.
            groups: groups.map(|g| g.into_iter().map(Gid::from_raw_unchecked).collect()),
            user: self
                .user
                .map(|(uid, gid)| (Uid::from_raw_unchecked(uid), Gid::from_raw_unchecked(gid))),
            no_new_privs: self.no_new_privs,
            seccomp,
            seccomp_flags,
            rlimit_spec: self.rlimits.clone(),
            read_allowed,
            sched,
        })
    }
}

impl SecurityPlan {
    /// The plan of a command run in the sandbox as another user or with fewer capabilities
    /// (`docker exec --user`): never more than this plan's bounding set, the sandbox command's,
    /// and under this plan's filter and limits. A user switch without capabilities given keeps
    /// root's capabilities for root and none for anyone else, as the sandbox's command would get;
    /// capabilities given are the exact set, kept by a non-root user too.
    ///
    /// `user_ns`: the exec runs as root of the sandbox's own user namespace before it applies
    /// this plan, so it holds every capability there.
    pub(crate) fn narrowed(
        &self,
        user: Option<(u32, u32)>,
        caps: Option<Capabilities>,
        user_ns: bool,
    ) -> Result<SecurityPlan> {
        let mut base = self.clone();
        // A command run later starts from the scheduling of whoever runs it, as with `runc
        // exec`: the sandbox command's is its own.
        base.sched = sched::SchedPlan::default();
        if user.is_none() && caps.is_none() {
            return Ok(base);
        }
        let sandbox = Capabilities::from_bits_truncate(self.caps.bounding);
        let set = match caps {
            Some(c) if !c.difference(sandbox).is_empty() => {
                return Err(Error::InvalidValue {
                    what: "capabilities of an exec",
                    value: c
                        .difference(sandbox)
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    reason: "more than the sandbox's command may hold",
                })
            }
            Some(c) => c,
            None => sandbox,
        };
        let unchanged = u32::MAX;
        if let Some((uid, gid)) = user {
            if uid == unchanged || gid == unchanged {
                return Err(Error::InvalidValue {
                    what: "user of an exec",
                    value: format!("{uid}:{gid}"),
                    reason: "-1 (4294967295) means \"unchanged\" to setresuid(2), not an id",
                });
            }
        }
        let user = user
            .map(|(u, g)| (Uid::from_raw_unchecked(u), Gid::from_raw_unchecked(g)))
            .or(self.user);
        let root = user.is_none_or(|(u, _)| u.is_root());
        let added = caps.unwrap_or_else(|| {
            if user.is_some() && !root {
                Capabilities::empty()
            } else {
                set
            }
        });
        let last = last_cap();
        let held = if user_ns { u64::MAX } else { held_by_caller() };
        let masks = CapMasks::compute(set, added, root, last, held);
        let mut plan = base;
        plan.bounding_drop = valid_mask(last) & !masks.bounding;
        plan.keep_caps = !root && masks.permitted != 0;
        plan.caps = masks;
        if plan.user != user {
            // A new user starts without the sandbox command's groups, where it may drop them.
            plan.groups = if user_ns { None } else { Some(Vec::new()) };
            plan.user = user;
        }
        Ok(plan)
    }
}

impl SecurityPlan {
    /// This plan with the supplementary groups `groups`, for a command run in the sandbox
    /// ([`Exec::groups`](crate::Exec::groups)): only groups the command of `sandbox` could
    /// take itself, any with `CAP_SETGID` in its bounding set, its own groups and gid without.
    pub(crate) fn with_groups(mut self, groups: &[u32], sandbox: &SecurityPlan) -> Result<Self> {
        let refuse = |reason| Error::InvalidValue {
            what: "supplementary groups of an exec",
            value: groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            reason,
        };
        if groups.len() > NGROUPS_MAX {
            return Err(refuse("more than setgroups(2) takes (NGROUPS_MAX)"));
        }
        if groups.contains(&u32::MAX) {
            return Err(refuse("-1 (4294967295) is not a group"));
        }
        let may_set = sandbox.caps.bounding & Capability::CAP_SETGID.bitmask() != 0;
        let gid = sandbox.user.map_or(0, |(_, g)| g.as_raw());
        let own = |g: &u32| *g == gid || sandbox.groups.iter().flatten().any(|o| o.as_raw() == *g);
        if !may_set && !groups.iter().all(own) {
            return Err(refuse(
                "more than the sandbox's command may hold: it has no CAP_SETGID, and they are \
                 not among its own groups",
            ));
        }
        self.groups = Some(groups.iter().map(|&g| Gid::from_raw_unchecked(g)).collect());
        Ok(self)
    }

    /// The limit the plan sets for `resource`, if it sets one.
    pub(crate) fn rlimit(&self, resource: RlimitResource) -> Option<Rlimit> {
        self.rlimit_spec
            .iter()
            .rev()
            .find(|l| l.resource == resource)
            .copied()
    }

    /// This plan with `limit` in place of its own for that resource.
    pub(crate) fn with_rlimit(mut self, limit: Rlimit) -> Result<Self> {
        limit.validate()?;
        self.rlimit_spec.retain(|l| l.resource != limit.resource);
        self.rlimit_spec.push(limit);
        self.rlimits = self
            .rlimit_spec
            .iter()
            .copied()
            .map(Rlimit::to_kernel)
            .collect();
        Ok(self)
    }

    /// This plan with `no_new_privs` (`prctl(2)`), which it may gain and never lose.
    pub(crate) fn with_no_new_privs(mut self) -> Self {
        self.no_new_privs = true;
        self
    }
}

/// A [`SecurityPlan`] as a sandbox's record keeps it, for a command run in the sandbox from
/// another process (`exec.json`, see [`crate::state`]): the plan exactly as prepared, the
/// compiled filter included, so that the exec is confined as the sandbox's command is.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SecurityRecord {
    rlimits: Vec<String>,
    bounding_drop: u64,
    /// Bounding, permitted, effective, inheritable, ambient.
    caps: [u64; 5],
    keep_caps: bool,
    groups: Option<Vec<u32>>,
    user: Option<(u32, u32)>,
    no_new_privs: bool,
    /// `(code, jt, jf, k)` per instruction.
    seccomp: Option<Vec<(u16, u8, u8, u32)>>,
    seccomp_flags: u64,
    read_allowed: bool,
}

impl SecurityPlan {
    /// The plan as recorded.
    pub(crate) fn to_record(&self) -> SecurityRecord {
        let c = &self.caps;
        SecurityRecord {
            rlimits: self.rlimit_spec.iter().map(ToString::to_string).collect(),
            bounding_drop: self.bounding_drop,
            caps: [
                c.bounding,
                c.permitted,
                c.effective,
                c.inheritable,
                c.ambient,
            ],
            keep_caps: self.keep_caps,
            groups: self
                .groups
                .as_ref()
                .map(|g| g.iter().map(|g| g.as_raw()).collect()),
            user: self.user.map(|(u, g)| (u.as_raw(), g.as_raw())),
            no_new_privs: self.no_new_privs,
            seccomp: self.seccomp.as_ref().map(|p| {
                p.instructions()
                    .iter()
                    .map(|i| (i.code, i.jt, i.jf, i.k))
                    .collect()
            }),
            seccomp_flags: self.seccomp_flags.bits(),
            read_allowed: self.read_allowed,
        }
    }

    /// The plan back from its record; refuses what no prepared plan holds.
    pub(crate) fn from_record(r: SecurityRecord) -> Result<SecurityPlan> {
        let invalid = |value: String, reason| Error::InvalidValue {
            what: "recorded security plan",
            value,
            reason,
        };
        let rlimit_spec = r
            .rlimits
            .iter()
            .map(|s| s.parse::<Rlimit>())
            .collect::<Result<Vec<_>>>()?;
        let unchanged = u32::MAX;
        if r.user
            .is_some_and(|(u, g)| u == unchanged || g == unchanged)
            || r.groups.as_ref().is_some_and(|g| g.contains(&unchanged))
        {
            return Err(invalid(format!("{:?}", r.user), "holds the id -1"));
        }
        let seccomp = r
            .seccomp
            .map(|insns| {
                BpfProgram::new(
                    insns
                        .into_iter()
                        .map(|(code, jt, jf, k)| palisade_seccomp::SockFilter { code, jt, jf, k })
                        .collect(),
                )
            })
            .transpose()?;
        let seccomp_flags = LoadFlags::from_bits(r.seccomp_flags)
            .ok_or_else(|| invalid(r.seccomp_flags.to_string(), "unknown seccomp flags"))?;
        let [bounding, permitted, effective, inheritable, ambient] = r.caps;
        Ok(SecurityPlan {
            rlimits: rlimit_spec.iter().copied().map(Rlimit::to_kernel).collect(),
            bounding_drop: r.bounding_drop,
            caps: CapMasks {
                bounding,
                permitted,
                effective,
                inheritable,
                ambient,
            },
            keep_caps: r.keep_caps,
            groups: r
                .groups
                .map(|g| g.into_iter().map(Gid::from_raw_unchecked).collect()),
            user: r
                .user
                .map(|(u, g)| (Uid::from_raw_unchecked(u), Gid::from_raw_unchecked(g))),
            no_new_privs: r.no_new_privs,
            seccomp,
            seccomp_flags,
            rlimit_spec,
            read_allowed: r.read_allowed,
            // Not recorded: only the sandbox's own command takes them (see `narrowed`).
            sched: sched::SchedPlan::default(),
        })
    }
}

/// Refuses a filter under which the child could not finish its last steps: it runs them after
/// the filter is in, so a profile that makes `exit_group(2)` fail would leave the child spinning
/// forever, and one that sends `execve(2)` or the error report to a user-notification listener
/// would wait for an answer that cannot come before the spawn returns (the listener is handed
/// over with the exec). The calls are judged with the filter's own program, by the reference
/// interpreter, as the kernel would (`seccomp(2)`).
fn check_can_finish(program: &BpfProgram, listener: bool) -> Result<()> {
    let action = |nr| action(program, nr);
    let ends = |ret: u32| {
        allowed(ret)
            || matches!(
                ret,
                libc::SECCOMP_RET_KILL_PROCESS
                    | libc::SECCOMP_RET_KILL_THREAD
                    | libc::SECCOMP_RET_TRAP
            )
    };
    let refuse = |call: &str, reason: &'static str| {
        Err(Error::InvalidValue {
            what: "seccomp profile",
            value: call.to_owned(),
            reason,
        })
    };
    for (nr, name) in [
        (libc::SYS_exit_group, "exit_group"),
        (libc::SYS_exit, "exit"),
    ] {
        if !ends(action(nr)?) {
            return refuse(
                name,
                "must end the process (allow, log, kill or trap): the sandbox child calls it \
                 after the filter is installed, and could never exit",
            );
        }
    }
    let mut reported = vec![
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_write, "write"),
    ];
    if listener {
        reported.extend([(libc::SYS_sendmsg, "sendmsg"), (libc::SYS_close, "close")]);
    }
    for (nr, name) in reported {
        if action(nr)? == libc::SECCOMP_RET_USER_NOTIF {
            return refuse(
                name,
                "must not notify a listener: the sandbox child makes this call after the \
                 filter is installed, before the listener reaches anyone who could answer",
            );
        }
    }
    Ok(())
}

/// What `program` answers the system call `nr` (with all-zero arguments), by the reference
/// interpreter: the `SECCOMP_RET_*` action.
fn action(program: &BpfProgram, nr: libc::c_long) -> palisade_seccomp::Result<u32> {
    let data = SeccompData::new(Arch::native(), nr as u32, [0; 6]);
    program
        .interpret(&data)
        .map(|ret| ret & libc::SECCOMP_RET_ACTION_FULL)
}

/// Whether an action lets the call through.
fn allowed(action: u32) -> bool {
    matches!(action, libc::SECCOMP_RET_ALLOW | libc::SECCOMP_RET_LOG)
}

/// Whether a compiled program can return `SECCOMP_RET_USER_NOTIF`, which needs a listener.
fn notifies(program: &BpfProgram) -> bool {
    const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    program.instructions().iter().any(|insn| {
        insn.code == BPF_RET_K && insn.k & libc::SECCOMP_RET_ACTION_FULL == Action::UserNotify.ret()
    })
}

/// The capabilities the caller holds and can pass on, which a child outside a new user namespace
/// starts with: its permitted set within its bounding set (`capabilities(7)`). All of them if
/// the sets cannot be read (then `capset(2)` in the child reports what is missing).
fn held_by_caller() -> u64 {
    let read = |set| caps::read(None, set).map(|held| held.into_iter().collect::<Capabilities>());
    match (read(caps::CapSet::Permitted), read(caps::CapSet::Bounding)) {
        (Ok(permitted), Ok(bounding)) => permitted.intersection(bounding).bits(),
        _ => u64::MAX,
    }
}

/// The highest capability number the running kernel knows (`capabilities(7)`): from
/// `/proc/sys/kernel/cap_last_cap`, or where `/proc` is not mounted by probing the bounding set
/// with `prctl(PR_CAPBSET_READ)`, which fails with `EINVAL` past the last capability.
fn last_cap() -> u32 {
    static LAST: OnceLock<u32> = OnceLock::new();
    *LAST.get_or_init(|| {
        let from_proc = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        from_proc.unwrap_or_else(|| {
            // SAFETY: PR_CAPBSET_READ takes integer arguments and only reads.
            let known = |n: u32| unsafe { libc::prctl(libc::PR_CAPBSET_READ, n, 0, 0, 0) } >= 0;
            (1..64).take_while(|&n| known(n)).last().unwrap_or(0)
        })
    })
}

impl SecurityPlan {
    /// Whether the command could ever hold `CAP_SYS_PTRACE` (its bounding set has it), which
    /// lets it trace a process that is not dumpable (`ptrace(2)`).
    pub(crate) fn may_trace(&self) -> bool {
        self.caps.bounding & Capability::CAP_SYS_PTRACE.bitmask() != 0
    }

    /// The CPUs the sandbox child runs on from its first step (`execCPUAffinity.initial`), if
    /// given.
    pub(crate) fn initial_affinity(&self) -> Option<&rustix::thread::CpuSet> {
        self.sched.initial_affinity.as_ref()
    }

    /// Whether the command may still wait on the init's gate with `read(2)` once its filter is
    /// in (see `spawn::init`); with no filter, trivially.
    pub(crate) fn filter_allows_read(&self) -> bool {
        self.read_allowed
    }

    /// Whether the child will hand back a seccomp user-notification listener.
    pub(crate) fn wants_listener(&self) -> bool {
        self.seccomp_flags.contains(LoadFlags::NEW_LISTENER)
    }

    /// What a failed security step was acting on, for the error's context (`Sandbox::context`
    /// in `spawn`).
    pub(crate) fn describe(&self, step: ChildStep) -> Option<String> {
        match step {
            ChildStep::SetUser => self
                .user
                .map(|(uid, gid)| format!("uid {}, gid {}", uid.as_raw(), gid.as_raw())),
            ChildStep::Groups => self.groups.as_ref().map(|groups| {
                let list: Vec<String> = groups.iter().map(|g| g.as_raw().to_string()).collect();
                format!("groups {}", list.join(","))
            }),
            ChildStep::Rlimit if !self.rlimit_spec.is_empty() => {
                let list: Vec<String> = self.rlimit_spec.iter().map(Rlimit::to_string).collect();
                Some(list.join(" "))
            }
            _ => self.sched.describe(step),
        }
    }
}

#[cfg(test)]
mod tests;
