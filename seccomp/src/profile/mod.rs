//! Profiles: architecture-independent policies that compile to a [`Filter`] per architecture.
//!
//! A profile names syscalls rather than numbering them, so one profile serves every supported
//! architecture; a name an architecture lacks (`open` on aarch64, `arch_prctl` outside x86-64) is
//! skipped for that architecture and reported by [`Profile::skipped_syscalls`].

mod default;
mod json;

use std::collections::BTreeSet;

use crate::arch::Arch;
use crate::bpf::BpfProgram;
use crate::error::Result;
use crate::load::LoadFlags;
use crate::rule::{Action, Filter, Rule, Syscall};

pub use json::JsonOptions;

/// One rule of a profile, possibly restricted to some architectures.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProfileRule {
    rule: Rule,
    /// `None`: every architecture.
    arches: Option<Vec<Arch>>,
}

/// A filtering policy: a default action and rules by syscall name, or no filter at all.
///
/// ```
/// use palisade_seccomp::{Action, Arch, Profile, Rule};
///
/// let mut profile = Profile::new(Action::Errno(libc::EPERM as u16));
/// profile.add(Rule::new("getpid", Action::Allow));
/// profile.add(Rule::new("open", Action::Allow)); // x86-64 has open(2), aarch64 does not
/// assert!(profile.compile(Arch::Aarch64)?.is_some());
/// assert_eq!(profile.skipped_syscalls(Arch::Aarch64), ["open"]);
/// assert!(Profile::unconfined().compile(Arch::X86_64)?.is_none());
/// # Ok::<(), palisade_seccomp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `None` for unconfined.
    policy: Option<Policy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Policy {
    default_action: Action,
    foreign_action: Action,
    rules: Vec<ProfileRule>,
    flags: LoadFlags,
}

impl Profile {
    /// A profile with no rules: every syscall gets `default_action`. Calls from a foreign
    /// architecture are killed ([`Action::KillProcess`]).
    pub fn new(default_action: Action) -> Profile {
        Profile {
            policy: Some(Policy {
                default_action,
                foreign_action: Action::KillProcess,
                rules: Vec::new(),
                flags: LoadFlags::empty(),
            }),
        }
    }

    /// No filter at all.
    pub fn unconfined() -> Profile {
        Profile { policy: None }
    }

    /// The built-in default: an allow-list of ordinary syscalls, everything else failing with
    /// `EPERM`, equivalent in effect to Docker's default profile for a container without extra
    /// capabilities. See the `default` module source for the reasoning behind each exclusion.
    pub fn default_profile() -> Profile {
        default::profile()
    }

