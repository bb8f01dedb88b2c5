//! Bridge networks against the real kernel. Every test runs in a thread that has unshared a
//! network namespace of its own (a throwaway "host"); the "sandboxes" are child processes that
//! unshare a further namespace before they execute `sleep`. The host's own network is never
//! touched, and each test checks that its throwaway host holds nothing of Palisade's afterwards.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use palisade_netns::bridge::Bridge;
use palisade_netns::ipam::Subnet;
use palisade_netns::link::{Family, Netlink};
use palisade_netns::nft::Nftables;
use palisade_netns::{Error, PortMap, Proto};
use support::{in_netns_of, in_new_netns, join_netns, TempDir};

/// Runs `f` in a fresh thread with its own network namespace (lo up), which dies with it.
fn in_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        f()
    })
}

/// A process in a network namespace of its own, killed and reaped on drop.
struct FakeSandbox(Child);

impl FakeSandbox {
    fn start() -> FakeSandbox {
        let mut cmd = Command::new("sleep");
        cmd.arg("1000");
        // SAFETY: unshare(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        FakeSandbox(cmd.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn netlink(&self) -> Netlink {
        let ns = File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        Netlink::open_in(ns.as_fd()).unwrap()
    }
}

impl Drop for FakeSandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn subnet(s: &str) -> Subnet {
    s.parse().unwrap()
}

/// What a throwaway host shows of Palisade: `pal-*` and `palisade*` links, and nftables tables.
fn leftovers() -> (Vec<String>, Vec<String>) {
    let links = Netlink::open()
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with("pal"))
        .collect();
    (links, Nftables::open().unwrap().tables().unwrap())
}

#[test]
fn attach_configures_eth0_and_detach_removes_everything() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        let bridge = Bridge::new("pal-br0")
            .unwrap()
            .subnet(subnet("10.250.0.0/24"))
            .state_dir(state.path());
        let sb = FakeSandbox::start();
        let att = bridge.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        assert_eq!(att.address(), "10.250.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(att.gateway(), "10.250.0.1".parse::<IpAddr>().unwrap());

        let mut inside = sb.netlink();
        let eth0 = inside.link("eth0").unwrap().expect("eth0 in the sandbox");
        assert!(eth0.up);
        let addrs = inside.addresses("eth0").unwrap();
        assert!(addrs
            .iter()
            .any(|a| a.addr == att.address() && a.prefix == 24));
        let routes = inside.routes(Family::V4).unwrap();
        assert!(routes
            .iter()
            .any(|r| r.dst.is_none() && r.gateway == Some(att.gateway())));

        let mut nl = Netlink::open().unwrap();
        let br = nl.link("pal-br0").unwrap().expect("bridge");
        assert!(br.up);
        let veth = nl.link(att.host_veth()).unwrap().expect("host veth");
        assert_eq!(veth.master, Some(br.index));
        assert_eq!(Nftables::open().unwrap().tables().unwrap().len(), 1);
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/pal-br0/forwarding").unwrap();
        assert_eq!(fwd.trim(), "1");

        att.detach().unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
        assert!(std::fs::read_dir(state.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().ends_with(".ipam")));
    });
}

#[test]
fn a_user_bridge_is_reused_and_kept() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        let mut nl = Netlink::open().unwrap();
        nl.add_bridge("pal-user").unwrap();
        let bridge = Bridge::new("pal-user")
            .unwrap()
            .subnet(subnet("10.251.0.0/24"))
            .state_dir(state.path())
            .masquerade(false);
        let sb = FakeSandbox::start();
        let att = bridge.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        drop(att);
        let br = nl
            .link("pal-user")
            .unwrap()
            .expect("the user's bridge stays");
        assert!(br.alias.is_none());
        // Forwarding was 0 on the user's bridge: the library set it and put it back.
        let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/conf/pal-user/forwarding").unwrap();
        assert_eq!(fwd.trim(), "0");
        nl.delete_link("pal-user").unwrap();
    });
}

