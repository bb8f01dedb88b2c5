//! Layer 2 on a bridge network, attacked for real: forged frames from a sandbox's port (the
//! port guard), and isolation of the sandboxes of one bridge from each other. Each test runs in
//! a throwaway "host" namespace of its own; the "sandboxes" are processes that unshare a network
//! namespace and sleep, and the frames are sent and captured with packet sockets in their
//! namespaces.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::{in_host, subnet, Reaped};
use palisade_netns::bridge::{Attachment, Bridge};
use palisade_netns::link::{Netlink, Route};
use palisade_netns::nft::Nftables;
use palisade_netns::Error;
use palisade_test_support::frames::{
    arp, capture, packet_socket, router_advertisement, seen, send, udp, vlan, Mac,
};
use palisade_test_support::{frames, in_netns_of, require_root, TempDir};

const WINDOW: Duration = Duration::from_millis(400);

fn v4(a: &Attachment) -> Ipv4Addr {
    match a.address() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    }
}

/// The MAC address of `eth0` in the namespace of `sb`.
fn mac_of(sb: &Reaped) -> Mac {
    sb.netlink().link("eth0").unwrap().unwrap().mac.unwrap()
}

/// Sends each of `frames` from `eth0` of `from` and returns the markers that `eth0` of `to`
/// received.
fn delivered(from: &Reaped, to: &Reaped, frames: &[(&'static str, Vec<u8>)]) -> Vec<&'static str> {
    let listen = in_netns_of(to.pid(), || packet_socket("eth0").unwrap());
    let out = in_netns_of(from.pid(), || packet_socket("eth0").unwrap());
    for (_, f) in frames {
        send(&out, f).unwrap();
    }
    let got = capture(&listen, WINDOW);
    frames
        .iter()
        .filter(|(marker, _)| seen(&got, marker.as_bytes()))
        .map(|(m, _)| *m)
        .collect()
}

#[test]
fn a_sandbox_port_sends_only_its_own_frames() {
    require_root!();
    let state = TempDir::new("l2-guard");
    in_host(|| {
        let br = Bridge::new("pal-l2g")
            .unwrap()
            .subnet(subnet("10.246.0.0/24"))
            .state_dir(state.path());
        let (a, b) = (Reaped::sandbox(), Reaped::sandbox());
        let at_a = br.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        let at_b = br.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        assert_eq!(
            Nftables::open().unwrap().bridge_tables().unwrap().len(),
            2,
            "one guard table per sandbox"
        );
        let (ip_a, ip_b) = (v4(&at_a), v4(&at_b));
        let gw = Ipv4Addr::new(10, 246, 0, 1);
        let (mac_a, mac_b) = (mac_of(&a), mac_of(&b));
        let forged_mac: Mac = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
        let bcast = frames::BROADCAST;
        let attacks = [
            // Gratuitous ARP: "the gateway is at A" (the classic interception).
            (
                "garp-gateway",
                arp(bcast, mac_a, 2, mac_a, gw, bcast, gw, b"garp-gateway"),
            ),
            // "B's address is at A", to B's neighbours.
            (
                "arp-steal-b",
                arp(bcast, mac_a, 2, mac_a, ip_b, bcast, ip_b, b"arp-steal-b"),
            ),
            // An ARP whose sender MAC is not the frame's.
            (
                "arp-other-sha",
                arp(
                    bcast,
                    mac_a,
                    1,
                    forged_mac,
                    ip_a,
                    [0; 6],
                    ip_b,
                    b"arp-other-sha",
                ),
            ),
            // A frame from a made-up MAC address.
            (
                "forged-mac",
                arp(
                    bcast,
                    forged_mac,
                    1,
                    forged_mac,
                    ip_a,
                    [0; 6],
                    ip_b,
                    b"forged-mac",
                ),
            ),
            // IPv4 from the gateway's address.
            (
                "forged-ip",
                udp(mac_b, mac_a, gw, ip_b, 53, 9, b"forged-ip"),
            ),
            // An IPv6 router advertisement (no IPv6 here, but the guard drops it regardless).
            ("ra", router_advertisement(mac_a, b"ra")),
            // A VLAN-tagged frame that is otherwise A's own.
            (
                "vlan",
                vlan(&udp(mac_b, mac_a, ip_a, ip_b, 9, 9, b"vlan"), 5),
            ),
        ];
        let controls = [
            (
                "own-arp",
                arp(bcast, mac_a, 1, mac_a, ip_a, [0; 6], ip_b, b"own-arp"),
            ),
            ("own-udp", udp(mac_b, mac_a, ip_a, ip_b, 9, 9, b"own-udp")),
        ];
        let mut all: Vec<(&'static str, Vec<u8>)> = attacks.to_vec();
        all.extend(controls.iter().cloned());
        let got = delivered(&a, &b, &all);
        assert_eq!(got, vec!["own-arp", "own-udp"], "what reached B from A");

        // Control: the same forged frames from a port without a guard (a veth of the test's own
        // on the same bridge) do reach B, so the capture would have seen them.
        let mut nl = Netlink::open().unwrap();
        let rogue = Reaped::sandbox();
        nl.add_veth_peer_in("pal-rogue", "eth0", rogue.pid())
            .unwrap();
        nl.set_master_up("pal-rogue", "pal-l2g").unwrap();
        rogue.netlink().set_up("eth0").unwrap();
        let got = delivered(&rogue, &b, &attacks);
        let names: Vec<&str> = attacks.iter().map(|(m, _)| *m).collect();
        assert_eq!(got, names, "control: the unguarded port's frames");
        nl.delete_link("pal-rogue").unwrap();

        drop((at_a, at_b));
        assert_eq!(
            Nftables::open().unwrap().bridge_tables().unwrap(),
            Vec::<String>::new()
        );
    });
}

/// A TCP server answering "pong" in the namespace of `sb`.
fn serve(sb: &Reaped, port: u16) {
    let listener = in_netns_of(sb.pid(), || TcpListener::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(b"pong");
        }
    });
}

fn reaches(from: &Reaped, to: Ipv4Addr, port: u16) -> bool {
    in_netns_of(from.pid(), || {
        let to = SocketAddr::new(to.into(), port);
        let Ok(mut c) = TcpStream::connect_timeout(&to, Duration::from_millis(1000)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_millis(1000)));
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).is_ok() && &buf == b"pong"
    })
}

