//! Running a further command in a sandbox that runs (`docker exec`): [`Exec`], from
//! [`Child::exec`].
//!
//! The new process joins the sandbox's namespaces with one `setns(2)` on the pidfd of the
//! sandbox's first process (Linux 5.8), which also puts it in the sandbox's root and working
//! directory `/` (joining a mount namespace does, `setns(2)`); its cgroup (`CLONE_INTO_CGROUP`,
//! or the v1 controllers' `cgroup.procs` while it waits); becomes root of the sandbox's user
//! namespace as the sandbox's command did; and takes the command's security plan (user,
//! capabilities, rlimits, `no_new_privs`, the seccomp filter) and environment, with the edits
//! given here.
//!
//! Joining a PID or time namespace takes effect only for children (`setns(2)`): the cloned
//! process then forks once more, as a sibling (`CLONE_PARENT`), so the command is in the
//! sandbox's PID namespace and still the caller's child, which waits for it as for any
//! [`Child`]. The cloned process tells the command's pid on a pipe and exits.
//!
//! The child side is typed, errno-free calls on data prepared before the clone, as for
//! [`Sandbox::spawn`](crate::Sandbox::spawn).
//!
//! Unlike a spawn's child, this process is among the sandbox's processes, which already run,
//! while it still holds a copy of the caller's memory (until its `execve(2)`). It makes itself
//! not dumpable first, so that a sandbox process needs `CAP_SYS_PTRACE` over the caller's user
//! namespace to read it: a rootless sandbox never has that, and the default capabilities do not
//! include `CAP_SYS_PTRACE`. A sandbox given `CAP_SYS_PTRACE` outside a user namespace of its
//! own could attach to an exec in that window.
//!
//! An exec only ever narrows the sandbox command's privileges: another user, fewer
//! capabilities, supplementary groups the command could give itself, lower resource limits,
//! `no_new_privs` ([`Exec::user`], [`Exec::capabilities`], [`Exec::groups`], [`Exec::rlimit`],
//! [`Exec::no_new_privs`]); anything more is refused with [`Error::InvalidValue`] before the
//! clone. Of the caller's descriptors only those named with [`Exec::inherit_fd`] cross, and
//! [`Exec::program_fd`] runs a sealed copy of a program of the caller's file system.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use palisade_ns::child as process;
use palisade_ns::{clone3, CloneArgs, Forked, Namespace, NsId, SetGroups};
use rustix::thread::ThreadNameSpaceType;

use super::exec::exec;
use super::plan::{cstring, dup_above, CStringArray, Command, ExecPlan};
use super::step::{finish, ChildFailure, ChildFds, Exit, InStep, Step};
use super::{control_pair, lift, pipe_above, read_child_report, receive_handover, resolve_stdio};
use crate::entry::Entry;
use crate::error::{ChildStep, Context, Error, Result};
use crate::security::{Rlimit, SecurityPlan};
use crate::terminal::TerminalSize;
use crate::{Child, Output, Stdio};

/// Every namespace kind, in the order `setns(2)` would want them one by one (the user namespace
/// first); with a pidfd they are joined at once.
const KINDS: [Namespace; 8] = [
    Namespace::USER,
    Namespace::MOUNT,
    Namespace::UTS,
    Namespace::IPC,
    Namespace::NET,
    Namespace::PID,
    Namespace::CGROUP,
    Namespace::TIME,
];

/// A command to run in a running sandbox, like [`std::process::Command`]; from
/// [`Child::exec`].
#[derive(Debug)]
pub struct Exec<'a> {
    sandbox: &'a dyn Target,
    program: OsString,
    args: Vec<OsString>,
    /// `argv[0]` instead of the program's name.
    arg0: Option<OsString>,
    env: BTreeMap<OsString, Option<OsString>>,
    /// Start from an empty environment instead of the sandbox command's.
    env_clear: bool,
    cwd: Option<OsString>,
    stdio: [Stdio; 3],
    tty: Option<TerminalSize>,
    /// `(uid, gid)` instead of the sandbox command's.
    user: Option<(u32, u32)>,
    /// The exact capabilities, at most the sandbox command's.
    caps: Option<crate::Capabilities>,
    /// Supplementary groups instead of those the user switch leaves.
    groups: Option<Vec<u32>>,
    /// Limits over the sandbox command's, one per resource.
    rlimits: Vec<Rlimit>,
    /// Set `no_new_privs` even if the sandbox's command runs without it.
    no_new_privs: bool,
    /// The caller's descriptors to pass, by the number they get.
    fds: BTreeMap<RawFd, Arc<OwnedFd>>,
    /// The program as a file of the caller's, executed instead of a path in the sandbox.
    program_fd: Option<Arc<OwnedFd>>,
}

