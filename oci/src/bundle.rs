//! OCI runtime bundles: a directory holding `config.json` and, usually, the root file system,
//! mapped to a [`palisade::SandboxBuilder`].
//!
//! [`Bundle::load`] reads and checks `config.json` with the `oci-spec` crate;
//! [`Bundle::builder`] turns every field into the builder call that applies it, or refuses it
//! with [`Error::Unsupported`] naming the field by its JSON path (`linux.resources.blockIO`,
//! `mounts[3].options`). Absent, empty and default values are always accepted. Unknown
//! properties are ignored, as the runtime specification requires ("Extensibility" in its
//! `config.md`).
//!
//! # What is applied
//!
//! | field | becomes |
//! |---|---|
//! | `process.args`, `env`, `cwd` | the program (`args[0]`, searched in the container's `PATH`), its arguments, exactly `env`, the working directory |
//! | `process.user` | [`user`](SandboxBuilder::user), [`groups`](SandboxBuilder::groups) (`additionalGids`, empty when absent) |
//! | `process.user.umask`, `process.oomScoreAdj` | exposed ([`Bundle::umask`], [`Bundle::oom_score_adj`]) for the caller to apply |
//! | `process.capabilities` | the sandbox's capability set; see [below](#capabilities) |
//! | `process.rlimits` | [`rlimit`](SandboxBuilder::rlimit) |
//! | `process.noNewPrivileges` | [`no_new_privs`](SandboxBuilder::no_new_privs) (off when absent, as in runc) |
//! | `process.terminal`, `consoleSize` | [`tty`](SandboxBuilder::tty), [`tty_size`](SandboxBuilder::tty_size) |
//! | `process.apparmorProfile`, `selinuxLabel`, `linux.mountLabel` | ignored where the host has no such LSM (as runc does), refused where it has |
//! | `root` | [`Rootfs::dir`](palisade::Rootfs::dir) of `root.path` (relative to the bundle), read-only with `root.readonly` |
//! | `mounts` | see [`mounts`](self#mounts) |
//! | `hostname`, `annotations` | [`hostname`](SandboxBuilder::hostname), [`annotation`](SandboxBuilder::annotation) |
//! | `linux.namespaces` | exactly those namespaces; a `network` path is joined ([`Network::join_path`](palisade::Network::join_path)); no `network` entry shares the host's |
//! | `linux.uidMappings`, `gidMappings` | [`IdMap`](palisade::IdMap)s (a user namespace without them maps root to the caller, Palisade's default) |
//! | `linux.timeOffsets` | [`TimeOffsets`](palisade::TimeOffsets) |
//! | `linux.resources` | `memory.limit`, `reservation` (`memory.low`), `swap` (`useHierarchy` and `checkBeforeUpdate` have no effect on cgroup v2 and are ignored); `cpu.shares` (as a weight, runc's conversion), `quota`/`period`, `cpus`, `mems`; `pids.limit`; `devices` (a device policy in order, then runc's always-allowed devices) |
//! | `linux.cgroupsPath` | an absolute path: its parent becomes the [`cgroup_parent`](SandboxBuilder::cgroup_parent) (the group itself is named after the container) |
//! | `linux.maskedPaths`, `readonlyPaths` | Palisade's own masks when they cover them; none at all when both lists are empty |
//! | `linux.devices` | accepted for the nodes Palisade's `/dev` always has |
//! | `linux.seccomp` | the profile, through [`Profile::from_json`](palisade::Profile::from_json); no filter when absent |
//! | `linux.rootfsPropagation` | `private`, `rprivate`, `slave`, `rslave` (Palisade's mounts are private) |
//! | `linux.personality` | `LINUX` without flags |
//!
//! Refused when set: `domainname`, `hooks.createContainer`, `hooks.startContainer`,
//! `linux.sysctl`, `linux.resources.blockIO`, `hugepageLimits`, `network`, `rdma`, `unified`,
//! `linux.intelRdt`, `linux.memoryPolicy`, `linux.netDevices`, `process.ioPriority`,
//! `scheduler`, `execCPUAffinity`, a namespace `path` other than the network's, and the
//! sections of other platforms. The other hooks are not the builder's: the runtime runs them
//! (see [`crate::hooks`]).
//!
//! # Capabilities
//!
//! Palisade describes one capability set: the bounding set, which root also holds as
//! permitted and effective, and of which a non-root user holds, as permitted, effective,
//! inheritable and ambient, only the capabilities given explicitly (see
//! [`palisade::security`]). After `execve(2)` of a program without file capabilities
//! (`capabilities(7)`, "Transformation of capabilities during execve()"):
//!
//! - root's permitted and effective sets are its bounding set (plus its inheritable set), so
//!   the bundle's `bounding` becomes the set; `effective` and `permitted` must lie within it,
//!   and `inheritable` must be empty; `ambient` is ignored, as runc ignores a capability it
//!   cannot raise (one not inheritable, `prctl(2)`).
//! - another user's permitted and effective sets become its ambient set, so `ambient` becomes
//!   the explicitly given capabilities; it must lie within `permitted`, `inheritable` and
//!   `bounding`, `inheritable` must equal it, and the rest of `bounding` must be among Docker's
//!   defaults (Palisade has no way to grant a non-root user a bounding capability beyond
//!   those without giving it as ambient too).
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
//! | `/sys/fs/cgroup` | `cgroup`, `cgroup2` | must be `ro`; `nosuid`, `noexec`, `nodev`, `relatime`, `private`, `rprivate` — **not mounted**: Palisade mounts no cgroup file system, and the directory stays sysfs's empty mount point |
//!
//! Bind mounts (type `bind`, or an option `bind`/`rbind`) become
//! [`volume`](SandboxBuilder::volume)s (always recursive and `nodev`), read-only with `ro`; a
//! relative source is relative to the bundle. Their accepted options are `bind`, `rbind`, `ro`,
//! `rw`, `nodev`, `relatime`, `private`, `rprivate`, and `nosuid` when `noNewPrivileges` is on
//! (under which set-user-ID bits grant nothing anyway, `prctl(2)`). Other tmpfs mounts become
//! [`tmpfs`](SandboxBuilder::tmpfs) (mode 1777, `nosuid`, `nodev`), accepting `nosuid`, `nodev`,
//! `mode=1777`, `rw`, `relatime`. Palisade binds every volume before it mounts any tmpfs, so a
//! bind mount and a tmpfs nested the other way round are refused. Everything else is refused.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use palisade::{Sandbox, SandboxBuilder};

use crate::error::{Error, Result};

mod linux;
mod mounts;
mod process;
mod resources;

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
