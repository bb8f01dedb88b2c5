//! Spawning a [`Sandbox`]: the parent side lives here, the child side in [`child`] and [`init`].
//!
//! The parent creates the pipes and a stack for the child, clones the child into its namespaces
//! (`clone3(2)` with `CLONE_VM`, `CLONE_PIDFD` and `CLONE_CLEAR_SIGHAND`), writes the user
//! namespace id maps while the child waits, releases it, and then blocks on a close-on-exec error
//! pipe: end-of-file means the `execve(2)`s succeeded (the command's and, with an init, the init
//! program's), eight bytes are a `(step, errno)` report from the child.
//!
//! With `CLONE_VM` the child runs in the parent's memory on its own stack, so the clone copies no
//! page tables and costs the same from a small program as from one with gigabytes resident (the
//! reason `posix_spawn(3)` uses `vfork`). It does so only until it executes: nothing of the
//! sandbox's own runs before that, and the init is a program of its own ([`init`]). Where that
//! path is not available (architectures other than x86-64, kernels without `clone3(2)`) the child
//! is a fork-like copy instead; the child side is written to be correct either way.

pub(crate) mod child;
mod control;
pub(crate) mod enter;
mod exec;
mod init;
pub(crate) mod init_image;
pub(crate) mod plan;
mod step;

use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use palisade_ns::{
    clone3, clone3_with_stack, pidfd_open, ChildStack, CloneArgs, ClonedChild, Forked, Namespace,
    SetGroups, CLONE3_WITH_STACK,
};

use self::plan::{CgroupPlan, NetPlan, Plan, UserPlan};
use self::step::{ChildCtx, ChildFailure, ChildFds};
use crate::error::{ChildStep, Context, Error, Result};
use crate::process::NetHandle;
use crate::state::{ProcessId, Record, Reservation, State, Status};
use crate::stdio::{pipe, Resolved};
use crate::{Child, Sandbox};
use palisade_cgroup::Cgroup;
use palisade_netns::forward::{BoundPort, Target};
use palisade_netns::{Forwarder, ForwarderLimits, PreparedBridge};
use palisade_seccomp::notify::Listener;
use std::path::Path;

/// The network, made ready before the clone.
enum PreparedNet {
    Bridge(PreparedBridge),
    Forward(Vec<BoundPort>, ForwarderLimits),
}

impl Sandbox {
    /// Starts one sandboxed process from this recipe.
    ///
    /// Returns once the program has been executed inside the sandbox, or with [`Error::Child`]
    /// naming the step that failed in the child (missing program, bad working directory, …).
    pub fn spawn(&self) -> Result<Child> {
        self.launch(false)
    }

    /// Creates the sandbox without starting its command (OCI's `create`): everything up to the
    /// command's `execve(2)` is done — namespaces, cgroup, network, root, terminal — and the
    /// command waits until [`Child::start`] or, for a [named](crate::SandboxBuilder::name)
    /// sandbox, [`Handle::start`](crate::Handle::start) from any process releases it (one byte
    /// on the `start` FIFO, as runc's exec FIFO). Its pid is known meanwhile
    /// ([`Child::command_id`]). Killing a created sandbox ends it as killing a running one does.
    ///
    /// Failures up to the wait are returned here; the command's own last steps (its
    /// privileges, its filter, the `execve(2)`) come after the start: [`Child::start`] reports
    /// their failure, a start from another process sees the command exit with status 127.
    pub fn create(&self) -> Result<Child> {
        if self.plan.security.wants_listener() {
            return Err(Error::InvalidValue {
                what: "create",
                value: "a seccomp profile with user-notification rules".to_owned(),
                reason: "its listener exists only once the command is started: spawn instead",
            });
        }
        self.launch(true)
    }

