//! Named sandboxes: their identity and state on disk, and handles to them from any process.
//!
//! A sandbox given a [name](crate::SandboxBuilder::name) is recorded in a directory of its own
//! under a *state root* (by default `/run/palisade` for root, `$XDG_RUNTIME_DIR/palisade`
//! otherwise; see [`default_root`]):
//!
//! | file         | what                                                                      |
//! |--------------|---------------------------------------------------------------------------|
//! | `state.json` | the [`State`]: pids and start times, cgroup, address, ports, annotations   |
//! | `exit`       | the command's status once it has exited: the init's report (its raw wait status, its usage, its flags, e.g. killed at the deadline; see `spawn/init.rs`), or the status and flags a handle that reaped the sandbox recorded |
//! | `start`      | a FIFO on which a [created](crate::Sandbox::create) command waits          |
//! | `exec.json`  | what a command run in the sandbox from another process takes from it       |
//!
//! # Example
//!
//! A detached sandbox made, entered, stopped and deleted, as another process would (run as root,
//! under a state root of its own):
//!
//! ```
//! use palisade::{Sandbox, Signal, Status};
//!
//! # if unsafe { libc::geteuid() } != 0 {
//! #     eprintln!("SKIPPED: the palisade::state example needs root");
//! #     return Ok(());
//! # }
//! let root = std::env::temp_dir().join(format!("palisade-doc-state-{}", std::process::id()));
//! let mut builder = Sandbox::builder("sleep");
//! builder.arg("1000").name("web").state_root(&root).detach(true);
//! drop(builder.spawn()?); // it keeps running
//!
//! // From any process:
//! let mut web = Sandbox::open_in(&root, "web")?;
//! assert_eq!(web.status(), Status::Running);
//! let out = web.exec("cat").arg("/proc/1/comm").output()?;
//! assert_eq!(out.stdout, b"palisade-init\n");
//! assert_eq!(Sandbox::list_in(&root)?.len(), 1);
//! web.signal(Signal::SIGTERM)?;
//! let exit = web.wait()?.expect("the init records the status");
//! assert_eq!(exit.signal(), Some(libc::SIGTERM));
//! web.delete()?;
//! std::fs::remove_dir(&root).ok();
//! # Ok::<(), palisade::Error>(())
//! ```
//!
//! # Atomicity
//!
//! - A directory is made under a temporary name, locked (`flock(2)` on the directory), filled,
//!   and only then renamed into place with `RENAME_NOREPLACE` (`rename(2)`): of concurrent
//!   creations with one name exactly one wins, and the loser has made nothing visible.
//! - `state.json` is replaced by writing a temporary file, `fsync(2)`, and `rename(2)`: a reader
//!   sees the old state or the new one, never half of one.
//! - Every change of a sandbox's record happens under the directory's lock, which the creator
//!   holds from before the rename until the sandbox runs. A directory without `state.json` whose
//!   lock is free was left by a creator that died; it is reported [stopped](Status::Stopped) and
//!   [`Handle::delete`] removes it.
//!
//! # Liveness
//!
//! A sandbox runs while its first process does: the recorded pid *and* start time (`proc(5)`,
//! field 22 of `/proc/<pid>/stat`) must match, so a reused pid is never mistaken for it, and the
//! process must not have exited (its pidfd is not readable, `pidfd_open(2)`; a zombie counts as
//! exited). A sandbox whose owner died is killed with it (unless
//! [detached](crate::SandboxBuilder::detach)) and so reported stopped.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_netns::{PortMap, Proto};
use palisade_ns::pidfd_exited as exited;
use rustix::fs::{FlockOperation, Mode, OFlags, CWD};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{ExitStatus, Signal};

/// The state root used when none is given: `/run/palisade` for root, else
/// `$XDG_RUNTIME_DIR/palisade` (falling back to `/run/palisade` when it is unset), as runc and
/// crun choose theirs.
pub fn default_root() -> PathBuf {
    if !rustix::process::geteuid().is_root() {
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            return PathBuf::from(dir).join("palisade");
        }
    }
    PathBuf::from("/run/palisade")
}

/// The longest sandbox name.
pub const MAX_NAME: usize = 128;

