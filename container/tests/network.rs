//! Sandbox networking against the real kernel, never on the host's own network: each test runs
//! in a thread that has unshared a network namespace of its own (a throwaway "host"), spawns its
//! sandboxes from there, and checks that the throwaway host holds nothing of Palisade's after.
//! Allocation state goes to a temporary directory.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{sh, stdout_of};
use palisade::netns::ipam::Subnet;
use palisade::netns::link::Netlink;
use palisade::netns::{Bridge, Network, Proto};
use palisade::overlay::rootfs::Access;
use palisade::{Error, Sandbox, SandboxBuilder, Stdio};
use palisade_test_support::{
    in_netns_of, in_new_netns, require_root, run_ignored_test_as, TempDir,
};

/// Runs `f` in a fresh thread with its own network namespace (lo up), which dies with it; then
/// checks that it held no `pal*` link and no nftables table.
fn in_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let out = f();
        common::assert_no_network_leftovers();
        out
    })
}

fn bridge(name: &str, subnet: &str, state: &TempDir) -> Network {
    let subnet: Subnet = subnet.parse().unwrap();
    Network::bridge(
        Bridge::new(name)
            .unwrap()
            .subnet(subnet)
            .state_dir(state.path()),
    )
}

/// Connects to `addr` until a server answers `request` with a non-empty reply (the server in the
/// sandbox starts listening some time after the spawn).
fn ask_tcp(ip: IpAddr, port: u16, request: &[u8]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = TcpStream::connect((ip, port)) {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = c.write_all(request);
            let _ = c.shutdown(std::net::Shutdown::Write);
            let mut reply = String::new();
            if c.read_to_string(&mut reply).is_ok() && !reply.is_empty() {
                return reply;
            }
        }
        assert!(Instant::now() < deadline, "no answer from {ip}:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `request` to `127.0.0.1:port` until a datagram answers (the server in the sandbox
/// starts some time after the spawn), and returns the answer.
fn ask_udp(port: u16, request: &[u8]) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 64];
    loop {
        sock.send_to(request, ("127.0.0.1", port)).unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
        assert!(Instant::now() < deadline, "no UDP answer");
    }
}

#[test]
fn bridge_gives_eth0_an_address_and_a_default_route() {
    require_root!();
    let state = TempDir::new("net");
    in_host(|| {
        let mut b = sh("ls /sys/class/net; cat /proc/net/route; cat /sys/class/net/eth0/operstate");
        b.network(bridge("pal-t0", "10.240.0.0/24", &state));
        let out = stdout_of(&mut b);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], ["eth0", "lo"]);
        // /proc/net/route: the default route via 10.240.0.1 (hex, little-endian) on eth0.
        assert!(
            out.lines()
                .any(|l| l.starts_with("eth0\t00000000\t0100F00A")),
            "{out}"
        );
        assert_eq!(lines.last(), Some(&"up"));
        let child = sleeper(&mut sh("cat"), bridge("pal-t0", "10.240.0.0/24", &state));
        assert_eq!(
            child.address(),
            Some(IpAddr::V4(Ipv4Addr::new(10, 240, 0, 2)))
        );
    });
}

fn sleeper(b: &mut SandboxBuilder, network: Network) -> palisade::Child {
    b.network(network).stdin(Stdio::piped()).spawn().unwrap()
}

#[test]
fn two_sandboxes_on_one_bridge_talk_over_tcp() {
    require_root!();
    let state = TempDir::new("net");
    in_host(|| {
        let net = || bridge("pal-t1", "10.241.0.0/24", &state);
        let mut server = Sandbox::builder("busybox");
        server
            .args(["nc", "-ll", "-p", "7", "-e", "/bin/cat"])
            .network(net());
        let server = server.spawn().unwrap();
        let ip = server.address().unwrap();
        let script = format!(
            "for i in $(seq 100); do r=$(echo hello | busybox nc -w 2 {ip} 7) && [ -n \"$r\" ] \
             && echo $r && exit 0; sleep 0.05; done; exit 1"
        );
        let mut client = sh(&script);
        client.network(net());
        assert_eq!(stdout_of(&mut client), "hello\n");
        drop(server);
    });
}

