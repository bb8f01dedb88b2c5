//! Which device nodes a group's processes may open and create: a typed device policy, as the OCI
//! runtime spec's `linux.resources.devices` describes it, enforced by the v1 `devices`
//! controller or, on cgroup v2, by a `BPF_PROG_TYPE_CGROUP_DEVICE` program ([`crate::bpf`]).
//!
//! A [`DevicePolicy`] starts from "deny everything" and applies its [`DeviceRule`]s in order; for
//! each access bit (read, write, mknod) the last rule that matches the device decides. The text
//! form of a rule is the one of the v1 `devices.allow` file and of `devices.list`
//! (`c 1:3 rwm`, `b 8:* r`, `a *:* m`), with a leading `deny ` for deny rules.

use std::fmt;
use std::str::FromStr;

use crate::devnum::{MAX_MAJOR, MAX_MINOR};
use crate::error::{DeviceRuleError, Error, Result};

/// The kind of device a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Both character and block devices (`a`).
    All,
    /// Character devices (`c`).
    Char,
    /// Block devices (`b`).
    Block,
}

impl DeviceKind {
    fn letter(self) -> char {
        match self {
            DeviceKind::All => 'a',
            DeviceKind::Char => 'c',
            DeviceKind::Block => 'b',
        }
    }

    /// Whether a rule of this kind applies to a device of kind `device` (`Char` or `Block`).
    fn covers(self, device: DeviceKind) -> bool {
        self == DeviceKind::All || self == device
    }
}

bitflags::bitflags! {
    /// What a rule allows or denies. The bit values are the kernel's `BPF_DEVCG_ACC_*`
    /// (`include/uapi/linux/bpf.h`), so the eBPF program can use them as they are.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct DeviceAccess: u32 {
        /// Creating a node with `mknod(2)` (`m`).
        const MKNOD = 1;
        /// Opening for reading (`r`).
        const READ = 2;
        /// Opening for writing (`w`).
        const WRITE = 4;
        /// `rwm`.
        const RWM = 7;
    }
}

impl fmt::Display for DeviceAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (flag, c) in [
            (DeviceAccess::READ, 'r'),
            (DeviceAccess::WRITE, 'w'),
            (DeviceAccess::MKNOD, 'm'),
        ] {
            if self.contains(flag) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One rule of a [`DevicePolicy`]: allow or deny some access to some devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRule {
    /// Allow (`true`) or deny.
    pub allow: bool,
    /// Which kind of device.
    pub kind: DeviceKind,
    /// The major number, `None` for any (`*`).
    pub major: Option<u32>,
    /// The minor number, `None` for any (`*`).
    pub minor: Option<u32>,
    /// The access allowed or denied.
    pub access: DeviceAccess,
}

impl DeviceRule {
    /// Allows `access` to the character device `major:minor` (`None` for `*`).
    pub const fn allow_char(
        major: Option<u32>,
        minor: Option<u32>,
        access: DeviceAccess,
    ) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major,
            minor,
            access,
        }
    }

    /// Allows `access` to the block device `major:minor` (`None` for `*`).
    pub const fn allow_block(
        major: Option<u32>,
        minor: Option<u32>,
        access: DeviceAccess,
    ) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Block,
            major,
            minor,
            access,
        }
    }

    /// Denies `access` to devices of `kind` numbered `major:minor` (`None` for `*`).
    pub const fn deny(
        kind: DeviceKind,
        major: Option<u32>,
        minor: Option<u32>,
        access: DeviceAccess,
    ) -> DeviceRule {
        DeviceRule {
            allow: false,
            kind,
            major,
            minor,
            access,
        }
    }

    /// Whether the rule is about the device `kind` (`Char` or `Block`) `major:minor`.
    pub fn matches(&self, kind: DeviceKind, major: u32, minor: u32) -> bool {
        self.kind.covers(kind)
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }

    /// The rule as `devices.allow` / `devices.deny` take it, without the `deny ` prefix.
    pub(crate) fn v1_text(&self) -> String {
        fn num(n: Option<u32>) -> String {
            n.map_or_else(|| "*".to_owned(), |n| n.to_string())
        }
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            num(self.major),
            num(self.minor),
            self.access
        )
    }

    fn validate(&self) -> Result<()> {
        if self.major.is_some_and(|m| m > MAX_MAJOR) || self.minor.is_some_and(|m| m > MAX_MINOR) {
            return Err(Error::invalid(
                "device rule",
                self,
                "major is above 4095 or minor above 1048575, which no device number can have",
            ));
        }
        Ok(())
    }
}

