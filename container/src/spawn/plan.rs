//! Everything the sandbox child needs, computed before the clone: C strings, pointer arrays,
//! signal sets and flags. The child only reads it.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use palisade_cgroup::{Cgroup, Hierarchy, Resource};
use palisade_ns::child::SignalSet;
use palisade_ns::{IdMap, Namespace, SetGroups};
use palisade_overlay::rootfs::RootfsPlan;

use crate::error::{Error, Result};

/// Owned C strings with a NULL-terminated array of pointers to them, ready for `execve(2)`.
pub(crate) struct CStringArray {
    // Owns the bytes that `ptrs` points at; never mutated after construction.
    strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers refer only to the heap buffers of `strings`, which the array owns and
// never mutates or frees while it lives; sharing or sending it is as safe as for `Vec<CString>`.
unsafe impl Send for CStringArray {}
// SAFETY: as above; all access through `&self` is read-only.
unsafe impl Sync for CStringArray {}

impl CStringArray {
    pub fn new(strings: Vec<CString>) -> Self {
        let ptrs = strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        CStringArray { strings, ptrs }
    }

    /// The pointers, ending with the null one, as `execve(2)` takes them.
    pub fn as_slice(&self) -> &[*const libc::c_char] {
        &self.ptrs
    }

    pub fn strings(&self) -> &[CString] {
        &self.strings
    }
}

impl std::fmt::Debug for CStringArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.strings).finish()
    }
}

pub(crate) fn cstring(what: &'static str, value: &OsStr) -> Result<CString> {
    CString::new(value.as_bytes()).map_err(|_| Error::InvalidValue {
        what,
        value: value.to_string_lossy().into_owned(),
        reason: "contains a NUL byte",
    })
}

/// The `net.ipv4.ping_group_range` of a sandbox's own network namespace: every group of the
/// sandbox may open ICMP datagram sockets (`icmp(7)`), so that `ping` works without
/// `CAP_NET_RAW`. The sysctl is per network namespace, so the host's stays as it was. The kernel
/// reads the ids in the writer's user namespace and refuses one that it does not map
/// (`EINVAL`), so in a user namespace the range is the mapped extent of `gid_map` holding gid 0
/// (or its first extent).
pub(crate) fn ping_group_range(user: Option<&UserPlan>) -> CString {
    let extent = user.and_then(|u| {
        let maps = u.gid_map.mappings();
        maps.iter()
            .find(|m| m.inside == 0)
            .or_else(|| maps.first())
            .map(|m| (m.inside, m.inside.saturating_add(m.count.saturating_sub(1))))
    });
    // Without a user namespace: every gid the kernel accepts (`gid_t` is unsigned, but the
    // sysctl's upper bound is `INT_MAX`).
    let (low, high) = extent.unwrap_or((0, i32::MAX as u32));
    // Two numbers and a space: never a NUL.
    CString::new(format!("{low} {high}")).unwrap_or_default()
}

/// The program to execute: every path `execvp(3)` would try, and its argv/envp.
#[derive(Debug)]
pub(crate) struct ExecPlan {
    /// Paths tried in order (a single one when the program names a path).
    pub candidates: CStringArray,
    pub argv: CStringArray,
    pub envp: CStringArray,
    /// The environment `envp` holds, for an exec into the sandbox to start from.
    pub env: BTreeMap<OsString, OsString>,
}