impl crate::Handle {
    /// Starts describing a command to run in the running sandbox, under the sandbox command's
    /// privileges, filter and environment as its creator recorded them, as [`Child::exec`]
    /// does. [`Error::NotRunning`] at the spawn once the sandbox has stopped.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Exec<'_> {
        Exec::new(self, program.as_ref())
    }
}

impl Child {
    /// A command to run in this sandbox while it runs (`docker exec`): `program` (looked up in
    /// the sandbox command's `PATH` unless it names a path), in the sandbox's namespaces, cgroup
    /// and root, under the sandbox command's privileges and filter and with its environment.
    /// See [`Exec`].
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Exec<'_> {
        Exec::new(self, program.as_ref())
    }
}

/// A running sandbox a command can join: a [`Child`], or a [`Handle`](crate::Handle) from any
/// process.
pub(crate) trait Target: std::fmt::Debug + Sync {
    /// What the exec takes from the sandbox.
    fn entry(&self) -> Result<Arc<Entry>>;
    /// The pid of its first process.
    fn pid(&self) -> u32;
    /// A pidfd of its first process, while it runs.
    fn pidfd(&self) -> Option<BorrowedFd<'_>>;
    /// Whether its first process runs.
    fn is_running(&self) -> bool;
    /// Its cgroup.
    fn group(&self) -> Option<&palisade_cgroup::Cgroup>;
}

impl Target for Child {
    fn entry(&self) -> Result<Arc<Entry>> {
        Child::entry(self).ok_or_else(|| Error::InvalidValue {
            what: "exec",
            value: format!("pid {}", self.id()),
            reason: "is the handle of an exec, not of a sandbox: exec from the sandbox's handle",
        })
    }
    fn pid(&self) -> u32 {
        self.id()
    }
    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        Some(Child::pidfd(self))
    }
    fn is_running(&self) -> bool {
        Child::is_running(self)
    }
    fn group(&self) -> Option<&palisade_cgroup::Cgroup> {
        Child::group(self)
    }
}

impl Target for crate::Handle {
    fn entry(&self) -> Result<Arc<Entry>> {
        // Read for each exec: it is small, and the sandbox's record is what its creator wrote.
        let (path, bytes) = self.exec_record()?;
        let entry = Entry::decode(&bytes).map_err(|e| Error::State {
            what: "decode",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        Ok(Arc::new(entry))
    }
    fn pid(&self) -> u32 {
        crate::Handle::pid(self)
    }
    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        crate::Handle::pidfd(self)
    }
    fn is_running(&self) -> bool {
        crate::Handle::is_running(self)
    }
    fn group(&self) -> Option<&palisade_cgroup::Cgroup> {
        crate::Handle::group(self)
    }
}

impl<'a> Exec<'a> {
    pub(crate) fn new(sandbox: &'a dyn Target, program: &OsStr) -> Exec<'a> {
        Exec {
            sandbox,
            program: program.to_owned(),
            args: Vec::new(),
            arg0: None,
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            stdio: [Stdio::inherit(), Stdio::inherit(), Stdio::inherit()],
            tty: None,
            user: None,
            caps: None,
            groups: None,
            rlimits: Vec::new(),
            no_new_privs: false,
            fds: BTreeMap::new(),
            program_fd: None,
        }
    }
}

impl Exec<'_> {
    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets `argv[0]`, which is the program's name (as given) unless set here, as
    /// [`CommandExt::arg0`](std::os::unix::process::CommandExt::arg0) does.
    pub fn arg0(&mut self, arg0: impl AsRef<OsStr>) -> &mut Self {
        self.arg0 = Some(arg0.as_ref().to_owned());
        self
    }

    /// Starts from an empty environment instead of the sandbox command's (not even `PATH`,
    /// so that a program without a `/` is looked up in `/usr/local/bin:/usr/bin:/bin`), and
    /// forgets the variables set before, as
    /// [`Command::env_clear`](std::process::Command::env_clear) does: those set with
    /// [`env`](Self::env) afterwards make all of it.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Sets an environment variable, over the sandbox command's environment.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .insert(key.as_ref().to_owned(), Some(value.as_ref().to_owned()));
        self
    }

