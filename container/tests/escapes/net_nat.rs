//! Published ports and the forward filter, attacked from the LAN with real sandboxes (issue 12).
//! Each test runs in a thread with a network namespace of its own (a throwaway "host") and a
//! "LAN peer": a process in a further namespace joined to the host by a veth (192.0.2.0/24),
//! whose routes to the sandbox subnets go through the host, as a neighbour on the LAN could set
//! them. The attacks: a loopback publish answering the LAN; the sandboxes' ports reached straight
//! through that route; one network reaching another; a publish that overlaps a live sandbox's;
//! a thousand ports in one sandbox; and a SYN to `127.0.0.1` sent from the LAN as a hand-made
//! Ethernet frame (`packet(7)`), which the host must drop as a martian rather than DNAT or
//! answer. The real host's network is never touched.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{assert_no_network_leftovers, sh};
use crate::netcommon::{host_with_peer, Reaped, HOST_LAN, PEER_LAN};
use palisade::netns::link::Netlink;
use palisade::netns::nft::Nftables;
use palisade::netns::{Bridge, Network, PortMap, Proto};
use palisade::{Child, Error, Stdio};
use palisade_test_support::frames;
use palisade_test_support::{in_netns_of, in_new_netns, require_root, TempDir};

impl Reaped {
    /// What a connection from this process's namespace to `addr:port` is told, if it gets
    /// through.
    fn answer(&self, addr: impl Into<IpAddr>, port: u16) -> Option<String> {
        let to = SocketAddr::new(addr.into(), port);
        in_netns_of(self.pid(), || answer(to))
    }

    fn reaches(&self, addr: impl Into<IpAddr>, port: u16) -> bool {
        self.answer(addr, port).is_some()
    }
}

/// What a TCP connection from the calling thread's namespace to `to` reads until the server
/// closes it, or `None` if it is refused, dropped or silent: every wait is bounded.
fn answer(to: SocketAddr) -> Option<String> {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_millis(1500)).ok()?;
    c.set_read_timeout(Some(Duration::from_millis(1500))).ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

fn reaches(addr: impl Into<IpAddr>, port: u16) -> bool {
    answer(SocketAddr::new(addr.into(), port)).is_some()
}

/// Asserts that `ok` comes true within 10 s, trying again every 50 ms: for the positive controls,
/// which a loaded machine may answer late. An attack is tried once, with bounded waits.
fn eventually(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until `addr:port` answers from the calling thread's namespace.
fn wait_ready(addr: Ipv4Addr, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reaches(addr, port) {
        assert!(
            Instant::now() < deadline,
            "the server at {addr}:{port} never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the LAN link (the peer's end goes with it) and asserts that the sandboxes left
/// nothing in the throwaway host.
fn finish(peer: Reaped) {
    drop(peer);
    let _ = Netlink::open().unwrap().delete_link("pal-lan");
    assert_no_network_leftovers();
}

fn bridge(name: &str, net: &str, state: &TempDir) -> Network {
    Network::bridge(
        Bridge::new(name)
            .unwrap()
            .subnet(net.parse().unwrap())
            .state_dir(state.path()),
    )
}

/// A sandbox on `net` whose busybox `nc` servers answer `word` on ports 80 and 81, publishing
/// `ports`; returns once both answer the host at the sandbox's address.
fn server(net: Network, ports: &[PortMap], word: &str) -> Child {
    let mut b = sh(&format!(
        "busybox nc -ll -p 80 -e /bin/echo {word} & busybox nc -ll -p 81 -e /bin/echo {word} & wait"
    ));
    b.network(net).stdout(Stdio::null()).stderr(Stdio::null());
    for p in ports {
        b.publish_port(*p);
    }
    let child = b.spawn().unwrap();
    let ip = address(&child);
    wait_ready(ip, 80);
    wait_ready(ip, 81);
    child
}

fn address(child: &Child) -> Ipv4Addr {
    match child.address() {
        Some(IpAddr::V4(ip)) => ip,
        other => panic!("no IPv4 address on the bridge: {other:?}"),
    }
}

/// The host port the sandbox got for the `i`th published port.
fn host_port(child: &Child, i: usize) -> u16 {
    let port = child.ports()[i].host_port;
    assert_ne!(port, 0, "the chosen port is reported");
    port
}

/// Every `route_localnet` of this thread's namespace: with it on, packets to 127/8 that arrive
/// from outside would be routed instead of dropped as martians.
fn route_localnet_settings() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/sys/net/ipv4/conf").unwrap() {
        let e = e.unwrap();
        let v = std::fs::read_to_string(e.path().join("route_localnet")).unwrap();
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            v.trim().into(),
        ));
    }
    out
}

