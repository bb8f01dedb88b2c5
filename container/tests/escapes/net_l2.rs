//! Layer 2 and IPv6 on a bridge. A sandbox holding `CAP_NET_RAW` can forge frames: a gratuitous
//! ARP or a forged MAC takes over another sandbox's address, or the gateway's, and a router
//! advertisement gives the host's bridge and the other sandboxes an IPv6 address and a default
//! route that outlive the sender. So `NET_RAW` is not in the default capability set (as podman
//! dropped it), and the bridge, its veths and the sandboxes' `eth0` carry no IPv6 at all.

use crate::require_root;

use crate::common::{probe, sh, stdout_of};
use crate::support::{in_new_netns, TempDir};
use palisade::netns::ipam::Subnet;
use palisade::netns::link::Netlink;
use palisade::netns::{Bridge, Network};
use palisade::Capability;

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