    /// The default profile for a container that holds `capabilities` (names such as
    /// `CAP_SYS_ADMIN`; the prefix and case are optional), as Docker adapts its own: the
    /// syscalls a capability exists for are allowed when it is held (with `CAP_SYS_ADMIN`:
    /// mounts, `unshare`, `setns`, namespace flags to `clone`, `clone3`, `sethostname`, `bpf`,
    /// …; with `CAP_SYS_PTRACE`: `ptrace`, `process_vm_*`, `kcmp`, …; likewise for
    /// `CAP_SYS_BOOT`, `CAP_SYS_MODULE`, `CAP_SYS_PACCT`, `CAP_SYS_RAWIO`, `CAP_SYS_TIME`,
    /// `CAP_SYS_TTY_CONFIG`, `CAP_SYS_NICE`, `CAP_SYSLOG`, `CAP_BPF`, `CAP_PERFMON` and
    /// `CAP_DAC_READ_SEARCH`). With none of those it is [`default_profile`](Self::default_profile).
    /// The kernel still checks each capability; this only stops the filter from refusing what the
    /// capability was granted for.
    ///
    /// ```
    /// use palisade_seccomp::{Action, Arch, Profile, SeccompData};
    ///
    /// let arch = Arch::X86_64;
    /// let mount = SeccompData::new(arch, arch.syscall_nr("mount")?, [0; 6]);
    /// let plain = Profile::default_profile().compile(arch)?.unwrap();
    /// let admin = Profile::default_with_capabilities(["CAP_SYS_ADMIN"]).compile(arch)?.unwrap();
    /// assert_eq!(plain.interpret(&mount)?, Action::Errno(libc::EPERM as u16).ret());
    /// assert_eq!(admin.interpret(&mount)?, Action::Allow.ret());
    /// # Ok::<(), palisade_seccomp::Error>(())
    /// ```
    pub fn default_with_capabilities<I, S>(capabilities: I) -> Profile
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        default::profile_with_capabilities(capabilities)
    }

    /// Whether this is [`Profile::unconfined`].
    pub fn is_unconfined(&self) -> bool {
        self.policy.is_none()
    }

    /// The action for syscalls no rule matches; `None` when unconfined.
    pub fn default_action(&self) -> Option<Action> {
        self.policy.as_ref().map(|p| p.default_action)
    }

    /// Flags the profile asks to be loaded with (from the JSON `flags` field).
    pub fn load_flags(&self) -> LoadFlags {
        self.policy.as_ref().map_or(LoadFlags::empty(), |p| p.flags)
    }

    /// Sets the action for calls from a foreign architecture (or x32). No effect when unconfined.
    pub fn set_foreign_arch_action(&mut self, action: Action) -> &mut Profile {
        if let Some(p) = &mut self.policy {
            p.foreign_action = action;
        }
        self
    }

    /// Appends a rule for every architecture. An unconfined profile stays unconfined.
    pub fn add(&mut self, rule: Rule) -> &mut Profile {
        self.push(rule, None)
    }

    /// Appends a rule that applies only on `arches`.
    pub fn add_for(&mut self, arches: &[Arch], rule: Rule) -> &mut Profile {
        self.push(rule, Some(arches.to_vec()))
    }

    fn push(&mut self, rule: Rule, arches: Option<Vec<Arch>>) -> &mut Profile {
        if let Some(p) = &mut self.policy {
            p.rules.push(ProfileRule { rule, arches });
        }
        self
    }

    fn rules_for(&self, arch: Arch) -> impl Iterator<Item = &Rule> {
        self.policy.iter().flat_map(move |p| {
            p.rules
                .iter()
                .filter(move |r| r.arches.as_ref().is_none_or(|a| a.contains(&arch)))
                .map(|r| &r.rule)
        })
    }

    fn known_on(rule: &Rule, arch: Arch) -> bool {
        match rule.syscall() {
            Syscall::Name(name) => arch.try_syscall_nr(name).is_some(),
            Syscall::Nr(_) => true,
        }
    }

    /// Syscall names of rules for `arch` that `arch` does not have, which
    /// [`filter`](Profile::filter) leaves out. Sorted, without duplicates.
    pub fn skipped_syscalls(&self, arch: Arch) -> Vec<String> {
        let skipped: BTreeSet<&str> = self
            .rules_for(arch)
            .filter(|r| !Profile::known_on(r, arch))
            .filter_map(|r| match r.syscall() {
                Syscall::Name(name) => Some(name.as_str()),
                Syscall::Nr(_) => None,
            })
            .collect();
        skipped.into_iter().map(str::to_owned).collect()
    }

    /// The filter for `arch`, or `None` when unconfined. Rules naming syscalls that `arch` lacks
    /// are skipped.
    pub fn filter(&self, arch: Arch) -> Result<Option<Filter>> {
        let Some(policy) = &self.policy else {
            return Ok(None);
        };
        let mut filter = Filter::new(arch, policy.default_action);
        filter.set_foreign_arch_action(policy.foreign_action);
        for rule in self.rules_for(arch).filter(|r| Profile::known_on(r, arch)) {
            filter.add(rule.clone())?;
        }
        Ok(Some(filter))
    }

    /// Compiles the profile for `arch` ([`Filter::compile`]), or `None` when unconfined.
    pub fn compile(&self, arch: Arch) -> Result<Option<BpfProgram>> {
        self.filter(arch)?.map(|f| f.compile()).transpose()
    }
}

impl Default for Profile {
    /// [`Profile::default_profile`].
    fn default() -> Profile {
        Profile::default_profile()
    }
}