#[test]
fn a_loopback_publish_does_not_answer_the_lan() {
    require_root!();
    let state = TempDir::new("net-nat1");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        let child = server(
            bridge("pal-nn1", "10.236.1.0/24", &state),
            &[
                PortMap::new(0, 80, Proto::Tcp).host_ip(Ipv4Addr::LOCALHOST),
                PortMap::new(0, 80, Proto::Tcp).host_ip(HOST_LAN),
                PortMap::new(0, 80, Proto::Tcp),
            ],
            "pong",
        );
        let (lo, lan, any) = (
            host_port(&child, 0),
            host_port(&child, 1),
            host_port(&child, 2),
        );
        // Controls: the host reaches its loopback publish; the peer the one on the host's LAN
        // address and the one on every address.
        eventually("control: loopback publish", || {
            reaches(Ipv4Addr::LOCALHOST, lo)
        });
        eventually("control: LAN-address publish", || {
            peer.reaches(HOST_LAN, lan)
        });
        eventually("control: every-address publish", || {
            peer.reaches(HOST_LAN, any)
        });
        // The attack: the loopback publish from the LAN, on the host's LAN address.
        assert!(
            !peer.reaches(HOST_LAN, lo),
            "a loopback publish answered the LAN"
        );
        for (link, v) in route_localnet_settings() {
            assert_eq!(v, "0", "route_localnet on {link}");
        }
        drop(child);
        finish(peer);
    });
}

#[test]
fn the_lan_cannot_reach_a_sandbox_through_a_route_to_its_subnet() {
    require_root!();
    let state = TempDir::new("net-nat2");
    in_new_netns(|| {
        let peer = host_with_peer(&["10.236.2.0/24"]);
        let child = server(
            bridge("pal-nn2", "10.236.2.0/24", &state),
            &[PortMap::new(0, 80, Proto::Tcp)],
            "pong",
        );
        let ip = address(&child);
        // Controls: the published port answers the peer through DNAT, and the host reaches
        // both sandbox ports at the sandbox's address (`server` waited for that).
        let port = host_port(&child, 0);
        eventually("control: DNAT", || peer.reaches(HOST_LAN, port));
        eventually("control: the host", || reaches(ip, 80) && reaches(ip, 81));
        // The attack: straight to the sandbox's address, through the peer's route.
        assert!(
            !peer.reaches(ip, 81),
            "an unpublished port answered the LAN"
        );
        assert!(
            !peer.reaches(ip, 80),
            "the published port's sandbox side answered the LAN without DNAT"
        );
        // Control: with the network's forward filter removed on purpose, the same probe gets
        // through, so the assertions above cannot pass by accident.
        Nftables::open().unwrap().remove_network("pal-nn2").unwrap();
        eventually(
            "control: the LAN's route to the subnet works without the filter",
            || peer.reaches(ip, 81),
        );
        drop(child);
        finish(peer);
    });
}

#[test]
fn a_sandbox_on_one_network_cannot_reach_another_network() {
    require_root!();
    let state = TempDir::new("net-nat3");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        let a = || bridge("pal-nn3a", "10.236.3.0/24", &state);
        let target = server(a(), &[], "pong");
        let ip = address(&target);
        let holder = |net: Network| {
            let mut b = sh("sleep 60");
            b.network(net).stdout(Stdio::null());
            b.spawn().unwrap()
        };
        let a2 = holder(a());
        let b1 = holder(bridge("pal-nn3b", "10.236.4.0/24", &state));
        // Controls: a sandbox on the same network (as in Docker), and the host.
        let to = SocketAddr::new(ip.into(), 80);
        eventually("control: same network", || {
            in_netns_of(a2.id(), || answer(to)).is_some()
        });
        eventually("control: the host", || reaches(ip, 80));
        // The attack: from the other network.
        assert!(
            in_netns_of(b1.id(), || answer(to)).is_none(),
            "network B reached a sandbox on network A"
        );
        drop((target, a2, b1));
        finish(peer);
    });
}

