//! Which cgroup hierarchies this host mounts, which controllers each carries, and where this
//! process sits in them (`cgroups(7)`: `/proc/self/mountinfo`, `/proc/self/cgroup`).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::parse::{self, CgroupMount};
use crate::sys::read_file;
use crate::Controller;

/// The host's cgroup layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Only the unified cgroup v2 hierarchy: every controller lives there.
    V2,
    /// v1 controller hierarchies plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`) that
    /// carries few or no controllers but offers `cgroup.kill`, `cgroup.freeze`, `cgroup.events`
    /// and `CLONE_INTO_CGROUP`.
    Hybrid,
    /// Only v1 hierarchies.
    V1,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::V2 => "cgroup v2",
            Backend::Hybrid => "hybrid v1/v2",
            Backend::V1 => "cgroup v1",
        })
    }
}

/// A mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The hierarchy path shown at the mount point (`/` unless a subtree is mounted).
    pub root: String,
    /// `true` for cgroup2.
    pub v2: bool,
    /// v1 hierarchy names in the mount options (`cpu`, `cpuacct`, …); empty for cgroup2.
    pub v1_names: Vec<String>,
}

impl Mount {
    /// The directory of the group at `cgroup_path` (a path from `/proc/<pid>/cgroup`).
    pub fn dir_of(&self, cgroup_path: &str) -> PathBuf {
        let rel = if self.root == "/" {
            cgroup_path
        } else {
            cgroup_path
                .strip_prefix(self.root.as_str())
                .unwrap_or(cgroup_path)
        };
        self.mount_point.join(rel.trim_start_matches('/'))
    }

    /// Whether this v1 mount carries the hierarchy `name`.
    fn carries(&self, name: &str) -> bool {
        self.v1_names.iter().any(|n| n == name)
    }
}

/// Where a controller is served on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// By the unified hierarchy.
    V2,
    /// By a v1 hierarchy.
    V1,
}

/// The cgroup hierarchies of this host, as seen from this process's mount namespace.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    unified: Option<Mount>,
    v2_controllers: Vec<Controller>,
    v1: Vec<Mount>,
    own: OwnCgroups,
}

impl Hierarchy {
    /// Reads `/proc/self/mountinfo`, the unified root's `cgroup.controllers` and
    /// `/proc/self/cgroup`. The result is a snapshot: detect again after moving this process to
    /// another group.
    pub fn detect() -> Result<Hierarchy> {
        let mountinfo = read_file(Path::new("/proc/self/mountinfo"))?;
        let mounts = parse::cgroup_mounts(&mountinfo);
        let mut unified = None;
        let mut v1 = Vec::new();
        for CgroupMount {
            mount_point,
            root,
            v2,
            controllers,
        } in mounts
        {
            let m = Mount {
                mount_point: PathBuf::from(mount_point),
                root,
                v2,
                v1_names: controllers,
            };
            if v2 {
                // The first cgroup2 mount wins; later ones are usually bind mounts.
                unified.get_or_insert(m);
            } else if !m.v1_names.is_empty() && !v1.iter().any(|o: &Mount| o.v1_names == m.v1_names)
            {
                v1.push(m);
            }
        }
        let v2_controllers = match &unified {
            Some(u) => {
                let text = read_file(&u.mount_point.join("cgroup.controllers"))?;
                Controller::ALL
                    .into_iter()
                    .filter(|c| text.split_whitespace().any(|w| w == c.v2_name()))
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Hierarchy {
            unified,
            v2_controllers,
            v1,
            own: OwnCgroups::read()?,
        })
    }

    /// The layout: pure v2, hybrid, or pure v1.
    pub fn backend(&self) -> Backend {
        match (&self.unified, self.v1.is_empty()) {
            (Some(_), true) => Backend::V2,
            (Some(_), false) => Backend::Hybrid,
            (None, _) => Backend::V1,
        }
    }

    /// The unified (cgroup2) mount, if any.
    pub fn unified(&self) -> Option<&Mount> {
        self.unified.as_ref()
    }

    /// Where `controller` is served, if anywhere. A controller bound to a v1 hierarchy does not
    /// appear in the unified root's `cgroup.controllers`, so the two never overlap.
    ///
    /// [`Controller::Devices`] is served by the v1 `devices` hierarchy where one is mounted, and
    /// otherwise by the unified hierarchy, where any group can have a device program.
    pub fn served(&self, controller: Controller) -> Option<Served> {
        if !controller.in_subtree_control() {
            return if self.v1_mount(controller.v1_name()).is_some() {
                Some(Served::V1)
            } else {
                self.unified.as_ref().map(|_| Served::V2)
            };
        }
        if self.v2_controllers.contains(&controller) {
            Some(Served::V2)
        } else if self.v1_mount(controller.v1_name()).is_some() {
            Some(Served::V1)
        } else {
            None
        }
    }

    /// The v1 mount that carries the hierarchy `name` (`memory`, `cpuacct`, `freezer`, …).
    pub fn v1_mount(&self, name: &str) -> Option<&Mount> {
        self.v1.iter().find(|m| m.carries(name))
    }

    /// The v1 hierarchies.
    pub fn v1_mounts(&self) -> &[Mount] {
        &self.v1
    }

    /// The directory of this process's own group in `mount`'s hierarchy.
    pub fn own_dir(&self, mount: &Mount) -> Result<PathBuf> {
        self.own.path_in(mount).map(|p| mount.dir_of(p))
    }

    /// Whether [`served`](Self::served) finds `controller` somewhere, or the error saying it
    /// does not.
    pub fn require(&self, controller: Controller) -> Result<Served> {
        self.served(controller).ok_or(Error::ControllerUnavailable {
            controller,
            backend: self.backend(),
        })
    }
}

/// This process's groups: `/proc/self/cgroup`, parsed.
#[derive(Debug, Clone)]
pub struct OwnCgroups(Vec<parse::ProcCgroup>);

impl OwnCgroups {
    /// Reads `/proc/self/cgroup`.
    pub fn read() -> Result<OwnCgroups> {
        let path = Path::new("/proc/self/cgroup");
        let text = read_file(path)?;
        parse::proc_cgroup(&text)
            .map(OwnCgroups)
            .map_err(|reason| Error::Parse {
                path: path.to_owned(),
                reason,
            })
    }

    /// The path of this process's group in `mount`'s hierarchy.
    pub fn path_in(&self, mount: &Mount) -> Result<&str> {
        self.0
            .iter()
            .find(|l| {
                if mount.v2 {
                    l.id == 0 && l.controllers.is_empty()
                } else {
                    l.id != 0 && mount.v1_names.iter().all(|n| l.controllers.contains(n))
                }
            })
            .map(|l| l.path.as_str())
            .ok_or_else(|| Error::NoOwnCgroup {
                hierarchy: if mount.v2 {
                    "unified".to_owned()
                } else {
                    mount.v1_names.join(",")
                },
            })
    }
}
