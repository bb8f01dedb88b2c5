//! `docker exec`, the Palisade way: runs a further command in a named sandbox that runs, from any
//! process, and exits with its status.
//!
//! ```text
//! cargo run --release --example exec -- [--root DIR] [-i] [-t] [-e KEY=VALUE]... [-w DIR] NAME -- CMD [ARGS...]
//! cargo run --release --example run -- -d --name web -- sleep 1000
//! cargo run --release --example exec -- web -- sh -c 'hostname; ps'
//! cargo run --release --example exec -- -it web -- sh
//! ```
//!
//! The command joins the sandbox's namespaces, root and cgroup and runs under the privileges,
//! seccomp filter and environment of the sandbox's command (see `Handle::exec`). With `-t` it
//! gets a terminal of the sandbox's own, proxied to this one (in raw mode while it runs); with
//! `-i` this program's stdin goes to it, else its stdin is `/dev/null`.
//!
//! Exit status, as `docker exec` reports it: the command's, 128 + signal when it was killed, 125
//! when the sandbox is not found or does not run, 126 when the command could not be started, 127
//! when it was not found.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use palisade::{ChildStep, Error, Sandbox, Status, Stdio};

/// Run a command in a running named sandbox.
#[derive(Debug, Parser)]
#[command(name = "exec", version)]
struct Options {
    /// Where named sandboxes are recorded (default: `/run/palisade` for root,
    /// `$XDG_RUNTIME_DIR/palisade` otherwise).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Keep stdin open to the command; without it the command's stdin is `/dev/null`.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Give the command a terminal of the sandbox's own, of this terminal's size.
    #[arg(long, short = 't')]
    tty: bool,
    /// Set an environment variable over the sandbox command's (KEY=VALUE, or KEY to pass the
    /// caller's value).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the sandbox (default: the sandbox command's).
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<String>,
    /// Run as this user (and group; default: the same number), e.g. `1000:1000`: no
    /// capabilities unless root.
    #[arg(long, short = 'u', value_name = "UID[:GID]")]
    user: Option<String>,
    /// The sandbox's name.
    name: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let opts = Options::parse();
    match run(&opts) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("exec: {err}");
            ExitCode::from(match &err {
                Error::Child {
                    step: ChildStep::Exec,
                    source,
                    ..
                } if source.raw_os_error() == Some(libc::ENOENT) => 127,
                // Its working directory, privileges or filter: the command never ran.
                Error::Child { .. } => 126,
                _ => 125,
            })
        }
    }
}

fn run(opts: &Options) -> Result<u8, Error> {
    let root = opts
        .root
        .clone()
        .unwrap_or_else(palisade::state::default_root);
    let mut sandbox = Sandbox::open_in(&root, &opts.name)?;
    match sandbox.status() {
        Status::Running => {}
        Status::Created => {
            eprintln!("exec: sandbox {:?} is created but not started", opts.name);
            return Ok(125);
        }
        Status::Stopped => {
            eprintln!("exec: sandbox {:?} is not running", opts.name);
            return Ok(125);
        }
    }
    let (program, args) = opts.command.split_first().expect("clap requires a command");
    let mut exec = sandbox.exec(program);
    exec.args(args);
    for var in &opts.env {
        match var.split_once('=') {
            Some((k, v)) => exec.env(k, v),
            // As docker exec: the caller's value, or nothing when the caller has none.
            None => match std::env::var_os(var) {
                Some(v) => exec.env(var, v),
                None => exec.env_remove(var),
            },
        };
    }
    if let Some(dir) = &opts.workdir {
        exec.current_dir(dir);
    }
    if let Some(user) = &opts.user {
        let (uid, gid) = common::parse_user(user)?;
        exec.user(uid, gid);
    }

    // Forward the signals a terminal or supervisor sends us to the command, as run does.
    let set = common::block_forwarded_signals()?;

    if opts.tty {
        let size = common::terminal_size();
        exec.tty_size(size);
    } else if !opts.interactive {
        exec.stdin(Stdio::null());
    }
    let mut child = exec.spawn()?;
    common::forward_signals(set, &child)?;
    common::relay_terminal(&mut child, opts.interactive)?;
    let status = child.wait()?;
    Ok(status.shell_code().clamp(0, 255) as u8)
}
