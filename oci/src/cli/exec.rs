//! `exec`: a further process in a running container, from the command line or from an OCI
//! `Process` JSON file (`--process`, as containerd's shim passes it).
//!
//! The process takes the container process's privileges, filter and limits, narrowed by what
//! is asked: another user, fewer capabilities, supplementary groups the container's process
//! could take itself, lower limits, `no_new_privs`. Palisade refuses anything beyond the
//! container's process ([`palisade::Exec`]). Of the process file's fields, `capabilities` map
//! as for `create` (see [`palisade_oci::bundle`]): root's set is its `bounding` set
//! (`effective` within `permitted` within `bounding`, `inheritable` empty, `ambient` ignored);
//! another user's is its `ambient` set (equal to `inheritable`, within `permitted` and
//! `bounding`), whose bounding set is then that same set, unless `ambient` is empty and
//! `bounding` holds all of the container's, which it then keeps. `user.umask` and
//! `oomScoreAdj` are set on this process before the exec, whose clone inherits them.
//! `ioPriority`, `scheduler`, `execCPUAffinity` and the Windows fields are refused by name;
//! `apparmorProfile` and `selinuxLabel` as `create` treats them.

use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;
use oci_spec::runtime::{LinuxCapabilities, Process};
use palisade::{Capabilities, Rlimit, Stdio, TerminalSize};
use palisade_oci::bundle::{capability_set, check_labels, rlimits};

use super::lifecycle::Forwarding;
use super::{open, status_of, write_pid_file, CliError, Global, Result};

// `exec`'s options.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Give the process a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// The working directory inside the container.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Set an environment variable (K=V); repeatable.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// UID[:GID] to run as.
    #[arg(short = 'u', long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Return once the process runs, without waiting for it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Where to write the process's pid.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A Unix socket to which the master of the process's terminal is sent.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// An OCI Process JSON file: args, env, cwd, user, terminal, consoleSize.
    #[arg(short = 'p', long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Add a capability (`CAP_NET_ADMIN`) to those of the container's process; repeatable.
    /// Palisade refuses one beyond the container's bounding set.
    #[arg(long = "cap", value_name = "CAP")]
    pub caps: Vec<String>,
    /// How many descriptors from 3 on the process gets, besides stdio.
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// A supplementary group of the process; repeatable, or comma-separated.
    #[arg(
        short = 'g',
        long = "additional-gids",
        value_name = "GID",
        value_delimiter = ','
    )]
    pub additional_gids: Vec<u32>,
    /// Set no_new_privs for the process (it cannot be lifted if the container has it).
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// An AppArmor profile (refused where AppArmor is enabled, ignored elsewhere).
    #[arg(long = "apparmor", value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// An SELinux label (refused where SELinux is enabled, ignored elsewhere).
    #[arg(long = "process-label", value_name = "LABEL")]
    pub process_label: Option<String>,
    /// The container's id.
    pub id: String,
    /// The command and its arguments (after `--` when they start with `-`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What to run, from the flags or the process file.
struct Job {
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    user: Option<(u32, u32)>,
    terminal: Option<TerminalSize>,
    /// Supplementary groups, if any are given.
    groups: Vec<u32>,
    /// The capabilities of the process file, in Palisade's one set.
    caps: Option<Capabilities>,
    rlimits: Vec<Rlimit>,
    no_new_privs: bool,
    umask: Option<u32>,
    oom_score_adj: Option<i32>,
}

fn parse_user(text: &str) -> Result<(u32, u32)> {
    let bad = || CliError::msg(format!("invalid --user {text:?}: expected UID[:GID]"));
    let (uid, gid) = text.split_once(':').unwrap_or((text, "0"));
    Ok((
        uid.parse().map_err(|_| bad())?,
        gid.parse().map_err(|_| bad())?,
    ))
}

fn split_env(kv: &str) -> Result<(String, String)> {
    kv.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| CliError::msg(format!("invalid environment variable {kv:?}: expected K=V")))
}

/// A field of the process file Palisade does not apply, refused by its JSON path.
fn unsupported(
    field: impl std::fmt::Display,
    value: impl std::fmt::Display,
    why: &str,
) -> CliError {
    CliError::msg(format!("{field}: unsupported value {value}: {why}"))
}