    /// Runs the command as `uid`/`gid` of the sandbox instead of the sandbox command's user
    /// (`docker exec --user`). A non-root user gets no capabilities unless
    /// [`capabilities`](Self::capabilities) names some; root keeps the sandbox command's.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.user = Some((uid, gid));
        self
    }

    /// Gives the command exactly `caps`, which must be among the sandbox command's (its
    /// bounding set); more is refused with [`Error::InvalidValue`] at the spawn. The sandbox's
    /// seccomp filter applies unchanged.
    pub fn capabilities(&mut self, caps: crate::Capabilities) -> &mut Self {
        self.caps = Some(caps);
        self
    }

    /// Sets the command's supplementary groups (`setgroups(2)`), instead of the sandbox
    /// command's (or none, after a [`user`](Self::user) switch). Only groups the command could
    /// hold itself: refused with [`Error::InvalidValue`] at the spawn unless the sandbox's
    /// capabilities include `CAP_SETGID` (with which its command may take any group of its user
    /// namespace) or they are among the command's own groups and its gid, and in a user
    /// namespace that denies `setgroups(2)` (`user_namespaces(7)`).
    pub fn groups(&mut self, groups: impl IntoIterator<Item = u32>) -> &mut Self {
        self.groups = Some(groups.into_iter().collect());
        self
    }

    /// Sets a resource limit (`setrlimit(2)`) for the command, replacing the sandbox command's
    /// for that resource; the last one given per resource counts. It may only lower what the
    /// sandbox holds: a hard limit above the current hard limit of the sandbox's first process
    /// (`prlimit(2)`) is refused with [`Error::InvalidValue`] at the spawn, as is a soft limit
    /// above its hard one.
    pub fn rlimit(&mut self, limit: Rlimit) -> &mut Self {
        self.rlimits.retain(|l| l.resource != limit.resource);
        self.rlimits.push(limit);
        self
    }

    /// With `true`, the command runs with `no_new_privs` (`prctl(2)` `PR_SET_NO_NEW_PRIVS`:
    /// `execve(2)` grants no set-user-ID, set-group-ID or file capabilities) even if the
    /// sandbox's command runs without it. `false` (the default) keeps the sandbox command's
    /// setting: an exec cannot lift it.
    pub fn no_new_privs(&mut self, on: bool) -> &mut Self {
        self.no_new_privs = on;
        self
    }

    /// Passes the caller's descriptor `fd` to the command as number `child_fd` (3 or above, at
    /// most 65536), as [`SandboxBuilder::inherit_fd`](crate::SandboxBuilder::inherit_fd) does
    /// for the sandbox's command (runc's `exec --preserve-fds`). Nothing else of the caller's
    /// crosses: every other descriptor is closed in the cloned process before it joins the
    /// sandbox. Passing a second descriptor as the same number replaces the first.
    pub fn inherit_fd(&mut self, child_fd: RawFd, fd: impl Into<OwnedFd>) -> &mut Self {
        self.fds.insert(child_fd, Arc::new(fd.into()));
        self
    }

    /// Executes the file `fd` refers to, opened by the caller (in the caller's mount namespace,
    /// `O_RDONLY` or `O_PATH`), instead of looking the program up in the sandbox; the name
    /// given to [`exec`](Child::exec) stays `argv[0]`. Everything else is as for any exec: the
    /// sandbox's namespaces, cgroup and root, the command's privileges and filter, not dumpable
    /// until the program runs.
    ///
    /// The file is copied, before the clone, into a sealed memory file (`memfd_create(2)`,
    /// "File sealing"), and the copy is executed (`execveat(2)` with `AT_EMPTY_PATH`). The
    /// copy is what makes this safe: a process of the sandbox that may trace the exec reaches
    /// its program through `/proc/<pid>/exe` (`proc(5)`), and finds a sealed copy there, never
    /// the caller's file, which it could reopen for writing (runc's CVE-2019-5736). The copy
    /// carries no set-user-ID or set-group-ID bit and no file capability: it grants nothing
    /// the command's privileges do not.
    ///
    /// The file must be a regular file the caller may execute (`access(2)` `X_OK`), not on a
    /// `noexec` mount, and an executable that needs nothing of the caller's file system: the
    /// kernel looks up an ELF interpreter, and the dynamic loader the libraries, in the
    /// sandbox's root, so a static executable is the one that runs anywhere. A script (`#!`)
    /// is refused with [`Error::InvalidValue`] at the spawn: executed by descriptor, its
    /// interpreter would be the sandbox's, reading the script through `/dev/fd/<n>`, a
    /// descriptor the exec would have to leave open in the sandbox (`execveat(2)`, `ENOENT`
    /// otherwise).
    pub fn program_fd(&mut self, fd: impl Into<OwnedFd>) -> &mut Self {
        self.program_fd = Some(Arc::new(fd.into()));
        self
    }

    /// Removes a variable of the sandbox command's environment.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.insert(key.as_ref().to_owned(), None);
        self
    }

    /// The working directory inside the sandbox (default: the sandbox command's, or `/`),
    /// resolved in its root.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().as_os_str().to_owned());
        self
    }

    /// Where the command's standard input comes from (inherited by default).
    pub fn stdin(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdio[0] = stdio.into();
        self
    }

    /// Where the command's standard output goes.
    pub fn stdout(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdio[1] = stdio.into();
        self
    }

    /// Where the command's standard error goes.
    pub fn stderr(&mut self, stdio: impl Into<Stdio>) -> &mut Self {
        self.stdio[2] = stdio.into();
        self
    }

    /// Gives the command a pseudo-terminal of the sandbox's devpts, as
    /// [`SandboxBuilder::tty_size`](crate::SandboxBuilder::tty_size) does (`docker exec -t`);
    /// take its master with [`Child::take_pty`].
    pub fn tty_size(&mut self, size: TerminalSize) -> &mut Self {
        self.tty = Some(size);
        self
    }

    /// Runs the command with stdout and stderr captured (and stdin from `/dev/null` unless set),
    /// waits for it, and collects its output.
    pub fn output(&mut self) -> Result<Output> {
        if self.stdio[0].is_inherit() {
            self.stdio[0] = Stdio::null();
        }
        self.stdio[1] = Stdio::piped();
        self.stdio[2] = Stdio::piped();
        self.spawn()?.wait_with_output()
    }

    /// Starts the command in the sandbox. Returns once it has executed the program, or with
    /// [`Error::Child`] naming the step that failed, [`Error::NotRunning`] if the sandbox has
    /// ended, or [`Error::InvalidValue`] for bad input.
    pub fn spawn(&self) -> Result<Child> {
        let sandbox = self.sandbox;
        let entry = sandbox.entry()?;
        let not_running = || Error::NotRunning {
            pid: sandbox.pid() as i32,
        };
        let target_fd = match sandbox.pidfd() {
            Some(fd) if sandbox.is_running() => fd,
            _ => return Err(not_running()),
        };
        // 1. Before the clone: which namespaces to join, the command and its privileges, its
        //    stdio and pipes.
        let join = namespaces_to_join(sandbox.pid() as i32)?;
        let security =
            entry
                .security
                .narrowed(self.user, self.caps, join.contains(Namespace::USER))?;
        let security = self.narrow_further(security, &entry, sandbox.pid())?;
        let mut env = if self.env_clear {
            BTreeMap::new()
        } else {
            entry.env.clone()
        };
        for (k, v) in &self.env {
            match v {
                Some(v) => env.insert(k.clone(), v.clone()),
                None => env.remove(k),
            };
        }
        let mut plan = ExecPlan::new(&self.program, &self.args, env)?;
        if let Some(arg0) = &self.arg0 {
            let mut argv = vec![cstring("argument", arg0)?];
            argv.extend(plan.argv.strings().iter().skip(1).cloned());
            plan.argv = CStringArray::new(argv);
        }
        let cwd = match &self.cwd {
            Some(dir) => cstring("working directory", dir)?,
            None => entry.cwd.clone().unwrap_or_else(|| CString::from(c"/")),
        };
        // The same rule as for the sandbox's command: its devpts, and all of the stdio.
        let tty = crate::derive::terminal(
            self.tty,
            entry.own_root,
            self.stdio.iter().all(Stdio::is_inherit),
        )?;
        // Every descriptor the cloned process works with sits above every passed one's number.
        let mut floor = 3;
        for &target in self.fds.keys() {
            if !(3..=MAX_PASSED_FD).contains(&target) {
                return Err(Error::InvalidValue {
                    what: "descriptor number of an exec",
                    value: target.to_string(),
                    reason: "must be 3 or above (0 to 2 are stdio) and at most 65536",
                });
            }
            floor = floor.max(target + 1);
        }
        let passed = self
            .fds
            .iter()
            .map(|(&target, fd)| Ok((above(fd.as_fd(), floor)?, target)))
            .collect::<Result<Vec<(OwnedFd, RawFd)>>>()?;
        let program = self
            .program_fd
            .as_ref()
            .map(|fd| lift(sealed_copy(fd.as_fd(), &self.program)?, floor))
            .transpose()?;
        let stdio = resolve_stdio(&self.stdio, floor)?;
        let group = sandbox.group();
        let into = group.and_then(|g| g.clone_into_fd());
        // It moves itself into the v1 groups (`palisade_cgroup::child::enter_v1`); the unified
        // one it is born in, or moved to from here.
        let v1_tasks = group
            .map(palisade_cgroup::Cgroup::v1_task_files)
            .transpose()?
            .unwrap_or_default();
        let must_attach = group.is_some_and(|g| into.is_none() && g.has_unified());
        let sync = must_attach
            .then(|| pipe_above("create the sync pipe", floor))
            .transpose()?;
        let (err_r, err_w) = pipe_above("create the error pipe", floor)?;
        let (pid_r, pid_w) = pipe_above("create the pid pipe", floor)?;
        let wants_control = tty.is_some() || security.wants_listener();
        let control = wants_control.then(|| control_pair(floor)).transpose()?;
        let target = lift(
            target_fd
                .try_clone_to_owned()
                .map_err(|source| Error::Setup {
                    what: "duplicate the sandbox's pidfd",
                    source,
                })?,
            floor,
        )?;
        let fds = ChildFds {
            err_w: err_w.as_fd(),
            sync_r: sync.as_ref().map(|(r, _)| r.as_fd()),
            status_w: None,
            stdio: [
                stdio[0].child_fd(),
                stdio[1].child_fd(),
                stdio[2].child_fd(),
            ],
            control: control.as_ref().map(|(_, c)| c.as_fd()),
            death: None,
            keep: &[],
            parent_pidfd: None,
            parent_pid: std::process::id() as libc::pid_t,
            start: None,
            cgroup_tasks: &v1_tasks,
            pid_w: None,
        };
        let mut keep: Vec<RawFd> = [
            0,
            1,
            2,
            err_w.as_raw_fd(),
            pid_w.as_raw_fd(),
            target.as_raw_fd(),
        ]
        .into_iter()
        .chain(
            [fds.sync_r, fds.control]
                .into_iter()
                .chain(fds.stdio)
                .flatten()
                .map(|fd| fd.as_raw_fd()),
        )
        .chain(passed.iter().map(|(fd, _)| fd.as_raw_fd()))
        .chain(program.iter().map(AsRawFd::as_raw_fd))
        .chain(v1_tasks.iter().map(AsRawFd::as_raw_fd))
        .collect();
        keep.sort_unstable();
        keep.dedup();
        let fds = ChildFds { keep: &keep, ..fds };
        let fork = join.intersects(Namespace::PID | Namespace::TIME);
        let ctx = EnterCtx {
            fds: &fds,
            command: Command {
                exec: &plan,
                security: &security,
                tty,
                program: program.as_ref().map(AsFd::as_fd),
            },
            target: target.as_fd(),
            join: ThreadNameSpaceType::from_bits_retain(join.bits() as u32),
            become_root: entry.become_root,
            cwd: &cwd,
            pid_w: pid_w.as_fd(),
            fork,
            die_with_parent: entry.die_with_parent,
            passed: &passed,
        };

        // 2. The clone (fork-like: the command may fork once more, which copies it anyway).
        let mut args = CloneArgs::new(Namespace::empty()).clear_signal_handlers(true);
        if let Some(dir) = into {
            args = args.into_cgroup(dir);
        }
        // SAFETY: in the child, `enter` makes typed, errno-free calls only on data prepared
        // above, and ends in execve(2) or exit; it never returns.
        let cloned = match unsafe { clone3(&args) }? {
            Forked::Child => enter(&ctx),
            Forked::Parent(cloned) => cloned,
        };
        drop((err_w, pid_w, target, passed, program));
        let [stdin, stdout, stderr] = stdio;
        drop((stdin.child, stdout.child, stderr.child));
        let sync_w = sync.map(|(_child_end, w)| w);
        let control = control.map(|(parent, _child_end)| parent);
        let (first_pid, first_pidfd) = cloned.into_parts();

        // 3. The command's process: the cloned one, or its sibling in the sandbox's PID
        //    namespace, whose pid the cloned one wrote before it exited.
        let (pid, pidfd) = if fork {
            let mut buf = [0u8; 4];
            let read = File::from(pid_r).read_exact(&mut buf);
            // The cloned process has exited (or is about to): reap it.
            let _ = rustix::process::waitid(
                rustix::process::WaitId::PidFd(first_pidfd.as_fd()),
                rustix::process::WaitIdOptions::EXITED,
            );
            if read.is_err() {
                // It failed before the fork: its report says why.
                return Err(self.report(read_child_report(File::from(err_r))?));
            }
            let pid = i32::from_ne_bytes(buf);
            (pid, palisade_ns::pidfd_open(pid)?)
        } else {
            drop(pid_r);
            (first_pid, first_pidfd)
        };
        let mut handle = Child::new(
            pid,
            pidfd,
            None,
            [stdin.parent, stdout.parent, stderr.parent],
        );

        // 4. While it waits: the v1 controllers' groups; then release it.
        if let Some(g) = group.filter(|_| must_attach) {
            g.attach_unified(pid)?;
        }
        if let Some(sync_w) = sync_w {
            File::from(sync_w)
                .write_all(&[1])
                .map_err(|source| Error::Setup {
                    what: "release the exec after attaching cgroups",
                    source,
                })?;
        }

        // 5. Its report, then what it handed over.
        if let Some(report) = read_child_report(File::from(err_r))? {
            handle.wait()?;
            return Err(self.report(Some(report)));
        }
        if let Some(control) = control {
            let listener = security.wants_listener();
            receive_handover(&mut handle, &control, tty.is_some(), listener)?;
        }
        Ok(handle)
    }

    /// `plan` (the command's, narrowed to this exec's user and capabilities) with this exec's
    /// groups, limits and `no_new_privs`, each checked to give nothing the sandbox's command
    /// could not take itself: see [`groups`](Self::groups), [`rlimit`](Self::rlimit).
    fn narrow_further(&self, plan: SecurityPlan, entry: &Entry, pid: u32) -> Result<SecurityPlan> {
        let mut plan = plan;
        if let Some(groups) = &self.groups {
            if matches!(entry.become_root, Some((_, _, false))) {
                return Err(Error::InvalidValue {
                    what: "supplementary groups of an exec",
                    value: format!("{groups:?}"),
                    reason: "the sandbox's user namespace denies setgroups(2)",
                });
            }
            plan = plan.with_groups(groups, &entry.security)?;
        }
        for limit in &self.rlimits {
            check_rlimit(limit, entry.security.rlimit(limit.resource), pid)?;
            plan = plan.with_rlimit(*limit)?;
        }
        if self.no_new_privs {
            plan = plan.with_no_new_privs();
        }
        Ok(plan)
    }

    /// The error of a child's report (or of a cloned process that ended without one).
    fn report(&self, report: Option<(ChildStep, u32, i32)>) -> Error {
        match report {
            Some((step, index, errno)) => Error::from_child(
                step,
                Context {
                    subject: match step {
                        ChildStep::Exec => Some(self.program.to_string_lossy().into_owned()),
                        ChildStep::Chdir => self.cwd.as_ref().map(|d| d.to_string_lossy().into()),
                        ChildStep::PassFds => self
                            .fds
                            .keys()
                            .nth(index as usize)
                            .map(|n| format!("descriptor {n}")),
                        _ => None,
                    },
                },
                errno,
            ),
            None => Error::NotRunning {
                pid: self.sandbox.pid() as i32,
            },
        }
    }
}