/// Checks a sandbox name: 1 to [`MAX_NAME`] characters of `[A-Za-z0-9_.-]`, starting with a
/// letter or digit (Docker's rule for container names). So a name is always one path component,
/// never `.` or `..`, and safe in a cgroup's name.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| Error::InvalidValue {
        what: "sandbox name",
        value: name.to_owned(),
        reason,
    };
    let first = name.bytes().next().ok_or_else(|| invalid("is empty"))?;
    if name.len() > MAX_NAME {
        return Err(invalid("is longer than 128 characters"));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(invalid("must start with a letter or a digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(invalid("may hold only letters, digits, '_', '.' and '-'"));
    }
    Ok(())
}

/// The cgroup directory name of the sandbox `name`: not of the `palisade-<pid>-<start>-<n>` form
/// that [`gc`](crate::gc) collects, so a detached sandbox's group outlives its creator.
pub(crate) fn group_name(name: &str) -> String {
    format!("palisade-sb-{name}")
}

/// Where a named sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// [Created](crate::Sandbox::create): everything is set up, and the command waits to be
    /// [started](Handle::start).
    Created,
    /// The command runs.
    Running,
    /// The sandbox's first process has exited (or its creator died before recording it).
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        })
    }
}

/// A process, named so that a reused pid is told apart: its pid and start time (`proc(5)`,
/// field 22 of `/proc/<pid>/stat`, in clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// The pid, in the PID namespace of the process that recorded it.
    pub pid: u32,
    /// When it started.
    pub start_time: u64,
}

impl ProcessId {
    /// The process `pid` as it is now.
    pub fn of(pid: u32) -> Result<ProcessId> {
        let owner = palisade_cgroup::Owner::of_pid(pid)?;
        Ok(ProcessId {
            pid,
            start_time: owner.start_time,
        })
    }

    /// A pidfd of this process if it has not exited: `None` once it is gone, a zombie, or its
    /// pid names a later process.
    pub fn open(&self) -> Option<OwnedFd> {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid).ok()?)?;
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
        // Checked after the pidfd was opened: if the start time still matches, the pidfd names
        // this very process, whatever happens to the pid later.
        let now = palisade_cgroup::Owner::of_pid(self.pid).ok()?;
        (now.start_time == self.start_time && !exited(pidfd.as_fd())).then_some(pidfd)
    }

    /// Whether the process still runs.
    pub fn is_alive(&self) -> bool {
        self.open().is_some()
    }
}

/// A published port as recorded: [`PortMap`] with its protocol as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PortRecord {
    proto: ProtoRecord,
    host_ip: Ipv4Addr,
    host_port: u16,
    port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProtoRecord {
    Tcp,
    Udp,
}

impl From<Proto> for ProtoRecord {
    fn from(p: Proto) -> ProtoRecord {
        match p {
            Proto::Tcp => ProtoRecord::Tcp,
            Proto::Udp => ProtoRecord::Udp,
        }
    }
}

impl From<ProtoRecord> for Proto {
    fn from(p: ProtoRecord) -> Proto {
        match p {
            ProtoRecord::Tcp => Proto::Tcp,
            ProtoRecord::Udp => Proto::Udp,
        }
    }
}

/// What is recorded of a named sandbox, as [`Handle::state`] returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct State {
    /// The sandbox's name.
    pub id: String,
    /// Its status: as recorded, and [stopped](Status::Stopped) once its first process is gone.
    pub status: Status,
    /// Its first process: the init (PID 1 of its PID namespace) or, without one, the command.
    pub process: ProcessId,
    /// The command's pid (the init's child, or the first process itself), known from
    /// [`create`](crate::Sandbox::create) on, as runtimes write it to `--pid-file`.
    pub command_pid: u32,
    /// The process whose handle the sandbox dies with; `None` for a
    /// [detached](crate::SandboxBuilder::detach) sandbox.
    pub owner: Option<ProcessId>,
    /// When it was created, in seconds since the Unix epoch.
    pub created: u64,
    /// Its root file system, as given (`"host"` for the host's under a throwaway layer, `"/"` for
    /// the host's own mounts, else the directory or image).
    pub rootfs: String,
    /// Its cgroup's directories, one per hierarchy (empty without a cgroup).
    pub cgroup: Vec<PathBuf>,
    /// Its bridge and address there.
    pub network: Option<(String, IpAddr)>,
    /// The bridge network's state directory ([`Bridge::state_dir`](palisade_netns::Bridge::state_dir)),
    /// where its lease is.
    pub network_state: Option<PathBuf>,
    #[serde(with = "ports")]
    /// Its published ports.
    pub ports: Vec<PortMap>,
    /// The caller's labels ([`SandboxBuilder::annotation`](crate::SandboxBuilder::annotation)).
    pub annotations: BTreeMap<String, String>,
    /// The command's status once the sandbox stopped, if it was recorded: by the init, or by the
    /// owner's handle when it reaped the sandbox.
    #[serde(skip)]
    pub exit: Option<ExitStatus>,
}