#[test]
fn concurrent_sandboxes_get_distinct_addresses() {
    require_root!();
    let state = TempDir::new("net");
    in_host(|| {
        let children: Vec<_> = (0..6)
            .map(|_| sleeper(&mut sh("cat"), bridge("pal-t2", "10.242.0.0/24", &state)))
            .collect();
        let mut addrs: Vec<IpAddr> = children.iter().filter_map(|c| c.address()).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 6, "{addrs:?}");
    });
}

#[test]
fn published_ports_reach_servers_in_the_sandbox() {
    require_root!();
    let state = TempDir::new("net");
    in_host(|| {
        // On a bridge: TCP, published on a port the kernel picks.
        let mut b = Sandbox::builder("busybox");
        b.args(["nc", "-ll", "-p", "80", "-e", "/bin/echo", "from-bridge"])
            .network(bridge("pal-t3", "10.243.0.0/24", &state))
            .publish(0, 80, Proto::Tcp);
        let child = b.spawn().unwrap();
        let port = child.ports()[0].host_port;
        assert_ne!(port, 0);
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(ask_tcp(localhost, port, b""), "from-bridge\n");

        // The same host port cannot be published by a second sandbox.
        let mut second = sh("true");
        second
            .network(bridge("pal-t3", "10.243.0.0/24", &state))
            .publish(port, 80, Proto::Tcp);
        let err = second.spawn().unwrap_err();
        assert!(
            matches!(&err, Error::Network(palisade::netns::Error::PortInUse { port: p, .. }) if *p == port),
            "{err}"
        );
        drop(child);

        // With only loopback: the forwarder connects inside the sandbox's namespace.
        let mut b = Sandbox::builder("busybox");
        b.args(["nc", "-ll", "-p", "81", "-e", "/bin/echo", "from-loopback"])
            .publish(0, 81, Proto::Tcp);
        let child = b.spawn().unwrap();
        let port = child.ports()[0].host_port;
        assert_eq!(ask_tcp(localhost, port, b""), "from-loopback\n");
        drop(child);
    });
}

#[test]
fn published_udp_port_relays_datagrams_both_ways() {
    require_root!();
    let state = TempDir::new("net");
    in_host(|| {
        // The server is a socket of the test's, made by a thread that joined the sandbox's
        // network namespace (this machine's busybox nc has no UDP).
        let mut b = Sandbox::builder("cat");
        b.stdin(Stdio::piped())
            .network(bridge("pal-t4", "10.244.0.0/24", &state))
            .publish(0, 53, Proto::Udp);
        let child = b.spawn().unwrap();
        let server = in_netns_of(child.id(), || UdpSocket::bind("0.0.0.0:53").unwrap());
        let answer = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let mut reply = b"pong ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            server.send_to(&reply, from).unwrap();
        });
        let reply = ask_udp(child.ports()[0].host_port, b"ping\n");
        assert_eq!(reply, "pong ping\n");
        answer.join().unwrap();
        drop(child);
    });
}

#[test]
fn bad_network_input_gets_typed_errors_and_leaves_nothing() {
    require_root!();
    let state = TempDir::new("net");
    in_host(|| {
        let err = Bridge::new("pal-much-too-long-name").unwrap_err();
        assert!(
            matches!(err, palisade::netns::Error::InvalidValue { .. }),
            "{err}"
        );

        let keep = sleeper(&mut sh("cat"), bridge("pal-t5", "10.245.0.0/16", &state));
        let mut b = sh("true");
        b.network(bridge("pal-t6", "10.245.3.0/24", &state));
        let err = b.spawn().unwrap_err();
        assert!(
            matches!(&err, Error::Network(palisade::netns::Error::Overlap { .. })),
            "{err}"
        );
        let mut b = sh("true");
        b.publish(8080, 80, Proto::Tcp)
            .publish(8080, 81, Proto::Tcp);
        let err = b.spawn().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Network(palisade::netns::Error::PortConflict { port: 8080, .. })
            ),
            "{err}"
        );
        let mut b = sh("true");
        b.network(Network::host()).publish(8080, 80, Proto::Tcp);
        let err = b.spawn().unwrap_err();
        assert!(
            matches!(
                &err,
                Error::InvalidValue {
                    what: "network",
                    ..
                }
            ),
            "{err}"
        );
        drop(keep);
    });
}

#[test]
fn rootless_sandboxes_publish_ports() {
    require_root!();
    // The unprivileged run inherits this thread's throwaway network namespace, where the
    // forwarder binds its ports.
    let (passed, text) = in_host(|| {
        run_ignored_test_as(
            64_001,
            "rootless_ports_inner",
            &[("PALISADE_ROOTLESS_INNER", "1")],
        )
    });
    assert!(passed, "{text}");
}

