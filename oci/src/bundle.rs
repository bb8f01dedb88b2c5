//! OCI runtime bundles: a directory holding `config.json` and, usually, the root file system,
//! mapped to a [`palisade::SandboxBuilder`].
//!
//! [`Bundle::load`] reads and checks `config.json` with the `oci-spec` crate;
//! [`Bundle::builder`] turns every field into the builder call that applies it, or refuses it
//! with [`Error::Unsupported`] naming the field by its JSON path
//! (`linux.resources.blockIO.leafWeight`, `mounts[3].options[1]`). Absent, empty and default
//! values are always accepted. Unknown properties are ignored, as the runtime specification
//! requires ("Extensibility" in its `config.md`).
//!
//! # What is applied
//!
//! | field | becomes |
//! |---|---|
//! | `process.args`, `env`, `cwd` | the program (`args[0]`, searched in the container's `PATH`), its arguments, exactly `env`, the working directory |
//! | `process.user` | [`user`](SandboxBuilder::user), [`groups`](SandboxBuilder::groups) (`additionalGids`, empty when absent) |
//! | `process.user.umask`, `process.oomScoreAdj` | exposed ([`Bundle::umask`], [`Bundle::oom_score_adj`]) for the caller to apply |
//! | `process.capabilities` | the five sets exactly ([`capability_sets`](SandboxBuilder::capability_sets)); see [below](#capabilities) |
//! | `process.rlimits` | [`rlimit`](SandboxBuilder::rlimit) |
//! | `process.noNewPrivileges` | [`no_new_privs`](SandboxBuilder::no_new_privs) (off when absent, as in runc) |
//! | `process.terminal`, `consoleSize` | [`tty`](SandboxBuilder::tty), [`tty_size`](SandboxBuilder::tty_size) |
//! | `process.ioPriority` | [`io_priority`](SandboxBuilder::io_priority): `IOPRIO_CLASS_RT`, `IOPRIO_CLASS_BE`, `IOPRIO_CLASS_IDLE`, priority 0 to 7 |
//! | `process.scheduler` | [`scheduler`](SandboxBuilder::scheduler): `SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`, `SCHED_FIFO`, `SCHED_RR`, `SCHED_DEADLINE` with `nice`, `priority`, `runtime`, `deadline`, `period` and the flags but the utilization clamps (`SCHED_ISO` and `SCHED_FLAG_UTIL_CLAMP_*` are refused); the kernel decides what the caller may set |
//! | `process.execCPUAffinity` | `initial`: [`initial_cpu_affinity`](SandboxBuilder::initial_cpu_affinity) (the container's processes from the clone on, its init included); `final`: [`cpu_affinity`](SandboxBuilder::cpu_affinity) (the command, just before its exec) |
//! | `process.apparmorProfile`, `selinuxLabel`, `linux.mountLabel` | ignored where the host has no such LSM (as runc does), refused where it has |
//! | `root` | [`Rootfs::dir`](palisade::Rootfs::dir) of `root.path` (relative to the bundle), read-only with `root.readonly` |
//! | `mounts` | see [`mounts`](self#mounts) |
//! | `hostname`, `domainname`, `annotations` | [`hostname`](SandboxBuilder::hostname), [`domainname`](SandboxBuilder::domainname) (both need the container's own `uts` namespace), [`annotation`](SandboxBuilder::annotation) |
//! | `hooks` | not the builder's: the runtime runs all six ([`crate::hooks`]) |
//! | `linux.namespaces` | exactly those namespaces; no `network` entry shares the host's. A `path` is joined ([`join_namespace`](SandboxBuilder::join_namespace), or [`Network::join_path`](palisade::Network::join_path) for a network), once its kind is checked against its entry's: `pid`, `network`, `ipc`, `uts`, `cgroup`, `time` and `user`, as a pod's containers share theirs (with a joined `user` namespace, `uidMappings`/`gidMappings` must be its own, read from `/proc/<pid>/uid_map`, and are not written again); a `mount` path is refused (the container's root is set up in a mount namespace of its own) |
//! | `linux.uidMappings`, `gidMappings` | [`IdMap`](palisade::IdMap)s (a user namespace without them maps root to the caller, Palisade's default) |
//! | `linux.timeOffsets` | [`TimeOffsets`](palisade::TimeOffsets) |
//! | `linux.sysctl` | [`sysctl`](SandboxBuilder::sysctl): parameters of the container's own network, IPC and UTS namespaces; the host's are refused when the sandbox is built |
//! | `linux.resources` | `memory.limit`, `reservation` (`memory.low`), `swap` (`useHierarchy` and `checkBeforeUpdate` have no effect on cgroup v2 and are ignored); `cpu.shares` (as a weight, runc's conversion), `quota`/`period`, `cpus`, `mems`; `pids.limit`; `devices` (a device policy in order, then runc's always-allowed devices); `blockIO.weight` and `weightDevice[].weight` (`io.weight`, or BFQ's `io.bfq.weight`/`blkio.bfq.weight` where io.cost is absent), `throttleRead/WriteBps/IOPSDevice` (one `io.max` line per device, v1 `blkio.throttle.*_device`); `hugepageLimits` (`hugetlb.<size>.rsvd.max` and `.max`, page sizes checked against `/sys/kernel/mm/hugepages`) where the host has the hugetlb controller; `rdma` (`rdma.max` per device) where it has the rdma controller; `unified` on a pure cgroup v2 host, each key parsed into its typed setting (`bundle/resources.rs` lists the mapping). The same mapping serves `update` |
//! | `linux.cgroupsPath` | an absolute path: its parent becomes the [`cgroup_parent`](SandboxBuilder::cgroup_parent) (the group itself is named after the container) |
//! | `linux.maskedPaths`, `readonlyPaths` | Palisade's own masks when they cover them; none at all when both lists are empty |
//! | `linux.devices` | device nodes at their paths, resolved inside the root: made with `mknod(2)` on a tmpfs of Palisade's own and bound there (in a user namespace, the host's node at the same path is bound); `fileMode` 0666 and `uid`/`gid` 0 by default, permission bits only; each `c`, `u` and `b` device gets an `rwm` allow rule appended to the device policy, as runc appends it |
//! | `linux.seccomp` | the profile, through [`Profile::from_json`](palisade::Profile::from_json); no filter when absent |
//! | `linux.rootfsPropagation` | `private`, `rprivate`, `slave`, `rslave` (every mount stays private); `shared`, `unbindable` (for the root) and `rshared`, `runbindable` (for every mount), applied in the container's own mount namespace once the root is built: shared with namespaces made from it, never with the host's |
//! | `linux.personality` | [`personality`](SandboxBuilder::personality): `LINUX` or `LINUX32`, with the flags `personality(2)` names (`ADDR_NO_RANDOMIZE`, `UNAME26`, …) |
//!
//! Refused when set, by name and with the reason: `linux.resources.blockIO.leafWeight` and
//! `weightDevice[].leafWeight` (gone with CFQ), `linux.resources.network` (cgroup v1's
//! `net_cls`/`net_prio`), `unified` off a pure cgroup v2 host or with a key Palisade does not
//! apply, `hugepageLimits` and `rdma` where the host lacks the controller,
//! `linux.intelRdt`, `linux.memoryPolicy`, `linux.netDevices`, `linux.seccomp.listenerPath`,
//! a `mount` namespace `path`, and the sections of other platforms.
//!
//! # Capabilities
//!
//! The five sets are applied as given ([`CapSets`](palisade::security::CapSets)), for root and
//! any other user. `effective` must lie within `permitted`, and `inheritable` within `bounding`
//! (`capset(2)` refuses the rest). An `ambient` capability that is not both permitted and
//! inheritable is left out, as runc leaves it (the kernel refuses to raise it, `prctl(2)`).
//! What the command then holds is the kernel's transformation at `execve(2)` of a program
//! without file capabilities (`capabilities(7)`): root's permitted and effective sets become
//! `bounding` ∪ `inheritable` ∪ `ambient` (within `bounding`), another user's become `ambient`,
//! and `bounding`, `inheritable` and `ambient` stay as given. With `noNewPrivileges` off, a
//! set-user-ID-root program gains nothing beyond `bounding`.
//!
//! # Mounts
//!
//! Palisade mounts its own `/proc`, `/dev` (a tmpfs with `null`, `zero`, `full`, `random`,
//! `urandom`, `tty`, a `devpts` on `/dev/pts`, `shm` on `/dev/shm`, `mqueue` on `/dev/mqueue`),
//! a read-only `/sys` (empty unless the container has a network namespace of its own, which
//! sysfs needs) and a tmpfs `/tmp` (which hides the bundle's) in every root (see
//! [`palisade::overlay::rootfs`]). The standard mounts of a bundle (`runc spec`'s, containerd's,
//! podman's) map onto those when their options are Palisade's own or harmless, and are
//! refused otherwise, naming the option:
//!
//! | destination | type | accepted options |
//! |---|---|---|
//! | `/proc` | `proc` | `nosuid`, `noexec`, `nodev`, `relatime`, `rw` |
//! | `/dev` | `tmpfs` | `nosuid`, `nodev`, `strictatime`, `mode=755`, `size=65536k`, `rw` |
//! | `/dev/pts` | `devpts` | `nosuid`, `noexec`, `newinstance`, `ptmxmode=0666`, `mode=0620`, `gid=5` (not applied: the terminals belong to the opener's group), `rw` |
//! | `/dev/shm` | `tmpfs` | `nosuid`, `noexec`, `nodev`, `mode=1777`, `size=65536k`, `rw` |
//! | `/dev/mqueue` | `mqueue` | `nosuid`, `noexec`, `nodev`, `relatime`, `rw` |
//! | `/sys` | `sysfs` | must be `ro`; `nosuid`, `noexec`, `nodev`, `relatime` |
//! | `/sys/fs/cgroup` | `cgroup`, `cgroup2` | must be `ro`; `nosuid`, `noexec`, `nodev`, `relatime`, `private`, `rprivate`: a read-only cgroup2 mount of the container's own group on a pure cgroup v2 host ([`Rootfs::cgroup2`](palisade::Rootfs::cgroup2)); on hybrid and v1 hosts the directory stays sysfs's empty mount point |
//!
//! Bind mounts (type `bind`, or an option `bind`/`rbind`) become
//! [`volume`](SandboxBuilder::volume)s, `nodev` always; a relative source is relative to the
//! bundle, and the destination is resolved inside the root. An engine's bind at `/dev/shm`
//! (podman's directory, a Kubernetes pod's shared one) is bound over Palisade's own. `bind`
//! binds the source's mount alone, `rbind` the mounts below it too. `ro` makes every mount of
//! the tree read-only. `rw`, `nosuid`/`suid`, `noexec`/`exec`, `nosymfollow`/`symfollow`,
//! `noatime`, `relatime`, `strictatime`, `atime`, `norelatime`, `nostrictatime`,
//! `nodiratime`/`diratime` and a propagation type (`private`, `shared`, `slave`,
//! `unbindable`) apply to the bound mount itself. The same options prefixed with `r` (`rro`,
//! `rnosuid`, `rshared`, …) apply to every mount of the tree (`mount_setattr(2)`). Propagation
//! is made in the container's own mount namespace, whose mounts are all private first: nothing
//! propagates to or from the host. `uidMappings`/`gidMappings` (or `idmap`/`ridmap` with the
//! container's maps) make an id-mapped mount, with `containerID` the id stored on disk and
//! `hostID` the id shown. `dev`/`rdev` are refused. Other tmpfs mounts become tmpfs (`nosuid`,
//! `nodev`) with `mode=`, `size=`, `nr_inodes=`, `uid=`, `gid=`, `noexec`/`exec`, `ro`/`rw`, the
//! access-time options, `nosymfollow` and propagation types. Bind mounts and tmpfs are mounted
//! in the bundle's order, after Palisade's own file systems: one of those inside a bind mount
//! or tmpfs given before it is refused. Everything else is refused by name.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use palisade::{Sandbox, SandboxBuilder};

