//! The network after the caller's death. A sandbox that publishes a port on a bridge gets DNAT
//! rules in an nftables table of its own. Were that table to outlive a caller killed with
//! SIGKILL, a later sandbox given the same address, without any `-p`, would receive the
//! traffic meant for the dead one's port. The table belongs to the caller's netlink socket
//! (`NFT_TABLE_F_OWNER`), so the kernel deletes it when the caller dies, however it dies. All of
//! it happens in a network namespace the test makes.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio as StdStdio;
use std::time::{Duration, Instant};

use crate::lifetime::{exits_within, kill, pidfd, self_probe};
use palisade::netns::ipam::Subnet;
use palisade::netns::link::Netlink;
use palisade::netns::nft::Nftables;
use palisade::netns::{Bridge, Network, Proto};
use palisade::{Sandbox, Stdio};
use palisade_test_support::{in_new_netns, require_root, TempDir};

/// The tables of this thread's network namespace that name `pid` as their owner (the
/// sandbox's init, whose address the table's rules lead to).
fn tables_of(pid: u32) -> Vec<String> {
    let prefix = format!("palisade-{pid}-");
    Nftables::open()
        .unwrap()
        .tables()
        .unwrap()
        .into_iter()
        .filter(|t| t.starts_with(&prefix))
        .collect()
}

#[test]
fn the_published_port_rules_of_a_killed_caller_die_with_it() {
    require_root!();
    let state = TempDir::new("net-death");
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        // The probe joins this thread's network namespace before it starts.
        let ns = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
        let mut cmd = self_probe("network::probe_caller_publishing_a_port");
        cmd.env("PALISADE_STATE", state.path());
        let raw = std::os::fd::AsRawFd::as_raw_fd(&ns);
        // SAFETY: setns(2) in the forked child before its exec; async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut caller = cmd
            .stdin(StdStdio::null())
            .stdout(StdStdio::piped())
            .stderr(StdStdio::null())
            .spawn()
            .unwrap();
        let caller_fd = pidfd(caller.id()).unwrap();
        let mut init = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut lines = BufReader::new(caller.stdout.take().unwrap()).lines();
        while Instant::now() < deadline {
            match lines.next() {
                Some(Ok(line)) if line == "ready" => break,
                Some(Ok(line)) => {
                    if let Some(pid) = line.strip_prefix("init ") {
                        init = pid.parse::<u32>().ok();
                    }
                }
                _ => break,
            }
        }
        let Some(init) = init else {
            kill(&caller_fd);
            let _ = caller.wait();
            panic!("the caller did not report its sandbox");
        };
        let init_fd = pidfd(init).unwrap();
        assert_eq!(
            tables_of(init).len(),
            1,
            "the caller's sandbox has its DNAT table"
        );

        kill(&caller_fd);
        caller.wait().unwrap();
        assert!(
            exits_within(&init_fd, Duration::from_secs(5)),
            "the sandbox outlived its caller"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tables_of(init).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            tables_of(init),
            Vec::<String>::new(),
            "the dead caller's DNAT table is still there"
        );
        // The bridge and its lease are the dead caller's leftovers: collected on request.
        let report = palisade::netns::gc_dir(state.path()).unwrap();
        assert!(!report.networks.is_empty(), "{report:?}");
    });
}

/// Runs only as a subprocess of `the_published_port_rules_of_a_killed_caller_die_with_it`, in
/// its network namespace: a sandbox on a bridge publishing a port, then waits to be killed.
#[test]
#[ignore = "run as a subprocess by the_published_port_rules_of_a_killed_caller_die_with_it"]
fn probe_caller_publishing_a_port() {
    assert!(std::env::var_os("PALISADE_PROBE_CALLER").is_some());
    println!();
    let state = std::env::var_os("PALISADE_STATE").unwrap();
    let subnet: Subnet = "10.247.0.0/24".parse().unwrap();
    let network = Network::bridge(
        Bridge::new("pal-esc0")
            .unwrap()
            .subnet(subnet)
            .state_dir(state),
    );
    let child = Sandbox::builder("sleep")
        .arg("300")
        .network(network)
        .publish(0, 80, Proto::Tcp)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    println!("init {}", child.id());
    println!("ready");
    std::thread::sleep(Duration::from_secs(60));
}
