//! nftables over netlink (`NETLINK_NETFILTER`, the `nf_tables` subsystem), synchronous and
//! without the `nft` binary: the NAT rules of a sandbox on a bridge.
//!
//! Two kinds of tables, both in the `ip` family:
//!
//! - one per bridge network, `palisade-net-<bridge>`, made with the network and removed with it:
//!   chain `postrouting` (type nat, hook postrouting, priority srcnat = 100) with
//!   `ip saddr <subnet> oifname != <bridge> masquerade`, so the sandboxes' outbound traffic
//!   leaves with the host's address. Sandboxes come and go without touching it;
//! - one per sandbox that publishes ports, `palisade-<pid>-<start>` after the sandbox process's
//!   pid and start time (see [`Owner`]): chain `prerouting` (type nat, hook prerouting, priority
//!   dstnat = -100), one rule per port: `iifname != <bridge> fib daddr type local
//!   meta l4proto <proto> th dport <host port> dnat to <sandbox>:<port>`, so traffic from
//!   outside addressed to one of the host's own addresses reaches the sandbox.
//!
//! - one per sandbox on a bridge, in the `bridge` family, of the same name: chain `guard` (type
//!   filter, hook prerouting, priority -300) that drops every frame from the sandbox's port that
//!   is not its own ([`Nftables::add_port_guard`]).
//!
//! A table is created with everything in it in one batch (`NFNL_MSG_BATCH_BEGIN` … `END`), which
//! the kernel applies atomically: either all of it exists or none of it. Removing the table
//! removes its chains and rules with it, so teardown is one message.
//!
//! # Lifetime of a sandbox's table
//!
//! A sandbox's table is created with the owner flag (`NFT_TABLE_F_OWNER`, Linux 5.12): it then
//! belongs to the netlink socket that created it, the [`Nftables`] value of
//! [`Nftables::add_sandbox`]. Only that socket may change or delete it, and the kernel deletes it
//! when that socket is closed, which happens when the managing process exits for any reason,
//! SIGKILL included. So the DNAT rules of a sandbox whose manager died can never redirect a
//! published port to the next sandbox that is given the same address. The socket is
//! close-on-exec, so a program the manager executes does not keep the table alive.
//!
//! Tables without the flag (the network tables, the tables of a persistent sandbox, see
//! [`TableLifetime::Persistent`], and sandbox tables made by older versions) stay until removed:
//! [`Nftables::remove_stale`] removes the sandbox tables among them, of both families, whose
//! sandbox process is gone. Owned tables of other sockets cannot be deleted from here (`EPERM`)
//! and need not be: they go with their socket.
//!
//! A persistent sandbox (`docker run -d`, [`crate::PreparedBridge::persistent`]) must keep its
//! port guard after its manager exits, for as long as its own process runs: its tables are made
//! without the flag, and are tied to the sandbox's process instead, by their name (pid and start
//! time): nothing removes them while it lives but an explicit teardown, and every collection
//! removes them once it is gone.
//!
//! The message layout follows `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`; numbers below are from those headers.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::ipam::Owner;
// Re-exported here too, where it first lived: `palisade_netns::nft::Proto` stays a path.
pub use crate::proto::Proto;
use crate::{Error, Result};

/// Prefix of the tables this module creates.
pub const TABLE_PREFIX: &str = "palisade-";

// nfnetlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_IPV4: u8 = 2;
// nf_tables.h: message types
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFPROTO_BRIDGE: u8 = 7;
// sets (nf_tables.h: enum nft_set_attributes, nft_set_elem_list_attributes, ...)
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFT_SET_MAP: u32 = 0x8;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
/// The element count of one `NFT_MSG_NEWSETELEM` message: a few kilobytes each, so that no
/// single message nears the socket's buffer sizes however many ports a sandbox publishes.
const ELEMS_PER_MSG: usize = 128;
// The type numbers `nft` shows the keys with (its datatypes: ipv4_addr 7, inet_proto 12,
// inet_service 13; a concatenation shifts each by 6 bits). The kernel stores them only.
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_PROTO_SERVICE: u32 = (12 << 6) | 13;
const TYPE_ADDR_PROTO_SERVICE: u32 = (((7 << 6) | 12) << 6) | 13;
// attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_TABLE_USERDATA: u16 = 6;
const NFTA_TABLE_OWNER: u16 = 7;
/// Start of the user data of a sandbox table: bridge and address follow, space-separated.
const USERDATA_TAG: &str = "palisade-netns dnat";
/// `NFT_TABLE_F_OWNER`: the table belongs to the netlink socket that created it.
const NFT_TABLE_F_OWNER: u32 = 1 << 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
// netfilter hooks and verdicts
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const PRIORITY_FILTER: i32 = 0;
/// `NF_BR_PRE_ROUTING`: every frame that enters a bridge through one of its ports, whether it is
/// then forwarded to another port or delivered to the bridge itself.
const NF_BR_PRE_ROUTING: u32 = 0;
/// Before the bridge family's own filter priority (-200), so that no later chain sees a forged
/// frame.
const PRIORITY_BRIDGE_GUARD: i32 = -300;
const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const ETH_P_ARP: [u8; 2] = [0x08, 0x06];
/// The fixed start of an Ethernet/IPv4 ARP packet (`arp(7)`): hardware type 1, protocol type
/// IPv4, address lengths 6 and 4.
const ARP_ETHER_IPV4: [u8; 6] = [0, 1, 0x08, 0x00, 6, 4];
const PRIORITY_DSTNAT: i32 = -100;
const PRIORITY_SRCNAT: i32 = 100;
// registers (the 16-byte ones)
const NFT_REG_1: u32 = 1;
const NFT_REG_2: u32 = 2;
const NFT_REG_VERDICT: u32 = 0;
/// The first 4-byte register (`NFT_REG32_00`): concatenated keys fill consecutive ones.
const NFT_REG32_00: u32 = 8;
// expressions' attributes and values
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_CT_STATUS: u32 = 2;
/// `NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED)`.
const CT_STATE_ESTABLISHED_RELATED: u32 = (1 << 1) | (1 << 2);
/// `IPS_DST_NAT` (`nf_conntrack_common.h`): the connection was destination-NATed.
const IPS_DST_NAT: u32 = 1 << 5;
const NFT_PAYLOAD_LL_HEADER: u32 = 0;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_NAT_DNAT: u32 = 1;
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 1 << 1;
const RTN_LOCAL: u32 = 2;
const IFNAMSIZ: usize = 16;

/// One destination NAT of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dnat {
    /// The protocol.
    pub proto: Proto,
    /// The port on the host.
    pub host_port: u16,
    /// The port in the sandbox.
    pub port: u16,
}