use crate::error::{Error, Result};

mod linux;
mod mounts;
mod process;
mod resources;

pub use process::{capability_set, check_labels, rlimits};

/// An OCI runtime bundle: its directory and `config.json`.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    spec: Spec,
}

/// The configuration file of a bundle.
const CONFIG: &str = "config.json";

impl Bundle {
    /// Reads `dir/config.json` and checks what every later step relies on: the `ociVersion`
    /// (major version 1; others are refused by name) and that `root.path` (relative to `dir`
    /// unless absolute) exists. The rest is checked by [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// [`Error::Bundle`] for a missing or unreadable `config.json` or root directory,
    /// [`Error::Config`] for malformed JSON or a value the specification does not allow (an
    /// unknown namespace type or capability, a missing field).
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle> {
        let dir = dir.as_ref().to_owned();
        let path = dir.join(CONFIG);
        let text = fs::read_to_string(&path).map_err(|source| Error::Bundle {
            path: path.clone(),
            source,
        })?;
        let config = |e: serde_json::Error| Error::Config {
            path: path.clone(),
            message: e.to_string(),
        };
        let mut value: serde_json::Value = serde_json::from_str(&text).map_err(config)?;
        spell_scheduler_flags(&mut value);
        let spec: Spec = serde_json::from_value(value).map_err(config)?;
        let bundle = Bundle { dir, spec };
        bundle.check_version()?;
        let root = bundle.root_dir()?;
        fs::metadata(&root).map_err(|source| Error::Bundle { path: root, source })?;
        Ok(bundle)
    }

