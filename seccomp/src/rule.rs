//! Typed filter rules: actions, argument conditions, rules, and a [`Filter`] that gathers them for
//! one architecture.

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::SeccompData;
use crate::error::{Error, Result};

/// What the kernel does with a syscall; see `seccomp(2)`, "Filter return values".
///
/// When several filters are stacked, the kernel applies the highest-precedence result, in the
/// order KillProcess, KillThread, Trap, Errno, UserNotify, Trace, Log, Allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the syscall run (`SECCOMP_RET_ALLOW`).
    Allow,
    /// Fail the syscall with this errno, without running it (`SECCOMP_RET_ERRNO`).
    Errno(u16),
    /// Kill the whole process as if by an uncatchable `SIGSYS` (`SECCOMP_RET_KILL_PROCESS`).
    KillProcess,
    /// Kill the calling thread (`SECCOMP_RET_KILL_THREAD`).
    KillThread,
    /// Deliver `SIGSYS` to the thread (`SECCOMP_RET_TRAP`).
    Trap,
    /// Allow and log to the audit log (`SECCOMP_RET_LOG`).
    Log,
    /// Notify a `ptrace(2)` tracer, passing this value (`SECCOMP_RET_TRACE`); without a tracer
    /// the syscall fails with `ENOSYS`.
    Trace(u16),
    /// Ask the supervisor holding the listener fd (`SECCOMP_RET_USER_NOTIF`,
    /// `seccomp_unotify(2)`); without a listener the syscall fails with `ENOSYS`.
    UserNotify,
}

impl Action {
    /// The 32-bit value a BPF program returns for this action.
    pub const fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | e as u32,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Trace(d) => libc::SECCOMP_RET_TRACE | d as u32,
            Action::UserNotify => libc::SECCOMP_RET_USER_NOTIF,
        }
    }

    /// The action a BPF return value stands for, if it is one the kernel knows. Data bits on
    /// actions that carry none are ignored, as the kernel ignores them.
    pub const fn from_ret(ret: u32) -> Option<Action> {
        let data = (ret & libc::SECCOMP_RET_DATA) as u16;
        Some(match ret & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_ALLOW => Action::Allow,
            libc::SECCOMP_RET_ERRNO => Action::Errno(data),
            libc::SECCOMP_RET_KILL_PROCESS => Action::KillProcess,
            libc::SECCOMP_RET_KILL_THREAD => Action::KillThread,
            libc::SECCOMP_RET_TRAP => Action::Trap,
            libc::SECCOMP_RET_LOG => Action::Log,
            libc::SECCOMP_RET_TRACE => Action::Trace(data),
            libc::SECCOMP_RET_USER_NOTIF => Action::UserNotify,
            _ => return None,
        })
    }
}

/// A comparison of a 64-bit syscall argument with a value.
///
/// All comparisons are **unsigned 64-bit**: the kernel passes arguments as `u64` in
/// `seccomp_data.args`, so `-1` is `u64::MAX`. A 32-bit argument such as an `int` fd may arrive
/// with garbage or sign-extension in its upper half depending on the caller; compare such
/// arguments with [`CmpOp::MaskedEq`] and a `0xffff_ffff` mask when that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `arg == value`.
    Eq,
    /// `arg != value`.
    Ne,
    /// `arg < value`.
    Lt,
    /// `arg <= value`.
    Le,
    /// `arg > value`.
    Gt,
    /// `arg >= value`.
    Ge,
    /// `arg & mask == value` (the mask is carried here, the value in the [`Cond`]).
    MaskedEq(u64),
}

/// A condition on one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cond {
    arg: u8,
    op: CmpOp,
    value: u64,
}

impl Cond {
    /// `args[arg] <op> value`; `arg` must be in `0..=5`.
    pub fn new(arg: u8, op: CmpOp, value: u64) -> Result<Cond> {
        if arg > 5 {
            return Err(Error::BadArgIndex { index: arg.into() });
        }
        Ok(Cond { arg, op, value })
    }

    /// For callers that already know `arg <= 5`.
    pub(crate) const fn from_parts(arg: u8, op: CmpOp, value: u64) -> Cond {
        Cond { arg, op, value }
    }

    /// The argument index.
    pub const fn arg(&self) -> u8 {
        self.arg
    }

    /// The operator.
    pub const fn op(&self) -> CmpOp {
        self.op
    }

    /// The value compared with.
    pub const fn value(&self) -> u64 {
        self.value
    }

    /// Whether the argument `a` satisfies the condition.
    pub const fn matches(&self, a: u64) -> bool {
        let v = self.value;
        match self.op {
            CmpOp::Eq => a == v,
            CmpOp::Ne => a != v,
            CmpOp::Lt => a < v,
            CmpOp::Le => a <= v,
            CmpOp::Gt => a > v,
            CmpOp::Ge => a >= v,
            CmpOp::MaskedEq(m) => a & m == v,
        }
    }
}

