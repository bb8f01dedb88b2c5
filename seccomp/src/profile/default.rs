//! The built-in default profile.
//!
//! Written from the syscalls' semantics, with the aim of matching in effect what Docker's default
//! profile does for a container holding only Docker's default capabilities: ordinary programs
//! (glibc, musl, busybox, language runtimes) work, while calls that reach kernel-global state or
//! widen the attack surface fail with `EPERM`:
//!
//! - namespaces and mounts: `unshare`, `setns`, namespace flags to `clone`, `mount`, `umount2`,
//!   `pivot_root`, the new mount API (`fsopen`, `open_tree`, `move_mount`, ...);
//! - the kernel itself: module loading, `kexec_*`, `reboot`, `swapon`/`swapoff`, `acct`,
//!   `syslog`, `quotactl`, clock setting, `iopl`/`ioperm`, `lookup_dcookie`;
//! - other processes' memory and introspection: `ptrace`, `process_vm_*`, `kcmp`,
//!   `pidfd_getfd`, `perf_event_open`;
//! - large or historically risky interfaces: `bpf`, `userfaultfd`, `keyctl`/`add_key`/
//!   `request_key` (the keyring is not namespaced), `io_uring_*`, `open_by_handle_at` (escapes
//!   a chroot), `fanotify_init`, NUMA page migration;
//! - obsolete or unimplemented calls.
//!
//! `clone3` fails with `ENOSYS` rather than `EPERM`: its flags live in memory that a filter cannot
//! inspect, and `ENOSYS` makes glibc fall back to `clone`, whose flags are checked.

use crate::arch::Arch;
use crate::rule::{Action, CmpOp, Cond, Rule};

use super::Profile;

/// Syscalls allowed without conditions. Names an architecture lacks are skipped for it.
const ALLOWED: &[&str] = &[
    // Files, directories and descriptors.
    "read",
    "write",
    "open",
    "openat",
    "openat2",
    "close",
    "close_range",
    "creat",
    "lseek",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "sendfile",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "stat",
    "fstat",
    "lstat",
    "newfstatat",
    "statx",
    "statfs",
    "fstatfs",
    "access",
    "faccessat",
    "faccessat2",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "syncfs",
    "sync",
    "sync_file_range",
    "fallocate",
    "fadvise64",
    "readahead",
    "truncate",
    "ftruncate",
    "getdents",
    "getdents64",
    "getcwd",
    "chdir",
    "fchdir",
    "chroot",
    "rename",
    "renameat",
    "renameat2",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "unlink",
    "unlinkat",
    "symlink",
    "symlinkat",
    "readlink",
    "readlinkat",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "lchown",
    "fchownat",
    "umask",
    "mknod",
    "mknodat",
    "utime",
    "utimes",
    "futimesat",
    "utimensat",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "setxattrat",
    "getxattrat",
    "listxattrat",
    "removexattrat",
    "file_getattr",
    "file_setattr",
    "ioctl",
    "pipe",
    "pipe2",
    "memfd_create",
    "cachestat",
    // Waiting and events.
    "select",
    "pselect6",
    "poll",
    "ppoll",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "signalfd",
    "signalfd4",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    // Memory.
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "msync",
    "mincore",
    "madvise",
    "mlock",
    "mlock2",
    "munlock",
    "mlockall",
    "munlockall",
    "remap_file_pages",
    "membarrier",
    "pkey_mprotect",
    "pkey_alloc",
    "pkey_free",
    "get_mempolicy",
    "mseal",
    "map_shadow_stack",
    // Processes, threads and scheduling.
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "futex",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "gettid",
    "getpid",
    "getppid",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "prctl",
    "arch_prctl",
    "set_thread_area",
    "get_thread_area",
    "modify_ldt",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_getattr",
    "sched_setattr",
    "getpriority",
    "setpriority",
    "ioprio_get",
    "ioprio_set",
    "getcpu",
    "getrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "times",
    "sysinfo",
    "uname",
    "restart_syscall",
    "pidfd_open",
    "pidfd_send_signal",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    // Signals.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "kill",
    "tkill",
    "tgkill",
    "pause",
    "alarm",
    // Credentials; the kernel checks the capabilities these need.
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
    "capget",
    "capset",
    // Time.
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "adjtimex",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    // Sockets (`socket` itself is conditional, below).
    "socketpair",
    "bind",
    "listen",
    "connect",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
    "setsockopt",
    "getsockopt",
    // System V and POSIX IPC, namespaced by the IPC namespace.
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "semget",
    "semop",
    "semtimedop",
    "semctl",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    // Randomness.
    "getrandom",
    // Entered only from the kernel's uprobe trampolines (x86-64); denying them would crash
    // processes that a host-side tracer instruments.
    "uprobe",
    "uretprobe",
];