/// The published ports of one sandbox on a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNat {
    /// The bridge the sandbox is attached to.
    pub bridge: String,
    /// The sandbox's address.
    pub addr: Ipv4Addr,
    /// The published ports.
    pub dnat: Vec<Dnat>,
}

/// One published port with the host address it is published on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Published {
    /// The protocol.
    pub proto: Proto,
    /// The host address; `0.0.0.0` is every local address.
    pub host_ip: Ipv4Addr,
    /// The port on the host.
    pub host_port: u16,
    /// The port in the sandbox.
    pub port: u16,
}

impl From<Dnat> for Published {
    fn from(d: Dnat) -> Published {
        Published {
            proto: d.proto,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: d.host_port,
            port: d.port,
        }
    }
}

impl Published {
    /// Whether `self` and `other` claim the same traffic: the same protocol and host port, on
    /// the same address or with either on every address.
    pub fn overlaps(&self, other: &Published) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }

    /// The key of the `published` set: address, protocol, port, each in a 4-byte register.
    fn key(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..4].copy_from_slice(&self.host_ip.octets());
        k[4] = self.proto.number();
        k[8..10].copy_from_slice(&self.host_port.to_be_bytes());
        k
    }

    fn from_key(k: &[u8]) -> Option<Published> {
        let k: &[u8; 12] = k.get(..12)?.try_into().ok()?;
        let proto = Proto::from_number(k[4])?;
        Some(Published {
            proto,
            host_ip: Ipv4Addr::new(k[0], k[1], k[2], k[3]),
            host_port: u16::from_be_bytes([k[8], k[9]]),
            port: 0,
        })
    }
}

/// What one sandbox's bridge port may send (see [`Nftables::add_port_guard`]): frames from its
/// own MAC address, ARP for its own addresses, and IPv4 from its own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    /// The host-side link of the sandbox, a port of the bridge.
    pub port: String,
    /// The MAC address of the sandbox's end of the link.
    pub mac: [u8; 6],
    /// The sandbox's IPv4 address.
    pub addr: Ipv4Addr,
}

/// What a network's table holds besides masquerading (see [`Nftables::add_network_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkRules {
    /// Masquerade the subnet's outbound traffic.
    pub masquerade: bool,
    /// Drop what a sandbox routes through the host back to its own bridge. Frames the bridge
    /// switches between two of its sandboxes are stopped at layer 2 instead, by isolating their
    /// ports ([`crate::link::Netlink::set_port_isolated`]; [`crate::Bridge::isolate`] does both).
    pub isolate: bool,
}

/// The name of the table of the bridge network `bridge`.
pub fn network_table_name(bridge: &str) -> String {
    format!("{TABLE_PREFIX}net-{bridge}")
}

/// The name of the table of the sandbox `owner`.
pub fn table_name(owner: &Owner) -> String {
    format!("{TABLE_PREFIX}{}-{}", owner.pid, owner.start_time)
}

/// The owner a table name encodes, without its tag; `None` for other tables.
fn table_owner(name: &str) -> Option<Owner> {
    let rest = name.strip_prefix(TABLE_PREFIX)?;
    let (pid, start) = rest.split_once('-')?;
    Some(Owner {
        pid: pid.parse().ok()?,
        start_time: start.parse().ok()?,
        tag: String::new(),
    })
}

/// One `palisade-*` table of the `ip` family, as [`Nftables::table_list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// The table's name.
    pub name: String,
    /// The table's flags (`NFTA_TABLE_FLAGS`, e.g. `NFT_TABLE_F_OWNER` = 2).
    pub flags: u32,
    /// The netlink port id of the socket that owns the table, for a table made with the owner
    /// flag; the kernel deletes such a table when that socket is closed.
    pub owner_port: Option<u32>,
    /// For a sandbox's table: the bridge and the sandbox address its rules send traffic to, as
    /// recorded in the table's user data (`NFTA_TABLE_USERDATA`) when it was made.
    pub dnat_to: Option<(String, Ipv4Addr)>,
}

impl TableInfo {
    /// Whether the table belongs to a netlink socket (and goes when that socket is closed).
    pub fn is_socket_owned(&self) -> bool {
        self.flags & NFT_TABLE_F_OWNER != 0
    }

    /// The sandbox the table was made for, if it is a sandbox's table (`palisade-<pid>-<start>`);
    /// the returned [`Owner`] has an empty tag.
    pub fn sandbox(&self) -> Option<Owner> {
        table_owner(&self.name)
    }
}

/// How long a sandbox's table lives (see the [module documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableLifetime {
    /// Owned by the socket that creates it (`NFT_TABLE_F_OWNER`, Linux 5.12): only that socket
    /// may change or delete it, and the kernel deletes it when that socket is closed, whichever
    /// way the process ends.
    #[default]
    Socket,
    /// Without the owner flag: the table stays when the socket is closed, until it is deleted
    /// (by any socket of the namespace with `CAP_NET_ADMIN`), which [`Nftables::remove_stale`]
    /// does once the table's sandbox process is gone.
    Persistent,
}

impl TableLifetime {
    /// The table flags (`NFTA_TABLE_FLAGS`) of this lifetime.
    fn flags(self) -> u32 {
        match self {
            TableLifetime::Socket => NFT_TABLE_F_OWNER,
            TableLifetime::Persistent => 0,
        }
    }
}

/// A `NETLINK_NETFILTER` socket, bound to the network namespace it was created in, and
/// close-on-exec. The sandbox tables it creates ([`Nftables::add_sandbox`]) belong to it: keep it
/// open for as long as they must exist.
#[derive(Debug)]
pub struct Nftables {
    socket: Socket,
    seq: u32,
}

impl Nftables {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Nftables> {
        let what = "socket(NETLINK_NETFILTER)";
        let err = |source| Error::Netlink {
            request: what.to_owned(),
            source,
        };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(err)?;
        socket.bind_auto().map_err(err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
        Ok(Nftables { socket, seq: 0 })
    }

    /// Creates the table of the bridge network `bridge`: masquerade of the outbound traffic of
    /// `subnet` (IPv4) and the forward filter; as [`Nftables::add_network_with`] with
    /// masquerading on and the sandboxes not isolated.
    pub fn add_network(&mut self, bridge: &str, subnet: Ipv4Addr, prefix: u8) -> Result<()> {
        let rules = NetworkRules {
            masquerade: true,
            isolate: false,
        };
        self.add_network_with(bridge, subnet, prefix, rules)
    }

