use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use palisade_cgroup::{
    Bytes, CpuMax, CpuSet, DevicePolicy, DeviceRule, Hierarchy, IoMax, Max, Resource,
};
use palisade_netns::{ForwarderLimits, Network, PortMap, Proto};
use palisade_ns::{IdMap, Namespace, SetGroups, TimeOffsets};
use palisade_overlay::rootfs::{Access, RootSource, Rootfs};

use crate::derive::{self, DeathWatch, RootChoice};
use crate::error::{Error, Result};
use crate::security::{Capability, SecurityContext, SecuritySpec};
use crate::spawn::init_image;
use crate::spawn::plan::{
    cstring, death_pipe, dup_above, init_signals, ping_group_range, CgroupPlan, ExecPlan, NetPlan,
    Plan, UserPlan,
};
use crate::terminal::TerminalSize;
use crate::{Child, ExitStatus, Output, Stdio};

mod checks;
mod getters;
mod image;
mod mounts;
mod security;
mod timeout;

/// A sandbox recipe, prepared and ready to [`spawn`](Sandbox::spawn) any number of times.
///
/// Build one with [`Sandbox::builder`]. All parsing, validation and C string conversion is done by
/// [`SandboxBuilder::build`], so a spawn only creates pipes, clones and waits for the `execve`.
#[derive(Debug)]
pub struct Sandbox {
    pub(crate) plan: Plan,
    pub(crate) cgroup: Option<CgroupPlan>,
    pub(crate) stdio: [Stdio; 3],
    pub(crate) kill_on_drop: bool,
    /// What the parent does for the sandbox's network around the clone.
    pub(crate) net: Option<NetPlan>,
    /// Where and as what a named sandbox is recorded.
    pub(crate) identity: Option<Identity>,
    /// The wall-clock limit, from the spawn.
    pub(crate) timeout: Option<std::time::Duration>,
}

/// A named sandbox's identity and what its record holds from the recipe.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// The state root.
    pub root: PathBuf,
    /// The validated name.
    pub id: String,
    /// Whether it outlives its creator.
    pub detach: bool,
    pub annotations: BTreeMap<String, String>,
    /// Its root file system, described.
    pub rootfs: String,
}

impl Sandbox {
    /// The namespaces a sandbox gets unless told otherwise: those `docker run` creates (mount,
    /// PID, UTS, IPC, network, cgroup). Add [`Namespace::USER`] for rootless operation, or
    /// [`Namespace::TIME`].
    pub const DEFAULT_NAMESPACES: Namespace = Namespace::MOUNT
        .union(Namespace::PID)
        .union(Namespace::UTS)
        .union(Namespace::IPC)
        .union(Namespace::NET)
        .union(Namespace::CGROUP);

    /// Starts describing a sandbox that runs `program`, found in `PATH` unless it contains a
    /// `/`, like [`std::process::Command::new`].
    pub fn builder(program: impl AsRef<OsStr>) -> SandboxBuilder {
        SandboxBuilder::new(program.as_ref())
    }

    /// The namespaces each spawned sandbox is created in.
    pub fn namespaces(&self) -> Namespace {
        let time = self.plan.time_offsets.is_some();
        self.plan.namespaces
            | if time {
                Namespace::TIME
            } else {
                Namespace::empty()
            }
    }
}

/// Configures a [`Sandbox`], in the manner of [`std::process::Command`].
///
/// ```no_run
/// use palisade::{Sandbox, Stdio};
///
/// let out = Sandbox::builder("hostname")
///     .hostname("box")
///     .stdout(Stdio::piped())
///     .output()?;
/// assert_eq!(out.stdout, b"box\n");
/// # Ok::<(), palisade::Error>(())
/// ```
///
/// A builder is [`Clone`], so one prepared configuration can serve many requests, each clone
/// edited on its own (its arguments, environment, limits) before it is built or spawned. A
/// clone shares the descriptors the original was given (a [`Stdio`] made from a file or pipe,
/// the descriptors of [`inherit_fd`](Self::inherit_fd)): each spawn installs duplicates of
/// them, and each descriptor is closed when the last builder and [`Sandbox`] holding it go.
///
/// ```
/// use palisade::Sandbox;
///
/// let mut template = Sandbox::builder("sh");
/// template.arg("-c").hostname("worker").pids_max(64);
/// let requests = ["echo one", "echo two"];
/// let builders: Vec<_> = requests
///     .iter()
///     .map(|script| {
///         let mut b = template.clone();
///         b.arg(script);
///         b
///     })
///     .collect();
/// assert_eq!(builders[1].get_args().collect::<Vec<_>>(), ["-c", "echo two"]);
/// assert_eq!(template.get_args().len(), 1);
/// ```
#[derive(Debug, Clone)]
pub struct SandboxBuilder {
    process: ProcessSpec,
    isolation: IsolationSpec,
    stdio: [Stdio; 3],
    lifecycle: Lifecycle,
    limits: LimitSpec,
    /// Capabilities, user, rlimits, no_new_privs and seccomp (see [`crate::security`]).
    pub(crate) security: SecuritySpec,
    /// An image's config defaults, and a user given by name (see `image`).
    image: image::ImageSpec,
}

/// The sandbox's cgroup: limits, and where the group goes.
#[derive(Debug, Default, Clone)]
struct LimitSpec {
    resources: Vec<Resource>,
    /// Kept as given until `build`, which validates it.
    cpus: Option<f64>,
    /// A group even without limits, for stats, freezing and killing.
    wanted: bool,
    parent: Option<String>,
    /// `None`: use `CLONE_INTO_CGROUP` (the default).
    clone_into: Option<bool>,
    /// `None`: Docker's default device policy.
    devices: Option<DevicePolicy>,
}

/// Where a sandbox's environment starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvBase {
    /// Docker's: `PATH`, `HOSTNAME`, `HOME`, and `TERM` with a terminal.
    Minimal,
    /// Nothing.
    Empty,
    /// The caller's whole environment.
    Caller,
}

/// The `PATH` a sandbox gets unless told otherwise: Docker's.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run: program, arguments, environment, directory.
#[derive(Debug, Clone)]
struct ProcessSpec {
    program: OsString,
    args: Vec<OsString>,
    /// Where the environment starts from, before `env`'s edits.
    env_base: EnvBase,
    /// `None` removes an inherited variable.
    env: BTreeMap<OsString, Option<OsString>>,
    cwd: Option<PathBuf>,
    /// Descriptors the caller passes, by the number they get in the command.
    fds: BTreeMap<RawFd, Arc<OwnedFd>>,
    /// A terminal for the command, of this initial size.
    tty: Option<TerminalSize>,
}

/// The passed descriptors, ready for the child.
struct FdsPlan {
    passed: Vec<(OwnedFd, RawFd)>,
    floor: RawFd,
}

/// The highest number a passed descriptor may get: far above what programs use, far below the
/// kernel's `nr_open` ceiling.
const MAX_PASSED_FD: RawFd = 1 << 16;

