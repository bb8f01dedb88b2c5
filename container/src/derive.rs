//! The rules that turn what a [`SandboxBuilder`](crate::SandboxBuilder) was told into what a
//! spawn does: which namespaces the clone creates and which the child makes itself, what the
//! network needs of the parent, which root the sandbox gets, and who watches the caller's death.
//!
//! Each rule is a small function of plain values with unit tests of its own;
//! [`SandboxBuilder::build`](crate::SandboxBuilder::build) applies them in order.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use palisade_netns::{ForwarderLimits, Network, PortMap};
use palisade_ns::{Namespace, TimeOffsets};
use palisade_overlay::rootfs::{Rootfs, RootfsPlan};

use crate::error::{Error, Result};
use crate::spawn::plan::NetPlan;
use crate::terminal::TerminalSize;

/// The namespaces asked for, with those that what else was asked implies: id maps need a user
/// namespace.
pub(crate) fn implied_namespaces(asked: Namespace, has_id_maps: bool) -> Namespace {
    if has_id_maps {
        asked | Namespace::USER
    } else {
        asked
    }
}

/// The hostname, checked: it needs a UTS namespace, and must be a name (`hostname(7)`).
pub(crate) fn hostname(name: Option<&OsStr>, namespaces: Namespace) -> Result<Option<CString>> {
    let Some(name) = name else {
        return Ok(None);
    };
    if !namespaces.contains(Namespace::UTS) {
        return Err(Error::InvalidValue {
            what: "hostname",
            value: name.to_string_lossy().into(),
            reason: "setting the hostname needs a UTS namespace",
        });
    }
    check_hostname(name)?;
    crate::spawn::plan::cstring("hostname", name).map(Some)
}

/// The NIS domain name, checked as the [`hostname`] is: it needs a UTS namespace of the
/// sandbox's own, and fits the kernel's 64 bytes (`setdomainname(2)`, `__NEW_UTS_LEN`).
pub(crate) fn domainname(name: Option<&OsStr>, namespaces: Namespace) -> Result<Option<CString>> {
    let Some(name) = name else {
        return Ok(None);
    };
    let invalid = |reason| Error::InvalidValue {
        what: "domain name",
        value: name.to_string_lossy().into(),
        reason,
    };
    if !namespaces.contains(Namespace::UTS) {
        return Err(invalid(
            "setting the domain name needs a UTS namespace of the sandbox's own",
        ));
    }
    if name.len() > 64 {
        return Err(invalid(
            "longer than the kernel's 64 bytes (setdomainname(2))",
        ));
    }
    crate::spawn::plan::cstring("domain name", name).map(Some)
}

/// Checks a hostname the way `hostname(7)` describes valid ones (RFC 1123): dot-separated
/// labels of letters, digits and hyphens, none starting or ending with a hyphen, each at most
/// 63 bytes, 64 in all (`HOST_NAME_MAX`, `sethostname(2)`).
pub(crate) fn check_hostname(name: &OsStr) -> Result<()> {
    let bytes = name.as_bytes();
    let label_ok = |l: &[u8]| {
        !l.is_empty()
            && l.len() <= 63
            && l.first() != Some(&b'-')
            && l.last() != Some(&b'-')
            && l.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
    };
    if bytes.is_empty() || bytes.len() > 64 || !bytes.split(|b| *b == b'.').all(label_ok) {
        return Err(Error::InvalidValue {
            what: "hostname",
            value: name.to_string_lossy().into_owned(),
            reason: "must be 1 to 64 bytes of dot-separated labels of letters, digits and \
                     hyphens, no label starting or ending with a hyphen (hostname(7))",
        });
    }
    Ok(())
}

