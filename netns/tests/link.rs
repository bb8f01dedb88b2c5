//! rtnetlink against the real kernel. Every test works only inside throwaway network namespaces
//! (a thread that `unshare(CLONE_NEWNET)`s, or namespace fds kept by such threads) and names its
//! links `pal-*`; the host's network is never touched.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use palisade_netns::link::{Family, Netlink, Route};
use palisade_netns::Error;
use palisade_test_support::{in_new_netns, require_root};

/// The `pal-*` links visible in the host's namespace (the test harness's main namespace).
fn host_pal_links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pal-"))
        .collect()
}

/// Runs `f` in a fresh thread that has its own new network namespace, which dies with it; then
/// checks that the host shows no `pal-*` link.
fn in_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let out = in_new_netns(f);
    assert_eq!(host_pal_links(), Vec::<String>::new());
    out
}

/// A new network namespace, kept alive only by the returned fd.
fn new_netns_fd() -> OwnedFd {
    in_netns(|| File::open("/proc/thread-self/ns/net").unwrap().into())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn loopback_up() {
    require_root!();
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link("lo").unwrap().unwrap();
        assert!(!lo.up, "lo starts down in a new netns");
        assert_eq!(nl.link_index("lo").unwrap(), Some(lo.index));
        nl.set_up("lo").unwrap();
        assert!(nl.link("lo").unwrap().unwrap().up);
        let addrs = nl.addresses("lo").unwrap();
        assert!(addrs
            .iter()
            .any(|a| a.addr == ip("127.0.0.1") && a.prefix == 8));
    });
}

#[test]
fn veth_up_and_mtu() {
    require_root!();
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        nl.add_veth("pal-a", "pal-b").unwrap();
        let a = nl.link("pal-a").unwrap().unwrap();
        assert_eq!(a.kind.as_deref(), Some("veth"));
        assert!(!a.up);
        assert!(nl.link("pal-b").unwrap().is_some());
        nl.set_up("pal-a").unwrap();
        nl.set_mtu("pal-a", 1400).unwrap();
        let a = nl.link("pal-a").unwrap().unwrap();
        assert!(a.up);
        assert_eq!(a.mtu, 1400);
        nl.set_down("pal-a").unwrap();
        assert!(!nl.link("pal-a").unwrap().unwrap().up);
        // Deleting one end deletes the pair.
        nl.delete_link("pal-a").unwrap();
        assert_eq!(nl.link_index("pal-a").unwrap(), None);
        assert_eq!(nl.link_index("pal-b").unwrap(), None);
    });
}

#[test]
fn bridge_and_master() {
    require_root!();
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        nl.add_bridge("pal-br0").unwrap();
        nl.add_veth("pal-h", "pal-c").unwrap();
        nl.set_master("pal-h", "pal-br0").unwrap();
        let br = nl.link("pal-br0").unwrap().unwrap();
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        let h = nl.link("pal-h").unwrap().unwrap();
        assert_eq!(h.master, Some(br.index));
        nl.set_nomaster("pal-h").unwrap();
        assert_eq!(nl.link("pal-h").unwrap().unwrap().master, None);
        nl.delete_link("pal-br0").unwrap();
        nl.delete_link("pal-h").unwrap();
        assert!(nl
            .links()
            .unwrap()
            .iter()
            .all(|l| !l.name.starts_with("pal-")));
    });
}

#[test]
fn addresses_v4_v6() {
    require_root!();
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        nl.add_veth("pal-a", "pal-b").unwrap();
        nl.set_up("pal-a").unwrap();
        nl.add_address("pal-a", ip("10.77.0.2"), 24).unwrap();
        nl.add_address("pal-a", ip("fd00:77::2"), 64).unwrap();
        let addrs = nl.addresses("pal-a").unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.addr == ip("10.77.0.2") && a.prefix == 24),
            "{addrs:?}"
        );
        assert!(
            addrs
                .iter()
                .any(|a| a.addr == ip("fd00:77::2") && a.prefix == 64),
            "{addrs:?}"
        );
        // Adding it again is EEXIST.
        let err = nl.add_address("pal-a", ip("10.77.0.2"), 24).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        nl.del_address("pal-a", ip("10.77.0.2"), 24).unwrap();
        nl.del_address("pal-a", ip("fd00:77::2"), 64).unwrap();
        let addrs = nl.addresses("pal-a").unwrap();
        assert!(!addrs
            .iter()
            .any(|a| a.addr == ip("10.77.0.2") || a.addr == ip("fd00:77::2")));
        // Bad prefix length refused before sending.
        assert!(matches!(
            nl.add_address("pal-a", ip("10.77.0.2"), 33),
            Err(Error::InvalidValue { .. })
        ));
    });
}