impl ExecPlan {
    /// The exec of `program` with `args` and the environment `env`: the C arrays, and the
    /// candidates `execvp(3)` would try (the `PATH` of `env`, or the default one, unless the
    /// program names a path).
    pub fn new(
        program: &OsStr,
        args: &[OsString],
        env: BTreeMap<OsString, OsString>,
    ) -> Result<ExecPlan> {
        if program.is_empty() {
            return Err(Error::InvalidValue {
                what: "program",
                value: String::new(),
                reason: "is empty",
            });
        }
        let name = cstring("program", program)?;
        let mut argv = vec![name.clone()];
        for arg in args {
            argv.push(cstring("argument", arg)?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in &env {
            if k.is_empty() || k.as_bytes().contains(&b'=') {
                return Err(Error::InvalidValue {
                    what: "environment variable name",
                    value: k.to_string_lossy().into_owned(),
                    reason: "must be non-empty and contain no '='",
                });
            }
            let mut entry = k.clone();
            entry.push("=");
            entry.push(v);
            envp.push(cstring("environment variable", &entry)?);
        }
        let candidates = if program.as_bytes().contains(&b'/') {
            vec![name]
        } else {
            let path = env
                .get(OsStr::new("PATH"))
                .cloned()
                .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
            std::env::split_paths(&path)
                .map(|dir| {
                    let dir = if dir.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        dir
                    };
                    cstring("program", dir.join(program).as_os_str())
                })
                .collect::<Result<Vec<_>>>()?
        };
        Ok(ExecPlan {
            candidates: CStringArray::new(candidates),
            argv: CStringArray::new(argv),
            envp: CStringArray::new(envp),
            env,
        })
    }
}

/// Becoming root inside a new user namespace once the parent has written the maps.
#[derive(Debug)]
pub(crate) struct UserPlan {
    pub uid_map: IdMap,
    pub gid_map: IdMap,
    pub setgroups: SetGroups,
    /// Whether uid 0 / gid 0 are mapped, so the child can switch to them.
    pub root_uid: bool,
    pub root_gid: bool,
}

/// The parent's part of a sandbox's network, done around the clone.
#[derive(Debug)]
pub(crate) enum NetPlan {
    /// Attach to a bridge while the child waits, then publish the ports.
    Bridge(palisade_netns::Bridge, Vec<palisade_netns::PortMap>),
    /// Forward the ports into the sandbox's own namespace (which has only loopback).
    Forward(
        Vec<palisade_netns::PortMap>,
        palisade_netns::ForwarderLimits,
    ),
}

/// What the command's process does last, borrowed from a plan: the sandbox's command's, or an
/// exec's into a running sandbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Command<'a> {
    pub exec: &'a ExecPlan,
    pub security: &'a crate::security::SecurityPlan,
    pub tty: Option<crate::terminal::TerminalSize>,
    /// The program as a descriptor, executed instead of a path of `exec` (`execveat(2)`):
    /// [`Exec::program_fd`](crate::Exec::program_fd).
    pub program: Option<BorrowedFd<'a>>,
}

