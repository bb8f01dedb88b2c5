//! Persistent sandboxes (`docker run -d`): a bridge attachment whose port guard and NAT table
//! have no owning socket, so that they outlive the manager that made them, and stay for as long
//! as the sandbox's own process runs; then the next attach and `gc` collect them.
//!
//! Every test runs in a thread that has unshared a network namespace of its own (a throwaway
//! "host"); the managers that exit or are killed here are this test binary run again (an
//! ignored test) in that namespace, and the "sandboxes" are `sleep` processes in namespaces of
//! their own.

mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use common::{in_host, leftovers, listen_in, subnet, Outside, Reaped};
use palisade_netns::bridge::{gc_dir, Bridge};
use palisade_netns::ipam::{Allocator, Owner};
use palisade_netns::link::Netlink;
use palisade_netns::nft::{table_name, Nftables, TableInfo};
use palisade_netns::{Error, PortMap, Proto};
use palisade_test_support::frames::{self, arp, capture, packet_socket, seen, send, udp, Mac};
use palisade_test_support::{in_netns_of, require_root, TempDir};

const BRIDGE: &str = "pal-brp";
const SUBNET: &str = "10.254.7.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 254, 7, 1);
/// The first address handed out on [`SUBNET`].
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 254, 7, 2);

const ENV_NETNS: &str = "PALISADE_TEST_PERSIST_NETNS";
const ENV_SANDBOX: &str = "PALISADE_TEST_PERSIST_SANDBOX";
const ENV_STATE: &str = "PALISADE_TEST_PERSIST_STATE";
const ENV_MODE: &str = "PALISADE_TEST_PERSIST_MODE";

fn the_bridge(state: &Path) -> Bridge {
    Bridge::new(BRIDGE)
        .unwrap()
        .subnet(subnet(SUBNET))
        .state_dir(state)
}

/// The `ip` (NAT) and `bridge` (port guard) tables of `owner`, as the kernel lists them.
fn tables_of(owner: &Owner) -> (Option<TableInfo>, Option<TableInfo>) {
    let name = table_name(owner);
    let mut nft = Nftables::open().unwrap();
    let ip = nft
        .table_list()
        .unwrap()
        .into_iter()
        .find(|t| t.name == name);
    let guard = nft
        .bridge_table_list()
        .unwrap()
        .into_iter()
        .find(|t| t.name == name);
    (ip, guard)
}

/// Asserts that both tables of `owner` exist and that no socket owns them.
fn assert_persistent_tables(owner: &Owner) {
    let (ip, guard) = tables_of(owner);
    let ip = ip.expect("the NAT table");
    let guard = guard.expect("the port guard table");
    assert!(!ip.is_socket_owned() && ip.owner_port.is_none(), "{ip:?}");
    assert!(
        !guard.is_socket_owned() && guard.owner_port.is_none(),
        "{guard:?}"
    );
}

fn lease_pids(state: &Path) -> Vec<u32> {
    Allocator::open(state, BRIDGE, subnet(SUBNET))
        .unwrap()
        .leases()
        .unwrap()
        .iter()
        .map(|l| l.owner.pid)
        .collect()
}

fn link_exists(name: &str) -> bool {
    Netlink::open().unwrap().link(name).unwrap().is_some()
}

