//! Capability names and sets.

use std::fmt;
use std::str::FromStr;

pub use caps::Capability;

use crate::error::{Error, Result};

/// Every capability [`Capability`] names, indexed by its kernel number (`capabilities(7)`).
const KNOWN: [Capability; 41] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_LINUX_IMMUTABLE,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_BROADCAST,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_IPC_LOCK,
    Capability::CAP_IPC_OWNER,
    Capability::CAP_SYS_MODULE,
    Capability::CAP_SYS_RAWIO,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_SYS_PACCT,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_BOOT,
    Capability::CAP_SYS_NICE,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_SYS_TIME,
    Capability::CAP_SYS_TTY_CONFIG,
    Capability::CAP_MKNOD,
    Capability::CAP_LEASE,
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_AUDIT_CONTROL,
    Capability::CAP_SETFCAP,
    Capability::CAP_MAC_OVERRIDE,
    Capability::CAP_MAC_ADMIN,
    Capability::CAP_SYSLOG,
    Capability::CAP_WAKE_ALARM,
    Capability::CAP_BLOCK_SUSPEND,
    Capability::CAP_AUDIT_READ,
    Capability::CAP_PERFMON,
    Capability::CAP_BPF,
    Capability::CAP_CHECKPOINT_RESTORE,
];

/// The capabilities Docker grants a container by default (`docker run` without `--cap-add` or
/// `--cap-drop`), less `CAP_NET_RAW`, as podman's: a raw or packet socket forges ARP replies and
/// source MAC or IP addresses on a shared bridge, taking over a neighbour's or the gateway's
/// address (`packet(7)`, `raw(7)`). `ping` needs no capability: the sandbox's network namespace
/// lets every group open ICMP datagram sockets (`net.ipv4.ping_group_range`, `icmp(7)`).
const DOCKER_DEFAULT: [Capability; 13] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Parses a capability name as Docker's `--cap-add` does: with or without the `CAP_` prefix, in
/// any case (`"CAP_NET_ADMIN"`, `"NET_ADMIN"`, `"net_admin"`).
///
/// ```
/// use palisade::{parse_capability, Capability};
///
/// assert_eq!(parse_capability("net_admin")?, Capability::CAP_NET_ADMIN);
/// assert_eq!(parse_capability("CAP_SYS_TIME")?, Capability::CAP_SYS_TIME);
/// assert!(parse_capability("CAP_TIME_TRAVEL").is_err());
/// # Ok::<(), palisade::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidValue`] (`what`: `"capability"`) for a name the crate does not know.
pub fn parse_capability(name: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    KNOWN
        .iter()
        .copied()
        .find(|cap| cap.to_string().strip_prefix("CAP_") == Some(bare))
        .ok_or_else(|| Error::InvalidValue {
            what: "capability",
            value: name.to_owned(),
            reason: "unknown capability name",
        })
}

/// A set of [`Capability`]s, stored as a bit mask indexed by the kernel's capability numbers.
///
/// ```
/// use palisade::{Capabilities, Capability};
///
/// let mut set = Capabilities::docker_default();
/// assert!(set.contains(Capability::CAP_CHOWN));
/// assert!(!set.contains(Capability::CAP_SYS_ADMIN));
/// assert!(!set.contains(Capability::CAP_NET_RAW));
/// set.insert(Capability::CAP_NET_ADMIN);
/// set.remove(Capability::CAP_KILL);
/// assert_eq!(set.len(), 13);
///
/// let parsed: Capabilities = "chown, NET_ADMIN, CAP_KILL".parse()?;
/// assert_eq!(parsed.iter().collect::<Vec<_>>(),
///            [Capability::CAP_CHOWN, Capability::CAP_KILL, Capability::CAP_NET_ADMIN]);
/// assert_eq!(parsed.to_string(), "CAP_CHOWN,CAP_KILL,CAP_NET_ADMIN");
/// # Ok::<(), palisade::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(u64);

impl Capabilities {
    /// No capability.
    pub const fn empty() -> Capabilities {
        Capabilities(0)
    }

    /// Every capability [`Capability`] names (`CAP_CHOWN` to `CAP_CHECKPOINT_RESTORE`). Those
    /// the running kernel does not know are left out when a sandbox is built.
    pub fn all() -> Capabilities {
        KNOWN.into_iter().collect()
    }

    /// Docker's default set without `CAP_NET_RAW`, as podman's: `CAP_CHOWN`,
    /// `CAP_DAC_OVERRIDE`, `CAP_FSETID`, `CAP_FOWNER`, `CAP_MKNOD`, `CAP_SETGID`, `CAP_SETUID`,
    /// `CAP_SETFCAP`, `CAP_SETPCAP`, `CAP_NET_BIND_SERVICE`, `CAP_SYS_CHROOT`, `CAP_KILL` and
    /// `CAP_AUDIT_WRITE`. A sandbox starts with these.
    ///
    /// `CAP_NET_RAW` is left out because raw and packet sockets (`raw(7)`, `packet(7)`) let a
    /// sandbox on a shared bridge send gratuitous ARP or frames with a forged source, and take
    /// over another sandbox's address or the gateway's. `ping` still works without it: a
    /// sandbox with its own network namespace lets every group open ICMP datagram sockets
    /// (`net.ipv4.ping_group_range`, `icmp(7)`). Add it back with
    /// [`cap_add`](crate::SandboxBuilder::cap_add) for tools that need raw sockets.
    pub fn docker_default() -> Capabilities {
        DOCKER_DEFAULT.into_iter().collect()
    }