/// The time namespace: with offsets to set, the child creates it itself (its offsets can be
/// written only before anything runs in it, `time_namespaces(7)`), so the clone does not, and
/// the offsets are returned as `timens_offsets` text; zero offsets need no writing, so the
/// clone creates it.
pub(crate) fn time_namespace(
    namespaces: Namespace,
    offsets: Option<TimeOffsets>,
) -> Result<(Namespace, Option<CString>)> {
    match offsets {
        Some(offsets) if !offsets.is_zero() => {
            let text = CString::new(offsets.to_string()).map_err(|_| Error::InvalidValue {
                what: "time offsets",
                value: offsets.to_string(),
                reason: "not representable",
            })?;
            Ok((namespaces - Namespace::TIME, Some(text)))
        }
        Some(_) => Ok((namespaces | Namespace::TIME, None)),
        None => Ok((namespaces, None)),
    }
}

/// The network namespace: joining another one or sharing the host's means not creating one.
pub(crate) fn network_namespace(namespaces: Namespace, network: &Network) -> Namespace {
    match network {
        Network::Join(_) | Network::Host => namespaces - Namespace::NET,
        _ => namespaces,
    }
}

/// The cgroup namespace: in a group of its own, the child creates it once it is inside, so that
/// the namespace is rooted there rather than at the caller's group (`cgroup_namespaces(7)`).
/// Returns the clone's namespaces and whether the child unshares it.
pub(crate) fn cgroup_namespace(namespaces: Namespace, has_group: bool) -> (Namespace, bool) {
    if has_group && namespaces.contains(Namespace::CGROUP) {
        (namespaces - Namespace::CGROUP, true)
    } else {
        (namespaces, false)
    }
}

/// The namespaces a sandbox joins by path instead of creating its own
/// ([`SandboxBuilder::join_namespace`](crate::SandboxBuilder::join_namespace)).
#[derive(Debug)]
pub(crate) struct Joins {
    /// The kinds joined.
    pub kinds: Namespace,
    /// IPC, UTS, cgroup and time namespaces: the child joins them itself (`setns(2)`).
    pub child: Vec<std::os::fd::OwnedFd>,
    /// A user namespace: the child joins it first, and creates its other namespaces in it.
    pub user: Option<std::os::fd::OwnedFd>,
    /// A PID namespace: the spawning thread joins it for its children only
    /// (`pid_for_children`, `pid_namespaces(7)`) around the clone, so that the sandbox's first
    /// process is born in it.
    pub pid: Option<std::os::fd::OwnedFd>,
}

/// Opens the namespaces to join, one per kind, asking the kernel each one's kind
/// (`ioctl_ns(2)`). Returns the namespaces still to create, and the joins.
///
/// Refused: a network namespace (joined with [`Network::join`](palisade_netns::Network)); a
/// mount namespace, which the sandbox's root would be set up in and so changed for everyone in
/// it; a joined user namespace with id maps of the sandbox's own (`maps`), which only a new
/// one takes; a joined time namespace with offsets of the sandbox's own (`offsets`), likewise.
pub(crate) fn joins(
    namespaces: Namespace,
    paths: &[std::path::PathBuf],
    maps: bool,
    offsets: bool,
) -> Result<(Namespace, Joins)> {
    let mut joins = Joins {
        kinds: Namespace::empty(),
        child: Vec::new(),
        user: None,
        pid: None,
    };
    for path in paths {
        let file = palisade_ns::NsFile::open_path(path)?;
        let invalid = |reason| Error::InvalidValue {
            what: "namespace to join",
            value: path.display().to_string(),
            reason,
        };
        let kind = file.kind();
        if kind == Namespace::NET {
            return Err(invalid("a network namespace is joined with Network::join"));
        }
        if kind == Namespace::MOUNT {
            return Err(invalid(
                "a mount namespace cannot be joined: the sandbox's root is set up in a mount \
                 namespace of its own",
            ));
        }
        if kind == Namespace::USER && maps {
            return Err(invalid(
                "id maps are written only for a new user namespace (user_namespaces(7))",
            ));
        }
        if kind == Namespace::TIME && offsets {
            return Err(invalid(
                "time offsets are set only in a new time namespace (time_namespaces(7))",
            ));
        }
        if joins.kinds.contains(kind) {
            return Err(invalid("a namespace of this kind is joined already"));
        }
        joins.kinds |= kind;
        if kind == Namespace::PID {
            joins.pid = Some(file.into());
        } else if kind == Namespace::USER {
            joins.user = Some(file.into());
        } else {
            joins.child.push(file.into());
        }
    }
    Ok((namespaces - joins.kinds, joins))
}