    /// The bundle's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The sandbox the bundle describes: named `id`, recorded under `state_root`, detached
    /// (`name(id).state_root(state_root).detach(true)`), with every field of `config.json`
    /// applied (see the [module](self) documentation).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] naming the first field Palisade cannot apply, [`Error::Config`]
    /// for a value that cannot be valid (an environment entry without `=`, a soft limit above
    /// its hard one, …).
    pub fn builder(&self, id: &str, state_root: &Path) -> Result<SandboxBuilder> {
        let spec = &self.spec;
        refuse_other_platforms(spec)?;
        let process = self.process()?;
        let args = process.args().as_deref().unwrap_or_default();
        let program = args
            .first()
            .ok_or_else(|| self.config("process.args is empty"))?;
        let mut b = Sandbox::builder(program);
        b.args(&args[1..])
            .name(id)
            .state_root(state_root)
            .detach(true);
        process::apply(self, process, &mut b)?;
        if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            b.hostname(hostname);
        }
        if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            b.domainname(domain);
        }
        let mut annotations: Vec<_> = spec.annotations().iter().flatten().collect();
        annotations.sort();
        for (key, value) in annotations {
            b.annotation(key, value);
        }
        linux::apply(self, &mut b)?;
        mounts::apply(self, process, &mut b)?;
        Ok(b)
    }

    /// `process.user.umask`: the caller sets it on itself (`umask(2)`) before spawning, and
    /// the command inherits it.
    pub fn umask(&self) -> Option<u32> {
        self.spec.process().as_ref().and_then(|p| p.user().umask())
    }

    /// `process.oomScoreAdj`: the caller writes it to `/proc/<pid>/oom_score_adj` of the
    /// created command (`proc_pid_oom_score_adj(5)`).
    pub fn oom_score_adj(&self) -> Option<i32> {
        self.spec.process().as_ref().and_then(|p| p.oom_score_adj())
    }

    /// `process.terminal`: whether the command gets a pseudo-terminal.
    pub fn terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }

    /// The parent group of `linux.cgroupsPath`, beneath which the container's group is made.
    /// Like runc, a runtime makes it first where it is missing
    /// ([`palisade::cgroup::make_path`]).
    pub fn cgroup_parent(&self) -> Option<String> {
        let path = self.spec.linux().as_ref()?.cgroups_path().as_ref()?;
        linux::cgroup_parent(path)
    }

    /// The path of `config.json`.
    fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG)
    }

    /// A [`Error::Config`] about this bundle's `config.json`.
    fn config(&self, message: impl Into<String>) -> Error {
        Error::Config {
            path: self.config_path(),
            message: message.into(),
        }
    }

    fn process(&self) -> Result<&oci_spec::runtime::Process> {
        self.spec
            .process()
            .as_ref()
            .ok_or_else(|| self.config("process is missing"))
    }

    /// `root.path`, relative to the bundle unless absolute.
    fn root_dir(&self) -> Result<PathBuf> {
        let root = self
            .spec
            .root()
            .as_ref()
            .ok_or_else(|| self.config("root is missing"))?;
        Ok(self.dir.join(root.path()))
    }

    /// Accepts the 1.x versions, whose configurations are compatible with each other (the
    /// specification follows semantic versioning).
    fn check_version(&self) -> Result<()> {
        let version = self.spec.version();
        let major = version.split('.').next().unwrap_or_default();
        if major != "1" {
            return Err(self.config(format!(
                "ociVersion {version:?} is not supported: this runtime implements version 1 \
                 of the OCI runtime specification"
            )));
        }
        Ok(())
    }
}

