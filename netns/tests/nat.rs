//! Published ports, the forward filter and network isolation, attacked for real. Each test runs
//! in a thread with a network namespace of its own (a throwaway "host"), with a "LAN peer": a
//! process in a further namespace joined to the host by a veth (192.0.2.0/24), routing the
//! sandbox subnets through the host as a neighbour on the LAN could. The "sandboxes" are
//! processes that unshare a namespace and sleep; their servers are sockets made in their
//! namespaces. The real host's network is never touched.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{host_with_peer, Reaped, HOST_LAN, PEER_LAN};
use palisade_netns::bridge::Bridge;
use palisade_netns::ipam::Owner;
use palisade_netns::link::Netlink;
use palisade_netns::nft::{Nftables, Published};
use palisade_netns::{Error, PortMap, Proto};
use palisade_test_support::{in_netns_of, in_new_netns, require_root, TempDir};

impl Reaped {
    /// A TCP server in this process's namespace, answering "pong" to every connection.
    fn serve(&self, port: u16) {
        let listener = in_netns_of(self.pid(), || TcpListener::bind(("0.0.0.0", port)).unwrap());
        std::thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                let _ = c.write_all(b"pong");
            }
        });
    }

    /// Whether a connection from this process's namespace to `addr` gets the server's answer.
    fn reaches(&self, addr: impl Into<IpAddr>, port: u16) -> bool {
        let to = SocketAddr::new(addr.into(), port);
        in_netns_of(self.pid(), || reaches(to))
    }
}

/// Whether a connection from the calling thread's namespace to `to` gets "pong" within a bound.
fn reaches(to: SocketAddr) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&to, Duration::from_millis(1500)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_millis(1500)));
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).is_ok() && &buf == b"pong"
}

fn bridge(name: &str, net: &str, state: &TempDir) -> Bridge {
    Bridge::new(name)
        .unwrap()
        .subnet(net.parse().unwrap())
        .state_dir(state.path())
}

fn tables() -> Vec<String> {
    Nftables::open().unwrap().tables().unwrap()
}

#[test]
fn published_ports_answer_on_their_address_only_and_nothing_else_is_forwarded_in() {
    require_root!();
    let state = TempDir::new("nat");
    in_new_netns(|| {
        let peer = host_with_peer(&["10.251.0.0/24"]);
        let sb = Reaped::sandbox();
        let ports = [
            PortMap::new(18080, 80, Proto::Tcp).host_ip(Ipv4Addr::LOCALHOST),
            PortMap::new(18081, 80, Proto::Tcp).host_ip(HOST_LAN),
            PortMap::new(18082, 80, Proto::Tcp),
        ];
        let att = bridge("pal-nat0", "10.251.0.0/24", &state)
            .prepare(&ports)
            .unwrap()
            .attach(sb.pid())
            .unwrap();
        sb.serve(80);
        sb.serve(81);
        let IpAddr::V4(sandbox) = att.address() else {
            unreachable!()
        };
        // Controls: the host reaches its loopback publish, the peer the one on the LAN address
        // and the one on every address, through DNAT and the filter.
        assert!(reaches((Ipv4Addr::LOCALHOST, 18080).into()));
        assert!(peer.reaches(HOST_LAN, 18081));
        assert!(peer.reaches(HOST_LAN, 18082));
        // Attack: the loopback publish from the LAN, on the host's LAN address.
        assert!(
            !peer.reaches(HOST_LAN, 18080),
            "loopback publish reached from the LAN"
        );
        // Attack: the sandbox's ports straight through the route to its subnet, published port
        // and unpublished one alike. Control: the host itself reaches them (not forwarded).
        assert!(
            !peer.reaches(sandbox, 81),
            "unpublished port reached from the LAN"
        );
        assert!(!peer.reaches(sandbox, 80), "sandbox reached without DNAT");
        assert!(reaches((sandbox, 81).into()));
        // Every address: not 127.0.0.0/8 from outside (the rule excludes it), but any local one.
        drop(att);
        assert_eq!(tables(), Vec::<String>::new());
        let _ = Netlink::open().unwrap().delete_link("pal-lan");
    });
}

