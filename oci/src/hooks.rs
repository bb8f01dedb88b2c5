//! The runtime specification's POSIX-platform hooks (config.md, "POSIX-platform Hooks").
//!
//! Every hook is run with `args` as its whole argument vector (`args[0]` is its `argv[0]`;
//! without `args`, `path` is), exactly the environment of `env` and nothing of the runtime's
//! or the container's, and the container's [`State`] as JSON on its standard input
//! (`execve(2)`). With `timeout`, a hook still running after that many seconds is killed and
//! counts as failed. The hooks of a stage run in order. Where they run:
//!
//! | stage | when | where | `path` resolved |
//! |---|---|---|---|
//! | `prestart` (deprecated), `createRuntime` | `create`, the container's process waiting at its start gate | the runtime's namespaces, as its child | on the host |
//! | `createContainer` | `create`, after `createRuntime` | the container's namespaces, cgroup and root, under its process's privileges ([`palisade::Exec`]) | on the host: opened there, and a sealed copy executed in the container ([`palisade::Exec::program_fd`]) |
//! | `startContainer` | `start`, before the container's process runs | as `createContainer` | in the container's root |
//! | `poststart` | `start`, once the process runs | as `prestart` | on the host |
//! | `poststop` | `delete` | as `prestart` | on the host |
//!
//! A hook on the host runs in a process group of its own, killed whole at its timeout; a hook
//! in the container is killed alone, and what it started is the container's, which its
//! failure stops. A `createContainer` hook must be a static executable, not a script (refused):
//! it is executed by descriptor in the container, where the kernel looks up an ELF
//! interpreter, the dynamic loader the libraries, and the kernel would look up a script's
//! interpreter (see [`palisade::Exec::program_fd`]).
//!
//! The specification (runtime.md, "Lifecycle") gives failures two meanings: a failing
//! `prestart`, `createRuntime`, `createContainer` or `startContainer` hook fails its command and
//! stops its stage ([`run`], [`run_in`]); a failing `poststart` or `poststop` hook is only a
//! warning, and the remaining hooks still run ([`run_all`]).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};
use serde::Serialize;

/// When a set of hooks runs, named as `config.json` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `hooks.prestart`: during `create`, after the container's namespaces exist and before
    /// its process is started (deprecated by the specification in favour of `createRuntime`).
    Prestart,
    /// `hooks.createRuntime`: during `create`, right after `prestart`.
    CreateRuntime,
    /// `hooks.createContainer`: during `create`, after `createRuntime`, in the container's
    /// namespaces ([`run_in`]).
    CreateContainer,
    /// `hooks.startContainer`: during `start`, before the container's process runs, in the
    /// container's namespaces ([`run_in`]).
    StartContainer,
    /// `hooks.poststart`: after `start` released the container's process, before it returns.
    Poststart,
    /// `hooks.poststop`: after the container is deleted, before `delete` returns.
    Poststop,
}

impl Stage {
    /// The stage's field in `config.json`: `hooks.createRuntime`.
    pub fn field(self) -> &'static str {
        match self {
            Stage::Prestart => "hooks.prestart",
            Stage::CreateRuntime => "hooks.createRuntime",
            Stage::CreateContainer => "hooks.createContainer",
            Stage::StartContainer => "hooks.startContainer",
            Stage::Poststart => "hooks.poststart",
            Stage::Poststop => "hooks.poststop",
        }
    }

    /// The stage's hooks in `spec`, in their order.
    pub fn hooks(self, spec: &Spec) -> &[Hook] {
        let Some(hooks) = spec.hooks() else {
            return &[];
        };
        #[allow(deprecated)] // `prestart` is deprecated, but still the spec's and still run
        let set = match self {
            Stage::Prestart => hooks.prestart(),
            Stage::CreateRuntime => hooks.create_runtime(),
            Stage::CreateContainer => hooks.create_container(),
            Stage::StartContainer => hooks.start_container(),
            Stage::Poststart => hooks.poststart(),
            Stage::Poststop => hooks.poststop(),
        };
        set.as_deref().unwrap_or_default()
    }
}

