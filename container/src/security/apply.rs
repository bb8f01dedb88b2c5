//! The child side: applying a [`SecurityPlan`] with raw system calls, in the order the module
//! documentation explains.

use std::os::fd::RawFd;

use palisade_seccomp::LoadFlags;

use super::SecurityPlan;
use crate::error::ChildStep;
use crate::spawn::sys::raw;

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets passed as two 32-bit halves
/// (`capget(2)`).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The kernel's `struct __user_cap_header_struct` (`capget(2)`).
#[repr(C)]
struct CapHeader {
    version: u32,
    /// 0: the calling thread.
    pid: libc::c_int,
}

/// The kernel's `struct __user_cap_data_struct`: one 32-bit half of each set.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The numbers of the capabilities whose bits are set in `mask`, lowest first.
fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..u64::BITS).filter(move |n| mask & (1 << n) != 0)
}

/// `Err((step, errno))` when a raw system call returned `-errno`.
fn check(step: ChildStep, ret: isize) -> Result<isize, (ChildStep, isize)> {
    if ret < 0 {
        Err((step, -ret))
    } else {
        Ok(ret)
    }
}

impl SecurityPlan {
    /// Child side: applies the plan right before `execve(2)`, in the order of the
    /// [module documentation](super). Returns the seccomp user-notification listener when the
    /// filter asked for one (close-on-exec, `seccomp(2)`), else -1; or the step that failed and
    /// its errno (after which the caller reports and exits).
    ///
    /// With `filter` false (the init, which installs its own, stricter filter after its exec),
    /// everything but the seccomp filter is applied, and `no_new_privs` is set whatever the
    /// plan says.
    ///
    /// Makes raw system calls only, on data prepared by [`prepare`](super::SecuritySpec::prepare):
    /// no allocation, no locks, no `errno`, no panics, so it is safe in a child that shares the
    /// parent's memory (`CLONE_VM`) or was forked from a multi-threaded process.
    ///
    /// # Safety
    ///
    /// Only in the sandbox child, single-threaded, between the clone and the exec: it changes
    /// the credentials, limits and filters of the calling thread irreversibly.
    pub(crate) unsafe fn apply(&self, filter: bool) -> Result<RawFd, (ChildStep, isize)> {
        let mut listener: RawFd = -1;
        let result = self.apply_steps(filter, &mut listener);
        if result.is_err() && listener >= 0 {
            // SAFETY: the listener was created by this function and is not used afterwards.
            unsafe { raw!(libc::SYS_close, listener) };
        }
        result.map(|()| listener)
    }

    fn apply_steps(&self, filter: bool, listener: &mut RawFd) -> Result<(), (ChildStep, isize)> {
        // 1. Resource limits, while CAP_SYS_RESOURCE allows raising a hard limit.
        for (resource, limit) in &self.rlimits {
            let limit = limit as *const libc::rlimit64;
            // SAFETY: prlimit64(2) on the calling process (pid 0) reads one rlimit64 from a
            // live reference and, with a NULL old-limit pointer, writes nothing.
            let ret = unsafe { raw!(libc::SYS_prlimit64, 0, *resource, limit, 0) };
            check(ChildStep::Rlimit, ret)?;
        }

        // 2. Without no_new_privs, the filter goes in while CAP_SYS_ADMIN is still held.
        if !self.no_new_privs && filter {
            *listener = self.load_seccomp()?;
        }

        // 3. The bounding set, while CAP_SETPCAP is still effective.
        for cap in bits(self.bounding_drop) {
            // SAFETY: prctl(2) with integer arguments only.
            let ret = unsafe { raw!(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
            check(ChildStep::BoundingSet, ret)?;
        }

        // 4. User and groups, while CAP_SETUID and CAP_SETGID are still effective.
        if self.keep_caps {
            // SAFETY: prctl(2) with integer arguments only.
            let ret = unsafe { raw!(libc::SYS_prctl, libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
            check(ChildStep::KeepCaps, ret)?;
        }
        if let Some(groups) = &self.groups {
            // SAFETY: setgroups(2) reads `len` gid_t values from a live slice (none if empty).
            let ret = unsafe { raw!(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
            check(ChildStep::Groups, ret)?;
        }
        if let Some((uid, gid)) = self.user {
            // SAFETY: setresgid(2) and setresuid(2) take integer arguments only, and change the
            // credentials of the calling thread, the only one of this process.
            let ret = unsafe { raw!(libc::SYS_setresgid, gid, gid, gid) };
            check(ChildStep::SetUser, ret)?;
            // SAFETY: as above.
            let ret = unsafe { raw!(libc::SYS_setresuid, uid, uid, uid) };
            check(ChildStep::SetUser, ret)?;
        }

        // 5. Permitted, effective and inheritable sets.
        let header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let half = |shift: u32| CapData {
            effective: (self.caps.effective >> shift) as u32,
            permitted: (self.caps.permitted >> shift) as u32,
            inheritable: (self.caps.inheritable >> shift) as u32,
        };
        let data = [half(0), half(32)];
        // SAFETY: capset(2) reads a version-3 header and the two data structures that version
        // takes, all live on this stack.
        let ret = unsafe { raw!(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
        check(ChildStep::Capabilities, ret)?;

        // 6. Ambient set: each raised capability must be permitted and inheritable by now.
        // SAFETY: prctl(2) with integer arguments only.
        let ret = unsafe {
            raw!(
                libc::SYS_prctl,
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0
            )
        };
        // A kernel without ambient capabilities (before 4.3) has none to clear.
        if !(ret == -(libc::EINVAL as isize) && self.caps.ambient == 0) {
            check(ChildStep::AmbientCapabilities, ret)?;
        }
        for cap in bits(self.caps.ambient) {
            // SAFETY: prctl(2) with integer arguments only.
            let ret = unsafe {
                raw!(
                    libc::SYS_prctl,
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    cap,
                    0,
                    0
                )
            };
            check(ChildStep::AmbientCapabilities, ret)?;
        }

        // 7. and 8. no_new_privs, then the filter, last.
        if self.no_new_privs || !filter {
            // SAFETY: prctl(2) with integer arguments only.
            let ret = unsafe { raw!(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            check(ChildStep::NoNewPrivs, ret)?;
        }
        if self.no_new_privs && filter {
            *listener = self.load_seccomp()?;
        }
        Ok(())
    }

    /// Installs the filter, if any, on the calling thread; returns its listener or -1.
    ///
    /// `palisade_seccomp::load_fprog` is not used here: it goes through libc's `syscall(3)`,
    /// which sets `errno`, shared with the parent thread under `CLONE_VM`.
    fn load_seccomp(&self) -> Result<RawFd, (ChildStep, isize)> {
        let Some(program) = &self.seccomp else {
            return Ok(-1);
        };
        // Points into the program, which the plan keeps alive and unchanged.
        let fprog = program.sock_fprog();
        // SAFETY: seccomp(2) reads the sock_fprog on this stack and the instructions it points
        // to; with NEW_LISTENER it returns a new descriptor, which the caller owns.
        let ret = unsafe {
            raw!(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.seccomp_flags.bits(),
                &fprog as *const libc::sock_fprog
            )
        };
        let ret = check(ChildStep::Seccomp, ret)?;
        Ok(if self.seccomp_flags.contains(LoadFlags::NEW_LISTENER) {
            ret as RawFd
        } else {
            -1
        })
    }
}