/// The specification spells the reset-on-fork flag of `process.scheduler.flags`
/// `SCHED_FLAG_RESET_ON_FORK` (config.md, as `sched_setattr(2)` does); oci-spec 0.10 reads
/// only `SCHED_RESET_ON_FORK`. The specification's spelling is given the crate's.
fn spell_scheduler_flags(config: &mut serde_json::Value) {
    let flags = config
        .pointer_mut("/process/scheduler/flags")
        .and_then(serde_json::Value::as_array_mut);
    for flag in flags.into_iter().flatten() {
        if flag == "SCHED_FLAG_RESET_ON_FORK" {
            *flag = "SCHED_RESET_ON_FORK".into();
        }
    }
}

/// An [`Error::Unsupported`].
fn unsupported(field: impl Into<String>, value: impl ToString, reason: &'static str) -> Error {
    Error::Unsupported {
        field: field.into(),
        value: value.to_string(),
        reason,
    }
}

/// The sections for other platforms, which a Linux runtime cannot honour.
fn refuse_other_platforms(spec: &Spec) -> Result<()> {
    let reason = "not a Linux container's configuration";
    if spec.solaris().is_some() {
        return Err(unsupported("solaris", "{…}", reason));
    }
    if spec.windows().is_some() {
        return Err(unsupported("windows", "{…}", reason));
    }
    if spec.vm().is_some() {
        return Err(unsupported("vm", "{…}", reason));
    }
    if spec.zos().is_some() {
        return Err(unsupported("zos", "{…}", reason));
    }
    Ok(())
}

/// Whether AppArmor is enabled on this host (its module parameter, as runc checks it).
fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// Whether SELinux is enabled on this host (its file system is mounted, as runc checks it).
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}