mod ports {
    use super::{PortMap, PortRecord};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(ports: &[PortMap], s: S) -> Result<S::Ok, S::Error> {
        let records: Vec<PortRecord> = ports
            .iter()
            .map(|p| PortRecord {
                proto: p.proto.into(),
                host_ip: p.host_ip,
                host_port: p.host_port,
                port: p.port,
            })
            .collect();
        records.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PortMap>, D::Error> {
        let records = Vec::<PortRecord>::deserialize(d)?;
        Ok(records
            .into_iter()
            .map(|r| PortMap {
                proto: r.proto.into(),
                host_ip: r.host_ip,
                host_port: r.host_port,
                port: r.port,
            })
            .collect())
    }
}

/// The files of one sandbox's directory.
const STATE: &str = "state.json";
const EXIT: &str = "exit";
const START: &str = "start";
const EXEC: &str = "exec.json";
/// The prefix of directories still being made.
const NEW: &str = ".new-";

fn io_error<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::State {
        what,
        path: path.to_owned(),
        source,
    }
}

fn errno_error<'p>(
    path: &'p Path,
    what: &'static str,
) -> impl FnOnce(rustix::io::Errno) -> Error + 'p {
    move |e| Error::State {
        what,
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The directory of a sandbox under `root`.
fn dir_of(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Locks the directory `dir` (`flock(2)`, exclusive), waiting for it; the lock lasts as long as
/// the returned descriptor.
fn lock_dir(dir: &Path, blocking: bool) -> Result<Option<OwnedFd>> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno_error(dir, "open"))?;
    let op = if blocking {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    match rustix::fs::flock(&fd, op) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(errno_error(dir, "lock")(e)),
    }
}

/// [`lock_dir`] without blocking, tried again for a moment while it is held: a lock is held
/// for as long as any copy of its open file is, and a process forked by another thread of its
/// holder has one until it closes its descriptors (`flock(2)`), so a held lock may be a
/// moment's copy rather than a maker or a starter. `None` if it is still held after that.
fn lock_dir_soon(dir: &Path) -> Result<Option<OwnedFd>> {
    for _ in 0..20 {
        if let Some(lock) = lock_dir(dir, false)? {
            return Ok(Some(lock));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    lock_dir(dir, false)
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, `fsync(2)`, `rename(2)`.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_0600()
        .open(&tmp)
        .map_err(io_error(&tmp, "create"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp, "write"))?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path, "replace"))
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600).custom_flags(libc::O_NOFOLLOW)
    }
}

/// A name taken under a state root, while its sandbox is made: the directory is in place and
/// locked. Dropped without [`Reservation::commit`], it removes the directory again.
#[derive(Debug)]
pub(crate) struct Reservation {
    id: String,
    dir: PathBuf,
    lock: Option<OwnedFd>,
    /// Where the init writes the command's status (`exit`), opened for writing.
    pub exit_w: OwnedFd,
    /// The `start` FIFO, opened for reading and writing (so opening it never blocks), for a
    /// created sandbox's command to wait on.
    pub start: Option<OwnedFd>,
    committed: bool,
}

