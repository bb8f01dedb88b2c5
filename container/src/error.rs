use std::fmt;
use std::io;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building, spawning or managing a sandbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder argument cannot be used (checked before any process is created).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// Which argument: `"program"`, `"argument"`, `"environment variable"`, ….
        what: &'static str,
        /// The offending value, lossily converted for display.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A namespace operation failed: the clone itself, or writing the id maps of the new user
    /// namespace. The inner error names the system call or `/proc` file and the errno.
    #[error(transparent)]
    Namespace(#[from] palisade_ns::Error),
    /// Preparing the spawn in the parent failed (pipes, pidfds, duplicating stdio descriptors).
    #[error("{what}: {source}")]
    Setup {
        /// What was being prepared.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The sandbox child failed before it could execute the program. It reported the step and
    /// the errno through a close-on-exec pipe and exited; it has been reaped.
    #[error("sandbox child failed to {step}{context}: {source}")]
    Child {
        /// The step that failed.
        step: ChildStep,
        /// What the step was acting on (program, directory, hostname), formatted as ` "…"`.
        context: Context,
        /// The OS error the step got.
        source: io::Error,
    },
    /// Preparing the sandbox's root file system failed (a missing layer or volume, an overlay the
    /// kernel refused, …), or its description was invalid.
    #[error(transparent)]
    Rootfs(#[from] palisade_overlay::Error),
    /// Reading, pulling or storing an OCI image failed, or its config could not be applied to a
    /// sandbox ([`SandboxBuilder::image`](crate::SandboxBuilder::image),
    /// [`SandboxBuilder::user_name`](crate::SandboxBuilder::user_name),
    /// [`Sandbox::from_image`](crate::Sandbox::from_image)).
    #[error(transparent)]
    Image(#[from] palisade_image::Error),
    /// Opening the network namespace to join failed, or it is not one.
    #[error(transparent)]
    Network(#[from] palisade_netns::Error),
    /// The seccomp profile could not be compiled for this architecture (see
    /// [`SandboxBuilder::seccomp`](crate::SandboxBuilder::seccomp)).
    #[error(transparent)]
    Seccomp(#[from] palisade_seccomp::Error),
    /// Creating, filling or reading the sandbox's cgroup failed, or a limit was invalid. The inner
    /// error names the cgroup file and the errno, or the refused value.
    #[error(transparent)]
    Cgroup(#[from] palisade_cgroup::Error),
    /// A cgroup operation was asked of a sandbox that has no cgroup: it gets one when a limit
    /// is set or [`SandboxBuilder::cgroup`](crate::SandboxBuilder::cgroup) asks for one.
    #[error("the sandbox has no cgroup (set a limit, or call SandboxBuilder::cgroup(true))")]
    NoCgroup,
    /// A command was to run in a sandbox that is no longer running ([`Child::exec`](crate::Child::exec)):
    /// its first process has exited, or was waited for.
    #[error("the sandbox of pid {pid} is not running")]
    NotRunning {
        /// The pid of the sandbox's first process.
        pid: i32,
    },
    /// A sandbox of that name is already recorded under the state root (see
    /// [`SandboxBuilder::name`](crate::SandboxBuilder::name)); of concurrent creations with one
    /// name, all but one get this.
    #[error("a sandbox named {id:?} already exists in {root}")]
    NameInUse {
        /// The name.
        id: String,
        /// The state root.
        root: std::path::PathBuf,
    },
    /// No sandbox of that name is recorded under the state root.
    #[error("no sandbox named {id:?} in {root}")]
    NotFound {
        /// The name.
        id: String,
        /// The state root.
        root: std::path::PathBuf,
    },
    /// [`start`](crate::Handle::start) of a sandbox whose command does not wait to be started:
    /// it was not [created](crate::Sandbox::create), was started already, or is gone.
    #[error("the sandbox {id:?} is not waiting to be started")]
    NotCreated {
        /// The name.
        id: String,
    },
    /// [`delete`](crate::Handle::delete) of a sandbox that still runs (or is being made).
    #[error("the sandbox {id:?} is still running")]
    StillRunning {
        /// The name.
        id: String,
    },
    /// Reading or writing a named sandbox's record under the state root failed.
    #[error("{what} {path}: {source}")]
    State {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error, or the decoding error.
        source: io::Error,
    },
    /// Waiting for, or signalling, the sandbox process failed.
    #[error("{call} on sandbox pid {pid}: {source}")]
    Process {
        /// The system call.
        call: &'static str,
        /// The sandbox's process id.
        pid: i32,
        /// The OS error.
        source: io::Error,
    },
    // --- helper "errs": errors that say what to do (issue 17) ---
    /// A `pids.max` limit too low for the sandbox to start its command
    /// ([`SandboxBuilder::pids_max`](crate::SandboxBuilder::pids_max)): the limit counts every
    /// process and thread of the sandbox, the init included. Refused by `build`.
    ///
    /// ```
    /// use palisade::{Error, Sandbox};
    ///
    /// let err = Sandbox::builder("true").pids_max(1).build().unwrap_err();
    /// assert!(matches!(err, Error::PidsLimitTooLow { limit: 1, minimum: 2 }));
    /// assert!(err.to_string().contains("at least 2"));
    /// ```
    #[error(
        "pids limit {limit} is too low to start the command: it counts every process of the \
         sandbox, its init included, so it must be at least {minimum} (the init and the command, \
         plus whatever the command starts); raise pids_max to {minimum} or more"
    )]
    PidsLimitTooLow {
        /// The limit as given.
        limit: u64,
        /// The least that starts the command: 2 with an init, 1 without.
        minimum: u64,
    },
    /// The sandbox could not start a process, though its own pids limit (if any) was high
    /// enough to pass `build`: `fork(2)` failed with `EAGAIN`, which it gives when a `pids.max`
    /// on the way up from the sandbox's group is reached (its own, counting every process and
    /// thread of the sandbox, the init included; or one of its parent groups', e.g. the
    /// [`cgroup_parent`](crate::SandboxBuilder::cgroup_parent)'s, shared with other sandboxes),
    /// or when the user's `RLIMIT_NPROC` is (`getrlimit(2)`).
    #[error(
        "sandbox child failed to {step}: {source}: a limit on processes is reached: the \
         sandbox's pids limit (pids_max counts every process and thread of the sandbox, its init \
         included), a parent cgroup's pids.max (shared by every sandbox beneath it), or the \
         user's RLIMIT_NPROC. Raise the one that applies, or run fewer processes"
    )]
    OutOfProcesses {
        /// The step that could not start its process.
        step: ChildStep,
        /// The OS error (`EAGAIN`).
        source: io::Error,
    },
    /// The user or a group the command is to run as has no mapping in the sandbox's new user
    /// namespace, so the kernel would refuse to switch to it (`setresuid(2)`, `setresgid(2)`,
    /// `setgroups(2)`: `EINVAL`). Refused by `build`.
    ///
    /// ```
    /// use palisade::{Error, Sandbox};
    ///
    /// // A rootless sandbox maps only the caller, as its root.
    /// let err = Sandbox::builder("id").rootless().user(1000, 1000).build().unwrap_err();
    /// assert!(matches!(err, Error::Unmapped { kind: "uid", id: 1000, map: "uid_map", .. }));
    /// ```
    #[error(
        "{kind} {id} is not mapped in the sandbox's user namespace, whose {map} maps only \
         {mapped}: add a mapping of {kind} {id} with SandboxBuilder::{map} (an unprivileged caller \
         may map only its own id; root may map any range), or run the command as a mapped {kind}"
    )]
    Unmapped {
        /// `"uid"`, `"gid"`, `"supplementary gid"`, or `"volume owner uid"`/`"gid"` (of
        /// [`SandboxBuilder::volume_owned`](crate::SandboxBuilder::volume_owned)).
        kind: &'static str,
        /// The id inside the namespace.
        id: u32,
        /// Which map lacks it: `"uid_map"` or `"gid_map"`.
        map: &'static str,
        /// The map's ranges, as `inside→outside (count ids)`.
        mapped: String,
    },
    /// The clone was refused the privilege to create the sandbox's namespaces (`EPERM`): outside
    /// a user namespace of its own, creating them needs `CAP_SYS_ADMIN` (`clone(2)`). The inner
    /// error names them.
    ///
    /// ```no_run
    /// use palisade::{Error, Sandbox};
    ///
    /// // Run by an unprivileged user:
    /// match Sandbox::builder("true").status() {
    ///     Err(Error::NeedsPrivilege { namespaces, .. }) => {
    ///         eprintln!("no privilege for {namespaces}: trying rootless");
    ///         Sandbox::builder("true").rootless().status()?;
    ///     }
    ///     other => {
    ///         other?;
    ///     }
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    #[error(
        "{source}; run as root, or call SandboxBuilder::rootless() (`run --rootless`) to create \
         them in a new user namespace where the caller is root"
    )]
    NeedsPrivilege {
        /// The namespaces the clone was to create.
        namespaces: palisade_ns::Namespace,
        /// The clone's error.
        source: palisade_ns::Error,
    },
    /// Creating the sandbox's cgroup was refused (`EACCES`, `EPERM`, `EROFS`): the caller may
    /// not create groups beneath its own, or beneath the
    /// [`cgroup_parent`](crate::SandboxBuilder::cgroup_parent). An unprivileged caller needs a
    /// delegated subtree (`cgroups(7)`, *Cgroups v2 delegation*).
    ///
    /// ```no_run
    /// use palisade::cgroup::Bytes;
    /// use palisade::{Error, Sandbox};
    ///
    /// // Run by an unprivileged user outside any delegated cgroup:
    /// let err = Sandbox::builder("true")
    ///     .rootless()
    ///     .memory_max(Bytes::mib(64))
    ///     .spawn()
    ///     .unwrap_err();
    /// assert!(matches!(err, Error::CgroupNotDelegated { .. }));
    /// assert!(err.to_string().contains("Delegate=yes"));
    /// ```
    #[error(
        "{source}: this user may not create cgroups there, which a sandbox with limits (or \
         cgroup(true)) needs. Run it in a cgroup subtree delegated to this user (systemd: a unit \
         with Delegate=yes, e.g. `systemd-run --user --scope -p Delegate=yes …`) and, unless that \
         is the caller's own group, point SandboxBuilder::cgroup_parent at it; or let root create \
         a group owned by this user and pass that as cgroup_parent; or drop the limits"
    )]
    CgroupNotDelegated {
        /// The cgroup error, naming the directory and the errno.
        source: palisade_cgroup::Error,
    },
    // --- helper "wait": exit statuses as errors ---
    /// The command ran but did not exit with code 0: from
    /// [`ExitStatus::exit_ok`](crate::ExitStatus::exit_ok) with `?`. The inner error says how it
    /// ended (code, signal, OOM kill, timeout).
    #[error(transparent)]
    Failed(#[from] crate::status::ExitStatusError),
}