/// The process file's capability sets as the exact set of the exec (see the module
/// documentation), given the container's bounding set; `None` keeps the container's.
fn capabilities(
    caps: &LinuxCapabilities,
    root: bool,
    container: impl FnOnce() -> Result<Capabilities>,
) -> Result<Option<Capabilities>> {
    let [bounding, effective, inheritable, permitted, ambient] = [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ]
    .map(|n| capability_set(caps, n).map_err(CliError::from));
    let (bounding, effective, inheritable, permitted, ambient) =
        (bounding?, effective?, inheritable?, permitted?, ambient?);
    let outside = |name: &str, s: Capabilities, of: Capabilities, why: &str| {
        let extra = s.difference(of);
        if extra.is_empty() {
            Ok(())
        } else {
            Err(unsupported(
                format!("process.capabilities.{name}"),
                extra,
                why,
            ))
        }
    };
    outside(
        "effective",
        effective,
        permitted,
        "not permitted: capset(2) refuses an effective capability that is not permitted",
    )?;
    if root {
        if !inheritable.is_empty() {
            return Err(unsupported(
                "process.capabilities.inheritable",
                inheritable,
                "Palisade leaves root's inheritable set empty",
            ));
        }
        outside(
            "permitted",
            permitted,
            bounding,
            "not in the bounding set: root holds exactly its bounding set after execve(2)",
        )?;
        return Ok(Some(bounding));
    }
    outside(
        "ambient",
        ambient,
        permitted.intersection(inheritable),
        "not permitted and inheritable: the kernel refuses to raise it (prctl(2))",
    )?;
    outside(
        "ambient",
        ambient,
        bounding,
        "not in the bounding set: the kernel refuses to raise it (prctl(2))",
    )?;
    if inheritable != ambient {
        return Err(unsupported(
            "process.capabilities.inheritable",
            inheritable,
            "Palisade gives a non-root user the same inheritable and ambient sets",
        ));
    }
    if ambient.is_empty() && container()?.difference(bounding).is_empty() {
        return Ok(None);
    }
    Ok(Some(ambient))
}

/// What the process file asks of the exec's process.
fn from_process_file(path: &std::path::Path, container_pid: u32) -> Result<Job> {
    let text = std::fs::read(path).map_err(CliError::io("read the process file", path))?;
    let p: Process = serde_json::from_slice(&text)
        .map_err(|e| CliError::msg(format!("decode the process file {}: {e}", path.display())))?;
    refuse_fields(&p)?;
    let user = p.user();
    let caps = match p.capabilities() {
        Some(caps) => capabilities(caps, user.uid() == 0, || {
            status_caps(container_pid, "CapBnd")
        })?,
        None => None,
    };
    let rlimits = rlimits(&p, path)?;
    check_labels(
        p.apparmor_profile().as_deref(),
        p.selinux_label().as_deref(),
        ["process.apparmorProfile", "process.selinuxLabel"],
    )?;
    Ok(Job {
        args: p.args().clone().unwrap_or_default(),
        env: p
            .env()
            .iter()
            .flatten()
            .map(|kv| split_env(kv))
            .collect::<Result<_>>()?,
        cwd: Some(p.cwd().to_string_lossy().into_owned()).filter(|c| !c.is_empty()),
        user: Some((user.uid(), user.gid())),
        terminal: p.terminal().unwrap_or(false).then(|| {
            p.console_size()
                .as_ref()
                .map_or_else(TerminalSize::default, |b| TerminalSize {
                    rows: b.height() as u16,
                    cols: b.width() as u16,
                })
        }),
        groups: user.additional_gids().clone().unwrap_or_default(),
        caps,
        rlimits,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        umask: user.umask(),
        oom_score_adj: p.oom_score_adj(),
    })
}

