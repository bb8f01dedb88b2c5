//! A group: created beneath a parent, joined to the hierarchies its controllers live in, and
//! removed (members killed first, child groups depth-first) when it is deleted or dropped.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::bpf;
use crate::error::{Error, Result};
use crate::gc::Owner;
use crate::hierarchy::{Hierarchy, Mount, Served};
use crate::resource::{Controller, Resource};
use crate::stats::{self, Events, MemoryEvents, Stats};
use crate::sys::{self, read_file, read_parsed, tree, write_file};
use crate::units::{Bytes, Max};
use crate::{parse, Backend};

/// How long [`Cgroup::freeze`] and [`Cgroup::delete`] wait for the kernel by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a new group goes.
#[derive(Debug, Clone, Copy)]
enum Parent<'a> {
    /// Beneath this process's own group in each hierarchy.
    Own,
    /// Beneath the group at this path (as in `/proc/<pid>/cgroup`) in each hierarchy.
    Path(&'a str),
    /// Beneath a group this library handles.
    Group(&'a Cgroup),
}

/// One directory of a group: in the unified hierarchy, or in one v1 hierarchy.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    mount_point: PathBuf,
    /// The v1 hierarchy names (`cpu`, `cpuacct`, …); empty for the unified hierarchy.
    v1_names: Vec<String>,
}

impl Dir {
    fn is_unified(&self) -> bool {
        self.v1_names.is_empty()
    }

    fn carries(&self, v1_name: &str) -> bool {
        self.v1_names.iter().any(|n| n == v1_name)
    }
}

/// Creates a [`Cgroup`]. See [`Cgroup::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CgroupBuilder<'a> {
    name: Option<String>,
    parent: Parent<'a>,
    resources: Vec<Resource>,
    controllers: Vec<Controller>,
    stats: bool,
    hierarchy: Option<&'a Hierarchy>,
    timeout: Duration,
}

impl<'a> CgroupBuilder<'a> {
    /// The group's directory name. By default `palisade-<pid>-<starttime>-<n>` (the creating
    /// process and its start time, see [`gc`](crate::gc)), with `n` chosen so that the name is
    /// new. A group named here is never collected by [`gc`](crate::gc). A name that exists
    /// already is an error: this library never takes over a group it did not create.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Creates the group beneath the group at `path` in every hierarchy, the path written as in
    /// `/proc/<pid>/cgroup` (e.g. `/palisade.slice`), instead of beneath this process's own
    /// group. The parent must exist; on cgroup v2 it must hand the needed controllers down
    /// (its `cgroup.subtree_control`), which this library checks but never changes.
    pub fn parent_path(mut self, path: &'a str) -> Self {
        self.parent = Parent::Path(path);
        self
    }

    /// Creates the group inside `parent`, a group this library created (or opened). Controllers
    /// the new group needs are enabled in `parent`'s `cgroup.subtree_control` if this library
    /// created `parent`.
    pub fn inside(mut self, parent: &'a Cgroup) -> Self {
        self.parent = Parent::Group(parent);
        self
    }

    /// A limit to set when the group is created.
    pub fn resource(mut self, resource: Resource) -> Self {
        self.resources.push(resource);
        self
    }

    /// Limits to set when the group is created.
    pub fn resources(mut self, resources: impl IntoIterator<Item = Resource>) -> Self {
        self.resources.extend(resources);
        self
    }

    /// Joins `controller` even without a limit for it (so that limits can be set later). The
    /// controllers of [`resource`](Self::resource)s are joined anyway.
    pub fn controller(mut self, controller: Controller) -> Self {
        self.controllers.push(controller);
        self
    }

    /// Whether to also join the memory, cpu, pids and io controllers where they are available,
    /// for [`Cgroup::stats`] and OOM reporting (default `true`). Without, only the controllers
    /// of the limits are joined — fewer directories, a little faster on v1.
    pub fn stats(mut self, on: bool) -> Self {
        self.stats = on;
        self
    }

    /// Uses an already detected hierarchy instead of reading `/proc` again.
    pub fn hierarchy(mut self, hierarchy: &'a Hierarchy) -> Self {
        self.hierarchy = Some(hierarchy);
        self
    }