/// The manager, run by [`start_manager`] as a process of its own: attaches the sandbox
/// persistently, publishing its port 8080 on every address. With `ENV_MODE=release` it releases
/// the attachment, prints `ready <host port>` and exits; with `hold`, it prints the same and
/// waits to be killed, the attachment still held.
#[test]
#[ignore = "run by the persistence tests as a manager process of their own"]
fn persistent_manager_process() {
    let (Ok(netns), Ok(pid), Ok(state), Ok(mode)) = (
        std::env::var(ENV_NETNS),
        std::env::var(ENV_SANDBOX),
        std::env::var(ENV_STATE),
        std::env::var(ENV_MODE),
    ) else {
        return;
    };
    common::assert_manager_netns(&netns);
    let pid: u32 = pid.parse().unwrap();
    let prepared = the_bridge(state.as_ref())
        .prepare(&[PortMap::new(0, 8080, Proto::Tcp)])
        .unwrap()
        .persistent()
        .unwrap();
    assert!(prepared.is_persistent());
    let port = prepared.ports()[0].host_port;
    let att = prepared.attach(pid).unwrap();
    assert!(att.is_persistent());
    let held = if mode == "release" {
        let owner = att.release().unwrap();
        assert_eq!(owner.pid, pid);
        None
    } else {
        Some(att)
    };
    // Past the test harness's output capture, straight to the pipe of `start_manager`.
    let mut out = std::io::stdout();
    writeln!(out, "ready {port}").unwrap();
    out.flush().unwrap();
    if held.is_some() {
        loop {
            std::thread::sleep(Duration::from_secs(1000));
        }
    }
}

/// Runs [`persistent_manager_process`] in the calling thread's (throwaway) network namespace for
/// the sandbox `pid`; returns it with the host port it published.
fn start_manager(pid: u32, state: &Path, mode: &str) -> (Reaped, u16) {
    let env = [
        (ENV_SANDBOX, pid.to_string()),
        (ENV_STATE, state.display().to_string()),
        (ENV_MODE, mode.to_owned()),
    ];
    common::start_manager(
        "persistent_manager_process",
        ENV_NETNS,
        &env,
        mode == "release",
    )
}

/// The state files left in `state`.
fn state_files(state: &Path) -> Vec<String> {
    std::fs::read_dir(state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ipam") || n.ends_with(".restore"))
        .collect()
}

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
    let got = capture(&listen, Duration::from_millis(400));
    frames
        .iter()
        .filter(|(marker, _)| seen(&got, marker.as_bytes()))
        .map(|(m, _)| *m)
        .collect()
}

#[test]
fn a_released_sandbox_keeps_its_guard_and_nat_after_its_manager_exits_until_gc() {
    require_root!();
    let state = TempDir::new("persist");
    in_host(|| {
        let outside = Outside::new();
        let mut a = Reaped::sandbox();
        let server = listen_in(a.pid());
        let (mut manager, port) = start_manager(a.pid(), state.path(), "release");
        // The manager released the attachment and exits: every socket it had is closed.
        assert!(manager.0.wait().unwrap().success());
        let owner = Owner::of_pid(a.pid(), "a").unwrap();
        let name = table_name(&owner);
        assert_persistent_tables(&owner);
        assert_eq!(lease_pids(state.path()), vec![a.pid()]);
        assert!(link_exists(&format!("pal-{}", a.pid())));
        // The published port still leads to the sandbox, by DNAT alone.
        assert!(outside.reaches(port), "the persistent DNAT rule");

        // The guard still drops A's forged frames, and passes its own (the control), to a
        // sandbox B that this process attaches.
        let b = Reaped::sandbox();
        let at_b = the_bridge(state.path())
            .prepare(&[])
            .unwrap()
            .attach(b.pid())
            .unwrap();
        let IpAddr::V4(ip_b) = at_b.address() else {
            unreachable!()
        };
        let (mac_a, mac_b) = (mac_of(&a), mac_of(&b));
        let bcast = frames::BROADCAST;
        let frames = [
            (
                "garp-gateway",
                arp(
                    bcast,
                    mac_a,
                    2,
                    mac_a,
                    GATEWAY,
                    bcast,
                    GATEWAY,
                    b"garp-gateway",
                ),
            ),
            (
                "forged-ip",
                udp(mac_b, mac_a, GATEWAY, ip_b, 53, 9, b"forged-ip"),
            ),
            ("own-udp", udp(mac_b, mac_a, FIRST, ip_b, 9, 9, b"own-udp")),
            (
                "own-arp",
                arp(bcast, mac_a, 1, mac_a, FIRST, [0; 6], ip_b, b"own-arp"),
            ),
        ];
        assert_eq!(
            delivered(&a, &b, &frames),
            vec!["own-udp", "own-arp"],
            "what reached B from the released sandbox"
        );

        // Nothing to collect while the sandbox runs.
        let report = gc_dir(state.path()).unwrap();
        assert!(report.is_empty(), "{report:?}");
        assert_persistent_tables(&owner);

        drop(server);
        a.kill();
        let report = the_bridge(state.path()).gc().unwrap();
        assert_eq!(report.tables, vec![name], "{report:?}");
        assert_eq!(report.leases.len(), 1, "{report:?}");
        assert_eq!(report.leases[0].network, BRIDGE);
        assert_eq!(report.leases[0].lease.owner.pid, owner.pid);
        assert_eq!(report.leases[0].lease.ip, IpAddr::V4(FIRST));
        assert!(report.networks.is_empty(), "B still runs: {report:?}");
        assert_eq!(tables_of(&owner), (None, None));
        assert_eq!(lease_pids(state.path()), vec![b.pid()]);

        at_b.detach().unwrap();
        drop(outside);
        assert_eq!(leftovers(), (vec![], vec![]));
        assert!(gc_dir(state.path()).unwrap().is_empty());
        assert_eq!(state_files(state.path()), Vec::<String>::new());
    });
}

