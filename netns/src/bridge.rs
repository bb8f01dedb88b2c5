//! Bridge networking: a sandbox on a Linux bridge, with an address from a subnet, a default
//! route, outbound NAT and published ports (`docker run --network bridge -p …`).
//!
//! # What is made, and when it goes
//!
//! For the network (shared by its sandboxes, made by the first one):
//! - the bridge (default `palisade0`) with the subnet's gateway address, up. A bridge the library
//!   creates is labelled with an alias and deleted with the network's last sandbox; a bridge that
//!   already existed (the user's) is reused and never deleted. The library's bridge has IPv6
//!   turned off before it goes up ([`crate::link::disable_ipv6`]): no address, not
//!   even link-local, and no router advertisement from a sandbox taken; a user's bridge keeps
//!   the user's IPv6 settings;
//! - `forwarding` on the bridge (`/proc/sys/net/ipv4/conf/<bridge>/forwarding`), so that the
//!   sandboxes' traffic is routed out; and, when ports are published, on the interfaces that carry
//!   the host's default routes and those named with [`Bridge::forward_from`], so that traffic
//!   from outside is routed in. Each value the library changes is recorded in
//!   `<state_dir>/<network>.restore` and put back with the network's last sandbox; a value that
//!   was already 1 is left alone and never restored. The global `ip_forward` is never touched;
//! - the address allocation state, `<state_dir>/<network>.ipam` (see [`crate::ipam`]);
//! - with masquerading on (the default), the network's nftables table (see [`crate::nft`]):
//!   outbound traffic of the subnet leaves with the host's address.
//!
//! For each sandbox ([`PreparedBridge::attach`], while the sandbox's process waits):
//! - a veth pair, `pal-<pid>` on the host attached to the bridge and `eth0` created directly in
//!   the sandbox's namespace, with the leased address and a default route via the gateway. Both
//!   ends have IPv6 turned off before they go up. The sandbox's `eth0` gets a MAC address made
//!   from its IPv4 address. With [`Bridge::isolate`], the host veth is an isolated bridge port
//!   before it goes up. The kernel removes both ends when the sandbox's namespace goes, in the
//!   background; the library removes the veth itself only while the sandbox still runs, and
//!   with the network;
//! - its port guard, a `bridge` family nftables table: the bridge drops every frame from the
//!   sandbox's veth whose source MAC, ARP sender or IPv4 source is not the sandbox's own, and
//!   everything that is neither ARP nor IPv4 (see [`Nftables::add_port_guard`]). So a sandbox
//!   given `CAP_NET_RAW` or `CAP_NET_ADMIN` cannot take over the gateway's or another sandbox's
//!   address, and sends no IPv6 router advertisement;
//! - if it publishes ports, its nftables table: a DNAT rule per port for traffic from outside.
//!   Both tables belong to a netlink socket that the [`Attachment`] keeps open (see
//!   [`crate::nft`]), so the kernel removes them when the managing process dies, even by SIGKILL:
//!   the rules can never outlive their manager and redirect the port to a later sandbox that
//!   gets the same address;
//! - the userspace forwarder of its published ports (see [`crate::forward`]), which also serves
//!   connections made on the host itself, including to `127.0.0.1`, which DNAT cannot reach.
//!
//! [`Attachment::detach`] (or dropping the [`Attachment`]) removes the sandbox's part, and the
//! network's part with the last sandbox. The set-up and teardown of the network's part hold the
//! state directory's lock, so concurrent sandboxes in any number of processes never remove a
//! bridge another is joining. After a crash of the managing process, the kernel has removed its
//! sandboxes' tables already, and every later attach on the same state directory (with or without
//! published ports) drops the leases of sandboxes that are gone and removes the tables that older
//! versions made without an owning socket; [`Bridge::cleanup`] does the same on demand and
//! removes an unused network, and [`gc`] / [`gc_dir`] do it for every network of a state
//! directory and report what they removed.
//!
//! # Persistent sandboxes
//!
//! A sandbox that must outlive the process that started it (`docker run -d`) is attached with
//! [`PreparedBridge::persistent`]. Its two tables, the port guard and the NAT table of its
//! published ports, are then made without an owning socket ([`TableLifetime::Persistent`]):
//! they stay when the manager exits, even by SIGKILL, so the port guard holds for as long as the
//! sandbox's process runs. No userspace forwarder is started (it would die with the manager):
//! its ports published on every address are served by DNAT only, to traffic from other hosts
//! and to the host's non-loopback addresses from outside the bridge, and connections made on
//! the host to its loopback address are not served; a port published on a loopback address
//! cannot be served at all and is refused.
//!
//! [`Attachment::release`] lets go of such an attachment and leaves its tables, veth and lease
//! in place, tied to the sandbox's process (its [`Owner`]: pid and start time). While the
//! process runs, [`Bridge::detach_sandbox`] tears it down from any process; once it is gone,
//! the kernel removes its veth with its namespace, and the next attach to the bridge,
//! [`Bridge::cleanup`], [`Bridge::gc`], [`gc`] and [`gc_dir`] remove its tables and its lease
//! (and the network, if it was the last sandbox on it).
//!
//! # Which addresses are in use
//!
//! The allocation state file is the record, but not the only one: each sandbox's host-side veth
//! carries its lease in its alias (`IFLA_IFALIAS`: `palisade-netns lease <address> <pid>
//! <start time>`). The veth lives in the host's namespace, where a sandbox cannot change it, and
//! exists exactly as long as the sandbox's namespace (the kernel removes both ends with it). So
//! before every allocation and release, under the lock, the leases that the bridge's veths show
//! for live owners are merged into the state; an emptied, deleted or corrupt state file is
//! rebuilt from them. A damaged state file therefore never hands out an address in use, and the
//! network's teardown never removes a live sandbox's veth or its bridge. The teardown of a
//! sandbox whose state file was corrupt still completes, and then reports the
//! [`Error::CorruptState`] it recovered from.
//!
//! The state directory is private (`0700`, files `0600`), and waits for its lock are bounded
//! ([`Bridge::lock_timeout`], [`Error::LockTimeout`]); see [`crate::ipam`].
//!
//! Bridge mode needs `CAP_NET_ADMIN` in the host's namespace: it is for a root manager.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::forward::{BoundPort, Forwarder, ForwarderLimits, PortMap, Target};
use crate::ipam::{self, Allocator, Lease, LeaseInfo, Owner, StaleLease, Subnet};
use crate::link::{disable_ipv6, disable_ipv6_in, validate_name, Family, Netlink, Route};
use crate::nft::{table_name, NetworkRules, Nftables, PortGuard, Published, TableLifetime};
use crate::{Error, Result};

