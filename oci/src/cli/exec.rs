//! `exec`: a further process in a running container, from the command line or from an OCI
//! `Process` JSON file (`--process`, as containerd's shim passes it).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;
use palisade::{Capabilities, Stdio, TerminalSize};

use super::lifecycle::forward_signals;
use super::{open, status_of, write_pid_file, CliError, Global, Result};

/// `exec`'s options.
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

fn job(args: &ExecArgs) -> Result<Job> {
    let mut job = match &args.process {
        Some(path) => {
            let text = std::fs::read(path).map_err(CliError::io("read the process file", path))?;
            let p: oci_spec::runtime::Process = serde_json::from_slice(&text).map_err(|e| {
                CliError::msg(format!("decode the process file {}: {e}", path.display()))
            })?;
            Job {
                args: p.args().clone().unwrap_or_default(),
                env: p
                    .env()
                    .iter()
                    .flatten()
                    .map(|kv| split_env(kv))
                    .collect::<Result<_>>()?,
                cwd: Some(p.cwd().to_string_lossy().into_owned()).filter(|c| !c.is_empty()),
                user: Some((p.user().uid(), p.user().gid())),
                terminal: p.terminal().unwrap_or(false).then(|| {
                    p.console_size()
                        .as_ref()
                        .map_or_else(TerminalSize::default, |b| TerminalSize {
                            rows: b.height() as u16,
                            cols: b.width() as u16,
                        })
                }),
            }
        }
        None => Job {
            args: args.command.clone(),
            env: Vec::new(),
            cwd: None,
            user: None,
            terminal: None,
        },
    };
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

/// The effective capabilities of the container's process: `CapEff` of `/proc/<pid>/status`
/// (`proc_pid_status(5)`).
fn effective_caps(pid: u32) -> Result<Capabilities> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(CliError::io("read", &path))?;
    text.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .map(Capabilities::from_bits_truncate)
        .ok_or_else(|| CliError::msg(format!("{path}: no CapEff line")))
}

pub fn exec(global: &Global, args: ExecArgs) -> Result<i32> {
    let job = job(&args)?;
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
    let mut h = open(global, &args.id)?;
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
            Capabilities::empty()
        } else {
            effective_caps(h.state().process.pid)?
        };
        for name in &args.caps {
            set.insert(palisade::parse_capability(name)?);
        }
        cmd.capabilities(set);
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
    if args.detach {
        // Its handle would kill it when dropped; the process is the container's now.
        std::mem::forget(child);
        return Ok(0);
    }
    forward_signals(child.pidfd())?;
    if let Some(pty) = pty {
        let _ = pty.proxy();
    }
    Ok(child.wait()?.shell_code())
}