#[test]
fn a_killed_managers_persistent_sandbox_is_kept_then_collected_by_the_next_attach() {
    require_root!();
    let state = TempDir::new("persist");
    in_host(|| {
        let outside = Outside::new();
        let mut a = Reaped::sandbox();
        let server = listen_in(a.pid());
        let (mut manager, port) = start_manager(a.pid(), state.path(), "hold");
        let owner = Owner::of_pid(a.pid(), "a").unwrap();
        assert_persistent_tables(&owner);

        // SIGKILL: the sockets of its attachment close, and the tables stay (an owned table
        // goes within milliseconds, see lifetime.rs).
        manager.kill();
        std::thread::sleep(Duration::from_millis(300));
        assert_persistent_tables(&owner);
        assert!(outside.reaches(port), "the persistent DNAT rule");
        assert_eq!(lease_pids(state.path()), vec![a.pid()]);

        drop(server);
        a.kill();
        // The next attach collects both tables and the lease, and hands the address out again.
        let c = Reaped::sandbox();
        let at_c = the_bridge(state.path())
            .prepare(&[])
            .unwrap()
            .attach(c.pid())
            .unwrap();
        assert_eq!(tables_of(&owner), (None, None));
        assert_eq!(at_c.address(), IpAddr::V4(FIRST));
        assert_eq!(lease_pids(state.path()), vec![c.pid()]);
        assert!(
            !outside.reaches(port),
            "traffic for the dead sandbox's port"
        );

        at_c.detach().unwrap();
        drop(outside);
        assert_eq!(leftovers(), (vec![], vec![]));
        assert_eq!(state_files(state.path()), Vec::<String>::new());
    });
}

#[test]
fn a_port_on_a_loopback_address_is_refused_for_a_persistent_attachment() {
    require_root!();
    let state = TempDir::new("persist");
    in_host(|| {
        let br = the_bridge(state.path());
        for ip in [Ipv4Addr::LOCALHOST, Ipv4Addr::new(127, 0, 0, 2)] {
            let ports = [
                PortMap::new(18091, 80, Proto::Tcp),
                PortMap::new(18090, 80, Proto::Tcp).host_ip(ip),
            ];
            match br.prepare(&ports).unwrap().persistent() {
                Err(Error::InvalidValue { value, .. }) => {
                    assert!(value.contains("18090"), "{value}");
                    assert!(value.contains(&ip.to_string()), "{value}");
                }
                other => panic!("expected InvalidValue, got {other:?}"),
            }
            // Nothing left behind, and the ports are free again.
            assert_eq!(state_files(state.path()), Vec::<String>::new());
            TcpListener::bind((ip, 18090)).unwrap();
        }
        // Control: the same ports without the loopback one are accepted, and without
        // persistence the loopback one is too.
        let sb = Reaped::sandbox();
        let ports = [PortMap::new(18091, 80, Proto::Tcp)];
        let att = br
            .prepare(&ports)
            .unwrap()
            .persistent()
            .unwrap()
            .attach(sb.pid())
            .unwrap();
        assert!(att.is_persistent());
        att.detach().unwrap();
        let loopback = [PortMap::new(18090, 80, Proto::Tcp).host_ip(Ipv4Addr::LOCALHOST)];
        let att = br.prepare(&loopback).unwrap().attach(sb.pid()).unwrap();
        assert!(!att.is_persistent());
        att.detach().unwrap();
        assert_eq!(leftovers(), (vec![], vec![]));
        assert_eq!(state_files(state.path()), Vec::<String>::new());
    });
}