/// The default bridge name.
pub const DEFAULT_BRIDGE: &str = "palisade0";
/// The default subnet.
pub const DEFAULT_SUBNET: Subnet = Subnet::v4_const(Ipv4Addr::new(10, 213, 0, 0), 16);
/// The default state directory (on the tmpfs `/run`, so that a reboot starts afresh).
pub const DEFAULT_STATE_DIR: &str = "/run/palisade/netns";
/// The alias that marks a bridge the library created.
const OWNED_ALIAS: &str = "palisade-netns: removed with its last sandbox";
/// The name of the sandbox's end of the veth pair.
const SANDBOX_LINK: &str = "eth0";
/// The start of the alias of a sandbox's host-side veth, which records its lease.
const LEASE_ALIAS: &str = "palisade-netns lease ";

/// A bridge network: which bridge, which subnet, where its state lives, and what NAT it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    name: String,
    subnet: Subnet,
    state_dir: PathBuf,
    masquerade: bool,
    forward_from: Vec<String>,
    isolate: bool,
    lock_timeout: Duration,
    forwarder_limits: ForwarderLimits,
}

impl Default for Bridge {
    fn default() -> Bridge {
        Bridge {
            name: DEFAULT_BRIDGE.to_owned(),
            subnet: DEFAULT_SUBNET,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            masquerade: true,
            forward_from: Vec::new(),
            isolate: false,
            lock_timeout: ipam::DEFAULT_LOCK_TIMEOUT,
            forwarder_limits: ForwarderLimits::default(),
        }
    }
}

impl Bridge {
    /// The bridge `name` with the default subnet and state directory.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad interface name (e.g. longer than 15 bytes).
    pub fn new(name: &str) -> Result<Bridge> {
        validate_name(name)?;
        Ok(Bridge {
            name: name.to_owned(),
            ..Bridge::default()
        })
    }

    /// Uses `subnet` (IPv4) for the sandboxes' addresses; its first host is the gateway.
    pub fn subnet(mut self, subnet: Subnet) -> Bridge {
        self.subnet = subnet;
        self
    }