    /// The spawn, or with `create` the spawn up to the command's start gate.
    fn launch(&self, create: bool) -> Result<Child> {
        // The wall-clock limit counts from here (see `SandboxBuilder::timeout`).
        let deadline = self
            .timeout
            .and_then(|limit| std::time::Instant::now().checked_add(limit));
        let plan = &self.plan;
        // 0. A named sandbox takes its name first: of concurrent spawns with one name, one
        //    goes on.
        let reservation = self
            .identity
            .as_ref()
            .map(|i| Reservation::take(&i.root, &i.id, create))
            .transpose()?;
        // 1. Before the clone: stdio, the cgroup (removed again on any later failure), the
        //    network's host side (a taken port fails here, before anything exists), and the
        //    descriptors the child gets.
        let stdio = resolve_stdio(&self.stdio, plan.fd_floor)?;
        let group = self.cgroup.as_ref().map(CgroupPlan::create).transpose()?;
        let into = self
            .cgroup
            .as_ref()
            .filter(|c| c.clone_into)
            .and(group.as_ref())
            .and_then(|g| g.clone_into_fd());
        // The v1 groups the child moves itself into, first thing: cheaper than moving it from
        // here (see `palisade_cgroup::child::enter_v1`).
        let v1_tasks = group
            .as_ref()
            .map(Cgroup::v1_task_files)
            .transpose()?
            .unwrap_or_default();
        let net = self.bind_network()?;
        // The child waits on the sync pipe while the parent finishes what only it can do: write
        // the id maps, attach it to the unified group when `CLONE_INTO_CGROUP` did not, attach
        // it to its bridge.
        let must_attach = group
            .as_ref()
            .is_some_and(|g| into.is_none() && g.has_unified());
        let bridge = matches!(net, Some(PreparedNet::Bridge(_)));
        let gate = StartGate::open(create, reservation.as_ref(), plan.fd_floor)?;
        let status = reservation
            .as_ref()
            .filter(|_| plan.init)
            .map(|r| status_file(r, plan.fd_floor))
            .transpose()?;
        let ends = Ends::open(
            plan,
            plan.user.is_some() || must_attach || bridge,
            status,
            gate.child,
        )?;
        // This spawn's detached id-mapped mounts, which the child attaches: prepared before
        // the clone, kept open in the child, alive in this frame until the exec is confirmed.
        let prepared = plan
            .rootfs
            .as_ref()
            .map(|r| r.prepare(plan.fd_floor))
            .transpose()?;
        // These three live in this frame until the exec is confirmed: the child reads them.
        let mut keep = ends.keep(plan, &stdio);
        keep.extend(prepared.iter().flat_map(|p| p.fds()));
        keep.extend(v1_tasks.iter().map(AsRawFd::as_raw_fd));
        keep.sort_unstable();
        let mut fds = ends.child_fds(&stdio, &keep);
        fds.cgroup_tasks = &v1_tasks;
        let ctx = ChildCtx { plan, fds: &fds };
        // Declared before the handle, so that on an early return the child is killed and reaped
        // before its stack is unmapped.
        // A created command outlives this call before it executes, so it must not run in
        // this process's memory: the fork-like clone gives it a copy of its own.
        let stack = if CLONE3_WITH_STACK && plan.share_memory && !create {
            Some(ChildStack::new(CHILD_STACK)?)
        } else {
            None
        };

        // 2. The clone (in a joined PID namespace, if the sandbox joins one).
        let cloned = {
            let _pid_ns = plan
                .join_pid
                .as_ref()
                .map(PidNsForChildren::enter)
                .transpose()?;
            clone_child(&ctx, stack.as_ref(), into)?
        };
        let born_inside = into.is_some();
        let ends = ends.into_parent();
        let [stdin, stdout, stderr] = stdio;
        drop((stdin.child, stdout.child, stderr.child));
        let (pid, pidfd) = cloned.into_parts();
        // In a joined user namespace with a PID namespace of its own, the cloned process forks
        // the sandbox's first process, our child too, reports its pid and leaves.
        let (pid, pidfd) = match ends.pid_r {
            None => (pid, pidfd),
            Some(pid_r) => {
                let mut buf = [0u8; 4];
                let read = File::from(pid_r).read_exact(&mut buf);
                let _ = rustix::process::waitid(
                    rustix::process::WaitId::PidFd(pidfd.as_fd()),
                    rustix::process::WaitIdOptions::EXITED,
                );
                if let Err(source) = read {
                    // It failed before the fork: its report says why.
                    return Err(match read_report(&mut File::from(ends.err_r))? {
                        Report::Failed(step, index, errno) => {
                            Error::from_child(step, self.context(step, index), errno)
                        }
                        _ => Error::Setup {
                            what: "read the pid of the sandbox's first process",
                            source,
                        },
                    });
                }
                let pid = i32::from_ne_bytes(buf);
                (pid, pidfd_open(pid)?)
            }
        };
        // Until the exec is confirmed, dropping the handle kills and reaps the child.
        let mut handle = Child::new(
            pid,
            pidfd,
            ends.report_r.map(File::from),
            [stdin.parent, stdout.parent, stderr.parent],
        );
        handle.set_cgroup(group);

        // 3. While the child waits: cgroups, id maps, the bridge; then release it.
        if let Some(g) = handle.group().filter(|g| !born_inside && g.has_unified()) {
            g.attach_unified(pid)?;
        }
        if let Some(user) = &plan.user {
            write_id_maps(pid, user)?;
        }
        let net = attach_network(&mut handle, net, pid, plan.socket_factory)?;
        if let Some(sync_w) = ends.sync_w {
            File::from(sync_w)
                .write_all(&[1])
                .map_err(|source| Error::Setup {
                    what: "release the child after writing id maps and attaching cgroups",
                    source,
                })?;
        }

        // 4. The child's report: end-of-file once the program (or the init) is executed; with
        //    `create`, the command's word that it waits at its start gate.
        let mut err_r = File::from(ends.err_r);
        match read_report(&mut err_r)? {
            Report::Failed(step, index, errno) => {
                handle.wait()?;
                return Err(Error::from_child(step, self.context(step, index), errno));
            }
            Report::Ready if create => {
                let fifo = reservation.as_ref().map(|r| r.dir().join("start"));
                handle.set_pending_start(gate.parent, fifo, err_r);
            }
            Report::Executed if !create => {}
            _ => {
                return Err(Error::Setup {
                    what: "read the child's error pipe",
                    source: io::Error::new(io::ErrorKind::InvalidData, "out-of-turn report"),
                })
            }
        }

        // 5. What the child handed over on the control socket.
        if let Some(control) = ends.control {
            self.take_control(&mut handle, control, net)?;
        }
        handle.set_kill_on_drop(self.kill_on_drop);
        handle.set_deadline(deadline);
        let entry = enter::entry_of(plan);
        if let (Some(reservation), Some(identity)) = (reservation, &self.identity) {
            let record = self.record(reservation, identity, &handle, &entry, create)?;
            handle.set_record(record, identity.detach);
        }
        handle.set_entry(entry);
        // Both the init and the command have executed: nothing runs on the stack any more, and
        // nothing in the sandbox shares our memory.
        drop(stack);
        Ok(handle)
    }