/// Refuses a limit that would raise the hard limit the sandbox's command holds for its
/// resource: the one its plan sets (`planned`), or else the one it inherited from the sandbox's
/// first process (`pid`), read with `prlimit(2)`.
fn check_rlimit(limit: &Rlimit, planned: Option<Rlimit>, pid: u32) -> Result<()> {
    limit.validate()?;
    let ceiling = match planned {
        Some(planned) => planned.hard,
        None => {
            let mut now = libc::rlimit64 {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: prlimit64(2) with no new limit only writes the current one into `now`.
            let ret = unsafe {
                libc::prlimit64(
                    pid as libc::pid_t,
                    // `as _`: the resource is an enum in glibc and an `int` in musl.
                    limit.resource.as_raw() as _,
                    std::ptr::null(),
                    &mut now,
                )
            };
            if ret != 0 {
                return Err(Error::Process {
                    call: "prlimit",
                    pid: pid as i32,
                    source: io::Error::last_os_error(),
                });
            }
            now.rlim_max
        }
    };
    if ceiling != Rlimit::INFINITY && limit.hard > ceiling {
        return Err(Error::InvalidValue {
            what: "rlimit of an exec",
            value: limit.to_string(),
            reason: "raises the sandbox's hard limit for the resource",
        });
    }
    Ok(())
}

/// The namespaces of the process `pid` that are not the caller's.
fn namespaces_to_join(pid: i32) -> Result<Namespace> {
    let mut join = Namespace::empty();
    for kind in KINDS {
        let theirs = NsId::of(pid, kind).map_err(|_| Error::NotRunning { pid })?;
        let ours = NsId::of(std::process::id() as i32, kind)?;
        if theirs != ours {
            join |= kind;
        }
    }
    Ok(join)
}

/// What the cloned process needs, prepared by [`Exec::spawn`] in its frame.
struct EnterCtx<'a> {
    fds: &'a ChildFds<'a>,
    command: Command<'a>,
    /// A pidfd of the sandbox's first process, whose namespaces are joined.
    target: BorrowedFd<'a>,
    join: ThreadNameSpaceType,
    become_root: Option<(bool, bool, bool)>,
    cwd: &'a CString,
    /// Where the cloned process writes the command's pid when it forks it.
    pid_w: BorrowedFd<'a>,
    fork: bool,
    die_with_parent: bool,
    /// The caller's descriptors for the command, each above every number it is placed on.
    passed: &'a [(OwnedFd, RawFd)],
}