impl ProcessSpec {
    /// Duplicates each passed descriptor above every target number, so that the child can
    /// place them in any order.
    fn fds_plan(&self) -> Result<FdsPlan> {
        if let Some(&bad) = self
            .fds
            .keys()
            .find(|&&n| !(3..=MAX_PASSED_FD).contains(&n))
        {
            return Err(Error::InvalidValue {
                what: "passed descriptor number",
                value: bad.to_string(),
                reason: "must be from 3 to 65536 (0 to 2 are set with stdin, stdout and stderr)",
            });
        }
        let floor = self.fds.keys().next_back().map_or(3, |top| top + 1);
        let passed = self
            .fds
            .iter()
            .map(|(&target, fd)| {
                let dup = dup_above(fd.as_raw_fd(), floor).map_err(|source| Error::Setup {
                    what: "duplicate a passed descriptor",
                    source,
                })?;
                Ok((dup, target))
            })
            .collect::<Result<_>>()?;
        Ok(FdsPlan { passed, floor })
    }
}

/// Which namespaces, and how they are configured.
#[derive(Debug, Clone)]
struct IsolationSpec {
    namespaces: Namespace,
    hostname: Option<OsString>,
    domainname: Option<OsString>,
    uid_map: Option<IdMap>,
    gid_map: Option<IdMap>,
    time_offsets: Option<TimeOffsets>,
    rootfs: RootChoice,
    network: Network,
    ports: Vec<PortMap>,
    /// The forwarder's bounds, if set here rather than on the bridge.
    forwarder_limits: Option<ForwarderLimits>,
    /// The scratch bound, applied to whichever root the sandbox gets.
    scratch: Option<u64>,
    /// Namespaced kernel parameters.
    sysctls: BTreeMap<String, String>,
    /// Namespaces to join by path.
    joins: Vec<PathBuf>,
    /// The guest paths of [`SandboxBuilder::volume_owned`]'s volumes, whose id maps show the
    /// sandbox's ids until `build` maps them to kernel ids.
    owned_volumes: Vec<PathBuf>,
}

/// How the sandbox's processes live and die.
#[derive(Debug, Clone)]
struct Lifecycle {
    init: bool,
    die_with_parent: bool,
    kill_on_drop: bool,
    share_memory: bool,
    /// A name, recording the sandbox under a state root.
    name: Option<String>,
    state_root: Option<PathBuf>,
    detach: bool,
    annotations: BTreeMap<String, String>,
    /// The wall-clock limit (see `timeout`).
    timeout: Option<std::time::Duration>,
}

impl SandboxBuilder {
    fn new(program: &OsStr) -> Self {
        SandboxBuilder {
            process: ProcessSpec {
                program: program.to_owned(),
                args: Vec::new(),
                env_base: EnvBase::Minimal,
                env: BTreeMap::new(),
                cwd: None,
                fds: BTreeMap::new(),
                tty: None,
            },
            isolation: IsolationSpec {
                namespaces: Sandbox::DEFAULT_NAMESPACES,
                hostname: None,
                domainname: None,
                uid_map: None,
                gid_map: None,
                time_offsets: None,
                rootfs: RootChoice::Default,
                network: Network::None,
                ports: Vec::new(),
                forwarder_limits: None,
                scratch: None,
                sysctls: BTreeMap::new(),
                joins: Vec::new(),
                owned_volumes: Vec::new(),
            },
            stdio: [Stdio::inherit(), Stdio::inherit(), Stdio::inherit()],
            lifecycle: Lifecycle {
                init: true,
                die_with_parent: true,
                kill_on_drop: true,
                share_memory: true,
                name: None,
                state_root: None,
                detach: false,
                annotations: BTreeMap::new(),
                timeout: None,
            },
            limits: LimitSpec::default(),
            security: SecuritySpec::default(),
            image: image::ImageSpec::default(),
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.process.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.process
            .args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable.
    ///
    /// Nothing of the caller's environment crosses unless named: a sandbox starts from Docker's
    /// environment, `PATH` (Docker's default), `HOSTNAME` (the sandbox's), `HOME` (`/root` for
    /// root, `/` for another [`user`](Self::user), the home directory of a user given by
    /// [name](Self::user_name)) and, when the command's stdin or stdout is the caller's
    /// terminal, the caller's `TERM`; then the [image](Self::image)'s `Env`; then come these
    /// edits, which win whatever the order of the calls.
    /// [`env_inherit`](Self::env_inherit) passes one of the caller's variables,
    /// [`env_inherit_all`](Self::env_inherit_all) all of them, and
    /// [`env_clear`](Self::env_clear) starts from nothing.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.process
            .env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.env(k, v);
        }
        self
    }

    /// Passes the caller's variable `key`, if it has one, as `docker run -e KEY` does.
    pub fn env_inherit(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        let key = key.as_ref();
        let value = std::env::var_os(key);
        self.process.env.insert(key.to_owned(), value);
        self
    }