    /// Records a named sandbox once it runs (or waits to be started).
    fn record(
        &self,
        reservation: Reservation,
        identity: &crate::builder::Identity,
        handle: &Child,
        entry: &crate::entry::Entry,
        create: bool,
    ) -> Result<Record> {
        let exec = entry.encode().map_err(|e| Error::State {
            what: "encode the exec record of",
            path: reservation.dir().to_owned(),
            source: io::Error::other(e),
        })?;
        let bridge = handle.bridge_address();
        let state = State {
            id: identity.id.clone(),
            status: if create {
                Status::Created
            } else {
                Status::Running
            },
            process: ProcessId::of(handle.id())?,
            command_pid: handle.command_id(),
            owner: if identity.detach {
                None
            } else {
                Some(ProcessId::of(std::process::id())?)
            },
            created: crate::state::now(),
            rootfs: identity.rootfs.clone(),
            cgroup: handle
                .group()
                .map(|g| g.dirs().map(Path::to_owned).collect())
                .unwrap_or_default(),
            network: bridge.as_ref().map(|(name, ip, _)| (name.clone(), *ip)),
            network_state: bridge.map(|(_, _, dir)| dir),
            ports: handle.ports().to_vec(),
            annotations: identity.annotations.clone(),
            exit: None,
        };
        reservation.commit(&state, &exec)
    }

