//! The container's life: `create`, `start`, `run`, `kill`, `delete`, `pause`, `resume`.
//!
//! A container is a named, detached palisade sandbox under the state root: `create` makes it
//! with its command waiting at its start gate and exits, leaving it to any later invocation.

use std::ffi::OsStr;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use clap::Args;
use palisade::{Child, Handle, Pty, Sandbox, Status, Stdio};
use palisade_oci::hooks::{self, Stage};
use palisade_oci::Bundle;

use super::{
    absolute, check_id, open, status_of, write_pid_file, CliError, Global, Logger, Result,
    BUNDLE_ANNOTATION, OCI_VERSION,
};

// `create`'s options, which `run` shares.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The container's id.
    pub id: String,
    /// The bundle's directory, with config.json.
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// Where to write the container process's pid.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// A Unix socket to which the master of the container's terminal is sent.
    #[arg(long = "console-socket", value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
    /// How many descriptors from 3 on the container process gets, besides stdio.
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Accepted for runc's callers; the root is always switched with pivot_root(2).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Accepted for runc's callers; no session keyring is made.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
}

// `run`'s options.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Return once the container's process runs, without waiting for it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep the container's record after it exits (without --detach).
    #[arg(long)]
    pub keep: bool,
}

// `kill`'s options.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal every process of the container, not only its first.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// The container's id.
    pub id: String,
    /// The signal: a number, `TERM` or `SIGTERM`.
    #[arg(default_value = "TERM")]
    pub signal: String,
}

// `delete`'s options.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kill the container first if it runs.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The container's id.
    pub id: String,
}

/// Takes the `n` descriptors from 3 on that the caller passed for the container.
pub fn take_preserved_fds(n: u32) -> Result<Vec<OwnedFd>> {
    (0..n)
        .map(|i| {
            let fd = 3 + i as RawFd;
            // SAFETY: F_GETFD only reads the descriptor's flags (`fcntl(2)`), for any number.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                return Err(CliError::msg(format!(
                    "--preserve-fds={n}: descriptor {fd} is not open"
                )));
            }
            // SAFETY: the caller handed descriptors 3..3+n to this process for the container;
            // this runs before the process opens anything itself, so nothing else owns them.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

/// How [`make`] leaves the container's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Waiting at its start gate, for `start` (from this process or another).
    Created,
    /// Running: `run` of a bundle that needs nothing done between create and start.
    Started,
}

/// A container made by [`make`]: its child, its terminal's master (with a terminal and no
/// console socket, a foreground `run`), its bundle as loaded, and the bundle's directory.
struct Made {
    child: Child,
    pty: Option<Pty>,
    bundle: Bundle,
    dir: PathBuf,
}

/// Whether `run` may start the container's process in one step with its creation
/// ([`palisade::Sandbox::spawn`]) rather than create it waiting at its start gate and then
/// start it: when nothing has to happen in between. That is no hook of `prestart`,
/// `createRuntime`, `createContainer` or `startContainer` (all run while the process waits),
/// no `oomScoreAdj` (written to the process before it runs), and no seccomp user notification
/// (which `create` refuses, and `run` keeps refusing). The process then goes through the same
/// steps, in the same namespaces, root, cgroup and confinement; it only does not stop at the
/// gate.
fn starts_at_once(bundle: &Bundle) -> bool {
    let spec = bundle.spec();
    let hooked = [
        Stage::Prestart,
        Stage::CreateRuntime,
        Stage::CreateContainer,
        Stage::StartContainer,
    ]
    .into_iter()
    .any(|stage| !stage.hooks(spec).is_empty());
    !hooked && bundle.oom_score_adj().is_none() && !notifies(spec)
}

/// Whether the seccomp profile of `spec` has a user-notification action (`SCMP_ACT_NOTIFY`),
/// for which the filter is loaded with a listener.
fn notifies(spec: &oci_spec::runtime::Spec) -> bool {
    use oci_spec::runtime::LinuxSeccompAction;
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
        return false;
    };
    let notify = |action: LinuxSeccompAction| action == LinuxSeccompAction::ScmpActNotify;
    notify(seccomp.default_action())
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|rule| notify(rule.action()))
}