    /// Creates, or replaces atomically, the tables of the bridge network `bridge`:
    ///
    /// - `ip palisade-net-<bridge>`: chain `postrouting` (nat) masquerading what `subnet` sends
    ///   out of other interfaces, if `rules.masquerade`; chain `forward` (filter, hook forward,
    ///   priority 0) for what is routed to the bridge: established and related traffic and
    ///   destination-NATed flows (the published ports) pass, so does, unless `rules.isolate`,
    ///   traffic routed from the bridge back to it; everything else routed to the bridge is
    ///   dropped. What the bridge's sandboxes send elsewhere is not this chain's concern, but
    ///   another network's chain drops it when it goes to that network's bridge: networks are
    ///   isolated from each other, and a LAN peer that routes the subnet through the host
    ///   reaches no port that is not published.
    /// - `bridge palisade-net-<bridge>`: removed if present (made by an earlier development
    ///   version). `rules.isolate` covers traffic routed through the host; frames the bridge
    ///   switches between two sandboxes are stopped by port isolation, not here.
    ///
    /// Replacing (rather than keeping an existing table) brings a network made by an older
    /// version up to date; the kernel applies the batch at once, so no packet sees a gap.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad bridge name; [`Error::Netlink`] with the kernel's errno.
    pub fn add_network_with(
        &mut self,
        bridge: &str,
        subnet: Ipv4Addr,
        prefix: u8,
        rules: NetworkRules,
    ) -> Result<()> {
        crate::link::validate_name(bridge)?;
        let table = network_table_name(bridge);
        let request = format!("nftables: create table ip {table}");
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        let ifname = ifname_bytes(bridge);
        let mut batch = Batch::new(&mut self.seq);
        // Create-if-missing then delete: the delete never fails, and what follows starts afresh.
        batch.push_in(NFPROTO_IPV4, NFT_MSG_NEWTABLE, NLM_F_CREATE, |m| {
            m.str(NFTA_TABLE_NAME, &table)
        });
        batch.push(NFT_MSG_DELTABLE, 0, |m| m.str(NFTA_TABLE_NAME, &table));
        batch.table(&table);
        if rules.masquerade {
            batch.chain(&table, "postrouting", NF_INET_POST_ROUTING, PRIORITY_SRCNAT);
            batch.rule(&table, "postrouting", |e| {
                e.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
                e.bitwise(&mask.to_be_bytes());
                e.cmp(NFT_CMP_EQ, &(u32::from(subnet) & mask).to_be_bytes());
                e.meta(NFT_META_OIFNAME);
                e.cmp(NFT_CMP_NEQ, &ifname);
                e.expr("masq", |_| {});
            });
        }
        batch.filter_chain(NFPROTO_IPV4, &table, "forward", NF_INET_FORWARD);
        batch.rule(&table, "forward", |e| {
            e.meta(NFT_META_OIFNAME);
            e.cmp(NFT_CMP_NEQ, &ifname);
            e.verdict(NF_ACCEPT);
        });
        batch.rule(&table, "forward", |e| {
            e.ct(NFT_CT_STATE);
            e.bitwise(&CT_STATE_ESTABLISHED_RELATED.to_ne_bytes());
            e.cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes());
            e.verdict(NF_ACCEPT);
        });
        batch.rule(&table, "forward", |e| {
            e.ct(NFT_CT_STATUS);
            e.bitwise(&IPS_DST_NAT.to_ne_bytes());
            e.cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes());
            e.verdict(NF_ACCEPT);
        });
        if !rules.isolate {
            batch.rule(&table, "forward", |e| {
                e.meta(NFT_META_IIFNAME);
                e.cmp(NFT_CMP_EQ, &ifname);
                e.verdict(NF_ACCEPT);
            });
        }
        batch.rule(&table, "forward", |e| e.verdict(NF_DROP));
        batch.push_in(NFPROTO_BRIDGE, NFT_MSG_NEWTABLE, NLM_F_CREATE, |m| {
            m.str(NFTA_TABLE_NAME, &table)
        });
        batch.push_in(NFPROTO_BRIDGE, NFT_MSG_DELTABLE, 0, |m| {
            m.str(NFTA_TABLE_NAME, &table)
        });
        let batch = batch.finish();
        self.commit(&request, batch)
    }

    /// Removes the tables of the bridge network `bridge`; tables already gone are not an error.
    pub fn remove_network(&mut self, bridge: &str) -> Result<()> {
        let table = network_table_name(bridge);
        self.delete_table(&table)?;
        self.delete_table_in(NFPROTO_BRIDGE, &table)
    }

    /// Creates the table of `owner` with the DNAT rules of its published ports, atomically, owned
    /// by this socket (`NFT_TABLE_F_OWNER`): only this socket can change or remove it, and the
    /// kernel removes it when this socket is closed, i.e. when this value is dropped or the
    /// process dies. An existing table of that name gives `EEXIST`. The ports are published on
    /// every host address; see [`Nftables::add_sandbox_published`].
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad bridge name; [`Error::Netlink`] with the kernel's errno
    /// (`EEXIST`, `EOPNOTSUPP` on kernels before 5.12, which lack the owner flag).
    pub fn add_sandbox(&mut self, owner: &Owner, nat: &SandboxNat) -> Result<()> {
        let ports: Vec<Published> = nat.dnat.iter().map(|d| Published::from(*d)).collect();
        self.sandbox_table(owner, &nat.bridge, nat.addr, &ports, NFT_TABLE_F_OWNER)
    }

    /// [`Nftables::add_sandbox`] with each port's host address. The table holds:
    ///
    /// - set `published` of every port (address, protocol, host port), which
    ///   [`Nftables::published`] reads to refuse overlapping publishes of other sandboxes;
    /// - map `addr_ports` (address . protocol . host port to sandbox port) of the ports on one
    ///   address, looked up with `ip daddr`, so a port published on `192.0.2.1` answers there
    ///   only;
    /// - map `any_ports` (protocol . host port to sandbox port) of the ports on every address,
    ///   for destinations that are local (`fib daddr type local`) and not in `127.0.0.0/8`;
    /// - chain `prerouting` (nat, dstnat) with one rule per map: traffic from outside the bridge
    ///   is sent to `addr`.
    ///
    /// Ports on a loopback address get no DNAT at all: they are served on the host only (by the
    /// forwarder, which listens there). The kernel drops packets to `127.0.0.0/8` that arrive on
    /// another interface (unless `route_localnet`, which this crate never sets), but only at
    /// routing, after prerouting; a prerouting DNAT of such a destination would bypass that, which
    /// is why `any_ports` excludes it.
    ///
    /// One rule per map, whatever the number of ports, and the elements go in messages of a
    /// bounded size: a thousand ports are one small batch.
    ///
    /// # Errors
    /// As [`Nftables::add_sandbox`].
    pub fn add_sandbox_published(
        &mut self,
        owner: &Owner,
        bridge: &str,
        addr: Ipv4Addr,
        ports: &[Published],
    ) -> Result<()> {
        self.sandbox_table(owner, bridge, addr, ports, NFT_TABLE_F_OWNER)
    }

    /// [`Nftables::add_sandbox_published`] with the table's `lifetime`: with
    /// [`TableLifetime::Persistent`], the table outlives this socket and this process, and goes
    /// when it is removed explicitly ([`Nftables::remove_sandbox`], from any socket) or, once
    /// `owner` is gone, by [`Nftables::remove_stale`].
    ///
    /// # Errors
    /// As [`Nftables::add_sandbox`].
    pub fn add_sandbox_published_with(
        &mut self,
        owner: &Owner,
        bridge: &str,
        addr: Ipv4Addr,
        ports: &[Published],
        lifetime: TableLifetime,
    ) -> Result<()> {
        self.sandbox_table(owner, bridge, addr, ports, lifetime.flags())
    }

    /// [`Nftables::add_sandbox`] without the owner flag, as versions before it made sandbox
    /// tables: the table outlives this socket and must be removed explicitly (or by
    /// [`Nftables::remove_stale`] once the sandbox is gone). For tests of that clean-up only.
    #[doc(hidden)]
    pub fn add_sandbox_unowned(&mut self, owner: &Owner, nat: &SandboxNat) -> Result<()> {
        let ports: Vec<Published> = nat.dnat.iter().map(|d| Published::from(*d)).collect();
        self.sandbox_table(owner, &nat.bridge, nat.addr, &ports, 0)
    }

    fn sandbox_table(
        &mut self,
        owner: &Owner,
        bridge: &str,
        addr: Ipv4Addr,
        ports: &[Published],
        flags: u32,
    ) -> Result<()> {
        crate::link::validate_name(bridge)?;
        let table = table_name(owner);
        let request = format!("nftables: create table ip {table}");
        let mut batch = Batch::new(&mut self.seq);
        let userdata = format!("{USERDATA_TAG} {bridge} {addr}");
        batch.table_with_flags(&table, flags, userdata.as_bytes());
        let published: Vec<(Vec<u8>, Vec<u8>)> = ports
            .iter()
            .map(|p| (p.key().to_vec(), Vec::new()))
            .collect();
        batch.set(&table, "published", 1, 12, TYPE_ADDR_PROTO_SERVICE, None);
        batch.elements(&table, "published", 1, &published);
        let addr_ports: Vec<(Vec<u8>, Vec<u8>)> = ports
            .iter()
            .filter(|p| !p.host_ip.is_unspecified() && !p.host_ip.is_loopback())
            .map(|p| (p.key().to_vec(), p.port.to_be_bytes().to_vec()))
            .collect();
        let any_ports: Vec<(Vec<u8>, Vec<u8>)> = ports
            .iter()
            .filter(|p| p.host_ip.is_unspecified())
            .map(|p| (p.key()[4..].to_vec(), p.port.to_be_bytes().to_vec()))
            .collect();
        let data = Some((TYPE_INET_SERVICE, 2));
        batch.set(&table, "addr_ports", 2, 12, TYPE_ADDR_PROTO_SERVICE, data);
        batch.elements(&table, "addr_ports", 2, &addr_ports);
        batch.set(&table, "any_ports", 3, 8, TYPE_PROTO_SERVICE, data);
        batch.elements(&table, "any_ports", 3, &any_ports);
        batch.chain(&table, "prerouting", NF_INET_PRE_ROUTING, PRIORITY_DSTNAT);
        let ifname = ifname_bytes(bridge);
        let dnat = |e: &mut Exprs<'_, '_>| {
            e.immediate(NFT_REG_1, &addr.octets());
            e.expr("nat", |a| {
                a.u32_be(1, NFT_NAT_DNAT); // NFTA_NAT_TYPE
                a.u32_be(2, u32::from(NFPROTO_IPV4)); // NFTA_NAT_FAMILY
                a.u32_be(3, NFT_REG_1); // NFTA_NAT_REG_ADDR_MIN
                a.u32_be(5, NFT_REG_2); // NFTA_NAT_REG_PROTO_MIN
            });
        };
        if !addr_ports.is_empty() {
            batch.rule(&table, "prerouting", |e| {
                e.meta(NFT_META_IIFNAME);
                e.cmp(NFT_CMP_NEQ, &ifname);
                e.payload_to(NFT_REG32_00, NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
                e.meta_to(NFT_REG32_00 + 1, NFT_META_L4PROTO);
                e.payload_to(NFT_REG32_00 + 2, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                e.lookup("addr_ports", 2, NFT_REG32_00, NFT_REG_2);
                dnat(e);
            });
        }
        if !any_ports.is_empty() {
            batch.rule(&table, "prerouting", |e| {
                e.meta(NFT_META_IIFNAME);
                e.cmp(NFT_CMP_NEQ, &ifname);
                e.payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4);
                e.bitwise(&[255, 0, 0, 0]);
                e.cmp(NFT_CMP_NEQ, &[127, 0, 0, 0]);
                e.expr("fib", |a| {
                    a.u32_be(1, NFT_REG_1); // NFTA_FIB_DREG
                    a.u32_be(2, NFT_FIB_RESULT_ADDRTYPE); // NFTA_FIB_RESULT
                    a.u32_be(3, NFTA_FIB_F_DADDR); // NFTA_FIB_FLAGS
                });
                e.cmp(NFT_CMP_EQ, &RTN_LOCAL.to_ne_bytes());
                e.meta_to(NFT_REG32_00, NFT_META_L4PROTO);
                e.payload_to(NFT_REG32_00 + 1, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
                e.lookup("any_ports", 3, NFT_REG32_00, NFT_REG_2);
                dnat(e);
            });
        }
        let batch = batch.finish();
        self.commit(&request, batch)
    }

    /// The ports published by the live sandboxes' tables in this namespace (the `published` set
    /// of each `palisade-<pid>-<start>` table), with the name of the table; the sandbox ports
    /// are not recorded there and read 0. A table whose sandbox is gone is skipped, and so is a
    /// table of an older version, which has no such set.
    pub fn published(&mut self) -> Result<Vec<(String, Published)>> {
        let mut out = Vec::new();
        for table in self.table_list()? {
            if !table.sandbox().is_some_and(|o| o.is_alive()) {
                continue;
            }
            let request = format!("nftables: list set ip {} published", table.name);
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            let mut msg = Msg::new(
                (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
                NLM_F_REQUEST | NLM_F_DUMP,
                seq,
                NFPROTO_IPV4,
                0,
            );
            msg.str(NFTA_SET_ELEM_LIST_TABLE, &table.name);
            msg.str(NFTA_SET_ELEM_LIST_SET, "published");
            msg.finish();
            self.send(&request, &msg.buf)?;
            let mut found = Vec::new();
            let listed = self.receive(&request, &[seq], true, |payload| {
                for (kind, list) in attrs(payload.get(4..).unwrap_or(&[])) {
                    if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                        continue;
                    }
                    for (_, elem) in attrs(list) {
                        for (kind, key) in attrs(elem) {
                            if kind != NFTA_SET_ELEM_KEY {
                                continue;
                            }
                            if let Some((_, value)) =
                                attrs(key).find(|(k, _)| *k == NFTA_DATA_VALUE)
                            {
                                found.extend(Published::from_key(value));
                            }
                        }
                    }
                }
            });
            match listed {
                Err(e) if e.errno() == Some(libc::ENOENT) => continue,
                other => other?,
            }
            out.extend(found.into_iter().map(|p| (table.name.clone(), p)));
        }
        Ok(out)
    }

    /// Creates the `bridge` family table of `owner`, which lets the port `guard.port` send only
    /// what is the sandbox's own, owned by this socket like the table of
    /// [`Nftables::add_sandbox`]. Its chain `guard` (hook prerouting, priority -300, so before
    /// any filter of the bridge family) drops every frame from that port:
    ///
    /// - whose source MAC address is not `guard.mac`;
    /// - that is ARP but not Ethernet/IPv4 ARP, or whose sender MAC or sender IPv4 address is
    ///   not the sandbox's: no gratuitous ARP for the gateway's or another sandbox's address;
    /// - that is neither ARP nor IPv4 (IPv6 with its router advertisements, VLAN-tagged frames,
    ///   anything else): the networks are IPv4 only;
    /// - that is IPv4 from another source address than `guard.addr`.
    ///
    /// Frames the bridge sends *to* the port, and every other port, are not this table's concern.
    /// A sandbox holding `CAP_NET_RAW` (forged frames) or `CAP_NET_ADMIN` (a changed address)
    /// can then take over no address but its own; one that changes its MAC address cuts itself
    /// off. The kernel matches the port by name (`meta iifname`), which no other link takes while
    /// the sandbox lives.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad port name; [`Error::Netlink`] with the kernel's errno
    /// (`EEXIST` for a table of that name, `EOPNOTSUPP` without bridge family support,
    /// `CONFIG_NF_TABLES_BRIDGE`).
    pub fn add_port_guard(&mut self, owner: &Owner, guard: &PortGuard) -> Result<()> {
        self.add_port_guard_with(owner, guard, TableLifetime::Socket)
    }

    /// [`Nftables::add_port_guard`] with the table's `lifetime`: with
    /// [`TableLifetime::Persistent`], the guard stays after this socket is closed and this
    /// process exits, for as long as `owner` lives (unless removed explicitly); then
    /// [`Nftables::remove_stale`] removes it.
    ///
    /// # Errors
    /// As [`Nftables::add_port_guard`].
    pub fn add_port_guard_with(
        &mut self,
        owner: &Owner,
        guard: &PortGuard,
        lifetime: TableLifetime,
    ) -> Result<()> {
        crate::link::validate_name(&guard.port)?;
        let table = table_name(owner);
        let request = format!("nftables: create table bridge {table}");
        let port = ifname_bytes(&guard.port);
        let mut batch = Batch::new(&mut self.seq);
        batch.table_in(NFPROTO_BRIDGE, &table, lifetime.flags(), &[]);
        batch.base_chain(
            NFPROTO_BRIDGE,
            &table,
            "guard",
            NF_BR_PRE_ROUTING,
            PRIORITY_BRIDGE_GUARD,
            "filter",
        );
        let mut rule = |fill: &dyn Fn(&mut Exprs<'_, '_>)| {
            batch.rule_in(NFPROTO_BRIDGE, &table, "guard", |e| {
                e.meta(NFT_META_IIFNAME);
                e.cmp(NFT_CMP_EQ, &port);
                fill(e);
            })
        };
        // ether saddr != mac drop
        rule(&|e| {
            e.payload(NFT_PAYLOAD_LL_HEADER, 6, 6);
            e.cmp(NFT_CMP_NEQ, &guard.mac);
            e.verdict(NF_DROP);
        });
        // ARP: only Ethernet/IPv4 ARP, with the sandbox's own sender addresses.
        let arp = |e: &mut Exprs<'_, '_>| {
            e.payload(NFT_PAYLOAD_LL_HEADER, 12, 2);
            e.cmp(NFT_CMP_EQ, &ETH_P_ARP);
        };
        rule(&|e| {
            arp(e);
            e.payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 6);
            e.cmp(NFT_CMP_NEQ, &ARP_ETHER_IPV4);
            e.verdict(NF_DROP);
        });
        rule(&|e| {
            arp(e);
            e.payload(NFT_PAYLOAD_NETWORK_HEADER, 8, 6);
            e.cmp(NFT_CMP_NEQ, &guard.mac);
            e.verdict(NF_DROP);
        });
        rule(&|e| {
            arp(e);
            e.payload(NFT_PAYLOAD_NETWORK_HEADER, 14, 4);
            e.cmp(NFT_CMP_NEQ, &guard.addr.octets());
            e.verdict(NF_DROP);
        });
        rule(&|e| {
            arp(e);
            e.verdict(NF_ACCEPT);
        });
        // Not IPv4 (a VLAN tag reads as 0x8100 here: the kernel puts an offloaded tag back).
        rule(&|e| {
            e.payload(NFT_PAYLOAD_LL_HEADER, 12, 2);
            e.cmp(NFT_CMP_NEQ, &ETH_P_IP);
            e.verdict(NF_DROP);
        });
        rule(&|e| {
            e.payload(NFT_PAYLOAD_NETWORK_HEADER, 12, 4);
            e.cmp(NFT_CMP_NEQ, &guard.addr.octets());
            e.verdict(NF_DROP);
        });
        let batch = batch.finish();
        self.commit(&request, batch)
    }

    /// Removes the tables of `owner`, of the `ip` family ([`Nftables::add_sandbox`]) and of the
    /// `bridge` family ([`Nftables::add_port_guard`]); tables that are already gone are not an
    /// error. A table made with the owner flag can only be removed through the socket that made
    /// it (another gives `EPERM`).
    pub fn remove_sandbox(&mut self, owner: &Owner) -> Result<()> {
        let table = table_name(owner);
        let ip = self.delete_table(&table);
        let bridge = self.delete_table_in(NFPROTO_BRIDGE, &table);
        ip.and(bridge)
    }

    fn delete_table(&mut self, table: &str) -> Result<()> {
        self.delete_table_in(NFPROTO_IPV4, table)
    }

    fn delete_table_in(&mut self, family: u8, table: &str) -> Result<()> {
        let request = format!("nftables: delete table {} {table}", family_name(family));
        let mut batch = Batch::new(&mut self.seq);
        batch.push_in(family, NFT_MSG_DELTABLE, 0, |m| {
            m.str(NFTA_TABLE_NAME, table)
        });
        let batch = batch.finish();
        match self.commit(&request, batch) {
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            other => other,
        }
    }

    /// The names of the `ip` family tables that this module created (`palisade-*`).
    pub fn tables(&mut self) -> Result<Vec<String>> {
        Ok(self.table_list()?.into_iter().map(|t| t.name).collect())
    }

    /// The `ip` family tables that this module created (`palisade-*`), with their flags and
    /// owning socket.
    pub fn table_list(&mut self) -> Result<Vec<TableInfo>> {
        self.table_list_in(NFPROTO_IPV4)
    }

    /// The names of the `bridge` family tables that this module created (`palisade-*`): the
    /// sandboxes' port guards ([`Nftables::add_port_guard`]).
    pub fn bridge_tables(&mut self) -> Result<Vec<String>> {
        Ok(self
            .table_list_in(NFPROTO_BRIDGE)?
            .into_iter()
            .map(|t| t.name)
            .collect())
    }

    /// The `bridge` family tables that this module created (`palisade-*`), with their flags and
    /// owning socket ([`TableInfo::dnat_to`] is always `None`).
    pub fn bridge_table_list(&mut self) -> Result<Vec<TableInfo>> {
        self.table_list_in(NFPROTO_BRIDGE)
    }

    fn table_list_in(&mut self, family: u8) -> Result<Vec<TableInfo>> {
        let request = format!("nftables: list tables {} (dump)", family_name(family));
        let request = request.as_str();
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            0,
        );
        msg.finish();
        self.send(request, &msg.buf)?;
        let mut tables = Vec::new();
        self.receive(request, &[seq], true, |payload| {
            let mut info = TableInfo {
                name: String::new(),
                flags: 0,
                owner_port: None,
                dnat_to: None,
            };
            // nfgenmsg, then attributes.
            for (kind, value) in attrs(payload.get(4..).unwrap_or(&[])) {
                match kind {
                    NFTA_TABLE_NAME => {
                        let name = value.split(|&b| b == 0).next().unwrap_or(&[]);
                        info.name = String::from_utf8_lossy(name).into_owned();
                    }
                    NFTA_TABLE_FLAGS => info.flags = be_u32(value).unwrap_or(0),
                    NFTA_TABLE_OWNER => info.owner_port = be_u32(value),
                    NFTA_TABLE_USERDATA => info.dnat_to = parse_userdata(value),
                    _ => {}
                }
            }
            if info.name.starts_with(TABLE_PREFIX) {
                tables.push(info);
            }
        })?;
        Ok(tables)
    }

    /// Removes the tables of sandboxes whose process is gone and that no socket owns (made
    /// without the owner flag: [`TableLifetime::Persistent`], or by versions before it), of the
    /// `ip` family (NAT) and of the `bridge` family (port guards); returns their names, each
    /// once (a sandbox's two tables share one name). Tables with the owner flag are left to the
    /// kernel, which removes them with their socket; a sandbox table whose managing process died
    /// is therefore never seen here.
    pub fn remove_stale(&mut self) -> Result<Vec<String>> {
        let mut removed: Vec<String> = Vec::new();
        for family in [NFPROTO_IPV4, NFPROTO_BRIDGE] {
            for table in self.table_list_in(family)? {
                if table.is_socket_owned() {
                    continue;
                }
                if table.sandbox().is_some_and(|o| !o.is_alive()) {
                    self.delete_table_in(family, &table.name)?;
                    if !removed.contains(&table.name) {
                        removed.push(table.name);
                    }
                }
            }
        }
        Ok(removed)
    }

    fn send(&mut self, request: &str, buf: &[u8]) -> Result<()> {
        let sent = self.socket.send(buf, 0).map_err(|source| Error::Netlink {
            request: request.to_owned(),
            source,
        })?;
        if sent != buf.len() {
            return Err(Error::Protocol {
                request: request.to_owned(),
                reason: format!("short send ({sent} of {} bytes)", buf.len()),
            });
        }
        Ok(())
    }

    fn commit(&mut self, request: &str, (buf, acked): (Vec<u8>, Vec<u32>)) -> Result<()> {
        self.send(request, &buf)?;
        self.receive(request, &acked, false, |_| {})
    }

    /// Reads replies until every sequence number in `seqs` is acknowledged (or, for a dump,
    /// until `NLMSG_DONE`); the first error wins.
    fn receive(
        &mut self,
        request: &str,
        seqs: &[u32],
        dump: bool,
        mut each: impl FnMut(&[u8]),
    ) -> Result<()> {
        let mut pending: Vec<u32> = seqs.to_vec();
        let mut failure = None;
        while !pending.is_empty() {
            let (buf, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| Error::Netlink {
                    request: request.to_owned(),
                    source,
                })?;
            let mut offset = 0;
            while offset + 16 <= buf.len() {
                let b = &buf[offset..];
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if len < 16 || len > b.len() {
                    return Err(Error::Protocol {
                        request: request.to_owned(),
                        reason: format!("bad nlmsg_len {len}"),
                    });
                }
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                let payload = &b[16..len];
                offset += (len + 3) & !3;
                if !pending.contains(&seq) {
                    continue;
                }
                match kind {
                    NLMSG_ERROR => {
                        pending.retain(|&s| s != seq);
                        let code = payload
                            .get(..4)
                            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                            .unwrap_or(-libc::EPROTO);
                        if code != 0 && failure.is_none() {
                            failure = Some(io::Error::from_raw_os_error(-code));
                        }
                        if code != 0 && !dump {
                            // An aborted batch acknowledges only the failing message.
                            pending.clear();
                        }
                    }
                    NLMSG_DONE => pending.retain(|&s| s != seq),
                    _ if dump => each(payload),
                    _ => {}
                }
            }
        }
        match failure {
            Some(source) => Err(Error::Netlink {
                request: request.to_owned(),
                source,
            }),
            None => Ok(()),
        }
    }
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

