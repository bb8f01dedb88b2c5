//! runc's command line: global flags, the commands, how errors are reported.
//!
//! Errors go to stderr and, with `--log`, to the log file in logrus's text or JSON form (one
//! `{"level":"error","msg":…,"time":…}` line with `--log-format json`, which containerd's runc
//! shim reads back to explain a failure); the exit status is then 1, as runc's.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand, ValueEnum};

mod events;
mod exec;
mod info;
mod lifecycle;
mod query;
mod update;

/// The annotation that records a container's bundle directory: the state's `bundle`, and not
/// among its `annotations`.
pub const BUNDLE_ANNOTATION: &str = "org.palisade.oci.bundle";

/// The state root when `--root` is not given.
pub const DEFAULT_ROOT: &str = "/run/palisade-oci";

/// The newest runtime-spec version this runtime speaks, as `state` and `features` report it.
pub const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, Parser)]
#[command(
    name = "palisade-oci",
    about = "An OCI runtime on top of Palisade, with runc's command line",
    disable_version_flag = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// Print the version.
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The flags that come before the command.
#[derive(Debug, Args)]
pub struct Global {
    /// Where containers' state is kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_ROOT)]
    pub root: PathBuf,
    /// Where to write log messages (default: stderr).
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// The log file's format.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log debug messages too.
    #[arg(long)]
    pub debug: bool,
    /// Manage cgroups through systemd (not supported).
    #[arg(long = "systemd-cgroup")]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub rootless: String,
    /// criu's path (checkpoints are not supported; accepted for compatibility).
    #[arg(long, value_name = "PATH", hide = true)]
    pub criu: Option<String>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// logrus's text: `time="…" level=error msg="…"`.
    Text,
    /// One JSON object a line.
    Json,
}

/// The commands. `defer`: only the command given has its arguments built; building all of
/// them, clap derive's default, cost about 0.2 ms of every call. Under `defer` clap takes an
/// options struct's doc comment for its command's about, over the variant's below, so those
/// structs have plain comments.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(lifecycle::CreateArgs),
    /// Start a created container's process.
    Start(IdArg),
    /// Create and start a container, and wait for it unless detached.
    Run(lifecycle::RunArgs),
    /// Print a container's state as JSON.
    State(IdArg),
    /// Send a signal to a container's process (default: TERM).
    Kill(lifecycle::KillArgs),
    /// Delete a container and what it holds.
    Delete(lifecycle::DeleteArgs),
    /// List the containers.
    List(query::ListArgs),
    /// List the processes of a container.
    Ps(query::PsArgs),
    /// Freeze every process of a container.
    Pause(IdArg),
    /// Thaw a paused container.
    Resume(IdArg),
    /// Run a further process in a running container.
    Exec(exec::ExecArgs),
    /// Change the resource limits of a running container.
    Update(update::UpdateArgs),
    /// Print a container's resource usage and OOM events as JSON lines.
    Events(events::EventsArgs),
    /// Write a default config.json.
    Spec(info::SpecArgs),
    /// Print the features this runtime supports as JSON.
    Features,
}

// A command that takes only the container's id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The container's id.
    pub id: String,
}

/// Why a command failed, worded as runc words it where callers look at the words.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The runtime's own error (the bundle, or palisade below it).
    #[error(transparent)]
    Oci(#[from] palisade_oci::Error),
    /// A palisade error without a better wording.
    #[error(transparent)]
    Palisade(palisade::Error),
    /// A file the command reads or writes.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Anything else, as runc says it.
    #[error("{0}")]
    Message(String),
}

impl From<palisade::Error> for CliError {
    fn from(e: palisade::Error) -> CliError {
        match e {
            palisade::Error::NotFound { .. } => {
                CliError::Message("container does not exist".to_owned())
            }
            palisade::Error::NameInUse { id, .. } => {
                CliError::Message(format!("container with id exists: {id}"))
            }
            palisade::Error::NotRunning { .. } => {
                CliError::Message("container not running".to_owned())
            }
            e => CliError::Palisade(e),
        }
    }
}

impl CliError {
    pub fn msg(text: impl fmt::Display) -> CliError {
        CliError::Message(text.to_string())
    }

    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { what, path, source }
    }
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Where log lines go: the `--log` file, else stderr.
pub struct Logger {
    file: Option<File>,
    format: LogFormat,
    debug: bool,
}