impl fmt::Display for DeviceRule {
    /// `c 1:3 rwm` for an allow rule, `deny c 1:3 rwm` for a deny rule.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.allow {
            f.write_str("deny ")?;
        }
        f.write_str(&self.v1_text())
    }
}

impl FromStr for DeviceRule {
    type Err = DeviceRuleError;

    /// Parses `[allow |deny ]<a|c|b> <major|*>:<minor|*> <access>`; `a` alone (as
    /// `devices.list` shows it) means `a *:* rwm`.
    fn from_str(s: &str) -> std::result::Result<DeviceRule, DeviceRuleError> {
        let rule = || s.to_owned();
        let mut words: Vec<&str> = s.split_whitespace().collect();
        let allow = match words.first() {
            Some(&"deny") => {
                words.remove(0);
                false
            }
            Some(&"allow") => {
                words.remove(0);
                true
            }
            _ => true,
        };
        let (kind, numbers, access) = match words[..] {
            [kind] => (kind, "*:*", "rwm"),
            [kind, numbers, access] => (kind, numbers, access),
            _ => return Err(DeviceRuleError::Format { rule: rule() }),
        };
        let kind = match kind {
            "a" => DeviceKind::All,
            "c" => DeviceKind::Char,
            "b" => DeviceKind::Block,
            other => {
                return Err(DeviceRuleError::Kind {
                    rule: rule(),
                    kind: other.to_owned(),
                })
            }
        };
        let (major, minor) = numbers
            .split_once(':')
            .ok_or_else(|| DeviceRuleError::Format { rule: rule() })?;
        let number = |text: &str, max: u32| -> std::result::Result<Option<u32>, DeviceRuleError> {
            if text == "*" {
                return Ok(None);
            }
            // Digits only: `u32::from_str` would take a leading `+`.
            match text.parse::<u32>() {
                Ok(n) if n <= max && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(n)),
                _ => Err(DeviceRuleError::Number {
                    rule: rule(),
                    value: text.to_owned(),
                }),
            }
        };
        let major = number(major, MAX_MAJOR)?;
        let minor = number(minor, MAX_MINOR)?;
        let mut bits = DeviceAccess::empty();
        for c in access.chars() {
            let flag = match c {
                'r' => DeviceAccess::READ,
                'w' => DeviceAccess::WRITE,
                'm' => DeviceAccess::MKNOD,
                _ => DeviceAccess::empty(),
            };
            if flag.is_empty() || bits.contains(flag) {
                return Err(DeviceRuleError::Access {
                    rule: rule(),
                    access: access.to_owned(),
                });
            }
            bits |= flag;
        }
        if bits.is_empty() {
            return Err(DeviceRuleError::Access {
                rule: rule(),
                access: access.to_owned(),
            });
        }
        Ok(DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: bits,
        })
    }
}