#[test]
fn routes_default_via_gateway() {
    require_root!();
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        nl.add_veth("pal-a", "pal-b").unwrap();
        nl.set_up("pal-a").unwrap();
        nl.set_up("pal-b").unwrap();
        nl.add_address("pal-a", ip("10.77.0.2"), 24).unwrap();
        nl.add_address("pal-a", ip("fd00:77::2"), 64).unwrap();
        let v4 = Route {
            dst: None,
            gateway: Some(ip("10.77.0.1")),
            dev: Some("pal-a".into()),
        };
        nl.add_route(&v4).unwrap();
        let extra = Route {
            dst: Some((ip("10.88.0.0"), 16)),
            gateway: None,
            dev: Some("pal-a".into()),
        };
        nl.add_route(&extra).unwrap();
        let v6 = Route {
            dst: None,
            gateway: Some(ip("fd00:77::1")),
            dev: Some("pal-a".into()),
        };
        nl.add_route(&v6).unwrap();
        let routes = nl.routes(Family::V4).unwrap();
        assert!(routes.contains(&v4), "{routes:?}");
        assert!(routes.contains(&extra), "{routes:?}");
        let routes6 = nl.routes(Family::V6).unwrap();
        assert!(routes6.contains(&v6), "{routes6:?}");
        let err = nl.add_route(&v4).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        nl.del_route(&v4).unwrap();
        nl.del_route(&extra).unwrap();
        nl.del_route(&v6).unwrap();
        assert!(!nl.routes(Family::V4).unwrap().contains(&v4));
        assert!(!nl.routes(Family::V6).unwrap().contains(&v6));
        let err = nl.del_route(&v4).unwrap_err();
        assert_eq!(err.errno(), Some(libc::ESRCH), "{err}");
    });
}

#[test]
fn move_by_fd_and_rename_to_eth0() {
    require_root!();
    let a = new_netns_fd();
    let b = new_netns_fd();
    let mut na = Netlink::open_in(a.as_fd()).unwrap();
    let mut nb = Netlink::open_in(b.as_fd()).unwrap();
    na.add_veth("pal-host", "pal-guest").unwrap();
    na.move_to_netns_fd("pal-guest", b.as_fd()).unwrap();
    assert_eq!(na.link_index("pal-guest").unwrap(), None);
    assert!(nb.link_index("pal-guest").unwrap().is_some());
    assert!(
        !nb.link("pal-guest").unwrap().unwrap().up,
        "moved links arrive down"
    );
    nb.rename("pal-guest", "eth0").unwrap();
    assert_eq!(nb.link_index("pal-guest").unwrap(), None);
    nb.set_up("eth0").unwrap();
    nb.add_address("eth0", ip("10.77.0.2"), 24).unwrap();
    let eth0 = nb.link("eth0").unwrap().unwrap();
    assert!(eth0.up);
    assert_eq!(eth0.kind.as_deref(), Some("veth"));
    assert_eq!(host_pal_links(), Vec::<String>::new());
}

/// Kills and reaps the child on drop, also when an assertion fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn move_by_pid_and_pidfd() {
    require_root!();
    // A child process in its own network namespace, for IFLA_NET_NS_PID and a pidfd.
    let spawn = || {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        // SAFETY: the closure only calls unshare, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        cmd.spawn().unwrap()
    };
    let child = Reaped(spawn());
    let pid = child.0.id();
    let a = new_netns_fd();
    let mut na = Netlink::open_in(a.as_fd()).unwrap();
    let child_ns = File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let mut nc = Netlink::open_in(child_ns.as_fd()).unwrap();
    na.add_veth("pal-p1", "pal-p2").unwrap();
    na.add_veth("pal-q1", "pal-q2").unwrap();

    na.move_to_pid("pal-p2", pid).unwrap();
    assert!(nc.link_index("pal-p2").unwrap().is_some());

    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(raw >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh fd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // IFLA_NET_NS_FD takes namespace fds only (6.18: EINVAL for a pidfd) …
    match na.move_to_netns_fd("pal-q2", pidfd.as_fd()) {
        Ok(()) => eprintln!("note: this kernel takes a pidfd in IFLA_NET_NS_FD"),
        Err(e) => {
            assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
            // … so move_to_pidfd goes through the namespace fd of the process.
            na.move_to_pidfd("pal-q2", pidfd.as_fd()).unwrap();
        }
    }
    assert!(nc.link_index("pal-q2").unwrap().is_some());
    assert_eq!(na.link_index("pal-q2").unwrap(), None);
    // A Netlink opened through the pidfd sees the same namespace.
    let mut np = Netlink::open_in(pidfd.as_fd()).unwrap();
    assert!(np.link_index("pal-q2").unwrap().is_some());

    drop(child);
    assert_eq!(host_pal_links(), Vec::<String>::new());
}

#[test]
fn bad_input_and_typed_errors() {
    require_root!();
    in_netns(|| {
        let mut nl = Netlink::open().unwrap();
        // 16 bytes: refused before sending.
        let err = nl.add_bridge("pal-0123456789ab").unwrap_err();
        assert!(matches!(&err, Error::InvalidValue { value, .. } if value == "pal-0123456789ab"));
        for bad in ["", ".", "..", "pal/x", "pal x"] {
            assert!(
                matches!(nl.add_bridge(bad), Err(Error::InvalidValue { .. })),
                "{bad:?}"
            );
        }
        // A missing link is named.
        let err = nl.set_up("pal-missing").unwrap_err();
        match &err {
            Error::NoSuchLink { name, request } => {
                assert_eq!(name, "pal-missing");
                assert!(request.contains("pal-missing"), "{request}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(err.errno(), Some(libc::ENODEV));
        assert!(err.to_string().contains("pal-missing"), "{err}");
        assert!(matches!(
            nl.delete_link("pal-missing"),
            Err(Error::NoSuchLink { .. })
        ));
        // A duplicate link is EEXIST, naming the request.
        nl.add_veth("pal-a", "pal-b").unwrap();
        let err = nl.add_veth("pal-a", "pal-c").unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        match &err {
            Error::Netlink { request, .. } => assert_eq!(request, "RTM_NEWLINK veth pal-a/pal-c"),
            other => panic!("unexpected {other:?}"),
        }
        let err = nl.add_bridge("pal-b").unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        assert!(err.to_string().contains("pal-b"), "{err}");
    });
}