#[test]
fn an_isolated_bridge_keeps_its_sandboxes_apart() {
    require_root!();
    let state = TempDir::new("net-nat-iso");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        let gateway = Ipv4Addr::new(10, 236, 8, 1);
        let isolated = |on: bool| {
            Network::bridge(
                Bridge::new("pal-nn7")
                    .unwrap()
                    .subnet("10.236.8.0/24".parse().unwrap())
                    .state_dir(state.path())
                    .isolate(on),
            )
        };
        let target = server(isolated(true), &[], "pong");
        let ip = address(&target);
        let mut b = sh("sleep 60");
        b.network(isolated(true)).stdout(Stdio::null());
        let neighbour = b.spawn().unwrap();
        // Control: the host reaches the sandbox (`server` waited for that too).
        eventually("control: the host", || reaches(ip, 80));
        // The attack: straight over the bridge, then routed through the host, as a sandbox
        // holding CAP_NET_ADMIN could route it.
        let to = SocketAddr::new(ip.into(), 80);
        assert!(
            in_netns_of(neighbour.id(), || answer(to)).is_none(),
            "a sandbox reached its isolated neighbour over the bridge"
        );
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", neighbour.id())).unwrap();
        Netlink::open_in(std::os::fd::AsFd::as_fd(&ns))
            .unwrap()
            .add_route(&palisade::netns::link::Route {
                dst: Some((ip.into(), 32)),
                gateway: Some(gateway.into()),
                dev: Some("eth0".into()),
            })
            .unwrap();
        assert!(
            in_netns_of(neighbour.id(), || answer(to)).is_none(),
            "a sandbox reached its isolated neighbour through the host"
        );
        // A sandbox that asks for the same bridge without isolation is refused.
        let mut open = sh("true");
        open.network(isolated(false));
        match open.spawn() {
            Err(Error::Network(palisade::netns::Error::IsolationMismatch { isolated, .. })) => {
                assert!(isolated)
            }
            other => panic!("expected IsolationMismatch, got {other:?}"),
        }
        drop((target, neighbour));
        finish(peer);
    });
}

#[test]
fn a_publish_overlapping_a_live_sandboxs_is_refused() {
    require_root!();
    let state = TempDir::new("net-nat4");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        let net = || bridge("pal-nn4", "10.236.5.0/24", &state);
        let first = server(
            net(),
            &[PortMap::new(18090, 80, Proto::Tcp).host_ip(HOST_LAN)],
            "first",
        );
        assert_eq!(
            peer.answer(HOST_LAN, 18090).as_deref(),
            Some("first\n"),
            "control"
        );
        let before = crate::netcommon::links_and_tables();
        // The attacks: the same port on the same address, and on every address. The host port
        // is bound at spawn, so the bind is refused first (`PortInUse`); the check of the live
        // sandboxes' nftables tables (`PublishConflict`) refuses it where no socket holds it.
        for ip in [HOST_LAN, Ipv4Addr::UNSPECIFIED] {
            let mut b = sh("sleep 60");
            b.network(net())
                .stdout(Stdio::null())
                .publish_port(PortMap::new(18090, 80, Proto::Tcp).host_ip(ip));
            let err = b.spawn().map(|_| ()).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Network(palisade::netns::Error::PublishConflict { port: 18090, .. })
                        | Error::Network(palisade::netns::Error::PortInUse { port: 18090, .. })
                ),
                "publishing {ip}:18090 over a live sandbox's: {err}"
            );
            assert_eq!(
                crate::netcommon::links_and_tables(),
                before,
                "the refused spawn left things"
            );
        }
        // The first sandbox still owns its port.
        assert_eq!(peer.answer(HOST_LAN, 18090).as_deref(), Some("first\n"));
        // Control: a publish that does not overlap (another address, another protocol) works,
        // and takes nothing from the first.
        let second = server(
            net(),
            &[
                PortMap::new(18090, 80, Proto::Tcp).host_ip(Ipv4Addr::LOCALHOST),
                PortMap::new(18090, 80, Proto::Udp),
            ],
            "second",
        );
        assert_eq!(
            answer(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 18090)).as_deref(),
            Some("second\n")
        );
        assert_eq!(peer.answer(HOST_LAN, 18090).as_deref(), Some("first\n"));
        drop((first, second));
        finish(peer);
    });
}

#[test]
fn a_thousand_published_ports() {
    require_root!();
    let state = TempDir::new("net-nat5");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        // The throwaway namespace's ports are all free.
        let ports: Vec<PortMap> = (0..1000)
            .map(|i| PortMap::new(30000 + i, 80, Proto::Tcp))
            .collect();
        let child = server(bridge("pal-nn5", "10.236.6.0/24", &state), &ports, "pong");
        assert_eq!(child.ports().len(), 1000);
        for port in [30000, 30500, 30999] {
            eventually(&format!("port {port}"), || peer.reaches(HOST_LAN, port));
        }
        assert!(
            !peer.reaches(HOST_LAN, 31000),
            "control: an unpublished port"
        );
        drop(child);
        finish(peer);
    });
}