#[test]
fn a_persistent_attachment_is_torn_down_fully_while_its_sandbox_runs() {
    require_root!();
    let state = TempDir::new("persist");
    in_host(|| {
        let br = the_bridge(state.path());
        let ports = [PortMap::new(0, 8080, Proto::Tcp)];
        let sb = Reaped::sandbox();
        let owner = Owner::of_pid(sb.pid(), "sb").unwrap();
        let veth = format!("pal-{}", sb.pid());

        // By its handle.
        let att = br
            .prepare(&ports)
            .unwrap()
            .persistent()
            .unwrap()
            .attach(sb.pid())
            .unwrap();
        assert_eq!(att.owner().pid, sb.pid());
        assert_persistent_tables(&owner);
        assert!(link_exists(&veth));
        att.detach().unwrap();
        assert!(owner.is_alive());
        assert_eq!(tables_of(&owner), (None, None));
        assert_eq!(leftovers(), (vec![], vec![]));
        assert_eq!(state_files(state.path()), Vec::<String>::new());

        // Released, then by name, with a bridge value of its own (as another process would).
        let released = br
            .prepare(&ports)
            .unwrap()
            .persistent()
            .unwrap()
            .attach(sb.pid())
            .unwrap()
            .release()
            .unwrap();
        assert_eq!(
            (released.pid, released.start_time),
            (owner.pid, owner.start_time)
        );
        assert_persistent_tables(&owner);
        assert!(link_exists(&veth));
        assert_eq!(lease_pids(state.path()), vec![sb.pid()]);
        let another = the_bridge(state.path());
        another.detach_sandbox(&released).unwrap();
        assert!(owner.is_alive());
        assert_eq!(tables_of(&owner), (None, None));
        assert_eq!(leftovers(), (vec![], vec![]));
        assert_eq!(state_files(state.path()), Vec::<String>::new());
        // Gone already: nothing to do.
        another.detach_sandbox(&released).unwrap();
        assert_eq!(state_files(state.path()), Vec::<String>::new());

        // Control: an attachment that is not persistent belongs to its manager. Another may
        // not tear it down, and it cannot be released (it is detached instead).
        let att = br.prepare(&ports).unwrap().attach(sb.pid()).unwrap();
        match another.detach_sandbox(att.owner()) {
            Err(Error::InvalidValue { value, .. }) => assert_eq!(value, table_name(&owner)),
            other => panic!("expected InvalidValue, got {other:?}"),
        }
        let (ip, guard) = tables_of(&owner);
        assert!(ip.is_some_and(|t| t.is_socket_owned()));
        assert!(guard.is_some_and(|t| t.is_socket_owned()));
        assert!(link_exists(&veth));
        assert_eq!(lease_pids(state.path()), vec![sb.pid()]);
        match att.release() {
            Err(Error::InvalidValue { .. }) => {}
            other => panic!("expected InvalidValue, got {other:?}"),
        }
        assert_eq!(leftovers(), (vec![], vec![]));
        assert_eq!(state_files(state.path()), Vec::<String>::new());
    });
}
