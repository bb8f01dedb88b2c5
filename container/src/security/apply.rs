//! The child side: applying a [`SecurityPlan`] in the order the module documentation explains.
//!
//! Every step is one rustix call (its `linux_raw` backend issues the system call itself and
//! returns the kernel's error) or, for the filter, palisade-seccomp's
//! [`BpfProgram::load_raw`](palisade_seccomp::BpfProgram::load_raw), on data prepared by
//! [`prepare`](super::SecuritySpec::prepare). None of them allocates, takes a lock, reads or
//! writes `errno`, or panics.

use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::process::{Gid, Resource, Rlimit, Uid};
use rustix::thread::{CapabilitySet, CapabilitySets, CpuSet};

use super::sched::{self, SchedAttr};
use super::SecurityPlan;
use crate::error::ChildStep;

/// The numbers of the capabilities whose bits are set in `mask`, lowest first, as one-bit
/// rustix sets.
fn bits(mask: u64) -> impl Iterator<Item = CapabilitySet> {
    (0..u64::BITS)
        .filter(move |n| mask & (1 << n) != 0)
        .map(|n| CapabilitySet::from_bits_retain(1 << n))
}

/// Attributes a failed call to `step`, as the positive errno the parent is sent.
fn at(step: ChildStep) -> impl Fn(Errno) -> (ChildStep, Errno) {
    move |errno| (step, errno)
}

impl SecurityPlan {
    /// Child side: applies the plan right before `execve(2)`, in the order of the
    /// [module documentation](super). Returns the seccomp user-notification listener when the
    /// filter asked for one (close-on-exec, `seccomp(2)`), which the caller must close without
    /// libc (`palisade_ns::child::close`); or the step that failed and its error (after which the
    /// caller reports and exits).
    ///
    /// With `filter` false (the init, which installs its own, stricter filter after its exec),
    /// everything but the seccomp filter is applied, and `no_new_privs` is set whatever the
    /// plan says.
    ///
    /// # Child safety
    ///
    /// Makes rustix calls (`linux_raw`) and palisade-seccomp's `load_raw` only, on data prepared
    /// by [`prepare`](super::SecuritySpec::prepare): no allocation, no locks, no `errno`, no
    /// panics, so it is safe in a child that shares the parent's memory (`CLONE_VM`) or was
    /// forked from a multi-threaded process.
    ///
    /// # Safety
    ///
    /// Only in the sandbox child, single-threaded, between the clone and the exec: it changes
    /// the credentials, limits and filters of the calling thread irreversibly.
    pub(crate) unsafe fn apply(&self, filter: bool) -> Result<Option<OwnedFd>, (ChildStep, Errno)> {
        let mut listener = None;
        let result = self.apply_steps(filter, &mut listener);
        if let Err(failure) = result {
            if let Some(listener) = listener {
                // Without libc: `OwnedFd`'s drop may write `errno`.
                palisade_ns::child::close(listener);
            }
            return Err(failure);
        }
        Ok(listener)
    }

    fn apply_steps(
        &self,
        filter: bool,
        listener: &mut Option<OwnedFd>,
    ) -> Result<(), (ChildStep, Errno)> {
        self.steps(&mut Kernel, filter, listener)
    }