    /// The set whose kernel capability numbers are the bits set in `bits`; bits that no
    /// [`Capability`] names are ignored.
    pub fn from_bits_truncate(bits: u64) -> Capabilities {
        Capabilities(bits & Capabilities::all().0)
    }

    /// The set as a mask: bit `n` stands for the capability numbered `n` (the layout of
    /// `CapEff` and friends in `/proc/<pid>/status`, see `proc_pid_status(5)`).
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Adds `cap`; returns whether it was missing.
    pub fn insert(&mut self, cap: Capability) -> bool {
        let missing = !self.contains(cap);
        self.0 |= bit(cap);
        missing
    }

    /// Removes `cap`; returns whether it was there.
    pub fn remove(&mut self, cap: Capability) -> bool {
        let present = self.contains(cap);
        self.0 &= !bit(cap);
        present
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Capability) -> bool {
        self.0 & bit(cap) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of capabilities in the set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The capabilities in both sets.
    pub const fn intersection(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & other.0)
    }

    /// The capabilities in either set.
    pub const fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    /// The capabilities in `self` but not in `other`.
    pub const fn difference(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & !other.0)
    }

    /// The capabilities in the set, by increasing kernel number.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        KNOWN.into_iter().filter(move |cap| self.contains(*cap))
    }
}

/// The set's bit for `cap`; none for a value outside the kernel's 64-bit capability masks.
fn bit(cap: Capability) -> u64 {
    1u64.checked_shl(u32::from(cap.index())).unwrap_or(0)
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Capabilities {
        let mut set = Capabilities::empty();
        set.extend(iter);
        set
    }
}

impl Extend<Capability> for Capabilities {
    fn extend<I: IntoIterator<Item = Capability>>(&mut self, iter: I) {
        for cap in iter {
            self.insert(cap);
        }
    }
}

impl IntoIterator for Capabilities {
    type Item = Capability;
    type IntoIter = Box<dyn Iterator<Item = Capability>>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Capabilities {
    /// Names separated by commas, as [`FromStr`] reads them: `CAP_CHOWN,CAP_KILL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, cap) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cap}")?;
        }
        Ok(())
    }
}

impl FromStr for Capabilities {
    type Err = Error;

    /// A comma-separated list of names as [`parse_capability`] reads them, or `ALL` for
    /// [`Capabilities::all`]; an empty string is the empty set.
    fn from_str(s: &str) -> Result<Capabilities> {
        let mut set = Capabilities::empty();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("all") {
                set = set.union(Capabilities::all());
            } else {
                set.insert(parse_capability(name)?);
            }
        }
        Ok(set)
    }
}

/// The five capability sets of a process, given exactly
/// ([`SandboxBuilder::capability_sets`](crate::SandboxBuilder::capability_sets)), as an OCI
/// runtime's `process.capabilities` gives them.
///
/// The child applies them as they are, within the kernel's rules, which
/// [`SandboxBuilder::build`](crate::SandboxBuilder::build) checks: `effective` within
/// `permitted` and `inheritable` within `bounding` (`capset(2)`), `ambient` within `permitted`
/// and `inheritable` (`prctl(2)`, `PR_CAP_AMBIENT_RAISE`). What the command holds once it has
/// executed its program is then the kernel's transformation of these sets (`capabilities(7)`,
/// "Transformation of capabilities during execve()"): for a program without file capabilities,
/// root's permitted and effective sets become `bounding`, `inheritable` and `ambient` together,
/// and another user's become `ambient`; the inheritable, bounding and ambient sets stay as
/// given. So the sets show exactly as given after the exec when, for root, `permitted` and
/// `effective` are the union of the other three, and for another user, they equal `ambient`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CapSets {
    /// The bounding set: what any later `execve(2)` can grant at most.
    pub bounding: Capabilities,
    /// The effective set, what the kernel checks; within `permitted`.
    pub effective: Capabilities,
    /// The permitted set.
    pub permitted: Capabilities,
    /// The inheritable set, kept across `execve(2)`; within `bounding`.
    pub inheritable: Capabilities,
    /// The ambient set, kept across `execve(2)` of a program without file capabilities; within
    /// `permitted` and `inheritable`.
    pub ambient: Capabilities,
}