impl Logger {
    fn new(global: &Global) -> Logger {
        let file = global.log.as_ref().and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| eprintln!("open the log file {}: {e}", path.display()))
                .ok()
        });
        Logger {
            file,
            format: global.log_format,
            debug: global.debug,
        }
    }

    fn line(&self, level: &str, msg: &str) -> String {
        let time = rfc3339(SystemTime::now());
        match self.format {
            LogFormat::Json => {
                let line = serde_json::json!({"level": level, "msg": msg, "time": time});
                format!("{line}\n")
            }
            LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}\n"),
        }
    }

    /// Logs a debug message when `--debug` was given.
    pub fn debug(&mut self, msg: impl fmt::Display) {
        if !self.debug {
            return;
        }
        let line = self.line("debug", &msg.to_string());
        match &mut self.file {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = io::stderr().write_all(line.as_bytes());
            }
        }
    }

    /// Reports what went wrong without failing the command (a `poststart` or `poststop`
    /// hook): to the log file in its format, and to stderr.
    pub fn warn(&mut self, msg: impl fmt::Display) {
        let msg = msg.to_string();
        let line = self.line("warning", &msg);
        if let Some(f) = &mut self.file {
            let _ = f.write_all(line.as_bytes());
        }
        let _ = writeln!(io::stderr(), "warning: {msg}");
    }

    /// Reports a failure: to the log file in its format, and to stderr as runc prints it.
    fn error(&mut self, msg: &str) {
        let line = self.line("error", msg);
        if let Some(f) = &mut self.file {
            let _ = f.write_all(line.as_bytes());
        }
        let _ = writeln!(io::stderr(), "{msg}");
    }
}

/// The runtime's entry point: parses the command line, runs the command, and returns the exit
/// status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Usage errors exit 1 as runc's do; help is not an error.
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    // Taken before this process opens anything (the log file) that could land on those numbers.
    let preserved = match &cli.command {
        Some(Command::Create(a)) => a.preserve_fds,
        Some(Command::Run(a)) => a.create.preserve_fds,
        Some(Command::Exec(a)) => a.preserve_fds,
        _ => 0,
    };
    let preserved = lifecycle::take_preserved_fds(preserved);
    let mut log = Logger::new(&cli.global);
    match preserved.and_then(|fds| run(cli, &mut log, fds)) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    }
}

fn run(cli: Cli, log: &mut Logger, preserved: Vec<std::os::fd::OwnedFd>) -> Result<i32> {
    if cli.version {
        println!("palisade-oci version {}", env!("CARGO_PKG_VERSION"));
        println!("spec: {OCI_VERSION}");
        return Ok(0);
    }
    let global = &cli.global;
    if global.systemd_cgroup {
        return Err(CliError::msg(
            "--systemd-cgroup is not supported: palisade-oci manages cgroups itself (cgroupfs)",
        ));
    }
    match global.rootless.as_str() {
        "auto" | "false" => {}
        "true" => {
            return Err(CliError::msg(
                "--rootless=true is not supported: run palisade-oci as root",
            ))
        }
        other => {
            return Err(CliError::msg(format!(
                "invalid --rootless value {other:?}: expected true, false or auto"
            )))
        }
    }
    let Some(command) = cli.command else {
        return Err(CliError::msg(
            "no command given: see palisade-oci --help for the commands",
        ));
    };
    log.debug(format_args!("command {command:?}"));
    match command {
        Command::Create(args) => lifecycle::create(global, log, args, preserved).map(|()| 0),
        Command::Start(args) => lifecycle::start(global, log, &args.id).map(|()| 0),
        Command::Run(args) => lifecycle::run(global, log, args, preserved),
        Command::State(args) => query::state(global, &args.id).map(|()| 0),
        Command::Kill(args) => lifecycle::kill(global, args).map(|()| 0),
        Command::Delete(args) => lifecycle::delete(global, log, args).map(|()| 0),
        Command::List(args) => query::list(global, args).map(|()| 0),
        Command::Ps(args) => query::ps(global, args).map(|()| 0),
        Command::Pause(args) => lifecycle::pause(global, &args.id).map(|()| 0),
        Command::Resume(args) => lifecycle::resume(global, &args.id).map(|()| 0),
        Command::Exec(args) => exec::exec(global, args, preserved),
        Command::Update(args) => update::update(global, args).map(|()| 0),
        Command::Events(args) => events::events(global, args).map(|()| 0),
        Command::Spec(args) => info::spec(args).map(|()| 0),
        Command::Features => info::features().map(|()| 0),
    }
}

