//! The runtime specification's POSIX-platform hooks that run in the runtime's namespace:
//! `prestart` (deprecated), `createRuntime`, `poststart` and `poststop`.
//!
//! Each hook is a program on the host, run as a child of the runtime: `path` (absolute) is
//! executed with `args` as its whole argument vector (`args[0]` is its `argv[0]`), exactly the
//! environment of `env` and nothing of the runtime's, and the container's [`State`] as JSON on
//! its standard input (`execve(2)`). With `timeout`, a hook still running after that many
//! seconds is killed with its process group and counts as failed. The hooks of a stage run in
//! order.
//!
//! The specification (runtime.md, "Lifecycle") gives failures two meanings: a failing
//! `prestart` or `createRuntime` hook fails `create` and stops its stage ([`run`]); a failing
//! `poststart` or `poststop` hook is only a warning, and the remaining hooks still run
//! ([`run_all`]).
//!
//! `createContainer` and `startContainer` run in the container's namespaces and are refused by
//! [`Bundle::builder`](crate::Bundle::builder).

use std::collections::BTreeMap;
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
    if !path.is_absolute() {
        return Err(invalid("path must be absolute".to_owned()));
    }
    let timeout = match hook.timeout() {
        None => None,
        Some(secs) if secs > 0 => Some(secs as u64),
        Some(secs) => {
            return Err(invalid(format!(
                "timeout must be greater than zero, not {secs}"
            )))
        }
    };
    let mut cmd = command(path, hook).map_err(invalid)?;
    let mut child = cmd.spawn().map_err(io_error("run"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let input = input.to_owned();
        // Written by a thread, so that a hook that never reads cannot outlast its timeout;
        // one that exits without reading only makes the write fail (EPIPE), which is its
        // business.
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
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
    if status.success() {
        return Ok(());
    }
    let stderr = stderr
        .and_then(|rx| rx.recv_timeout(OUTPUT_GRACE).ok())
        .unwrap_or_default();
    Err(HookError::Failed {
        hook: name.to_owned(),
        path: path.clone(),
        status,
        stderr,
    })
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
    for entry in hook.env().iter().flatten() {
        let (key, value) = entry
            .split_once('=')
            .ok_or_else(|| format!("env entry {entry:?} is not KEY=VALUE"))?;
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