/// Creates the container of `args` under the state root: its process waiting to be started,
/// or with [`Launch::Started`] running where the bundle allows it ([`starts_at_once`]); the
/// returned launch says which.
fn make(
    global: &Global,
    log: &mut Logger,
    args: &CreateArgs,
    preserved: Vec<OwnedFd>,
    detach: bool,
    launch: Launch,
) -> Result<(Made, Launch)> {
    check_id(&args.id)?;
    let dir = absolute(&args.bundle)?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let bundle = Bundle::load(&dir)?;
    let launch = match launch {
        Launch::Started if starts_at_once(&bundle) => Launch::Started,
        _ => Launch::Created,
    };
    let terminal = bundle.terminal();
    if terminal && detach && args.console_socket.is_none() {
        return Err(CliError::msg(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    if !terminal && args.console_socket.is_some() {
        return Err(CliError::msg(
            "cannot use console socket if runc will not detach or allocate tty",
        ));
    }
    // Connected first, so that a bad socket fails before anything exists.
    let console = args
        .console_socket
        .as_ref()
        .map(|path| UnixStream::connect(path).map_err(CliError::io("connect to", path)))
        .transpose()?;
    if let Some(mask) = bundle.umask() {
        // The container's files are made under its umask, which the clone inherits.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(mask));
    }
    let mut builder = bundle.builder(&args.id, &global.root)?;
    builder.annotation(BUNDLE_ANNOTATION, dir.to_string_lossy());
    if let Some(parent) = bundle.cgroup_parent() {
        // The caller's parent group, made as runc makes it, and left for the caller.
        let hierarchy = palisade::cgroup::Hierarchy::detect().map_err(palisade::Error::from)?;
        palisade::cgroup::make_path(&hierarchy, &parent).map_err(palisade::Error::from)?;
    }
    if !terminal {
        builder
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
    }
    for (i, fd) in preserved.into_iter().enumerate() {
        builder.inherit_fd(3 + i as RawFd, fd);
    }
    log.debug(format_args!("creating {} from {}", args.id, dir.display()));
    let sandbox = builder.build()?;
    let mut child = match launch {
        Launch::Created => sandbox.create()?,
        Launch::Started => sandbox.spawn()?,
    };
    let finish = (|| -> Result<Option<Pty>> {
        let pty = match (terminal, child.take_pty()) {
            (false, _) => None,
            (true, None) => return Err(CliError::msg("the container got no terminal")),
            (true, Some(pty)) => match &console {
                Some(socket) => {
                    pty.send(socket).map_err(CliError::io(
                        "send the terminal to",
                        args.console_socket.clone().unwrap_or_default(),
                    ))?;
                    None
                }
                None => Some(pty),
            },
        };
        if launch == Launch::Started {
            // Its process runs (and may have exited already): nothing of create's is left
            // but the pid file.
            if let Some(path) = &args.pid_file {
                write_pid_file(path, child.id())?;
            }
            return Ok(pty);
        }
        let pid = child.command_id();
        if pid == 0 {
            // Its init found no command to wait on: it failed before its start gate.
            return Err(CliError::msg(
                "the container's process exited during create",
            ));
        }
        if let Some(adj) = bundle.oom_score_adj() {
            let path = format!("/proc/{pid}/oom_score_adj");
            std::fs::write(&path, adj.to_string()).map_err(CliError::io("write", &path))?;
        }
        // The runtime's hooks of create, while the command waits at its start gate; the
        // specification's status for them is `creating`.
        let state = held_state(&args.id, &dir, &bundle, child.id(), "creating");
        for stage in [Stage::Prestart, Stage::CreateRuntime] {
            if stage.hooks(bundle.spec()).is_empty() {
                continue;
            }
            log.debug(format_args!("running {}", stage.field()));
            hooks::run(bundle.spec(), stage, &state).map_err(CliError::msg)?;
        }
        if !Stage::CreateContainer.hooks(bundle.spec()).is_empty() {
            // In the container's namespaces, while its process still waits at the gate.
            log.debug(format_args!("running {}", Stage::CreateContainer.field()));
            let exec = |program: &OsStr| child.exec(program);
            hooks::run_in(bundle.spec(), Stage::CreateContainer, &state, &exec)
                .map_err(CliError::msg)?;
        }
        if let Some(path) = &args.pid_file {
            // The container's first process, as runc's: the shim or conmon, the parent it is
            // reparented to once this process exits, reaps it (it exits with the command's
            // status). It is the sandbox's init, or the command itself without one.
            write_pid_file(path, child.id())?;
        }
        Ok(pty)
    })();
    match finish {
        Ok(pty) => Ok((
            Made {
                child,
                pty,
                bundle,
                dir,
            },
            launch,
        )),
        Err(e) => {
            // Nothing of a failed create is left, as runc destroys it.
            drop(child);
            remove(global, &args.id);
            Err(e)
        }
    }
}

/// Kills and removes the container `id`, whatever its state; for failures half-way.
fn remove(global: &Global, id: &str) {
    if let Ok(h) = Sandbox::open_in(&global.root, id) {
        let _ = h.force_delete();
    }
}

pub fn create(
    global: &Global,
    log: &mut Logger,
    args: CreateArgs,
    preserved: Vec<OwnedFd>,
) -> Result<()> {
    // The container is detached: this process's handle only leaves it to later invocations.
    make(global, log, &args, preserved, true, Launch::Created).map(drop)
}

pub fn start(global: &Global, log: &mut Logger, id: &str) -> Result<()> {
    let mut h = open(global, id)?;
    match status_of(&mut h) {
        "created" => {
            if let Err(e) = start_hooks(log, &h) {
                // As the specification asks: an error, and the container stopped (its
                // `delete` runs the poststop hooks).
                stop(&mut h);
                return Err(e);
            }
            h.start()?;
            let state = hook_state(&h, "running");
            later_hooks(log, Stage::Poststart, &state);
            Ok(())
        }
        "stopped" => Err(CliError::msg("cannot start a container that has stopped")),
        "paused" => Err(CliError::msg(
            "cannot start a container in the paused state",
        )),
        _ => Err(CliError::msg("cannot start an already running container")),
    }
}

pub fn run(
    global: &Global,
    log: &mut Logger,
    args: RunArgs,
    preserved: Vec<OwnedFd>,
) -> Result<i32> {
    let id = args.create.id.clone();
    // From before the process starts, whatever is sent to a foreground run is its process's.
    let forwarding = (!args.detach).then(Forwarding::hold);
    let (made, launch) = make(
        global,
        log,
        &args.create,
        preserved,
        args.detach,
        Launch::Started,
    )?;
    let Made {
        mut child,
        pty,
        bundle,
        dir,
    } = made;
    // The hooks read the bundle loaded by `make`: the one the container was made from.
    let pid = child.id();
    let state = |status: &str| held_state(&id, &dir, &bundle, pid, status);
    if launch == Launch::Created {
        // The startContainer hooks, as `start` runs them. A failure stops the container,
        // which `run` then deletes as it would once it stopped, its poststop hooks included.
        let hooked = match Sandbox::open_in(&global.root, &id) {
            Ok(h) => start_hooks_of(log, &h, &bundle),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = hooked {
            let stopped = state("stopped");
            drop(child);
            remove(global, &id);
            run_hooks(log, &bundle, Stage::Poststop, || stopped);
            return Err(e);
        }
        if let Err(e) = child.start() {
            drop(child);
            remove(global, &id);
            return Err(e.into());
        }
    }
    run_hooks(log, &bundle, Stage::Poststart, || state("running"));
    let Some(forwarding) = forwarding else {
        return Ok(0);
    };
    forwarding.to(child.pidfd())?;
    if let Some(pty) = pty {
        // Ends when the container's side of the terminal closes; its status tells the rest.
        let _ = pty.proxy();
    }
    let status = child.wait()?;
    log.debug(format_args!("{id} exited: {status}"));
    let stopped = state("stopped");
    drop(child);
    if !args.keep {
        match Sandbox::open_in(&global.root, &id) {
            Ok(h) => {
                h.delete()?;
                run_hooks(log, &bundle, Stage::Poststop, || stopped);
            }
            Err(palisade::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(status.shell_code())
}

/// The state a hook reads, with `status`, from what `create` or `run` holds: as
/// [`hook_state`] would read it back from the record (the record's annotations are the
/// bundle's, and its first process is `pid`).
fn held_state(id: &str, dir: &Path, bundle: &Bundle, pid: u32, status: &str) -> hooks::State {
    hooks::State {
        oci_version: OCI_VERSION.to_owned(),
        id: id.to_owned(),
        status: status.to_owned(),
        pid: if status == "stopped" { 0 } else { pid },
        bundle: dir.to_string_lossy().into_owned(),
        annotations: bundle
            .spec()
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

/// Runs the hooks of `stage` (`poststart`, `poststop`) of the loaded `bundle`, with the state
/// `state` makes; as [`later_hooks`], a failure is only a warning.
fn run_hooks(
    log: &mut Logger,
    bundle: &Bundle,
    stage: Stage,
    state: impl FnOnce() -> hooks::State,
) {
    if stage.hooks(bundle.spec()).is_empty() {
        return;
    }
    log.debug(format_args!("running {}", stage.field()));
    let state = state();
    for e in hooks::run_all(bundle.spec(), stage, &state) {
        log.warn(e);
    }
}

/// The signals a foreground `run` or `exec` passes on to its process (see [`Forwarding`]).
const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The pidfd that [`forward`] passes signals to; -1 until [`Forwarding::to`] sets it.
static FORWARD_TO: AtomicI32 = AtomicI32::new(-1);

/// The handler of the [`FORWARDED`] signals: passes the signal on to the process of
/// [`FORWARD_TO`] with `pidfd_send_signal(2)`, a system call and nothing else, so it is
/// async-signal-safe (`signal-safety(7)`); it keeps `errno` as the interrupted code had it.
extern "C" fn forward(sig: libc::c_int) {
    let pidfd = FORWARD_TO.load(Ordering::Relaxed);
    if pidfd < 0 {
        return;
    }
    // SAFETY: `__errno_location` returns this thread's errno, valid for the thread's life.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: pidfd_send_signal(2) with a null siginfo reads no memory of ours; a pidfd
    // closed or reused meanwhile makes it fail (EBADF, EINVAL), which is ignored.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The signals a foreground `run` or `exec` passes on to its process, as runc's signal proxy:
/// [held](Self::hold) from before the process starts, so that none sent meanwhile is lost or
/// ends the runtime, and [forwarded](Self::to) once it runs, those held first.
///
/// Holding blocks them (`sigprocmask(2)`); the container's processes do not inherit that: the
/// sandbox's init and command set their own masks before they execute, and the hooks' children
/// start with an empty one (std's `Command`). Dropped without [`to`](Self::to) (a failed start,
/// a detached run), they are unblocked again and what is pending acts as it would have.
pub struct Forwarding {
    set: libc::sigset_t,
}

impl Forwarding {
    /// Blocks the [`FORWARDED`] signals, until [`to`](Self::to) or the drop.
    pub fn hold() -> Forwarding {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initializes the set it is given; sigaddset only writes to it.
        let set = unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for sig in FORWARDED {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            set.assume_init()
        };
        // SAFETY: changes only this thread's signal mask (`pthread_sigmask(3)`), from an
        // initialized set; this process has no other thread that takes these signals.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        Forwarding { set }
    }

    /// Passes the held signals, and those this process gets from now on until it exits, on to
    /// the process of `pidfd` (`pidfd_send_signal(2)`): a handler ([`forward`]) sends each on,
    /// with `SA_RESTART`, so that an interrupted read or write goes on (the waits that
    /// `poll(2)`, on the pidfd and the terminal, take `EINTR` and poll again).
    pub fn to(self, pidfd: BorrowedFd<'_>) -> Result<()> {
        let pidfd = pidfd
            .try_clone_to_owned()
            .map_err(CliError::io("duplicate the pidfd of", "the container"))?;
        // Kept open until this process exits: the handler may run until then.
        FORWARD_TO.store(pidfd.into_raw_fd(), Ordering::Relaxed);
        // SAFETY: all zeroes is a valid `sigaction` (no handler, empty mask, no flags), filled
        // in below.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        for sig in FORWARDED {
            // SAFETY: installs a handler that only makes one system call (see `forward`);
            // `action` is initialized and outlives the call.
            if unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(CliError::msg(format!(
                    "install the handler of signal {sig} to forward it to the container: {e}"
                )));
            }
        }
        // The drop unblocks them: those held are handled, so forwarded, first.
        Ok(())
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        // SAFETY: as in `hold`, with the same initialized set.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

pub fn kill(global: &Global, args: KillArgs) -> Result<()> {
    let signal = super::parse_signal(&args.signal)?;
    let mut h = open(global, &args.id)?;
    if args.all {
        // Every process of its cgroup (runc's `kill --all`); its first process too, which is
        // the one that ends the container.
        if let Ok(sig) =
            rustix::process::Signal::from_named_raw(signal as i32).ok_or(rustix::io::Errno::INVAL)
        {
            for pid in super::query::pids(&mut h) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, sig);
                }
            }
        }
        if h.status() != Status::Stopped {
            let _ = h.signal(signal);
        }
        return Ok(());
    }
    if h.status() == Status::Stopped {
        return Err(CliError::msg("container not running"));
    }
    Ok(h.signal(signal)?)
}

/// The state a hook reads of a created container, with `status`: the document `state`
/// prints, whose `pid` is 0 once stopped.
fn hook_state(h: &Handle, status: &str) -> hooks::State {
    let state = h.state();
    let (bundle, annotations) = super::query::bundle_and_annotations(state);
    hooks::State {
        oci_version: OCI_VERSION.to_owned(),
        id: state.id.clone(),
        status: status.to_owned(),
        pid: super::query::state_pid(state, status),
        bundle,
        annotations,
    }
}

/// Runs the `startContainer` hooks of the created container `h`, from the bundle recorded at
/// create, in its namespaces; the first failure fails `start`. A bundle that cannot be read
/// fails it too: its hooks must run before the container's process does.
fn start_hooks(log: &mut Logger, h: &Handle) -> Result<()> {
    let (bundle, _) = super::query::bundle_and_annotations(h.state());
    if bundle.is_empty() {
        return Ok(());
    }
    start_hooks_of(log, h, &Bundle::load(&bundle)?)
}

/// Runs the `startContainer` hooks of `bundle` for the created container `h`, in its
/// namespaces; the first failure fails the start.
fn start_hooks_of(log: &mut Logger, h: &Handle, bundle: &Bundle) -> Result<()> {
    let stage = Stage::StartContainer;
    if stage.hooks(bundle.spec()).is_empty() {
        return Ok(());
    }
    log.debug(format_args!("running {}", stage.field()));
    let state = hook_state(h, "created");
    let exec = |program: &OsStr| h.exec(program);
    hooks::run_in(bundle.spec(), stage, &state, &exec).map_err(CliError::msg)
}

/// Stops a created container whose start failed: SIGKILL, and waits until it has stopped.
fn stop(h: &mut Handle) {
    if h.kill().is_ok() {
        let _ = h.wait();
    }
}

/// Runs the hooks of `stage` (`poststart`, `poststop`) from the bundle recorded at create;
/// as the specification asks, a failure is only a warning and the hooks after it still run.
fn later_hooks(log: &mut Logger, stage: Stage, state: &hooks::State) {
    if state.bundle.is_empty() {
        return;
    }
    let bundle = match Bundle::load(&state.bundle) {
        Ok(bundle) => bundle,
        Err(e) => {
            log.warn(format_args!("{}: not run: {e}", stage.field()));
            return;
        }
    };
    log.debug(format_args!("running {}", stage.field()));
    for e in hooks::run_all(bundle.spec(), stage, state) {
        log.warn(e);
    }
}

pub fn delete(global: &Global, log: &mut Logger, args: DeleteArgs) -> Result<()> {
    check_id(&args.id)?;
    let mut h = match Sandbox::open_in(&global.root, &args.id) {
        Ok(h) => h,
        // runc's `delete --force` of what is gone already succeeds.
        Err(palisade::Error::NotFound { .. }) if args.force => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let state = hook_state(&h, "stopped");
    match status_of(&mut h) {
        "stopped" => h.delete()?,
        // A created container has run nothing yet: runc kills and deletes it.
        "created" => h.force_delete()?,
        "paused" if args.force => {
            // A frozen process takes SIGKILL only once thawed on cgroup v1.
            let _ = h.kill();
            let _ = h.thaw();
            h.force_delete()?
        }
        _ if args.force => h.force_delete()?,
        status => {
            return Err(CliError::msg(format!(
                "cannot delete container {} that is not stopped: {status}",
                args.id
            )))
        }
    }
    later_hooks(log, Stage::Poststop, &state);
    Ok(())
}

pub fn pause(global: &Global, id: &str) -> Result<()> {
    let mut h = open(global, id)?;
    match status_of(&mut h) {
        "running" | "created" => Ok(h.freeze()?),
        "paused" => Err(CliError::msg("container already paused")),
        _ => Err(CliError::msg("container not running")),
    }
}

pub fn resume(global: &Global, id: &str) -> Result<()> {
    let mut h = open(global, id)?;
    match status_of(&mut h) {
        "paused" => Ok(h.thaw()?),
        _ => Err(CliError::msg("container not paused")),
    }
}