    /// How long freezing and deleting wait for the kernel (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates the group and sets its limits. Limits are validated first; if anything fails,
    /// what was created is removed again.
    pub fn create(self) -> Result<Cgroup> {
        for r in &self.resources {
            r.validate()?;
        }
        if let Some(name) = &self.name {
            check_name(name)?;
        }
        let detected;
        let hier = match self.hierarchy {
            Some(h) => h,
            None => {
                detected = Hierarchy::detect()?;
                &detected
            }
        };
        let plan = self.plan(hier)?;
        let mut group = Cgroup {
            name: String::new(),
            backend: hier.backend(),
            dirs: Vec::new(),
            v2_controllers: plan.v2_controllers.clone(),
            dir_fd: None,
            device_program: Mutex::new(None),
            timeout: self.timeout,
            owned: true,
        };
        // `group` owns every directory pushed into `dirs`: an early return drops it, and the
        // drop removes them.
        group.name = self.make_dirs(&plan, &mut group.dirs)?;
        for dir in &group.dirs {
            if dir.carries("cpuset") {
                copy_cpuset(dir)?;
            }
        }
        if let Some(u) = group.dirs.iter().find(|d| d.is_unified()) {
            group.dir_fd = Some(sys::open_dir(&u.path)?);
        }
        group.apply(&self.resources)?;
        Ok(group)
    }

    /// Works out the hierarchies to join and their parent directories, and checks delegation,
    /// before anything is created.
    fn plan(&self, hier: &Hierarchy) -> Result<Plan> {
        let mut required: Vec<Controller> =
            self.resources.iter().map(Resource::controller).collect();
        required.extend(&self.controllers);
        required.sort();
        required.dedup();
        for &c in &required {
            hier.require(c)?;
        }
        let optional: Vec<Controller> = if self.stats {
            [
                Controller::Memory,
                Controller::Cpu,
                Controller::Pids,
                Controller::Io,
            ]
            .into_iter()
            .filter(|c| !required.contains(c) && hier.served(*c).is_some())
            .collect()
        } else {
            Vec::new()
        };

        fn add<'h>(mounts: &mut Vec<&'h Mount>, m: &'h Mount) {
            if !mounts.iter().any(|o| o.mount_point == m.mount_point) {
                mounts.push(m);
            }
        }
        let mut mounts: Vec<&Mount> = Vec::new();
        if let Some(u) = hier.unified() {
            add(&mut mounts, u);
        }
        for &c in required.iter().chain(&optional) {
            if hier.served(c) != Some(Served::V1) {
                continue;
            }
            // v1 CPU usage is counted by cpuacct, often a hierarchy of its own.
            let names: &[&str] = match c {
                Controller::Cpu => &["cpu", "cpuacct"],
                other => &[other.v1_name()],
            };
            for name in names {
                if let Some(m) = hier.v1_mount(name) {
                    add(&mut mounts, m);
                }
            }
        }
        if let Parent::Group(g) = self.parent {
            // A group inside another stays within every v1 hierarchy the outer one joined: a
            // member left in its old group of, say, the v1 devices hierarchy would escape the
            // outer group's limits there. (cgroup v2 has one tree, where this cannot happen.)
            for d in g.dirs.iter().filter(|d| !d.is_unified()) {
                if let Some(m) = hier
                    .v1_mounts()
                    .iter()
                    .find(|m| m.mount_point == d.mount_point)
                {
                    add(&mut mounts, m);
                }
            }
        }
        if hier.unified().is_none() {
            // Without cgroup2, freezing needs the v1 freezer.
            if let Some(m) = hier.v1_mount("freezer") {
                add(&mut mounts, m);
            }
        }

