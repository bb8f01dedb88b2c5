//! Address allocation (IPAM) for sandboxes on a bridge.
//!
//! A network is a name and a [`Subnet`], recorded in a state directory as
//! `<state_dir>/<network>.ipam`. Every read-modify-write of any state file in a directory holds an
//! exclusive `flock(2)` on `<state_dir>/palisade-ipam.lock`, so threads and separate processes
//! using the library never hand out the same address twice, and two networks in the same
//! directory never get overlapping subnets. State files are replaced atomically: written to a
//! temporary file `palisade-ipam-*.tmp` in the same directory, synced, then renamed over the old
//! one.
//!
//! The state directory is the library's alone: it is created `0700` and every file in it `0600`
//! (the lock file included), and a directory or file found looser is tightened when it is next
//! locked; a directory owned by another user is refused ([`Error::InsecureStateDir`]). Waits
//! for the lock are bounded: the lock is tried without blocking (`LOCK_NB`) every few
//! milliseconds until the [lock timeout](Allocator::open_timeout) ([`DEFAULT_LOCK_TIMEOUT`]),
//! then fail with [`Error::LockTimeout`] naming the lock file. So a holder that never lets go
//! (any process that can open the file) delays a caller by at most the timeout, and the caller's
//! thread never sits in an uninterruptible, unbounded `flock(2)`: its signal handling (e.g. a
//! SIGTERM that asks it to stop) takes effect within the timeout.
//!
//! Subnets that cannot hold sandboxes are refused by [`Allocator::open`]
//! ([`Subnet::check_usable`]).
//!
//! Each lease records its [`Owner`]: a process id, that process's start time (field 22 of
//! `/proc/<pid>/stat`, see `proc_pid_stat(5)`, which defeats pid reuse) and a free-form tag.
//! Every locked operation drops leases whose owner is gone, so the addresses of a manager that
//! crashed are reclaimed by the next process that opens the network. Pids are only meaningful
//! within one pid namespace: every process using a state directory must share the same one (and
//! the same `/proc`).
//!
//! Address layout: the network address (the first) and the last address of the subnet (the
//! broadcast address for IPv4; reserved for symmetry for IPv6) are never handed out, the first
//! usable host is the [`gateway`](Subnet::gateway), and leases are taken from the rest, lowest
//! free first.
//!
//! ```no_run
//! use palisade_netns::ipam::{Allocator, Owner, Subnet};
//! # fn main() -> palisade_netns::Result<()> {
//! let subnet: Subnet = "10.88.0.0/16".parse()?;
//! let alloc = Allocator::open("/run/palisade/ipam", "palisade0", subnet)?;
//! let lease = alloc.allocate(Owner::current("sandbox-1")?)?;
//! println!("{}/{} via {}", lease.ip(), lease.prefix(), lease.gateway());
//! lease.release()?;
//! # Ok(())
//! # }
//! ```

use crate::{Error, Result};
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a locked operation waits for the state directory's lock by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two attempts to take the lock.
const LOCK_STEP: Duration = Duration::from_millis(10);
/// Mode of the state directory.
const DIR_MODE: u32 = 0o700;
/// Mode of every file in the state directory.
const FILE_MODE: u32 = 0o600;

/// Name of the lock file in a state directory.
const LOCK_FILE: &str = "palisade-ipam.lock";
/// Extension of network state files.
const STATE_EXT: &str = "ipam";
/// First line of a state file.
const HEADER: &str = "# palisade-netns ipam state v1";
/// Longest accepted network name.
const MAX_NAME: usize = 64;
/// Longest accepted owner tag, in bytes.
const MAX_TAG: usize = 256;

// ---------------------------------------------------------------------------------------------
// Subnet
// ---------------------------------------------------------------------------------------------

/// An IPv4 or IPv6 subnet: a network address with no host bits set and a prefix length that leaves
/// room for a network address, a gateway, at least one host and a last (broadcast) address — at
/// most `/30` for IPv4 and `/126` for IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: IpAddr,
    prefix: u8,
}

fn width(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        // Callers only pass values that fit: they stay within an IPv4 subnet.
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// The host part mask of a `width`-bit address with a `prefix`-bit network part.
fn host_mask(width: u8, prefix: u8) -> u128 {
    let host = u32::from(width.saturating_sub(prefix));
    if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
}

fn check_subnet(network: IpAddr, prefix: u8) -> std::result::Result<(), &'static str> {
    let w = width(network);
    if prefix > w {
        return Err("prefix length is longer than the address");
    }
    if u16::from(prefix) + 2 > u16::from(w) {
        return Err(
            "prefix too long to hold a network address, a gateway, a host and a broadcast address",
        );
    }
    if to_bits(network) & host_mask(w, prefix) != 0 {
        return Err("host bits are set");
    }
    Ok(())
}