    /// Keeps the allocation state in `dir` instead of [`DEFAULT_STATE_DIR`]. Every process
    /// using the same bridge must use the same directory.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Bridge {
        self.state_dir = dir.into();
        self
    }

    /// Waits at most `timeout` for the state directory's lock in set-up and teardown, then fails
    /// with [`Error::LockTimeout`] ([`ipam::DEFAULT_LOCK_TIMEOUT`] by default).
    pub fn lock_timeout(mut self, timeout: Duration) -> Bridge {
        self.lock_timeout = timeout;
        self
    }

    /// How long set-up and teardown wait for the state directory's lock.
    pub fn get_lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// Isolates the network's sandboxes from each other (off by default, as in Docker, where
    /// the sandboxes of one bridge reach each other). Each sandbox's port on the bridge is
    /// isolated (`IFLA_BRPORT_ISOLATED`, see [`Netlink::set_port_isolated`]), so the bridge
    /// forwards no frame between two sandboxes, and the network's forward filter drops what one
    /// sandbox routes through the host to another ([`NetworkRules::isolate`]). The sandboxes
    /// still reach the host (the gateway), the outside, and each other's published ports
    /// through the host's addresses, as any client would.
    ///
    /// Isolation belongs to the network: a sandbox asking for the opposite of what the live
    /// sandboxes on the bridge have is refused with [`Error::IsolationMismatch`].
    pub fn isolate(mut self, on: bool) -> Bridge {
        self.isolate = on;
        self
    }

    /// Whether the network's sandboxes are isolated from each other ([`Bridge::isolate`]).
    pub fn is_isolated(&self) -> bool {
        self.isolate
    }

    /// Bounds the userspace forwarder of each sandbox's published ports (see
    /// [`ForwarderLimits`]; the defaults without a call).
    pub fn forwarder_limits(mut self, limits: ForwarderLimits) -> Bridge {
        self.forwarder_limits = limits;
        self
    }

    /// The bounds of the forwarders ([`Bridge::forwarder_limits`]).
    pub fn get_forwarder_limits(&self) -> ForwarderLimits {
        self.forwarder_limits
    }

    /// Whether to masquerade the sandboxes' outbound traffic (on by default).
    pub fn masquerade(mut self, on: bool) -> Bridge {
        self.masquerade = on;
        self
    }

    /// Also enables forwarding on `iface` when ports are published, for DNAT of traffic arriving
    /// there (the interfaces of the default routes are always included).
    pub fn forward_from(mut self, iface: &str) -> Bridge {
        self.forward_from.push(iface.to_owned());
        self
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subnet.
    pub fn get_subnet(&self) -> Subnet {
        self.subnet
    }

    /// The state directory.
    pub fn get_state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// [`gc_dir`] for this bridge's state directory: what dead sandboxes left on every network
    /// recorded there.
    ///
    /// # Errors
    /// As [`gc_dir`].
    pub fn gc(&self) -> Result<GcReport> {
        gc_dir(&self.state_dir)
    }

    /// Checks the configuration and does what must precede the sandbox: opens the allocation
    /// state (a subnet overlapping another network's is refused), and binds the published ports
    /// on the host (a port that is taken is refused). Nothing is left behind on error.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for bad names or an IPv6 subnet, [`Error::ReservedSubnet`],
    /// [`Error::NotABridge`] if the name is taken by a link of another kind (e.g. `lo`),
    /// [`Error::Overlap`], [`Error::SubnetMismatch`], [`Error::PortConflict`],
    /// [`Error::PortInUse`], [`Error::LockTimeout`], and netlink or file errors.
    pub fn prepare(&self, ports: &[PortMap]) -> Result<PreparedBridge> {
        validate_name(&self.name)?;
        for iface in &self.forward_from {
            validate_name(iface)?;
        }
        if !self.subnet.is_ipv4() {
            return Err(Error::InvalidValue {
                what: "bridge subnet",
                value: self.subnet.to_string(),
                reason: "bridge networks are IPv4",
            });
        }
        self.subnet.check_usable()?;
        PortMap::validate(ports)?;
        let mut nl = Netlink::open()?;
        check_is_bridge(&mut nl, &self.name)?;
        // A corrupt state file is rebuilt from the bridge's veths under the lock in `attach`.
        let (alloc, created) = Allocator::open_inner(
            &self.state_dir,
            &self.name,
            self.subnet,
            self.lock_timeout,
            true,
        )?;
        let checked = check_routes(&mut nl, self.subnet, &self.name).and_then(|()| {
            ports
                .iter()
                .map(|p| BoundPort::bind(*p))
                .collect::<Result<Vec<_>>>()
        });
        let ports = match checked {
            Ok(ports) => ports,
            Err(e) => {
                // The network was recorded for this call only: forget it again, or its name
                // would stay tied to this subnet. `remove` keeps it if a lease appeared since.
                if created {
                    let _ = alloc.remove();
                }
                return Err(e);
            }
        };
        Ok(PreparedBridge {
            bridge: self.clone(),
            alloc,
            nl,
            ports,
            created,
            persistent: false,
        })
    }

    /// Removes what crashed managers left: the leases and nftables tables of sandboxes that are
    /// gone, and the whole network (bridge if the library made it, state, forwarding settings)
    /// if no sandbox is left on it.
    ///
    /// # Errors
    /// As [`Bridge::prepare`]'s state and netlink errors; a corrupt state file is rebuilt from
    /// the bridge's veths first (see the [module documentation](self)).
    pub fn cleanup(&self) -> Result<()> {
        let alloc = self.state()?;
        let _lock = alloc.lock()?;
        remove_stale_tables()?;
        let mut nl = Netlink::open()?;
        alloc.reconcile_locked(&live_leases(&mut nl, &self.name)?)?;
        if alloc.live_leases_locked()? == 0 {
            remove_network(&mut nl, self, &alloc)?;
        }
        Ok(())
    }

    /// The bridge's address allocator over its state directory, made if missing.
    fn state(&self) -> Result<Allocator> {
        let (alloc, _) = Allocator::open_inner(
            &self.state_dir,
            &self.name,
            self.subnet,
            self.lock_timeout,
            true,
        )?;
        Ok(alloc)
    }

    /// Tears down the persistent attachment ([`PreparedBridge::persistent`]) of the sandbox
    /// `owner` (its pid and start time; the tag is not used), from any process: what
    /// [`Attachment::detach`] would do, for a caller without the [`Attachment`], e.g. a later
    /// command that stops a detached sandbox. It removes the sandbox's host veth (only one on
    /// this bridge whose recorded lease is `owner`'s, never a later sandbox that was given the
    /// same pid), then its port guard and NAT table, then its lease, and the network if no
    /// sandbox is left on it. The sandbox's process is not signalled: it keeps running without
    /// a network. What is already gone is not an error, so a second call does nothing.
    ///
    /// Once the sandbox's process has exited, [`Bridge::gc`] (or the next attach to the bridge)
    /// collects the same, without naming the sandbox: that is the usual way after a detached
    /// sandbox ended.
    ///
    /// # Errors
    /// [`Error::InvalidValue`], doing nothing, if the sandbox's tables belong to a socket: the
    /// sandbox is not persistent, and only the process that attached it can detach it. Otherwise
    /// as [`Bridge::cleanup`]; every step is tried and the first error is returned.
    pub fn detach_sandbox(&self, owner: &Owner) -> Result<()> {
        validate_name(&self.name)?;
        let alloc = self.state()?;
        // Read before taking the lock, which `leases` takes itself: the address of the lease if
        // its veth is gone. A corrupt file is rebuilt from the veths below.
        let recorded = alloc.leases().unwrap_or_default();
        let _lock = alloc.lock()?;
        let mut nft = Nftables::open()?;
        let table = table_name(owner);
        let mut tables = nft.table_list()?;
        tables.extend(nft.bridge_table_list()?);
        if tables
            .iter()
            .any(|t| t.name == table && t.is_socket_owned())
        {
            return Err(Error::InvalidValue {
                what: "sandbox to detach",
                value: table,
                reason: "its tables belong to the socket of the process that attached it, \
                         which alone can detach it",
            });
        }
        let mut nl = Netlink::open()?;
        let mut first: Option<Error> = None;
        let mut keep = |r: Result<()>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        let same = |o: &Owner| o.pid == owner.pid && o.start_time == owner.start_time;
        let recovered = alloc.reconcile_locked(&live_leases(&mut nl, &self.name)?)?;
        let veth = sandbox_veth(&mut nl, &self.name, owner)?;
        // The veth before the port guard: no frame of the sandbox's passes unguarded between.
        if let Some((name, _)) = &veth {
            keep(delete_if_present(&mut nl, name));
        }
        keep(nft.remove_sandbox(owner));
        let lease = recorded
            .into_iter()
            .find(|l| same(&l.owner))
            .or(veth.map(|(_, lease)| lease));
        if let Some(lease) = lease {
            keep(alloc.release_locked(lease.ip, &lease.owner).map(drop));
        }
        keep((|| {
            if alloc.live_leases_locked()? == 0 {
                remove_network(&mut nl, self, &alloc)?;
            }
            Ok(())
        })());
        if let Some(e) = recovered {
            keep(Err(e));
        }
        first.map_or(Ok(()), Err)
    }
}

/// The host veth on `bridge` whose alias records a lease of `owner` (by pid and start time),
/// with that lease.
fn sandbox_veth(
    nl: &mut Netlink,
    bridge: &str,
    owner: &Owner,
) -> Result<Option<(String, LeaseInfo)>> {
    let links = nl.links()?;
    let Some(br) = links.iter().find(|l| l.name == bridge) else {
        return Ok(None);
    };
    Ok(links
        .iter()
        .filter(|l| l.master == Some(br.index) && l.kind.as_deref() == Some("veth"))
        .find_map(|l| {
            let lease = parse_lease_alias(l.alias.as_deref()?)?;
            (lease.owner.pid == owner.pid && lease.owner.start_time == owner.start_time)
                .then(|| (l.name.clone(), lease))
        }))
}

