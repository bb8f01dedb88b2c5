//! Docker / OCI seccomp profiles in JSON.
//!
//! The format is the one Docker's `--security-opt seccomp=FILE` and the OCI runtime spec's
//! `linux.seccomp` use: `defaultAction` (+ `defaultErrnoRet`), `architectures`, `archMap`,
//! `flags`, and `syscalls[]` entries with `names`, `action` (+ `errnoRet`), `args[]` and
//! `includes`/`excludes` by `caps`, `arches` and `minKernel`.
//!
//! The semantics are documented on [`Profile::from_json`].

use std::path::Path;

use serde::Deserialize;

use crate::arch::{Arch, ArchName};
use crate::error::{Error, Result};
use crate::load::LoadFlags;
use crate::rule::{Action, CmpOp, Cond, Rule};

use super::Profile;

/// What the caller knows about the container, for `includes`/`excludes` in a JSON profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Capabilities the container will hold, such as `CAP_SYS_ADMIN` (the `CAP_` prefix and
    /// case are optional). An entry whose `includes.caps` are not all held, or whose
    /// `excludes.caps` names a held one, is dropped.
    pub capabilities: Vec<String>,
    /// Kernel version `(major, minor)` for `includes.minKernel`; `None` reads the running
    /// kernel's with `uname(2)`.
    pub kernel_version: Option<(u32, u32)>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<JsonArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    syscalls: Option<Vec<JsonSyscall>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonSyscall {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// Older profiles name one syscall per entry.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<JsonArg>>,
    #[serde(default)]
    includes: Option<JsonFilter>,
    #[serde(default)]
    excludes: Option<JsonFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonArg {
    index: u64,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonFilter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

fn parse_action(action: &str, errno: Option<u32>, field: &str) -> Result<Action> {
    let data = |default: i32| -> Result<u16> {
        let value = errno.unwrap_or(default as u32);
        u16::try_from(value).map_err(|_| Error::BadProfileValue {
            field: field.to_owned(),
            value: value.to_string(),
        })
    };
    Ok(match action {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(data(libc::EPERM)?),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_TRACE" => Action::Trace(data(libc::EPERM)?),
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_NOTIFY" => Action::UserNotify,
        _ => {
            return Err(Error::UnknownAction {
                field: field.to_owned(),
                action: action.to_owned(),
            })
        }
    })
}

fn parse_cond(arg: &JsonArg, field: &str) -> Result<Cond> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq(arg.value),
        _ => {
            return Err(Error::UnknownOp {
                field: format!("{field}.op"),
                op: arg.op.clone(),
            })
        }
    };
    let value = if matches!(op, CmpOp::MaskedEq(_)) {
        arg.value_two
    } else {
        arg.value
    };
    let index = u8::try_from(arg.index)
        .ok()
        .filter(|i| *i <= 5)
        .ok_or_else(|| Error::BadProfileArgIndex {
            field: format!("{field}.index"),
            index: arg.index,
        })?;
    Cond::new(index, op, value)
}

fn parse_arches(names: &[String], field: &str) -> Result<Vec<ArchName>> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            ArchName::parse(name).ok_or_else(|| Error::UnknownArch {
                field: format!("{field}[{i}]"),
                arch: name.clone(),
            })
        })
        .collect()
}

fn normalize_cap(cap: &str) -> String {
    let upper = cap.to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

fn parse_version(text: &str, field: &str) -> Result<(u32, u32)> {
    let bad = || Error::BadProfileValue {
        field: field.to_owned(),
        value: text.to_owned(),
    };
    let mut parts = text.trim().split('.');
    let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let minor = match parts.next() {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 0,
    };
    Ok((major, minor))
}

/// The running kernel's `(major, minor)` from `uname(2)`'s release string.
fn running_kernel() -> Result<(u32, u32)> {
    // SAFETY: utsname is plain data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return Err(Error::last_os("uname"));
    }
    let release: Vec<u8> = uts
        .release
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let release = String::from_utf8_lossy(&release);
    // "6.18.0-foo": keep the leading digits and dots.
    let numeric: String = release
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    parse_version(&numeric, "uname release")
}

