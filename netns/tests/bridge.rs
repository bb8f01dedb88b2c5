//! Bridge networks against the real kernel. Every test runs in a thread that has unshared a
//! network namespace of its own (a throwaway "host"); the "sandboxes" are child processes that
//! unshare a further namespace before they execute `sleep`. The host's own network is never
//! touched, and each test checks that its throwaway host holds nothing of Palisade's afterwards.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};

use common::{in_host, links_and_tables, subnet, Reaped};
use palisade_netns::bridge::Bridge;
use palisade_netns::link::{Family, Netlink};
use palisade_netns::nft::Nftables;
use palisade_netns::{Error, PortMap, Proto};
use palisade_test_support::{in_netns_of, join_netns, require_root, TempDir};

/// What a throwaway host shows of Palisade: `pal-*` and `palisade*` links, and nftables tables.
fn leftovers() -> (Vec<String>, Vec<String>) {
    let (links, tables) = links_and_tables();
    let links = links.into_iter().filter(|n| n.starts_with("pal")).collect();
    (links, tables)
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
        let sb = Reaped::sandbox();
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
        let sb = Reaped::sandbox();
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
        let sandboxes: Vec<Reaped> = (0..4).map(|_| Reaped::sandbox()).collect();
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
        let client = Reaped::sandbox();
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
        let sb = Reaped::sandbox();
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
        let (a, b) = (Reaped::sandbox(), Reaped::sandbox());
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
        let sb = Reaped::sandbox();
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
        let sb = Reaped::sandbox();
        let att = bridge.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        // A crashed manager: the attachment is never detached, the sandbox dies.
        att.abandon();
        drop(sb);
        assert_eq!(Nftables::open().unwrap().tables().unwrap().len(), 1);
        bridge.cleanup().unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

// --- State files (issue 12, item 5) ----------------------------------------------------------

fn state_file(state: &TempDir, network: &str) -> std::path::PathBuf {
    state.path().join(format!("{network}.ipam"))
}

/// The IPv4 addresses of the sandbox's `eth0`, or none if it has no `eth0`.
fn eth0_addresses(sb: &Reaped) -> Vec<IpAddr> {
    let mut nl = sb.netlink();
    if nl.link("eth0").unwrap().is_none() {
        return Vec::new();
    }
    nl.addresses("eth0")
        .unwrap()
        .into_iter()
        .map(|a| a.addr)
        .filter(IpAddr::is_ipv4)
        .collect()
}

/// Sandbox A attached; its state file replaced by `damage`; sandbox B attaches and must get
/// another address; B's teardown must leave A its veth, `eth0` and address.
fn damaged_state_never_hands_out_a_used_address(name: &str, net: &str, damage: &[u8]) {
    let state = TempDir::new("bridge-damage");
    in_host(|| {
        let bridge = Bridge::new(name)
            .unwrap()
            .subnet(subnet(net))
            .state_dir(state.path());
        let a = Reaped::sandbox();
        let att_a = bridge.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        std::fs::write(state_file(&state, name), damage).unwrap();
        let b = Reaped::sandbox();
        let att_b = bridge.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        assert_ne!(att_a.address(), att_b.address());
        // The state was rebuilt from the veths: it records both leases again.
        let text = std::fs::read_to_string(state_file(&state, name)).unwrap();
        assert!(text.contains(&att_a.address().to_string()), "{text}");
        let a_veth = att_a.host_veth().to_owned();
        // B ends first: its teardown must not take A's veth, nor the bridge.
        drop(b);
        att_b.detach().unwrap();
        let mut nl = Netlink::open().unwrap();
        assert!(nl.link(&a_veth).unwrap().is_some(), "A's veth was removed");
        assert!(nl.link(name).unwrap().is_some(), "A's bridge was removed");
        assert_eq!(eth0_addresses(&a), vec![att_a.address()]);
        att_a.detach().unwrap();
        drop(a);
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn an_emptied_state_file_never_hands_out_an_address_in_use() {
    require_root!();
    damaged_state_never_hands_out_a_used_address("pal-st0", "10.200.0.0/24", b"");
}

#[test]
fn a_garbage_state_file_never_hands_out_an_address_in_use() {
    require_root!();
    damaged_state_never_hands_out_a_used_address(
        "pal-st1",
        "10.200.1.0/24",
        b"\x00\xffgarbage\nlease 1.2.3.4 x y\nsubnet nonsense\n",
    );
}

#[test]
fn a_deleted_state_file_never_hands_out_an_address_in_use() {
    require_root!();
    let state = TempDir::new("bridge-deleted");
    in_host(|| {
        let bridge = Bridge::new("pal-st2")
            .unwrap()
            .subnet(subnet("10.200.2.0/24"))
            .state_dir(state.path());
        let a = Reaped::sandbox();
        let att_a = bridge.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        std::fs::remove_file(state_file(&state, "pal-st2")).unwrap();
        let b = Reaped::sandbox();
        let att_b = bridge.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        assert_ne!(att_a.address(), att_b.address());
        att_b.detach().unwrap();
        assert_eq!(eth0_addresses(&a), vec![att_a.address()]);
        att_a.detach().unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn teardown_with_a_corrupt_state_removes_what_it_can_and_reports_it() {
    require_root!();
    let state = TempDir::new("bridge-corrupt-teardown");
    in_host(|| {
        let bridge = Bridge::new("pal-st3")
            .unwrap()
            .subnet(subnet("10.200.3.0/24"))
            .state_dir(state.path());
        let a = Reaped::sandbox();
        let att = bridge.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        std::fs::write(state_file(&state, "pal-st3"), b"garbage\n").unwrap();
        drop(a);
        match att.detach() {
            Err(Error::CorruptState { path, .. }) => {
                assert_eq!(path, state_file(&state, "pal-st3"))
            }
            other => panic!("expected CorruptState, got {other:?}"),
        }
        // The bridge, its table and the state went all the same.
        assert_eq!(leftovers(), (vec![], vec![]));
        assert!(!state_file(&state, "pal-st3").exists());
    });
}

#[test]
fn gc_recovers_networks_whose_state_file_is_corrupt() {
    require_root!();
    let state = TempDir::new("bridge-corrupt-gc");
    in_host(|| {
        let net = |name: &str, s: &str| {
            Bridge::new(name)
                .unwrap()
                .subnet(subnet(s))
                .state_dir(state.path())
        };
        let (live, dead) = (
            net("pal-gc1", "10.200.10.0/24"),
            net("pal-gc2", "10.200.11.0/24"),
        );
        let a = Reaped::sandbox();
        let att_a = live.prepare(&[]).unwrap().attach(a.pid()).unwrap();
        let mut gone = Reaped::sandbox();
        // A crashed manager on the second network: never detached, and its sandbox died.
        dead.prepare(&[])
            .unwrap()
            .attach(gone.pid())
            .unwrap()
            .abandon();
        gone.kill();
        for name in ["pal-gc1", "pal-gc2"] {
            std::fs::write(state_file(&state, name), b"garbage\n").unwrap();
        }
        let report = palisade_netns::gc_dir(state.path()).unwrap();
        assert_eq!(report.repaired, vec!["pal-gc1", "pal-gc2"]);
        assert_eq!(report.networks, vec!["pal-gc2"]);
        // The dead network is gone; the live one keeps its sandbox, and its rebuilt state gives
        // a second sandbox another address.
        assert!(Netlink::open().unwrap().link("pal-gc2").unwrap().is_none());
        assert!(!state_file(&state, "pal-gc2").exists());
        let b = Reaped::sandbox();
        let att_b = live.prepare(&[]).unwrap().attach(b.pid()).unwrap();
        assert_ne!(att_a.address(), att_b.address());
        assert_eq!(eth0_addresses(&a), vec![att_a.address()]);
        drop((att_a, att_b));
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn a_refused_prepare_leaves_no_state_file() {
    require_root!();
    let state = TempDir::new("bridge-refused");
    in_host(|| {
        let taken = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let bridge = Bridge::new("pal-st4")
            .unwrap()
            .subnet(subnet("10.200.4.0/24"))
            .state_dir(state.path());
        let r = bridge.prepare(&[PortMap::new(port, 80, Proto::Tcp)]);
        assert!(matches!(r, Err(Error::PortInUse { .. })), "{r:?}");
        assert!(!state_file(&state, "pal-st4").exists());
        // A subnet that overlaps a route of the host is refused after the state was opened:
        // the record goes again.
        let mut nl = Netlink::open().unwrap();
        nl.add_veth("pal-rt", "pal-rt-p").unwrap();
        nl.add_address("pal-rt", "10.200.9.1".parse().unwrap(), 24)
            .unwrap();
        nl.set_up("pal-rt").unwrap();
        nl.set_up("pal-rt-p").unwrap();
        let r = bridge.clone().subnet(subnet("10.200.9.0/24")).prepare(&[]);
        assert!(matches!(r, Err(Error::RouteOverlap { .. })), "{r:?}");
        assert!(!state_file(&state, "pal-st4").exists());
        nl.delete_link("pal-rt").unwrap();
        // The name is not tied to the refused subnets: another one is accepted.
        let other = bridge.clone().subnet(subnet("10.200.5.0/24"));
        let sb = Reaped::sandbox();
        let att = other.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        att.detach().unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}

#[test]
fn an_existing_link_that_is_not_a_bridge_is_refused() {
    require_root!();
    let state = TempDir::new("bridge-lo");
    in_host(|| {
        let mut nl = Netlink::open().unwrap();
        let before = nl.addresses("lo").unwrap();
        let bridge = Bridge::new("lo")
            .unwrap()
            .subnet(subnet("10.200.6.0/24"))
            .state_dir(state.path());
        match bridge.prepare(&[]) {
            Err(Error::NotABridge { name, .. }) => assert_eq!(name, "lo"),
            other => panic!("expected NotABridge, got {other:?}"),
        }
        assert_eq!(nl.addresses("lo").unwrap(), before);
        assert!(!state_file(&state, "lo").exists());
        // A veth is no bridge either.
        nl.add_veth("pal-notbr", "pal-notbr-p").unwrap();
        let r = Bridge::new("pal-notbr")
            .unwrap()
            .subnet(subnet("10.200.6.0/24"))
            .state_dir(state.path())
            .prepare(&[]);
        assert!(matches!(r, Err(Error::NotABridge { .. })), "{r:?}");
        assert!(nl.addresses("pal-notbr").unwrap().is_empty());
        nl.delete_link("pal-notbr").unwrap();
    });
}

#[test]
fn reserved_subnets_are_refused_before_anything_is_made() {
    require_root!();
    let state = TempDir::new("bridge-reserved");
    in_host(|| {
        for reserved in [
            "127.0.0.0/24",
            "169.254.0.0/24",
            "224.0.0.0/24",
            "0.0.0.0/24",
        ] {
            let r = Bridge::new("pal-st7")
                .unwrap()
                .subnet(subnet(reserved))
                .state_dir(state.path())
                .prepare(&[]);
            assert!(
                matches!(r, Err(Error::ReservedSubnet { .. })),
                "{reserved}: {r:?}"
            );
        }
        assert_eq!(leftovers(), (vec![], vec![]));
        assert!(!state_file(&state, "pal-st7").exists());
    });
}

#[test]
fn the_state_directory_is_private_and_lock_waits_are_bounded() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};
    require_root!();
    let state = TempDir::new("bridge-lock");
    in_host(|| {
        let timeout = Duration::from_millis(300);
        let bridge = Bridge::new("pal-st8")
            .unwrap()
            .subnet(subnet("10.200.8.0/24"))
            .state_dir(state.path())
            .lock_timeout(timeout);
        assert_eq!(bridge.get_lock_timeout(), timeout);
        let sb = Reaped::sandbox();
        let att = bridge.prepare(&[]).unwrap().attach(sb.pid()).unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(state.path()), 0o700);
        for entry in std::fs::read_dir(state.path()).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        // Another holder of the lock (any process that can open the file) never makes a spawn
        // or a teardown wait for ever.
        let lock = state.path().join("palisade-ipam.lock");
        let holder = File::options().read(true).write(true).open(&lock).unwrap();
        // SAFETY: flock on a descriptor `holder` owns.
        assert_eq!(unsafe { libc::flock(holder.as_raw_fd(), libc::LOCK_EX) }, 0);
        let sb2 = Reaped::sandbox();
        let t = Instant::now();
        match bridge.prepare(&[]).and_then(|p| p.attach(sb2.pid())) {
            Err(Error::LockTimeout { path, .. }) => assert_eq!(path, lock),
            other => panic!("expected LockTimeout, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(3));
        let t = Instant::now();
        match att.detach() {
            Err(Error::LockTimeout { path, .. }) => assert_eq!(path, lock),
            other => panic!("expected LockTimeout, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(3));
        drop(holder);
        drop(sb);
        // What the refused teardown left is collected once the lock is free.
        let report = bridge.gc().unwrap();
        assert_eq!(report.networks, vec!["pal-st8".to_owned()]);
        assert_eq!(leftovers(), (vec![], vec![]));
    });
}