#[test]
fn concurrent_sandboxes_get_distinct_addresses() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        let bridge = Bridge::new("pal-br1")
            .unwrap()
            .subnet(subnet("10.252.0.0/24"))
            .state_dir(state.path());
        let sandboxes: Vec<FakeSandbox> = (0..4).map(|_| FakeSandbox::start()).collect();
        let atts: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = sandboxes
                .iter()
                .map(|sb| {
                    let bridge = bridge.clone();
                    let pid = sb.pid();
                    // Each attach runs in a thread of the throwaway host.
                    let host = File::open("/proc/thread-self/ns/net").unwrap();
                    s.spawn(move || {
                        join_netns(&host);
                        bridge.prepare(&[]).unwrap().attach(pid).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut addrs: Vec<IpAddr> = atts.iter().map(|a| a.address()).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 4, "{addrs:?}");
        drop(atts);
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

/// Serves one TCP echo exchange per accepted connection, `n` times.
fn echo_server(server: TcpListener, n: usize) -> std::thread::JoinHandle<Vec<IpAddr>> {
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..n {
            let (mut c, peer) = server.accept().unwrap();
            peers.push(peer.ip());
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.write_all(&buf).unwrap();
        }
        peers
    })
}

fn exchange(mut c: TcpStream) {
    c.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
}

#[test]
fn published_port_reaches_a_server_in_the_sandbox() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        // An outside client, on a link of its own to the throwaway host.
        let client = FakeSandbox::start();
        let mut nl = Netlink::open().unwrap();
        nl.add_veth_peer_in("pal-up", "eth0", client.pid()).unwrap();
        nl.add_address("pal-up", "192.168.77.1".parse().unwrap(), 24)
            .unwrap();
        nl.set_up("pal-up").unwrap();
        let mut c = client.netlink();
        c.add_address("eth0", "192.168.77.2".parse().unwrap(), 24)
            .unwrap();
        c.set_up("eth0").unwrap();

        let bridge = Bridge::new("pal-br2")
            .unwrap()
            .subnet(subnet("10.253.0.0/24"))
            .state_dir(state.path())
            .forward_from("pal-up");
        let sb = FakeSandbox::start();
        let prepared = bridge
            .prepare(&[PortMap::new(0, 8080, Proto::Tcp)])
            .unwrap();
        let host_port = prepared.ports()[0].host_port;
        assert_ne!(host_port, 0);
        let att = prepared.attach(sb.pid()).unwrap();
        let server = in_netns_of(sb.pid(), || TcpListener::bind(("0.0.0.0", 8080)).unwrap());
        let echo = echo_server(server, 2);
        // From the throwaway host itself: the forwarder serves local connections, even on
        // loopback, which DNAT cannot reach.
        exchange(TcpStream::connect(("127.0.0.1", host_port)).unwrap());
        // From outside: DNAT in the kernel; the sandbox sees the client's own address.
        let fwd = || std::fs::read_to_string("/proc/sys/net/ipv4/conf/pal-up/forwarding").unwrap();
        assert_eq!(fwd().trim(), "1");
        in_netns_of(client.pid(), || {
            exchange(TcpStream::connect(("192.168.77.1", host_port)).unwrap())
        });
        let peers = echo.join().unwrap();
        assert_eq!(peers[0], att.gateway());
        assert_eq!(peers[1], "192.168.77.2".parse::<IpAddr>().unwrap());

        // Outbound from the sandbox: masqueraded, the outside sees the host's address.
        let outside = in_netns_of(client.pid(), || {
            TcpListener::bind(("0.0.0.0", 9000)).unwrap()
        });
        let echo = echo_server(outside, 1);
        in_netns_of(sb.pid(), || {
            exchange(TcpStream::connect(("192.168.77.2", 9000)).unwrap())
        });
        assert_eq!(
            echo.join().unwrap(),
            vec!["192.168.77.1".parse::<IpAddr>().unwrap()]
        );

        // The same port cannot be published twice.
        let err = bridge
            .prepare(&[PortMap::new(host_port, 80, Proto::Tcp)])
            .unwrap_err();
        assert!(
            matches!(err, Error::PortInUse { port, .. } if port == host_port),
            "{err}"
        );
        drop(att);
        assert_eq!(
            fwd().trim(),
            "0",
            "forwarding put back with the last sandbox"
        );
        nl.delete_link("pal-up").unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn two_sandboxes_on_one_bridge_reach_each_other() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        let bridge = Bridge::new("pal-br4")
            .unwrap()
            .subnet(subnet("10.248.0.0/24"))
            .state_dir(state.path());
        let (a, b) = (FakeSandbox::start(), FakeSandbox::start());
        let att_a = bridge.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        let att_b = bridge.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        in_netns_of(a.pid(), || Netlink::open().unwrap().set_up("lo").unwrap());
        let server = in_netns_of(a.pid(), || TcpListener::bind(("0.0.0.0", 7)).unwrap());
        let echo = echo_server(server, 1);
        let a_ip = att_a.address();
        in_netns_of(b.pid(), || exchange(TcpStream::connect((a_ip, 7)).unwrap()));
        assert_eq!(echo.join().unwrap(), vec![att_b.address()]);
        drop((att_a, att_b));
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn bad_input_is_refused_before_anything_is_made() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        let err = Bridge::new("pal-name-too-long").unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidValue {
                    what: "link name",
                    ..
                }
            ),
            "{err}"
        );

        let a = Bridge::new("pal-a")
            .unwrap()
            .subnet(subnet("10.254.0.0/16"))
            .state_dir(state.path());
        let sb = FakeSandbox::start();
        let att = a.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        let b = Bridge::new("pal-b")
            .unwrap()
            .subnet(subnet("10.254.8.0/24"))
            .state_dir(state.path());
        let err = b.prepare(&[]).unwrap_err();
        assert!(matches!(err, Error::Overlap { .. }), "{err}");
        // A subnet that overlaps a route of the host (here: pal-a's, seen by another state dir).
        let other_state = TempDir::new("bridge");
        let err = b
            .clone()
            .state_dir(other_state.path())
            .prepare(&[])
            .unwrap_err();
        assert!(matches!(err, Error::RouteOverlap { .. }), "{err}");

        let twice = [
            PortMap::new(7000, 80, Proto::Tcp),
            PortMap::new(7000, 81, Proto::Tcp),
        ];
        let err = a.prepare(&twice).unwrap_err();
        assert!(
            matches!(err, Error::PortConflict { port: 7000, .. }),
            "{err}"
        );
        let err = a
            .clone()
            .subnet(subnet("fd00:1::/64"))
            .prepare(&[])
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidValue {
                    what: "bridge subnet",
                    ..
                }
            ),
            "{err}"
        );
        drop(att);
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn stale_state_of_a_dead_sandbox_is_cleaned() {
    require_root!();
    let state = TempDir::new("bridge");
    in_host(|| {
        let bridge = Bridge::new("pal-br3")
            .unwrap()
            .subnet(subnet("10.249.0.0/24"))
            .state_dir(state.path());
        let sb = FakeSandbox::start();
        let att = bridge.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        // A crashed manager: the attachment is never detached, the sandbox dies.
        std::mem::forget(att);
        drop(sb);
        assert_eq!(Nftables::open().unwrap().tables().unwrap().len(), 1);
        bridge.cleanup().unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}