/// Which syscall a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Syscall {
    /// By name, resolved against the filter's architecture.
    Name(String),
    /// By number, used as is on any architecture.
    Nr(u32),
}

/// A syscall, conditions on its arguments (all must hold), and the action when they do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    syscall: Syscall,
    conds: Vec<Cond>,
    action: Action,
}

impl Rule {
    /// An unconditional rule for the syscall called `name`.
    pub fn new(name: impl Into<String>, action: Action) -> Rule {
        Rule {
            syscall: Syscall::Name(name.into()),
            conds: Vec::new(),
            action,
        }
    }

    /// An unconditional rule for syscall number `nr`.
    pub fn with_nr(nr: u32, action: Action) -> Rule {
        Rule {
            syscall: Syscall::Nr(nr),
            conds: Vec::new(),
            action,
        }
    }

    /// Adds a condition; the rule matches only when all its conditions hold.
    pub fn when(mut self, cond: Cond) -> Rule {
        self.conds.push(cond);
        self
    }

    /// The syscall.
    pub fn syscall(&self) -> &Syscall {
        &self.syscall
    }

    /// The conditions.
    pub fn conds(&self) -> &[Cond] {
        &self.conds
    }

    /// The action.
    pub fn action(&self) -> Action {
        self.action
    }
}

/// A rule whose syscall has been resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResolvedRule {
    pub(crate) nr: u32,
    pub(crate) conds: Vec<Cond>,
    pub(crate) action: Action,
}

/// The rules for one architecture, plus what to do with everything they do not match.
///
/// Rules for the same syscall are tried in the order they were added; the first whose conditions
/// all hold decides, and if none does the default action applies. A call from another
/// architecture (or, on x86-64, from the x32 ABI) gets the foreign-architecture action,
/// [`Action::KillProcess`] unless changed, because its syscall numbers mean other calls.
///
/// ```
/// use palisade_seccomp::{Action, Arch, CmpOp, Cond, Filter, Rule, SeccompData};
///
/// let arch = Arch::X86_64;
/// let mut filter = Filter::new(arch, Action::Errno(libc::EPERM as u16));
/// filter.add(Rule::new("read", Action::Allow))?;
/// // write(2) only to fd 1 or 2:
/// filter.add(Rule::new("write", Action::Allow).when(Cond::new(0, CmpOp::Ge, 1)?).when(Cond::new(0, CmpOp::Le, 2)?))?;
/// let program = filter.compile()?;
///
/// let mut call = SeccompData::new(arch, arch.syscall_nr("write")?, [2, 0, 0, 0, 0, 0]);
/// assert_eq!(program.interpret(&call)?, Action::Allow.ret());
/// call.args[0] = 3;
/// assert_eq!(program.interpret(&call)?, Action::Errno(libc::EPERM as u16).ret());
/// # Ok::<(), palisade_seccomp::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    arch: Arch,
    default_action: Action,
    foreign_action: Action,
    pub(crate) rules: Vec<ResolvedRule>,
}

impl Filter {
    /// An empty filter for `arch`: every syscall gets `default_action`.
    pub fn new(arch: Arch, default_action: Action) -> Filter {
        Filter {
            arch,
            default_action,
            foreign_action: Action::KillProcess,
            rules: Vec::new(),
        }
    }

    /// Sets the action for calls made with another architecture's (or x32's) calling convention.
    pub fn set_foreign_arch_action(&mut self, action: Action) -> &mut Filter {
        self.foreign_action = action;
        self
    }

    /// Appends a rule, resolving its syscall name for the filter's architecture.
    pub fn add(&mut self, rule: Rule) -> Result<&mut Filter> {
        let nr = match &rule.syscall {
            Syscall::Name(name) => self.arch.syscall_nr(name)?,
            Syscall::Nr(nr) => *nr,
        };
        self.rules.push(ResolvedRule {
            nr,
            conds: rule.conds,
            action: rule.action,
        });
        Ok(self)
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// The action for syscalls no rule matches.
    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// The action for calls from another architecture.
    pub fn foreign_arch_action(&self) -> Action {
        self.foreign_action
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action the rules define for a call, computed directly from the rules rather than
    /// through BPF. Compiled programs return exactly `evaluate(data).ret()`.
    pub fn evaluate(&self, data: &SeccompData) -> Action {
        if data.arch != self.arch.audit_arch() {
            return self.foreign_action;
        }
        let nr = data.nr as u32;
        if self.arch == Arch::X86_64 && nr & X32_SYSCALL_BIT != 0 {
            return self.foreign_action;
        }
        self.rules
            .iter()
            .filter(|r| r.nr == nr)
            .find(|r| {
                r.conds
                    .iter()
                    .all(|c| c.matches(data.args[usize::from(c.arg)]))
            })
            .map_or(self.default_action, |r| r.action)
    }
}
