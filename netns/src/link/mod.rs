//! rtnetlink (`rtnetlink(7)`), synchronous: links, veth pairs, bridges, addresses and routes.
//!
//! A [`Netlink`] is a `NETLINK_ROUTE` socket. Every request is sent with `NLM_F_ACK` and a
//! sequence number, and the kernel's `NLMSG_ERROR` answer becomes an [`Error::Netlink`] naming the
//! request and its object and carrying the errno ([`Error::errno`]). Names are checked before
//! anything is sent ([`Error::InvalidValue`]); a name that does not resolve to a link becomes
//! [`Error::NoSuchLink`].
//!
//! # Namespaces
//!
//! A netlink socket acts on the network namespace it was *created* in, for its whole life, no
//! matter which namespace the thread using it is in later (`network_namespaces(7)`).
//! [`Netlink::open`] uses the caller's namespace; [`Netlink::open_in`] creates the socket in a
//! short-lived thread that joins the target namespace with `setns(2)` and exits, so the calling
//! thread never changes namespace.
//!
//! No `ip` binary is run: messages are built with `netlink-packet-route`.
//!
//! # IPv6
//!
//! No network of the library carries IPv6, so [`disable_ipv6`] and [`disable_ipv6_in`] turn it
//! off on each link the library makes before it goes up: a link with IPv6 on gets a link-local
//! address and takes the router advertisements it hears, so that one sandbox's forged
//! advertisement would give the host's bridge and the other sandboxes an address and a default
//! route. When networks configured for IPv6 are added, their links keep IPv6, and the bridge must
//! drop router advertisements and DHCPv6 server traffic coming from sandboxes instead.

mod ipv6;
mod socket;
mod thread;

pub use ipv6::{disable_ipv6, disable_ipv6_in};

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::{Error, Result};
use socket::RouteSocket;
use thread::{in_netns, setns_error};

/// A link as reported by `RTM_GETLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// Whether the link is administratively up (`IFF_UP`).
    pub up: bool,
    /// The MTU.
    pub mtu: u32,
    /// The link kind (`"veth"`, `"bridge"`, …), absent for physical and loopback devices.
    pub kind: Option<String>,
    /// The index of the bridge (or bond) this link is attached to.
    pub master: Option<u32>,
    /// The link's alias (`IFLA_IFALIAS`), a free-form label.
    pub alias: Option<String>,
    /// The link-layer (MAC) address of an Ethernet-like link (`IFLA_ADDRESS`).
    pub mac: Option<[u8; 6]>,
    /// For a bridge port: whether it is isolated (`IFLA_BRPORT_ISOLATED`, see
    /// [`Netlink::set_port_isolated`]); `None` for a link that is no bridge's port.
    pub isolated: Option<bool>,
}

/// An address on a link, as reported by `RTM_GETADDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

/// The address family of a route listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

/// A route in the main table. For [`Netlink::add_route`] and [`Netlink::del_route`], `dev` is a
/// link name; in [`Netlink::routes`], it is the name of the output link if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination network; `None` is the default route (`0.0.0.0/0` or `::/0`).
    pub dst: Option<(IpAddr, u8)>,
    /// The next hop.
    pub gateway: Option<IpAddr>,
    /// The output link.
    pub dev: Option<String>,
}

/// A synchronous `NETLINK_ROUTE` socket bound to one network namespace.
#[derive(Debug)]
pub struct Netlink {
    sock: RouteSocket,
}

/// Checks an interface name: 1 to 15 bytes (`IFNAMSIZ` - 1), no `/`, `:`, NUL or whitespace, not
/// `.` or `..` (as the kernel's `dev_valid_name`), so that a bad name fails before anything is
/// sent, with [`Error::InvalidValue`].
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidValue {
            what: "link name",
            value: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not link names");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.contains(':') {
        return bad("contains ':'");
    }
    if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        return bad("contains whitespace or NUL");
    }
    Ok(())
}

fn check_prefix(addr: IpAddr, prefix: u8) -> Result<()> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(Error::InvalidValue {
            what: "prefix length",
            value: format!("{addr}/{prefix}"),
            reason: "longer than the address",
        });
    }
    Ok(())
}