        let mut targets = Vec::new();
        let mut v2_controllers = Vec::new();
        for m in mounts {
            let parent_dir = match self.parent {
                Parent::Own => hier.own_dir(m)?,
                Parent::Path(p) => {
                    check_path(p)?;
                    m.dir_of(p)
                }
                Parent::Group(g) => match g.dirs.iter().find(|d| d.mount_point == m.mount_point) {
                    Some(d) => d.path.clone(),
                    None => {
                        return Err(Error::NotInParent {
                            hierarchy: m.mount_point.clone(),
                            parent: g.name.clone(),
                        })
                    }
                },
            };
            if !parent_dir.is_dir() {
                return Err(Error::Io {
                    op: "open",
                    path: parent_dir,
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                });
            }
            if m.v2 {
                let ours = matches!(self.parent, Parent::Group(g) if g.owned);
                v2_controllers = delegate(hier, &parent_dir, &required, &optional, ours)?;
            }
            targets.push(Target {
                parent_dir,
                mount_point: m.mount_point.clone(),
                v1_names: m.v1_names.clone(),
            });
        }
        Ok(Plan {
            targets,
            v2_controllers,
        })
    }

    /// Creates the group's directory in every hierarchy of `plan`, pushing each into `dirs` as
    /// soon as it exists. Returns the name used.
    fn make_dirs(&self, plan: &Plan, dirs: &mut Vec<Dir>) -> Result<String> {
        enum Naming<'n> {
            Given(&'n str),
            Owned(Owner),
        }
        let naming = match &self.name {
            Some(n) => Naming::Given(n),
            None => Naming::Owned(Owner::current()?),
        };
        let mut seq = 0u32;
        'names: loop {
            let name = match &naming {
                Naming::Given(n) => (*n).to_owned(),
                Naming::Owned(o) => o.group_name(seq),
            };
            for t in &plan.targets {
                let path = t.parent_dir.join(&name);
                if !sys::mkdir(&path)? {
                    // Taken: undo this attempt and try the next name, unless the name was given.
                    let deadline = Instant::now() + self.timeout;
                    for d in dirs.drain(..).rev() {
                        sys::rmdir(&d.path, deadline)?;
                    }
                    if self.name.is_some() || seq > 10_000 {
                        return Err(Error::Io {
                            op: "create",
                            path,
                            source: std::io::Error::from_raw_os_error(libc::EEXIST),
                        });
                    }
                    seq += 1;
                    continue 'names;
                }
                dirs.push(Dir {
                    path,
                    mount_point: t.mount_point.clone(),
                    v1_names: t.v1_names.clone(),
                });
            }
            return Ok(name);
        }
    }
}

struct Target {
    parent_dir: PathBuf,
    mount_point: PathBuf,
    v1_names: Vec<String>,
}

struct Plan {
    targets: Vec<Target>,
    v2_controllers: Vec<Controller>,
}

/// Makes sure the unified parent hands down the controllers the new group needs, and returns
/// those it will have. In a parent this library created, missing ones are enabled; anywhere else
/// a missing required controller is a [`Error::NotDelegated`].
fn delegate(
    hier: &Hierarchy,
    parent: &Path,
    required: &[Controller],
    optional: &[Controller],
    ours: bool,
) -> Result<Vec<Controller>> {
    let words = |file: &str| -> Result<Vec<String>> {
        Ok(read_file(&parent.join(file))?
            .split_whitespace()
            .map(str::to_owned)
            .collect())
    };
    let enabled = words("cgroup.subtree_control")?;
    let available = if ours {
        words("cgroup.controllers")?
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    let mut enable = Vec::new();
    for &c in required.iter().chain(optional) {
        if hier.served(c) != Some(Served::V2) {
            continue;
        }
        if !c.in_subtree_control() {
            // Served by an eBPF program on the group itself: nothing to hand down.
            out.push(c);
            continue;
        }
        let name = c.v2_name().to_owned();
        if enabled.contains(&name) {
            out.push(c);
        } else if ours && available.contains(&name) {
            enable.push(format!("+{name}"));
            out.push(c);
        } else if required.contains(&c) {
            return Err(Error::NotDelegated {
                controller: c,
                parent: parent.to_owned(),
            });
        }
    }
    if !enable.is_empty() {
        write_file(&parent.join("cgroup.subtree_control"), &enable.join(" "))?;
    }
    Ok(out)
}

/// Checks a group path as `/proc/<pid>/cgroup` writes it: absolute, each component a valid
/// group name, so that it never leads out of the cgroup file system (`..`) when joined to a
/// hierarchy's mount point.
fn check_path(path: &str) -> Result<()> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(Error::InvalidPath(path.to_owned()));
    };
    if rest.is_empty() {
        return Ok(());
    }
    rest.split('/')
        .try_for_each(check_name)
        .map_err(|_| Error::InvalidPath(path.to_owned()))
}