    /// The network's host side, made ready before the clone: a bridge checked and its ports
    /// bound, or the forwarded ports bound.
    fn bind_network(&self) -> Result<Option<PreparedNet>> {
        Ok(match &self.net {
            Some(NetPlan::Bridge(bridge, ports)) => {
                let prepared = bridge.prepare(ports)?;
                // A detached sandbox's tables and ports must outlive this process.
                let detach = self.identity.as_ref().is_some_and(|i| i.detach);
                Some(PreparedNet::Bridge(if detach {
                    prepared.persistent()?
                } else {
                    prepared
                }))
            }
            Some(NetPlan::Forward(ports, limits)) => Some(PreparedNet::Forward(
                ports
                    .iter()
                    .map(|p| BoundPort::bind(*p))
                    .collect::<palisade_netns::Result<_>>()?,
                *limits,
            )),
            None => None,
        })
    }

    /// Takes the terminal and the seccomp listener the child sent before its exec, and starts a
    /// rootless
    /// sandbox's forwarder on sockets its init makes (`net`, if it is still to start).
    fn take_control(
        &self,
        handle: &mut Child,
        control: OwnedFd,
        net: Option<PreparedNet>,
    ) -> Result<()> {
        // Both sent before the exec, so they are there now.
        receive_handover(
            handle,
            &control,
            self.plan.tty.is_some(),
            self.plan.security.wants_listener(),
        )?;
        if let Some(PreparedNet::Forward(ports, limits)) = net {
            // Started only now: until the listener above was taken, a reply to a socket request
            // could have been mistaken for it.
            let factory = Target::Sockets(Arc::new(control::SocketFactory::new(control)));
            let forwarder = Forwarder::start_with_limits(ports, factory, limits)?;
            handle.set_network(Some(NetHandle::Forward(forwarder)));
        }
        Ok(())
    }

    /// What `step` acted on, read back from the plan.
    fn context(&self, step: ChildStep, index: u32) -> Context {
        let plan = &self.plan;
        if step == ChildStep::Rootfs {
            let op = plan.rootfs.as_ref().and_then(|r| r.ops.get(index as usize));
            return Context {
                subject: op.map(|op| op.describe()),
            };
        }
        if step == ChildStep::Sysctl {
            let path = plan.sysctls.get(index as usize).map(|(p, _)| p);
            return Context {
                subject: path.map(|p| p.to_string_lossy().into_owned()),
            };
        }
        if step == ChildStep::PassFds {
            let target = plan.passed_fds.get(index as usize).map(|(_, t)| *t);
            return Context {
                subject: target.map(|t| format!("descriptor {t}")),
            };
        }
        if let Some(described) = plan.security.describe(step) {
            return Context {
                subject: Some(described),
            };
        }
        let subject = match step {
            ChildStep::Exec => plan.exec.argv.strings().first(),
            ChildStep::Chdir => plan.cwd.as_ref(),
            ChildStep::Hostname => plan.hostname.as_ref(),
            _ => None,
        };
        Context {
            subject: subject.map(|s| s.to_string_lossy().into_owned()),
        }
    }
}

/// The child's stack: its steps and the init's frame (which holds the command's stack).
const CHILD_STACK: usize = 256 * 1024;

/// The descriptors one spawn makes for its child, both ends of each: the child's ends are
/// lifted above the numbers it places descriptors on (see [`Plan::fd_floor`](plan::Plan)).
struct Ends {
    /// The sync pipe: the child reads, the parent releases it (when it must wait at all).
    sync: Option<(OwnedFd, OwnedFd)>,
    /// The error pipe: the parent reads the child's report, the child writes it.
    err: (OwnedFd, OwnedFd),
    /// The control socket: the parent's end, the child's end.
    control: Option<(OwnedFd, OwnedFd)>,
    /// The init's status pipe: the parent reads, the init writes.
    report: Option<(OwnedFd, OwnedFd)>,
    /// A pidfd of this process, for a child without init in a new PID namespace.
    parent_pidfd: Option<OwnedFd>,
    /// The init's own open file description of the caller's death pipe.
    death: Option<OwnedFd>,
    /// The read end of a created command's start gate.
    start: Option<OwnedFd>,
    /// The pipe on which a child in a joined user namespace reports its sibling's pid.
    pid: Option<(OwnedFd, OwnedFd)>,
}