impl Profile {
    /// Reads a Docker/OCI seccomp profile: `defaultAction` (+ `defaultErrnoRet`),
    /// `architectures`, `archMap`, `flags`, and `syscalls[]` entries with `names`, `action`
    /// (+ `errnoRet`), `args[]` and `includes`/`excludes` by `caps`, `arches` and `minKernel`.
    ///
    /// Semantics follow libseccomp-based runtimes:
    /// - conditions of one entry are AND-ed, except that when two of them test the same argument
    ///   index, the entry becomes one rule per condition (OR), which is how profiles express "arg 0
    ///   is one of these values";
    /// - `SCMP_CMP_MASKED_EQ` takes the mask in `value` and the expected result in `valueTwo`;
    /// - syscall names unknown on an architecture are skipped and reported by
    ///   [`Profile::skipped_syscalls`];
    /// - `includes`/`excludes` by `caps` and `minKernel` are decided here from `options`; by
    ///   `arches`, when compiling for an architecture;
    /// - `architectures` and `archMap` are validated but do not restrict the filter: it is
    ///   always built for the architecture given to [`Profile::compile`], as libseccomp adds the
    ///   native architecture to every filter. Calls from any other architecture get the
    ///   foreign-architecture action.
    ///
    /// ```
    /// use palisade_seccomp::{Action, Arch, JsonOptions, Profile, SeccompData};
    ///
    /// let json = r#"{
    ///     "defaultAction": "SCMP_ACT_ERRNO",
    ///     "defaultErrnoRet": 1,
    ///     "syscalls": [
    ///         { "names": ["getpid", "no_such_call"], "action": "SCMP_ACT_ALLOW" },
    ///         { "names": ["kill"], "action": "SCMP_ACT_ALLOW",
    ///           "args": [{ "index": 1, "value": 0, "op": "SCMP_CMP_EQ" }] }
    ///     ]
    /// }"#;
    /// let profile = Profile::from_json(json, &JsonOptions::default())?;
    /// let arch = Arch::X86_64;
    /// assert_eq!(profile.skipped_syscalls(arch), ["no_such_call"]);
    /// let prog = profile.compile(arch)?.unwrap();
    /// let kill = |sig| SeccompData::new(arch, 62, [1, sig, 0, 0, 0, 0]);
    /// assert_eq!(prog.interpret(&kill(0))?, Action::Allow.ret());
    /// assert_eq!(prog.interpret(&kill(9))?, Action::Errno(1).ret());
    /// # Ok::<(), palisade_seccomp::Error>(())
    /// ```
    pub fn from_json(json: &str, options: &JsonOptions) -> Result<Profile> {
        let doc: JsonProfile = serde_json::from_str(json)?;
        let default_action =
            parse_action(&doc.default_action, doc.default_errno_ret, "defaultAction")?;
        let mut profile = Profile::new(default_action);

        if let Some(arches) = &doc.architectures {
            parse_arches(arches, "architectures")?;
        }
        for (i, map) in doc.arch_map.iter().flatten().enumerate() {
            parse_arches(
                std::slice::from_ref(&map.architecture),
                &format!("archMap[{i}].architecture"),
            )?;
            if let Some(subs) = &map.sub_architectures {
                parse_arches(subs, &format!("archMap[{i}].subArchitectures"))?;
            }
        }

        let mut flags = LoadFlags::empty();
        for (i, flag) in doc.flags.iter().flatten().enumerate() {
            flags |= match flag.as_str() {
                "SECCOMP_FILTER_FLAG_TSYNC" => LoadFlags::TSYNC,
                "SECCOMP_FILTER_FLAG_LOG" => LoadFlags::LOG,
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => LoadFlags::SPEC_ALLOW,
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => LoadFlags::WAIT_KILLABLE_RECV,
                _ => {
                    return Err(Error::BadProfileValue {
                        field: format!("flags[{i}]"),
                        value: flag.clone(),
                    })
                }
            };
        }
        if let Some(policy) = &mut profile.policy {
            policy.flags = flags;
        }

        let caps: Vec<String> = options
            .capabilities
            .iter()
            .map(|c| normalize_cap(c))
            .collect();
        let mut kernel = options.kernel_version;

        for (i, entry) in doc.syscalls.iter().flatten().enumerate() {
            let field = format!("syscalls[{i}]");
            let action = parse_action(&entry.action, entry.errno_ret, &format!("{field}.action"))?;
            let conds = entry
                .args
                .iter()
                .flatten()
                .enumerate()
                .map(|(j, a)| parse_cond(a, &format!("{field}.args[{j}]")))
                .collect::<Result<Vec<Cond>>>()?;

            let includes = entry.includes.as_ref();
            let excludes = entry.excludes.as_ref();
            let include_arches = match includes.and_then(|f| f.arches.as_ref()) {
                Some(list) if !list.is_empty() => Some(supported(&parse_arches(
                    list,
                    &format!("{field}.includes.arches"),
                )?)),
                _ => None,
            };
            let exclude_arches = match excludes.and_then(|f| f.arches.as_ref()) {
                Some(list) => supported(&parse_arches(list, &format!("{field}.excludes.arches"))?),
                None => Vec::new(),
            };
            if let Some(required) = includes.and_then(|f| f.caps.as_ref()) {
                if !required.iter().all(|c| caps.contains(&normalize_cap(c))) {
                    continue;
                }
            }
            if let Some(excluded) = excludes.and_then(|f| f.caps.as_ref()) {
                if excluded.iter().any(|c| caps.contains(&normalize_cap(c))) {
                    continue;
                }
            }
            if let Some(min) = includes.and_then(|f| f.min_kernel.as_deref()) {
                let min = parse_version(min, &format!("{field}.includes.minKernel"))?;
                let running = match kernel {
                    Some(v) => v,
                    None => *kernel.insert(running_kernel()?),
                };
                if running < min {
                    continue;
                }
            }
            let arches: Option<Vec<Arch>> = match include_arches {
                Some(list) => Some(
                    list.into_iter()
                        .filter(|a| !exclude_arches.contains(a))
                        .collect(),
                ),
                None if exclude_arches.is_empty() => None,
                None => Some(
                    Arch::ALL
                        .into_iter()
                        .filter(|a| !exclude_arches.contains(a))
                        .collect(),
                ),
            };

            let names = entry.names.iter().flatten().chain(entry.name.iter());
            // Two conditions on one argument cannot both be exact; profiles mean "any of".
            let mut seen = [false; 6];
            let repeated = conds
                .iter()
                .any(|c| std::mem::replace(&mut seen[usize::from(c.arg())], true));
            for name in names {
                let rules: Vec<Rule> = if repeated {
                    conds
                        .iter()
                        .map(|c| Rule::new(name.clone(), action).when(*c))
                        .collect()
                } else {
                    let rule = conds
                        .iter()
                        .fold(Rule::new(name.clone(), action), |r, c| r.when(*c));
                    vec![rule]
                };
                for rule in rules {
                    profile.push(rule, arches.clone());
                }
            }
        }
        Ok(profile)
    }