fn check_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.contains('/')
        || name.contains('\0')
        || name == "."
        || name == ".."
        || name.starts_with("cgroup.");
    if bad {
        return Err(Error::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// A new v1 cpuset group starts with no CPUs and no memory nodes, so no task could join it
/// (`cpuset(7)`); it gets its parent's.
fn copy_cpuset(dir: &Dir) -> Result<()> {
    let parent = dir.path.parent().unwrap_or(&dir.path);
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let value = read_file(&parent.join(file))?;
        let value = value.trim();
        if !value.is_empty() {
            write_file(&dir.path.join(file), value)?;
        }
    }
    Ok(())
}

/// A control group (`cgroups(7)`), with one directory in the unified hierarchy and, on hybrid
/// and v1 hosts, one in each v1 hierarchy it joined.
///
/// A group this library created is deleted when it is dropped: its processes are killed, child
/// groups removed depth-first, then its own directories. Call [`delete`](Self::delete) to see
/// the errors.
#[derive(Debug)]
pub struct Cgroup {
    name: String,
    backend: Backend,
    dirs: Vec<Dir>,
    v2_controllers: Vec<Controller>,
    dir_fd: Option<OwnedFd>,
    /// The device program attached to the unified directory by [`apply`](Cgroup::apply), kept
    /// so that a later policy can replace it.
    device_program: Mutex<Option<OwnedFd>>,
    timeout: Duration,
    owned: bool,
}

impl Cgroup {
    /// Starts building a new group, by default beneath this process's own group.
    ///
    /// ```no_run
    /// use palisade_cgroup::{Bytes, Cgroup, Resource};
    /// let group = Cgroup::builder()
    ///     .resource(Resource::memory_max(Bytes::mib(64)))
    ///     .resource(Resource::pids_max(32))
    ///     .create()?;
    /// group.add_process(std::process::id() as i32)?;
    /// # Ok::<(), palisade_cgroup::Error>(())
    /// ```
    pub fn builder<'a>() -> CgroupBuilder<'a> {
        CgroupBuilder {
            name: None,
            parent: Parent::Own,
            resources: Vec::new(),
            controllers: Vec::new(),
            stats: true,
            hierarchy: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Opens an existing group at `path` (as in `/proc/<pid>/cgroup`) in every hierarchy where
    /// it exists. An opened group is not deleted on drop; [`delete`](Self::delete) removes it.
    pub fn open(path: &str) -> Result<Cgroup> {
        check_path(path)?;
        let hier = Hierarchy::detect()?;
        let mut dirs = Vec::new();
        let mounts = hier.unified().into_iter().chain(hier.v1_mounts());
        for m in mounts {
            let dir = m.dir_of(path);
            if dir.is_dir() {
                dirs.push(Dir {
                    path: dir,
                    mount_point: m.mount_point.clone(),
                    v1_names: m.v1_names.clone(),
                });
            }
        }
        Self::open_found(hier, dirs, Path::new(path))
    }

    /// Opens an existing group by its directories, as [`dirs`](Self::dirs) listed them (a
    /// group's path may differ between v1 hierarchies); those no longer there, or in no
    /// hierarchy of this host, are left out. Not deleted on drop, as with [`open`](Self::open).
    pub fn open_dirs(paths: &[PathBuf]) -> Result<Cgroup> {
        let first = paths.first().map_or(Path::new("/"), PathBuf::as_path);
        if !paths.iter().any(|p| p.is_dir()) {
            // Gone already (a stopped sandbox's group, usually): nothing to open, which is
            // known without reading the host's mount table and this process's groups.
            return Err(Error::Io {
                op: "open",
                path: first.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        let hier = Hierarchy::detect()?;
        let mut dirs = Vec::new();
        let mounts = hier.unified().into_iter().chain(hier.v1_mounts());
        for m in mounts {
            let found = paths.iter().find(|p| {
                p.parent()
                    .is_some_and(|parent| parent.starts_with(&m.mount_point))
            });
            if let Some(dir) = found.filter(|d| d.is_dir()) {
                dirs.push(Dir {
                    path: dir.clone(),
                    mount_point: m.mount_point.clone(),
                    v1_names: m.v1_names.clone(),
                });
            }
        }
        Self::open_found(hier, dirs, first)
    }

    fn open_found(hier: Hierarchy, dirs: Vec<Dir>, path: &Path) -> Result<Cgroup> {
        let Some(first) = dirs.first() else {
            return Err(Error::Io {
                op: "open",
                path: path.to_owned(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        };
        let name = first
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (v2_controllers, dir_fd) = match dirs.iter().find(|d| d.is_unified()) {
            Some(u) => {
                let text = read_file(&u.path.join("cgroup.controllers"))?;
                let cs = Controller::ALL
                    .into_iter()
                    .filter(|c| {
                        if c.in_subtree_control() {
                            text.split_whitespace().any(|w| w == c.v2_name())
                        } else {
                            hier.served(*c) == Some(Served::V2)
                        }
                    })
                    .collect();
                (cs, Some(sys::open_dir(&u.path)?))
            }
            None => (Vec::new(), None),
        };
        Ok(Cgroup {
            name,
            backend: hier.backend(),
            dirs,
            v2_controllers,
            dir_fd,
            device_program: Mutex::new(None),
            timeout: DEFAULT_TIMEOUT,
            owned: false,
        })
    }

    /// The group's directory name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which cgroup layout serves this group.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The group's directory in the unified hierarchy, if there is one.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified().map(|d| d.path.as_path())
    }

    /// All of the group's directories: the unified one first, then one per v1 hierarchy.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.path.as_path())
    }

    /// Which backend serves `controller` for this group, if it joined it.
    pub fn served(&self, controller: Controller) -> Option<Served> {
        if self.v2_controllers.contains(&controller) {
            Some(Served::V2)
        } else if self.v1_dir(controller.v1_name()).is_some() {
            Some(Served::V1)
        } else {
            None
        }
    }

    /// An open descriptor of the unified directory, for `clone3(2)`'s `CLONE_INTO_CGROUP`: the
    /// child starts life in the group, with no window in which it runs outside it.
    pub fn clone_into_fd(&self) -> Option<BorrowedFd<'_>> {
        self.dir_fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Whether a child born with [`clone_into_fd`](Self::clone_into_fd) must still be attached
    /// to v1 hierarchies with [`attach_v1`](Self::attach_v1) (hybrid and v1 hosts).
    pub fn needs_v1_attach(&self) -> bool {
        self.dirs.iter().any(|d| !d.is_unified())
    }

    /// The group's v1 `tasks` files, open for writing (close-on-exec), for a new process to
    /// move itself there with [`child::enter_v1`](crate::child::enter_v1) before it runs
    /// anything: much cheaper than [`attach_v1`](Self::attach_v1) from outside. Empty on a pure
    /// cgroup v2 host.
    pub fn v1_task_files(&self) -> Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .filter(|d| !d.is_unified())
            .map(|d| {
                let path = d.path.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(|source| Error::Io {
                        op: "open",
                        path,
                        source,
                    })
            })
            .collect()
    }

    /// Whether the group has a directory in the unified (cgroup2) hierarchy, the one
    /// [`clone_into_fd`](Self::clone_into_fd) and [`attach_unified`](Self::attach_unified)
    /// reach.
    pub fn has_unified(&self) -> bool {
        self.dirs.iter().any(Dir::is_unified)
    }

    /// Moves process `pid` into the group's unified directory only: the step left for a child
    /// that was not born there and moved itself into the v1 ones
    /// ([`v1_task_files`](Self::v1_task_files)).
    pub fn attach_unified(&self, pid: i32) -> Result<()> {
        self.attach(pid, Dir::is_unified)
    }

    /// Moves process `pid` (all its threads) into the group, in every hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        self.attach(pid, |_| true)
    }

    /// Moves process `pid` into the group's v1 directories only: the step left after a
    /// `CLONE_INTO_CGROUP` spawn on a hybrid host.
    pub fn attach_v1(&self, pid: i32) -> Result<()> {
        self.attach(pid, |d| !d.is_unified())
    }

    fn attach(&self, pid: i32, which: impl Fn(&Dir) -> bool) -> Result<()> {
        let value = pid.to_string();
        for d in self.dirs.iter().filter(|d| which(d)) {
            write_file(&d.path.join("cgroup.procs"), &value)?;
        }
        Ok(())
    }

    /// The processes in the group itself (not in its child groups).
    pub fn procs(&self) -> Result<Vec<i32>> {
        match self.dirs.first() {
            Some(d) => read_parsed(&d.path.join("cgroup.procs"), parse::pids),
            None => Ok(Vec::new()),
        }
    }

    /// Sets limits. All are validated and translated for the backend, and their files found,
    /// before the first is written: a limit for a controller the group did not join, or whose
    /// file this kernel lacks ([`Error::Unsupported`]), is refused with nothing written. A
    /// device policy replaces the one set before: on cgroup v2 its eBPF program is loaded before
    /// anything is written and attached last, and the previous program is detached after the
    /// new one is attached, so the group is never without one.
    pub fn apply(&self, resources: &[Resource]) -> Result<()> {
        let mut writes: Vec<(PathBuf, String, &'static str)> = Vec::new();
        let mut programs: Vec<OwnedFd> = Vec::new();
        let memory_max = resources.iter().rev().find_map(|r| match r {
            Resource::MemoryMax(m) => Some(*m),
            _ => None,
        });
        for r in resources {
            r.validate()?;
            let c = r.controller();
            let dir = self.controller_dir(c).ok_or(Error::ControllerUnavailable {
                controller: c,
                backend: self.backend,
            })?;
            if let (true, Resource::Devices(policy)) = (dir.is_unified(), r) {
                programs.push(bpf::load(policy)?);
                continue;
            }
            let files = if dir.is_unified() {
                vec![(r.v2_file_name(), r.v2_value())]
            } else {
                r.v1_writes(memory_max)?
            };
            // Every file is found before the first write, so that a setting this kernel lacks
            // changes nothing.
            for (file, value) in files {
                let path = dir.path.join(&*file);
                if path.exists() {
                    writes.push((path, value, r.v2_file()));
                    continue;
                }
                match r.fallback(&file) {
                    Some((other, value)) if dir.path.join(other).exists() => {
                        writes.push((dir.path.join(other), value, r.v2_file()));
                    }
                    _ => {
                        return Err(Error::Unsupported {
                            setting: r.v2_file(),
                            path,
                        })
                    }
                }
            }
        }
        self.order_memsw(&mut writes)?;
        for (path, value, _) in writes {
            write_file(&path, &value)?;
        }
        for program in programs {
            self.set_device_program(program)?;
        }
        Ok(())
    }

    /// Attaches `program` to the unified directory, then detaches the one attached before.
    fn set_device_program(&self, program: OwnedFd) -> Result<()> {
        let (Some(dir), Some(fd)) = (self.unified(), &self.dir_fd) else {
            return Err(Error::ControllerUnavailable {
                controller: Controller::Devices,
                backend: self.backend,
            });
        };
        bpf::attach(fd.as_fd(), &dir.path, program.as_fd())?;
        let mut slot = self
            .device_program
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.replace(program) {
            bpf::detach(fd.as_fd(), &dir.path, old.as_fd())?;
        }
        Ok(())
    }

    /// cgroup v1 keeps `memory.limit_in_bytes <= memory.memsw.limit_in_bytes` at every step, so
    /// when the memory+swap limit grows past its current value it must be written first.
    fn order_memsw(&self, writes: &mut [(PathBuf, String, &'static str)]) -> Result<()> {
        let pos = |f: &str| writes.iter().position(|(p, ..)| p.ends_with(f));
        let (Some(mem), Some(memsw)) = (
            pos("memory.limit_in_bytes"),
            pos("memory.memsw.limit_in_bytes"),
        ) else {
            return Ok(());
        };
        let current = read_parsed(&writes[memsw].0, parse::max_value)?.unwrap_or(u64::MAX);
        let new = writes[memsw]
            .1
            .parse::<i64>()
            .map_or(u64::MAX, |v| v as u64);
        if (new > current) == (memsw > mem) {
            writes.swap(mem, memsw);
        }
        Ok(())
    }

    /// Current usage, from whichever backend serves each controller.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        if let Some(d) = self.controller_dir(Controller::Memory) {
            s.memory = Some(if d.is_unified() {
                stats::memory_v2(&d.path)?
            } else {
                stats::memory_v1(&d.path)?
            });
        }
        match self.controller_dir(Controller::Cpu) {
            Some(d) if d.is_unified() => s.cpu = Some(stats::cpu_v2(&d.path)?),
            cpu => {
                let acct = self.v1_dir("cpuacct");
                if cpu.is_some() || acct.is_some() {
                    s.cpu = Some(stats::cpu_v1(cpu.map(|d| d.path.as_path()), acct)?);
                } else if let Some(u) = self.unified() {
                    // The unified hierarchy counts CPU time in every group (`cpu.stat`'s
                    // usage lines), even without the cpu controller.
                    s.cpu = Some(stats::cpu_v2(&u.path)?);
                }
            }
        }
        if let Some(d) = self.controller_dir(Controller::Pids) {
            s.pids = Some(stats::pids(&d.path)?);
        }
        if let Some(d) = self.controller_dir(Controller::Io) {
            s.io = Some(if d.is_unified() {
                stats::io_v2(&d.path)?
            } else {
                stats::io_v1(&d.path)?
            });
        }
        Ok(s)
    }

    /// The group's peak memory use ([`MemoryStats::peak`](crate::MemoryStats::peak) alone, without
    /// reading the rest of [`stats`](Self::stats)): `memory.peak` (v2, from Linux 5.19) or
    /// `memory.max_usage_in_bytes` (v1). `None` without a memory controller or the file.
    pub fn memory_peak(&self) -> Result<Option<crate::Bytes>> {
        match self.controller_dir(Controller::Memory) {
            Some(d) if d.is_unified() => stats::memory_peak_v2(&d.path),
            Some(d) => stats::memory_peak_v1(&d.path),
            None => Ok(None),
        }
    }

    /// Memory events: how often the limit was hit and how many processes the OOM killer
    /// killed. `None` if the group has no memory controller.
    pub fn memory_events(&self) -> Result<Option<MemoryEvents>> {
        self.controller_dir(Controller::Memory)
            .map(|d| {
                if d.is_unified() {
                    stats::memory_events_v2(&d.path)
                } else {
                    stats::memory_events_v1(&d.path)
                }
            })
            .transpose()
    }

    /// `cgroup.events`: whether the group holds live processes and whether it is frozen.
    pub fn events(&self) -> Result<Events> {
        if let Some(u) = self.unified() {
            return stats::events_v2(&u.path);
        }
        let populated = self.tree_populated()?;
        let frozen = match self.v1_dir("freezer") {
            Some(d) => read_file(&d.join("freezer.state"))?.trim() == "FROZEN",
            None => false,
        };
        Ok(Events { populated, frozen })
    }

    /// Freezes every process in the group and its descendants, and waits until the kernel
    /// reports the group frozen (`cgroup.freeze`; v1: `freezer.state`).
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Thaws the group, and waits until the kernel reports it thawed.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let state = if frozen { "frozen" } else { "thawed" };
        if let Some(u) = self.unified() {
            write_file(
                &u.path.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            )?;
            let events = u.path.join("cgroup.events");
            if !sys::wait_keyed(&events, "frozen", u64::from(frozen), self.timeout)? {
                return Err(Error::Timeout {
                    path: u.path.clone(),
                    state,
                });
            }
            return Ok(());
        }
        let Some(dir) = self.v1_dir("freezer") else {
            return Err(Error::Unsupported {
                setting: "cgroup.freeze",
                path: PathBuf::from("(no cgroup2 and no v1 freezer mounted)"),
            });
        };
        let file = dir.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write_file(&file, want)?;
        if !sys::wait_until(self.timeout, || Ok(read_file(&file)?.trim() == want))? {
            return Err(Error::Timeout {
                path: dir.to_owned(),
                state,
            });
        }
        Ok(())
    }

    /// Sends `SIGKILL` to every process in the group and its descendants, at once through
    /// `cgroup.kill` (Linux 5.14), or else one by one until none is left.
    pub fn kill(&self) -> Result<()> {
        if let Some(u) = self.unified() {
            let file = u.path.join("cgroup.kill");
            if file.exists() {
                return write_file(&file, "1");
            }
        }
        // Without cgroup.kill a process may fork while the list is read, so kill until the
        // group stays empty. A frozen group would hold the killed processes, so thaw it.
        if let Some(d) = self.v1_dir("freezer") {
            write_file(&d.join("freezer.state"), "THAWED")?;
        }
        let done = sys::wait_until(self.timeout, || {
            let mut any = false;
            for d in &self.dirs {
                for dir in tree(&d.path)? {
                    for pid in read_parsed(&dir.join("cgroup.procs"), parse::pids)? {
                        any = true;
                        // SAFETY: kill(2) has no memory-safety preconditions; the pid is a member
                        // of a group this library manages.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            Ok(!any)
        })?;
        if !done {
            return Err(Error::Timeout {
                path: self
                    .dirs
                    .first()
                    .map(|d| d.path.clone())
                    .unwrap_or_default(),
                state: "empty",
            });
        }
        Ok(())
    }

    /// [`gc`](crate::gc) inside this group: removes the `palisade-<pid>-<starttime>-<n>` child
    /// groups whose owner is gone, in each of the group's hierarchies.
    pub fn gc(&self) -> Result<crate::GcReport> {
        crate::gc::collect(self.dirs.iter().map(|d| d.path.clone()))
    }

    /// Lets the group outlive this handle: it is not deleted on drop.
    pub fn keep(mut self) {
        self.owned = false;
    }

    /// Kills the group's processes, waits for them to exit, removes child groups depth-first,
    /// then the group's own directories.
    pub fn delete(mut self) -> Result<()> {
        self.owned = false;
        self.remove()
    }

    fn remove(&mut self) -> Result<()> {
        // A group whose processes are gone and that has no child group (the usual case once a
        // sandbox has exited) is removed by rmdir(2) alone: the kernel refuses it (`EBUSY`)
        // while the group holds a process or a child group, so trying it first changes nothing
        // for the others, which go the way below, listing, killing and waiting.
        self.dirs.retain(|d| !sys::rmdir_if_empty(&d.path));
        if self.dirs.is_empty() {
            self.release_fds();
            return Ok(());
        }
        if self.tree_populated()? {
            self.kill()?;
            if !self.wait_empty()? {
                return Err(Error::Timeout {
                    path: self.dirs[0].path.clone(),
                    state: "empty",
                });
            }
        }
        let deadline = Instant::now() + self.timeout;
        self.release_fds();
        let mut first_err = None;
        for d in self.dirs.iter().rev() {
            let removed = tree(&d.path).and_then(|dirs| {
                // `tree` lists parents before children, so reversed it is depth-first.
                dirs.iter().rev().try_for_each(|p| sys::rmdir(p, deadline))
            });
            if let Err(e) = removed {
                first_err.get_or_insert(e);
            }
        }
        self.dirs.clear();
        first_err.map_or(Ok(()), Err)
    }

    /// Closes the descriptors kept for the group's directory and its device program, once the
    /// group is gone or going: the kernel detaches a removed group's programs, so only our
    /// descriptor is left to close.
    fn release_fds(&mut self) {
        self.dir_fd = None;
        *self
            .device_program
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn wait_empty(&self) -> Result<bool> {
        if let Some(u) = self.unified() {
            return sys::wait_keyed(&u.path.join("cgroup.events"), "populated", 0, self.timeout);
        }
        sys::wait_until(self.timeout, || Ok(!self.tree_populated()?))
    }

    /// Whether any directory of the group, or of a child group, lists a process.
    fn tree_populated(&self) -> Result<bool> {
        if let Some(u) = self.unified() {
            if u.path.join("cgroup.events").exists() {
                return Ok(stats::events_v2(&u.path)?.populated);
            }
        }
        for d in &self.dirs {
            for dir in tree(&d.path)? {
                match read_file(&dir.join("cgroup.procs")) {
                    Ok(text) if !text.trim().is_empty() => return Ok(true),
                    Ok(_) => {}
                    Err(e) if e.errno() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(false)
    }

    fn unified(&self) -> Option<&Dir> {
        self.dirs.iter().find(|d| d.is_unified())
    }

    fn v1_dir(&self, name: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.carries(name))
            .map(|d| d.path.as_path())
    }

    /// The directory holding `controller`'s files.
    fn controller_dir(&self, controller: Controller) -> Option<&Dir> {
        if self.v2_controllers.contains(&controller) {
            return self.unified();
        }
        self.dirs.iter().find(|d| d.carries(controller.v1_name()))
    }

    /// The memory limit in force, if the group has a memory controller.
    pub fn memory_max(&self) -> Result<Option<Max<Bytes>>> {
        let Some(d) = self.controller_dir(Controller::Memory) else {
            return Ok(None);
        };
        let file = if d.is_unified() {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        let v = read_parsed(&d.path.join(file), parse::max_value)?;
        Ok(Some(v.map_or(Max::Unlimited, |b| Max::Limit(Bytes(b)))))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.owned {
            // Best effort: there is no one to report to. `delete` reports the errors.
            let _ = self.remove();
        }
    }
}

/// Makes the group at `path` (as `/proc/<pid>/cgroup` writes it) in every hierarchy of `hier`
/// where it is missing, with its missing ancestors, as runc does for an OCI `cgroupsPath`. On
/// the unified hierarchy each ancestor made here, and the group itself, hands its controllers down
/// (`cgroup.subtree_control`, `cgroups(7)`), so that limits can be set beneath it. Returns the
/// directories made, shallowest first: they outlive any group made beneath them, and are the
/// caller's to remove.
pub fn make_path(hier: &Hierarchy, path: &str) -> Result<Vec<PathBuf>> {
    check_path(path)?;
    let mut made = Vec::new();
    let mounts = hier.unified().into_iter().chain(hier.v1_mounts());
    for m in mounts {
        let target = m.dir_of(path);
        let missing: Vec<PathBuf> = target
            .ancestors()
            .take_while(|d| *d != m.mount_point && !d.is_dir())
            .map(Path::to_owned)
            .collect();
        let made_target = !missing.is_empty();
        for dir in missing.into_iter().rev() {
            if m.v2 {
                if let Some(parent) = dir.parent() {
                    hand_down(parent)?;
                }
            }
            if sys::mkdir(&dir)? {
                made.push(dir);
            }
        }
        if m.v2 && made_target {
            // Groups are made beneath it next.
            hand_down(&target)?;
        }
    }
    Ok(made)
}

/// Enables every controller of the unified group `dir` for its children, one by one: one the
/// kernel refuses there (e.g. a threaded subtree) is left out, and a group that needs it later
/// gets [`Error::NotDelegated`].
fn hand_down(dir: &Path) -> Result<()> {
    let available = read_file(&dir.join("cgroup.controllers"))?;
    for controller in available.split_whitespace() {
        let _ = sys::write_file(
            &dir.join("cgroup.subtree_control"),
            &format!("+{controller}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "/abs", "cgroup.procs", "a\0b"] {
            assert!(
                matches!(check_name(bad), Err(Error::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(check_name("palisade-1-0").is_ok());
    }
}