/// The family's name as `nft` spells it.
fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_BRIDGE => "bridge",
        _ => "ip",
    }
}

/// The bridge and address of a sandbox table's user data.
fn parse_userdata(value: &[u8]) -> Option<(String, Ipv4Addr)> {
    let text = std::str::from_utf8(value).ok()?;
    let rest = text.strip_prefix(USERDATA_TAG)?.strip_prefix(' ')?;
    let (bridge, addr) = rest.split_once(' ')?;
    Some((bridge.to_owned(), addr.parse().ok()?))
}

/// A big-endian `u32` attribute value.
fn be_u32(value: &[u8]) -> Option<u32> {
    let b: [u8; 4] = value.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b))
}

/// The bridge name as `meta iifname`/`oifname` holds it: `IFNAMSIZ` bytes, NUL-padded.
fn ifname_bytes(name: &str) -> [u8; IFNAMSIZ] {
    let mut out = [0u8; IFNAMSIZ];
    let n = name.len().min(IFNAMSIZ - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// Iterates the netlink attributes (`struct nlattr`) of `buf`, NLA_F_* flags stripped.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        Some((kind, value))
    })
}

/// One netlink message being built: header, `nfgenmsg`, attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg { buf }
    }

    fn finish(&mut self) {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// Appends attributes to a buffer.
trait Attrs {
    fn buf(&mut self) -> &mut Vec<u8>;

    fn raw(&mut self, kind: u16, value: &[u8]) {
        let buf = self.buf();
        let len = 4 + value.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize((buf.len() + 3) & !3, 0);
    }

    fn str(&mut self, kind: u16, value: &str) {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.raw(kind, &v);
    }

    fn u32_be(&mut self, kind: u16, value: u32) {
        self.raw(kind, &value.to_be_bytes());
    }

    fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Nest<'_>)) {
        let buf = self.buf();
        let start = buf.len();
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        let mut nest = Nest { buf };
        fill(&mut nest);
        let len = (nest.buf.len() - start) as u16;
        nest.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

impl Attrs for Msg {
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

struct Nest<'a> {
    buf: &'a mut Vec<u8>,
}

impl Attrs for Nest<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.buf
    }
}