/// What the parent does for the sandbox's network around the clone: attach it to a bridge, or
/// forward published ports into its own namespace; checked against the namespaces.
pub(crate) fn net_plan(
    network: &Network,
    ports: &[PortMap],
    limits: Option<ForwarderLimits>,
    namespaces: Namespace,
    init: bool,
) -> Result<Option<NetPlan>> {
    PortMap::validate(ports)?;
    let refuse = |reason| {
        Err(Error::InvalidValue {
            what: "network",
            value: format!("{network:?}"),
            reason,
        })
    };
    match network {
        Network::Bridge(_) if !namespaces.contains(Namespace::NET) => {
            refuse("needs a network namespace")
        }
        Network::Bridge(b) => {
            let b = match limits {
                Some(limits) => b.clone().forwarder_limits(limits),
                None => b.clone(),
            };
            Ok(Some(NetPlan::Bridge(b, ports.to_vec())))
        }
        Network::None if ports.is_empty() => Ok(None),
        Network::None if !namespaces.contains(Namespace::NET) => {
            refuse("published ports need a network namespace")
        }
        // In a user namespace of its own, the sandbox's network namespace is out of the caller's
        // reach; the init makes the forwarder's sockets there instead.
        Network::None if namespaces.contains(Namespace::USER) && !init => {
            refuse("published ports of a rootless sandbox need the init (a PID namespace)")
        }
        Network::None => Ok(Some(NetPlan::Forward(
            ports.to_vec(),
            limits.unwrap_or_default(),
        ))),
        _ if !ports.is_empty() => refuse("published ports need the none or bridge network"),
        _ => Ok(None),
    }
}

/// Which root file system the sandbox was given.
#[derive(Debug)]
pub(crate) enum RootChoice {
    /// [`Rootfs::host`] where there is a mount namespace (read-only in a user namespace),
    /// else the host's mounts.
    Default,
    /// The one given.
    Own(Rootfs),
    /// The host's mounts as they are.
    HostMounts,
}

/// The root's plan: a root of its own needs a mount namespace; by default a sandbox with one
/// gets the host's root under a throwaway layer. The scratch bound applies to whichever root,
/// and a rootless sandbox's plan is made for a user namespace.
/// `cgroup2`: the sandbox's own cgroup namespace, rooted at its own group on a pure v2 host,
/// is what a read-only cgroup2 mount at `/sys/fs/cgroup` shows.
pub(crate) fn root(
    choice: &RootChoice,
    mount_ns: bool,
    scratch: Option<u64>,
    rootless: bool,
    cgroup2: bool,
) -> Result<Option<RootfsPlan>> {
    let chosen = match choice {
        RootChoice::Own(r) if !mount_ns => {
            return Err(Error::InvalidValue {
                what: "root file system",
                value: format!("{:?}", r.source()),
                reason: "needs a mount namespace",
            })
        }
        RootChoice::Own(r) => r.clone(),
        RootChoice::Default if mount_ns => Rootfs::host(),
        RootChoice::Default | RootChoice::HostMounts => return Ok(None),
    };
    let chosen = match scratch {
        Some(bytes) => chosen.scratch_size(bytes),
        None => chosen,
    };
    let chosen = if cgroup2 {
        chosen.cgroup2(true)
    } else {
        chosen
    };
    let plan = if rootless {
        chosen.plan_rootless()?
    } else {
        chosen.plan()?
    };
    Ok(Some(plan))
}

