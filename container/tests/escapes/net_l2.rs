//! Layer 2 and IPv6 on a bridge. A sandbox holding `CAP_NET_RAW` can forge frames: a gratuitous
//! ARP or a forged MAC takes over another sandbox's address, or the gateway's, and a router
//! advertisement gives the host's bridge and the other sandboxes an IPv6 address and a default
//! route that outlive the sender. So `NET_RAW` is not in the default capability set (as podman
//! dropped it), the bridge, its veths and the sandboxes' `eth0` carry no IPv6 at all, and for a
//! sandbox that is given `NET_RAW` all the same, the bridge drops every frame from its port that
//! is not its own (the port guard of `palisade_netns::nft`).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::common::{probe, sh, stdout_of};
use palisade::netns::ipam::Subnet;
use palisade::netns::link::Netlink;
use palisade::netns::{Bridge, Network};
use palisade::Capability;
use palisade_test_support::frames::{self, Mac};
use palisade_test_support::{in_new_netns, require_root, TempDir};

/// Runs only inside a sandbox: tries to open a packet socket, the kind that forges frames
/// (`packet(7)`), and prints `packet open` or `packet refused`.
#[test]
#[ignore = "run inside a sandbox by a_default_sandbox_cannot_forge_frames"]
fn probe_packet_socket() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    println!();
    // SAFETY: socket(2) with plain values; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0x0300) };
    if fd >= 0 {
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        println!("packet open");
    } else {
        println!("packet refused");
    }
}

#[test]
fn a_default_sandbox_cannot_forge_frames() {
    require_root!();
    let out = stdout_of(&mut probe("net_l2::probe_packet_socket"));
    assert!(out.contains("\npacket refused\n"), "{out}");
    // Control: given NET_RAW on purpose, it can.
    let mut b = probe("net_l2::probe_packet_socket");
    b.cap_add(Capability::CAP_NET_RAW);
    let out = stdout_of(&mut b);
    assert!(out.contains("\npacket open\n"), "{out}");
}

/// The IPv6 addresses of this thread's network namespace, from `/proc/net/if_inet6` (one line
/// each: address, index, prefix, scope, flags, interface).
fn ipv6_addresses() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/net/if_inet6")
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_ipv6_on_the_bridge_its_veths_or_the_sandboxes() {
    require_root!();
    let state = TempDir::new("net-l2");
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let subnet: Subnet = "10.248.0.0/24".parse().unwrap();
        let network = || {
            Network::bridge(
                Bridge::new("pal-l2")
                    .unwrap()
                    .subnet(subnet)
                    .state_dir(state.path()),
            )
        };
        // Inside: only loopback's ::1 (or nothing at all), never an address on eth0.
        let mut b = sh("cat /proc/net/if_inet6; echo end");
        b.network(network());
        let out = stdout_of(&mut b);
        assert!(
            out.lines().all(|l| l == "end" || l.ends_with(" lo")),
            "the sandbox's eth0 has IPv6: {out}"
        );
        // On the host side, while a sandbox is attached: nothing on the bridge or the veth.
        let mut b = sh("sleep 5");
        b.network(network());
        let child = b.spawn().unwrap();
        let outside: Vec<String> = ipv6_addresses()
            .into_iter()
            .filter(|l| !l.ends_with(" lo"))
            .collect();
        drop(child);
        assert_eq!(
            outside,
            Vec::<String>::new(),
            "IPv6 on the host's side of the network"
        );
        // Control: the kernel does give a fresh link a link-local address when IPv6 is on (a
        // veth pair, up at both ends, so that it has a carrier).
        let mut nl = Netlink::open().unwrap();
        nl.add_veth("pal-v6ctl", "pal-v6peer").unwrap();
        nl.set_up("pal-v6peer").unwrap();
        nl.set_up("pal-v6ctl").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !ipv6_addresses().iter().any(|l| l.ends_with(" pal-v6ctl"))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            ipv6_addresses().iter().any(|l| l.ends_with(" pal-v6ctl")),
            "control: a fresh link got no link-local address"
        );
        nl.delete_link("pal-v6ctl").unwrap();
    });
}