/// The parent's ends, once the child has its own.
struct ParentEnds {
    sync_w: Option<OwnedFd>,
    pid_r: Option<OwnedFd>,
    err_r: OwnedFd,
    control: Option<OwnedFd>,
    report_r: Option<OwnedFd>,
}

impl Ends {
    /// Opens the ends of one spawn; a named sandbox's init reports to its `status` file instead
    /// of a pipe, and a created command waits on `start`.
    fn open(
        plan: &Plan,
        sync: bool,
        status: Option<(OwnedFd, OwnedFd)>,
        start: Option<OwnedFd>,
    ) -> Result<Ends> {
        let floor = plan.fd_floor;
        let sync = sync
            .then(|| pipe_above("create the sync pipe", floor))
            .transpose()?;
        let err = pipe_above("create the error pipe", floor)?;
        let control = (plan.socket_factory || plan.security.wants_listener() || plan.tty.is_some())
            .then(|| control_pair(floor))
            .transpose()?;
        let report = match status {
            Some(file) => Some(file),
            None => plan
                .init
                .then(|| {
                    let (r, w) = pipe_above("create the init status pipe", floor)?;
                    set_nonblocking(&r)?;
                    Ok::<_, Error>((r, w))
                })
                .transpose()?,
        };
        let pid = plan
            .forks_in_user()
            .then(|| pipe_above("create the pid pipe", floor))
            .transpose()?;
        let parent_pidfd = (plan.death_signal && plan.new_pid_namespace())
            .then(|| lift(pidfd_open(std::process::id() as libc::pid_t)?, floor))
            .transpose()?;
        // The init's own description of the death pipe: the signal it asks for on it
        // (`F_SETOWN`) is a property of the description, which each init needs for itself.
        let death = plan
            .death_pipe
            .as_ref()
            .map(|fd| {
                plan::reopen(fd)
                    .map_err(|source| Error::Setup {
                        what: "open the death pipe for the init",
                        source,
                    })
                    .and_then(|fd| lift(fd, floor))
            })
            .transpose()?;
        Ok(Ends {
            sync,
            err,
            control,
            report,
            parent_pidfd,
            death,
            start,
            pid,
        })
    }

    /// What the child works with, borrowed from these ends, `stdio` and `keep`.
    fn child_fds<'a>(&'a self, stdio: &'a [Resolved; 3], keep: &'a [RawFd]) -> ChildFds<'a> {
        ChildFds {
            err_w: self.err.1.as_fd(),
            sync_r: self.sync.as_ref().map(|(r, _)| r.as_fd()),
            status_w: self.report.as_ref().map(|(_, w)| w.as_fd()),
            stdio: [
                stdio[0].child_fd(),
                stdio[1].child_fd(),
                stdio[2].child_fd(),
            ],
            control: self.control.as_ref().map(|(_, child)| child.as_fd()),
            death: self.death.as_ref().map(OwnedFd::as_fd),
            keep,
            parent_pidfd: self.parent_pidfd.as_ref().map(OwnedFd::as_fd),
            parent_pid: std::process::id() as libc::pid_t,
            start: self.start.as_ref().map(OwnedFd::as_fd),
            cgroup_tasks: &[],
            pid_w: self.pid.as_ref().map(|(_, w)| w.as_fd()),
        }
    }

    /// Every descriptor the child keeps, ascending: 0 to 2, its ends, its stdio sources and the
    /// plan's own. Everything else in its copy of our descriptor table is closed first thing.
    fn keep(&self, plan: &Plan, stdio: &[Resolved; 3]) -> Vec<RawFd> {
        let fds = self.child_fds(stdio, &[]);
        let named = [
            fds.sync_r,
            fds.status_w,
            fds.control,
            fds.death,
            fds.parent_pidfd,
            fds.start,
            fds.pid_w,
        ];
        let mut keep: Vec<RawFd> = [0, 1, 2, fds.err_w.as_raw_fd()]
            .into_iter()
            .chain(
                named
                    .into_iter()
                    .chain(fds.stdio)
                    .flatten()
                    .map(|fd| fd.as_raw_fd()),
            )
            .chain(plan.own_fds())
            .collect();
        keep.sort_unstable();
        keep.dedup();
        keep
    }

    /// The parent's ends; the child's are closed here, the child holding its own copies.
    fn into_parent(self) -> ParentEnds {
        ParentEnds {
            sync_w: self.sync.map(|(_child_end, w)| w),
            pid_r: self.pid.map(|(r, _child_end)| r),
            err_r: self.err.0,
            control: self.control.map(|(parent, _child_end)| parent),
            report_r: self.report.map(|(r, _child_end)| r),
        }
    }
}