/// What the child mounts when the sandbox keeps the host's mounts (no root of its own) in a new
/// mount namespace: `/` made rslave, and a fresh `/proc` for a new PID namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostMountDuties {
    /// Make `/` rslave, so the sandbox's mounts never propagate back.
    pub private_mounts: bool,
    /// Mount a `/proc` of the sandbox's PID namespace.
    pub mount_proc: bool,
}

/// See [`HostMountDuties`]; a root of the sandbox's own does both itself.
pub(crate) fn host_mount_duties(mount_ns: bool, pid_ns: bool, own_root: bool) -> HostMountDuties {
    HostMountDuties {
        private_mounts: mount_ns && !own_root,
        mount_proc: mount_ns && pid_ns && !own_root,
    }
}

/// Who ends the sandbox when its caller dies, for a sandbox that must die with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeathWatch {
    /// Nobody: the sandbox may outlive its caller.
    None,
    /// The init, watching the caller's death pipe: the sandbox follows the caller *process*.
    Init,
    /// `PR_SET_PDEATHSIG` on the command: without an init nothing of the sandbox's own can
    /// watch, and the kernel's signal follows the spawning thread.
    ParentDeathSignal,
}

/// A detached sandbox's network must outlive its creator: published ports only on a bridge,
/// whose DNAT rules need nobody, never through a forwarder thread of the creator's.
pub(crate) fn detached_network(detach: bool, net: Option<&NetPlan>) -> Result<()> {
    match net {
        Some(NetPlan::Forward(ports, _)) if detach => Err(Error::InvalidValue {
            what: "published ports",
            value: format!("{ports:?}"),
            reason: "a detached sandbox's ports need a bridge network: the forwarder of the \
                     none network would die with the creating process",
        }),
        _ => Ok(()),
    }
}

/// The kernel parameters that belong to a namespace (`sysctl(8)`; the list runc allows): those of
/// the network namespace (`net.*`), of the IPC namespace (System V IPC and POSIX message
/// queues), and of the UTS namespace. Any other would change the host.
fn sysctl_namespace(key: &str) -> Option<Namespace> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if key.starts_with("net.") {
        Some(Namespace::NET)
    } else if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(Namespace::IPC)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(Namespace::UTS)
    } else {
        None
    }
}

/// The kernel parameters to write in the sandbox's namespaces, as `/proc/sys` paths and values:
/// each named with dots (or slashes) of plain components, and belonging to a namespace the
/// sandbox has of its own (a joined network namespace counts: it is not the caller's).
pub(crate) fn sysctls(
    sysctls: &std::collections::BTreeMap<String, String>,
    namespaces: Namespace,
    joins_network: bool,
) -> Result<Vec<(CString, CString)>> {
    sysctls
        .iter()
        .map(|(key, value)| {
            let invalid = |reason| Error::InvalidValue {
                what: "sysctl",
                value: format!("{key}={value}"),
                reason,
            };
            let plain = key.split(['.', '/']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
            });
            if !plain {
                return Err(invalid(
                    "a parameter is dot-separated names of letters, digits, '_' and '-'",
                ));
            }
            let key = key.replace('/', ".");
            let own = match sysctl_namespace(&key) {
                Some(Namespace::NET) => namespaces.contains(Namespace::NET) || joins_network,
                Some(ns) => namespaces.contains(ns),
                None => {
                    return Err(invalid(
                        "not a namespaced parameter: it would change the host",
                    ))
                }
            };
            if !own {
                return Err(invalid(
                    "its namespace is the caller's: it would change the host",
                ));
            }
            let path = CString::new(format!("/proc/sys/{}", key.replace('.', "/")))
                .map_err(|_| invalid("contains a NUL byte"))?;
            let value =
                CString::new(value.as_bytes()).map_err(|_| invalid("contains a NUL byte"))?;
            Ok((path, value))
        })
        .collect()
}