/// Namespace-creating `clone` flags: `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`. `CLONE_NEWTIME` shares its bit
/// with `CSIGNAL` in `clone` (it is only valid in `clone3` and `unshare`), so it is not here.
pub(crate) const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `personality(2)` values that only select Linux behaviour: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32 | UNAME26`, and `0xffffffff` which queries without changing.
/// Others turn on address-space quirks such as `ADDR_NO_RANDOMIZE` or `READ_IMPLIES_EXEC`.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_VSOCK`, which reaches the hypervisor rather than the container's network namespace.
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;

/// A condition on the low 32 bits of an `int`-typed argument: the kernel ignores the high half,
/// so a filter must too, or a caller could dodge an exact match by setting high bits.
fn low32_eq(arg: u8, value: u64) -> Cond {
    Cond::from_parts(arg, CmpOp::MaskedEq(0xffff_ffff), value)
}

/// Syscalls the default profile refuses only because a container without the capability could
/// not use them anyway; a container granted the capability gets them, since refusing what its
/// capability exists for would make granting it pointless. Each call still checks the
/// capability itself.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            // Mounts and namespaces (clone's namespace flags and clone3 are below).
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "unshare",
            "setns",
            // Administration that the sandbox's namespaces contain or the capability guards.
            "sethostname",
            "setdomainname",
            "quotactl",
            "quotactl_fd",
            "fanotify_init",
            "lookup_dcookie",
            "syslog",
            "bpf",
            "perf_event_open",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "process_madvise",
            "kcmp",
            "pidfd_getfd",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "clock_settime", "clock_adjtime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "migrate_pages",
            "move_pages",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// A capability name as `CAP_X`, from `cap_x`, `X` or `CAP_X`.
fn normalise_capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

pub(super) fn profile_with_capabilities<I, S>(capabilities: I) -> Profile
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let held: Vec<String> = capabilities
        .into_iter()
        .map(|c| normalise_capability(c.as_ref()))
        .collect();
    let holds = |cap: &str| held.iter().any(|h| h == cap);
    let mut p = Profile::new(Action::Errno(libc::EPERM as u16));
    // Added before the base rules: for one syscall, the first matching rule decides.
    for (cap, names) in BY_CAPABILITY {
        if holds(cap) {
            for name in *names {
                p.add(Rule::new(*name, Action::Allow));
            }
        }
    }
    if holds("CAP_SYS_ADMIN") {
        // Namespace flags to clone(2), and clone3(2), whose flags a filter cannot read.
        p.add(Rule::new("clone", Action::Allow));
        p.add(Rule::new("clone3", Action::Allow));
    }
    base(p)
}

pub(super) fn profile() -> Profile {
    base(Profile::new(Action::Errno(libc::EPERM as u16)))
}