/// Attaches the waiting child to its bridge, or starts the forwarder into its network
/// namespace; returns the network still to start (a rootless sandbox's forwarder, which needs
/// its init's sockets).
fn attach_network(
    handle: &mut Child,
    net: Option<PreparedNet>,
    pid: libc::pid_t,
    socket_factory: bool,
) -> Result<Option<PreparedNet>> {
    match net {
        // The child waits on the sync pipe, in its new network namespace, while its veth,
        // address and route are made.
        Some(PreparedNet::Bridge(prepared)) => {
            let attachment = prepared.attach(pid as u32)?;
            handle.set_network(Some(NetHandle::Bridge(Box::new(attachment))));
            Ok(None)
        }
        Some(PreparedNet::Forward(ports, limits)) if !socket_factory => {
            let ns = Target::netns_of(pid as u32)?;
            let forwarder = Forwarder::start_with_limits(ports, ns, limits)?;
            handle.set_network(Some(NetHandle::Forward(forwarder)));
            Ok(None)
        }
        other => Ok(other),
    }
}

/// The spawning thread's PID namespace for its children (`pid_for_children`), switched to a
/// joined one for the clone and back when dropped.
///
/// `setns(2)` with `CLONE_NEWPID` changes only where the thread's next children are born, never
/// the thread itself, and acts on the calling thread alone, so other threads of the caller are
/// untouched. Going back is always allowed (the namespace left is the thread's active one or a
/// descendant of it, `pid_namespaces(7)`), so the switch back cannot fail for want of
/// privilege; should the kernel still refuse it, the process aborts rather than let this
/// thread's later children be born in the sandbox's namespace.
struct PidNsForChildren(palisade_ns::NsFile);

impl PidNsForChildren {
    fn enter(target: &OwnedFd) -> Result<PidNsForChildren> {
        // Where this thread's children are born now: its own namespace, unless its caller
        // moved it (then that one, which `setns(2)` accepted before and accepts again).
        let own = palisade_ns::NsFile::open_path("/proc/thread-self/ns/pid_for_children")
            .or_else(|_| palisade_ns::NsFile::open_current(Namespace::PID))?;
        palisade_ns::setns(target.as_fd(), Namespace::PID)?;
        Ok(PidNsForChildren(own))
    }
}

impl Drop for PidNsForChildren {
    fn drop(&mut self) {
        if self.0.setns().is_err() {
            eprintln!("palisade: cannot return to the thread's own PID namespace after a spawn");
            std::process::abort();
        }
    }
}

/// Clones the sandbox child: on `stack` in shared memory where possible, else fork-like; born
/// into the cgroup `into` (`CLONE_INTO_CGROUP`, Linux 5.7; `clone3(2)`).
fn clone_child(
    ctx: &ChildCtx<'_>,
    stack: Option<&ChildStack>,
    into: Option<BorrowedFd<'_>>,
) -> Result<ClonedChild> {
    let mut args = CloneArgs::new(ctx.plan.clone_namespaces()).clear_signal_handlers(true);
    if let Some(dir) = into {
        args = args.into_cgroup(dir);
    }
    if let Some(stack) = stack {
        // SAFETY: the child runs `child::entry` on its own stack, which outlives it (see
        // `spawn`); it only reads `ctx`, the plan and the descriptors, which `spawn` keeps valid
        // and unchanged until it has executed the program, and it makes raw system calls only.
        let cloned = unsafe {
            clone3_with_stack(
                &args.share_memory(true),
                stack.base(),
                stack.len(),
                child::entry,
                ctx as *const ChildCtx<'_> as *mut c_void,
            )
        };
        match cloned {
            Err(e) if e.errno() == Some(libc::ENOSYS) => {}
            other => return other.map_err(Error::from_clone),
        }
    }
    // SAFETY: in the child, `child::start` makes only typed, errno-free calls on the prepared
    // plan and descriptors, and ends in execve(2) or exit; it never returns.
    match unsafe { clone3(&args) }.map_err(Error::from_clone)? {
        Forked::Child => child::start(ctx.plan, ctx.fds),
        Forked::Parent(cloned) => Ok(cloned),
    }
}