/// Routes `to` from the namespace of `sb` through the gateway instead of straight over the
/// bridge, as a sandbox holding `CAP_NET_ADMIN` could, to pass through the host.
fn route_via_gateway(sb: &Reaped, to: Ipv4Addr, gw: Ipv4Addr) {
    sb.netlink()
        .add_route(&Route {
            dst: Some((to.into(), 32)),
            gateway: Some(gw.into()),
            dev: Some("eth0".into()),
        })
        .unwrap();
}

#[test]
fn an_isolated_network_keeps_its_sandboxes_apart() {
    require_root!();
    let state = TempDir::new("l2-iso");
    in_host(|| {
        let gw = Ipv4Addr::new(10, 246, 1, 1);
        let isolated = Bridge::new("pal-l2i")
            .unwrap()
            .subnet(subnet("10.246.1.0/24"))
            .state_dir(state.path())
            .isolate(true);
        assert!(isolated.is_isolated());
        let (a, b, c) = (Reaped::sandbox(), Reaped::sandbox(), Reaped::sandbox());
        let at_a = isolated.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        let at_b = isolated.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        let link = Netlink::open()
            .unwrap()
            .link(at_a.host_veth())
            .unwrap()
            .unwrap();
        assert_eq!(link.isolated, Some(true));
        serve(&b, 80);
        let ip_b = v4(&at_b);
        // Attack: straight over the bridge, and routed through the host.
        assert!(!reaches(&a, ip_b, 80), "A reached B over the bridge");
        route_via_gateway(&a, ip_b, gw);
        assert!(!reaches(&a, ip_b, 80), "A reached B through the host");
        // Control: the host reaches B.
        let to = SocketAddr::new(ip_b.into(), 80);
        assert!(TcpStream::connect_timeout(&to, Duration::from_millis(1000)).is_ok());
        // A sandbox asking for a network that is not isolated is refused, and leaves nothing.
        let open = Bridge::new("pal-l2i")
            .unwrap()
            .subnet(subnet("10.246.1.0/24"))
            .state_dir(state.path());
        match open.prepare(&[]).unwrap().attach(c.pid()) {
            Err(Error::IsolationMismatch { bridge, isolated }) => {
                assert_eq!((bridge.as_str(), isolated), ("pal-l2i", true));
            }
            other => panic!("expected IsolationMismatch, got {other:?}"),
        }
        assert!(Netlink::open()
            .unwrap()
            .link(&format!("pal-{}", c.pid()))
            .unwrap()
            .is_none());
        drop((at_a, at_b));

        // Control: without isolation, both paths work.
        let open = Bridge::new("pal-l2o")
            .unwrap()
            .subnet(subnet("10.246.2.0/24"))
            .state_dir(state.path());
        let gw = Ipv4Addr::new(10, 246, 2, 1);
        let (a, b) = (Reaped::sandbox(), Reaped::sandbox());
        let _at_a = open.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        let at_b = open.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        serve(&b, 80);
        let ip_b = v4(&at_b);
        assert!(reaches(&a, ip_b, 80), "control: over the bridge");
        route_via_gateway(&a, ip_b, gw);
        assert!(reaches(&a, ip_b, 80), "control: through the host");
    });
}