impl Subnet {
    /// A subnet from its network address and prefix length.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] if host bits are set or the prefix is longer than `/30` (IPv4) or
    /// `/126` (IPv6).
    pub fn new(network: IpAddr, prefix: u8) -> Result<Subnet> {
        check_subnet(network, prefix).map_err(|reason| Error::InvalidValue {
            what: "subnet",
            value: format!("{network}/{prefix}"),
            reason,
        })?;
        Ok(Subnet { network, prefix })
    }

    /// An IPv4 subnet known to be valid (no host bits, prefix at most 30), for constants.
    pub(crate) const fn v4_const(network: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet {
            network: IpAddr::V4(network),
            prefix,
        }
    }

    /// Parses `ADDRESS/PREFIX`, e.g. `"10.88.0.0/16"` or `"fd00:88::/120"`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] naming the text, for bad syntax and for everything
    /// [`Subnet::new`] refuses.
    pub fn parse(text: &str) -> Result<Subnet> {
        let invalid = |reason| Error::InvalidValue {
            what: "subnet",
            value: text.to_owned(),
            reason,
        };
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX"))?;
        let network: IpAddr = addr
            .parse()
            .map_err(|_| invalid("not an IPv4 or IPv6 address"))?;
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("prefix length is not a decimal number"));
        }
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid("prefix length is out of range"))?;
        check_subnet(network, prefix).map_err(invalid)?;
        Ok(Subnet { network, prefix })
    }

    /// The network address (the first address of the subnet).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 subnet.
    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }

    fn mask(&self) -> u128 {
        host_mask(width(self.network), self.prefix)
    }

    /// The last address of the subnet (the broadcast address for IPv4).
    pub fn last(&self) -> IpAddr {
        from_bits(to_bits(self.network) | self.mask(), self.is_ipv4())
    }

    /// The gateway: the first usable host address (network address + 1).
    pub fn gateway(&self) -> IpAddr {
        from_bits(to_bits(self.network) + 1, self.is_ipv4())
    }

    /// The range of addresses handed out as leases, as integers: from gateway + 1 to the address
    /// before the last one.
    fn host_range(&self) -> (u128, u128) {
        let net = to_bits(self.network);
        (net + 2, (net | self.mask()) - 1)
    }

    /// How many addresses can be leased (everything but the network, gateway and last address).
    pub fn capacity(&self) -> u128 {
        let (first, last) = self.host_range();
        last - first + 1
    }

    /// Whether `ip` is in this subnet (always false for the other address family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4() && to_bits(ip) & !self.mask() == to_bits(self.network)
    }

    /// Whether the network `addr/prefix` (a route's destination, of any prefix length) shares
    /// any address with this subnet.
    pub fn overlaps_network(&self, addr: IpAddr, prefix: u8) -> bool {
        if addr.is_ipv4() != self.is_ipv4() {
            return false;
        }
        let common = prefix.min(self.prefix);
        let mask = !host_mask(width(addr), common);
        to_bits(addr) & mask == to_bits(self.network) & mask
    }

    /// Whether the two subnets share any address (always false across address families).
    pub fn overlaps(&self, other: &Subnet) -> bool {
        if self.is_ipv4() != other.is_ipv4() {
            return false;
        }
        let wider = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let net_mask = !wider.mask();
        to_bits(self.network) & net_mask == to_bits(other.network) & net_mask
    }
}

/// Ranges that never hold sandboxes, with the reason given in [`Error::ReservedSubnet`].
const RESERVED: [(Subnet, &str); 9] = [
    (
        Subnet::v4_const(Ipv4Addr::new(0, 0, 0, 0), 8),
        "0.0.0.0/8 is \"this network\" (RFC 1122)",
    ),
    (
        Subnet::v4_const(Ipv4Addr::new(127, 0, 0, 0), 8),
        "127.0.0.0/8 is loopback",
    ),
    (
        Subnet::v4_const(Ipv4Addr::new(169, 254, 0, 0), 16),
        "169.254.0.0/16 is link-local",
    ),
    (
        Subnet::v4_const(Ipv4Addr::new(224, 0, 0, 0), 4),
        "224.0.0.0/4 is multicast",
    ),
    (
        Subnet::v4_const(Ipv4Addr::new(240, 0, 0, 0), 4),
        "240.0.0.0/4 is reserved, and holds the limited broadcast 255.255.255.255",
    ),
    (
        Subnet {
            network: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            prefix: 127,
        },
        "::/127 holds the unspecified and loopback addresses",
    ),
    (
        Subnet {
            network: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
            prefix: 10,
        },
        "fe80::/10 is link-local",
    ),
    (
        Subnet {
            network: IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)),
            prefix: 8,
        },
        "ff00::/8 is multicast",
    ),
    (
        Subnet {
            network: IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)),
            prefix: 96,
        },
        "::ffff:0:0/96 holds IPv4-mapped addresses",
    ),
];