/// Refuses to use an existing link that is not a bridge (giving `lo` the gateway address).
fn check_is_bridge(nl: &mut Netlink, name: &str) -> Result<()> {
    match nl.link(name)? {
        Some(link) if link.kind.as_deref() != Some("bridge") => Err(Error::NotABridge {
            name: name.to_owned(),
            kind: link.kind,
        }),
        _ => Ok(()),
    }
}

/// The alias that records a lease on the sandbox's host-side veth.
fn lease_alias(ip: IpAddr, owner: &Owner) -> String {
    format!("{LEASE_ALIAS}{ip} {} {}", owner.pid, owner.start_time)
}

/// The leases that the veths on `bridge` record in their aliases (see [`lease_alias`]), for
/// live and dead owners alike. A missing bridge has none.
fn live_leases(nl: &mut Netlink, bridge: &str) -> Result<Vec<LeaseInfo>> {
    let links = nl.links()?;
    let Some(br) = links.iter().find(|l| l.name == bridge) else {
        return Ok(Vec::new());
    };
    Ok(links
        .iter()
        .filter(|l| l.master == Some(br.index) && l.kind.as_deref() == Some("veth"))
        .filter_map(|l| parse_lease_alias(l.alias.as_deref()?))
        .collect())
}

fn parse_lease_alias(alias: &str) -> Option<LeaseInfo> {
    let mut fields = alias.strip_prefix(LEASE_ALIAS)?.split(' ');
    let ip = fields.next()?.parse().ok()?;
    let pid: u32 = fields.next()?.parse().ok()?;
    let start_time = fields.next()?.parse().ok()?;
    if fields.next().is_some() {
        return None;
    }
    Some(LeaseInfo {
        ip,
        owner: Owner {
            pid,
            start_time,
            tag: format!("sandbox {pid}"),
        },
    })
}