/// Runs only as the unprivileged user set up by `rootless_sandboxes_publish_ports`: the
/// forwarder may not join the sandbox's network namespace, so the sandbox's init makes its
/// sockets there.
#[test]
#[ignore = "run by rootless_sandboxes_publish_ports"]
fn rootless_ports_inner() {
    assert!(std::env::var_os("PALISADE_ROOTLESS_INNER").is_some());
    // SAFETY: a getter with no failure mode.
    assert_ne!(unsafe { libc::geteuid() }, 0, "must run unprivileged");
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);

    let mut b = Sandbox::builder("busybox");
    b.args(["nc", "-ll", "-p", "81", "-e", "/bin/echo", "from-rootless"])
        .rootless()
        .publish(0, 81, Proto::Tcp);
    let child = b.spawn().unwrap();
    let port = child.ports()[0].host_port;
    for _ in 0..3 {
        assert_eq!(ask_tcp(localhost, port, b""), "from-rootless\n");
    }
    drop(child);

    // The UDP server is this test binary, run in the sandbox as `udp_echo_server`.
    let exe = std::env::current_exe().unwrap();
    let mut b = Sandbox::builder(Path::new("/mnt").join(exe.file_name().unwrap()));
    b.args([
        "--exact",
        "udp_echo_server",
        "--ignored",
        "--test-threads=1",
    ])
    .env("PALISADE_UDP_ECHO", "1")
    .rootless()
    .volume(exe.parent().unwrap(), "/mnt", Access::ReadOnly)
    .stdout(Stdio::null())
    .publish(0, 5353, Proto::Udp);
    let mut child = b.spawn().unwrap();
    let reply = ask_udp(child.ports()[0].host_port, b"ping");
    assert_eq!(reply, "pong ping");
    assert!(child.wait().unwrap().success());
}

/// Runs only inside the sandbox of `rootless_ports_inner`: answers one datagram on port 5353.
#[test]
#[ignore = "run inside a sandbox by rootless_ports_inner"]
fn udp_echo_server() {
    assert!(std::env::var_os("PALISADE_UDP_ECHO").is_some());
    let server = UdpSocket::bind("0.0.0.0:5353").unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    let mut reply = b"pong ".to_vec();
    reply.extend_from_slice(&buf[..n]);
    server.send_to(&reply, from).unwrap();
}

/// Whether a connection to `127.0.0.1:port` is relayed: what it writes comes back from the echo
/// server in the sandbox. Returns the live connection, or `None` if the forwarder closed it.
fn relayed(port: u16) -> Option<TcpStream> {
    let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(b"x").ok()?;
    let mut buf = [0u8; 1];
    match c.read(&mut buf) {
        Ok(1) if buf == *b"x" => Some(c),
        _ => None,
    }
}

#[test]
fn forwarder_limits_set_on_the_builder_bound_the_published_ports() {
    require_root!();
    let state = TempDir::new("net-limits");
    in_host(|| {
        let networks = [Network::none(), bridge("pal-lim", "10.243.7.0/24", &state)];
        for network in networks {
            let mut b = Sandbox::builder("busybox");
            b.args(["nc", "-ll", "-p", "80", "-e", "/bin/cat"])
                .network(network)
                .publish(0, 80, Proto::Tcp)
                .forwarder_limits(
                    palisade::netns::ForwarderLimits::default().max_tcp_connections(2),
                );
            let child = b.spawn().unwrap();
            let port = child.ports()[0].host_port;
            // The server starts some time after the spawn.
            let deadline = Instant::now() + Duration::from_secs(10);
            let first = loop {
                if let Some(c) = relayed(port) {
                    break c;
                }
                assert!(Instant::now() < deadline, "no answer on {port}");
                std::thread::sleep(Duration::from_millis(50));
            };
            let second = relayed(port).expect("the second connection");
            assert!(relayed(port).is_none(), "a third connection was relayed");
            // Control: once one ends, there is room again.
            drop(first);
            let deadline = Instant::now() + Duration::from_secs(5);
            while relayed(port).is_none() {
                assert!(
                    Instant::now() < deadline,
                    "no room after a connection ended"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(second);
            drop(child);
        }
    });
}