/// See [`DeathWatch`].
pub(crate) fn death_watch(die_with_parent: bool, init: bool) -> DeathWatch {
    match (die_with_parent, init) {
        (false, _) => DeathWatch::None,
        (true, true) => DeathWatch::Init,
        (true, false) => DeathWatch::ParentDeathSignal,
    }
}

/// The terminal: it is opened on the sandbox's own devpts, so it needs a root of its own, and
/// it is the command's stdio, so no other stdio may be set.
pub(crate) fn terminal(
    tty: Option<TerminalSize>,
    own_root: bool,
    stdio_inherited: bool,
) -> Result<Option<TerminalSize>> {
    let Some(size) = tty else {
        return Ok(None);
    };
    let refuse = |reason| {
        Err(Error::InvalidValue {
            what: "tty",
            value: format!("{}x{}", size.rows, size.cols),
            reason,
        })
    };
    if !own_root {
        return refuse("needs a root file system of the sandbox's own, whose devpts it is on");
    }
    if !stdio_inherited {
        return refuse("is the command's stdin, stdout and stderr: set no other stdio");
    }
    Ok(Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_netns::{Bridge, Proto};
    use palisade_ns::Offset;

    #[test]
    fn id_maps_imply_a_user_namespace() {
        assert_eq!(
            implied_namespaces(Namespace::PID, true),
            Namespace::PID | Namespace::USER
        );
        assert_eq!(implied_namespaces(Namespace::PID, false), Namespace::PID);
    }

    #[test]
    fn a_hostname_needs_a_uts_namespace_and_a_valid_name() {
        assert_eq!(hostname(None, Namespace::empty()).unwrap(), None);
        assert!(hostname(Some(OsStr::new("box")), Namespace::empty()).is_err());
        assert_eq!(
            hostname(Some(OsStr::new("box")), Namespace::UTS).unwrap(),
            Some(CString::new("box").unwrap())
        );
        assert!(hostname(Some(OsStr::new("-box")), Namespace::UTS).is_err());
    }

    #[test]
    fn a_domain_name_needs_a_uts_namespace_of_its_own() {
        assert_eq!(domainname(None, Namespace::empty()).unwrap(), None);
        assert!(domainname(Some(OsStr::new("nis")), Namespace::empty()).is_err());
        assert_eq!(
            domainname(Some(OsStr::new("nis.example")), Namespace::UTS).unwrap(),
            Some(CString::new("nis.example").unwrap())
        );
        let long = "d".repeat(65);
        assert!(domainname(Some(OsStr::new(&long)), Namespace::UTS).is_err());
        assert!(domainname(Some(OsStr::new("a\0b")), Namespace::UTS).is_err());
        // A joined UTS namespace is not the sandbox's own: `joins` takes it out of the set.
        assert!(domainname(Some(OsStr::new("nis")), Namespace::PID).is_err());
    }

    #[test]
    fn offsets_make_the_child_create_the_time_namespace() {
        let offsets = TimeOffsets::both(Offset::secs(5));
        let (ns, text) = time_namespace(Namespace::PID | Namespace::TIME, Some(offsets)).unwrap();
        assert_eq!(ns, Namespace::PID);
        assert!(text.unwrap().to_str().unwrap().contains('5'));
        let (ns, text) = time_namespace(Namespace::PID, Some(TimeOffsets::default())).unwrap();
        assert_eq!((ns, text), (Namespace::PID | Namespace::TIME, None));
        let (ns, text) = time_namespace(Namespace::PID, None).unwrap();
        assert_eq!((ns, text), (Namespace::PID, None));
    }

    #[test]
    fn joining_or_sharing_a_network_creates_none() {
        let all = Namespace::NET | Namespace::PID;
        assert_eq!(network_namespace(all, &Network::host()), Namespace::PID);
        assert_eq!(
            network_namespace(all, &Network::join_pid(1)),
            Namespace::PID
        );
        assert_eq!(network_namespace(all, &Network::none()), all);
    }

    #[test]
    fn a_group_of_its_own_moves_the_cgroup_namespace_into_the_child() {
        let all = Namespace::CGROUP | Namespace::PID;
        assert_eq!(cgroup_namespace(all, true), (Namespace::PID, true));
        assert_eq!(cgroup_namespace(all, false), (all, false));
        assert_eq!(
            cgroup_namespace(Namespace::PID, true),
            (Namespace::PID, false)
        );
    }

    #[test]
    fn published_ports_need_a_network_that_can_carry_them() {
        let port = [PortMap::new(8080, 80, Proto::Tcp)];
        let net = Namespace::NET;
        assert!(net_plan(&Network::none(), &[], None, net, true)
            .unwrap()
            .is_none());
        assert!(matches!(
            net_plan(&Network::none(), &port, None, net, true).unwrap(),
            Some(NetPlan::Forward(..))
        ));
        // Without a network namespace, in a rootless sandbox without init, or on the host.
        assert!(net_plan(&Network::none(), &port, None, Namespace::empty(), true).is_err());
        assert!(net_plan(&Network::none(), &port, None, net | Namespace::USER, false).is_err());
        assert!(net_plan(&Network::host(), &port, None, net, true).is_err());
        assert!(net_plan(&Network::host(), &[], None, net, true)
            .unwrap()
            .is_none());
        // A bridge needs a network namespace, and gets the builder's forwarder limits.
        let bridge = Network::bridge(Bridge::default());
        assert!(net_plan(&bridge, &port, None, Namespace::empty(), true).is_err());
        let limits = ForwarderLimits::default().max_tcp_connections(3);
        match net_plan(&bridge, &port, Some(limits), net, true).unwrap() {
            Some(NetPlan::Bridge(b, ports)) => {
                assert_eq!(b.get_forwarder_limits().max_tcp_connections, 3);
                assert_eq!(ports, port);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_default_root_is_the_hosts_under_a_layer_where_there_is_a_mount_namespace() {
        assert!(root(&RootChoice::Default, true, None, false, false)
            .unwrap()
            .is_some());
        assert!(root(&RootChoice::Default, false, None, false, false)
            .unwrap()
            .is_none());
        assert!(root(&RootChoice::HostMounts, true, None, false, false)
            .unwrap()
            .is_none());
        let own = RootChoice::Own(Rootfs::host());
        assert!(root(&own, false, None, false, false).is_err());
        assert!(root(&own, true, Some(1 << 20), true, false)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_host_mounts_get_made_private_and_a_proc_of_their_own() {
        let d = host_mount_duties(true, true, false);
        assert!(d.private_mounts && d.mount_proc);
        let d = host_mount_duties(true, false, false);
        assert!(d.private_mounts && !d.mount_proc);
        let d = host_mount_duties(true, true, true);
        assert!(!d.private_mounts && !d.mount_proc);
        let d = host_mount_duties(false, true, false);
        assert!(!d.private_mounts && !d.mount_proc);
    }

    #[test]
    fn a_terminal_needs_a_root_of_its_own_and_the_stdio_to_itself() {
        let size = Some(TerminalSize::default());
        assert_eq!(terminal(None, false, false).unwrap(), None);
        assert_eq!(terminal(size, true, true).unwrap(), size);
        assert!(terminal(size, false, true).is_err());
        assert!(terminal(size, true, false).is_err());
    }

    #[test]
    fn the_init_watches_the_caller_where_there_is_one() {
        assert_eq!(death_watch(false, true), DeathWatch::None);
        assert_eq!(death_watch(true, true), DeathWatch::Init);
        assert_eq!(death_watch(true, false), DeathWatch::ParentDeathSignal);
    }
}
