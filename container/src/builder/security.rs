//! The builder's privilege settings: capabilities, user, groups, resource limits,
//! `no_new_privs` and the syscall filter, recorded in its security spec and prepared
//! (`crate::security`) when the sandbox is built.

use palisade_seccomp::Profile;

use super::SandboxBuilder;
use crate::security::{Capabilities, Capability, Rlimit};

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
        self.security.caps.insert(cap);
        self.security.added.insert(cap);
        self
    }

    /// Removes a capability from the sandbox's set, like `docker run --cap-drop`: the command
    /// cannot hold it, nor gain it by executing a set-user-ID program or one with file
    /// capabilities (it leaves the bounding set).
    pub fn cap_drop(&mut self, cap: Capability) -> &mut Self {
        self.security.caps.remove(cap);
        self.security.added.remove(cap);
        self
    }

    /// Removes every capability (`docker run --cap-drop ALL`); [`cap_add`](Self::cap_add) then
    /// grants single ones back.
    pub fn cap_drop_all(&mut self) -> &mut Self {
        self.security.caps = Capabilities::empty();
        self.security.added = Capabilities::empty();
        self
    }

    /// Sets the sandbox's capabilities to exactly `caps`, as [`cap_drop_all`](Self::cap_drop_all)
    /// followed by [`cap_add`](Self::cap_add) of each: a non-root user holds them all.
    pub fn capabilities(&mut self, caps: Capabilities) -> &mut Self {
        self.security.caps = caps;
        self.security.added = caps;
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