/// The state of a container as the specification defines it (runtime.md, "State"): the
/// document a hook reads on its standard input, the one the runtime's `state` command prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct State {
    /// The specification's version the runtime speaks.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The container's id.
    pub id: String,
    /// `creating`, `created`, `running` or `stopped`.
    pub status: String,
    /// The container's process, as the host sees it; 0 once stopped.
    pub pid: u32,
    /// The bundle's absolute directory.
    pub bundle: String,
    /// The container's annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Why a hook failed. Each message starts with the hook, by its JSON path and program:
/// `hooks.createRuntime[0] /usr/bin/setup: exit status 1`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// The hook cannot be run as configured: a relative `path`, an `env` entry without `=`,
    /// a `timeout` that is not positive.
    #[error("{hook} {path}: {message}")]
    Invalid {
        /// The hook, as a JSON path: `hooks.poststop[1]`.
        hook: String,
        /// Its program.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The program could not be started (`execve(2)` failed: missing, not executable, …), or
    /// waiting for it failed.
    #[error("{hook} {path}: {what}: {source}")]
    Io {
        /// The hook.
        hook: String,
        /// Its program.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The program exited with a status other than 0, or was killed by a signal.
    #[error("{hook} {path}: {status}{}", stderr_suffix(.stderr))]
    Failed {
        /// The hook.
        hook: String,
        /// Its program.
        path: PathBuf,
        /// How it ended.
        status: ExitStatus,
        /// The start of what it wrote to its standard error.
        stderr: String,
    },
    /// The hook could not be started in the container (its program missing there, not
    /// executable, a script by descriptor, …), or waiting for it failed.
    #[error("{hook} {path}: {source}")]
    Container {
        /// The hook.
        hook: String,
        /// Its program.
        path: PathBuf,
        /// Palisade's error.
        source: Box<palisade::Error>,
    },
    /// The program was still running after its `timeout`, and was killed.
    #[error("{hook} {path}: timed out after {seconds}s")]
    TimedOut {
        /// The hook.
        hook: String,
        /// Its program.
        path: PathBuf,
        /// Its `timeout`.
        seconds: u64,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(", stderr: {stderr}")
    }
}

/// How much of a hook's standard error a failure quotes.
const STDERR_QUOTED: usize = 1024;

/// How long a hook's output is awaited once it exited: a process it left behind may hold the
/// pipe open for longer, and is not waited for.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// How often a hook with a timeout is polled for its exit.
const POLL: Duration = Duration::from_millis(10);

/// Runs the hooks of `stage` in `spec` in order, each with `state` on its standard input, and
/// stops at the first that fails: for `prestart` and `createRuntime`.
///
/// # Errors
///
/// The first failure, as a [`HookError`] naming the hook.
pub fn run(spec: &Spec, stage: Stage, state: &State) -> Result<(), HookError> {
    let input = state_input(state);
    for (i, hook) in stage.hooks(spec).iter().enumerate() {
        run_hook(&format!("{}[{i}]", stage.field()), hook, &input)?;
    }
    Ok(())
}

/// Runs every hook of `stage` in `spec` in order, each with `state` on its standard input,
/// whether or not those before it failed: for `poststart` and `poststop`. Returns the
/// failures, for the caller to log as warnings.
pub fn run_all(spec: &Spec, stage: Stage, state: &State) -> Vec<HookError> {
    let input = state_input(state);
    stage
        .hooks(spec)
        .iter()
        .enumerate()
        .filter_map(|(i, hook)| run_hook(&format!("{}[{i}]", stage.field()), hook, &input).err())
        .collect()
}

/// The state as the hooks read it.
fn state_input(state: &State) -> Vec<u8> {
    // A plain struct of strings and numbers always serializes.
    serde_json::to_vec(state).unwrap_or_default()
}

/// Runs one hook, named `name` in errors, with `input` on its standard input.
fn run_hook(name: &str, hook: &Hook, input: &[u8]) -> Result<(), HookError> {
    let path = hook.path();
    let invalid = |message: String| HookError::Invalid {
        hook: name.to_owned(),
        path: path.clone(),
        message,
    };
    let io_error = |what| {
        move |source| HookError::Io {
            hook: name.to_owned(),
            path: path.clone(),
            what,
            source,
        }
    };
    let timeout = checked_timeout(hook).map_err(invalid)?;
    let mut cmd = command(path, hook).map_err(invalid)?;
    let mut child = cmd.spawn().map_err(io_error("run"))?;
    if let Some(stdin) = child.stdin.take() {
        feed(stdin, input);
    }
    let stderr = child.stderr.take().map(collect);
    let status = match timeout {
        None => child.wait().map_err(io_error("wait for"))?,
        Some(secs) => match wait_until(&mut child, Instant::now() + Duration::from_secs(secs))
            .map_err(io_error("wait for"))?
        {
            Some(status) => status,
            None => {
                kill(&mut child);
                return Err(HookError::TimedOut {
                    hook: name.to_owned(),
                    path: path.clone(),
                    seconds: secs,
                });
            }
        },
    };
    outcome(name, path, status, stderr)
}

/// A hook's end: success, or [`HookError::Failed`] with the start of its standard error
/// (`stderr`, from [`collect`]), waited for a little after its exit.
fn outcome(
    name: &str,
    path: &Path,
    status: ExitStatus,
    stderr: Option<mpsc::Receiver<String>>,
) -> Result<(), HookError> {
    if status.success() {
        return Ok(());
    }
    let stderr = stderr
        .and_then(|rx| rx.recv_timeout(OUTPUT_GRACE).ok())
        .unwrap_or_default();
    Err(HookError::Failed {
        hook: name.to_owned(),
        path: path.to_owned(),
        status,
        stderr,
    })
}

/// Writes the state to a hook's standard input from a thread, so that a hook that never reads
/// cannot outlast its timeout; one that exits without reading only makes the write fail
/// (`EPIPE`), which is its business.
fn feed(mut stdin: impl Write + Send + 'static, input: &[u8]) {
    let input = input.to_owned();
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
}

/// The hook's timeout, once its `path` and `timeout` are checked: the path must be absolute,
/// the timeout positive.
fn checked_timeout(hook: &Hook) -> Result<Option<u64>, String> {
    if !hook.path().is_absolute() {
        return Err("path must be absolute".to_owned());
    }
    match hook.timeout() {
        None => Ok(None),
        Some(secs) if secs > 0 => Ok(Some(secs as u64)),
        Some(secs) => Err(format!("timeout must be greater than zero, not {secs}")),
    }
}

/// The hook's environment, `KEY=VALUE` entries split.
fn environment(hook: &Hook) -> Result<Vec<(&str, &str)>, String> {
    hook.env()
        .iter()
        .flatten()
        .map(|entry| {
            entry
                .split_once('=')
                .ok_or_else(|| format!("env entry {entry:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Runs the hooks of `stage` (`createContainer` or `startContainer`) in `spec` in the
/// container, in order, each with `state` on its standard input, and stops at the first that
/// fails. `exec` starts a command in the container: [`palisade::Child::exec`] or
/// [`palisade::Handle::exec`] of it. Each hook joins the container's namespaces, cgroup and root
/// under its process's privileges, filter and limits (never more), not dumpable until its
/// program runs, with no descriptor of the runtime's but its standard input (the state) and
/// error (quoted when it fails); its standard output is `/dev/null`.
///
/// For `createContainer`, `path` is opened on the host (`O_RDONLY`, close-on-exec) and a sealed
/// copy of it executed in the container ([`palisade::Exec::program_fd`]); for
/// `startContainer`, `path` is looked up in the container's root.
///
/// # Errors
///
/// The first failure, as a [`HookError`] naming the hook.
pub fn run_in<'a>(
    spec: &Spec,
    stage: Stage,
    state: &State,
    exec: &dyn Fn(&OsStr) -> palisade::Exec<'a>,
) -> Result<(), HookError> {
    let input = state_input(state);
    for (i, hook) in stage.hooks(spec).iter().enumerate() {
        let name = format!("{}[{i}]", stage.field());
        run_in_container(&name, stage == Stage::CreateContainer, hook, &input, exec)?;
    }
    Ok(())
}

/// Runs one hook in the container, its program the host's (`on_host`) or the container's.
fn run_in_container<'a>(
    name: &str,
    on_host: bool,
    hook: &Hook,
    input: &[u8],
    exec: &dyn Fn(&OsStr) -> palisade::Exec<'a>,
) -> Result<(), HookError> {
    let path = hook.path();
    let invalid = |message: String| HookError::Invalid {
        hook: name.to_owned(),
        path: path.clone(),
        message,
    };
    let failed = |source| HookError::Container {
        hook: name.to_owned(),
        path: path.clone(),
        source: Box::new(source),
    };
    let timeout = checked_timeout(hook).map_err(invalid)?;
    let env = environment(hook).map_err(invalid)?;
    let (argv0, rest) = match hook.args().as_deref().and_then(<[String]>::split_first) {
        Some((argv0, rest)) => (OsStr::new(argv0.as_str()), rest),
        None => (path.as_os_str(), &[][..]),
    };
    let mut cmd = if on_host {
        // Opened here, in the runtime's mount namespace: the path is the host's.
        let file = std::fs::File::open(path).map_err(|source| HookError::Io {
            hook: name.to_owned(),
            path: path.clone(),
            what: "open",
            source,
        })?;
        let mut cmd = exec(argv0);
        cmd.program_fd(file);
        cmd
    } else {
        let mut cmd = exec(path.as_os_str());
        cmd.arg0(argv0);
        cmd
    };
    cmd.args(rest).env_clear();
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.stdin(palisade::Stdio::piped())
        .stdout(palisade::Stdio::null())
        .stderr(palisade::Stdio::piped());
    let mut child = cmd.spawn().map_err(failed)?;
    if let Some(stdin) = child.stdin.take() {
        feed(stdin, input);
    }
    let stderr = child.stderr.take().map(collect);
    let status = match timeout {
        None => child.wait().map_err(failed)?,
        Some(secs) => {
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                if let Some(status) = child.try_wait().map_err(failed)? {
                    break status;
                }
                let now = Instant::now();
                if now >= deadline {
                    let _ = child.signal(palisade::Signal::SIGKILL);
                    let _ = child.wait();
                    return Err(HookError::TimedOut {
                        hook: name.to_owned(),
                        path: path.clone(),
                        seconds: secs,
                    });
                }
                thread::sleep(POLL.min(deadline - now));
            }
        }
    };
    let status = std::os::unix::process::ExitStatusExt::from_raw(status.into_raw());
    outcome(name, path, status, stderr)
}

/// The hook's command: its program, argument vector and environment only, its standard input
/// a pipe, its output captured, in a process group of its own so that a timeout kills what it
/// started too.
fn command(path: &Path, hook: &Hook) -> Result<Command, String> {
    let mut cmd = Command::new(path);
    if let Some((argv0, rest)) = hook.args().as_deref().and_then(<[String]>::split_first) {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for (key, value) in environment(hook)? {
        cmd.env(key, value);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    Ok(cmd)
}

/// Reads a pipe to its end on a thread; the channel yields the start of what was read.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all.truncate(STDERR_QUOTED);
        let _ = tx.send(String::from_utf8_lossy(&all).trim().to_owned());
    });
    rx
}

/// Waits for `child` until `deadline`: its status, or `None` if it still runs.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL.min(deadline - now));
    }
}

/// Kills a hook that overran its timeout with its process group (`killpg(3)`), and reaps it.
fn kill(child: &mut Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        // The hook leads its own group (`process_group(0)`), whose id is its pid.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_json_has_the_spec_fields() {
        let state = State {
            oci_version: "1.2.0".to_owned(),
            id: "pal".to_owned(),
            status: "creating".to_owned(),
            pid: 42,
            bundle: "/b".to_owned(),
            annotations: BTreeMap::new(),
        };
        let v: serde_json::Value = serde_json::to_value(&state).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ociVersion": "1.2.0", "id": "pal", "status": "creating",
                "pid": 42, "bundle": "/b"})
        );
    }
}