impl Subnet {
    /// Checks that the subnet can hold sandboxes: it shares no address with the loopback,
    /// link-local, multicast, "this network" (`0.0.0.0/8`) or reserved (`240.0.0.0/4`, with the
    /// limited broadcast `255.255.255.255`) ranges, nor their IPv6 counterparts. Prefixes too long
    /// to hold a host (`/31`, `/32`) are refused already by [`Subnet::new`].
    ///
    /// # Errors
    /// [`Error::ReservedSubnet`] naming the range.
    pub fn check_usable(&self) -> Result<()> {
        match RESERVED.iter().find(|(r, _)| r.overlaps(self)) {
            Some((_, reason)) => Err(Error::ReservedSubnet {
                subnet: *self,
                reason,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = Error;

    fn from_str(s: &str) -> Result<Subnet> {
        Subnet::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Owners and process liveness
// ---------------------------------------------------------------------------------------------

/// Who holds a lease: a process, identified by pid and start time so that a reused pid is not
/// mistaken for the original owner, plus a free-form tag (e.g. the sandbox name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process id of the owning process.
    pub pid: u32,
    /// The process's start time in clock ticks after boot: field 22 (`starttime`) of
    /// `/proc/<pid>/stat`, see `proc_pid_stat(5)`.
    pub start_time: u64,
    /// A label for the lease, e.g. the sandbox's name. At most 256 bytes, no control characters.
    pub tag: String,
}

impl Owner {
    /// The calling process, with the given tag.
    ///
    /// # Errors
    /// [`Error::Io`] if `/proc/self/stat` cannot be read, [`Error::InvalidValue`] for a bad tag.
    pub fn current(tag: impl Into<String>) -> Result<Owner> {
        Owner::of_pid(std::process::id(), tag)
    }

    /// The running process `pid`, with its start time read from `/proc/<pid>/stat`
    /// (`proc_pid_stat(5)`).
    ///
    /// # Errors
    /// [`Error::Io`] if that file cannot be read or parsed (e.g. no such process),
    /// [`Error::InvalidValue`] for a bad tag.
    pub fn of_pid(pid: u32, tag: impl Into<String>) -> Result<Owner> {
        let tag = tag.into();
        validate_tag(&tag)?;
        let (_, start_time) = read_stat(pid).map_err(|source| Error::Io {
            op: "read",
            target: format!("/proc/{pid}/stat"),
            source,
        })?;
        Ok(Owner {
            pid,
            start_time,
            tag,
        })
    }

    /// Whether the owning process still runs: `/proc/<pid>/stat` exists, the process is not a
    /// zombie, and its start time is the recorded one. If `/proc` hides the process (mounted with
    /// `hidepid=`), `kill(pid, 0)` decides and the start time cannot be checked.
    pub fn is_alive(&self) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        if pid <= 0 {
            return false;
        }
        match read_stat(self.pid) {
            Ok((state, start)) => state != 'Z' && state != 'X' && start == self.start_time,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                // SAFETY: signal 0 only checks whether the process exists; `pid` is positive, so
                // this never addresses a process group.
                let r = unsafe { libc::kill(pid, 0) };
                r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
            }
            // Unreadable for another reason: keep the lease rather than risk a collision.
            Err(_) => true,
        }
    }
}

fn validate_tag(tag: &str) -> Result<()> {
    let reason = if tag.len() > MAX_TAG {
        "longer than 256 bytes"
    } else if tag.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(());
    };
    Err(Error::InvalidValue {
        what: "lease owner tag",
        value: tag.to_owned(),
        reason,
    })
}

/// The state (field 3) and start time (field 22) of `/proc/<pid>/stat`.
fn read_stat(pid: u32) -> io::Result<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable stat"))
}

fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 precede the start time.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

// ---------------------------------------------------------------------------------------------
// State files
// ---------------------------------------------------------------------------------------------

/// One recorded lease, as listed by [`Allocator::leases`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LeaseInfo {
    /// The leased address.
    pub ip: IpAddr,
    /// Who holds it.
    pub owner: Owner,
}

struct State {
    subnet: Subnet,
    leases: Vec<LeaseInfo>,
}

impl State {
    fn serialize(&self) -> String {
        let mut out = format!("{HEADER}\nsubnet {}\n", self.subnet);
        for l in &self.leases {
            out.push_str(&format!(
                "lease {} {} {} {}\n",
                l.ip, l.owner.pid, l.owner.start_time, l.owner.tag
            ));
        }
        out
    }