/// From the peer's namespace (the calling thread's): sends a hand-made SYN from
/// `PEER_LAN:sport` to `dst` out of `eth0` to the MAC `host_mac`, and captures on `eth0` for
/// about 1.5 s. Returns the first TCP segment to `sport` that is a SYN-ACK or comes from 127/8,
/// described, if any.
fn syn_gets_answer(host_mac: [u8; 6], sport: u16, dst: (Ipv4Addr, u16)) -> Option<String> {
    let eth0 = Netlink::open().unwrap().link("eth0").unwrap().unwrap();
    let sock = frames::packet_socket("eth0").unwrap();
    let syn = frames::tcp_syn(host_mac, eth0.mac.unwrap(), (PEER_LAN, sport), dst);
    frames::send(&sock, &syn).unwrap();
    frames::capture(&sock, Duration::from_millis(1500))
        .iter()
        .find_map(|f| tcp_answer(f, sport))
}

/// An Ethernet frame's TCP segment to `sport`, described, if it is a SYN-ACK or comes from
/// 127/8.
fn tcp_answer(frame: &[u8], sport: u16) -> Option<String> {
    let ip = frame.get(14..)?;
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    if frame[12..14] != (libc::ETH_P_IP as u16).to_be_bytes()
        || ip.get(9) != Some(&(libc::IPPROTO_TCP as u8))
    {
        return None;
    }
    let tcp = ip.get(ihl..ihl + 14)?;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let from_port = u16::from_be_bytes([tcp[0], tcp[1]]);
    let to_port = u16::from_be_bytes([tcp[2], tcp[3]]);
    let flags = tcp[13];
    (to_port == sport && (flags & 0x12 == 0x12 || src.is_loopback()))
        .then(|| format!("{src}:{from_port} flags {flags:#04x}"))
}

#[test]
fn a_syn_to_loopback_from_the_lan_gets_no_answer() {
    require_root!();
    let state = TempDir::new("net-nat6");
    in_new_netns(|| {
        let peer = host_with_peer(&[]);
        let child = server(
            bridge("pal-nn6", "10.236.7.0/24", &state),
            &[
                PortMap::new(0, 80, Proto::Tcp),
                PortMap::new(0, 80, Proto::Tcp).host_ip(Ipv4Addr::LOCALHOST),
            ],
            "pong",
        );
        let (any, lo) = (host_port(&child, 0), host_port(&child, 1));
        let host_mac = Netlink::open()
            .unwrap()
            .link("pal-lan")
            .unwrap()
            .unwrap()
            .mac
            .unwrap();
        let sport = 40000 + (std::process::id() % 10000) as u16;
        let pid = peer.pid();
        let probe = |k: u16, dst: (Ipv4Addr, u16)| {
            in_netns_of(pid, || syn_gets_answer(host_mac, sport + k, dst))
        };
        // Control: the very same hand-made SYN to the host's LAN address is answered.
        assert!(
            probe(0, (HOST_LAN, any)).is_some(),
            "control: no SYN-ACK from {HOST_LAN}:{any}"
        );
        // The attack: 127.0.0.1 as the destination, sent from the LAN.
        for (k, port) in [(1, any), (2, lo)] {
            let seen = probe(k, (Ipv4Addr::LOCALHOST, port));
            assert_eq!(
                seen, None,
                "a SYN to 127.0.0.1:{port} from the LAN was answered"
            );
        }
        for (link, v) in route_localnet_settings() {
            assert_eq!(v, "0", "route_localnet on {link}");
        }
        // Control: with `route_localnet` turned on on purpose for the LAN link, the host takes
        // the same SYN to 127.0.0.1 and answers it, so the probe does see such an answer.
        let localnet = "/proc/sys/net/ipv4/conf/pal-lan/route_localnet";
        std::fs::write(localnet, "1").unwrap();
        let seen = probe(3, (Ipv4Addr::LOCALHOST, any));
        std::fs::write(localnet, "0").unwrap();
        assert!(
            seen.is_some(),
            "control: no answer to 127.0.0.1:{any} with route_localnet on"
        );
        drop(child);
        finish(peer);
    });
}