/// Appends the rules of the default profile for a container without extra capabilities.
fn base(mut p: Profile) -> Profile {
    let eperm = Action::Errno(libc::EPERM as u16);
    for name in ALLOWED {
        p.add(Rule::new(*name, Action::Allow));
    }
    // Same flag position on both supported architectures (clone's argument order differs only
    // on s390 and cris).
    p.add_for(
        &Arch::ALL,
        Rule::new("clone", Action::Allow).when(Cond::from_parts(
            0,
            CmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
            0,
        )),
    );
    p.add(Rule::new("clone3", Action::Errno(libc::ENOSYS as u16)));
    for persona in PERSONALITIES {
        p.add(Rule::new("personality", Action::Allow).when(low32_eq(0, persona)));
    }
    p.add(Rule::new("socket", eperm).when(low32_eq(0, AF_VSOCK)));
    p.add(Rule::new("socket", Action::Allow));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::SeccompData;

    #[test]
    fn capabilities_unlock_what_they_exist_for() {
        let eperm = Action::Errno(libc::EPERM as u16).ret();
        let allow = Action::Allow.ret();
        let arch = Arch::X86_64;
        let check = |profile: &Profile, name: &str, args: [u64; 6]| {
            let prog = profile.compile(arch).unwrap().unwrap();
            let nr = arch.syscall_nr(name).unwrap();
            prog.interpret(&SeccompData::new(arch, nr, args)).unwrap()
        };
        let plain = profile();
        let admin = profile_with_capabilities(["sys_admin"]);
        let tracer = profile_with_capabilities(["CAP_SYS_PTRACE", "CAP_NET_ADMIN"]);
        let new_ns = [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0];
        for name in ["mount", "unshare", "setns", "sethostname", "bpf"] {
            assert_eq!(check(&plain, name, [0; 6]), eperm, "{name}");
            assert_eq!(check(&admin, name, [0; 6]), allow, "{name}");
            assert_eq!(check(&tracer, name, [0; 6]), eperm, "{name}");
        }
        assert_eq!(check(&plain, "clone", new_ns), eperm);
        assert_eq!(check(&admin, "clone", new_ns), allow);
        assert_eq!(
            check(&plain, "clone3", [0; 6]),
            Action::Errno(libc::ENOSYS as u16).ret()
        );
        assert_eq!(check(&admin, "clone3", [0; 6]), allow);
        for name in ["ptrace", "process_vm_writev", "kcmp"] {
            assert_eq!(check(&plain, name, [0; 6]), eperm, "{name}");
            assert_eq!(check(&tracer, name, [0; 6]), allow, "{name}");
        }
        // The base rules stay: keyctl needs no capability and stays refused.
        assert_eq!(check(&admin, "keyctl", [0; 6]), eperm);
        assert_eq!(check(&admin, "read", [0; 6]), allow);
        // Without any of those capabilities it is the default profile.
        assert_eq!(profile_with_capabilities(["CAP_CHOWN"]), plain);
    }

    #[test]
    fn every_name_exists_somewhere() {
        let gated = BY_CAPABILITY.iter().flat_map(|(_, names)| names.iter());
        let missing: Vec<&str> = ALLOWED
            .iter()
            .chain(gated)
            .copied()
            .filter(|name| Arch::ALL.iter().all(|a| a.try_syscall_nr(name).is_none()))
            .collect();
        assert!(
            missing.is_empty(),
            "on no supported architecture: {missing:?}"
        );
    }

    #[test]
    fn denies_and_allows() {
        let eperm = Action::Errno(libc::EPERM as u16).ret();
        for arch in Arch::ALL {
            let prog = profile().compile(arch).unwrap().unwrap();
            assert!(prog.len() < 400, "{arch}: {} instructions", prog.len());
            let worst = (0..500)
                .map(|nr| {
                    let d = SeccompData::new(arch, nr, [0; 6]);
                    crate::bpf::interpret_counting(prog.instructions(), &d)
                        .unwrap()
                        .1
                })
                .max()
                .unwrap_or(0);
            assert!(worst <= 24, "{arch}: {worst} instructions for one call");
            let run = |name: &str, args: [u64; 6]| {
                let nr = arch.syscall_nr(name).unwrap();
                prog.interpret(&SeccompData::new(arch, nr, args)).unwrap()
            };
            for name in [
                "ptrace",
                "mount",
                "umount2",
                "unshare",
                "setns",
                "keyctl",
                "add_key",
                "request_key",
                "bpf",
                "kexec_load",
                "kexec_file_load",
                "init_module",
                "finit_module",
                "delete_module",
                "reboot",
                "swapon",
                "swapoff",
                "acct",
                "settimeofday",
                "clock_settime",
                "pivot_root",
                "open_by_handle_at",
                "perf_event_open",
                "userfaultfd",
                "quotactl",
                "io_uring_setup",
            ] {
                assert_eq!(run(name, [0; 6]), eperm, "{arch} {name}");
            }
            for name in [
                "read",
                "execve",
                "futex",
                "rseq",
                "prctl",
                "set_tid_address",
                "getppid",
            ] {
                assert_eq!(run(name, [0; 6]), Action::Allow.ret(), "{arch} {name}");
            }
            let thread_flags = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
            assert_eq!(
                run("clone", [thread_flags, 0, 0, 0, 0, 0]),
                Action::Allow.ret()
            );
            let newuser = thread_flags | libc::CLONE_NEWUSER as u64;
            assert_eq!(run("clone", [newuser, 0, 0, 0, 0, 0]), eperm);
            assert_eq!(
                run("clone3", [0; 6]),
                Action::Errno(libc::ENOSYS as u16).ret()
            );
            assert_eq!(
                run("personality", [0x8, 0, 0, 0, 0, 0]),
                Action::Allow.ret()
            );
            assert_eq!(run("personality", [0x0040000, 0, 0, 0, 0, 0]), eperm);
            assert_eq!(
                run("socket", [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
                Action::Allow.ret()
            );
            assert_eq!(run("socket", [AF_VSOCK, 1, 0, 0, 0, 0]), eperm);
            assert_eq!(run("socket", [1 << 32 | AF_VSOCK, 1, 0, 0, 0, 0]), eperm);
        }
        let x86 = profile().compile(Arch::X86_64).unwrap().unwrap();
        let iopl = SeccompData::new(
            Arch::X86_64,
            Arch::X86_64.syscall_nr("iopl").unwrap(),
            [0; 6],
        );
        assert_eq!(x86.interpret(&iopl).unwrap(), eperm);
    }
}