/// The process file's fields that Palisade does not set, refused by name.
fn refuse_fields(p: &Process) -> Result<()> {
    if let Some(name) = p.user().username().as_deref().filter(|n| !n.is_empty()) {
        return Err(unsupported(
            "process.user.username",
            name,
            "a Windows field: a Linux process takes uid and gid",
        ));
    }
    if let Some(line) = p.command_line().as_deref() {
        return Err(unsupported(
            "process.commandLine",
            line,
            "a Windows field: a Linux process takes args",
        ));
    }
    if let Some(io) = p.io_priority() {
        return Err(unsupported(
            "process.ioPriority",
            format!("{io:?}"),
            "Palisade does not set I/O priorities (ioprio_set(2))",
        ));
    }
    if let Some(s) = p.scheduler() {
        return Err(unsupported(
            "process.scheduler",
            format!("{s:?}"),
            "Palisade does not set scheduling policies (sched_setattr(2))",
        ));
    }
    if let Some(a) = p.exec_cpu_affinity() {
        return Err(unsupported(
            "process.execCPUAffinity",
            format!("{a:?}"),
            "Palisade does not set CPU affinities (sched_setaffinity(2))",
        ));
    }
    Ok(())
}

fn job(args: &ExecArgs, container_pid: u32) -> Result<Job> {
    let mut job = match &args.process {
        Some(path) => from_process_file(path, container_pid)?,
        None => Job {
            args: args.command.clone(),
            env: Vec::new(),
            cwd: None,
            user: None,
            terminal: None,
            groups: Vec::new(),
            caps: None,
            rlimits: Vec::new(),
            no_new_privs: false,
            umask: None,
            oom_score_adj: None,
        },
    };
    job.groups.extend(&args.additional_gids);
    job.no_new_privs |= args.no_new_privs;
    check_labels(
        args.apparmor.as_deref(),
        args.process_label.as_deref(),
        ["--apparmor", "--process-label"],
    )?;
    // The flags add to, or override, the process file.
    job.env.extend(
        args.env
            .iter()
            .map(|kv| split_env(kv))
            .collect::<Result<Vec<_>>>()?,
    );
    if args.cwd.is_some() {
        job.cwd.clone_from(&args.cwd);
    }
    if let Some(user) = &args.user {
        job.user = Some(parse_user(user)?);
    }
    if args.tty && job.terminal.is_none() {
        job.terminal = Some(TerminalSize::default());
    }
    if job.args.is_empty() {
        return Err(CliError::msg(
            "exec: no command given (args must not be empty)",
        ));
    }
    Ok(job)
}

/// A capability set of the container's first process (`CapEff`, `CapBnd`) from
/// `/proc/<pid>/status` (`proc_pid_status(5)`): its init holds the container process's.
fn status_caps(pid: u32, field: &str) -> Result<Capabilities> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(CliError::io("read", &path))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .map(Capabilities::from_bits_truncate)
        .ok_or_else(|| CliError::msg(format!("{path}: no {field} line")))
}

