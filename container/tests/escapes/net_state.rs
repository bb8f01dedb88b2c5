//! The bridge network's state files. The allocation state (`<state dir>/<network>.ipam`) is one
//! record of which sandbox holds which address; an attacker who deletes, empties or corrupts it
//! while sandboxes run wants the next sandbox to be handed an address in use (and its teardown
//! to take the first sandbox's `eth0`), or wants the corruption to turn a command's exit status
//! into a spawn error and leave the bridge behind. The host-side veth of every sandbox records
//! its lease in its alias, out of the sandbox's reach, and the library rebuilds the state from
//! it; a teardown failure is reported beside the status, never in its place. All of it happens
//! in a network namespace the test makes, with a temporary state directory.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use palisade::netns::ipam::Subnet;
use palisade::netns::link::Netlink;
use palisade::netns::{Bridge, Network};
use palisade::{Child, Sandbox, Signal, Stdio};
use palisade_test_support::{in_netns_of, in_new_netns, require_root, TempDir};

fn bridge(name: &str, subnet: &str, state: &Path) -> Network {
    let subnet: Subnet = subnet.parse().unwrap();
    Network::bridge(Bridge::new(name).unwrap().subnet(subnet).state_dir(state))
}

fn sleeper(network: Network) -> Child {
    let mut b = Sandbox::builder("sleep");
    b.arg("1000").network(network).stdin(Stdio::null());
    b.spawn().unwrap()
}

/// The IPv4 addresses of `eth0` in the sandbox whose init is `pid` (none without `eth0`).
fn eth0_of(pid: u32) -> Vec<IpAddr> {
    in_netns_of(pid, || {
        let mut nl = Netlink::open().unwrap();
        if nl.link("eth0").unwrap().is_none() {
            return Vec::new();
        }
        nl.addresses("eth0")
            .unwrap()
            .into_iter()
            .map(|a| a.addr)
            .filter(IpAddr::is_ipv4)
            .collect()
    })
}

/// The state directory and every file in it are root's alone.
fn assert_private(dir: &Path) {
    let meta = std::fs::metadata(dir).unwrap();
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.uid(), 0);
        assert_eq!(meta.mode() & 0o7777, 0o600, "{}", path.display());
    }
}

fn kill_and_wait(mut c: Child) {
    c.signal(Signal::SIGKILL).unwrap();
    c.wait().unwrap();
}

fn state_file(state: &TempDir, network: &str) -> PathBuf {
    state.path().join(format!("{network}.ipam"))
}

#[test]
fn tampering_with_the_state_never_hands_out_an_address_in_use() {
    require_root!();
    let state = TempDir::new("net-state-tamper");
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let net = || bridge("pal-ns0", "10.238.0.0/24", state.path());
        let a = sleeper(net());
        let a_ip = a.address().unwrap();
        assert_private(state.path());
        for damage in [&b""[..], b"\xff\xfe garbage\nsubnet 1.2.3.4/99\n"] {
            // The attack: empty the record (then fill it with garbage) while A runs.
            std::fs::write(state_file(&state, "pal-ns0"), damage).unwrap();
            let b = sleeper(net());
            assert_ne!(b.address(), Some(a_ip), "B was given A's address");
            // B's end must not take A's network with it.
            kill_and_wait(b);
            assert_eq!(eth0_of(a.id()), vec![a_ip], "A lost its eth0 or address");
            assert_private(state.path());
        }

        // Positive control: without the veth's record (its alias cleared, as an older version
        // made it) the same emptied state does hand A's address out again.
        let a_veth = format!("pal-{}", a.id());
        Netlink::open().unwrap().set_alias(&a_veth, "").unwrap();
        std::fs::write(state_file(&state, "pal-ns0"), b"").unwrap();
        let c = sleeper(net());
        assert_eq!(c.address(), Some(a_ip), "the control did not collide");
        kill_and_wait(c);
        kill_and_wait(a);
        Bridge::new("pal-ns0")
            .unwrap()
            .subnet("10.238.0.0/24".parse().unwrap())
            .state_dir(state.path())
            .gc()
            .unwrap();
        crate::common::assert_no_network_leftovers();
    });
}

#[test]
fn a_teardown_error_never_replaces_the_exit_status() {
    require_root!();
    let state = TempDir::new("net-state-status");
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let net = || bridge("pal-ns1", "10.238.1.0/24", state.path());

        // Control: an intact state, SIGTERM, wait: the signal, and no clean-up error.
        let mut a = sleeper(net());
        a.signal(Signal::SIGTERM).unwrap();
        let status = a.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        assert_eq!(status.shell_code(), 143);
        assert!(a.cleanup_error().is_none(), "{:?}", a.cleanup_error());
        drop(a);
        crate::common::assert_no_network_leftovers();

        // The attack: the state is corrupt when the sandbox ends.
        let mut a = sleeper(net());
        assert_private(state.path());
        std::fs::write(state_file(&state, "pal-ns1"), b"lease nonsense\n").unwrap();
        a.signal(Signal::SIGTERM).unwrap();
        let status = a.wait().expect("the status, not the teardown's error");
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        assert_eq!(status.shell_code(), 143);
        // The failure is reported beside it...
        match a.cleanup_error() {
            Some(palisade::Error::Network(palisade::netns::Error::CorruptState {
                path, ..
            })) => {
                assert_eq!(path, &state_file(&state, "pal-ns1"))
            }
            other => panic!("expected the corrupt state as the clean-up error, got {other:?}"),
        }
        // ...and a second wait gives the same status.
        assert_eq!(a.wait().unwrap(), status);
        drop(a);
        // ...and the teardown still removed the bridge and its table.
        crate::common::assert_no_network_leftovers();
        assert!(!state_file(&state, "pal-ns1").exists());
    });
}
