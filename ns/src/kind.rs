use std::fmt;

bitflags::bitflags! {
    /// The eight Linux namespace kinds (`namespaces(7)`), as the `CLONE_NEW*` flags that
    /// `clone3(2)`, `unshare(2)` and `setns(2)` take.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Namespace: u64 {
        /// Mount points (`mount_namespaces(7)`), `CLONE_NEWNS`.
        const MOUNT = libc::CLONE_NEWNS as u64;
        /// Control group root directory (`cgroup_namespaces(7)`), `CLONE_NEWCGROUP`.
        const CGROUP = libc::CLONE_NEWCGROUP as u64;
        /// Hostname and NIS domain name, `CLONE_NEWUTS`.
        const UTS = libc::CLONE_NEWUTS as u64;
        /// System V IPC and POSIX message queues, `CLONE_NEWIPC`.
        const IPC = libc::CLONE_NEWIPC as u64;
        /// User and group ids, capabilities (`user_namespaces(7)`), `CLONE_NEWUSER`.
        const USER = libc::CLONE_NEWUSER as u64;
        /// Process ids (`pid_namespaces(7)`), `CLONE_NEWPID`.
        const PID = libc::CLONE_NEWPID as u64;
        /// Network devices, stacks, ports (`network_namespaces(7)`), `CLONE_NEWNET`.
        const NET = libc::CLONE_NEWNET as u64;
        /// Boot-time and monotonic clocks (`time_namespaces(7)`), `CLONE_NEWTIME`.
        const TIME = 0x80;
    }
}

impl Namespace {
    /// Every kind, in the order `setns(2)` should join them when entering all of a process's
    /// namespaces one file at a time: the user namespace first, so that the caller gains the
    /// capabilities needed for the others.
    pub const JOIN_ORDER: [Namespace; 8] = [
        Namespace::USER,
        Namespace::MOUNT,
        Namespace::CGROUP,
        Namespace::UTS,
        Namespace::IPC,
        Namespace::PID,
        Namespace::NET,
        Namespace::TIME,
    ];

    /// The name of this kind's file under `/proc/<pid>/ns/` (`mnt` for [`Namespace::MOUNT`]), or
    /// `None` unless exactly one kind is set.
    pub fn proc_name(self) -> Option<&'static str> {
        Some(match self {
            Namespace::MOUNT => "mnt",
            Namespace::CGROUP => "cgroup",
            Namespace::UTS => "uts",
            Namespace::IPC => "ipc",
            Namespace::USER => "user",
            Namespace::PID => "pid",
            Namespace::NET => "net",
            Namespace::TIME => "time",
            _ => return None,
        })
    }

    /// The kind whose `/proc/<pid>/ns/` file has this name (`"mnt"`, `"net"`, …). The names
    /// `"mount"` and `"network"` are accepted as well.
    pub fn from_proc_name(name: &str) -> Option<Namespace> {
        Some(match name {
            "mnt" | "mount" => Namespace::MOUNT,
            "cgroup" => Namespace::CGROUP,
            "uts" => Namespace::UTS,
            "ipc" => Namespace::IPC,
            "user" => Namespace::USER,
            "pid" => Namespace::PID,
            "net" | "network" => Namespace::NET,
            "time" => Namespace::TIME,
            _ => return None,
        })
    }

    /// The single kinds set in `self`, in [`Namespace::JOIN_ORDER`].
    pub fn kinds(self) -> impl Iterator<Item = Namespace> {
        Namespace::JOIN_ORDER
            .into_iter()
            .filter(move |k| self.contains(*k))
    }

    /// The raw `CLONE_NEW*` bits as the `int` that `unshare(2)` and `setns(2)` take.
    pub fn as_raw(self) -> libc::c_int {
        // All CLONE_NEW* bits fit in the low 31 bits.
        self.bits() as libc::c_int
    }
}

/// Lists the kinds by their `/proc` names, joined by `|` (`"mnt|pid"`), or `none`.
impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, kind) in self.kinds().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            f.write_str(kind.proc_name().unwrap_or("?"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_match_the_kernel_constants() {
        assert_eq!(Namespace::MOUNT.bits(), 0x0002_0000);
        assert_eq!(Namespace::CGROUP.bits(), 0x0200_0000);
        assert_eq!(Namespace::UTS.bits(), 0x0400_0000);
        assert_eq!(Namespace::IPC.bits(), 0x0800_0000);
        assert_eq!(Namespace::USER.bits(), 0x1000_0000);
        assert_eq!(Namespace::PID.bits(), 0x2000_0000);
        assert_eq!(Namespace::NET.bits(), 0x4000_0000);
        assert_eq!(Namespace::TIME.bits(), 0x80);
        assert_eq!(Namespace::all().kinds().count(), 8);
    }

    #[test]
    fn proc_names_round_trip() {
        for kind in Namespace::JOIN_ORDER {
            let name = kind.proc_name().unwrap();
            assert_eq!(Namespace::from_proc_name(name), Some(kind));
        }
        assert_eq!((Namespace::PID | Namespace::MOUNT).proc_name(), None);
        assert_eq!((Namespace::PID | Namespace::MOUNT).to_string(), "mnt|pid");
        assert_eq!(Namespace::empty().to_string(), "none");
    }
}