/// The expressions of one rule, each an `NFTA_LIST_ELEM`.
struct Exprs<'a, 'b> {
    list: &'a mut Nest<'b>,
}

impl Exprs<'_, '_> {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Nest<'_>)) {
        self.list.nested(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, name);
            e.nested(NFTA_EXPR_DATA, data);
        });
    }

    /// `payload load <len>b @ <base> + <offset> => reg 1`.
    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.payload_to(NFT_REG_1, base, offset, len);
    }

    /// `payload load <len>b @ <base> + <offset> => reg <dreg>`; a length that is not a multiple
    /// of 4 has the rest of its last 4-byte register zeroed by the kernel.
    fn payload_to(&mut self, dreg: u32, base: u32, offset: u32, len: u32) {
        self.expr("payload", |a| {
            a.u32_be(1, dreg); // NFTA_PAYLOAD_DREG
            a.u32_be(2, base); // NFTA_PAYLOAD_BASE
            a.u32_be(3, offset); // NFTA_PAYLOAD_OFFSET
            a.u32_be(4, len); // NFTA_PAYLOAD_LEN
        });
    }

    /// `meta load <key> => reg 1`.
    fn meta(&mut self, key: u32) {
        self.meta_to(NFT_REG_1, key);
    }

    /// `meta load <key> => reg <dreg>`.
    fn meta_to(&mut self, dreg: u32, key: u32) {
        self.expr("meta", |a| {
            a.u32_be(2, key); // NFTA_META_KEY
            a.u32_be(1, dreg); // NFTA_META_DREG
        });
    }

    /// `ct load <key> => reg 1`.
    fn ct(&mut self, key: u32) {
        self.expr("ct", |a| {
            a.u32_be(2, key); // NFTA_CT_KEY
            a.u32_be(1, NFT_REG_1); // NFTA_CT_DREG
        });
    }

    /// `lookup reg <sreg> set <set> => reg <dreg>`: the rule stops here when the key is not in
    /// the map.
    fn lookup(&mut self, set: &str, set_id: u32, sreg: u32, dreg: u32) {
        self.expr("lookup", |a| {
            a.str(1, set); // NFTA_LOOKUP_SET
            a.u32_be(2, sreg); // NFTA_LOOKUP_SREG
            a.u32_be(3, dreg); // NFTA_LOOKUP_DREG
            a.u32_be(4, set_id); // NFTA_LOOKUP_SET_ID
        });
    }

    /// `immediate reg verdict <verdict>`: accept or drop.
    fn verdict(&mut self, verdict: u32) {
        self.expr("immediate", |a| {
            a.u32_be(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            a.nested(2, |d| {
                d.nested(NFTA_DATA_VERDICT, |v| v.u32_be(NFTA_VERDICT_CODE, verdict))
            });
        });
    }

    /// `cmp <op> reg 1 <data>`.
    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |a| {
            a.u32_be(1, NFT_REG_1); // NFTA_CMP_SREG
            a.u32_be(2, op); // NFTA_CMP_OP
            a.nested(3, |d| d.raw(NFTA_DATA_VALUE, data)); // NFTA_CMP_DATA
        });
    }

    /// `bitwise reg 1 = (reg 1 & mask) ^ 0`.
    fn bitwise(&mut self, mask: &[u8]) {
        let zero = vec![0u8; mask.len()];
        self.expr("bitwise", |a| {
            a.u32_be(1, NFT_REG_1); // NFTA_BITWISE_SREG
            a.u32_be(2, NFT_REG_1); // NFTA_BITWISE_DREG
            a.u32_be(3, mask.len() as u32); // NFTA_BITWISE_LEN
            a.nested(4, |d| d.raw(NFTA_DATA_VALUE, mask)); // NFTA_BITWISE_MASK
            a.nested(5, |d| d.raw(NFTA_DATA_VALUE, &zero)); // NFTA_BITWISE_XOR
        });
    }

    /// `immediate reg <reg> <data>`.
    fn immediate(&mut self, reg: u32, data: &[u8]) {
        self.expr("immediate", |a| {
            a.u32_be(1, reg); // NFTA_IMMEDIATE_DREG
            a.nested(2, |d| d.raw(NFTA_DATA_VALUE, data)); // NFTA_IMMEDIATE_DATA
        });
    }
}