    /// The steps, in their order, through `calls`: the kernel's ([`Kernel`]) in the child, a
    /// recording in the unit tests, which check the order without a kernel.
    pub(super) fn steps<C: Calls>(
        &self,
        calls: &mut C,
        filter: bool,
        listener: &mut Option<OwnedFd>,
    ) -> Result<(), (ChildStep, Errno)> {
        // 1. Resource limits, while CAP_SYS_RESOURCE allows raising a hard limit.
        for &(resource, limit) in &self.rlimits {
            calls
                .set_rlimit(resource, limit)
                .map_err(at(ChildStep::Rlimit))?;
        }

        // 2. The command's personality, I/O priority and scheduling, while CAP_SYS_NICE and
        // CAP_SYS_ADMIN are still held and before any filter judges the calls; its final CPU
        // affinity too when a filter goes in next.
        if filter {
            let s = &self.sched;
            if let Some(persona) = s.personality {
                calls
                    .set_personality(persona)
                    .map_err(at(ChildStep::Personality))?;
            }
            if let Some(ioprio) = s.io_priority {
                calls
                    .set_io_priority(ioprio)
                    .map_err(at(ChildStep::IoPriority))?;
            }
            if let Some(attr) = &s.scheduler {
                calls
                    .set_scheduler(attr)
                    .map_err(at(ChildStep::Scheduler))?;
            }
            if let (Some(cpus), false) = (&s.final_affinity, self.no_new_privs) {
                calls
                    .set_affinity(cpus)
                    .map_err(at(ChildStep::CpuAffinity))?;
            }
        }

        // 3. Without no_new_privs, the filter goes in while CAP_SYS_ADMIN is still held.
        if !self.no_new_privs && filter {
            *listener = self.load_seccomp(calls)?;
        }

        // 4. The bounding set, while CAP_SETPCAP is still effective.
        for cap in bits(self.bounding_drop) {
            calls
                .drop_bounding(cap)
                .map_err(at(ChildStep::BoundingSet))?;
        }

        // 5. User and groups, while CAP_SETUID and CAP_SETGID are still effective.
        if self.keep_caps {
            calls.keep_caps().map_err(at(ChildStep::KeepCaps))?;
        }
        if let Some(groups) = &self.groups {
            calls.set_groups(groups).map_err(at(ChildStep::Groups))?;
        }
        if let Some((uid, gid)) = self.user {
            calls.set_ids(uid, gid).map_err(at(ChildStep::SetUser))?;
        }

        // 6. Permitted, effective and inheritable sets (capset(2), version 3: 64-bit sets).
        let sets = CapabilitySets {
            effective: CapabilitySet::from_bits_retain(self.caps.effective),
            permitted: CapabilitySet::from_bits_retain(self.caps.permitted),
            inheritable: CapabilitySet::from_bits_retain(self.caps.inheritable),
        };
        calls.set_caps(sets).map_err(at(ChildStep::Capabilities))?;

        // 7. Ambient set: each raised capability must be permitted and inheritable by now.
        match calls.clear_ambient() {
            // A kernel without ambient capabilities (before 4.3) has none to clear.
            Err(Errno::INVAL) if self.caps.ambient == 0 => {}
            result => result.map_err(at(ChildStep::AmbientCapabilities))?,
        }
        for cap in bits(self.caps.ambient) {
            calls
                .raise_ambient(cap)
                .map_err(at(ChildStep::AmbientCapabilities))?;
        }

        // 8. to 10. no_new_privs, then the final CPU affinity, the last call before the exec
        // that no filter judges, then the filter, last.
        if self.no_new_privs || !filter {
            calls.no_new_privs().map_err(at(ChildStep::NoNewPrivs))?;
        }
        if self.no_new_privs && filter {
            if let Some(cpus) = &self.sched.final_affinity {
                calls
                    .set_affinity(cpus)
                    .map_err(at(ChildStep::CpuAffinity))?;
            }
            *listener = self.load_seccomp(calls)?;
        }
        Ok(())
    }

    /// Installs the filter, if any, on the calling thread; returns its listener when the flags
    /// ask for one.
    fn load_seccomp<C: Calls>(&self, calls: &mut C) -> Result<Option<OwnedFd>, (ChildStep, Errno)> {
        let Some(program) = &self.seccomp else {
            return Ok(None);
        };
        calls
            .load_filter(program, self.seccomp_flags)
            .map_err(at(ChildStep::Seccomp))
    }
}

