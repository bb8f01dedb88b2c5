//! Address allocation (IPAM): subnet parsing, persistence, uniqueness across threads and
//! processes, stale-owner cleanup, exhaustion and typed errors.

use palisade_netns::ipam::{Allocator, Owner, Subnet};
use palisade_netns::Error;
use palisade_test_support::TempDir;
use proptest::prelude::*;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};

fn subnet(s: &str) -> Subnet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn me(tag: &str) -> Owner {
    Owner::current(tag).unwrap()
}

// --- Subnet ----------------------------------------------------------------------------------

#[test]
fn subnet_parse_and_layout() {
    let s = subnet("10.88.0.0/16");
    assert_eq!(s.to_string(), "10.88.0.0/16");
    assert_eq!(s.network(), ip("10.88.0.0"));
    assert_eq!(s.prefix(), 16);
    assert_eq!(s.gateway(), ip("10.88.0.1"));
    assert_eq!(s.last(), ip("10.88.255.255"));
    assert_eq!(s.capacity(), 65536 - 3);
    assert!(s.contains(ip("10.88.255.1")));
    assert!(!s.contains(ip("10.89.0.1")));
    assert!(!s.contains(ip("::1")));

    let v6 = subnet("fd00:88::/120");
    assert_eq!(v6.gateway(), ip("fd00:88::1"));
    assert_eq!(v6.capacity(), 253);
    assert_eq!(subnet("10.0.0.0/30").capacity(), 1);

    for bad in [
        "10.88.0.1/16",
        "10.88.0.0/31",
        "10.88.0.0/32",
        "10.88.0.0/33",
        "10.88.0.0",
        "10.88.0.0/",
        "10.88.0.0/+8",
        "10.88.0.0/ 8",
        "10.88/16",
        "fd00::/127",
        "fd00::1/64",
        "",
        "/8",
    ] {
        match bad.parse::<Subnet>() {
            Err(Error::InvalidValue { what, value, .. }) => {
                assert_eq!(what, "subnet");
                assert_eq!(value, bad);
            }
            other => panic!("{bad:?}: expected InvalidValue, got {other:?}"),
        }
    }
}

#[test]
fn subnet_overlaps() {
    let a = subnet("10.88.0.0/16");
    assert!(a.overlaps(&subnet("10.88.4.0/24")));
    assert!(subnet("10.88.4.0/24").overlaps(&a));
    assert!(a.overlaps(&a));
    assert!(a.overlaps(&subnet("10.0.0.0/8")));
    assert!(!a.overlaps(&subnet("10.89.0.0/16")));
    assert!(!a.overlaps(&subnet("fd00::/64")));
    assert!(subnet("fd00::/64").overlaps(&subnet("fd00::100/120")));
    assert!(!subnet("fd00::/120").overlaps(&subnet("fd00::100/120")));
}

proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,40}") {
        let _ = Subnet::parse(&s);
    }

    #[test]
    fn parse_never_panics_near_valid(a in any::<[u8; 4]>(), p in 0u16..300) {
        let _ = Subnet::parse(&format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3]));
    }

    #[test]
    fn v4_display_round_trips_and_contains_agrees(
        raw in any::<u32>(), prefix in 0u8..=30, probe in any::<u32>()
    ) {
        let net = if prefix == 0 { 0 } else { raw & (u32::MAX << (32 - prefix)) };
        let s = Subnet::new(IpAddr::V4(Ipv4Addr::from(net)), prefix).unwrap();
        prop_assert_eq!(s.to_string().parse::<Subnet>().unwrap(), s);
        let same = prefix == 0 || (probe >> (32 - prefix)) == (net >> (32 - prefix));
        prop_assert_eq!(s.contains(IpAddr::V4(Ipv4Addr::from(probe))), same);
        prop_assert!(s.contains(s.gateway()));
        prop_assert!(s.contains(s.last()));
        // A subnet with host bits set is refused.
        if prefix > 0 && raw != net {
            let refused = Subnet::new(IpAddr::V4(Ipv4Addr::from(raw)), prefix).is_err();
            prop_assert!(refused);
        }
    }

    #[test]
    fn v6_display_round_trips(raw in any::<u128>(), prefix in 0u8..=126) {
        let net = if prefix == 0 { 0 } else { raw & (u128::MAX << (128 - prefix)) };
        let s = Subnet::new(IpAddr::V6(net.into()), prefix).unwrap();
        prop_assert_eq!(s.to_string().parse::<Subnet>().unwrap(), s);
        prop_assert!(s.contains(s.gateway()));
    }
}