    fn parse(path: &Path, text: &str) -> Result<State> {
        let corrupt = |line: usize, reason: String| Error::CorruptState {
            path: path.to_owned(),
            line,
            reason,
        };
        let mut subnet = None;
        let mut leases = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(s) = line.strip_prefix("subnet ") {
                if subnet.is_some() {
                    return Err(corrupt(n, "more than one subnet line".into()));
                }
                subnet = Some(Subnet::parse(s).map_err(|e| corrupt(n, e.to_string()))?);
            } else if let Some(rest) = line.strip_prefix("lease ") {
                let Some(subnet) = subnet else {
                    return Err(corrupt(n, "lease before the subnet line".into()));
                };
                let mut f = rest.splitn(4, ' ');
                let (Some(ip), Some(pid), Some(start)) = (f.next(), f.next(), f.next()) else {
                    return Err(corrupt(n, "expected: lease IP PID START_TIME TAG".into()));
                };
                let tag = f.next().unwrap_or("").to_owned();
                let ip: IpAddr = ip
                    .parse()
                    .map_err(|_| corrupt(n, format!("bad address {ip:?}")))?;
                let pid = pid
                    .parse()
                    .map_err(|_| corrupt(n, format!("bad pid {pid:?}")))?;
                let start_time = start
                    .parse()
                    .map_err(|_| corrupt(n, format!("bad start time {start:?}")))?;
                if !subnet.contains(ip) {
                    return Err(corrupt(n, format!("{ip} is outside {subnet}")));
                }
                if !seen.insert(ip) {
                    return Err(corrupt(n, format!("{ip} is leased twice")));
                }
                leases.push(LeaseInfo {
                    ip,
                    owner: Owner {
                        pid,
                        start_time,
                        tag,
                    },
                });
            } else {
                return Err(corrupt(n, format!("unknown line {line:?}")));
            }
        }
        let subnet = subnet.ok_or_else(|| corrupt(0, "no subnet line".into()))?;
        Ok(State { subnet, leases })
    }

    /// Drops leases whose owner is gone; returns whether any was dropped.
    fn prune(&mut self) -> bool {
        let before = self.leases.len();
        self.leases.retain(|l| l.owner.is_alive());
        self.leases.len() != before
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        target: path.display().to_string(),
        source,
    }
}

/// Reads a state file; `None` if it does not exist.
fn read_state(path: &Path) -> Result<Option<State>> {
    match fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => State::parse(path, &text).map(Some),
            Err(_) => Err(Error::CorruptState {
                path: path.to_owned(),
                line: 0,
                reason: "not UTF-8".into(),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read state file", path)(e)),
    }
}

/// Replaces `path` atomically: temporary file in the same directory, `fsync`, `rename(2)`.
fn write_state(dir: &Path, path: &Path, state: &State) -> Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        "palisade-ipam-{}-{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let text = state.serialize();
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write state file", path)(e));
    }
    // Best effort: make the rename durable.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive `flock(2)` on the directory's lock file, released when dropped (on close).
pub(crate) struct DirLock {
    _file: File,
}

/// Creates the state directory `dir` (and missing parents) with mode `0700`, and tightens it
/// if it exists with a looser mode.
///
/// # Errors
/// [`Error::Io`], or [`Error::InsecureStateDir`] if it is not a directory or belongs to
/// another user.
pub(crate) fn create_state_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err("create state directory", dir))?;
    secure_dir(dir)
}

/// Checks that `dir` is a directory of the caller's and tightens its mode to `0700`.
fn secure_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspect state directory", dir))?;
    let insecure = |reason| Error::InsecureStateDir {
        path: dir.to_owned(),
        reason,
    };
    if !meta.is_dir() {
        return Err(insecure("not a directory (or a symbolic link)"));
    }
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err(insecure("owned by another user, who could loosen its mode"));
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_err("restrict the mode of", dir))?;
    }
    Ok(())
}

/// Tightens every regular file in `dir` to `0600`. Called under the lock; files of other
/// kinds and symbolic links are left alone (never followed).
fn secure_files(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(io_err("read state directory", dir))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.mode() & 0o7777 != FILE_MODE {
            fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE))
                .map_err(io_err("restrict the mode of", &path))?;
        }
    }
    Ok(())
}

/// [`lock_dir_timeout`] with [`DEFAULT_LOCK_TIMEOUT`].
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock> {
    lock_dir_timeout(dir, DEFAULT_LOCK_TIMEOUT)
}

/// Takes the directory's lock, trying without blocking every [`LOCK_STEP`] until `timeout` has
/// passed; then fails with [`Error::LockTimeout`]. The directory and its files are made private
/// (`0700`/`0600`) on the way.
pub(crate) fn lock_dir_timeout(dir: &Path, timeout: Duration) -> Result<DirLock> {
    secure_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    let start = Instant::now();
    loop {
        // SAFETY: the descriptor is owned by `file`, which outlives the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => {
                let waited = start.elapsed();
                if waited >= timeout {
                    return Err(Error::LockTimeout { path, waited });
                }
                std::thread::sleep(LOCK_STEP.min(timeout - waited));
            }
            Some(libc::EINTR) => {}
            _ => return Err(io_err("lock", &path)(e)),
        }
    }
    secure_files(dir)?;
    Ok(DirLock { _file: file })
}