impl Reservation {
    /// Takes `id` under `root`: exactly one of concurrent takers of a name wins, the others get
    /// [`Error::NameInUse`]. With `create`, also makes the `start` FIFO.
    pub fn take(root: &Path, id: &str, create: bool) -> Result<Reservation> {
        validate_name(id)?;
        make_root(root)?;
        let tmp = root.join(format!(
            "{NEW}{id}.{}.{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::DirBuilder::new()
            .mode_0700()
            .create(&tmp)
            .map_err(io_error(&tmp, "create"))?;
        let made = (|| {
            let lock = lock_dir(&tmp, true)?;
            let exit_w = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(tmp.join(EXIT))
                .map_err(io_error(&tmp, "create the exit file in"))?;
            let start = if create {
                let fifo = tmp.join(START);
                rustix::fs::mknodat(
                    CWD,
                    &fifo,
                    rustix::fs::FileType::Fifo,
                    Mode::RUSR | Mode::WUSR,
                    0,
                )
                .map_err(errno_error(&fifo, "create"))?;
                // Read and write: the open does not wait for a writer (`fifo(7)`), and the
                // command never sees end-of-file, only the byte `start` writes.
                Some(
                    rustix::fs::open(
                        &fifo,
                        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )
                    .map_err(errno_error(&fifo, "open"))?,
                )
            } else {
                None
            };
            let dir = dir_of(root, id);
            rustix::fs::renameat_with(CWD, &tmp, CWD, &dir, rustix::fs::RenameFlags::NOREPLACE)
                .map_err(|e| match e {
                    rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY => Error::NameInUse {
                        id: id.to_owned(),
                        root: root.to_owned(),
                    },
                    e => errno_error(&dir, "create")(e),
                })?;
            Ok(Reservation {
                id: id.to_owned(),
                dir,
                lock,
                exit_w: exit_w.into(),
                start,
                committed: false,
            })
        })();
        if made.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made
    }

    /// The sandbox's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the state and what an exec takes from the sandbox; the lock is released when the
    /// reservation is dropped.
    pub fn commit(mut self, state: &State, exec: &[u8]) -> Result<Record> {
        write_atomic(&self.dir, EXEC, exec)?;
        write_state(&self.dir, state)?;
        self.committed = true;
        Ok(Record {
            id: self.id.clone(),
            dir: self.dir.clone(),
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        drop(self.lock.take());
    }
}

trait Mode0700 {
    fn mode_0700(&mut self) -> &mut Self;
}

impl Mode0700 for std::fs::DirBuilder {
    fn mode_0700(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(0o700)
    }
}

/// Makes the state root, private to its owner, if it is missing.
fn make_root(root: &Path) -> Result<()> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode_0700()
        .create(root)
    {
        Ok(()) => Ok(()),
        Err(source) => Err(Error::State {
            what: "create the state root",
            path: root.to_owned(),
            source,
        }),
    }
}

fn write_state(dir: &Path, state: &State) -> Result<()> {
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::State {
        what: "encode the state of",
        path: dir.to_owned(),
        source: io::Error::other(e),
    })?;
    write_atomic(dir, STATE, &json)
}

/// A named sandbox's record, kept by the [`Child`](crate::Child) of the process that made it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    id: String,
    dir: PathBuf,
}

impl Record {
    /// Records the command's raw wait status unless the init already did.
    pub fn record_exit(&self, status: ExitStatus) {
        record_exit(&self.dir, status);
    }

    /// Marks a created sandbox started.
    pub fn started(&self) -> Result<()> {
        let Some(_lock) = lock_dir(&self.dir, true)? else {
            return Ok(());
        };
        let mut state = read_state(&self.dir, &self.id)?;
        state.status = Status::Running;
        write_state(&self.dir, &state)
    }

    /// The sandbox's name.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Records a status (the raw wait status and its flags: timed out or not, see
/// [`ExitStatus::outcome_report`]) in the sandbox directory `dir`, unless one is there already.
fn record_exit(dir: &Path, status: ExitStatus) {
    let path = dir.join(EXIT);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags_nofollow()
            .open(&path)
        {
            let _ = f.write_all(&status.outcome_report());
        }
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW)
    }
}

fn read_state(dir: &Path, id: &str) -> Result<State> {
    let path = dir.join(STATE);
    let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
    let mut state: State = serde_json::from_slice(&bytes).map_err(|e| Error::State {
        what: "decode",
        path: path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    if state.id != id {
        return Err(Error::State {
            what: "decode",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, "names another sandbox"),
        });
    }
    state.exit = read_exit(dir);
    Ok(state)
}

/// The status in the `exit` file, whole: the init's report with its usage and flags, or what a
/// handle recorded ([`ExitStatus::read_report`]); `None` while there is none.
fn read_exit(dir: &Path) -> Option<ExitStatus> {
    let mut file = File::open(dir.join(EXIT)).ok()?;
    ExitStatus::read_report(&mut file)
}

/// Starts the created command of the sandbox whose `start` FIFO is `fifo`: one byte, which its
/// only reader, the waiting command, takes. With nobody waiting the open fails (`ENXIO`,
/// `fifo(7)`): the sandbox was started already, or its command is gone.
pub(crate) fn release_start(fifo: &Path, id: &str) -> Result<()> {
    let opened = rustix::fs::open(
        fifo,
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    );
    let fd = match opened {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NXIO | rustix::io::Errno::NOENT) => {
            return Err(Error::NotCreated { id: id.to_owned() })
        }
        Err(e) => return Err(errno_error(fifo, "open")(e)),
    };
    rustix::io::write(&fd, &[1]).map_err(errno_error(fifo, "write"))?;
    let _ = std::fs::remove_file(fifo);
    Ok(())
}