/// A transaction: `NFNL_MSG_BATCH_BEGIN`, messages, `NFNL_MSG_BATCH_END`.
struct Batch<'s> {
    seq: &'s mut u32,
    buf: Vec<u8>,
    acked: Vec<u32>,
}

impl<'s> Batch<'s> {
    fn new(seq: &'s mut u32) -> Batch<'s> {
        *seq = seq.wrapping_add(1);
        let mut begin = Msg::new(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            *seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        begin.finish();
        Batch {
            seq,
            buf: begin.buf,
            acked: Vec::new(),
        }
    }

    fn push(&mut self, kind: u16, flags: u16, fill: impl FnOnce(&mut Msg)) {
        self.push_in(NFPROTO_IPV4, kind, flags, fill);
    }

    fn push_in(&mut self, family: u8, kind: u16, flags: u16, fill: impl FnOnce(&mut Msg)) {
        *self.seq = self.seq.wrapping_add(1);
        let mut msg = Msg::new(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            *self.seq,
            family,
            0,
        );
        fill(&mut msg);
        msg.finish();
        self.acked.push(*self.seq);
        self.buf.extend_from_slice(&msg.buf);
    }

    fn table(&mut self, table: &str) {
        self.table_with_flags(table, 0, &[]);
    }

    fn table_with_flags(&mut self, table: &str, flags: u32, userdata: &[u8]) {
        self.table_in(NFPROTO_IPV4, table, flags, userdata);
    }

    fn table_in(&mut self, family: u8, table: &str, flags: u32, userdata: &[u8]) {
        self.push_in(family, NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, |m| {
            m.str(NFTA_TABLE_NAME, table);
            if flags != 0 {
                m.u32_be(NFTA_TABLE_FLAGS, flags);
            }
            if !userdata.is_empty() {
                m.raw(NFTA_TABLE_USERDATA, userdata);
            }
        });
    }

    /// A base chain of type nat on `hook`, policy accept.
    fn chain(&mut self, table: &str, name: &str, hook: u32, priority: i32) {
        self.base_chain(NFPROTO_IPV4, table, name, hook, priority, "nat");
    }

    /// A base chain of type filter on `hook` of `family`, priority filter (0), policy accept.
    fn filter_chain(&mut self, family: u8, table: &str, name: &str, hook: u32) {
        self.base_chain(family, table, name, hook, PRIORITY_FILTER, "filter");
    }

    /// A set (`data` = None) or a map to values of `data` = (type, length), in the `ip` family,
    /// referred to by `id` within the batch.
    fn set(
        &mut self,
        table: &str,
        name: &str,
        id: u32,
        key_len: u32,
        key_type: u32,
        data: Option<(u32, u32)>,
    ) {
        self.push(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, |m| {
            m.str(NFTA_SET_TABLE, table);
            m.str(NFTA_SET_NAME, name);
            m.u32_be(NFTA_SET_FLAGS, if data.is_some() { NFT_SET_MAP } else { 0 });
            m.u32_be(NFTA_SET_KEY_TYPE, key_type);
            m.u32_be(NFTA_SET_KEY_LEN, key_len);
            if let Some((data_type, data_len)) = data {
                m.u32_be(NFTA_SET_DATA_TYPE, data_type);
                m.u32_be(NFTA_SET_DATA_LEN, data_len);
            }
            m.u32_be(NFTA_SET_ID, id);
        });
    }

    /// The elements (key, data; data empty in a set) of the set `name`, in messages of at most
    /// [`ELEMS_PER_MSG`] elements.
    fn elements(&mut self, table: &str, name: &str, id: u32, elems: &[(Vec<u8>, Vec<u8>)]) {
        for chunk in elems.chunks(ELEMS_PER_MSG) {
            self.push(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, |m| {
                m.str(NFTA_SET_ELEM_LIST_TABLE, table);
                m.str(NFTA_SET_ELEM_LIST_SET, name);
                m.u32_be(NFTA_SET_ELEM_LIST_SET_ID, id);
                m.nested(NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
                    for (key, data) in chunk {
                        list.nested(NFTA_LIST_ELEM, |e| {
                            e.nested(NFTA_SET_ELEM_KEY, |k| k.raw(NFTA_DATA_VALUE, key));
                            if !data.is_empty() {
                                e.nested(NFTA_SET_ELEM_DATA, |d| d.raw(NFTA_DATA_VALUE, data));
                            }
                        });
                    }
                });
            });
        }
    }

    fn base_chain(
        &mut self,
        family: u8,
        table: &str,
        name: &str,
        hook: u32,
        priority: i32,
        kind: &str,
    ) {
        self.push_in(family, NFT_MSG_NEWCHAIN, NLM_F_CREATE | NLM_F_EXCL, |m| {
            m.str(NFTA_CHAIN_TABLE, table);
            m.str(NFTA_CHAIN_NAME, name);
            m.nested(NFTA_CHAIN_HOOK, |h| {
                h.u32_be(NFTA_HOOK_HOOKNUM, hook);
                h.u32_be(NFTA_HOOK_PRIORITY, priority as u32);
            });
            m.u32_be(NFTA_CHAIN_POLICY, NF_ACCEPT);
            m.str(NFTA_CHAIN_TYPE, kind);
        });
    }

    fn rule(&mut self, table: &str, chain: &str, exprs: impl FnOnce(&mut Exprs<'_, '_>)) {
        self.rule_in(NFPROTO_IPV4, table, chain, exprs);
    }

    fn rule_in(
        &mut self,
        family: u8,
        table: &str,
        chain: &str,
        exprs: impl FnOnce(&mut Exprs<'_, '_>),
    ) {
        self.push_in(family, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, |m| {
            m.str(NFTA_RULE_TABLE, table);
            m.str(NFTA_RULE_CHAIN, chain);
            m.nested(NFTA_RULE_EXPRESSIONS, |list| exprs(&mut Exprs { list }));
        });
    }

    fn finish(self) -> (Vec<u8>, Vec<u32>) {
        let Batch {
            seq,
            mut buf,
            acked,
        } = self;
        *seq = seq.wrapping_add(1);
        let mut end = Msg::new(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            *seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        );
        end.finish();
        buf.extend_from_slice(&end.buf);
        (buf, acked)
    }
}

const NLM_F_APPEND: u16 = 0x800;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_encode_their_owner() {
        let owner = Owner {
            pid: 42,
            start_time: 7,
            tag: "x".into(),
        };
        let name = table_name(&owner);
        assert_eq!(name, "palisade-42-7");
        let back = table_owner(&name).unwrap();
        assert_eq!((back.pid, back.start_time), (42, 7));
        assert!(table_owner("palisade-x-1").is_none());
        assert!(table_owner("filter").is_none());
    }

