//! The builder's privilege settings: capabilities, user, groups, resource limits,
//! `no_new_privs` and the syscall filter, recorded in its security spec and prepared
//! (`crate::security`) when the sandbox is built.

use palisade_cgroup::CpuSet;
use palisade_seccomp::Profile;

use super::SandboxBuilder;
use crate::security::{
    CapSets, Capabilities, Capability, IoPriority, Personality, Rlimit, Scheduler,
};

/// Privileges: capabilities, user, groups, resource limits, `no_new_privs` and the syscall
/// filter. See [`crate::security`] for what each becomes and the order the child applies them.
impl SandboxBuilder {
    /// The syscall filter. The default is [`Profile::default_with_capabilities`] for the
    /// sandbox's capabilities: equivalent in effect to Docker's default profile, which likewise
    /// allows what an added capability exists for (`mount` and `unshare` with
    /// `CAP_SYS_ADMIN`, `ptrace` with `CAP_SYS_PTRACE`, …). [`Profile::unconfined`] installs
    /// none; [`Profile::from_json`] reads a Docker/OCI profile (give it the capabilities in
    /// [`JsonOptions`](palisade_seccomp::JsonOptions) for its `includes`). Checked by
    /// [`build`](Self::build), which compiles it for the running architecture.
    ///
    /// The filter is installed right before the command is executed, after the capability and
    /// user changes when [`no_new_privs`](Self::no_new_privs) is on (the default), before them
    /// otherwise (then the profile must allow `prctl`, `capset`, `setgroups`, `setresgid` and
    /// `setresuid`, as the default one does). A profile with
    /// [`Action::UserNotify`](palisade_seccomp::Action::UserNotify) rules gets a
    /// user-notification listener, handed to the parent (`seccomp_unotify(2)`).
    pub fn seccomp(&mut self, profile: Profile) -> &mut Self {
        self.security.seccomp = Some(profile);
        self
    }

    /// Adds a capability to the sandbox's set (which starts as
    /// [`Capabilities::docker_default`]), like `docker run --cap-add`.
    ///
    /// As root (the default, see [`user`](Self::user)) the command holds every capability of the
    /// set in its bounding, permitted and effective sets. A non-root user holds only the
    /// capabilities added with this method (or [`capabilities`](Self::capabilities)), in its
    /// permitted, effective, inheritable and ambient sets, so that they survive the `execve(2)`
    /// of a program without file capabilities (`capabilities(7)`); the rest of the set only
    /// bounds what set-user-ID programs and file capabilities can grant. Calls apply in order:
    /// the last `cap_add` or `cap_drop` of a capability wins.
    pub fn cap_add(&mut self, cap: Capability) -> &mut Self {
        self.leave_exact_sets();
        self.security.caps.insert(cap);
        self.security.added.insert(cap);
        self
    }

    /// Removes a capability from the sandbox's set, like `docker run --cap-drop`: the command
    /// cannot hold it, nor gain it by executing a set-user-ID program or one with file
    /// capabilities (it leaves the bounding set).
    pub fn cap_drop(&mut self, cap: Capability) -> &mut Self {
        self.leave_exact_sets();
        self.security.caps.remove(cap);
        self.security.added.remove(cap);
        self
    }

    /// Removes every capability (`docker run --cap-drop ALL`); [`cap_add`](Self::cap_add) then
    /// grants single ones back.
    pub fn cap_drop_all(&mut self) -> &mut Self {
        self.security.exact = None;
        self.security.caps = Capabilities::empty();
        self.security.added = Capabilities::empty();
        self
    }

    /// Sets the sandbox's capabilities to exactly `caps`, as [`cap_drop_all`](Self::cap_drop_all)
    /// followed by [`cap_add`](Self::cap_add) of each: a non-root user holds them all.
    pub fn capabilities(&mut self, caps: Capabilities) -> &mut Self {
        self.security.exact = None;
        self.security.caps = caps;
        self.security.added = caps;
        self
    }

    /// Sets the command's five capability sets exactly, as an OCI runtime's
    /// `process.capabilities` gives them, for root and any other user alike; see [`CapSets`]
    /// for the kernel's rules, which [`build`](Self::build) checks, and for what the command
    /// holds once it has executed its program. The default seccomp profile allows what the
    /// bounding set's capabilities exist for.
    ///
    /// A later [`cap_add`](Self::cap_add) or [`cap_drop`](Self::cap_drop) goes back to the
    /// sandbox's one set, starting from these sets' bounding set and the ambient capabilities as
    /// the added ones; a later [`capabilities`](Self::capabilities) or
    /// [`cap_drop_all`](Self::cap_drop_all) replaces them.
    pub fn capability_sets(&mut self, sets: CapSets) -> &mut Self {
        self.security.caps = sets.bounding;
        self.security.added = sets.ambient;
        self.security.exact = Some(sets);
        self
    }

    /// Back to the one-set model (see [`capability_sets`](Self::capability_sets)).
    fn leave_exact_sets(&mut self) {
        self.security.exact = None;
    }

    /// The command's I/O priority (`ioprio_set(2)`, `ionice(1)`), set right before it is
    /// executed (its init and the setup before keep the caller's). The real-time class takes
    /// `CAP_SYS_ADMIN` or `CAP_SYS_NICE` on the host; without, the spawn fails with
    /// [`ChildStep::IoPriority`](crate::ChildStep::IoPriority) and `EPERM`.
    pub fn io_priority(&mut self, priority: IoPriority) -> &mut Self {
        self.security.sched.io_priority = Some(priority);
        self
    }