/// Refuses a subnet that overlaps a route of the host (its LAN, a VPN, another bridge). Routes
/// on the network's own bridge are its own, whether it was up before or another spawn made it
/// while this one looked.
fn check_routes(nl: &mut Netlink, subnet: Subnet, bridge: &str) -> Result<()> {
    for route in nl.routes(Family::V4)? {
        let Some((dst, prefix)) = route.dst else {
            continue;
        };
        if prefix == 0 || route.dev.as_deref() == Some(bridge) {
            continue;
        }
        if subnet.overlaps_network(dst, prefix) {
            return Err(Error::RouteOverlap {
                subnet,
                route: format!("{dst}/{prefix}"),
                dev: route.dev.unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// A bridge network checked, with its ports bound, ready to attach a sandbox.
#[derive(Debug)]
pub struct PreparedBridge {
    bridge: Bridge,
    alloc: Allocator,
    nl: Netlink,
    ports: Vec<BoundPort>,
    /// Whether `prepare` recorded the network, for this call only so far.
    created: bool,
    persistent: bool,
}

impl PreparedBridge {
    /// The published ports, with the host ports the kernel chose for 0.
    pub fn ports(&self) -> Vec<PortMap> {
        self.ports.iter().map(BoundPort::map).collect()
    }

    /// Makes the attachment persistent, for a sandbox that outlives its manager (`docker run
    /// -d`, see the [module documentation](self#persistent-sandboxes)): its port guard and NAT
    /// table are made without an owning socket ([`TableLifetime::Persistent`]), so they stay
    /// when this process exits, for as long as the sandbox's process runs, and no userspace
    /// forwarder is started. The published ports are served by DNAT only: a port on every
    /// address answers to other hosts, to the sandboxes of other networks and on the host's
    /// non-loopback addresses from outside the bridge, but not to connections made on the host
    /// to a loopback address; and the host ports are not held by a socket once attached.
    /// [`Attachment::release`] then lets go of the attachment without tearing it down.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the port, for a port published on a loopback address
    /// (`127.0.0.0/8`): only the forwarder can serve it. The prepared bridge is dropped then,
    /// leaving nothing behind.
    pub fn persistent(mut self) -> Result<PreparedBridge> {
        if let Some(p) = self
            .ports
            .iter()
            .map(BoundPort::map)
            .find(|p| p.host_ip.is_loopback())
        {
            if self.created {
                // As `Bridge::prepare` on error: the network was recorded for this call only.
                let _ = self.alloc.clone().remove();
            }
            return Err(Error::InvalidValue {
                what: "published port of a persistent attachment",
                value: p.to_string(),
                reason: "a port on a loopback address is served by the userspace forwarder \
                         only, which does not outlive its manager",
            });
        }
        self.persistent = true;
        Ok(self)
    }

    /// Whether the attachment will be persistent ([`PreparedBridge::persistent`]).
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Attaches the sandbox whose process is `pid` (which must already have its own network
    /// namespace): bridge, address, veth, route, port guard, NAT rules and forwarder (none for
    /// a [persistent](PreparedBridge::persistent) attachment). On error, everything done so far
    /// is undone.
    pub fn attach(self, pid: u32) -> Result<Attachment> {
        let PreparedBridge {
            bridge,
            alloc,
            mut nl,
            ports,
            created: _,
            persistent,
        } = self;
        let owner = Owner::of_pid(pid, format!("sandbox {pid}"))?;
        let maps: Vec<PortMap> = ports.iter().map(BoundPort::map).collect();
        let mut att = Attachment {
            host_veth: format!("pal-{pid}"),
            bridge,
            alloc,
            lease: None,
            owner,
            forwarder: None,
            ports: maps,
            nft: None,
            nl: None,
            persistent,
            released: false,
        };
        {
            let _lock = att.alloc.lock()?;
            // Whether or not this sandbox publishes ports: the tables of dead sandboxes must go
            // before their addresses are handed out again.
            let mut reserved = collect_tables(&att.bridge.name)?;
            // The veths are the record a damaged state file cannot lose: merge them in (the
            // corruption itself is repaired, so it does not fail the spawn), and never hand out
            // an address a live sandbox's veth claims. A dead owner's veth is on its way out
            // with its namespace (gone at the owner's exit, before it is even a zombie).
            let live = live_leases(&mut nl, &att.bridge.name)?;
            att.alloc.reconcile_locked(&live)?;
            check_isolation(&mut nl, &att.bridge)?;
            reserved.extend(live.iter().filter(|l| l.owner.is_alive()).map(|l| l.ip));
            ensure_bridge(&mut nl, &att.bridge, &att.alloc)?;
            att.lease = Some(att.alloc.allocate_locked(att.owner.clone(), &reserved)?);
            if !ports.is_empty() {
                // Checked and made under the lock, so two sandboxes never both pass the check.
                att.nft = Some(publish(&att)?);
            }
        }
        att.nl = Some(nl);
        att.wire(pid)?;
        att.guard()?;
        // A persistent attachment's ports are served by its DNAT rules only; the sockets that
        // held them since `prepare` close here.
        if !ports.is_empty() && !persistent {
            let limits = att.bridge.forwarder_limits;
            let target = Target::Addr(att.address());
            att.forwarder = Some(Forwarder::start_with_limits(ports, target, limits)?);
        }
        Ok(att)
    }
}

/// Refuses a sandbox whose [`Bridge::isolate`] differs from that of the live sandboxes on the
/// bridge (their ports' `IFLA_BRPORT_ISOLATED`). Called under the state lock, so two sandboxes
/// asking for opposite settings cannot both pass.
fn check_isolation(nl: &mut Netlink, bridge: &Bridge) -> Result<()> {
    let links = nl.links()?;
    let Some(br) = links.iter().find(|l| l.name == bridge.name) else {
        return Ok(());
    };
    let existing = links
        .iter()
        .filter(|l| l.master == Some(br.index) && l.kind.as_deref() == Some("veth"))
        .filter(|l| {
            l.alias
                .as_deref()
                .and_then(parse_lease_alias)
                .is_some_and(|lease| lease.owner.is_alive())
        })
        .find_map(|l| l.isolated);
    match existing {
        Some(isolated) if isolated != bridge.isolate => Err(Error::IsolationMismatch {
            bridge: bridge.name.clone(),
            isolated,
        }),
        _ => Ok(()),
    }
}

/// The MAC address of a sandbox's `eth0`, made from its IPv4 address (locally administered,
/// unicast: `02:50:` and the four octets), as Docker does: a later sandbox given the same
/// address gets the same MAC, so no neighbour's stale ARP entry points elsewhere, and the host
/// knows it without asking the sandbox's namespace.
fn sandbox_mac(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x50, a, b, c, d]
}

/// Refuses ports that overlap another live sandbox's (as the `published` sets of their tables
/// record them, see [`Nftables::published`]), then makes the sandbox's table. The table belongs
/// to the returned socket (unless the attachment is persistent): it is kept open in the
/// attachment, and the kernel removes the table when it is closed, whichever way this process
/// ends. Called under the state lock.
fn publish(att: &Attachment) -> Result<Nftables> {
    let ports: Vec<Published> = att
        .ports
        .iter()
        .map(|p| Published {
            proto: p.proto,
            host_ip: p.host_ip,
            host_port: p.host_port,
            port: p.port,
        })
        .collect();
    let mut nft = Nftables::open()?;
    for (table, other) in nft.published()? {
        if let Some(p) = ports.iter().find(|p| p.overlaps(&other)) {
            return Err(Error::PublishConflict {
                proto: p.proto,
                host_ip: p.host_ip,
                port: p.host_port,
                other_ip: other.host_ip,
                table,
            });
        }
    }
    let (bridge, addr) = (&att.bridge.name, att.ipv4());
    nft.add_sandbox_published_with(&att.owner, bridge, addr, &ports, att.lifetime())?;
    Ok(nft)
}

/// Creates the bridge if missing (labelled as the library's), gives it the gateway address,
/// brings it up, makes the network's nftables tables (masquerade, forward filter, isolation),
/// and turns forwarding on for the bridge and the uplinks: the replies to the sandboxes'
/// outbound traffic, and traffic to published ports, arrive on an uplink and are forwarded only
/// if that interface forwards. The forward filter keeps that from opening the sandboxes'
/// unpublished ports. Called under the state lock.
fn ensure_bridge(nl: &mut Netlink, bridge: &Bridge, alloc: &Allocator) -> Result<()> {
    let name = &bridge.name;
    let gateway = bridge.subnet.gateway();
    let prefix = bridge.subnet.prefix();
    check_is_bridge(nl, name)?;
    let owned = match nl.link(name)? {
        Some(link) => link.alias.as_deref() == Some(OWNED_ALIAS),
        None => {
            match nl.add_bridge(name) {
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                other => other?,
            }
            nl.set_alias(name, OWNED_ALIAS)?;
            true
        }
    };
    // The library's bridge carries no IPv6 (see `crate::link`): set before it first goes up,
    // and again on each attach, which also strips a bridge made by an older version. A bridge
    // the user made keeps the user's settings.
    if owned {
        disable_ipv6(name)?;
    }
    if !nl
        .addresses(name)?
        .iter()
        .any(|a| a.addr == gateway && a.prefix == prefix)
    {
        match nl.add_address(name, gateway, prefix) {
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            other => other?,
        }
    }
    nl.set_up(name)?;
    if let IpAddr::V4(net) = bridge.subnet.network() {
        let rules = NetworkRules {
            masquerade: bridge.masquerade,
            isolate: bridge.isolate,
        };
        Nftables::open()?.add_network_with(name, net, prefix, rules)?;
    }
    let mut ifaces = vec![name.clone()];
    for route in nl.routes(Family::V4)? {
        if let (None, Some(dev)) = (route.dst, route.dev) {
            ifaces.push(dev);
        }
    }
    ifaces.extend(bridge.forward_from.iter().cloned());
    let restore = restore_path(alloc);
    for iface in ifaces {
        enable_forwarding(&restore, &iface)?;
    }
    Ok(())
}

fn restore_path(alloc: &Allocator) -> PathBuf {
    alloc
        .state_dir()
        .join(format!("{}.restore", alloc.network()))
}

fn forwarding_path(iface: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
}

/// Sets `forwarding` of `iface` to 1, recording the old value in `restore` if it was not 1.
fn enable_forwarding(restore: &Path, iface: &str) -> Result<()> {
    let path = forwarding_path(iface);
    let io_err = |op| {
        let target = path.display().to_string();
        move |source| Error::Io { op, target, source }
    };
    let old = fs::read_to_string(&path).map_err(io_err("read"))?;
    let old = old.trim();
    if old == "1" {
        return Ok(());
    }
    let mut recorded = fs::read_to_string(restore).unwrap_or_default();
    if !recorded
        .lines()
        .any(|l| l.split('\t').next() == Some(iface))
    {
        recorded.push_str(&format!("{iface}\t{old}\n"));
        // Private like every file of the state directory (`crate::ipam`).
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(restore)
            .and_then(|mut f| io::Write::write_all(&mut f, recorded.as_bytes()));
        written.map_err(|source| Error::Io {
            op: "write",
            target: restore.display().to_string(),
            source,
        })?;
    }
    fs::write(&path, "1").map_err(io_err("write"))
}

/// Puts back the forwarding values recorded in `restore`, and removes the record.
fn restore_forwarding(restore: &Path) -> Result<()> {
    let recorded = match fs::read_to_string(restore) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                target: restore.display().to_string(),
                source,
            })
        }
    };
    for line in recorded.lines() {
        let Some((iface, value)) = line.split_once('\t') else {
            continue;
        };
        if validate_name(iface).is_err() || !matches!(value, "0" | "1") {
            continue;
        }
        // An interface that has gone since (the library's own bridge) needs nothing.
        match fs::write(forwarding_path(iface), value) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::Io {
                    op: "restore",
                    target: forwarding_path(iface).display().to_string(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    let _ = fs::remove_file(restore);
    Ok(())
}

/// Removes the network's part: forwarding settings, the bridge if the library made it, and the
/// allocation state. Called under the state lock, with no lease left. Returns `false`, removing
/// nothing, if a veth on the bridge still records a lease of a live sandbox (the state lost it).
fn remove_network(nl: &mut Netlink, bridge: &Bridge, alloc: &Allocator) -> Result<bool> {
    if live_leases(nl, &bridge.name)?
        .iter()
        .any(|l| l.owner.is_alive())
    {
        return Ok(false);
    }
    restore_forwarding(&restore_path(alloc))?;
    Nftables::open()?.remove_network(&bridge.name)?;
    let links = nl.links()?;
    if let Some(link) = links.iter().find(|l| l.name == bridge.name) {
        // No lease is left, so the sandbox veths still on the bridge belong to namespaces the
        // kernel has not finished destroying, or were leaked: remove them now.
        for port in links.iter().filter(|l| {
            l.master == Some(link.index)
                && l.kind.as_deref() == Some("veth")
                && l.name.starts_with("pal-")
        }) {
            delete_if_present(nl, &port.name)?;
        }
        if link.alias.as_deref() == Some(OWNED_ALIAS) {
            delete_if_present(nl, &bridge.name)?;
        }
    }
    alloc.remove_locked()?;
    Ok(true)
}

/// Deletes the link `name`; one that is gone already (removed by the kernel with its
/// namespace, or by another process) is not an error.
fn delete_if_present(nl: &mut Netlink, name: &str) -> Result<()> {
    match nl.delete_link(name) {
        Err(Error::NoSuchLink { .. }) => Ok(()),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

fn remove_stale_tables() -> Result<()> {
    Nftables::open()?.remove_stale().map(drop)
}

/// Removes the stale tables that no socket owns, and returns the sandbox addresses on `bridge`
/// that the remaining sandbox tables still send traffic to. Such a table may outlive its
/// sandbox's lease: its sandbox died, but the manager whose socket owns it has not detached
/// yet. Its address must not go to another sandbox meanwhile, or the dead one's published ports
/// would lead there.
fn collect_tables(bridge: &str) -> Result<BTreeSet<IpAddr>> {
    let mut nft = Nftables::open()?;
    nft.remove_stale()?;
    Ok(nft
        .table_list()?
        .into_iter()
        .filter_map(|t| t.dnat_to)
        .filter(|(b, _)| b == bridge)
        .map(|(_, addr)| IpAddr::V4(addr))
        .collect())
}

/// What [`gc`] and [`gc_dir`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The nftables tables removed: sandbox tables without an owning socket whose sandbox is
    /// gone (tables with an owning socket go with it, without help).
    pub tables: Vec<String>,
    /// The leases dropped because their owner is gone.
    pub leases: Vec<StaleLease>,
    /// The networks removed because no live lease was left on them: forwarding settings put
    /// back, their nftables table and the bridge (if the library made it) deleted, the state
    /// file removed.
    pub networks: Vec<String>,
    /// The networks whose state file was corrupt and was rebuilt from the live sandboxes' veths,
    /// or removed with the network when none was left (then also in `networks`).
    pub repaired: Vec<String>,
}

impl GcReport {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
            && self.leases.is_empty()
            && self.networks.is_empty()
            && self.repaired.is_empty()
    }
}

/// [`gc_dir`] for the default state directory, [`DEFAULT_STATE_DIR`].
///
/// # Errors
/// As [`gc_dir`].
pub fn gc() -> Result<GcReport> {
    gc_dir(DEFAULT_STATE_DIR)
}

/// Removes what sandboxes whose managing process died left behind, in the calling thread's
/// network namespace and the state directory `state_dir`, and reports it: the stale sandbox
/// tables without an owning socket ([`Nftables::remove_stale`]), the leases of owners that are
/// gone, and every network of the directory without a live lease (as [`Bridge::cleanup`]).
/// Live sandboxes and their networks are left alone. A missing directory holds no networks.
///
/// This holds the directory's lock, so it never removes a network another process is joining.
///
/// A corrupt state file does not stop it: the network is recovered from the kernel's view
/// (see [`GcReport::repaired`]), and the other networks are collected as usual.
///
/// # Errors
/// Netlink errors ([`Error::Netlink`]), [`Error::Io`] for the state files, and
/// [`Error::CorruptState`] only for a corrupt file that cannot be recovered (live sandboxes on a
/// bridge that lost its IPv4 address), after everything else was collected; what was removed
/// before an error stays removed.
pub fn gc_dir(state_dir: impl AsRef<Path>) -> Result<GcReport> {
    let dir = state_dir.as_ref();
    let mut report = GcReport::default();
    if !dir.is_dir() {
        report.tables = Nftables::open()?.remove_stale()?;
        return Ok(report);
    }
    let _lock = ipam::lock_dir(dir)?;
    report.tables = Nftables::open()?.remove_stale()?;
    let mut nl = None;
    let ipam::PrunedDir { networks, corrupt } = ipam::prune_dir_locked(dir)?;
    let mut unrepaired = None;
    for (network, error) in corrupt {
        let nl = match &mut nl {
            Some(nl) => nl,
            None => nl.insert(Netlink::open()?),
        };
        match repair_locked(nl, dir, &network)? {
            Some(removed) => {
                if removed {
                    report.networks.push(network.clone());
                }
                report.repaired.push(network);
            }
            None => {
                unrepaired.get_or_insert(error);
            }
        }
    }
    for pruned in networks {
        let network = pruned.network;
        report
            .leases
            .extend(pruned.dropped.into_iter().map(|lease| StaleLease {
                network: network.clone(),
                lease,
            }));
        // A state file whose name is not an interface name was not made by a bridge.
        if pruned.live > 0 || !pruned.subnet.is_ipv4() || validate_name(&network).is_err() {
            continue;
        }
        let bridge = Bridge {
            name: network.clone(),
            subnet: pruned.subnet,
            state_dir: dir.to_path_buf(),
            ..Bridge::default()
        };
        let alloc = Allocator::existing_locked(dir, &network, pruned.subnet);
        let nl = match &mut nl {
            Some(nl) => nl,
            None => nl.insert(Netlink::open()?),
        };
        if remove_network(nl, &bridge, &alloc)? {
            report.networks.push(network);
        }
    }
    match unrepaired {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Recovers the network `network` of `dir` from a corrupt state file, under the directory's
/// lock, from what the kernel still shows: the subnet from the bridge's IPv4 address, the leases
/// from its veths (see the module documentation). With live sandboxes on it, the state file is
/// rebuilt from their leases; without, the network is removed as [`Bridge::cleanup`] would.
/// Returns whether the network was removed, or `None` if it cannot be recovered: live sandboxes
/// on a bridge without an IPv4 address, whose subnet is then unknown.
fn repair_locked(nl: &mut Netlink, dir: &Path, network: &str) -> Result<Option<bool>> {
    if validate_name(network).is_err() {
        return Ok(None);
    }
    let subnet = match nl.link(network)? {
        Some(_) => nl
            .addresses(network)?
            .into_iter()
            .find_map(|a| match a.addr {
                IpAddr::V4(v4) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(a.prefix)).unwrap_or(0);
                    let net = Ipv4Addr::from(u32::from(v4) & mask);
                    Subnet::new(IpAddr::V4(net), a.prefix).ok()
                }
                IpAddr::V6(_) => None,
            }),
        None => None,
    };
    let live: Vec<LeaseInfo> = live_leases(nl, network)?
        .into_iter()
        .filter(|l| l.owner.is_alive())
        .collect();
    match (subnet, live.is_empty()) {
        (Some(subnet), false) => {
            let alloc = Allocator::existing_locked(dir, network, subnet);
            alloc.reconcile_locked(&live)?;
            Ok(Some(false))
        }
        (None, false) => Ok(None),
        (subnet, true) => {
            // Nothing lives on it: the subnet only names the network's files, which go.
            let subnet = subnet.unwrap_or(DEFAULT_SUBNET);
            let bridge = Bridge {
                name: network.to_owned(),
                subnet,
                state_dir: dir.to_path_buf(),
                ..Bridge::default()
            };
            let alloc = Allocator::existing_locked(dir, network, subnet);
            remove_network(nl, &bridge, &alloc).map(Some)
        }
    }
}

/// A sandbox attached to a bridge. Dropping it detaches the sandbox, ignoring errors; call
/// [`Attachment::detach`] to see them.
#[derive(Debug)]
pub struct Attachment {
    bridge: Bridge,
    alloc: Allocator,
    lease: Option<Lease>,
    owner: Owner,
    host_veth: String,
    forwarder: Option<Forwarder>,
    ports: Vec<PortMap>,
    /// The socket that owns the sandbox's nftables tables: its port guard, and its NAT table if
    /// it publishes ports.
    nft: Option<Nftables>,
    nl: Option<Netlink>,
    /// Whether the sandbox's tables are [`TableLifetime::Persistent`] and no forwarder runs.
    persistent: bool,
    /// Set by [`Attachment::release`]: the drop then leaves everything in place.
    released: bool,
}

impl Attachment {
    /// The sandbox's address.
    pub fn address(&self) -> IpAddr {
        self.lease
            .as_ref()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), Lease::ip)
    }

    fn ipv4(&self) -> Ipv4Addr {
        match self.address() {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The gateway (the bridge's address).
    pub fn gateway(&self) -> IpAddr {
        self.bridge.subnet.gateway()
    }

    /// The subnet's prefix length.
    pub fn prefix(&self) -> u8 {
        self.bridge.subnet.prefix()
    }

    /// The host's end of the veth pair.
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// The bridge.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// The published ports, with the host ports the kernel chose for 0.
    pub fn ports(&self) -> &[PortMap] {
        &self.ports
    }

    /// The sandbox's process (pid and start time), after which its tables
    /// ([`crate::nft::table_name`]) and its lease are named; what [`Bridge::detach_sandbox`]
    /// takes.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Whether the attachment is persistent ([`PreparedBridge::persistent`]).
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    fn lifetime(&self) -> TableLifetime {
        if self.persistent {
            TableLifetime::Persistent
        } else {
            TableLifetime::Socket
        }
    }

    /// Lets go of a persistent attachment ([`PreparedBridge::persistent`]) without tearing
    /// anything down: its tables (port guard and NAT), its veth and its lease stay, tied to the
    /// sandbox's process, and this process may exit. Returns the sandbox's [`Owner`], which
    /// [`Bridge::detach_sandbox`] takes to tear it down later, from any process, while it runs.
    /// Once its process is gone, the next attach to the bridge, [`Bridge::cleanup`],
    /// [`Bridge::gc`], [`gc`] and [`gc_dir`] collect what is left (the kernel removes the veth
    /// with the sandbox's namespace).
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for an attachment that is not persistent, whose tables would go
    /// with this handle's socket anyway: it is detached (as by dropping it) and the error
    /// returned.
    pub fn release(mut self) -> Result<Owner> {
        if !self.persistent {
            return Err(Error::InvalidValue {
                what: "attachment to release",
                value: self.host_veth.clone(),
                reason: "only a persistent attachment (PreparedBridge::persistent) outlives its \
                         handle; it was detached",
            });
        }
        if let Some(lease) = self.lease.as_mut() {
            lease.disarm();
        }
        // The tables have no owning socket: closing these sockets leaves them.
        self.nft = None;
        self.nl = None;
        self.released = true;
        Ok(self.owner.clone())
    }

    /// The veth pair and the sandbox's side: address, link up, default route.
    fn wire(&mut self, pid: u32) -> Result<()> {
        let (ip, prefix, gw) = (self.address(), self.prefix(), self.gateway());
        let mac = sandbox_mac(self.ipv4());
        let Some(nl) = self.nl.as_mut() else {
            return Ok(());
        };
        nl.add_veth_peer_mac_in(&self.host_veth, SANDBOX_LINK, pid, mac)?;
        // Recorded before the veth joins the bridge, so that every port of the bridge names
        // its lease (see the module documentation).
        nl.set_alias(&self.host_veth, &lease_alias(ip, &self.owner))?;
        // Both ends without IPv6 before they go up: no address, no router advertisement taken.
        disable_ipv6(&self.host_veth)?;
        if self.bridge.isolate {
            // Isolated before it goes up: no frame ever passes between two sandboxes.
            nl.set_master(&self.host_veth, &self.bridge.name)?;
            nl.set_port_isolated(&self.host_veth, true)?;
            nl.set_up(&self.host_veth)?;
        } else {
            nl.set_master_up(&self.host_veth, &self.bridge.name)?;
        }
        let ns_path = format!("/proc/{pid}/ns/net");
        let ns = fs::File::open(&ns_path).map_err(|source| Error::Io {
            op: "open",
            target: ns_path,
            source,
        })?;
        let mut inside = Netlink::open_in(std::os::fd::AsFd::as_fd(&ns))?;
        disable_ipv6_in(std::os::fd::AsFd::as_fd(&ns), SANDBOX_LINK)?;
        inside.add_address(SANDBOX_LINK, ip, prefix)?;
        inside.set_up(SANDBOX_LINK)?;
        inside.add_route(&Route {
            dst: None,
            gateway: Some(gw),
            dev: Some(SANDBOX_LINK.to_owned()),
        })
    }

    /// The port guard of the sandbox's veth (see [`Nftables::add_port_guard`]), in a table that
    /// belongs to the attachment's nftables socket, like the NAT table: it goes with the
    /// attachment, or with this process; a persistent attachment's stays for as long as the
    /// sandbox's process runs. Made while the sandbox's process still waits, before it can send
    /// a frame.
    fn guard(&mut self) -> Result<()> {
        let lifetime = self.lifetime();
        let guard = PortGuard {
            port: self.host_veth.clone(),
            mac: sandbox_mac(self.ipv4()),
            addr: self.ipv4(),
        };
        let nft = match &mut self.nft {
            Some(nft) => nft,
            None => self.nft.insert(Nftables::open()?),
        };
        nft.add_port_guard_with(&self.owner, &guard, lifetime)
    }

    /// Leaves everything as a manager killed with SIGKILL would: the sockets close (so the kernel
    /// removes the sandbox's nftables tables, and the forwarder stops), and nothing else is
    /// undone: the lease, the veth and the network stay for the next attach, [`Bridge::cleanup`]
    /// or [`gc`] to collect. For tests of that collection only.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.forwarder = None;
        self.nft = None;
        self.nl = None;
        if let Some(mut lease) = self.lease.take() {
            lease.disarm();
        }
        // The rest (the state file's handle) is only memory; skip the teardown of `Drop`.
        std::mem::forget(self);
    }

    /// Removes the sandbox's part (forwarder, veth, port guard and NAT table, lease) and, if it
    /// was the last sandbox on the network, the network's part; a persistent attachment too
    /// (its tables, which no socket owns, are deleted like any). Every step is tried; the first
    /// error is returned.
    pub fn detach(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.released {
            return Ok(());
        }
        let mut first: Option<Error> = None;
        let mut keep = |r: Result<()>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        self.forwarder = None;
        let nl = match self.nl.take() {
            Some(nl) => Ok(nl),
            None => Netlink::open(),
        };
        let mut nl = match nl {
            Ok(nl) => Some(nl),
            Err(e) => {
                keep(Err(e));
                None
            }
        };
        // Once the sandbox is gone the kernel removes both ends with its namespace, in the
        // background (deleting a link waits for RCU grace periods, tens of milliseconds); while
        // it runs, the veth is removed here, before its port guard, so that no frame of the
        // sandbox's passes unguarded in between.
        if let Some(nl) = nl.as_mut() {
            if self.owner.is_alive() {
                keep(delete_if_present(nl, &self.host_veth));
            }
        }
        let nft = match self.nft.take() {
            Some(nft) => Some(Ok(nft)),
            // No socket owns a persistent attachment's tables: any may delete them.
            None if self.persistent => Some(Nftables::open()),
            None => None,
        };
        if let Some(nft) = nft {
            // Only the owning socket may delete an owned table; closing it (dropping `nft`)
            // would remove it too, but this way a failure is seen.
            keep(nft.and_then(|mut nft| nft.remove_sandbox(&self.owner)));
        }
        // Without a socket, the lease's own drop releases it (it is still armed).
        if let Some(mut nl) = nl {
            if let Some(mut lease) = self.lease.take() {
                lease.disarm();
                let ip = lease.ip();
                let mut recovered = None;
                keep((|| {
                    let _lock = self.alloc.lock()?;
                    // A corrupt state is rebuilt from the veths, so that the teardown still
                    // removes what is this sandbox's and never what is a live one's; the
                    // corruption is reported once that is done.
                    recovered = self
                        .alloc
                        .reconcile_locked(&live_leases(&mut nl, &self.bridge.name)?)?;
                    if self.alloc.release_locked(ip, &self.owner)? == 0 {
                        remove_network(&mut nl, &self.bridge, &self.alloc)?;
                    }
                    Ok(())
                })());
                if let Some(e) = recovered {
                    keep(Err(e));
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}