    /// Reads a Docker/OCI seccomp profile from a file; see [`Profile::from_json`].
    pub fn from_json_file(path: impl AsRef<Path>, options: &JsonOptions) -> Result<Profile> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadProfile {
            path: path.to_owned(),
            source,
        })?;
        Profile::from_json(&text, options)
    }
}

fn supported(names: &[ArchName]) -> Vec<Arch> {
    names
        .iter()
        .filter_map(|n| match n {
            ArchName::Supported(a) => Some(*a),
            ArchName::Other => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::SeccompData;

    fn run(p: &Profile, arch: Arch, name: &str, args: [u64; 6]) -> Option<Action> {
        let prog = p.compile(arch).unwrap().unwrap();
        let nr = arch.syscall_nr(name).unwrap();
        Action::from_ret(prog.interpret(&SeccompData::new(arch, nr, args)).unwrap())
    }

    const DOC: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["read", "write", "bogus_call"], "action": "SCMP_ACT_ALLOW", "args": null},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
                      {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["mmap"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 2, "value": 4, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
                      {"index": 0, "value": 4096, "op": "SCMP_CMP_GE"}]},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["kexec_load"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.1"}},
            {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
             "includes": {"arches": ["amd64"]}},
            {"names": ["getpid"], "action": "SCMP_ACT_KILL", "excludes": {"caps": ["sys_admin"], "arches": ["arm64"]}}
        ]
    }"#;

    #[test]
    fn parses_docker_shape() {
        let opts = JsonOptions {
            capabilities: vec![],
            kernel_version: Some((5, 10)),
        };
        let p = Profile::from_json(DOC, &opts).unwrap();
        assert_eq!(p.load_flags(), LoadFlags::LOG);
        assert_eq!(p.default_action(), Some(Action::Errno(38)));
        assert_eq!(p.skipped_syscalls(Arch::X86_64), ["bogus_call"]);
        let x = Arch::X86_64;
        assert_eq!(run(&p, x, "read", [0; 6]), Some(Action::Allow));
        assert_eq!(
            run(&p, x, "personality", [8, 0, 0, 0, 0, 0]),
            Some(Action::Allow)
        );
        assert_eq!(
            run(&p, x, "personality", [0, 0, 0, 0, 0, 0]),
            Some(Action::Allow)
        );
        assert_eq!(
            run(&p, x, "personality", [9, 0, 0, 0, 0, 0]),
            Some(Action::Errno(38))
        );
        assert_eq!(
            run(&p, x, "mmap", [4096, 0, 3, 0, 0, 0]),
            Some(Action::Allow)
        );
        assert_eq!(
            run(&p, x, "mmap", [4096, 0, 7, 0, 0, 0]),
            Some(Action::Errno(38))
        );
        assert_eq!(
            run(&p, x, "mmap", [0, 0, 3, 0, 0, 0]),
            Some(Action::Errno(38))
        );
        assert_eq!(run(&p, x, "mount", [0; 6]), Some(Action::Errno(38)));
        assert_eq!(run(&p, x, "ptrace", [0; 6]), Some(Action::Allow));
        assert_eq!(run(&p, x, "kexec_load", [0; 6]), Some(Action::Errno(38)));
        assert_eq!(run(&p, x, "getppid", [0; 6]), Some(Action::Errno(5)));
        assert_eq!(
            run(&p, Arch::Aarch64, "getppid", [0; 6]),
            Some(Action::Errno(38))
        );
        assert_eq!(run(&p, x, "getpid", [0; 6]), Some(Action::KillThread));
        assert_eq!(
            run(&p, Arch::Aarch64, "getpid", [0; 6]),
            Some(Action::Errno(38))
        );

        let admin = JsonOptions {
            capabilities: vec!["sys_admin".into()],
            kernel_version: Some((5, 10)),
        };
        let p = Profile::from_json(DOC, &admin).unwrap();
        assert_eq!(run(&p, x, "mount", [0; 6]), Some(Action::Allow));
        assert_eq!(run(&p, x, "getpid", [0; 6]), Some(Action::Errno(38)));
        // The running kernel is well past 4.8.
        let p = Profile::from_json(DOC, &JsonOptions::default()).unwrap();
        assert_eq!(run(&p, x, "ptrace", [0; 6]), Some(Action::Allow));
    }

    #[test]
    fn typed_errors() {
        let o = JsonOptions::default();
        let err = |json: &str| Profile::from_json(json, &o).unwrap_err();
        assert!(matches!(
            err(r#"{"defaultAction": "SCMP_ACT_NOPE"}"#),
            Error::UnknownAction { ref field, ref action } if field == "defaultAction" && action == "SCMP_ACT_NOPE"
        ));
        assert!(matches!(
            err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}"#),
            Error::UnknownOp { ref field, .. } if field == "syscalls[0].args[0].op"
        ));
        assert!(matches!(
            err(
                r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                   "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}"#
            ),
            Error::BadProfileArgIndex { index: 6, .. }
        ));
        assert!(matches!(
            err(r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#),
            Error::UnknownArch { ref arch, .. } if arch == "SCMP_ARCH_VAX"
        ));
        assert!(matches!(
            err(r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}"#),
            Error::BadProfileValue { .. }
        ));
        assert!(matches!(err("{"), Error::Json(_)));
        assert!(matches!(
            Profile::from_json_file("/nonexistent/profile.json", &o),
            Err(Error::ReadProfile { .. })
        ));
    }
}