/// Checks a container id as runc does, before anything is looked up with it.
pub fn check_id(id: &str) -> Result<()> {
    palisade::state::validate_name(id)
        .map_err(|_| CliError::msg(format!("invalid container id format: {id}")))
}

/// Opens the container `id` under the state root.
pub fn open(global: &Global, id: &str) -> Result<palisade::Handle> {
    check_id(id)?;
    Ok(palisade::Sandbox::open_in(&global.root, id)?)
}

/// A container's status as runc names it: palisade's, or `paused` while its cgroup is frozen.
pub fn status_of(handle: &mut palisade::Handle) -> &'static str {
    match handle.status() {
        palisade::Status::Created => "created",
        palisade::Status::Running if is_frozen(&handle.state().cgroup) => "paused",
        palisade::Status::Running => "running",
        palisade::Status::Stopped => "stopped",
    }
}

/// Whether a cgroup is frozen: `cgroup.freeze` of v2 (`cgroups(7)`), or the v1 freezer's
/// `freezer.state`.
fn is_frozen(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|dir| {
        let v2 = std::fs::read_to_string(dir.join("cgroup.freeze"));
        let v1 = std::fs::read_to_string(dir.join("freezer.state"));
        v2.is_ok_and(|s| s.trim() == "1") || v1.is_ok_and(|s| s.trim() != "THAWED")
    })
}

/// Writes `pid` to `path` as runc does: a temporary file beside it, then `rename(2)`, so that a
/// reader never sees a partial pid.
pub fn write_pid_file(path: &Path, pid: u32) -> Result<()> {
    let path = absolute(path)?;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, pid.to_string()).map_err(CliError::io("write the pid file", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::io("write the pid file", &path)(e)
    })
}

/// `path` made absolute against the working directory, without resolving links.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(CliError::io("resolve", path))
}

/// Parses a signal as runc takes it: a number, `TERM` or `SIGTERM`.
pub fn parse_signal(text: &str) -> Result<palisade::Signal> {
    let bad = || CliError::msg(format!("unknown signal {text:?}"));
    if let Ok(n) = text.parse::<i32>() {
        return palisade::Signal::try_from(n).map_err(|_| bad());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<palisade::Signal>().map_err(|_| bad())
}

/// `time` as RFC 3339 in UTC, as Go's `time.RFC3339` prints it.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let at = |s| rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_778_618), "2026-11-27T11:23:38Z");
    }

    fn parse(args: &[&str]) -> Command {
        let cli = Cli::try_parse_from(std::iter::once("palisade-oci").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.command.unwrap()
    }

    #[test]
    fn options_before_and_after_the_id() {
        let Command::Exec(e) = parse(&[
            "exec",
            "pal",
            "--env",
            "A=1",
            "-t",
            "sh",
            "-c",
            "echo --env",
        ]) else {
            panic!()
        };
        assert_eq!(
            (e.id.as_str(), e.env.as_slice(), e.tty),
            ("pal", &["A=1".to_owned()][..], true)
        );
        assert_eq!(e.command, ["sh", "-c", "echo --env"]);
        let Command::Exec(e) = parse(&["exec", "-d", "--process", "p.json", "pal"]) else {
            panic!()
        };
        assert!(e.detach && e.command.is_empty());
        let Command::Exec(e) = parse(&["exec", "pal", "--", "ls", "-l"]) else {
            panic!()
        };
        assert_eq!(e.command, ["ls", "-l"]);
        let Command::Kill(k) = parse(&["kill", "pal", "--all", "KILL"]) else {
            panic!()
        };
        assert!(k.all && k.signal == "KILL" && k.id == "pal");
        let Command::Create(c) = parse(&["create", "pal", "--bundle", "b", "--pid-file", "p"])
        else {
            panic!()
        };
        assert_eq!((c.id.as_str(), c.bundle.as_path()), ("pal", Path::new("b")));
        let Command::Delete(d) = parse(&["delete", "pal", "-f"]) else {
            panic!()
        };
        assert!(d.force);
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("9").unwrap(), palisade::Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), palisade::Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), palisade::Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }
}