/// Which devices a group's processes may open (read, write) and create (`mknod(2)`).
///
/// A policy starts from deny-all; its rules apply in order, and for each access bit the last
/// rule that matches a device decides. [`docker_default`](Self::docker_default) is the policy
/// Docker gives a container.
///
/// ```
/// use palisade_cgroup::{DeviceAccess, DevicePolicy, DeviceRule, DeviceKind};
///
/// let policy = DevicePolicy::docker_default()
///     .allow(DeviceRule::allow_char(Some(10), Some(200), DeviceAccess::RWM)); // /dev/net/tun
/// assert!(policy.allows(DeviceKind::Char, 1, 3, DeviceAccess::READ | DeviceAccess::WRITE));
/// assert!(!policy.allows(DeviceKind::Char, 1, 1, DeviceAccess::READ)); // /dev/mem
/// assert!(policy.allows(DeviceKind::Block, 8, 0, DeviceAccess::MKNOD));
/// let null = DeviceRule::allow_char(Some(1), Some(3), DeviceAccess::RWM);
/// assert_eq!("c 1:3 rwm".parse::<DeviceRule>()?, null);
/// # Ok::<(), palisade_cgroup::DeviceRuleError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DevicePolicy {
    rules: Vec<DeviceRule>,
}

impl DevicePolicy {
    /// The empty policy: no device may be opened or created.
    pub fn deny_all() -> DevicePolicy {
        DevicePolicy::default()
    }

    /// Docker's default: creating any character or block node (`c *:* m`, `b *:* m`), and
    /// `rwm` for `/dev/null` (1:3), `zero` (1:5), `full` (1:7), `random` (1:8), `urandom` (1:9),
    /// `tty` (5:0), `ptmx` (5:2) and the pseudo-terminals (136:*). `/dev/console` (5:1) is not in
    /// it.
    pub fn docker_default() -> DevicePolicy {
        let any = DeviceAccess::MKNOD;
        let rwm = DeviceAccess::RWM;
        let c = |major, minor: Option<u32>| DeviceRule::allow_char(Some(major), minor, rwm);
        DevicePolicy {
            rules: vec![
                DeviceRule::allow_char(None, None, any),
                DeviceRule::allow_block(None, None, any),
                c(1, Some(3)),
                c(1, Some(5)),
                c(1, Some(7)),
                c(1, Some(8)),
                c(1, Some(9)),
                c(5, Some(0)),
                c(5, Some(2)),
                c(136, None),
            ],
        }
    }

    /// Adds a rule at the end (it overrides earlier ones where they overlap).
    #[must_use]
    pub fn allow(mut self, rule: DeviceRule) -> DevicePolicy {
        self.rules.push(rule);
        self
    }