#[test]
fn networks_are_isolated_from_each_other() {
    require_root!();
    let state = TempDir::new("nat-iso");
    in_new_netns(|| {
        let _peer = host_with_peer(&[]);
        let a = bridge("pal-nata", "10.252.1.0/24", &state);
        let b = bridge("pal-natb", "10.252.2.0/24", &state);
        let (a1, a2, b1) = (Reaped::sandbox(), Reaped::sandbox(), Reaped::sandbox());
        let attach = |br: &Bridge, p: &Reaped| br.prepare(&[]).unwrap().attach(p.pid()).unwrap();
        let (at_a1, _at_a2, _at_b1) = (attach(&a, &a1), attach(&a, &a2), attach(&b, &b1));
        a1.serve(80);
        // Control: on one bridge, sandboxes reach each other (as in Docker).
        assert!(a2.reaches(at_a1.address(), 80));
        // Attack: from another network.
        assert!(
            !b1.reaches(at_a1.address(), 80),
            "network B reached network A"
        );
        // Control: the host reaches it.
        assert!(reaches((at_a1.address(), 80).into()));
    });
}

#[test]
fn outbound_nat_works_when_ip_forward_was_off() {
    require_root!();
    let state = TempDir::new("nat-out");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
        peer.serve(9000);
        let sb = Reaped::sandbox();
        let att = bridge("pal-nato", "10.252.9.0/24", &state)
            .prepare(&[])
            .unwrap()
            .attach(sb.pid())
            .unwrap();
        assert!(
            sb.reaches(PEER_LAN, 9000),
            "outbound NAT without published ports"
        );
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/pal-lan/forwarding").unwrap();
        assert_eq!(fwd.trim(), "1");
        drop(att);
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/pal-lan/forwarding").unwrap();
        assert_eq!(fwd.trim(), "0", "put back with the network");
        let route_localnet =
            std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet").unwrap();
        assert_eq!(route_localnet.trim(), "0");
    });
}

#[test]
fn overlapping_publishes_of_live_sandboxes_are_refused() {
    require_root!();
    let state = TempDir::new("nat-conflict");
    in_new_netns(|| {
        let _peer = host_with_peer(&[]);
        // Another live sandbox's table publishes 192.0.2.1:18090 (its forwarder, if any, is
        // elsewhere: only the table tells).
        let other = Reaped::sandbox();
        let owner = Owner::of_pid(other.pid(), "other").unwrap();
        let mut nft = Nftables::open().unwrap();
        let theirs = Published {
            proto: Proto::Tcp,
            host_ip: HOST_LAN,
            host_port: 18090,
            port: 80,
        };
        nft.add_sandbox_published(&owner, "pal-natx", Ipv4Addr::new(10, 252, 7, 9), &[theirs])
            .unwrap();
        let br = bridge("pal-natx", "10.252.7.0/24", &state);
        let sb = Reaped::sandbox();
        let err = br
            .prepare(&[PortMap::new(18090, 80, Proto::Tcp)])
            .unwrap()
            .attach(sb.pid())
            .unwrap_err();
        assert!(
            matches!(err, Error::PublishConflict { port: 18090, other_ip, .. } if other_ip == HOST_LAN),
            "{err}"
        );
        // Control: another protocol, or another specific address, does not overlap.
        let sb2 = Reaped::sandbox();
        let _att = br
            .prepare(&[
                PortMap::new(18090, 80, Proto::Udp),
                PortMap::new(18090, 80, Proto::Tcp).host_ip(Ipv4Addr::LOCALHOST),
            ])
            .unwrap()
            .attach(sb2.pid())
            .unwrap();
    });
}

#[test]
fn a_thousand_published_ports() {
    require_root!();
    let state = TempDir::new("nat-many");
    in_new_netns(|| {
        let peer = host_with_peer(&["10.252.8.0/24"]);
        let sb = Reaped::sandbox();
        // The throwaway namespace's ports are all free.
        let ports: Vec<PortMap> = (0..1000)
            .map(|i| PortMap::new(30000 + i, 80, Proto::Tcp))
            .collect();
        let att = bridge("pal-natm", "10.252.8.0/24", &state)
            .prepare(&ports)
            .unwrap()
            .attach(sb.pid())
            .unwrap();
        assert_eq!(att.ports().len(), 1000);
        sb.serve(80);
        for port in [30000, 30500, 30999] {
            assert!(peer.reaches(HOST_LAN, port), "port {port}");
        }
        assert!(!peer.reaches(HOST_LAN, 31000));
    });
}