// --- Allocator -------------------------------------------------------------------------------

#[test]
fn allocate_release_reuse() {
    let dir = TempDir::new("ipam-basic");
    let alloc = Allocator::open(dir.path(), "br0", subnet("10.88.0.0/24")).unwrap();
    let a = alloc.allocate(me("a")).unwrap();
    let b = alloc.allocate(me("b")).unwrap();
    assert_eq!(a.ip(), ip("10.88.0.2"));
    assert_eq!(b.ip(), ip("10.88.0.3"));
    assert_eq!(a.prefix(), 24);
    assert_eq!(a.gateway(), ip("10.88.0.1"));
    let listed = alloc.leases().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].ip, a.ip());
    assert_eq!(listed[0].owner.tag, "a");
    assert_eq!(listed[1].owner.pid, std::process::id());

    a.release().unwrap();
    assert_eq!(alloc.leases().unwrap().len(), 1);
    // The lowest free address is reused.
    let c = alloc.allocate(me("c with spaces")).unwrap();
    assert_eq!(c.ip(), ip("10.88.0.2"));
    // Reopening sees the persisted leases.
    let again = Allocator::open(dir.path(), "br0", subnet("10.88.0.0/24")).unwrap();
    let tags: Vec<String> = again
        .leases()
        .unwrap()
        .into_iter()
        .map(|l| l.owner.tag)
        .collect();
    assert_eq!(tags, ["c with spaces", "b"]);
    drop(b);
    drop(c);
    assert!(alloc.leases().unwrap().is_empty());
    alloc.remove().unwrap();
    assert!(!dir.path().join("br0.ipam").exists());
}