/// Removes temporary files left by a writer that crashed. Only called under the lock, when no
/// writer can be active.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("palisade-ipam-") && name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME {
        "longer than 64 bytes"
    } else if name.starts_with('.') || name.starts_with('-') {
        "starts with '.' or '-'"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        "only ASCII letters, digits, '-', '_' and '.' are allowed"
    } else {
        return Ok(());
    };
    Err(Error::InvalidValue {
        what: "network name",
        value: name.to_owned(),
        reason,
    })
}

/// A lease dropped because its owner is gone, as [`remove_stale_leases`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StaleLease {
    /// The network it was in.
    pub network: String,
    /// The lease.
    pub lease: LeaseInfo,
}

/// What [`prune_dir_locked`] found in a state directory.
pub(crate) struct PrunedDir {
    /// The networks with a readable state file.
    pub(crate) networks: Vec<PrunedNetwork>,
    /// The networks whose state file is corrupt, each with its [`Error::CorruptState`].
    pub(crate) corrupt: Vec<(String, Error)>,
}

/// One network's state after [`prune_dir_locked`].
pub(crate) struct PrunedNetwork {
    pub(crate) network: String,
    pub(crate) subnet: Subnet,
    pub(crate) dropped: Vec<LeaseInfo>,
    pub(crate) live: usize,
}

/// Drops the leases of owners that are gone in every network recorded in `state_dir`, under the
/// directory's lock, and returns them. A missing directory holds nothing (and is not created).
///
/// Every locked operation on a network does this for that network already; this reclaims the
/// addresses of all networks at once, e.g. after a crash of every manager.
///
/// # Errors
/// [`Error::CorruptState`] or [`Error::Io`] if a state file cannot be read or written.
pub fn remove_stale_leases(state_dir: impl AsRef<Path>) -> Result<Vec<StaleLease>> {
    let dir = state_dir.as_ref();
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let _lock = lock_dir(dir)?;
    let PrunedDir {
        networks,
        mut corrupt,
    } = prune_dir_locked(dir)?;
    if !corrupt.is_empty() {
        return Err(corrupt.swap_remove(0).1);
    }
    Ok(networks
        .into_iter()
        .flat_map(|p| {
            let network = p.network;
            p.dropped.into_iter().map(move |lease| StaleLease {
                network: network.clone(),
                lease,
            })
        })
        .collect())
}

/// [`remove_stale_leases`] for a caller that holds the lock of `dir`, with every network's
/// subnet and number of live leases; and, apart, the networks whose state file is corrupt, with
/// the [`Error::CorruptState`] each gave, so that one damaged file does not hide the others.
pub(crate) fn prune_dir_locked(dir: &Path) -> Result<PrunedDir> {
    remove_stale_temp_files(dir);
    let mut out = Vec::new();
    let mut corrupt = Vec::new();
    for (name, path) in state_files(dir)? {
        if validate_name(&name).is_err() {
            continue;
        }
        let mut state = match read_state(&path) {
            Ok(Some(state)) => state,
            Ok(None) => continue,
            Err(e @ Error::CorruptState { .. }) => {
                corrupt.push((name, e));
                continue;
            }
            Err(e) => return Err(e),
        };
        let before = state.leases.clone();
        if state.prune() {
            write_state(dir, &path, &state)?;
        }
        let dropped = before
            .into_iter()
            .filter(|l| !state.leases.contains(l))
            .collect();
        out.push(PrunedNetwork {
            network: name,
            subnet: state.subnet,
            dropped,
            live: state.leases.len(),
        });
    }
    out.sort_by(|a, b| a.network.cmp(&b.network));
    corrupt.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PrunedDir {
        networks: out,
        corrupt,
    })
}

/// The state files of `dir` (`<network>.ipam`) with their network names.
fn state_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("read state directory", dir))? {
        let path = entry.map_err(io_err("read state directory", dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some(STATE_EXT) {
            continue;
        }
        if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
            files.push((name.to_owned(), path));
        }
    }
    Ok(files)
}