/// A handle to a named sandbox, from any process: see [`Sandbox::open`](crate::Sandbox::open)
/// and [`Sandbox::list`](crate::Sandbox::list).
#[derive(Debug)]
pub struct Handle {
    root: PathBuf,
    dir: PathBuf,
    state: State,
    /// The first process's pidfd, while it runs.
    pidfd: Option<OwnedFd>,
    cgroup: Option<palisade_cgroup::Cgroup>,
    /// Whether this handle sent it SIGKILL, which leaves its init no time to report.
    killed: AtomicBool,
}

impl Handle {
    /// Opens the sandbox `id` under `root`.
    pub(crate) fn open(root: &Path, id: &str) -> Result<Handle> {
        validate_name(id)?;
        let dir = dir_of(root, id);
        let state = match read_state(&dir, id) {
            Ok(state) => state,
            Err(Error::State { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                // A sandbox's directory has its `exit` file from the start; anything else in
                // the state root (palisade-netns's `netns` under `/run/palisade`) is not one.
                if !dir.join(EXIT).is_file() {
                    return Err(Error::NotFound {
                        id: id.to_owned(),
                        root: root.to_owned(),
                    });
                }
                // Being made (its lock is held), removed meanwhile, or left half-made by a
                // creator that died.
                match lock_dir(&dir, false) {
                    Ok(Some(_)) => stale_state(id),
                    Ok(None) => {
                        return Err(Error::NotFound {
                            id: id.to_owned(),
                            root: root.to_owned(),
                        })
                    }
                    Err(Error::State { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        return Err(Error::NotFound {
                            id: id.to_owned(),
                            root: root.to_owned(),
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let pidfd = state.process.open();
        let cgroup = (!state.cgroup.is_empty())
            .then(|| palisade_cgroup::Cgroup::open_dirs(&state.cgroup).ok())
            .flatten();
        let mut handle = Handle {
            root: root.to_owned(),
            dir,
            state,
            pidfd,
            cgroup,
            killed: AtomicBool::new(false),
        };
        handle.settle();
        Ok(handle)
    }

    /// The status now, from the recorded one and the first process's liveness.
    fn settle(&mut self) {
        if self.pidfd.as_ref().is_some_and(|fd| exited(fd.as_fd())) {
            self.pidfd = None;
        }
        if self.pidfd.is_none() {
            self.state.status = Status::Stopped;
            self.state.exit = read_exit(&self.dir);
        }
    }

    /// The sandbox's name.
    pub fn id(&self) -> &str {
        &self.state.id
    }

    /// Its state as of the last [`refresh`](Self::refresh) (or the open).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Reads the state again.
    pub fn refresh(&mut self) -> Result<&State> {
        if let Ok(state) = read_state(&self.dir, &self.state.id) {
            self.state = state;
        }
        self.settle();
        Ok(&self.state)
    }

    /// Its status now.
    pub fn status(&mut self) -> Status {
        self.settle();
        self.state.status
    }

    /// The pid of its first process.
    pub fn pid(&self) -> u32 {
        self.state.process.pid
    }

    /// A pidfd of its first process, while it runs.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(OwnedFd::as_fd)
    }

    fn running_pidfd(&self) -> Result<&OwnedFd> {
        self.pidfd
            .as_ref()
            .filter(|fd| !exited(fd.as_fd()))
            .ok_or(Error::NotRunning {
                pid: self.state.process.pid as i32,
            })
    }

    /// Kills the sandbox: SIGKILL to its first process, which ends the whole sandbox (see
    /// [`signal`](Self::signal)), as [`Child::kill`](crate::Child::kill) does.
    /// [`Error::NotRunning`] once it has stopped.
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// Sends `signal` to the sandbox's first process (`pidfd_send_signal(2)`): its init
    /// forwards it to the command, and SIGKILL ends the whole sandbox. [`Error::NotRunning`] once
    /// it has stopped.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pidfd = self.running_pidfd()?;
        let sig = rustix::process::Signal::from_named_raw(signal as i32)
            .ok_or(rustix::io::Errno::INVAL)
            .and_then(|sig| rustix::process::pidfd_send_signal(pidfd, sig));
        sig.map_err(|e| Error::Process {
            call: "pidfd_send_signal",
            pid: self.state.process.pid as i32,
            source: e.into(),
        })?;
        if signal == Signal::SIGKILL {
            self.killed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Starts a [created](crate::Sandbox::create) sandbox's command, from any process, as the
    /// OCI runtime's `start` does. [`Error::NotCreated`] if nothing waits to be started.
    pub fn start(&mut self) -> Result<()> {
        let _lock = lock_dir(&self.dir, true)?;
        release_start(&self.dir.join(START), &self.state.id)?;
        self.state.status = Status::Running;
        let mut recorded = read_state(&self.dir, &self.state.id)?;
        recorded.status = Status::Running;
        write_state(&self.dir, &recorded)
    }

    /// Waits until the sandbox stops (polling its pidfd, `pidfd_open(2)`; the process that
    /// spawned it reaps it too) and returns the command's status, if it was recorded: the init
    /// records it, with the usage of the command and its descendants
    /// ([`ExitStatus::cpu_time`], [`peak_memory`](ExitStatus::peak_memory)) and whether it
    /// killed the sandbox at its deadline ([`ExitStatus::timed_out`],
    /// [`SandboxBuilder::timeout`](crate::SandboxBuilder::timeout)); without one, only the
    /// spawning process's handle can. Killed with SIGKILL through this handle, it is recorded as
    /// killed by SIGKILL. `None` when nothing could report it, e.g. when the sandbox's owner
    /// died and took it along.
    ///
    /// A sandbox's wall-clock limit is kept by its init (without one, by the waits of the
    /// spawning process's [`Child`](crate::Child)), never by this wait: a
    /// [detached](crate::SandboxBuilder::detach) sandbox with a timeout is killed at its
    /// deadline whether or not anything waits, and this wait returns its timed-out status.
    pub fn wait(&mut self) -> Result<Option<ExitStatus>> {
        // Without a limit the wait only ends once the sandbox has stopped.
        self.wait_until(None).map(Option::flatten)
    }

    /// Waits at most `timeout` for the sandbox to stop: as [`wait`](Self::wait) once it has,
    /// `None` if it still runs when `timeout` has passed (the sandbox untouched). It polls the
    /// pidfd (`poll(2)`: readable once the process has exited, `pidfd_open(2)`), as
    /// [`Child::wait_timeout`](crate::Child::wait_timeout) does.
    ///
    /// A stopped sandbox whose status nothing recorded (see [`wait`](Self::wait)) gives `None`
    /// too; [`status`](Self::status) tells the two apart.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade::Sandbox;
    ///
    /// # if unsafe { libc::geteuid() } != 0 {
    /// #     eprintln!("SKIPPED: the Handle::wait_timeout example needs root");
    /// #     return Ok(());
    /// # }
    /// let root = std::env::temp_dir().join(format!("palisade-doc-wait-{}", std::process::id()));
    /// let mut builder = Sandbox::builder("sleep");
    /// builder.arg("100").name("napper").state_root(&root).detach(true);
    /// drop(builder.spawn()?);
    ///
    /// let mut napper = Sandbox::open_in(&root, "napper")?;
    /// assert_eq!(napper.wait_timeout(Duration::from_millis(50))?, None);
    /// napper.kill()?;
    /// let status = napper.wait_timeout(Duration::from_secs(60))?;
    /// assert_eq!(status.and_then(|s| s.signal()), Some(libc::SIGKILL));
    /// napper.delete()?;
    /// std::fs::remove_dir(&root).ok();
    /// # Ok::<(), palisade::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        // A timeout too far to represent is no timeout.
        let until = std::time::Instant::now().checked_add(timeout);
        self.wait_until(until).map(Option::flatten)
    }

    /// Waits until the sandbox stops or `until` passes (`None`: no limit): `None` if it still
    /// runs then, else its recorded status, if any (see [`wait`](Self::wait)).
    fn wait_until(
        &mut self,
        until: Option<std::time::Instant>,
    ) -> Result<Option<Option<ExitStatus>>> {
        if let Some(pidfd) = &self.pidfd {
            let pid = self.state.process.pid as i32;
            let stopped = crate::process::poll_pidfd(pidfd.as_fd(), until).map_err(|source| {
                Error::Process {
                    call: "poll the pidfd of",
                    pid,
                    source,
                }
            })?;
            if !stopped {
                return Ok(None);
            }
            // It has exited: the spawning process reaps it here (`waitid(2)` with `P_PIDFD`,
            // which finds it at once); anyone else gets `ECHILD`.
            let reaped = rustix::process::waitid(
                rustix::process::WaitId::PidFd(pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED,
            );
            if let Ok(Some(status)) = &reaped {
                // The sandbox's first process's own status: the command's without an init,
                // and what killed an init that could not report.
                let raw = match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => (code & 0xff) << 8,
                    (None, Some(sig)) => sig | if status.dumped() { 0x80 } else { 0 },
                    (None, None) => 0,
                };
                record_exit(&self.dir, ExitStatus::from_raw(raw));
            }
        }
        self.pidfd = None;
        // The init writes the status before it exits; the handle of a spawning process that
        // reaps the sandbox writes it right after its wait returns.
        for _ in 0..50 {
            self.settle();
            if self.state.exit.is_some() {
                break;
            }
            if self.state.owner.is_none_or(|o| !o.is_alive()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.state.exit.is_none() && self.killed.load(Ordering::Relaxed) {
            // Killed through this handle, before anyone could report: killed, as
            // `docker kill` reports it (128 + 9).
            record_exit(&self.dir, ExitStatus::from_raw(libc::SIGKILL));
            self.settle();
        }
        Ok(Some(self.state.exit))
    }

    fn require_group(&self) -> Result<&palisade_cgroup::Cgroup> {
        self.cgroup.as_ref().ok_or(Error::NoCgroup)
    }

    /// Its resource usage now, read from its cgroup.
    pub fn stats(&self) -> Result<palisade_cgroup::Stats> {
        Ok(self.require_group()?.stats()?)
    }

    /// Freezes every process of the sandbox (see [`Child::freeze`](crate::Child::freeze)).
    pub fn freeze(&self) -> Result<()> {
        Ok(self.require_group()?.freeze()?)
    }

    /// Thaws a frozen sandbox.
    pub fn thaw(&self) -> Result<()> {
        Ok(self.require_group()?.thaw()?)
    }

    /// The record of what an exec takes from the sandbox (`exec.json`), and its path.
    pub(crate) fn exec_record(&self) -> Result<(PathBuf, Vec<u8>)> {
        let path = self.dir.join(EXEC);
        let bytes = std::fs::read(&path).map_err(io_error(&path, "read"))?;
        Ok((path, bytes))
    }

    /// The sandbox's cgroup, if it has one (opened from its recorded directories): its
    /// processes, events and files, e.g. for `ps` or a freezer's state.
    pub fn cgroup(&self) -> Option<&palisade_cgroup::Cgroup> {
        self.cgroup.as_ref()
    }

    pub(crate) fn group(&self) -> Option<&palisade_cgroup::Cgroup> {
        self.cgroup.as_ref()
    }

    /// Changes the limits of a running sandbox (`docker update`, OCI's `update`): all are
    /// checked before the first is written to its cgroup ([`Cgroup::apply`](palisade_cgroup::Cgroup::apply)).
    /// [`Error::NoCgroup`] without one.
    pub fn update(&self, resources: &[palisade_cgroup::Resource]) -> Result<()> {
        Ok(self.require_group()?.apply(resources)?)
    }

    pub(crate) fn is_running(&self) -> bool {
        self.pidfd.as_ref().is_some_and(|fd| !exited(fd.as_fd()))
    }

    /// Removes a stopped sandbox: its cgroup, what its network left (leases and tables of dead
    /// sandboxes, [`palisade_netns::gc`]), and its record. [`Error::StillRunning`] while it
    /// runs: [`kill`](Self::kill) it first, or use [`force_delete`](Self::force_delete).
    pub fn delete(mut self) -> Result<()> {
        let Some(_lock) = lock_dir_soon(&self.dir)? else {
            return Err(Error::StillRunning {
                id: self.state.id.clone(),
            });
        };
        if self.status() != Status::Stopped {
            return Err(Error::StillRunning {
                id: self.state.id.clone(),
            });
        }
        self.teardown()
    }

    /// Kills the sandbox (SIGKILL to its first process and to its cgroup), waits for it, and
    /// deletes it.
    pub fn force_delete(mut self) -> Result<()> {
        if let Some(g) = &self.cgroup {
            let _ = g.kill();
        }
        if self.is_running() {
            let _ = self.kill();
            self.wait()?;
        }
        self.delete()
    }

    fn teardown(&mut self) -> Result<()> {
        if let Some(g) = self.cgroup.take() {
            // Empty now that its first process is gone (its init took the rest with it; without
            // one, whatever is left goes first).
            g.delete()?;
        }
        // The sandbox's veth went with its namespace; its lease, its port guard and its NAT
        // table are a dead owner's now, collected with any others.
        if let Some(dir) = &self.state.network_state {
            palisade_netns::gc_dir(dir)?;
        }
        std::fs::remove_dir_all(&self.dir).map_err(io_error(&self.dir, "remove"))?;
        let _ = &self.root;
        Ok(())
    }
}

/// The state of a directory a creator left without `state.json`.
fn stale_state(id: &str) -> State {
    State {
        id: id.to_owned(),
        status: Status::Stopped,
        process: ProcessId {
            pid: 0,
            start_time: 0,
        },
        command_pid: 0,
        owner: None,
        created: 0,
        rootfs: String::new(),
        cgroup: Vec::new(),
        network: None,
        network_state: None,
        ports: Vec::new(),
        annotations: BTreeMap::new(),
        exit: None,
    }
}

/// Every sandbox under `root`, by name; those still being made are left out.
pub(crate) fn list(root: &Path) -> Result<Vec<Handle>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::State {
                what: "list",
                path: root.to_owned(),
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            // A directory still being made is its maker's (named in it by pid, and locked once
            // made); one whose maker is gone was left half-made, and nobody else will name it.
            if let Some(rest) = n.strip_prefix(NEW) {
                let maker = rest
                    .split('.')
                    .nth_back(1)
                    .and_then(|p| p.parse::<u32>().ok());
                let dir = root.join(n);
                let gone = maker.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if gone {
                    if let Ok(Some(_lock)) = lock_dir(&dir, false) {
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
            }
            validate_name(n).is_ok()
        })
        .collect();
    names.sort();
    let mut handles = Vec::with_capacity(names.len());
    for name in names {
        match Handle::open(root, &name) {
            Ok(h) => handles.push(h),
            // Removed or being made meanwhile.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(handles)
}

/// The pid of a child of `parent`: the command of an init, whose only child it is while it
/// waits to start or runs.
///
/// The init has one thread, so its thread's `children` file lists every child it has
/// (`proc(5)`, `/proc/<pid>/task/<tid>/children`): one read, whatever runs on the host. Where
/// the kernel lacks that file (`CONFIG_PROC_CHILDREN`), each process's parent is read from its
/// `stat` (field 4).
pub(crate) fn child_of(parent: u32) -> Option<u32> {
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
    {
        return children.split_whitespace().next()?.parse().ok();
    }
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may hold spaces and parentheses: the fields follow its last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
    };
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|&pid| parent_of(pid) == Some(parent))
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl crate::Sandbox {
    /// Opens the named sandbox `id` under the default state root ([`default_root`]), from any
    /// process. [`Error::NotFound`] if there is none.
    pub fn open(id: &str) -> Result<Handle> {
        Handle::open(&default_root(), id)
    }

    /// Opens the named sandbox `id` under `root`.
    pub fn open_in(root: impl AsRef<Path>, id: &str) -> Result<Handle> {
        Handle::open(root.as_ref(), id)
    }

    /// Every named sandbox under the default state root, by name, running or not.
    pub fn list() -> Result<Vec<Handle>> {
        list(&default_root())
    }

    /// Every named sandbox under `root`, by name.
    pub fn list_in(root: impl AsRef<Path>) -> Result<Vec<Handle>> {
        list(root.as_ref())
    }
}