#[test]
fn exhaustion_on_29_and_30() {
    let dir = TempDir::new("ipam-exhaust");
    let alloc = Allocator::open(dir.path(), "small", subnet("192.168.7.0/29")).unwrap();
    let leases: Vec<_> = (0..5)
        .map(|i| alloc.allocate(me(&format!("s{i}"))).unwrap())
        .collect();
    let ips: Vec<IpAddr> = leases.iter().map(|l| l.ip()).collect();
    let want: Vec<IpAddr> = (2..=6).map(|h| ip(&format!("192.168.7.{h}"))).collect();
    assert_eq!(
        ips, want,
        "never network (.0), gateway (.1) or broadcast (.7)"
    );
    match alloc.allocate(me("one too many")) {
        Err(Error::Exhausted { network, subnet: s }) => {
            assert_eq!(network, "small");
            assert_eq!(s, subnet("192.168.7.0/29"));
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
    let mut leases = leases;
    let freed = leases.remove(2).ip();
    assert_eq!(alloc.allocate(me("again")).unwrap().ip(), freed);

    let tiny = Allocator::open(dir.path(), "tiny", subnet("192.168.8.0/30")).unwrap();
    let only = tiny.allocate(me("only")).unwrap();
    assert_eq!(only.ip(), ip("192.168.8.2"));
    assert!(matches!(
        tiny.allocate(me("x")),
        Err(Error::Exhausted { .. })
    ));
}

#[test]
fn ipv6_120() {
    let dir = TempDir::new("ipam-v6");
    let alloc = Allocator::open(dir.path(), "v6", subnet("fd00:88::/120")).unwrap();
    let a = alloc.allocate(me("a")).unwrap();
    let b = alloc.allocate(me("b")).unwrap();
    assert_eq!(a.ip(), ip("fd00:88::2"));
    assert_eq!(b.ip(), ip("fd00:88::3"));
    assert_eq!(a.prefix(), 120);
    assert_eq!(a.gateway(), ip("fd00:88::1"));
    let rest: Vec<_> = (0..251).map(|_| alloc.allocate(me("r")).unwrap()).collect();
    assert_eq!(rest.last().unwrap().ip(), ip("fd00:88::fe"));
    assert!(matches!(
        alloc.allocate(me("x")),
        Err(Error::Exhausted { .. })
    ));
}

#[test]
fn mismatched_subnet_for_same_network() {
    let dir = TempDir::new("ipam-mismatch");
    Allocator::open(dir.path(), "br0", subnet("10.88.0.0/24")).unwrap();
    match Allocator::open(dir.path(), "br0", subnet("10.88.0.0/25")) {
        Err(Error::SubnetMismatch {
            network,
            path,
            recorded,
            requested,
        }) => {
            assert_eq!(network, "br0");
            assert_eq!(path, dir.path().join("br0.ipam"));
            assert_eq!(recorded, subnet("10.88.0.0/24"));
            assert_eq!(requested, subnet("10.88.0.0/25"));
        }
        other => panic!("expected SubnetMismatch, got {other:?}"),
    }
}

#[test]
fn overlapping_second_network() {
    let dir = TempDir::new("ipam-overlap");
    Allocator::open(dir.path(), "br0", subnet("10.88.0.0/16")).unwrap();
    for s in ["10.88.5.0/24", "10.0.0.0/8", "10.88.0.0/16"] {
        match Allocator::open(dir.path(), "br1", subnet(s)) {
            Err(Error::Overlap {
                subnet: asked,
                network,
                existing,
                ..
            }) => {
                assert_eq!(asked, subnet(s));
                assert_eq!(network, "br0");
                assert_eq!(existing, subnet("10.88.0.0/16"));
            }
            other => panic!("{s}: expected Overlap, got {other:?}"),
        }
        assert!(matches!(
            Allocator::check_overlap(dir.path(), subnet(s)),
            Err(Error::Overlap { .. })
        ));
    }
    assert!(!dir.path().join("br1.ipam").exists());
    Allocator::check_overlap(dir.path(), subnet("10.89.0.0/16")).unwrap();
    Allocator::check_overlap(dir.path().join("missing"), subnet("10.88.0.0/16")).unwrap();
    let other = Allocator::open(dir.path(), "br1", subnet("10.89.0.0/16")).unwrap();
    // Removing a network frees its subnet, but not while it has leases.
    let lease = other.allocate(me("x")).unwrap();
    assert!(matches!(
        other.clone().remove(),
        Err(Error::NetworkInUse { leases: 1, .. })
    ));
    drop(lease);
    other.remove().unwrap();
    Allocator::open(dir.path(), "br2", subnet("10.89.0.0/24")).unwrap();
}

#[test]
fn bad_names_tags_and_owners() {
    let dir = TempDir::new("ipam-bad");
    for name in ["", ".hidden", "a/b", "../x", "sp ace", &"n".repeat(65)] {
        assert!(
            matches!(
                Allocator::open(dir.path(), name, subnet("10.1.0.0/24")),
                Err(Error::InvalidValue {
                    what: "network name",
                    ..
                })
            ),
            "{name:?}"
        );
    }
    assert!(matches!(
        Owner::current("new\nline"),
        Err(Error::InvalidValue {
            what: "lease owner tag",
            ..
        })
    ));
    let alloc = Allocator::open(dir.path(), "br0", subnet("10.1.0.0/24")).unwrap();
    // A pid-reuse impostor: right pid, wrong start time.
    let mut impostor = me("x");
    impostor.start_time += 1;
    assert!(!impostor.is_alive());
    assert!(matches!(
        alloc.allocate(impostor),
        Err(Error::InvalidValue {
            what: "lease owner",
            ..
        })
    ));
    // A corrupt state file is a typed error naming the file and line.
    std::fs::write(
        dir.path().join("br0.ipam"),
        "subnet 10.1.0.0/24\nlease nonsense\n",
    )
    .unwrap();
    match alloc.leases() {
        Err(Error::CorruptState { path, line, .. }) => {
            assert_eq!(path, dir.path().join("br0.ipam"));
            assert_eq!(line, 2);
        }
        other => panic!("expected CorruptState, got {other:?}"),
    }
}

#[test]
fn unique_across_threads() {
    const THREADS: usize = 8;
    const EACH: usize = 16;
    let dir = TempDir::new("ipam-threads");
    let s = subnet("10.66.0.0/24");
    let leases: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let path = dir.path();
                scope.spawn(move || {
                    let alloc = Allocator::open(path, "shared", s).unwrap();
                    (0..EACH)
                        .map(|i| alloc.allocate(me(&format!("t{t}-{i}"))).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let ips: HashSet<IpAddr> = leases.iter().map(|l| l.ip()).collect();
    assert_eq!(ips.len(), THREADS * EACH, "duplicate addresses handed out");
    let alloc = Allocator::open(dir.path(), "shared", s).unwrap();
    assert_eq!(alloc.leases().unwrap().len(), THREADS * EACH);
    drop(leases);
    assert!(alloc.leases().unwrap().is_empty());
    assert_no_temp_files(dir.path());
}

// --- Across processes ------------------------------------------------------------------------

const CHILD_MODE: &str = "PALISADE_IPAM_CHILD";
const CHILD_DIR: &str = "PALISADE_IPAM_CHILD_DIR";
const CHILD_COUNT: &str = "PALISADE_IPAM_CHILD_COUNT";
const SHARED_SUBNET: &str = "10.77.0.0/24";

/// Not a test on its own: a child process started by the tests below. With `hold`, allocates,
/// prints `LEASE <ip>` lines, waits for stdin to close, then releases; with `crash`, allocates,
/// prints and exits without releasing anything.
#[test]
fn child_helper() {
    let (Some(mode), Some(dir)) = (std::env::var_os(CHILD_MODE), std::env::var_os(CHILD_DIR))
    else {
        return;
    };
    let count: usize = std::env::var(CHILD_COUNT).unwrap().parse().unwrap();
    if mode == "wait" {
        // Waits for a lock the parent holds; the parent ends the wait with SIGTERM.
        let r = Allocator::open(&dir, "shared", subnet(SHARED_SUBNET));
        panic!("the wait ended without the signal: {r:?}");
    }
    let alloc = Allocator::open(&dir, "shared", subnet(SHARED_SUBNET)).unwrap();
    let leases: Vec<_> = (0..count)
        .map(|i| alloc.allocate(me(&format!("child-{i}"))).unwrap())
        .collect();
    // Written to the real stdout, past the test harness's capture.
    // The harness has already written `test child_helper ... ` without a newline.
    let mut out = std::io::stdout().lock();
    writeln!(out).unwrap();
    for l in &leases {
        writeln!(out, "LEASE {}", l.ip()).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    if mode == "crash" {
        std::process::exit(0);
    }
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    drop(leases);
}

fn spawn_child(mode: &str, dir: &Path, count: usize) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_helper", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .env(CHILD_COUNT, count.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn lease_lines(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.split_once("LEASE ").map(|(_, a)| a.trim()))
        .map(ip)
        .collect()
}

fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name();
        assert!(
            !name.to_string_lossy().ends_with(".tmp"),
            "temporary file left: {name:?}"
        );
    }
}

#[test]
fn unique_across_processes() {
    const CHILDREN: usize = 4;
    const EACH: usize = 12;
    let dir = TempDir::new("ipam-procs");
    let alloc = Allocator::open(dir.path(), "shared", subnet(SHARED_SUBNET)).unwrap();
    let mut children: Vec<_> = (0..CHILDREN)
        .map(|_| spawn_child("hold", dir.path(), EACH))
        .collect();
    // A stuck child must fail the test, not hang it: past a minute, kill the children (the
    // reads below then end early).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
        std::thread::spawn(move || {
            for _ in 0..600 {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            for pid in pids {
                // SAFETY: kill(2) on our own, not yet reaped, children.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };
    let mut all = Vec::new();
    // Readers stay open until the children are done, so their last writes cannot hit EPIPE.
    let mut readers = Vec::new();
    for child in &mut children {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut got = 0;
        let mut line = String::new();
        while got < EACH {
            line.clear();
            assert_ne!(reader.read_line(&mut line).unwrap(), 0, "child ended early");
            if let Some((_, a)) = line.trim_end().split_once("LEASE ") {
                all.push(ip(a));
                got += 1;
            }
        }
        readers.push(reader);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    watchdog.join().unwrap();
    // Every child holds its leases now.
    let unique: HashSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(unique.len(), CHILDREN * EACH, "duplicates in {all:?}");
    let listed: HashSet<IpAddr> = alloc.leases().unwrap().iter().map(|l| l.ip).collect();
    assert_eq!(listed, unique);
    for mut child in children {
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success());
    }
    drop(readers);
    assert!(
        alloc.leases().unwrap().is_empty(),
        "children released on exit"
    );
    assert_no_temp_files(dir.path());
}

#[test]
fn dead_owner_is_reclaimed() {
    let dir = TempDir::new("ipam-stale");
    let out = spawn_child("crash", dir.path(), 2)
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    let crashed = lease_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(crashed, [ip("10.77.0.2"), ip("10.77.0.3")]);
    // The crashed child's leases are still on disk...
    let text = std::fs::read_to_string(dir.path().join("shared.ipam")).unwrap();
    assert!(text.contains("lease 10.77.0.2 "), "{text}");
    // ...until the next start cleans them up.
    let alloc = Allocator::open(dir.path(), "shared", subnet(SHARED_SUBNET)).unwrap();
    assert!(alloc.leases().unwrap().is_empty());
    let text = std::fs::read_to_string(dir.path().join("shared.ipam")).unwrap();
    assert!(!text.contains("lease "), "{text}");
    assert_eq!(alloc.allocate(me("new")).unwrap().ip(), ip("10.77.0.2"));
}

// --- Reserved subnets, private state, bounded lock waits (issue 12, item 5) -------------------

#[test]
fn reserved_subnets_are_typed_errors() {
    for reserved in [
        "127.0.0.0/8",
        "127.5.0.0/16",
        "169.254.0.0/16",
        "169.254.3.0/24",
        "224.0.0.0/4",
        "239.1.2.0/24",
        "0.0.0.0/8",
        "0.0.0.0/0",
        "255.255.255.252/30",
        "240.0.0.0/8",
        "fe80::/64",
        "ff02::/120",
        "::/120",
        "::ffff:0:0/120",
    ] {
        match subnet(reserved).check_usable() {
            Err(Error::ReservedSubnet { subnet: s, reason }) => {
                assert_eq!(s, subnet(reserved));
                assert!(!reason.is_empty());
            }
            other => panic!("{reserved}: expected ReservedSubnet, got {other:?}"),
        }
    }
    for usable in [
        "10.88.0.0/16",
        "192.0.2.0/24",
        "172.16.0.0/12",
        "100.64.0.0/10",
        "fd00::/120",
    ] {
        subnet(usable).check_usable().unwrap();
    }
    // No host address: refused when parsed, before any reservation applies.
    for no_hosts in [
        "10.88.0.0/31",
        "10.88.0.0/32",
        "255.255.255.255/32",
        "fd00::/127",
    ] {
        assert!(
            matches!(no_hosts.parse::<Subnet>(), Err(Error::InvalidValue { .. })),
            "{no_hosts}"
        );
    }
}

#[test]
fn allocator_refuses_reserved_subnets_and_records_nothing() {
    let dir = TempDir::new("ipam-reserved");
    for reserved in ["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/24", "0.0.0.0/8"] {
        match Allocator::open(dir.path(), "net", subnet(reserved)) {
            Err(Error::ReservedSubnet { .. }) => {}
            other => panic!("{reserved}: expected ReservedSubnet, got {other:?}"),
        }
    }
    assert!(!dir.path().join("net.ipam").exists());
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn state_directory_and_files_are_private() {
    let top = TempDir::new("ipam-modes");
    let dir = top.path().join("new/state");
    let alloc = Allocator::open(&dir, "net", subnet("10.90.0.0/24")).unwrap();
    let lease = alloc.allocate(me("modes")).unwrap();
    assert_eq!(mode_of(&dir), 0o700);
    assert_eq!(mode_of(&dir.join("palisade-ipam.lock")), 0o600);
    assert_eq!(mode_of(&dir.join("net.ipam")), 0o600);
    lease.release().unwrap();
}

#[test]
fn a_looser_state_directory_is_tightened_when_opened() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("ipam-loose");
    let set = |p: &Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // As an older version left it: a world-readable directory, lock file and state file.
    drop(Allocator::open(dir.path(), "net", subnet("10.91.0.0/24")).unwrap());
    set(dir.path(), 0o755);
    set(&dir.path().join("palisade-ipam.lock"), 0o644);
    set(&dir.path().join("net.ipam"), 0o666);
    let alloc = Allocator::open(dir.path(), "net", subnet("10.91.0.0/24")).unwrap();
    assert_eq!(mode_of(dir.path()), 0o700);
    assert_eq!(mode_of(&dir.path().join("palisade-ipam.lock")), 0o600);
    assert_eq!(mode_of(&dir.path().join("net.ipam")), 0o600);
    // Through any locked operation, not only `open`.
    set(dir.path(), 0o777);
    set(&dir.path().join("net.ipam"), 0o644);
    alloc.leases().unwrap();
    assert_eq!(mode_of(dir.path()), 0o700);
    assert_eq!(mode_of(&dir.path().join("net.ipam")), 0o600);
}

#[test]
fn a_state_directory_that_is_a_link_is_refused() {
    let top = TempDir::new("ipam-link");
    let real = top.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = top.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    match Allocator::open(&link, "net", subnet("10.92.0.0/24")) {
        Err(Error::InsecureStateDir { path, .. }) => assert_eq!(path, link),
        other => panic!("expected InsecureStateDir, got {other:?}"),
    }
}

/// Holds the exclusive `flock(2)` of `dir`'s lock file through its own open file description,
/// as another process would, until dropped.
struct Holder {
    _file: std::fs::File,
}

impl Holder {
    fn take(dir: &Path) -> Holder {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("palisade-ipam.lock"))
            .unwrap();
        // SAFETY: flock on a descriptor `f` owns.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        Holder { _file: f }
    }
}

#[test]
fn lock_waits_are_bounded_and_name_the_lock_file() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("ipam-lock");
    let timeout = Duration::from_millis(300);
    let alloc =
        Allocator::open_timeout(dir.path(), "net", subnet("10.93.0.0/24"), timeout).unwrap();
    assert_eq!(alloc.lock_timeout(), timeout);
    let lease = alloc.allocate(me("held")).unwrap();
    let holder = Holder::take(dir.path());
    let lock = dir.path().join("palisade-ipam.lock");
    let check = |r: palisade_netns::Result<()>, started: Instant| {
        match r {
            Err(Error::LockTimeout { path, waited }) => {
                assert_eq!(path, lock);
                assert!(waited >= timeout, "{waited:?}");
            }
            other => panic!("expected LockTimeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
    };
    let t = Instant::now();
    check(
        Allocator::open_timeout(dir.path(), "net", subnet("10.93.0.0/24"), timeout).map(drop),
        t,
    );
    let t = Instant::now();
    check(alloc.allocate(me("blocked")).map(drop), t);
    let t = Instant::now();
    check(alloc.leases().map(drop), t);
    // Once the holder lets go, the same calls go through.
    drop(holder);
    assert_eq!(alloc.leases().unwrap().len(), 1);
    lease.release().unwrap();
}

#[test]
fn the_default_lock_timeout_is_a_few_seconds() {
    use palisade_netns::ipam::DEFAULT_LOCK_TIMEOUT;
    use std::time::{Duration, Instant};
    assert!(DEFAULT_LOCK_TIMEOUT >= Duration::from_secs(1));
    assert!(DEFAULT_LOCK_TIMEOUT <= Duration::from_secs(30));
    let dir = TempDir::new("ipam-lock-default");
    drop(Allocator::open(dir.path(), "net", subnet("10.94.0.0/24")).unwrap());
    let _holder = Holder::take(dir.path());
    let t = Instant::now();
    let r = Allocator::open(dir.path(), "net", subnet("10.94.0.0/24"));
    assert!(matches!(r, Err(Error::LockTimeout { .. })), "{r:?}");
    assert!(t.elapsed() < DEFAULT_LOCK_TIMEOUT + Duration::from_secs(2));
}

#[test]
fn sigterm_ends_a_process_waiting_for_the_lock() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let dir = TempDir::new("ipam-sigterm");
    drop(Allocator::open(dir.path(), "shared", subnet(SHARED_SUBNET)).unwrap());
    let _holder = Holder::take(dir.path());
    let mut child = spawn_child("wait", dir.path(), 0);
    // Let it reach the wait (it cannot get past it while the lock is held).
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child did not wait"
    );
    // SAFETY: signals a child this test started and has not reaped.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let t = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(t.elapsed() < Duration::from_secs(2), "SIGTERM was ignored");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}