impl Error {
    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Namespace(e) => e.errno(),
            Error::Cgroup(e) => e.errno(),
            Error::Rootfs(e) => e.errno(),
            Error::Image(e) => e.errno(),
            Error::Network(e) => e.errno(),
            Error::NeedsPrivilege { source, .. } => source.errno(),
            Error::CgroupNotDelegated { source } => source.errno(),
            Error::PidsLimitTooLow { .. } | Error::Unmapped { .. } => None,
            Error::Seccomp(palisade_seccomp::Error::Sys { source, .. }) => source.raw_os_error(),
            Error::Seccomp(_) => None,
            Error::Setup { source, .. }
            | Error::Child { source, .. }
            | Error::OutOfProcesses { source, .. }
            | Error::Process { source, .. }
            | Error::State { source, .. } => source.raw_os_error(),
            Error::InvalidValue { .. }
            | Error::NoCgroup
            | Error::NotRunning { .. }
            | Error::NameInUse { .. }
            | Error::NotFound { .. }
            | Error::NotCreated { .. }
            | Error::StillRunning { .. }
            | Error::Failed(_) => None,
        }
    }
}

impl Error {
    /// A failed clone of the sandbox child, with what to do when it lacked the privilege to
    /// create the namespaces ([`Error::NeedsPrivilege`]): `EPERM` for namespaces other than a
    /// user namespace, which only `CAP_SYS_ADMIN` allows (`clone(2)`).
    pub(crate) fn from_clone(err: palisade_ns::Error) -> Error {
        if let palisade_ns::Error::Clone { flags, source, .. } = &err {
            let namespaces = palisade_ns::Namespace::from_bits_truncate(*flags);
            if source.raw_os_error() == Some(libc::EPERM)
                && !namespaces.is_empty()
                && !namespaces.contains(palisade_ns::Namespace::USER)
            {
                return Error::NeedsPrivilege {
                    namespaces,
                    source: err,
                };
            }
        }
        Error::Namespace(err)
    }