fn write_id_maps(pid: libc::pid_t, user: &UserPlan) -> Result<()> {
    palisade_ns::write_uid_map(pid, &user.uid_map)?;
    if user.setgroups == SetGroups::Deny {
        palisade_ns::write_setgroups(pid, SetGroups::Deny)?;
    }
    palisade_ns::write_gid_map(pid, &user.gid_map)?;
    Ok(())
}

impl Child {
    /// Starts the command of a sandbox made with [`Sandbox::create`](crate::Sandbox::create),
    /// and returns once it has executed its program, or with [`Error::Child`] for a failure of
    /// its last steps (its privileges, its filter, the `execve(2)`). [`Error::NotCreated`] if it
    /// was not created, or was started already (from here or, for a named sandbox, from another
    /// process).
    pub fn start(&mut self) -> Result<()> {
        let id = self.id().to_string();
        let not_created = || Error::NotCreated { id: id.clone() };
        let Some(mut pending) = self.take_pending_start() else {
            return Err(not_created());
        };
        match (&pending.gate, &pending.fifo, self.record()) {
            (Some(gate), _, _) => {
                rustix::io::write(gate, &[1]).map_err(|_| not_created())?;
            }
            (None, Some(fifo), Some(record)) => {
                crate::state::release_start(fifo, record.id())?;
                record.started()?;
            }
            _ => return Err(not_created()),
        }
        drop(pending.gate.take());
        match read_report(&mut pending.err)? {
            Report::Executed => Ok(()),
            Report::Failed(step, _, errno) => {
                let _ = self.wait();
                Err(Error::from_child(step, Context::default(), errno))
            }
            Report::Ready => Err(Error::Setup {
                what: "read the child's error pipe",
                source: io::Error::new(io::ErrorKind::InvalidData, "out-of-turn report"),
            }),
        }
    }
}

/// What the child said on its error pipe.
enum Report {
    /// End-of-file: the program (and the init) executed.
    Executed,
    /// A created command waits at its start gate.
    Ready,
    /// `(step, index, errno)` of the step that failed.
    Failed(ChildStep, u32, i32),
}

/// Reads one report from the child's error pipe.
fn read_report(pipe: &mut File) -> Result<Report> {
    let mut buf = [0u8; ChildFailure::SIZE];
    let mut len = 0;
    while len < buf.len() {
        match pipe.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(Error::Setup {
                    what: "read the child's error pipe",
                    source,
                })
            }
        }
    }
    match len {
        0 => Ok(Report::Executed),
        ChildFailure::SIZE if ChildFailure::is_ready(&buf) => Ok(Report::Ready),
        ChildFailure::SIZE => ChildFailure::decode(&buf)
            .map(|(step, index, errno)| Report::Failed(step, index, errno))
            .ok_or_else(|| Error::Setup {
                what: "decode the child's error report",
                source: io::Error::new(io::ErrorKind::InvalidData, "unknown step"),
            }),
        _ => Err(Error::Setup {
            what: "read the child's error pipe",
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "truncated report"),
        }),
    }
}

/// Reads the child's `(step, index, errno)` report; `None` when the pipe closed on a successful
/// exec.
fn read_child_report(mut pipe: File) -> Result<Option<(ChildStep, u32, i32)>> {
    match read_report(&mut pipe)? {
        Report::Executed => Ok(None),
        Report::Failed(step, index, errno) => Ok(Some((step, index, errno))),
        Report::Ready => Err(Error::Setup {
            what: "read the child's error pipe",
            source: io::Error::new(io::ErrorKind::InvalidData, "out-of-turn report"),
        }),
    }
}