/// Fails with [`Error::Overlap`] if a network other than `except` in `dir` overlaps `subnet`.
/// Called with the lock held.
fn check_overlap_locked(dir: &Path, except: Option<&str>, subnet: Subnet) -> Result<()> {
    for (name, path) in state_files(dir)? {
        if Some(name.as_str()) == except {
            continue;
        }
        if let Some(state) = read_state(&path)? {
            if state.subnet.overlaps(&subnet) {
                return Err(Error::Overlap {
                    subnet,
                    network: name.to_owned(),
                    existing: state.subnet,
                    path,
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Allocator and leases
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    name: String,
    subnet: Subnet,
    path: PathBuf,
    lock_timeout: Duration,
}

/// Allocates addresses of one network's subnet, persisted in `<state_dir>/<network>.ipam`.
/// Cheap to clone; usable from many threads and processes at once.
#[derive(Clone, Debug)]
pub struct Allocator {
    inner: Arc<Inner>,
}

impl Allocator {
    /// Opens network `network` in `state_dir` (created if missing), recording `subnet` on first
    /// use. Leases of dead owners are dropped (cleanup after a crashed manager), as are temporary
    /// files of an interrupted write.
    ///
    /// `network` may contain ASCII letters, digits, `-`, `_` and `.` (not first), at most 64 bytes.
    ///
    /// # Errors
    /// - [`Error::SubnetMismatch`] if the network is recorded with another subnet;
    /// - [`Error::Overlap`] if it is new and its subnet overlaps another network's in `state_dir`;
    /// - [`Error::ReservedSubnet`] for a subnet that cannot hold hosts ([`Subnet::check_usable`]);
    /// - [`Error::LockTimeout`] if the lock is held for longer than [`DEFAULT_LOCK_TIMEOUT`];
    /// - [`Error::InsecureStateDir`] if `state_dir` is not a directory of the caller's;
    /// - [`Error::InvalidValue`] for a bad name, [`Error::CorruptState`] for an unreadable state
    ///   file, [`Error::Io`] for file system failures.
    pub fn open(state_dir: impl AsRef<Path>, network: &str, subnet: Subnet) -> Result<Allocator> {
        Allocator::open_timeout(state_dir, network, subnet, DEFAULT_LOCK_TIMEOUT)
    }

    /// [`Allocator::open`], waiting at most `lock_timeout` for the state directory's lock, in
    /// this call and in every later operation of the allocator (and its leases).
    ///
    /// # Errors
    /// As [`Allocator::open`], and [`Error::LockTimeout`] naming the lock file.
    pub fn open_timeout(
        state_dir: impl AsRef<Path>,
        network: &str,
        subnet: Subnet,
        lock_timeout: Duration,
    ) -> Result<Allocator> {
        Allocator::open_inner(state_dir.as_ref(), network, subnet, lock_timeout, false)
            .map(|(alloc, _)| alloc)
    }

    /// [`Allocator::open_timeout`] that also returns whether this call created the state file,
    /// and, with `tolerate_corrupt`, accepts a state file that cannot be parsed (the caller
    /// rebuilds it with [`Allocator::reconcile_locked`] before allocating).
    pub(crate) fn open_inner(
        dir: &Path,
        network: &str,
        subnet: Subnet,
        lock_timeout: Duration,
        tolerate_corrupt: bool,
    ) -> Result<(Allocator, bool)> {
        validate_name(network)?;
        subnet.check_usable()?;
        let dir = dir.to_path_buf();
        create_state_dir(&dir)?;
        let path = dir.join(format!("{network}.{STATE_EXT}"));
        let _lock = lock_dir_timeout(&dir, lock_timeout)?;
        remove_stale_temp_files(&dir);
        let mut created = false;
        match read_state(&path) {
            Ok(Some(mut state)) => {
                if state.subnet != subnet {
                    return Err(Error::SubnetMismatch {
                        network: network.to_owned(),
                        path,
                        recorded: state.subnet,
                        requested: subnet,
                    });
                }
                if state.prune() {
                    write_state(&dir, &path, &state)?;
                }
            }
            Ok(None) => {
                check_overlap_locked(&dir, Some(network), subnet)?;
                let state = State {
                    subnet,
                    leases: Vec::new(),
                };
                write_state(&dir, &path, &state)?;
                created = true;
            }
            Err(Error::CorruptState { .. }) if tolerate_corrupt => {
                check_overlap_locked(&dir, Some(network), subnet)?;
            }
            Err(e) => return Err(e),
        }
        Ok((
            Allocator {
                inner: Arc::new(Inner {
                    dir,
                    name: network.to_owned(),
                    subnet,
                    path,
                    lock_timeout,
                }),
            },
            created,
        ))
    }

    /// Brings the state file in line with `live`, the leases that something outside the file
    /// proves to be in use (the bridge's veths, see [`crate::bridge`]), for a caller that holds
    /// [`Allocator::lock`]. A missing, empty or corrupt state file is replaced by one holding the
    /// live leases; a readable one gains those it lacks (an address it records for another live
    /// owner stays that owner's). Leases of owners that are gone are ignored.
    ///
    /// Returns the [`Error::CorruptState`] that was recovered from, if the file was corrupt.
    pub(crate) fn reconcile_locked(&self, live: &[LeaseInfo]) -> Result<Option<Error>> {
        let inner = &*self.inner;
        let (mut state, mut changed, recovered) = match read_state(&inner.path) {
            Ok(Some(state)) => (state, false, None),
            Ok(None) => (
                State {
                    subnet: inner.subnet,
                    leases: Vec::new(),
                },
                true,
                None,
            ),
            Err(e @ Error::CorruptState { .. }) => (
                State {
                    subnet: inner.subnet,
                    leases: Vec::new(),
                },
                true,
                Some(e),
            ),
            Err(e) => return Err(e),
        };
        if state.subnet != inner.subnet {
            return Err(Error::SubnetMismatch {
                network: inner.name.clone(),
                path: inner.path.clone(),
                recorded: state.subnet,
                requested: inner.subnet,
            });
        }
        changed |= state.prune();
        for lease in live {
            if inner.subnet.contains(lease.ip)
                && lease.owner.is_alive()
                && !state.leases.iter().any(|l| l.ip == lease.ip)
            {
                state.leases.push(lease.clone());
                changed = true;
            }
        }
        if changed {
            write_state(&inner.dir, &inner.path, &state)?;
        }
        Ok(recovered)
    }

    /// The allocator of a network recorded in `dir`, for a caller that holds the lock of `dir`
    /// (which [`Allocator::open`] would take again).
    pub(crate) fn existing_locked(dir: &Path, network: &str, subnet: Subnet) -> Allocator {
        Allocator {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                name: network.to_owned(),
                subnet,
                path: dir.join(format!("{network}.{STATE_EXT}")),
                lock_timeout: DEFAULT_LOCK_TIMEOUT,
            }),
        }
    }

    /// Checks, under the lock, that no network recorded in `state_dir` overlaps `subnet`.
    /// A missing directory holds no networks.
    ///
    /// # Errors
    /// [`Error::Overlap`] naming the first overlapping network; [`Error::CorruptState`] or
    /// [`Error::Io`] if the directory cannot be read.
    pub fn check_overlap(state_dir: impl AsRef<Path>, subnet: Subnet) -> Result<()> {
        let dir = state_dir.as_ref();
        if !dir.is_dir() {
            return Ok(());
        }
        let _lock = lock_dir(dir)?;
        check_overlap_locked(dir, None, subnet)
    }

    /// The network's name.
    pub fn network(&self) -> &str {
        &self.inner.name
    }

    /// The network's subnet.
    pub fn subnet(&self) -> Subnet {
        self.inner.subnet
    }

    /// The state file, `<state_dir>/<network>.ipam`.
    pub fn state_path(&self) -> &Path {
        &self.inner.path
    }

    /// Takes the state directory's lock, for a sequence of `*_locked` operations that must not
    /// interleave with other processes (the bridge set-up and teardown).
    pub(crate) fn lock(&self) -> Result<DirLock> {
        lock_dir_timeout(&self.inner.dir, self.inner.lock_timeout)
    }

    /// How long operations wait for the state directory's lock before failing with
    /// [`Error::LockTimeout`].
    pub fn lock_timeout(&self) -> Duration {
        self.inner.lock_timeout
    }

    /// Runs a locked read-modify-write of the state: loads it, drops dead owners' leases, calls
    /// `f`, and writes the state back if `f` or the cleanup changed it.
    fn update<T>(&self, f: impl FnOnce(&mut State) -> Result<(T, bool)>) -> Result<T> {
        let _lock = self.lock()?;
        self.update_locked(f)
    }

    /// [`Allocator::update`] for a caller that holds [`Allocator::lock`].
    fn update_locked<T>(&self, f: impl FnOnce(&mut State) -> Result<(T, bool)>) -> Result<T> {
        let inner = &*self.inner;
        let mut state = match read_state(&inner.path)? {
            Some(state) => state,
            // Removed with the network's last lease by another process since `open`: start over.
            None => State {
                subnet: inner.subnet,
                leases: Vec::new(),
            },
        };
        if state.subnet != inner.subnet {
            return Err(Error::SubnetMismatch {
                network: inner.name.clone(),
                path: inner.path.clone(),
                recorded: state.subnet,
                requested: inner.subnet,
            });
        }
        let pruned = state.prune();
        let result = f(&mut state);
        let changed = matches!(result, Ok((_, true)));
        if pruned || changed {
            write_state(&inner.dir, &inner.path, &state)?;
        }
        result.map(|(t, _)| t)
    }

    /// Leases the lowest free host address to `owner`, which must be a running process.
    /// The lease is released by [`Lease::release`], when the [`Lease`] is dropped, or — if the
    /// owner dies first — by the next operation on the network.
    ///
    /// # Errors
    /// - [`Error::Exhausted`] if every host address is leased to a live owner;
    /// - [`Error::InvalidValue`] if the owner is not running (or its start time differs) or its
    ///   tag is invalid;
    /// - [`Error::CorruptState`], [`Error::Io`] for state file problems.
    pub fn allocate(&self, owner: Owner) -> Result<Lease> {
        let _lock = self.lock()?;
        self.allocate_locked(owner, &BTreeSet::new())
    }

    /// [`Allocator::allocate`] for a caller that holds [`Allocator::lock`], never handing out
    /// an address of `reserved` (one that something outside the state file still points at).
    pub(crate) fn allocate_locked(
        &self,
        owner: Owner,
        reserved: &BTreeSet<IpAddr>,
    ) -> Result<Lease> {
        validate_tag(&owner.tag)?;
        if !owner.is_alive() {
            return Err(Error::InvalidValue {
                what: "lease owner",
                value: format!("pid {} start time {}", owner.pid, owner.start_time),
                reason: "the process is not running, or its start time differs",
            });
        }
        let subnet = self.inner.subnet;
        let ip = self.update_locked(|state| {
            let used: BTreeSet<u128> = state
                .leases
                .iter()
                .map(|l| l.ip)
                .chain(reserved.iter().copied())
                .filter(|ip| subnet.contains(*ip))
                .map(to_bits)
                .collect();
            let (first, last) = subnet.host_range();
            let mut candidate = first;
            for &u in used.range(first..=last) {
                if u != candidate {
                    break;
                }
                candidate += 1;
            }
            if candidate > last {
                return Err(Error::Exhausted {
                    network: self.inner.name.clone(),
                    subnet,
                });
            }
            let ip = from_bits(candidate, subnet.is_ipv4());
            state.leases.push(LeaseInfo {
                ip,
                owner: owner.clone(),
            });
            Ok((ip, true))
        })?;
        Ok(Lease {
            ip,
            owner,
            allocator: self.clone(),
            released: false,
        })
    }

    /// The live leases, lowest address first (dead owners' leases are dropped first).
    ///
    /// # Errors
    /// [`Error::CorruptState`], [`Error::Io`] for state file problems.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        self.update(|state| {
            let mut leases = state.leases.clone();
            leases.sort_by_key(|l| to_bits(l.ip));
            Ok((leases, false))
        })
    }

    /// Removes the network's state file, which frees its subnet for other networks.
    ///
    /// # Errors
    /// [`Error::NetworkInUse`] while live leases remain; [`Error::CorruptState`], [`Error::Io`]
    /// for state file problems.
    pub fn remove(self) -> Result<()> {
        let inner = &*self.inner;
        let _lock = self.lock()?;
        if let Some(mut state) = read_state(&inner.path)? {
            state.prune();
            if !state.leases.is_empty() {
                return Err(Error::NetworkInUse {
                    network: inner.name.clone(),
                    leases: state.leases.len(),
                });
            }
            fs::remove_file(&inner.path).map_err(io_err("remove state file", &inner.path))?;
        }
        Ok(())
    }

    fn release_ip(&self, ip: IpAddr, owner: &Owner) -> Result<()> {
        let _lock = self.lock()?;
        self.release_locked(ip, owner).map(drop)
    }

    /// Releases a lease for a caller that holds [`Allocator::lock`]; returns how many live
    /// leases remain. With none left, the state file is removed (the subnet is free again).
    pub(crate) fn release_locked(&self, ip: IpAddr, owner: &Owner) -> Result<usize> {
        let remaining = self.update_locked(|state| {
            let before = state.leases.len();
            state.leases.retain(|l| !(l.ip == ip && &l.owner == owner));
            Ok((state.leases.len(), state.leases.len() != before))
        })?;
        Ok(remaining)
    }

    /// The number of live leases, for a caller that holds [`Allocator::lock`].
    pub(crate) fn live_leases_locked(&self) -> Result<usize> {
        self.update_locked(|state| Ok((state.leases.len(), false)))
    }

    /// Removes the state file for a caller that holds [`Allocator::lock`] and has checked that
    /// no lease is left.
    pub(crate) fn remove_locked(&self) -> Result<()> {
        match fs::remove_file(&self.inner.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_err("remove state file", &self.inner.path)(e))
            }
            _ => Ok(()),
        }
    }

    /// The state directory.
    pub(crate) fn state_dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// A leased address. Released by [`Lease::release`] or, best effort, on drop.
#[derive(Debug)]
pub struct Lease {
    ip: IpAddr,
    owner: Owner,
    allocator: Allocator,
    released: bool,
}

impl Lease {
    /// The leased address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The subnet's prefix length, to configure the address with.
    pub fn prefix(&self) -> u8 {
        self.allocator.inner.subnet.prefix()
    }

    /// The subnet's gateway address.
    pub fn gateway(&self) -> IpAddr {
        self.allocator.inner.subnet.gateway()
    }

    /// The subnet the address belongs to.
    pub fn subnet(&self) -> Subnet {
        self.allocator.inner.subnet
    }

    /// Who holds the lease.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// Releases the lease. Succeeds too if the lease was already gone (e.g. reclaimed because its
    /// owner died); a lease since given to another owner is left alone.
    ///
    /// # Errors
    /// [`Error::CorruptState`], [`Error::Io`] for state file problems.
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.allocator.release_ip(self.ip, &self.owner)
    }

    /// Marks the lease as released by the caller (through [`Allocator::release_locked`]), so
    /// that dropping it does nothing.
    pub(crate) fn disarm(&mut self) {
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            let _ = self.allocator.release_ip(self.ip, &self.owner);
        }
    }
}