pub fn exec(global: &Global, args: ExecArgs, preserved: Vec<OwnedFd>) -> Result<i32> {
    let mut h = open(global, &args.id)?;
    let job = job(&args, h.state().process.pid)?;
    if job.terminal.is_some() && args.detach && args.console_socket.is_none() {
        return Err(CliError::msg(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    if job.terminal.is_none() && args.console_socket.is_some() {
        return Err(CliError::msg(
            "cannot use console socket if runc will not detach or allocate tty",
        ));
    }
    match status_of(&mut h) {
        "stopped" => return Err(CliError::msg("cannot exec in a stopped container")),
        "paused" => return Err(CliError::msg("cannot exec in a paused container")),
        _ => {}
    }
    let console = args
        .console_socket
        .as_ref()
        .map(|path| UnixStream::connect(path).map_err(CliError::io("connect to", path)))
        .transpose()?;
    let mut cmd = h.exec(&job.args[0]);
    cmd.args(&job.args[1..]);
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    if let Some(cwd) = &job.cwd {
        cmd.current_dir(cwd);
    }
    if let Some((uid, gid)) = job.user {
        cmd.user(uid, gid);
    }
    if !args.caps.is_empty() {
        // runc adds them to the process's sets; Palisade takes the exact set: the container
        // command's (its init holds no more), plus these. Another user than root starts from
        // none, as it would without `--cap`.
        let non_root = job.user.is_some_and(|(uid, _)| uid != 0);
        let mut set = if non_root {
            job.caps.unwrap_or_else(Capabilities::empty)
        } else {
            job.caps
                .map_or_else(|| status_caps(h.state().process.pid, "CapEff"), Ok)?
        };
        for name in &args.caps {
            set.insert(palisade::parse_capability(name)?);
        }
        cmd.capabilities(set);
    } else if let Some(set) = job.caps {
        cmd.capabilities(set);
    }
    if !job.groups.is_empty() {
        cmd.groups(job.groups.iter().copied());
    }
    for limit in &job.rlimits {
        cmd.rlimit(*limit);
    }
    cmd.no_new_privs(job.no_new_privs);
    for (i, fd) in preserved.into_iter().enumerate() {
        cmd.inherit_fd(3 + i as RawFd, fd);
    }
    if let Some(mask) = job.umask {
        // Inherited by the exec's clone (`umask(2)`).
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
    }
    if let Some(adj) = job.oom_score_adj {
        // Inherited by the exec's clone (`proc_pid_oom_score_adj(5)`).
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(CliError::io("write", "/proc/self/oom_score_adj"))?;
    }
    match job.terminal {
        Some(size) => {
            cmd.tty_size(size);
        }
        None => {
            cmd.stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
        }
    }
    // From before the process starts, whatever is sent to a foreground exec is its process's.
    let forwarding = (!args.detach).then(Forwarding::hold);
    let mut child = cmd.spawn()?;
    let pty = child.take_pty();
    let pty = match (pty, &console) {
        (Some(pty), Some(socket)) => {
            pty.send(socket).map_err(CliError::io(
                "send the terminal to",
                args.console_socket.clone().unwrap_or_default(),
            ))?;
            None
        }
        (pty, _) => pty,
    };
    if let Some(path) = &args.pid_file {
        write_pid_file(path, child.id())?;
    }
    let Some(forwarding) = forwarding else {
        // Its handle would kill it when dropped; the process is the container's now.
        std::mem::forget(child);
        return Ok(0);
    };
    forwarding.to(child.pidfd())?;
    if let Some(pty) = pty {
        let _ = pty.proxy();
    }
    Ok(child.wait()?.shell_code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade::Capability;

    fn caps(json: &str) -> LinuxCapabilities {
        serde_json::from_str(json).unwrap()
    }

    fn set(list: &[Capability]) -> Capabilities {
        list.iter().copied().collect()
    }

    #[test]
    fn root_takes_the_bounding_set() {
        let c = caps(r#"{"bounding":["CAP_KILL","CAP_CHOWN"],"permitted":["CAP_KILL"]}"#);
        let got = capabilities(&c, true, || unreachable!()).unwrap();
        assert_eq!(
            got,
            Some(set(&[Capability::CAP_KILL, Capability::CAP_CHOWN]))
        );
        let inheritable = caps(r#"{"bounding":["CAP_KILL"],"inheritable":["CAP_KILL"]}"#);
        let err = capabilities(&inheritable, true, || unreachable!()).unwrap_err();
        assert!(
            err.to_string().contains("process.capabilities.inheritable"),
            "{err}"
        );
        let beyond = caps(r#"{"bounding":["CAP_KILL"],"permitted":["CAP_CHOWN"]}"#);
        let err = capabilities(&beyond, true, || unreachable!()).unwrap_err();
        assert!(
            err.to_string().contains("process.capabilities.permitted"),
            "{err}"
        );
    }

    #[test]
    fn another_user_takes_its_ambient_set_or_keeps_the_containers() {
        let kill = set(&[Capability::CAP_KILL]);
        let ambient = caps(
            r#"{"bounding":["CAP_KILL","CAP_CHOWN"],"permitted":["CAP_KILL"],
                "inheritable":["CAP_KILL"],"ambient":["CAP_KILL"]}"#,
        );
        assert_eq!(
            capabilities(&ambient, false, || unreachable!()).unwrap(),
            Some(kill)
        );
        // No ambient capability, and every one of the container's bounding set: kept.
        let none = caps(r#"{"bounding":["CAP_KILL","CAP_CHOWN"]}"#);
        assert_eq!(capabilities(&none, false, || Ok(kill)).unwrap(), None);
        // Fewer than the container's: narrowed to none at all.
        assert_eq!(
            capabilities(&none, false, || Ok(set(&[Capability::CAP_SETUID]))).unwrap(),
            Some(Capabilities::empty())
        );
        let raised = caps(r#"{"bounding":["CAP_KILL"],"ambient":["CAP_KILL"]}"#);
        let err = capabilities(&raised, false, || unreachable!()).unwrap_err();
        assert!(
            err.to_string().contains("process.capabilities.ambient"),
            "{err}"
        );
    }
}