/// A created command's start gate: the end it waits on, and the parent's way to open it.
struct StartGate {
    /// The read end, for the child.
    child: Option<OwnedFd>,
    /// The write end of an unnamed sandbox's gate pipe (a named one's is its `start` FIFO).
    parent: Option<OwnedFd>,
}

impl StartGate {
    fn open(create: bool, reservation: Option<&Reservation>, floor: RawFd) -> Result<StartGate> {
        if !create {
            return Ok(StartGate {
                child: None,
                parent: None,
            });
        }
        if let Some(fifo) = reservation.and_then(|r| r.start.as_ref()) {
            let fd = fifo.try_clone().map_err(|source| Error::Setup {
                what: "duplicate the start FIFO",
                source,
            })?;
            return Ok(StartGate {
                child: Some(lift(fd, floor)?),
                parent: None,
            });
        }
        let (r, w) = pipe_above("create the start gate", floor)?;
        Ok(StartGate {
            child: Some(r),
            parent: Some(w),
        })
    }
}

/// A named sandbox's `exit` file, for its init to report the command's status in: to read
/// (the caller's), and to write (the init's, above `floor`).
fn status_file(reservation: &Reservation, floor: RawFd) -> Result<(OwnedFd, OwnedFd)> {
    let setup = |what| move |source| Error::Setup { what, source };
    let path = reservation.dir().join("exit");
    let read = File::open(&path).map_err(setup("open the exit file"))?;
    let write = reservation
        .exit_w
        .try_clone()
        .map_err(setup("duplicate the exit file"))?;
    Ok((read.into(), lift(write, floor)?))
}

/// Stdio for one spawn, each source the child installs lifted to `floor` or above, where no
/// placement of the child's overwrites it (unless it already is its own target).
fn resolve_stdio(stdio: &[crate::Stdio; 3], floor: RawFd) -> Result<[Resolved; 3]> {
    let mut resolved = [
        stdio[0].resolve(true)?,
        stdio[1].resolve(false)?,
        stdio[2].resolve(false)?,
    ];
    for (target, s) in resolved.iter_mut().enumerate() {
        if let Some(fd) = s.child.take() {
            let raw = fd.as_raw_fd();
            let placed = raw == target as i32 || raw >= floor;
            s.child = Some(if placed { fd } else { lift(fd, floor)? });
        }
    }
    Ok(resolved)
}

/// The control socket of one spawn or exec: the parent's end, and the child's lifted to
/// `floor` or above.
fn control_pair(floor: RawFd) -> Result<(OwnedFd, OwnedFd)> {
    let (parent, child) = control::socketpair().map_err(|source| Error::Setup {
        what: "create the control socket",
        source,
    })?;
    Ok((parent, lift(child, floor)?))
}

/// Takes what the child sent on the control socket before its exec, in its order: the
/// terminal's master (with `tty`), then the seccomp listener (with `listener`).
fn receive_handover(
    handle: &mut Child,
    control: &OwnedFd,
    tty: bool,
    listener: bool,
) -> Result<()> {
    if tty {
        let master = control::recv_fd(control, false).map_err(|source| Error::Setup {
            what: "receive the terminal",
            source,
        })?;
        handle.set_pty(crate::terminal::Pty::new(master));
    }
    if listener {
        let listener = control::recv_fd(control, false).map_err(|source| Error::Setup {
            what: "receive the seccomp listener",
            source,
        })?;
        handle.set_seccomp_listener(Listener::new(listener));
    }
    Ok(())
}

/// `fd` moved to `floor` or above (see [`Plan::fd_floor`](plan::Plan)).
fn lift(fd: OwnedFd, floor: RawFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= floor {
        return Ok(fd);
    }
    plan::dup_above(fd.as_raw_fd(), floor).map_err(|source| Error::Setup {
        what: "move a descriptor above the passed ones",
        source,
    })
}

/// A close-on-exec pipe with both ends at `floor` or above.
fn pipe_above(what: &'static str, floor: RawFd) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe(what)?;
    Ok((lift(r, floor)?, lift(w, floor)?))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let ret = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)
    };
    if ret == -1 {
        return Err(Error::Setup {
            what: "make the init status pipe non-blocking",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