/// The cloned process: joins the sandbox and executes the command, or forks it in the
/// sandbox's PID namespace; reports a failure and exits otherwise.
fn enter(ctx: &EnterCtx<'_>) -> ! {
    let Err(exit) = enter_steps(ctx);
    finish(ctx.fds, exit)
}

fn enter_steps(ctx: &EnterCtx<'_>) -> Step<Infallible> {
    // As the sandbox's own first process does (see `child::run`).
    process::close_all_but(ctx.fds.keep);
    super::child::enter_v1_groups(ctx.fds)?;
    // This process is a copy of the caller's memory until it executes the command, and from the
    // next step it is among the sandbox's processes, which run already: not dumpable, so that
    // none of them can read it (`ptrace(2)`, `/proc/<pid>/mem`) without `CAP_SYS_PTRACE` over
    // the caller's user namespace. `execve(2)` makes the command dumpable again.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .in_step(ChildStep::Enter)?;
    // In a user namespace that denies setgroups(2), the caller's supplementary groups could not
    // be dropped once inside: they go first, while they may (a caller without CAP_SETGID keeps
    // its own, as with any sandbox).
    if matches!(ctx.become_root, Some((_, _, false))) {
        match rustix::thread::set_thread_groups(&[]) {
            Ok(()) | Err(rustix::io::Errno::PERM) => {}
            Err(e) => return Err(ChildFailure::new(ChildStep::SetGroups, e).into()),
        }
    }
    // Every namespace at once; the mount namespace's root becomes this process's root and
    // working directory.
    rustix::thread::move_into_thread_name_spaces(ctx.target, ctx.join).in_step(ChildStep::Enter)?;
    // SAFETY: the descriptor is this process's copy, used no more.
    unsafe { process::close_raw(ctx.target.as_raw_fd()) };
    if let Some((root_uid, root_gid, setgroups)) = ctx.become_root {
        if root_gid {
            if setgroups {
                rustix::thread::set_thread_groups(&[]).in_step(ChildStep::SetGroups)?;
            }
            let root = rustix::process::Gid::ROOT;
            rustix::thread::set_thread_res_gid(root, root, root).in_step(ChildStep::SetGid)?;
        }
        if root_uid {
            let root = rustix::process::Uid::ROOT;
            rustix::thread::set_thread_res_uid(root, root, root).in_step(ChildStep::SetUid)?;
        }
    }
    if ctx.fork {
        // SAFETY: the copy only makes typed, errno-free calls and executes or exits.
        if let Some(pid) = unsafe { process::fork_sibling() }.in_step(ChildStep::InitFork)? {
            let written = rustix::io::write(ctx.pid_w, &pid.to_ne_bytes());
            return Err(match written {
                Ok(4) => Exit::Quietly(0),
                Ok(_) => Exit::Quietly(1),
                Err(e) => super::step::ChildFailure::new(ChildStep::InitFork, e).into(),
            });
        }
    }
    // SAFETY: this process's copy, used no more.
    unsafe { process::close_raw(ctx.pid_w.as_raw_fd()) };
    if ctx.die_with_parent {
        // The command dies with its caller as the sandbox does (in a sandbox with an init, the
        // init's death ends its PID namespace too; without one nothing else would). The caller
        // is alive: it waits for this process's report.
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .in_step(ChildStep::DeathSignal)?;
    }
    if let Some(sync) = ctx.fds.sync_r {
        let mut byte = [0u8; 1];
        loop {
            match rustix::io::read(sync, &mut byte) {
                Ok(1) => break,
                Err(rustix::io::Errno::INTR) => {}
                _ => return Err(Exit::Quietly(1)),
            }
        }
    }
    for (target, fd) in ctx.fds.stdio.iter().enumerate() {
        if let Some(fd) = fd {
            process::install_fd(*fd, target as RawFd).in_step(ChildStep::Stdio)?;
        }
    }
    // Every source sits above every target (the parent saw to it): no placement overwrites a
    // descriptor still to be placed. The sources are close-on-exec and go with the exec.
    for (i, (source, target)) in ctx.passed.iter().enumerate() {
        process::install_fd(source.as_fd(), *target)
            .map_err(|e| ChildFailure::at(ChildStep::PassFds, i as u32, e))?;
    }
    rustix::process::chdir(ctx.cwd.as_c_str()).in_step(ChildStep::Chdir)?;
    exec(ctx.command, ctx.fds, None)
}