    #[test]
    fn userdata_names_the_bridge_and_the_address() {
        assert_eq!(
            parse_userdata(b"palisade-netns dnat pal-br0 10.0.0.2"),
            Some(("pal-br0".to_owned(), Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(parse_userdata(b"palisade-netns dnat pal-br0"), None);
        assert_eq!(parse_userdata(b"a comment"), None);
    }

    #[test]
    fn the_socket_is_close_on_exec() {
        use std::os::fd::AsRawFd;
        let Ok(nft) = Nftables::open() else {
            return;
        };
        // SAFETY: F_GETFD only reads the descriptor's flags; the socket outlives the call.
        let flags = unsafe { libc::fcntl(nft.socket.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "{flags}");
    }

    #[test]
    fn attributes_are_aligned_and_nested_lengths_cover_their_children() {
        let mut m = Msg::new(1, 0, 1, NFPROTO_IPV4, 0);
        m.str(NFTA_TABLE_NAME, "ab");
        m.nested(NFTA_CHAIN_HOOK, |h| h.u32_be(NFTA_HOOK_HOOKNUM, 4));
        m.finish();
        let body = &m.buf[20..];
        let parsed: Vec<_> = attrs(body).collect();
        assert_eq!(parsed[0], (NFTA_TABLE_NAME, &b"ab\0"[..]));
        assert_eq!(parsed[1].0, NFTA_CHAIN_HOOK);
        let inner: Vec<_> = attrs(parsed[1].1).collect();
        assert_eq!(inner, vec![(NFTA_HOOK_HOOKNUM, &4u32.to_be_bytes()[..])]);
        assert_eq!(m.buf.len() % 4, 0);
    }
}