    /// The error a sandbox child reported for `step`, with what to do when it could not start
    /// a process for a limit on processes ([`Error::OutOfProcesses`]).
    pub(crate) fn from_child(step: ChildStep, context: Context, errno: i32) -> Error {
        let source = io::Error::from_raw_os_error(errno);
        if step == ChildStep::InitFork && errno == libc::EAGAIN {
            return Error::OutOfProcesses { step, source };
        }
        Error::Child {
            step,
            context,
            source,
        }
    }

    /// A failure to create the sandbox's cgroup, with what to do when the caller may not create
    /// groups there ([`Error::CgroupNotDelegated`]).
    pub(crate) fn from_cgroup_create(err: palisade_cgroup::Error) -> Error {
        match err.errno() {
            Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
                Error::CgroupNotDelegated { source: err }
            }
            _ => Error::Cgroup(err),
        }
    }
}

/// Optional detail of a [`Error::Child`]: what the failed step acted on. Displays as ` "…"`
/// (with a leading space), or as nothing without a subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// What the step acted on (the program, a directory, the hostname, a descriptor…), if the
    /// step names one.
    pub subject: Option<String>,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Some(s) => write!(f, " {s:?}"),
            None => Ok(()),
        }
    }
}

/// The steps the sandbox child takes between `clone3(2)` and `execve(2)`, in order. A failure in
/// any of them is reported to the parent as [`Error::Child`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum ChildStep {
    /// `prctl(PR_SET_PDEATHSIG)`.
    DeathSignal = 1,
    /// `setgroups(2)` to an empty list in a new user namespace.
    SetGroups,
    /// `setresgid(2)` to the namespace's root group.
    SetGid,
    /// `setresuid(2)` to the namespace's root user.
    SetUid,
    /// `unshare(CLONE_NEWTIME)`.
    TimeNamespace,
    /// Writing `/proc/self/timens_offsets`.
    TimeOffsets,
    /// `sethostname(2)`.
    Hostname,
    /// Making the new mount namespace's propagation `rslave`.
    MountPropagation,
    /// Mounting a fresh `/proc` for the new PID namespace.
    MountProc,
    /// `dup2(2)` of the stdio descriptors.
    Stdio,
    /// `chdir(2)` to the working directory.
    Chdir,
    /// The init's `fork` of the command.
    InitFork,
    /// `execve(2)` of the program.
    Exec,
    /// `unshare(CLONE_NEWCGROUP)` once the child is in its cgroup, so that the namespace is
    /// rooted there (`cgroup_namespaces(7)`).
    CgroupNamespace,
    /// Setting up the root file system and mount table; the error's context names the mount
    /// step.
    Rootfs,
    /// Joining another network namespace (`setns(2)`), or bringing the loopback interface up.
    Network,
    /// Installing the seccomp filter (`seccomp(2)`), or handing its user-notification listener
    /// to the parent.
    Seccomp,
    /// Setting a resource limit (`prlimit(2)`); see [`SandboxBuilder::rlimit`](crate::SandboxBuilder::rlimit).
    Rlimit,
    /// Dropping capabilities from the bounding set (`prctl(2)` `PR_CAPBSET_DROP`).
    BoundingSet,
    /// Keeping the permitted capabilities across the switch to a non-root user (`prctl(2)`
    /// `PR_SET_KEEPCAPS`).
    KeepCaps,
    /// `setgroups(2)` to the supplementary groups of
    /// [`SandboxBuilder::groups`](crate::SandboxBuilder::groups) (or none, on a switch to another
    /// user).
    Groups,
    /// `setresgid(2)` and `setresuid(2)` to the group and user of
    /// [`SandboxBuilder::user`](crate::SandboxBuilder::user); `EINVAL` in a user namespace means
    /// the id is not mapped there.
    SetUser,
    /// `capset(2)` of the permitted, effective and inheritable capabilities.
    Capabilities,
    /// Setting the ambient capabilities (`prctl(2)` `PR_CAP_AMBIENT`).
    AmbientCapabilities,
    /// `prctl(2)` `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs,
    /// `dup3(2)` of a descriptor passed with
    /// [`SandboxBuilder::inherit_fd`](crate::SandboxBuilder::inherit_fd) to its number.
    PassFds,
    /// `execveat(2)` of the init program (or getting ready for it: dropping the init's
    /// privileges to the command's).
    InitExec,
    /// Writing `/proc/sys/net/ipv4/ping_group_range` in the sandbox's new network namespace, so
    /// that `ping` works through ICMP datagram sockets without `CAP_NET_RAW` (`icmp(7)`).
    PingGroupRange,
    /// Allocating the pseudo-terminal on the sandbox's devpts and making it the command's
    /// controlling terminal and stdio (`pty(7)`, `ioctl_tty(2)`), or handing its master over;
    /// see [`SandboxBuilder::tty`](crate::SandboxBuilder::tty).
    Terminal,
    /// Joining the namespaces of a running sandbox (`setns(2)` on its pidfd), for
    /// [`Child::exec`](crate::Child::exec).
    Enter,
    /// Writing a namespaced kernel parameter under `/proc/sys`
    /// ([`SandboxBuilder::sysctl`](crate::SandboxBuilder::sysctl), `sysctl(8)`).
    Sysctl,
    /// Joining a namespace given by path (`setns(2)`,
    /// [`SandboxBuilder::join_namespace`](crate::SandboxBuilder::join_namespace)).
    JoinNamespace,
    /// `setdomainname(2)` ([`SandboxBuilder::domainname`](crate::SandboxBuilder::domainname)).
    Domainname,
    /// `ioprio_set(2)` of the command
    /// ([`SandboxBuilder::io_priority`](crate::SandboxBuilder::io_priority)).
    IoPriority,
    /// `sched_setattr(2)` of the command
    /// ([`SandboxBuilder::scheduler`](crate::SandboxBuilder::scheduler)).
    Scheduler,
    /// `sched_setaffinity(2)` of the command
    /// ([`SandboxBuilder::cpu_affinity`](crate::SandboxBuilder::cpu_affinity)).
    CpuAffinity,
    /// `sched_setaffinity(2)` of the sandbox child, first thing after the clone
    /// ([`SandboxBuilder::initial_cpu_affinity`](crate::SandboxBuilder::initial_cpu_affinity)).
    InitialCpuAffinity,
    /// `personality(2)` of the command
    /// ([`SandboxBuilder::personality`](crate::SandboxBuilder::personality)).
    Personality,
    /// Moving itself into the sandbox's cgroup v1 groups (`cgroups(7)`, their `tasks` files).
    Cgroup,
}