/// Frames, each with the marker it carries.
type Marked = Vec<(&'static str, Vec<u8>)>;

/// The frames of the forging probe, attacks then controls. The probe's own address is read from
/// its `eth0`'s MAC address, which the library makes from it (`02:50:` and the four octets); the
/// victim's address comes in `PALISADE_VICTIM`.
fn forged_frames(mac: Mac, victim: Ipv4Addr) -> (Marked, Marked) {
    let own = Ipv4Addr::new(mac[2], mac[3], mac[4], mac[5]);
    let [a, b, c, _] = own.octets();
    let gw = Ipv4Addr::new(a, b, c, 1);
    let [w, x, y, z] = victim.octets();
    let victim_mac = [0x02, 0x50, w, x, y, z];
    let forged: Mac = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
    let bcast = frames::BROADCAST;
    let attacks = vec![
        (
            "garp-gateway",
            frames::arp(bcast, mac, 2, mac, gw, bcast, gw, b"garp-gateway"),
        ),
        (
            "arp-steal-victim",
            frames::arp(
                bcast,
                mac,
                2,
                mac,
                victim,
                bcast,
                victim,
                b"arp-steal-victim",
            ),
        ),
        (
            "forged-mac",
            frames::arp(bcast, forged, 1, forged, own, [0; 6], victim, b"forged-mac"),
        ),
        (
            "forged-ip",
            frames::udp(victim_mac, mac, gw, victim, 53, 9, b"forged-ip"),
        ),
        ("ra", frames::router_advertisement(mac, b"ra-from-sandbox")),
        (
            "vlan",
            frames::vlan(&frames::udp(victim_mac, mac, own, victim, 9, 9, b"vlan"), 7),
        ),
    ];
    let controls = vec![
        (
            "own-arp",
            frames::arp(bcast, mac, 1, mac, own, [0; 6], victim, b"own-arp"),
        ),
        (
            "own-udp",
            frames::udp(victim_mac, mac, own, victim, 9, 9, b"own-udp"),
        ),
    ];
    (attacks, controls)
}

/// Runs only inside a sandbox given `CAP_NET_RAW`: sends the forged frames and the controls
/// through a packet socket on `eth0`, and prints `sent N`.
#[test]
#[ignore = "run inside a sandbox by a_sandbox_given_net_raw_cannot_forge_frames_on_its_bridge"]
fn probe_forge_frames() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    println!();
    let victim: Ipv4Addr = std::env::var("PALISADE_VICTIM").unwrap().parse().unwrap();
    let mac = frames::sysfs_mac("eth0").expect("eth0's MAC address");
    let (attacks, controls) = forged_frames(mac, victim);
    let sock = frames::packet_socket("eth0").unwrap();
    let mut n = 0;
    for (_, f) in attacks.iter().chain(&controls) {
        frames::send(&sock, f).unwrap();
        n += 1;
    }
    println!("sent {n}");
}

#[test]
fn a_sandbox_given_net_raw_cannot_forge_frames_on_its_bridge() {
    require_root!();
    let state = TempDir::new("net-l2-forge");
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let network = || {
            Network::bridge(
                Bridge::new("pal-l2f")
                    .unwrap()
                    .subnet("10.248.1.0/24".parse().unwrap())
                    .state_dir(state.path()),
            )
        };
        // The victim: a plain sandbox. What the bridge sends it is captured on its host veth.
        let mut victim = sh("sleep 30");
        victim.network(network());
        let mut victim = victim.spawn().unwrap();
        let std::net::IpAddr::V4(victim_ip) = victim.address().unwrap() else {
            unreachable!()
        };
        let port = format!("pal-{}", victim.id());
        let tap = frames::packet_socket(&port).unwrap();
        // The attacker, given NET_RAW on purpose.
        let mut attacker = probe("net_l2::probe_forge_frames");
        attacker
            .network(network())
            .cap_add(Capability::CAP_NET_RAW)
            .env("PALISADE_VICTIM", victim_ip.to_string());
        let out = stdout_of(&mut attacker);
        assert!(out.contains("\nsent 8\n"), "{out}");
        let got = frames::capture(&tap, Duration::from_millis(500));
        let (attacks, controls) = forged_frames([0; 6], victim_ip);
        // Controls: the attacker's own frames did reach the victim's port.
        for (marker, _) in &controls {
            assert!(
                frames::seen(&got, marker.as_bytes()),
                "control {marker} not delivered"
            );
        }
        for (marker, _) in &attacks {
            let marker = if *marker == "ra" {
                "ra-from-sandbox"
            } else {
                marker
            };
            assert!(
                !frames::seen(&got, marker.as_bytes()),
                "forged frame {marker} delivered"
            );
        }
        // And the advertisement left no address or route on the host's side.
        let inet6 = std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default();
        assert!(!inet6.contains("20010db80bad"), "{inet6}");
        let routes =
            std::fs::read_to_string("/proc/thread-self/net/ipv6_route").unwrap_or_default();
        assert!(!routes.contains("20010db80bad"), "{routes}");
        victim.signal(palisade::Signal::SIGKILL).unwrap();
        victim.wait().unwrap();
    });
}