fn family_of(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_addr(addr: IpAddr) -> RouteAddress {
    match addr {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn from_route_addr(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn parse_link(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        up: msg.header.flags.contains(LinkFlags::Up),
        mtu: 0,
        kind: None,
        master: None,
        alias: None,
        mac: None,
        isolated: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name = n.clone(),
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::Controller(m) => info.master = Some(*m),
            LinkAttribute::IfAlias(a) => info.alias = Some(a.clone()),
            LinkAttribute::Address(a) => info.mac = a.as_slice().try_into().ok(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        NlLinkInfo::Kind(k) => info.kind = Some(k.to_string()),
                        NlLinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            info.isolated = port.iter().find_map(|p| match p {
                                InfoBridgePort::Isolated(on) => Some(*on),
                                _ => None,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info
}

impl Netlink {
    /// Opens a `NETLINK_ROUTE` socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        Ok(Netlink {
            sock: RouteSocket::open()?,
        })
    }

    /// Opens a `NETLINK_ROUTE` socket in the network namespace `netns_fd` refers to (a
    /// `/proc/<pid>/ns/net` file, a bind mount of one, or a pidfd on Linux ≥ 5.8).
    ///
    /// A short-lived thread joins that namespace with `setns(fd, CLONE_NEWNET)` (`setns(2)`),
    /// creates the socket and exits; the calling thread's namespace never changes. The socket
    /// stays bound to the namespace it was created in (`network_namespaces(7)`), and keeps that
    /// namespace alive while it is open.
    pub fn open_in(netns_fd: BorrowedFd<'_>) -> Result<Netlink> {
        let sock = in_netns(netns_fd, RouteSocket::open).map_err(setns_error(netns_fd))??;
        Ok(Netlink { sock })
    }

    /// The index of the link `name`, or `None` if there is no such link.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>> {
        validate_name(name)?;
        let request = format!("RTM_GETLINK {name}");
        // The dump of all links: one exchange, no ENODEV to tell apart from real failures.
        Ok(self
            .dump_links(&request)?
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.index))
    }

    fn dump_links(&mut self, request: &str) -> Result<Vec<LinkInfo>> {
        let replies = self.sock.dump(
            request,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    fn resolve(&mut self, name: &str, request: &str) -> Result<u32> {
        self.link_index(name)?.ok_or_else(|| Error::NoSuchLink {
            request: request.to_owned(),
            name: name.to_owned(),
        })
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>> {
        self.dump_links("RTM_GETLINK (dump)")
    }

    /// The link `name`, if it exists.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>> {
        validate_name(name)?;
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    fn set_link(
        &mut self,
        name: &str,
        what: &str,
        edit: impl FnOnce(&mut LinkMessage),
    ) -> Result<()> {
        let request = format!("RTM_NEWLINK {what} {name}");
        let index = self.resolve(name, &request)?;
        let mut msg = link_msg(index);
        edit(&mut msg);
        self.sock
            .request(&request, RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Brings `name` up (`IFF_UP`).
    pub fn set_up(&mut self, name: &str) -> Result<()> {
        self.set_link(name, "up", |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Brings `name` down.
    pub fn set_down(&mut self, name: &str) -> Result<()> {
        self.set_link(name, "down", |m| {
            m.header.flags = LinkFlags::empty();
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Sets the MTU of `name`.
    pub fn set_mtu(&mut self, name: &str, mtu: u32) -> Result<()> {
        self.set_link(name, &format!("mtu {mtu}"), |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    /// Attaches `link` to the bridge `bridge` (`IFLA_MASTER`).
    pub fn set_master(&mut self, link: &str, bridge: &str) -> Result<()> {
        let request = format!("RTM_NEWLINK master {bridge} {link}");
        validate_name(link)?;
        let master = self.resolve(bridge, &request)?;
        self.set_link(link, &format!("master {bridge}"), |m| {
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    /// Sets the alias of `link` (`IFLA_IFALIAS`), at most 255 bytes.
    pub fn set_alias(&mut self, link: &str, alias: &str) -> Result<()> {
        if alias.len() > 255 || alias.contains('\0') {
            return Err(Error::InvalidValue {
                what: "link alias",
                value: alias.to_owned(),
                reason: "longer than 255 bytes or contains NUL",
            });
        }
        self.set_link(link, "alias", |m| {
            m.attributes.push(LinkAttribute::IfAlias(alias.to_owned()))
        })
    }

    /// Attaches `link` to the bridge `bridge` and brings it up, in one request.
    pub fn set_master_up(&mut self, link: &str, bridge: &str) -> Result<()> {
        let request = format!("RTM_NEWLINK master {bridge} up {link}");
        validate_name(link)?;
        let master = self.resolve(bridge, &request)?;
        self.set_link(link, &format!("master {bridge} up"), |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
            m.attributes.push(LinkAttribute::Controller(master))
        })
    }

    /// Sets whether the bridge port `link` is isolated (`IFLA_BRPORT_ISOLATED`, Linux 4.18; as
    /// `ip link set <link> type bridge_slave isolated on`): the bridge forwards no frame between
    /// two isolated ports, while each still reaches the bridge itself and the ports that are not
    /// isolated. `link` must already be attached to a bridge (the kernel hands the request to
    /// its master, and answers `EOPNOTSUPP` otherwise).
    pub fn set_port_isolated(&mut self, link: &str, on: bool) -> Result<()> {
        let what = if on { "isolated on" } else { "isolated off" };
        let request = format!("RTM_NEWLINK bridge_slave {what} {link}");
        let index = self.resolve(link, &request)?;
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::Isolated(on)])),
        ]));
        // RTM_NEWLINK on an existing link, without NLM_F_CREATE: only that request type hands
        // port data to the master's `slave_changelink`; RTM_SETLINK ignores IFLA_LINKINFO.
        self.sock
            .request(&request, RouteNetlinkMessage::NewLink(msg), 0)
    }

    /// Detaches `link` from its bridge.
    pub fn set_nomaster(&mut self, link: &str) -> Result<()> {
        self.set_link(link, "nomaster", |m| {
            m.attributes.push(LinkAttribute::Controller(0))
        })
    }

    /// Renames `link` to `new`. Bring the link down first: older kernels refuse (`EBUSY`) to
    /// rename a link that is up (6.18 allows it). A link moved into another namespace arrives
    /// down, so renaming it to `eth0` there right after the move works everywhere.
    pub fn rename(&mut self, link: &str, new: &str) -> Result<()> {
        validate_name(new)?;
        self.set_link(link, &format!("rename to {new}"), |m| {
            m.attributes.push(LinkAttribute::IfName(new.to_owned()))
        })
    }

    /// Moves `link` into the network namespace `netns_fd` refers to (`IFLA_NET_NS_FD`). The fd
    /// must be a namespace fd: the kernel refuses a pidfd here with `EINVAL` (checked on 6.18),
    /// use [`Netlink::move_to_pidfd`] for those. The link goes down and loses its addresses on
    /// the way.
    pub fn move_to_netns_fd(&mut self, link: &str, netns_fd: BorrowedFd<'_>) -> Result<()> {
        let fd = netns_fd.as_raw_fd();
        self.set_link(link, &format!("netns fd {fd}"), |m| {
            m.attributes.push(LinkAttribute::NetNsFd(fd))
        })
    }

    /// Moves `link` into the network namespace of the process `pidfd` refers to. The kernel does
    /// not take a pidfd in `IFLA_NET_NS_FD` (6.18 answers `EINVAL`), so a short-lived thread
    /// joins that namespace with `setns(pidfd, CLONE_NEWNET)` (Linux ≥ 5.8), opens
    /// `/proc/thread-self/ns/net`, and that namespace fd is used instead.
    pub fn move_to_pidfd(&mut self, link: &str, pidfd: BorrowedFd<'_>) -> Result<()> {
        let nsfd = netns_fd_of(pidfd)?;
        self.move_to_netns_fd(link, nsfd.as_fd())
    }

    /// Moves `link` into the network namespace of process `pid` (`IFLA_NET_NS_PID`).
    pub fn move_to_pid(&mut self, link: &str, pid: u32) -> Result<()> {
        self.set_link(link, &format!("netns pid {pid}"), |m| {
            m.attributes.push(LinkAttribute::NetNsPid(pid))
        })
    }

    fn new_link(&mut self, request: &str, msg: LinkMessage) -> Result<()> {
        self.sock.request(
            request,
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates the veth pair `name` ↔ `peer`, both down, in this namespace. An existing name
    /// gives `EEXIST`.
    pub fn add_veth(&mut self, name: &str, peer: &str) -> Result<()> {
        validate_name(name)?;
        validate_name(peer)?;
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.new_link(&format!("RTM_NEWLINK veth {name}/{peer}"), msg)
    }

    /// Creates the veth pair `name` ↔ `peer` with `peer` created directly in the network
    /// namespace of process `pid` (`IFLA_NET_NS_PID` in the peer's attributes), so that no
    /// rename or move is needed after. Both ends start down.
    pub fn add_veth_peer_in(&mut self, name: &str, peer: &str, pid: u32) -> Result<()> {
        self.veth_peer_in(name, peer, pid, None)
    }

    /// [`Netlink::add_veth_peer_in`] with the peer's MAC address set to `peer_mac` (which must be
    /// a unicast address: the kernel refuses others with `EADDRNOTAVAIL`), so the host knows
    /// the sandbox end's address without asking its namespace.
    pub fn add_veth_peer_mac_in(
        &mut self,
        name: &str,
        peer: &str,
        pid: u32,
        peer_mac: [u8; 6],
    ) -> Result<()> {
        self.veth_peer_in(name, peer, pid, Some(peer_mac))
    }

    fn veth_peer_in(
        &mut self,
        name: &str,
        peer: &str,
        pid: u32,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        validate_name(name)?;
        validate_name(peer)?;
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        peer_msg.attributes.push(LinkAttribute::NetNsPid(pid));
        if let Some(mac) = peer_mac {
            peer_msg
                .attributes
                .push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.new_link(
            &format!("RTM_NEWLINK veth {name}/{peer} (peer in pid {pid})"),
            msg,
        )
    }

    /// Creates the bridge `name`, down. An existing name gives `EEXIST`.
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        validate_name(name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.new_link(&format!("RTM_NEWLINK bridge {name}"), msg)
    }

    /// Deletes the link `name` (deleting one end of a veth pair deletes both).
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        let request = format!("RTM_DELLINK {name}");
        let index = self.resolve(name, &request)?;
        self.sock
            .request(&request, RouteNetlinkMessage::DelLink(link_msg(index)), 0)
    }

    fn addr_msg(
        &mut self,
        link: &str,
        addr: IpAddr,
        prefix: u8,
        request: &str,
    ) -> Result<AddressMessage> {
        check_prefix(addr, prefix)?;
        let index = self.resolve(link, request)?;
        let mut msg = AddressMessage::default();
        msg.header.family = family_of(addr);
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.header.scope = if addr.is_loopback() {
            AddressScope::Host
        } else {
            AddressScope::Universe
        };
        msg.attributes.push(AddressAttribute::Address(addr));
        if addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(addr));
        }
        Ok(msg)
    }

    /// Adds `addr/prefix` to `link`. IPv6 addresses skip duplicate address detection
    /// (`IFA_F_NODAD`) so that they are usable at once.
    pub fn add_address(&mut self, link: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let request = format!("RTM_NEWADDR {addr}/{prefix} dev {link}");
        let mut msg = self.addr_msg(link, addr, prefix, &request)?;
        if addr.is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.sock.request(
            &request,
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes `addr/prefix` from `link`.
    pub fn del_address(&mut self, link: &str, addr: IpAddr, prefix: u8) -> Result<()> {
        let request = format!("RTM_DELADDR {addr}/{prefix} dev {link}");
        let msg = self.addr_msg(link, addr, prefix, &request)?;
        self.sock
            .request(&request, RouteNetlinkMessage::DelAddress(msg), 0)
    }

    /// The IPv4 and IPv6 addresses of `link` (IPv6 link-local ones included).
    pub fn addresses(&mut self, link: &str) -> Result<Vec<Address>> {
        let request = format!("RTM_GETADDR dev {link}");
        let index = self.resolve(link, &request)?;
        let replies = self.sock.dump(
            &request,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(m) = reply else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL the local address.
            let mut address = None;
            let mut local = None;
            for attr in &m.attributes {
                match attr {
                    AddressAttribute::Address(a) => address = Some(*a),
                    AddressAttribute::Local(a) => local = Some(*a),
                    _ => {}
                }
            }
            if let Some(addr) = local.or(address) {
                out.push(Address {
                    addr,
                    prefix: m.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    fn route_msg(&mut self, route: &Route, request: &str) -> Result<RouteMessage> {
        let family = match (route.dst, route.gateway) {
            (Some((d, _)), Some(g)) if d.is_ipv4() != g.is_ipv4() => {
                return Err(Error::InvalidValue {
                    what: "route",
                    value: format!("{route:?}"),
                    reason: "destination and gateway of different families",
                })
            }
            (Some((d, _)), _) => d,
            (None, Some(g)) => g,
            (None, None) => {
                return Err(Error::InvalidValue {
                    what: "route",
                    value: format!("{route:?}"),
                    reason: "a default route needs a gateway",
                })
            }
        };
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(family);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if route.gateway.is_none() {
            RouteScope::Link
        } else {
            RouteScope::Universe
        };
        if let Some((dst, prefix)) = route.dst {
            check_prefix(dst, prefix)?;
            msg.header.destination_prefix_length = prefix;
            msg.attributes
                .push(RouteAttribute::Destination(route_addr(dst)));
        }
        if let Some(gw) = route.gateway {
            msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
        }
        if let Some(dev) = &route.dev {
            let index = self.resolve(dev, request)?;
            msg.attributes.push(RouteAttribute::Oif(index));
        }
        Ok(msg)
    }

    /// Adds `route` to the main table; `dst: None` is the default route.
    pub fn add_route(&mut self, route: &Route) -> Result<()> {
        let request = format!("RTM_NEWROUTE {}", describe(route));
        let msg = self.route_msg(route, &request)?;
        self.sock.request(
            &request,
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes `route` from the main table.
    pub fn del_route(&mut self, route: &Route) -> Result<()> {
        let request = format!("RTM_DELROUTE {}", describe(route));
        let mut msg = self.route_msg(route, &request)?;
        // Match any protocol and scope (RTPROT_UNSPEC, RT_SCOPE_NOWHERE means "any" for delete).
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
        self.sock
            .request(&request, RouteNetlinkMessage::DelRoute(msg), 0)
    }

    /// The unicast routes of the main table for `family`.
    pub fn routes(&mut self, family: Family) -> Result<Vec<Route>> {
        let request = format!("RTM_GETROUTE {family:?} (dump)");
        let links = self.dump_links(&request)?;
        let mut q = RouteMessage::default();
        q.header.address_family = match family {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        };
        let replies = self.sock.dump(&request, RouteNetlinkMessage::GetRoute(q))?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(m) = reply else {
                continue;
            };
            if m.header.kind != RouteType::Unicast || m.header.address_family != q_family(family) {
                continue;
            }
            let mut table = u32::from(m.header.table);
            let mut route = Route {
                dst: None,
                gateway: None,
                dev: None,
            };
            for attr in &m.attributes {
                match attr {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(a) => {
                        route.dst =
                            from_route_addr(a).map(|a| (a, m.header.destination_prefix_length))
                    }
                    RouteAttribute::Gateway(a) => route.gateway = from_route_addr(a),
                    RouteAttribute::Oif(i) => {
                        route.dev = links.iter().find(|l| l.index == *i).map(|l| l.name.clone())
                    }
                    _ => {}
                }
            }
            if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                out.push(route);
            }
        }
        Ok(out)
    }
}

/// A namespace fd for the network namespace of `fd` (a namespace fd or a pidfd), obtained in a
/// short-lived thread that `setns(2)`es into it and opens `/proc/thread-self/ns/net`.
fn netns_fd_of(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    let path = "/proc/thread-self/ns/net";
    let opened = in_netns(fd, || std::fs::File::open(path)).map_err(setns_error(fd))?;
    opened.map(OwnedFd::from).map_err(|source| Error::Io {
        op: "open",
        target: path.to_owned(),
        source,
    })
}

fn q_family(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

fn describe(route: &Route) -> String {
    let mut s = match route.dst {
        Some((a, p)) => format!("{a}/{p}"),
        None => "default".to_owned(),
    };
    if let Some(g) = route.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if let Some(d) = &route.dev {
        s.push_str(&format!(" dev {d}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("pal-a").is_ok());
        assert!(validate_name("123456789012345").is_ok());
        for bad in [
            "",
            "1234567890123456",
            ".",
            "..",
            "a/b",
            "a b",
            "a\tb",
            "a:b",
        ] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidValue { .. })),
                "{bad:?}"
            );
        }
    }
}