/// The complete recipe for one kind of sandbox child.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The namespaces the sandbox gets new: made by the clone itself, or, with
    /// [`join_user`](Self::join_user), by the child once it is in that user namespace (see
    /// [`clone_namespaces`](Self::clone_namespaces)).
    pub namespaces: Namespace,
    /// A user namespace the child joins first thing (`setns(2)`), before it creates
    /// [`namespaces`](Self::namespaces) there; with a new PID namespace among them it then
    /// forks once more, as a sibling, to be its first process.
    pub join_user: Option<std::os::fd::OwnedFd>,
    pub exec: ExecPlan,
    pub cwd: Option<CString>,
    pub hostname: Option<CString>,
    /// The NIS domain name to set in the sandbox's UTS namespace (`setdomainname(2)`).
    pub domainname: Option<CString>,
    pub user: Option<UserPlan>,
    /// `timens_offsets` contents; set when the child creates its time namespace itself.
    pub time_offsets: Option<CString>,
    /// Create the cgroup namespace after the clone, once the child is in its cgroup in every
    /// hierarchy, rather than in the clone (where it would be rooted at the caller's cgroup).
    pub unshare_cgroup_ns: bool,
    /// A network namespace to join (`setns(2)`) instead of creating one.
    pub join_net: Option<std::os::fd::OwnedFd>,
    /// IPC, UTS, cgroup and time namespaces the child joins (`SandboxBuilder::join_namespace`).
    pub joins: Vec<std::os::fd::OwnedFd>,
    /// A PID namespace the first process is born in: the spawning thread's namespace for
    /// children around the clone.
    pub join_pid: Option<std::os::fd::OwnedFd>,
    /// Bring the loopback interface of the new network namespace up.
    pub loopback_up: bool,
    /// What to write to `net.ipv4.ping_group_range` in the new network namespace (see
    /// [`ping_group_range`]); `None` without a network namespace of the sandbox's own.
    pub ping_group_range: Option<CString>,
    /// Namespaced kernel parameters to write, as `/proc/sys` paths and values (after
    /// `ping_group_range`, which one of them may set again).
    pub sysctls: Vec<(CString, CString)>,
    /// The root file system and mount table, carried out by the child in its mount namespace.
    pub rootfs: Option<RootfsPlan>,
    /// Make `/` rslave in the new mount namespace.
    pub private_mounts: bool,
    /// Mount a fresh `/proc` (new PID and mount namespaces).
    pub mount_proc: bool,
    /// Run the minimal init as PID 1 and the command as its child.
    pub init: bool,
    /// The wall-clock limit ([`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)),
    /// which the init, when there is one, keeps from its own start (see [`init`](super::init)).
    pub timeout: Option<std::time::Duration>,
    /// The init makes sockets in the sandbox's network namespace for the parent's port
    /// forwarder (a rootless sandbox with published ports).
    pub socket_factory: bool,
    /// `PR_SET_PDEATHSIG` (a sandbox without init, which follows the spawning thread).
    pub death_signal: bool,
    /// The read end of the caller's death pipe (see [`death_pipe`]), which each spawn opens
    /// anew for its init to watch: the init kills the sandbox when the caller process is gone.
    pub death_pipe: Option<OwnedFd>,
    /// The init program, a sealed memfd ([`init_image`](super::init_image)).
    pub init_image: Option<OwnedFd>,
    /// Descriptors the caller named, each dup'd above every target, and the number it gets in
    /// the command.
    pub passed_fds: Vec<(OwnedFd, RawFd)>,
    /// One above the highest target of `passed_fds` (at least 3): every descriptor the child
    /// still needs sits at or above it, so placing the passed ones overwrites none of them.
    pub fd_floor: RawFd,
    /// Clone with `CLONE_VM` on a stack of the child's own where the platform allows.
    pub share_memory: bool,
    /// The signals the init waits for: SIGCHLD, SIGIO (control socket requests) and those it
    /// forwards.
    pub init_signals: SignalSet,
    /// Capabilities, user, rlimits, no_new_privs and seccomp, applied right before the exec.
    pub security: std::sync::Arc<crate::security::SecurityPlan>,
    /// A pseudo-terminal of the sandbox's own devpts as the command's controlling terminal and
    /// stdio, of this initial size.
    pub tty: Option<crate::terminal::TerminalSize>,
}

/// The signals the init forwards to the command.
pub(crate) const FORWARDED_SIGNALS: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The signals the init waits for: SIGCHLD, SIGIO and the forwarded ones.
pub(crate) fn init_signals() -> SignalSet {
    let mut init = vec![libc::SIGCHLD, libc::SIGIO];
    init.extend(FORWARDED_SIGNALS);
    SignalSet::of(&init)
}

/// The cgroup each spawn gets: created before the clone, the child born into it.
#[derive(Debug)]
pub(crate) struct CgroupPlan {
    /// The host's hierarchies, detected once when the sandbox was built.
    pub hierarchy: Hierarchy,
    /// Validated limits.
    pub resources: Vec<Resource>,
    /// A parent group named by the user, as in `/proc/<pid>/cgroup`.
    pub parent: Option<String>,
    /// Whether the child is born into the group with `CLONE_INTO_CGROUP` (else its pid is
    /// written to `cgroup.procs` after the clone, while it waits).
    pub clone_into: bool,
    /// The group's name, for a named sandbox; else one that records its owner, for
    /// [`gc`](crate::gc).
    pub name: Option<String>,
}