impl CapSets {
    /// Checks the kernel's rules (see the type's documentation): names the first set that
    /// breaks one and the capabilities that do.
    pub(crate) fn check(&self) -> Result<()> {
        let rules = [
            (
                self.effective.difference(self.permitted),
                "effective capabilities must be permitted: capset(2) refuses the others",
            ),
            (
                self.inheritable.difference(self.bounding),
                "inheritable capabilities must be in the bounding set: capset(2) refuses the \
                 others",
            ),
            (
                self.ambient
                    .difference(self.permitted.intersection(self.inheritable)),
                "ambient capabilities must be permitted and inheritable: prctl(2) refuses to \
                 raise the others",
            ),
        ];
        for (extra, reason) in rules {
            if !extra.is_empty() {
                return Err(Error::InvalidValue {
                    what: "capability sets",
                    value: extra.to_string(),
                    reason,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_kernel_numbers_and_the_caps_crate() {
        for (i, cap) in KNOWN.iter().enumerate() {
            assert_eq!(usize::from(cap.index()), i, "{cap}");
        }
        let all = caps::all();
        assert_eq!(all.len(), KNOWN.len());
        assert!(KNOWN.iter().all(|c| all.contains(c)));
        assert_eq!(Capabilities::all().len(), 41);
        assert_eq!(Capabilities::all().bits(), (1 << 41) - 1);
    }

    #[test]
    fn names_parse_as_docker_reads_them() {
        for name in ["CAP_NET_ADMIN", "NET_ADMIN", "net_admin", " cap_Net_Admin "] {
            assert_eq!(
                parse_capability(name).unwrap(),
                Capability::CAP_NET_ADMIN,
                "{name}"
            );
        }
        assert_eq!(
            parse_capability("checkpoint_restore").unwrap(),
            Capability::CAP_CHECKPOINT_RESTORE
        );
        for bad in [
            "",
            "CAP_",
            "NET ADMIN",
            "CAP_NET_ADMINS",
            "all",
            "CAP_CAP_KILL",
        ] {
            let err = parse_capability(bad).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::InvalidValue { what: "capability", value, .. } if value == bad
                ),
                "{bad:?}: {err}"
            );
        }
        // Every name the caps crate prints parses back, with or without its prefix.
        for cap in Capabilities::all() {
            let name = cap.to_string();
            assert_eq!(parse_capability(&name).unwrap(), cap);
            assert_eq!(parse_capability(&name[4..].to_lowercase()).unwrap(), cap);
        }
    }

    #[test]
    fn sets_parse_and_print() {
        let set: Capabilities = "kill,, chown ,CAP_SYS_ADMIN".parse().unwrap();
        assert_eq!(
            set.bits(),
            1 << 0 | 1 << 5 | 1 << 21,
            "{set:?} should hold CHOWN, KILL and SYS_ADMIN"
        );
        assert_eq!(set.to_string(), "CAP_CHOWN,CAP_KILL,CAP_SYS_ADMIN");
        assert_eq!(set.to_string().parse::<Capabilities>().unwrap(), set);
        assert_eq!(format!("{set:?}"), "{CAP_CHOWN, CAP_KILL, CAP_SYS_ADMIN}");
        assert_eq!("".parse::<Capabilities>().unwrap(), Capabilities::empty());
        assert_eq!("ALL".parse::<Capabilities>().unwrap(), Capabilities::all());
        assert!(matches!(
            "chown,nope".parse::<Capabilities>(),
            Err(Error::InvalidValue {
                what: "capability",
                ..
            })
        ));
    }

    #[test]
    fn docker_default_set() {
        let set = Capabilities::docker_default();
        assert_eq!(set.len(), 13);
        for name in [
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "MKNOD",
            "SETGID",
            "SETUID",
            "SETFCAP",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "SYS_CHROOT",
            "KILL",
            "AUDIT_WRITE",
        ] {
            assert!(set.contains(parse_capability(name).unwrap()), "{name}");
        }
        // The CapEff a container of `docker run` shows in /proc/self/status (0xa80425fb), less
        // CAP_NET_RAW (bit 13): what a podman container shows.
        assert_eq!(set.bits(), 0x0000_0000_a804_05fb);
        assert!(!set.contains(Capability::CAP_NET_RAW));
        assert!(!set.contains(Capability::CAP_SYS_ADMIN));
        assert!(!set.contains(Capability::CAP_NET_ADMIN));
    }

    #[test]
    fn set_operations() {
        let mut set = Capabilities::empty();
        assert!(set.is_empty());
        assert!(set.insert(Capability::CAP_BPF));
        assert!(!set.insert(Capability::CAP_BPF));
        assert!(set.contains(Capability::CAP_BPF));
        assert!(set.remove(Capability::CAP_BPF));
        assert!(!set.remove(Capability::CAP_BPF));
        let a: Capabilities = "chown,kill".parse().unwrap();
        let b: Capabilities = "kill,bpf".parse().unwrap();
        assert_eq!(a.union(b).to_string(), "CAP_CHOWN,CAP_KILL,CAP_BPF");
        assert_eq!(a.intersection(b).to_string(), "CAP_KILL");
        assert_eq!(a.difference(b).to_string(), "CAP_CHOWN");
        assert_eq!(
            Capabilities::from_bits_truncate(u64::MAX),
            Capabilities::all()
        );
        assert_eq!(
            Capabilities::from_bits_truncate(1 << 5).to_string(),
            "CAP_KILL"
        );
    }
}