    /// Adds a rule at the end (it overrides earlier ones where they overlap).
    pub fn push(&mut self, rule: DeviceRule) {
        self.rules.push(rule);
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[DeviceRule] {
        &self.rules
    }

    /// Whether every bit of `access` is allowed for the device `major:minor` of `kind` (`Char`
    /// or `Block`; `All` asks for both).
    pub fn allows(&self, kind: DeviceKind, major: u32, minor: u32, access: DeviceAccess) -> bool {
        match kind {
            DeviceKind::All => [DeviceKind::Char, DeviceKind::Block]
                .into_iter()
                .all(|k| self.allows(k, major, minor, access)),
            k => self.allowed(k, major, minor).contains(access),
        }
    }

    /// The access bits allowed for one device: the direct reading of the rules.
    fn allowed(&self, kind: DeviceKind, major: u32, minor: u32) -> DeviceAccess {
        self.rules
            .iter()
            .filter(|r| r.matches(kind, major, minor))
            .fold(DeviceAccess::empty(), |bits, r| {
                if r.allow {
                    bits | r.access
                } else {
                    bits - r.access
                }
            })
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.rules.iter().try_for_each(DeviceRule::validate)
    }

    /// The policy as cgroup v1 takes it: `a` to `devices.deny` (deny everything, which needs a
    /// group without children), then the allowed exceptions to `devices.allow`, per the kernel's
    /// `Documentation/admin-guide/cgroup-v1/devices.rst`.
    ///
    /// v1 keeps only a list of allowed exceptions, and a write to `devices.deny` removes access
    /// from an exception with exactly the same numbers, nothing else. So deny rules are applied
    /// here, to the exceptions they cover; a deny rule that cuts into a broader allow rule (deny
    /// `c 1:1 r` after allow `c *:* r`) cannot be expressed and is refused. `a` rules become a
    /// `c` and a `b` rule, because v1 reads `a` as "everything".
    pub(crate) fn v1_exceptions(&self) -> Result<Vec<DeviceRule>> {
        let mut out: Vec<DeviceRule> = Vec::new();
        for rule in &self.rules {
            for kind in [DeviceKind::Char, DeviceKind::Block] {
                if !rule.kind.covers(kind) || rule.access.is_empty() {
                    continue;
                }
                let r = DeviceRule { kind, ..*rule };
                if r.allow {
                    out.push(r);
                    continue;
                }
                for e in out.iter_mut().filter(|e| e.kind == kind) {
                    let covers = |d: Option<u32>, e: Option<u32>| d.is_none() || d == e;
                    let meets =
                        |d: Option<u32>, e: Option<u32>| d.is_none() || e.is_none() || d == e;
                    if covers(r.major, e.major) && covers(r.minor, e.minor) {
                        e.access -= r.access;
                    } else if meets(r.major, e.major)
                        && meets(r.minor, e.minor)
                        && e.access.intersects(r.access)
                    {
                        return Err(Error::invalid(
                            "device rule",
                            rule,
                            "narrows an earlier, broader allow rule, which cgroup v1 cannot \
                             express",
                        ));
                    }
                }
                out.retain(|e| !e.access.is_empty());
            }
        }
        Ok(out)
    }
}

impl FromIterator<DeviceRule> for DevicePolicy {
    fn from_iter<I: IntoIterator<Item = DeviceRule>>(iter: I) -> DevicePolicy {
        DevicePolicy {
            rules: iter.into_iter().collect(),
        }
    }
}

impl fmt::Display for DevicePolicy {
    /// One rule a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for DevicePolicy {
    type Err = DeviceRuleError;

    /// One rule a line; blank lines are skipped.
    fn from_str(s: &str) -> std::result::Result<DevicePolicy, DeviceRuleError> {
        s.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::parse)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_display() {
        let r: DeviceRule = "c 1:3 rwm".parse().unwrap();
        assert_eq!(
            r,
            DeviceRule::allow_char(Some(1), Some(3), DeviceAccess::RWM)
        );
        assert_eq!(r.to_string(), "c 1:3 rwm");
        let r: DeviceRule = "deny b *:0 mr".parse().unwrap();
        assert_eq!(
            r,
            DeviceRule::deny(
                DeviceKind::Block,
                None,
                Some(0),
                DeviceAccess::READ | DeviceAccess::MKNOD
            )
        );
        assert_eq!(r.to_string(), "deny b *:0 rm");
        assert_eq!("a".parse::<DeviceRule>().unwrap().to_string(), "a *:* rwm");
        assert_eq!(
            "allow a *:* w".parse::<DeviceRule>().unwrap().to_string(),
            "a *:* w"
        );
        for (bad, want) in [
            ("", "Format"),
            ("c 1:3", "Format"),
            ("c 13 rwm", "Format"),
            ("x 1:3 rwm", "Kind"),
            ("c 1:-3 rwm", "Number"),
            ("c +1:3 rwm", "Number"),
            ("c 4096:0 rwm", "Number"),
            ("c 1:1048576 rwm", "Number"),
            ("c 1:3 rwx", "Access"),
            ("c 1:3 rr", "Access"),
            ("deny", "Format"),
        ] {
            let err = bad.parse::<DeviceRule>().unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{bad:?}: {err:?}");
        }
        let p = DevicePolicy::docker_default();
        assert_eq!(p.to_string().parse::<DevicePolicy>().unwrap(), p);
        assert!(p.to_string().contains("c 136:* rwm"));
        assert!(!p.allows(DeviceKind::Char, 5, 1, DeviceAccess::READ));
    }