impl CgroupPlan {
    pub fn create(&self) -> Result<Cgroup> {
        // The groups a killed caller left beside ours go first: one directory read per
        // hierarchy when there are none. A failure here must not fail the spawn; the next one,
        // or `palisade::gc`, tries again.
        let _ = palisade_cgroup::gc(&self.hierarchy, self.parent.as_deref());
        let mut b = Cgroup::builder()
            .hierarchy(&self.hierarchy)
            .resources(self.resources.iter().cloned());
        if let Some(parent) = &self.parent {
            b = b.parent_path(parent);
        }
        if let Some(name) = &self.name {
            b = b.name(name);
        }
        b.create().map_err(Error::from_cgroup_create)
    }
}

impl Plan {
    /// The namespaces the clone creates: none in a joined user namespace, where the child
    /// creates them itself so that they are that namespace's (`user_namespaces(7)`).
    pub fn clone_namespaces(&self) -> Namespace {
        if self.join_user.is_some() {
            Namespace::empty()
        } else {
            self.namespaces
        }
    }

    /// Whether the sandbox's first process is in a new PID namespace.
    pub fn new_pid_namespace(&self) -> bool {
        self.namespaces.contains(Namespace::PID)
    }

    /// Whether the child forks once more after joining a user namespace, as its new PID
    /// namespace's first process, and reports that process's pid.
    pub fn forks_in_user(&self) -> bool {
        self.join_user.is_some() && self.new_pid_namespace()
    }

    /// The command's part of the plan.
    pub fn command(&self) -> Command<'_> {
        Command {
            exec: &self.exec,
            security: &self.security,
            tty: self.tty,
            program: None,
        }
    }

    /// The plan's own descriptors, which the child keeps until its exec.
    pub fn own_fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.join_net
            .iter()
            .chain(&self.join_user)
            .chain(&self.joins)
            .chain(&self.init_image)
            .chain(self.passed_fds.iter().map(|(fd, _)| fd))
            .map(|fd| fd.as_raw_fd())
    }
}

/// A new open file description of the pipe (or file) `fd` refers to, close-on-exec: opened
/// through its `/proc/self/fd` link (`proc(5)`), which for a pipe gives another description of
/// the same pipe rather than a duplicate of the descriptor.
pub(crate) fn reopen(fd: &OwnedFd) -> io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open(2) of a NUL-terminated path; the descriptor is owned below.
    let new = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A close-on-exec duplicate of `fd` numbered `floor` or above (`fcntl(2)`, `F_DUPFD_CLOEXEC`).
pub(crate) fn dup_above(fd: RawFd, floor: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor, which we own from here.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The process's death pipe: nobody ever writes to it, and its write end exists only in this
/// process (close-on-exec), so the read end reports end-of-file exactly when this process is
/// gone (`pipe(7)`). Every sandbox's init watches a read end: that is how a sandbox follows the
/// life of the caller *process*, whichever of its threads spawned it. (`PR_SET_PDEATHSIG`
/// follows the spawning thread, and a pidfd of the caller inside the sandbox would be a handle
/// on the caller for whoever takes over the init.)
///
/// Process-wide by nature: it stands for the process. A child the caller forks without
/// executing keeps it open until it exits too.
pub(crate) fn death_pipe(floor: RawFd) -> io::Result<OwnedFd> {
    static PIPE: OnceLock<io::Result<(OwnedFd, OwnedFd)>> = OnceLock::new();
    let pipe = PIPE.get_or_init(|| {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, which we own from here.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    });
    match pipe {
        Ok((read, _write)) => dup_above(read.as_raw_fd(), floor),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}