impl ChildStep {
    pub(crate) fn from_raw(raw: u32) -> Option<ChildStep> {
        use ChildStep::*;
        [
            DeathSignal,
            SetGroups,
            SetGid,
            SetUid,
            TimeNamespace,
            TimeOffsets,
            Hostname,
            MountPropagation,
            MountProc,
            Stdio,
            Chdir,
            InitFork,
            Exec,
            CgroupNamespace,
            Rootfs,
            Network,
            Seccomp,
            Rlimit,
            BoundingSet,
            KeepCaps,
            Groups,
            SetUser,
            Capabilities,
            AmbientCapabilities,
            NoNewPrivs,
            PassFds,
            InitExec,
            PingGroupRange,
            Terminal,
            Enter,
            Sysctl,
            JoinNamespace,
            Domainname,
            IoPriority,
            Scheduler,
            CpuAffinity,
            InitialCpuAffinity,
            Personality,
            Cgroup,
        ]
        .into_iter()
        .find(|s| *s as u32 == raw)
    }
}

impl fmt::Display for ChildStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChildStep::DeathSignal => "set its parent-death signal",
            ChildStep::SetGroups => "clear its supplementary groups",
            ChildStep::SetGid => "become the namespace's root group",
            ChildStep::SetUid => "become the namespace's root user",
            ChildStep::TimeNamespace => "create a time namespace",
            ChildStep::TimeOffsets => "write the time namespace offsets",
            ChildStep::Hostname => "set the hostname",
            ChildStep::MountPropagation => "make mount propagation private",
            ChildStep::MountProc => "mount /proc",
            ChildStep::Stdio => "set up stdin/stdout/stderr",
            ChildStep::Chdir => "change directory to",
            ChildStep::InitFork => "fork the command from its init",
            ChildStep::Exec => "execute",
            ChildStep::CgroupNamespace => "create its cgroup namespace",
            ChildStep::Rootfs => "set up its root file system:",
            ChildStep::Network => "set up its network",
            ChildStep::Seccomp => "install its seccomp filter",
            ChildStep::Rlimit => "set its resource limits",
            ChildStep::BoundingSet => "drop capabilities from its bounding set",
            ChildStep::KeepCaps => "keep its capabilities across the user switch",
            ChildStep::Groups => "set its supplementary groups",
            ChildStep::SetUser => "switch to its user",
            ChildStep::Capabilities => "set its capabilities",
            ChildStep::AmbientCapabilities => "raise its ambient capabilities",
            ChildStep::NoNewPrivs => "set no_new_privs",
            ChildStep::PassFds => "pass a descriptor to its number",
            ChildStep::InitExec => "execute the init",
            ChildStep::PingGroupRange => "let its groups open ICMP datagram sockets",
            ChildStep::Terminal => "set up its terminal",
            ChildStep::Enter => "join the sandbox's namespaces",
            ChildStep::Sysctl => "set the kernel parameter",
            ChildStep::JoinNamespace => "join the namespace",
            ChildStep::Domainname => "set the NIS domain name",
            ChildStep::IoPriority => "set its I/O priority",
            ChildStep::Scheduler => "set its scheduling policy",
            ChildStep::CpuAffinity => "set its CPU affinity",
            ChildStep::InitialCpuAffinity => "set its initial CPU affinity",
            ChildStep::Personality => "set its personality",
            ChildStep::Cgroup => "join its cgroup",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_their_wire_number() {
        for raw in 1..=39 {
            let step = ChildStep::from_raw(raw).unwrap();
            assert_eq!(step as u32, raw);
        }
        assert_eq!(ChildStep::from_raw(0), None);
        assert_eq!(ChildStep::from_raw(40), None);
        // The numbers are the wire format between child and parent: new steps go at the end.
        assert_eq!(ChildStep::Network as u32, 16);
        assert_eq!(ChildStep::Seccomp as u32, 17);
        assert_eq!(ChildStep::NoNewPrivs as u32, 25);
        assert_eq!(ChildStep::PingGroupRange as u32, 28);
        assert_eq!(ChildStep::Terminal as u32, 29);
        assert_eq!(ChildStep::Sysctl as u32, 31);
        assert_eq!(ChildStep::JoinNamespace as u32, 32);
        assert_eq!(ChildStep::Personality as u32, 38);
        assert_eq!(ChildStep::Cgroup as u32, 39);
    }

    #[test]
    fn privilege_and_delegation_failures_are_translated() {
        let eperm = |flags: u64| palisade_ns::Error::Clone {
            call: "clone3",
            flags,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let docker = palisade_ns::Namespace::MOUNT | palisade_ns::Namespace::PID;
        let err = Error::from_clone(eperm(docker.bits()));
        assert!(matches!(err, Error::NeedsPrivilege { namespaces, .. } if namespaces == docker));
        assert_eq!(err.errno(), Some(libc::EPERM));
        assert!(err.to_string().contains("rootless()"), "{err}");
        // In a new user namespace privilege is not what is missing.
        let user = docker | palisade_ns::Namespace::USER;
        assert!(matches!(
            Error::from_clone(eperm(user.bits())),
            Error::Namespace(_)
        ));

        let denied = palisade_cgroup::Error::Io {
            op: "create",
            path: "/sys/fs/cgroup/x".into(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };
        let err = Error::from_cgroup_create(denied);
        assert!(matches!(err, Error::CgroupNotDelegated { .. }));
        assert_eq!(err.errno(), Some(libc::EACCES));
        let full = palisade_cgroup::Error::Io {
            op: "create",
            path: "/sys/fs/cgroup/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(matches!(Error::from_cgroup_create(full), Error::Cgroup(_)));
    }

    #[test]
    fn a_fork_out_of_processes_names_the_limits() {
        let err = Error::from_child(ChildStep::InitFork, Context::default(), libc::EAGAIN);
        assert!(matches!(err, Error::OutOfProcesses { .. }), "{err:?}");
        assert_eq!(err.errno(), Some(libc::EAGAIN));
        assert!(err.to_string().contains("RLIMIT_NPROC"), "{err}");
        // Another step's EAGAIN, or another errno of the fork, is the step's own error.
        let exec = Error::from_child(ChildStep::Exec, Context::default(), libc::EAGAIN);
        assert!(matches!(exec, Error::Child { .. }), "{exec:?}");
        let nomem = Error::from_child(ChildStep::InitFork, Context::default(), libc::ENOMEM);
        assert!(matches!(nomem, Error::Child { .. }), "{nomem:?}");
    }

    #[test]
    fn child_errors_read_well() {
        let err = Error::Child {
            step: ChildStep::Exec,
            context: Context {
                subject: Some("nope".into()),
            },
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            err.to_string(),
            "sandbox child failed to execute \"nope\": No such file or directory (os error 2)"
        );
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }
}