/// The system calls of the security steps, one method each, so that [`SecurityPlan::steps`]
/// can run against the kernel ([`Kernel`]) or a recording (the unit tests).
pub(super) trait Calls {
    /// `prlimit(2)` of the calling process.
    fn set_rlimit(&mut self, resource: Resource, limit: Rlimit) -> Result<(), Errno>;
    /// `seccomp(2)` `SECCOMP_SET_MODE_FILTER`.
    fn load_filter(
        &mut self,
        program: &palisade_seccomp::BpfProgram,
        flags: palisade_seccomp::LoadFlags,
    ) -> Result<Option<OwnedFd>, Errno>;
    /// `prctl(PR_CAPBSET_DROP)`.
    fn drop_bounding(&mut self, cap: CapabilitySet) -> Result<(), Errno>;
    /// `prctl(PR_SET_KEEPCAPS, 1)`.
    fn keep_caps(&mut self) -> Result<(), Errno>;
    /// `setgroups(2)`.
    fn set_groups(&mut self, groups: &[Gid]) -> Result<(), Errno>;
    /// `setresgid(2)`, then `setresuid(2)`.
    fn set_ids(&mut self, uid: Uid, gid: Gid) -> Result<(), Errno>;
    /// `capset(2)`.
    fn set_caps(&mut self, sets: CapabilitySets) -> Result<(), Errno>;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)`.
    fn clear_ambient(&mut self) -> Result<(), Errno>;
    /// `prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE)`.
    fn raise_ambient(&mut self, cap: CapabilitySet) -> Result<(), Errno>;
    /// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
    fn no_new_privs(&mut self) -> Result<(), Errno>;
    /// `personality(2)`.
    fn set_personality(&mut self, persona: u32) -> Result<(), Errno>;
    /// `ioprio_set(2)` of the calling thread.
    fn set_io_priority(&mut self, ioprio: u32) -> Result<(), Errno>;
    /// `sched_setattr(2)` of the calling thread.
    fn set_scheduler(&mut self, attr: &SchedAttr) -> Result<(), Errno>;
    /// `sched_setaffinity(2)` of the calling thread.
    fn set_affinity(&mut self, cpus: &CpuSet) -> Result<(), Errno>;
}

/// The kernel's calls, each one rustix call (or palisade-seccomp's loader): no allocation, no
/// `errno`, no lock, no panic.
pub(super) struct Kernel;

impl Calls for Kernel {
    fn set_rlimit(&mut self, resource: Resource, limit: Rlimit) -> Result<(), Errno> {
        // prlimit64(2) on the calling process, without reading back the old limit.
        rustix::process::setrlimit(resource, limit)
    }

    fn load_filter(
        &mut self,
        program: &palisade_seccomp::BpfProgram,
        flags: palisade_seccomp::LoadFlags,
    ) -> Result<Option<OwnedFd>, Errno> {
        program.load_raw(flags)
    }

    fn drop_bounding(&mut self, cap: CapabilitySet) -> Result<(), Errno> {
        rustix::thread::remove_capability_from_bounding_set(cap)
    }

    fn keep_caps(&mut self) -> Result<(), Errno> {
        rustix::thread::set_keep_capabilities(true)
    }

    fn set_groups(&mut self, groups: &[Gid]) -> Result<(), Errno> {
        rustix::thread::set_thread_groups(groups)
    }

    fn set_ids(&mut self, uid: Uid, gid: Gid) -> Result<(), Errno> {
        // The raw calls change the calling thread only, the whole process here.
        rustix::thread::set_thread_res_gid(gid, gid, gid)?;
        rustix::thread::set_thread_res_uid(uid, uid, uid)
    }

    fn set_caps(&mut self, sets: CapabilitySets) -> Result<(), Errno> {
        rustix::thread::set_capabilities(None, sets)
    }

    fn clear_ambient(&mut self) -> Result<(), Errno> {
        rustix::thread::clear_ambient_capability_set()
    }

    fn raise_ambient(&mut self, cap: CapabilitySet) -> Result<(), Errno> {
        rustix::thread::configure_capability_in_ambient_set(cap, true)
    }

    fn no_new_privs(&mut self) -> Result<(), Errno> {
        rustix::thread::set_no_new_privs(true)
    }

    fn set_personality(&mut self, persona: u32) -> Result<(), Errno> {
        sched::set_personality(persona)
    }

    fn set_io_priority(&mut self, ioprio: u32) -> Result<(), Errno> {
        sched::set_io_priority(ioprio)
    }

    fn set_scheduler(&mut self, attr: &SchedAttr) -> Result<(), Errno> {
        sched::set_scheduler(attr)
    }

    fn set_affinity(&mut self, cpus: &CpuSet) -> Result<(), Errno> {
        rustix::thread::sched_setaffinity(None, cpus)
    }
}