/// The highest descriptor number an exec may pass, as for the sandbox's command.
const MAX_PASSED_FD: RawFd = 65536;

/// A close-on-exec duplicate of `fd` at `floor` or above.
fn above(fd: BorrowedFd<'_>, floor: RawFd) -> Result<OwnedFd> {
    dup_above(fd.as_raw_fd(), floor).map_err(|source| Error::Setup {
        what: "duplicate a descriptor passed to an exec",
        source,
    })
}

/// The program of [`Exec::program_fd`] checked and copied into a sealed, close-on-exec memory
/// file: a regular file the caller may execute, on a mount that allows it, and no script.
fn sealed_copy(fd: BorrowedFd<'_>, program: &OsStr) -> Result<OwnedFd> {
    let name = || program.to_string_lossy().into_owned();
    let io_error = |what: &'static str| {
        move |e: rustix::io::Errno| Error::Setup {
            what,
            source: e.into(),
        }
    };
    let stat = rustix::fs::fstat(fd).map_err(io_error("stat the program descriptor"))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::InvalidValue {
            what: "program descriptor",
            value: name(),
            reason: "is not a regular file",
        });
    }
    // What the kernel would check of the file itself (`execve(2)`, EACCES): execute
    // permission for the caller, and a mount without `noexec`.
    let denied = |reason| Error::InvalidValue {
        what: "program descriptor",
        value: name(),
        reason,
    };
    // SAFETY: faccessat2(2) reads the static empty path and takes integers; it checks the file
    // `fd` refers to (`AT_EMPTY_PATH`) with the effective ids, as `execve(2)` does
    // (`AT_EACCESS`). rustix does not pass `AT_EMPTY_PATH` on.
    let access = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::X_OK,
            libc::AT_EMPTY_PATH | libc::AT_EACCESS,
        )
    };
    if access != 0 {
        return Err(denied("is not executable by the caller (access(2) X_OK)"));
    }
    let vfs = rustix::fs::fstatvfs(fd).map_err(io_error("stat the program's file system"))?;
    if vfs.f_flag.contains(rustix::fs::StatVfsMountFlags::NOEXEC) {
        return Err(denied("is on a noexec mount"));
    }
    // An `O_PATH` descriptor cannot be read: a new open file description of the same file,
    // for reading, through its `/proc/self/fd` link (`proc(5)`).
    let mut source = match rustix::fs::fcntl_getfl(fd) {
        Ok(flags) if !flags.contains(rustix::fs::OFlags::PATH) => {
            File::from(fd.try_clone_to_owned().map_err(|source| Error::Setup {
                what: "duplicate the program descriptor",
                source,
            })?)
        }
        _ => File::from(
            rustix::fs::open(
                format!("/proc/self/fd/{}", fd.as_raw_fd()),
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(io_error("reopen the program descriptor for reading"))?,
        ),
    };
    let mut magic = [0u8; 2];
    let read = std::os::unix::fs::FileExt::read_at(&source, &mut magic, 0);
    if read.as_ref().is_ok_and(|&n| n == 2) && magic == *b"#!" {
        return Err(Error::InvalidValue {
            what: "program descriptor",
            value: name(),
            reason: "is a script (#!): its interpreter would be looked up in the sandbox, and \
                     the script left open there; name its interpreter's executable instead",
        });
    }
    let copy_error = |source| Error::Setup {
        what: "copy the program into a sealed memory file",
        source,
    };
    super::init_image::sealed_copy_of(c"palisade-exec", &mut source).map_err(copy_error)
}

/// What an exec takes from the sandbox of `plan`.
pub(crate) fn entry_of(plan: &super::plan::Plan) -> Entry {
    {
        Entry {
            security: plan.security.clone(),
            env: plan.exec.env.clone(),
            cwd: plan.cwd.clone(),
            die_with_parent: plan.death_signal || plan.death_pipe.is_some(),
            own_root: plan.rootfs.is_some(),
            // In a joined user namespace the child became its root; whether it allows
            // setgroups(2) is its maker's choice, so the groups go before joining it.
            become_root: match (&plan.user, &plan.join_user) {
                (Some(u), _) => Some((u.root_uid, u.root_gid, u.setgroups == SetGroups::Allow)),
                (None, Some(_)) => Some((true, true, false)),
                (None, None) => None,
            },
        }
    }
}