    #[test]
    fn last_rule_wins_bit_by_bit() {
        let p = DevicePolicy::deny_all()
            .allow(DeviceRule::allow_char(None, None, DeviceAccess::RWM))
            .allow(DeviceRule::deny(
                DeviceKind::All,
                Some(1),
                None,
                DeviceAccess::WRITE,
            ))
            .allow(DeviceRule::allow_char(
                Some(1),
                Some(3),
                DeviceAccess::WRITE,
            ));
        assert!(p.allows(DeviceKind::Char, 1, 3, DeviceAccess::RWM));
        assert!(p.allows(DeviceKind::Char, 1, 5, DeviceAccess::READ));
        assert!(!p.allows(DeviceKind::Char, 1, 5, DeviceAccess::WRITE));
        assert!(!p.allows(DeviceKind::Block, 8, 0, DeviceAccess::READ));
        assert!(!p.allows(DeviceKind::All, 2, 0, DeviceAccess::READ));
        // v1 cannot cut 1:* out of c *:*.
        assert!(p.v1_exceptions().is_err());
        assert!(DeviceRule::allow_char(Some(5000), None, DeviceAccess::READ)
            .validate()
            .is_err());
    }

    #[test]
    fn v1_form_of_docker_default() {
        let ex = DevicePolicy::docker_default().v1_exceptions().unwrap();
        let text: Vec<String> = ex.iter().map(DeviceRule::v1_text).collect();
        assert_eq!(text[0], "c *:* m");
        assert_eq!(text[1], "b *:* m");
        assert!(text.contains(&"c 136:* rwm".to_owned()));
        let p = DevicePolicy::deny_all()
            .allow("a 1:3 rwm".parse().unwrap())
            .allow("deny a *:* w".parse().unwrap());
        let text: Vec<String> = p
            .v1_exceptions()
            .unwrap()
            .iter()
            .map(DeviceRule::v1_text)
            .collect();
        assert_eq!(text, ["c 1:3 rm", "b 1:3 rm"]);
    }

    /// Rules over a few numbers, so that rules and devices often meet.
    pub(crate) fn rule() -> impl Strategy<Value = DeviceRule> {
        let num = prop_oneof![Just(None), (0u32..3).prop_map(Some)];
        (
            any::<bool>(),
            prop_oneof![
                Just(DeviceKind::All),
                Just(DeviceKind::Char),
                Just(DeviceKind::Block)
            ],
            num.clone(),
            num,
            1u32..8,
        )
            .prop_map(|(allow, kind, major, minor, access)| DeviceRule {
                allow,
                kind,
                major,
                minor,
                access: DeviceAccess::from_bits_truncate(access),
            })
    }

    pub(crate) fn policy() -> impl Strategy<Value = DevicePolicy> {
        proptest::collection::vec(rule(), 0..8).prop_map(DevicePolicy::from_iter)
    }

    proptest! {
        #[test]
        fn text_round_trips(p in policy(), big in (0..=MAX_MAJOR, 0..=MAX_MINOR)) {
            prop_assert_eq!(p.to_string().parse::<DevicePolicy>().unwrap(), p);
            let r = DeviceRule::allow_block(Some(big.0), Some(big.1), DeviceAccess::READ);
            prop_assert_eq!(r.to_string().parse::<DeviceRule>().unwrap(), r);
        }

        #[test]
        fn v1_exceptions_mean_the_policy(
            p in policy(),
            kind in prop_oneof![Just(DeviceKind::Char), Just(DeviceKind::Block)],
            major in 0u32..4,
            minor in 0u32..4,
        ) {
            if let Ok(ex) = p.v1_exceptions() {
                let v1 = ex
                    .iter()
                    .filter(|e| e.matches(kind, major, minor))
                    .fold(DeviceAccess::empty(), |b, e| b | e.access);
                prop_assert_eq!(v1, p.allowed(kind, major, minor));
                prop_assert!(ex.iter().all(|e| e.allow && e.kind != DeviceKind::All));
            } else {
                prop_assert!(p.rules().iter().any(|r| !r.allow));
            }
        }
    }
}
