//! Helpers of palisade-netns's integration tests (included as `mod common;`; the container's
//! escape tests include it too): a throwaway "host" namespace, fake sandboxes, and a LAN peer.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use std::net::Ipv4Addr;

use palisade_netns::ipam::Subnet;
use palisade_netns::link::{Netlink, Route};
use palisade_netns::nft::Nftables;

use palisade_test_support::in_new_netns;

/// Runs `f` in a fresh thread with its own network namespace (lo up), which dies with it.
pub fn in_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        f()
    })
}

/// A child process, killed and reaped on drop.
pub struct Reaped(pub Child);

impl Reaped {
    /// A fake sandbox: `sleep` in a network namespace of its own.
    pub fn sandbox() -> Reaped {
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
        Reaped(cmd.spawn().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// A netlink socket in the process's network namespace.
    pub fn netlink(&self) -> Netlink {
        let ns = File::open(format!("/proc/{}/ns/net", self.pid())).unwrap();
        Netlink::open_in(ns.as_fd()).unwrap()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The names of the calling thread's namespace's links, and of Palisade's nftables tables
/// there (`ip` and `bridge` families), sorted.
pub fn links_and_tables() -> (Vec<String>, Vec<String>) {
    let mut links: Vec<String> = Netlink::open()
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    let mut nft = Nftables::open().unwrap();
    let mut tables = nft.tables().unwrap();
    tables.extend(nft.bridge_tables().unwrap());
    links.sort();
    tables.sort();
    (links, tables)
}

pub fn subnet(s: &str) -> Subnet {
    s.parse().unwrap()
}

/// The throwaway host's address on the LAN link `pal-lan` (a documentation range).
pub const HOST_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The LAN peer's address.
pub const PEER_LAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// The throwaway host (the calling thread's namespace, lo up) with a LAN peer on `pal-lan`,
/// whose routes to `routed` go through the host; the host's default route points at the peer,
/// which makes `pal-lan` the host's uplink.
pub fn host_with_peer(routed: &[&str]) -> Reaped {
    let mut nl = Netlink::open().unwrap();
    nl.set_up("lo").unwrap();
    let peer = Reaped::sandbox();
    nl.add_veth_peer_in("pal-lan", "eth0", peer.pid()).unwrap();
    nl.add_address("pal-lan", HOST_LAN.into(), 24).unwrap();
    nl.set_up("pal-lan").unwrap();
    nl.add_route(&Route {
        dst: None,
        gateway: Some(PEER_LAN.into()),
        dev: Some("pal-lan".into()),
    })
    .unwrap();
    let mut p = peer.netlink();
    p.set_up("lo").unwrap();
    p.add_address("eth0", PEER_LAN.into(), 24).unwrap();
    p.set_up("eth0").unwrap();
    for net in routed {
        let s: Subnet = net.parse().unwrap();
        p.add_route(&Route {
            dst: Some((s.network(), s.prefix())),
            gateway: Some(HOST_LAN.into()),
            dev: Some("eth0".into()),
        })
        .unwrap();
    }
    peer
}

/// The outside's address on its link to the throwaway host, and the host's there.
pub const CLIENT: &str = "192.168.78.2";
/// The throwaway host's address on the outside's link.
pub const CLIENT_HOST: &str = "192.168.78.1";

/// The throwaway host's outside: a client on a link of its own, `pal-up`.
pub struct Outside {
    client: Reaped,
}

impl Outside {
    pub fn new() -> Outside {
        let client = Reaped::sandbox();
        let mut nl = Netlink::open().unwrap();
        nl.add_veth_peer_in("pal-up", "eth0", client.pid()).unwrap();
        nl.add_address("pal-up", CLIENT_HOST.parse().unwrap(), 24)
            .unwrap();
        nl.set_up("pal-up").unwrap();
        let ns = File::open(format!("/proc/{}/ns/net", client.pid())).unwrap();
        let mut c = Netlink::open_in(ns.as_fd()).unwrap();
        c.add_address("eth0", CLIENT.parse().unwrap(), 24).unwrap();
        c.set_up("eth0").unwrap();
        // The throwaway host's own setting, so that DNAT of what arrives there is forwarded
        // (a manager without ports does not turn it on).
        std::fs::write("/proc/sys/net/ipv4/conf/pal-up/forwarding", "1").unwrap();
        Outside { client }
    }

    /// Whether a TCP connection from outside to the host's `port` reaches a listener.
    pub fn reaches(&self, port: u16) -> bool {
        let to = std::net::SocketAddr::new(CLIENT_HOST.parse().unwrap(), port);
        palisade_test_support::in_netns_of(self.client.pid(), || {
            std::net::TcpStream::connect_timeout(&to, std::time::Duration::from_secs(2)).is_ok()
        })
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        if let Ok(mut nl) = Netlink::open() {
            let _ = nl.delete_link("pal-up");
        }
    }
}

/// A listener on port 8080 of the sandbox `pid`: a connection to it completes without `accept`.
pub fn listen_in(pid: u32) -> std::net::TcpListener {
    palisade_test_support::in_netns_of(pid, || {
        std::net::TcpListener::bind(("0.0.0.0", 8080)).unwrap()
    })
}

/// The links and tables of Palisade's left in the throwaway host, but the outside's link.
pub fn leftovers() -> (Vec<String>, Vec<String>) {
    let (links, tables) = links_and_tables();
    let links = links
        .into_iter()
        .filter(|n| n.starts_with("pal") && n != "pal-up")
        .collect();
    (links, tables)
}

/// The inode of the namespace file at `path`: its identity.
pub fn netns_inode(path: &str) -> u64 {
    use std::os::linux::fs::MetadataExt;
    std::fs::metadata(path).unwrap().st_ino()
}

/// Starts the ignored test `name` of this test binary as a process of its own (a "manager"
/// that must outlive nothing of the test's but what it is given), with `env` and, as
/// `netns_var`, the identity of the calling thread's network namespace, which the manager
/// checks with [`assert_manager_netns`]. Returns it once it printed `ready <port>`, and the
/// port. With `drain`, the rest of its output is read first, so that a manager that exits on
/// its own does not meet a closed pipe.
pub fn start_manager(
    name: &str,
    netns_var: &str,
    env: &[(&str, String)],
    drain: bool,
) -> (Reaped, u16) {
    use std::io::{BufRead, BufReader};
    let mut manager = Reaped(
        palisade_test_support::ignored_test_command(&std::env::current_exe().unwrap(), name)
            .env(
                netns_var,
                netns_inode("/proc/thread-self/ns/net").to_string(),
            )
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = manager.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        // The harness's "test NAME ... " precedes it on the same line.
        if let Some((_, port)) = line.split_once("ready ") {
            if drain {
                lines.for_each(drop);
            }
            return (manager, port.parse().unwrap());
        }
    }
    panic!("the manager {name} exited before it was ready");
}

/// In a manager process: never act on any network namespace but the test's throwaway one,
/// whose identity `netns` the test passed on.
pub fn assert_manager_netns(netns: &str) {
    assert_eq!(
        netns_inode("/proc/thread-self/ns/net").to_string(),
        netns,
        "not in the test's network namespace"
    );
}