    /// Starts from the caller's whole environment instead of Docker's minimal one: an explicit
    /// opt-in, since it hands the sandbox every token and secret the caller holds in it.
    pub fn env_inherit_all(&mut self) -> &mut Self {
        self.process.env_base = EnvBase::Caller;
        self.process.env.clear();
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.process.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// Starts from an empty environment (not even `PATH`, nor the [image](Self::image)'s `Env`).
    pub fn env_clear(&mut self) -> &mut Self {
        self.process.env_base = EnvBase::Empty;
        self.process.env.clear();
        self
    }

    /// The working directory of the command, resolved inside the sandbox (default: the
    /// [image](Self::image)'s `WorkingDir`, else the sandbox's `/`).
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.process.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Passes the caller's descriptor `fd` into the sandbox as number `child_fd` (3 or above),
    /// like runc's `--preserve-fds` or systemd's socket activation (`LISTEN_FDS`). Nothing else
    /// of the caller's crosses: every other descriptor, close-on-exec or not, is closed in the
    /// sandbox child before it looks up any path, and only 0 to 2 (see
    /// [`stdin`](Self::stdin)) and the descriptors passed here reach the command. The init
    /// holds none of them. Passing a second descriptor as the same number replaces the first.
    ///
    /// A number below 3 or above 65536 is refused by [`build`](Self::build).
    pub fn inherit_fd(&mut self, child_fd: RawFd, fd: impl Into<OwnedFd>) -> &mut Self {
        self.process.fds.insert(child_fd, Arc::new(fd.into()));
        self
    }

    /// Sets the hostname seen inside the sandbox; needs [`Namespace::UTS`] (on by default).
    pub fn hostname(&mut self, name: impl AsRef<OsStr>) -> &mut Self {
        self.isolation.hostname = Some(name.as_ref().to_owned());
        self
    }

    /// Sets the NIS domain name seen inside the sandbox (`setdomainname(2)`, `domainname(1)`,
    /// `/proc/sys/kernel/domainname`), at most 64 bytes; like the
    /// [`hostname`](Self::hostname), it needs a UTS namespace of the sandbox's own
    /// ([`Namespace::UTS`], on by default, and not [joined](Self::join_namespace)), so that the
    /// host's stays as it is.
    pub fn domainname(&mut self, name: impl AsRef<OsStr>) -> &mut Self {
        self.isolation.domainname = Some(name.as_ref().to_owned());
        self
    }

    /// Sets exactly which namespaces to create (default: [`Sandbox::DEFAULT_NAMESPACES`]). An id
    /// map or time offsets set on this builder add [`Namespace::USER`] or [`Namespace::TIME`].
    pub fn namespaces(&mut self, namespaces: Namespace) -> &mut Self {
        self.isolation.namespaces = namespaces;
        self
    }

    /// The uid map of a new user namespace (implies [`Namespace::USER`]). Without one, a user
    /// namespace maps root inside to the caller's effective uid.
    pub fn uid_map(&mut self, map: IdMap) -> &mut Self {
        self.isolation.uid_map = Some(map);
        self
    }

    /// The gid map of a new user namespace (implies [`Namespace::USER`]). Without one, a user
    /// namespace maps root inside to the caller's effective gid.
    pub fn gid_map(&mut self, map: IdMap) -> &mut Self {
        self.isolation.gid_map = Some(map);
        self
    }

    /// Rootless mode: a new user namespace where root is the caller's own uid and gid, which an
    /// unprivileged user may set up on its own (`user_namespaces(7)`).
    pub fn rootless(&mut self) -> &mut Self {
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        self.isolation.namespaces |= Namespace::USER;
        self.isolation.uid_map = Some(IdMap::root_to(uid));
        self.isolation.gid_map = Some(IdMap::root_to(gid));
        self
    }

    /// Shifts the monotonic and boot-time clocks in a new time namespace (implies
    /// [`Namespace::TIME`]); written before the command enters it.
    ///
    /// The command enters a new time namespace when it executes (`time_namespaces(7)`); the init,
    /// which reads no clocks and never executes, stays in the caller's, and its
    /// `/proc/<pid>/ns/time_for_children` names the sandbox's.
    pub fn time_offsets(&mut self, offsets: TimeOffsets) -> &mut Self {
        self.isolation.time_offsets = Some(offsets);
        self
    }

    /// Gives the command a pseudo-terminal (`docker run -t`): opened on the sandbox's own devpts,
    /// so `tty` prints `/dev/pts/0` inside; the command's controlling terminal, in a session of
    /// its own, and its stdin, stdout and stderr. The caller gets the master with
    /// [`Child::take_pty`] (and [`Pty::proxy`](crate::Pty::proxy) connects it to the caller's own terminal). Needs
    /// a root file system of the sandbox's own (its devpts), and leaves no stdio to set: `build`
    /// refuses either with [`Error::InvalidValue`]. The size starts at 24×80 unless given with
    /// [`tty_size`](Self::tty_size).
    pub fn tty(&mut self, on: bool) -> &mut Self {
        self.process.tty = on.then(|| self.process.tty.unwrap_or_default());
        self
    }

    /// Gives the command a pseudo-terminal, as [`tty`](Self::tty), of this initial size.
    pub fn tty_size(&mut self, size: TerminalSize) -> &mut Self {
        self.process.tty = Some(size);
        self
    }

    /// Where the command's standard input comes from.
    pub fn stdin(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdio[0] = stdio.into();
        self
    }

    /// Where the command's standard output goes.
    pub fn stdout(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdio[1] = stdio.into();
        self
    }

    /// Where the command's standard error goes.
    pub fn stderr(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdio[2] = stdio.into();
        self
    }

    /// Joins the namespace at `path` (a `/proc/<pid>/ns/<kind>` file or a bind mount of one)
    /// instead of creating one of that kind, as the containers of a Kubernetes pod share theirs
    /// (OCI's `linux.namespaces[].path`). Its kind is asked of the kernel at
    /// [`build`](Self::build) (`ioctl_ns(2)`), one namespace per kind:
    ///
    /// - IPC, UTS, cgroup and time: the child joins it first thing (`setns(2)`). A hostname
    ///   with a joined UTS namespace is refused (the hostname is that namespace's), and so are
    ///   [`time_offsets`](Self::time_offsets) with a joined time namespace (only a new one takes
    ///   offsets, `time_namespaces(7)`).
    /// - PID: the sandbox's first process is born in it (`pid_namespaces(7)`: the spawning
    ///   thread's namespace for children is switched for the clone only). The sandbox still has
    ///   its init, which is then not PID 1 there: when its caller dies it kills the command, not
    ///   the namespace's other processes, which belong to whoever made it.
    /// - User: the child joins it first (its supplementary groups dropped before, while it
    ///   may), becomes its root, and creates its other namespaces in it, so that they are that
    ///   namespace's (`user_namespaces(7)`); with a PID namespace of its own, it forks its first
    ///   process there once more, as the caller's child. Id maps are refused with it: only a new
    ///   namespace takes them. Its groups may not ping (`net.ipv4.ping_group_range` keeps the
    ///   kernel's default).
    /// - Network: refused; join one with [`Network::join`](palisade_netns::Network).
    /// - Mount: refused; the sandbox's root is set up in a mount namespace of its own.
    ///
    /// Joining needs `CAP_SYS_ADMIN` over the namespace's owner: a sandbox with a user
    /// namespace of its own cannot join one of the host's.
    pub fn join_namespace(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.isolation.joins.push(path.into());
        self
    }

    /// Sets a kernel parameter of one of the sandbox's own namespaces (`docker run --sysctl`,
    /// OCI's `linux.sysctl`), e.g. `net.ipv4.ip_forward` = `1`: those of its network namespace
    /// (`net.*`), of its IPC namespace (`kernel.shm*`, `kernel.msg*`, `kernel.sem`,
    /// `fs.mqueue.*`) and of its UTS namespace. `build` refuses any other with
    /// [`Error::InvalidValue`]: it would change the host. Written by the child once it is in
    /// its namespaces, before its root is set up (`sysctl(8)`, `proc(5)`).
    pub fn sysctl(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.isolation.sysctls.insert(key.into(), value.into());
        self
    }

    /// Whether a minimal init runs as PID 1 of the new PID namespace (default: yes). The init
    /// starts the command, reaps orphaned processes, forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT,
    /// SIGUSR1, SIGUSR2 and SIGWINCH to the command, and exits with its status, as `tini` and
    /// `docker run --init` do. With `false` the command itself is PID 1, and receives no signal
    /// for which it has not installed a handler (`pid_namespaces(7)`). Without a PID namespace
    /// there is no init either way.
    pub fn init(&mut self, init: bool) -> &mut Self {
        self.lifecycle.init = init;
        self
    }

    /// Whether the sandbox is killed (SIGKILL) when the caller process dies, however it dies
    /// (default: yes).
    ///
    /// The init watches the read end of a pipe whose write end only the caller process holds
    /// (`pipe(7)`: end-of-file once every writer is gone), so the sandbox follows the *process*,
    /// whichever of its threads spawned it: a sandbox spawned from a thread pool outlives the
    /// thread. A child that the caller forks without executing holds the write end too, until
    /// it exits.
    ///
    /// Without an init (no PID namespace, or [`init(false)`](Self::init)) there is no process
    /// of the sandbox's own to watch, and `PR_SET_PDEATHSIG` is used instead (`prctl(2)`),
    /// which follows the spawning *thread*: spawn such sandboxes from a thread that lives as
    /// long as they should.
    pub fn die_with_parent(&mut self, die: bool) -> &mut Self {
        self.lifecycle.die_with_parent = die;
        self
    }

    /// Whether dropping the [`Child`] handle of a still-running sandbox kills and reaps it
    /// (default: yes). With a PID namespace or a cgroup (`cgroup.kill`) this kills every process
    /// in the sandbox; without either, only the process spawned. A sandbox left running keeps
    /// its cgroup, which is then the caller's to remove.
    pub fn kill_on_drop(&mut self, kill: bool) -> &mut Self {
        self.lifecycle.kill_on_drop = kill;
        self
    }

    /// Names the sandbox and records it under the state root ([`state_root`](Self::state_root)),
    /// so that any process can [open](Sandbox::open) it by that name, [list](Sandbox::list) it,
    /// run commands in it and delete it (see [`crate::state`]). A name is 1 to 128 of
    /// `[A-Za-z0-9_.-]`, starting with a letter or digit; one spawn at a time holds it, and it
    /// stays taken, with the command's exit status, until [`Handle::delete`](crate::Handle::delete).
    /// A named sandbox's cgroup (if it has one) is `palisade-sb-<name>`.
    pub fn name(&mut self, name: impl Into<String>) -> &mut Self {
        self.lifecycle.name = Some(name.into());
        self
    }

    /// Where named sandboxes are recorded (default: [`state::default_root`](crate::state::default_root)).
    pub fn state_root(&mut self, root: impl Into<PathBuf>) -> &mut Self {
        self.lifecycle.state_root = Some(root.into());
        self
    }

    /// Adds a label to the sandbox's record (OCI's annotations; `docker run --label`).
    pub fn annotation(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.lifecycle.annotations.insert(key.into(), value.into());
        self
    }

    /// Detaches the sandbox from its creator (`docker run -d`): it outlives the [`Child`] and
    /// the creating process, and is managed through its [name](Self::name) from then on, with
    /// [`Sandbox::open`]. Needs a name. Implies [`die_with_parent(false)`](Self::die_with_parent)
    /// and [`kill_on_drop(false)`](Self::kill_on_drop).
    ///
    /// Everything it holds must then outlive the creator too: its init records the command's
    /// status in the state directory; its bridge network's tables (port guard, published ports)
    /// are not tied to the creator's netlink socket, and are collected once the sandbox has
    /// exited; and a userspace port forwarder cannot serve it. So its published ports need a
    /// bridge network and are served by DNAT alone: from other hosts, the bridge and the host's
    /// non-loopback addresses, not from the host's loopback.
    pub fn detach(&mut self, detach: bool) -> &mut Self {
        self.lifecycle.detach = detach;
        self
    }

    /// Whether the child may run in the caller's memory on a stack of its own (`CLONE_VM`;
    /// default: yes, on x86-64). `false` forces the fork-like clone that other platforms use;
    /// it exists to test that path.
    #[doc(hidden)]
    pub fn share_memory(&mut self, share: bool) -> &mut Self {
        self.lifecycle.share_memory = share;
        self
    }

    /// The sandbox's network (default [`Network::None`]: a network namespace of its own with
    /// `lo` up). [`Network::Host`] shares the caller's network stack (no network namespace);
    /// [`Network::Join`] enters another namespace, e.g. another sandbox's
    /// (`Network::join_pid(child.id() as i32)`), which must belong to the same user namespace.
    /// [`Network::Bridge`] puts the sandbox on a bridge with an address, a default route and
    /// outbound NAT ([`palisade_netns::bridge`]); it needs `CAP_NET_ADMIN` on the host.
    pub fn network(&mut self, network: Network) -> &mut Self {
        self.isolation.network = network;
        self
    }

    /// Publishes `port` of the sandbox as `host_port` on the host (`docker run -p`); a
    /// `host_port` of 0 lets the kernel choose ([`Child::ports`] tells which).
    ///
    /// On a bridge, traffic from outside is DNATed by nftables rules and connections made on the
    /// host itself (including to `127.0.0.1`) are relayed by the userspace forwarder. With
    /// [`Network::None`], the forwarder alone serves the port, connecting to `127.0.0.1:port`
    /// inside the sandbox; in a rootless sandbox (whose network namespace the caller may not
    /// join) through sockets the sandbox's init makes there. The host port is bound when the sandbox spawns: one that is taken
    /// fails the spawn with [`palisade_netns::Error::PortInUse`].
    pub fn publish(&mut self, host_port: u16, port: u16, proto: Proto) -> &mut Self {
        self.publish_port(PortMap::new(host_port, port, proto))
    }

    /// Bounds the userspace forwarder that serves the published ports: connections, UDP
    /// sessions and their idle timeouts (see [`ForwarderLimits`]; its defaults without a call).
    /// It applies to every network; on a bridge it replaces the [`Bridge`](palisade_netns::Bridge)'s own
    /// ([`Bridge::forwarder_limits`](palisade_netns::Bridge::forwarder_limits)).
    pub fn forwarder_limits(&mut self, limits: ForwarderLimits) -> &mut Self {
        self.isolation.forwarder_limits = Some(limits);
        self
    }

    /// Publishes a port as [`PortMap`] describes it (e.g. parsed from `"8080:80/tcp"`).
    pub fn publish_port(&mut self, map: PortMap) -> &mut Self {
        self.isolation.ports.push(map);
        self
    }

    /// The sandbox's root file system (needs [`Namespace::MOUNT`], on by default):
    /// [`Rootfs::host`] (the host's `/` under a throwaway writable layer), [`Rootfs::dir`] or
    /// [`Rootfs::layers`]. The sandbox gets its own `/proc`, a minimal `/dev`, `/sys` read-only
    /// and a tmpfs `/tmp`, with the paths runc masks hidden.
    ///
    /// Without a call, a sandbox with a mount namespace gets [`Rootfs::host`]. The child mounts
    /// it all in its own mount namespace, so this also works rootless (in a user namespace,
    /// with overlayfs's `userxattr`; see [`Rootfs::plan_rootless`]).
    pub fn rootfs(&mut self, rootfs: Rootfs) -> &mut Self {
        self.isolation.rootfs = RootChoice::Own(rootfs);
        self
    }

    /// No root file system of the sandbox's own: it sees the host's mounts through a private
    /// copy of the mount table (slave propagation, so host mounts still propagate in), with its
    /// own `/proc` in a new PID namespace.
    pub fn host_mounts(&mut self) -> &mut Self {
        self.isolation.rootfs = RootChoice::HostMounts;
        self
    }

    /// Changes the root file system set so far ([`Rootfs::host`] if none was).
    fn edit_rootfs(&mut self, edit: impl FnOnce(Rootfs) -> Rootfs) -> &mut Self {
        let current = match std::mem::replace(&mut self.isolation.rootfs, RootChoice::Default) {
            RootChoice::Own(r) => r,
            RootChoice::Default | RootChoice::HostMounts => Rootfs::host(),
        };
        self.isolation.rootfs = RootChoice::Own(edit(current));
        self
    }

    /// Binds the host's `host` at `guest` in the sandbox (implies [`Rootfs::host`] if no root
    /// file system was set).
    pub fn volume(
        &mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<PathBuf>,
        access: Access,
    ) -> &mut Self {
        self.edit_rootfs(|r| r.volume(host, guest, access))
    }

    /// Mounts an empty tmpfs at `guest` in the sandbox (implies [`Rootfs::host`] if no root file
    /// system was set).
    pub fn tmpfs(&mut self, guest: impl Into<PathBuf>) -> &mut Self {
        self.edit_rootfs(|r| r.tmpfs(guest))
    }

    /// Makes the sandbox's root read-only (implies [`Rootfs::host`] if no root file system was
    /// set).
    pub fn read_only_root(&mut self) -> &mut Self {
        self.edit_rootfs(|r| r.read_only(true))
    }

    /// Limits the sandbox's memory (`memory.max`; v1 `memory.limit_in_bytes`). Past it the
    /// kernel reclaims, then OOM-kills a process of the sandbox, which
    /// [`ExitStatus::oom_killed`] reports. Like every limit, it gives each spawned sandbox a
    /// cgroup of its own (see [`cgroup`](Self::cgroup)).
    pub fn memory_max(&mut self, bytes: Bytes) -> &mut Self {
        self.resource(Resource::MemoryMax(Max::Limit(bytes)))
    }

    /// Limits the sandbox to `cpus` CPUs' worth of time (`cpu.max`, e.g. `1.5`; v1 CFS quota).
    /// Checked by [`build`](Self::build): it must be positive and finite, and at most the
    /// number of CPUs online on this host (more could never bind:
    /// [`CpusAboveHost`](palisade_cgroup::Error::CpusAboveHost)).
    pub fn cpus(&mut self, cpus: f64) -> &mut Self {
        self.limits.cpus = Some(cpus);
        self
    }

    /// Limits how many processes and threads the sandbox may hold at once (`pids.max`), its
    /// init included: [`build`](Self::build) refuses a limit below 2 (1 without an
    /// [init](Self::init)) with [`Error::PidsLimitTooLow`].
    pub fn pids_max(&mut self, max: u64) -> &mut Self {
        self.resource(Resource::PidsMax(Max::Limit(max)))
    }

    /// Restricts the sandbox to these CPUs (`cpuset.cpus`).
    pub fn cpuset(&mut self, cpus: CpuSet) -> &mut Self {
        self.resource(Resource::CpusetCpus(cpus))
    }

    /// Limits block I/O on one device (`io.max`; v1 `blkio.throttle.*`). May be given once per
    /// device.
    pub fn io_max(&mut self, limit: IoMax) -> &mut Self {
        self.resource(Resource::IoMax(limit))
    }

    /// Allows a device (or denies it) in the sandbox's device policy, which starts from
    /// Docker's ([`DevicePolicy::docker_default`]: `null`, `zero`, `full`, `random`,
    /// `urandom`, `tty`, `ptmx` and the pseudo-terminals, and `mknod` of any node, but not
    /// its use). Rules apply in order, the last matching one deciding.
    ///
    /// Two kernel mechanisms enforce the policy. Every mount of the sandbox is `nodev`
    /// (`mount(2)`) except the device nodes bound into its `/dev`, so no other node can be
    /// opened, whatever the image ships or the command makes with `mknod(2)`; and the
    /// sandbox's cgroup, when it has one, carries the policy itself (the v1 `devices`
    /// controller, or a `BPF_PROG_TYPE_CGROUP_DEVICE` program on cgroup v2), which also holds
    /// for file systems the command mounts. Giving a policy here, or `CAP_SYS_ADMIN` outside a
    /// user namespace, gives the sandbox a cgroup for it.
    ///
    /// Only a caller with `CAP_SYS_ADMIN` in the initial user namespace may write a policy to
    /// a cgroup. An unprivileged caller's ([`rootless`](Self::rootless)) sandbox gets none, as
    /// it needs none: in its user namespace no device node can be made and every file system it
    /// mounts is `nodev` (`user_namespaces(7)`). Giving it a policy is refused by `build`
    /// ([`Error::InvalidValue`]).
    ///
    /// Allowing a device does not create its node: bind it in with a
    /// [`volume`](Self::volume).
    pub fn device(&mut self, rule: DeviceRule) -> &mut Self {
        self.limits
            .devices
            .get_or_insert_with(DevicePolicy::docker_default)
            .push(rule);
        self
    }

    /// Replaces the whole device policy (see [`device`](Self::device)).
    pub fn devices(&mut self, policy: DevicePolicy) -> &mut Self {
        self.limits.devices = Some(policy);
        self
    }

    /// Bounds what the sandbox may write to its throwaway root layer and `/tmp`, together
    /// (default 1 GiB; see [`Rootfs::scratch_size`]). The space is a tmpfs, charged to the
    /// sandbox's memory cgroup when it has one.
    pub fn scratch_size(&mut self, bytes: Bytes) -> &mut Self {
        self.isolation.scratch = Some(bytes.0);
        self
    }

    /// Sets any cgroup limit; see [`Resource`].
    pub fn resource(&mut self, resource: Resource) -> &mut Self {
        self.limits.resources.push(resource);
        self
    }

    /// Whether each sandbox gets a cgroup of its own even without limits (default: only with
    /// limits). The group gives [`Child::stats`], [`Child::freeze`] and a kill that reaches every
    /// process of the sandbox, at the cost of creating and removing a group per spawn.
    ///
    /// The group is created beneath the caller's own cgroup (see
    /// [`cgroup_parent`](Self::cgroup_parent)), the child is born inside it (`clone3(2)`'s
    /// `CLONE_INTO_CGROUP`), and the group is removed when the [`Child`] is dropped.
    pub fn cgroup(&mut self, on: bool) -> &mut Self {
        self.limits.wanted = on;
        self
    }

    /// Creates the sandboxes' groups beneath the group at `path` (as `/proc/<pid>/cgroup` writes
    /// it, e.g. `/palisade.slice`) instead of beneath the caller's own. On cgroup v2 the parent
    /// must already delegate the controllers the limits need; see [`palisade_cgroup`].
    pub fn cgroup_parent(&mut self, path: impl Into<String>) -> &mut Self {
        self.limits.parent = Some(path.into());
        self
    }

    /// Whether the child is born into its cgroup with `CLONE_INTO_CGROUP` (default: yes), or
    /// moved there by writing `cgroup.procs` after the clone. Exists for the benchmark.
    #[doc(hidden)]
    pub fn clone_into_cgroup(&mut self, on: bool) -> &mut Self {
        self.limits.clone_into = Some(on);
        self
    }

    /// Validates the configuration and prepares everything a spawn needs.
    pub fn build(&mut self) -> Result<Sandbox> {
        // The rules are those of `crate::derive`, applied in order.
        let iso = &self.isolation;
        // Namespaces: which the clone creates, which the child makes itself.
        let has_maps = iso.uid_map.is_some() || iso.gid_map.is_some();
        let namespaces = derive::implied_namespaces(iso.namespaces, has_maps);
        let (namespaces, joins) =
            derive::joins(namespaces, &iso.joins, has_maps, iso.time_offsets.is_some())?;
        let hostname = derive::hostname(iso.hostname.as_deref(), namespaces)?;
        let domainname = derive::domainname(iso.domainname.as_deref(), namespaces)?;
        let (namespaces, time_offsets) = derive::time_namespace(namespaces, iso.time_offsets)?;
        let namespaces = derive::network_namespace(namespaces, &iso.network);
        // Its own user namespace, or one it joins: either way its root and privileges are
        // those of a user namespace (only a new one gets id maps written).
        let joins_user = joins.user.is_some();
        let user_ns = namespaces.contains(Namespace::USER) || joins_user;
        // Its own PID namespace, or one it joins: either way it has an init, and a `/proc` of
        // that namespace.
        let pid_ns = namespaces.contains(Namespace::PID) || joins.pid.is_some();
        let mount_ns = namespaces.contains(Namespace::MOUNT);
        let loopback_up = namespaces.contains(Namespace::NET);
        let init = pid_ns && self.lifecycle.init;
        let cgroup = self.cgroup_plan(user_ns)?;
        checks::limits(cgroup.as_ref(), init, self.limits.cpus)?;
        let (namespaces, unshare_cgroup_ns) =
            derive::cgroup_namespace(namespaces, cgroup.is_some());

        // What the parent does around the clone, and the child's part of it.
        let net = derive::net_plan(
            &iso.network,
            &iso.ports,
            iso.forwarder_limits,
            namespaces,
            init,
        )?;
        let join_net = match &iso.network {
            Network::Join(target) => Some(target.open()?),
            _ => None,
        };
        let socket_factory = matches!(net, Some(NetPlan::Forward(..))) && user_ns;
        let user = (user_ns && !joins_user).then(|| self.user_plan());
        // In a joined user namespace the groups that may ping are not known here (its gid map
        // is its maker's): the kernel's default (none) stays.
        let ping_group_range =
            (loopback_up && !joins_user).then(|| ping_group_range(user.as_ref()));
        // A joined network namespace is the sandbox's own only if it is not the caller's: the
        // host's `net.*` parameters are never the sandbox's to set.
        let joins_other_network = match &join_net {
            Some(fd) => {
                let joined = palisade_ns::NsFile::from_fd(fd.try_clone().map_err(|source| {
                    Error::Setup {
                        what: "duplicate the network namespace to join",
                        source,
                    }
                })?)?
                .id()?;
                joined != palisade_ns::NsId::of(std::process::id() as i32, Namespace::NET)?
            }
            None => false,
        };
        let sysctls = derive::sysctls(&iso.sysctls, namespaces, joins_other_network)?;

        // The root, the mounts the child makes, and the command's privileges.
        // A group of its own, the namespace rooted there, and a pure v2 host: its limits are
        // what `/sys/fs/cgroup` then shows.
        let own_cgroup_view = unshare_cgroup_ns
            && cgroup
                .as_ref()
                .is_some_and(|c| c.hierarchy.backend() == palisade_cgroup::Backend::V2);
        let owned_root;
        let root_choice = match (&iso.rootfs, &user) {
            (RootChoice::Own(r), Some(user)) if !iso.owned_volumes.is_empty() => {
                owned_root =
                    RootChoice::Own(checks::owned_volumes(r.clone(), &iso.owned_volumes, user)?);
                &owned_root
            }
            (choice, _) => choice,
        };
        let rootfs = derive::root(root_choice, mount_ns, iso.scratch, user_ns, own_cgroup_view)?;
        let duties = derive::host_mount_duties(mount_ns, pid_ns, rootfs.is_some());
        let setgroups_denied = user
            .as_ref()
            .is_some_and(|u| u.setgroups == SetGroups::Deny);
        // A user given by name, the caller's or the image's, read from the root's files.
        let named_user = self.named_user()?;
        let named_security;
        let security_spec = match &named_user {
            Some(named) => {
                let mut spec = self.security.clone();
                spec.user = Some((named.uid, named.gid));
                if spec.groups.is_none() && !named.groups.is_empty() && !setgroups_denied {
                    spec.groups = Some(named.groups.clone());
                }
                named_security = spec;
                &named_security
            }
            None => &self.security,
        };
        checks::ids_mapped(user.as_ref(), security_spec)?;
        let security = security_spec.prepare(SecurityContext {
            user_ns,
            setgroups_denied,
        })?;

        // Descriptors and lifetime.
        let fds = self.process.fds_plan()?;
        let identity = self.identity()?;
        let detach = identity.as_ref().is_some_and(|i| i.detach);
        derive::detached_network(detach, net.as_ref())?;
        timeout::check(self.lifecycle.timeout, detach, init)?;
        let watch = derive::death_watch(self.lifecycle.die_with_parent && !detach, init);
        let setup = |what| move |source| Error::Setup { what, source };
        let death_pipe = (watch == DeathWatch::Init)
            .then(|| death_pipe(fds.floor))
            .transpose()
            .map_err(setup("create the death pipe"))?;
        let init_image = init
            .then(|| init_image::sealed_memfd().and_then(|fd| dup_above(fd.as_raw_fd(), fds.floor)))
            .transpose()
            .map_err(setup("load the init program into a memfd"))?;
        let tty = derive::terminal(
            self.process.tty,
            rootfs.is_some(),
            self.stdio.iter().all(Stdio::is_inherit),
        )?;
        let plan = Plan {
            namespaces,
            join_user: joins.user,
            exec: self.exec_plan(named_user.as_ref())?,
            cwd: self
                .working_dir()
                .map(|d| cstring("working directory", d.as_os_str()))
                .transpose()?,
            hostname,
            domainname,
            user,
            time_offsets,
            unshare_cgroup_ns,
            join_net,
            joins: joins.child,
            join_pid: joins.pid,
            loopback_up,
            ping_group_range,
            sysctls,
            private_mounts: duties.private_mounts,
            mount_proc: duties.mount_proc,
            rootfs,
            init,
            timeout: self.lifecycle.timeout,
            socket_factory,
            death_signal: watch == DeathWatch::ParentDeathSignal,
            death_pipe,
            init_image,
            passed_fds: fds.passed,
            fd_floor: fds.floor,
            // The child shares our memory only until it executes the init (or the command):
            // nothing of the sandbox's own runs before that (see `spawn::init`).
            // Joining a time namespace needs a process that shares its memory with no other
            // (`setns(2)`, EUSERS otherwise): a fork-like clone.
            share_memory: self.lifecycle.share_memory && !joins.kinds.contains(Namespace::TIME),
            init_signals: init_signals(),
            security: Arc::new(security),
            tty,
        };
        let [stdin, stdout, stderr] = &self.stdio;
        let stdio = [stdin.try_clone()?, stdout.try_clone()?, stderr.try_clone()?];
        Ok(Sandbox {
            plan,
            cgroup,
            stdio,
            kill_on_drop: self.lifecycle.kill_on_drop && !detach,
            net,
            identity,
            timeout: self.lifecycle.timeout,
        })
    }

    /// The sandbox's identity, if it is named; a detached sandbox must be.
    fn identity(&self) -> Result<Option<Identity>> {
        let life = &self.lifecycle;
        let Some(id) = &life.name else {
            if life.detach {
                return Err(Error::InvalidValue {
                    what: "detach",
                    value: "true".to_owned(),
                    reason: "a detached sandbox needs a name to be found by",
                });
            }
            return Ok(None);
        };
        crate::state::validate_name(id)?;
        let rootfs = match &self.isolation.rootfs {
            RootChoice::Default => "host".to_owned(),
            RootChoice::HostMounts => "/".to_owned(),
            RootChoice::Own(r) => match r.source() {
                RootSource::HostOverlay => "host".to_owned(),
                RootSource::Dir(d) => d.display().to_string(),
                RootSource::Layers { lower, .. } => lower
                    .iter()
                    .map(|l| l.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                _ => "own".to_owned(),
            },
        };
        Ok(Some(Identity {
            root: life
                .state_root
                .clone()
                .unwrap_or_else(crate::state::default_root),
            id: id.clone(),
            detach: life.detach,
            annotations: life.annotations.clone(),
            rootfs,
        }))
    }

    /// Builds the sandbox and spawns it once; see [`Sandbox::spawn`].
    pub fn spawn(&mut self) -> Result<Child> {
        self.build()?.spawn()
    }

    /// Spawns the sandbox with stdout and stderr captured (and stdin from `/dev/null` unless set
    /// otherwise), waits for it, and collects its output. The builder's own stdio settings are
    /// left as they were.
    pub fn output(&mut self) -> Result<Output> {
        let mut sandbox = self.build()?;
        if sandbox.stdio[0].is_inherit() {
            sandbox.stdio[0] = Stdio::null();
        }
        sandbox.stdio[1] = Stdio::piped();
        sandbox.stdio[2] = Stdio::piped();
        sandbox.spawn()?.wait_with_output()
    }

    /// Spawns the sandbox and waits for it to finish.
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.spawn()?.wait()
    }

    /// Validates the limits and detects the cgroup hierarchies, if the sandbox gets a group.
    ///
    /// Every group carries the device policy ([`device`](Self::device)). A command that could
    /// mount a file system without `nodev` (one holding `CAP_SYS_ADMIN` outside a user namespace
    /// of its own) gets a group for the policy even without limits.
    fn cgroup_plan(&self, user_ns: bool) -> Result<Option<CgroupPlan>> {
        let l = &self.limits;
        let mut resources = l.resources.clone();
        if let Some(cpus) = l.cpus {
            resources.push(Resource::CpuMax(CpuMax::cpus(cpus)?));
        }
        let may_mount = self.security.grants(Capability::CAP_SYS_ADMIN) && !user_ns;
        if resources.is_empty()
            && !l.wanted
            && l.parent.is_none()
            && l.devices.is_none()
            && !may_mount
        {
            return Ok(None);
        }
        // A device policy is written by CAP_SYS_ADMIN only (the v1 `devices` controller; on v2
        // a BPF program, `bpf(2)`). A caller without it in the initial user namespace has no
        // device the policy could take away from its sandbox: the sandbox is in a user
        // namespace, where device nodes cannot be made (`mknod(2)` needs CAP_MKNOD in the
        // initial one) and every file system it mounts is `nodev` (`user_namespaces(7)`), so
        // only nodes the caller binds in are reachable, as they are to the caller itself.
        match (&l.devices, caller_may_set_device_policy()) {
            (Some(policy), true) => resources.push(Resource::Devices(policy.clone())),
            (None, true) => resources.push(Resource::Devices(DevicePolicy::docker_default())),
            (None, false) => {}
            (Some(policy), false) => {
                return Err(Error::InvalidValue {
                    what: "device policy",
                    value: policy.to_string(),
                    reason: "only a caller with CAP_SYS_ADMIN in the initial user namespace may \
                             set one; an unprivileged caller's sandbox reaches no device node but \
                             those bound into it: bind in only the nodes it may use",
                });
            }
        }
        for r in &resources {
            r.validate()?;
        }
        Ok(Some(CgroupPlan {
            hierarchy: Hierarchy::detect()?,
            resources,
            parent: l.parent.clone(),
            clone_into: l.clone_into.unwrap_or(true),
            name: self.lifecycle.name.as_deref().map(crate::state::group_name),
        }))
    }

    fn user_plan(&self) -> UserPlan {
        // SAFETY: these getters cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let uid_map = self
            .isolation
            .uid_map
            .clone()
            .unwrap_or_else(|| IdMap::root_to(uid));
        let gid_map = self
            .isolation
            .gid_map
            .clone()
            .unwrap_or_else(|| IdMap::root_to(gid));
        // Only a writer privileged in the parent namespace may leave setgroups(2) allowed.
        let setgroups = if uid == 0 {
            SetGroups::Allow
        } else {
            SetGroups::Deny
        };
        UserPlan {
            root_uid: uid_map.to_outside(0).is_some(),
            root_gid: gid_map.to_outside(0).is_some(),
            uid_map,
            gid_map,
            setgroups,
        }
    }

    /// The program, arguments and environment; `named`: the user resolved by name, if any.
    fn exec_plan(&self, named: Option<&palisade_image::User>) -> Result<ExecPlan> {
        let p = &self.process;
        ExecPlan::new(&p.program, &p.args, self.environment(named))
    }

    /// The base, then the image's `Env`, then the caller's edits.
    fn environment(&self, named: Option<&palisade_image::User>) -> BTreeMap<OsString, OsString> {
        let p = &self.process;
        let mut env: BTreeMap<OsString, OsString> = match p.env_base {
            EnvBase::Empty => BTreeMap::new(),
            EnvBase::Caller => std::env::vars_os().collect(),
            EnvBase::Minimal => self.minimal_environment(named),
        };
        if p.env_base != EnvBase::Empty {
            env.extend(self.image_env().iter().cloned());
        }
        for (k, v) in &p.env {
            match v {
                Some(v) => env.insert(k.clone(), v.clone()),
                None => env.remove(k),
            };
        }
        env
    }

    /// Docker's environment for a container: `PATH`, `HOSTNAME`, `HOME` (the home directory of
    /// a user resolved by name), and `TERM` when the command talks to the caller's terminal.
    fn minimal_environment(
        &self,
        named: Option<&palisade_image::User>,
    ) -> BTreeMap<OsString, OsString> {
        let mut env = BTreeMap::new();
        env.insert("PATH".into(), DEFAULT_PATH.into());
        let hostname = match &self.isolation.hostname {
            Some(h) => Some(h.clone()),
            None => host_name(),
        };
        if let Some(h) = hostname {
            env.insert("HOSTNAME".into(), h);
        }
        let home = match named {
            Some(user) => image::home(user),
            None if self.security.user_id().is_none_or(|uid| uid == 0) => "/root".into(),
            None => "/".into(),
        };
        env.insert("HOME".into(), home);
        let terminal = [(0, &self.stdio[0]), (1, &self.stdio[1])]
            .into_iter()
            // SAFETY: isatty only inspects the descriptor.
            .any(|(fd, s)| s.is_inherit() && unsafe { libc::isatty(fd) } == 1);
        if let (true, Some(term)) = (terminal, std::env::var_os("TERM")) {
            env.insert("TERM".into(), term);
        }
        env
    }
}

/// This machine's hostname (`uname(2)`), which a new UTS namespace starts with.
fn host_name() -> Option<OsString> {
    let mut uts = std::mem::MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname fills the struct it is given.
    if unsafe { libc::uname(uts.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call; nodename is NUL-terminated.
    let name = unsafe { std::ffi::CStr::from_ptr(uts.assume_init_ref().nodename.as_ptr()) };
    Some(OsStr::from_bytes(name.to_bytes()).to_owned())
}

/// Whether this process may set a sandbox's device policy: it holds CAP_SYS_ADMIN in the
/// initial user namespace, the one whose id map is the identity over every id
/// (`user_namespaces(7)`).
fn caller_may_set_device_policy() -> bool {
    let identity = [palisade_ns::IdMapping::new(0, 0, u32::MAX)];
    let initial = IdMap::read(std::process::id() as libc::pid_t, false)
        .is_ok_and(|map| map.mappings() == identity);
    initial
        && caps::has_cap(None, caps::CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::plan::CStringArray;

    fn strings(array: &CStringArray) -> Vec<String> {
        array
            .strings()
            .iter()
            .map(|s| s.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn environment_is_dockers_minimal_one_then_edited() {
        let mut b = Sandbox::builder("true");
        b.hostname("box").env("PALISADE_A", "1");
        let env = b.environment(None);
        let keys: Vec<_> = env.keys().map(|k| k.to_str().unwrap()).collect();
        // TERM only when the command talks to a terminal, which the test harness is not.
        let keys: Vec<_> = keys.into_iter().filter(|k| *k != "TERM").collect();
        assert_eq!(keys, ["HOME", "HOSTNAME", "PALISADE_A", "PATH"]);
        assert_eq!(env[OsStr::new("HOSTNAME")], "box");
        assert_eq!(env[OsStr::new("HOME")], "/root");
        assert_eq!(env[OsStr::new("PATH")], DEFAULT_PATH);
        b.user(1000, 1000);
        assert_eq!(b.environment(None)[OsStr::new("HOME")], "/");

        // One variable, or all of them, only when asked for.
        let mut b = Sandbox::builder("true");
        b.env_inherit("CARGO_PKG_NAME")
            .env_inherit("PALISADE_SURELY_UNSET");
        let env = b.environment(None);
        assert_eq!(env[OsStr::new("CARGO_PKG_NAME")], "palisade");
        assert!(!env.contains_key(OsStr::new("PALISADE_SURELY_UNSET")));
        let mut b = Sandbox::builder("true");
        b.env_inherit_all().env_remove("HOME");
        assert_eq!(
            b.environment(None).len(),
            std::env::vars_os().filter(|(k, _)| k != "HOME").count()
        );

        let mut b = Sandbox::builder("true");
        b.env("X", "1")
            .env_clear()
            .env("PATH", "/a::/b")
            .env("Y", "2");
        let plan = b.exec_plan(None).unwrap();
        assert_eq!(strings(&plan.envp), ["PATH=/a::/b", "Y=2"]);
        assert_eq!(strings(&plan.candidates), ["/a/true", "./true", "/b/true"]);
        assert_eq!(strings(&plan.argv), ["true"]);
    }

    #[test]
    fn hostnames_are_checked() {
        for good in ["box", "a-b.c9", "x", &"a".repeat(63)] {
            assert!(derive::check_hostname(OsStr::new(good)).is_ok(), "{good}");
        }
        for bad in ["", "bad/name", "a b", "-a", "a-", "a..b", &"a".repeat(65)] {
            assert!(derive::check_hostname(OsStr::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn passed_descriptors_must_be_numbered_from_3() {
        for bad in [0, 2, -1, 70000] {
            let err = Sandbox::builder("true")
                .inherit_fd(bad, std::fs::File::open("/dev/null").unwrap())
                .build()
                .unwrap_err();
            assert!(matches!(err, Error::InvalidValue { .. }), "{bad}: {err}");
        }
        let sandbox = Sandbox::builder("true")
            .inherit_fd(9, std::fs::File::open("/dev/null").unwrap())
            .inherit_fd(4, std::fs::File::open("/dev/null").unwrap())
            .build()
            .unwrap();
        // Every source sits above every target.
        assert_eq!(sandbox.plan.fd_floor, 10);
        assert!(sandbox
            .plan
            .passed_fds
            .iter()
            .all(|(fd, _)| fd.as_raw_fd() >= 10));
    }

    #[test]
    fn a_program_with_a_slash_is_not_searched() {
        let plan = Sandbox::builder("./bin/tool")
            .arg("-x")
            .exec_plan(None)
            .unwrap();
        assert_eq!(strings(&plan.candidates), ["./bin/tool"]);
        assert_eq!(strings(&plan.argv), ["./bin/tool", "-x"]);
    }

    #[test]
    fn maps_and_offsets_imply_their_namespaces() {
        let sandbox = Sandbox::builder("true")
            .namespaces(Namespace::PID)
            .uid_map(IdMap::root_to(1000))
            .time_offsets(TimeOffsets::both(palisade_ns::Offset::secs(5)))
            .build()
            .unwrap();
        assert_eq!(
            sandbox.namespaces(),
            Namespace::PID | Namespace::USER | Namespace::TIME
        );
        // The time namespace is created by the child, after the clone, to set its offsets.
        assert!(!sandbox.plan.clone_namespaces().contains(Namespace::TIME));
        let user = sandbox.plan.user.as_ref().unwrap();
        assert!(user.root_uid);
        assert_eq!(user.uid_map, IdMap::root_to(1000));
        assert!(sandbox.plan.init && !sandbox.plan.mount_proc);
    }

    #[test]
    fn builder_can_build_twice_with_the_same_stdio() {
        let mut b = Sandbox::builder("true");
        b.stdout(Stdio::null());
        let first = b.build().unwrap();
        let second = b.build().unwrap();
        assert!(!first.stdio[1].is_inherit());
        assert!(!second.stdio[1].is_inherit());
    }
}