    /// The command's scheduling policy and parameters (`sched_setattr(2)`, `sched(7)`), set right
    /// before it is executed, while it still holds the caller's privileges: a real-time or
    /// deadline policy, or a nice value below the caller's, takes `CAP_SYS_NICE` on the host (or
    /// a matching `RLIMIT_RTPRIO`/`RLIMIT_NICE`); a refusal fails the spawn with
    /// [`ChildStep::Scheduler`](crate::ChildStep::Scheduler). [`build`](Self::build) checks
    /// the ranges.
    pub fn scheduler(&mut self, scheduler: Scheduler) -> &mut Self {
        self.security.sched.scheduler = Some(scheduler);
        self
    }

    /// The CPUs the command may run on (`sched_setaffinity(2)`, `taskset(1)`), set as the last
    /// step before its exec that its seccomp filter does not judge. Within the sandbox's
    /// [`cpuset`](Self::cpuset), if any: the kernel refuses a set with no CPU of it
    /// ([`ChildStep::CpuAffinity`](crate::ChildStep::CpuAffinity), `EINVAL`).
    pub fn cpu_affinity(&mut self, cpus: CpuSet) -> &mut Self {
        self.security.sched.final_affinity = Some(cpus);
        self
    }

    /// The CPUs the sandbox child runs on from its first step after the clone, while it sets the
    /// sandbox up (the init keeps them), until [`cpu_affinity`](Self::cpu_affinity) applies to
    /// the command: OCI's `execCPUAffinity.initial`, which keeps a runtime's work off the CPUs
    /// reserved for the workload.
    pub fn initial_cpu_affinity(&mut self, cpus: CpuSet) -> &mut Self {
        self.security.sched.initial_affinity = Some(cpus);
        self
    }

    /// The command's execution domain and personality flags (`personality(2)`), set right before
    /// it is executed, e.g. [`ExecDomain::Linux32`](crate::security::ExecDomain::Linux32), with
    /// which `uname -m` reports `i686` on x86-64.
    pub fn personality(&mut self, personality: Personality) -> &mut Self {
        self.security.sched.personality = Some(personality);
        self
    }

    /// Runs the command as user `uid` and group `gid` (default: root, of the sandbox's user
    /// namespace if it has one), with no supplementary groups unless [`groups`](Self::groups)
    /// sets some.
    ///
    /// A non-root user keeps only the capabilities explicitly granted with
    /// [`cap_add`](Self::cap_add), as ambient capabilities; see there. In a user namespace the
    /// ids are the namespace's and must be mapped in it (the default map of
    /// [`rootless`](Self::rootless) maps only root; see [`uid_map`](Self::uid_map)), otherwise the
    /// spawn fails with [`ChildStep::SetUser`](crate::ChildStep::SetUser) and `EINVAL`;
    /// and where `setgroups(2)` is denied in the namespace (an unprivileged caller's), the
    /// supplementary groups are left as they are.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.security.user = Some((uid, gid));
        self
    }

    /// Sets the command's supplementary groups (`setgroups(2)`). Without this call they are
    /// emptied when [`user`](Self::user) switches users, and otherwise left as the sandbox's
    /// root has them. In a user namespace the groups must be mapped, and `setgroups(2)` must be
    /// allowed there (it is denied when the caller is not root on the host), else the spawn
    /// fails with [`ChildStep::Groups`](crate::ChildStep::Groups).
    pub fn groups(&mut self, groups: impl IntoIterator<Item = u32>) -> &mut Self {
        self.security.groups = Some(groups.into_iter().collect());
        self
    }

    /// Sets a resource limit (`setrlimit(2)`; `docker run --ulimit`), e.g.
    /// `"nofile=1024:2048".parse()?`. A later limit on the same resource replaces an earlier one.
    /// The soft limit must not exceed the hard one ([`build`](Self::build) checks). Raising a
    /// hard limit above the caller's takes `CAP_SYS_RESOURCE` on the host, so a rootless sandbox
    /// can only lower limits; otherwise the spawn fails with [`ChildStep::Rlimit`](crate::ChildStep::Rlimit).
    pub fn rlimit(&mut self, limit: Rlimit) -> &mut Self {
        let limits = &mut self.security.rlimits;
        match limits.iter_mut().find(|l| l.resource == limit.resource) {
            Some(existing) => *existing = limit,
            None => limits.push(limit),
        }
        self
    }

    /// Whether the command runs with `no_new_privs` (default: yes, as `docker run
    /// --security-opt no-new-privileges`), under which `execve(2)` no longer grants the
    /// privileges of set-user-ID and set-group-ID programs or file capabilities (`prctl(2)`,
    /// `PR_SET_NO_NEW_PRIVS`). Turn it off for programs such as `sudo` or `ping` that rely on
    /// them; the seccomp filter is then installed before the capabilities are dropped, while
    /// `CAP_SYS_ADMIN` still allows it (see [`crate::security`]).
    pub fn no_new_privs(&mut self, on: bool) -> &mut Self {
        self.security.no_new_privs = on;
        self
    }
}
