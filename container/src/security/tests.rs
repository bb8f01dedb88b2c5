use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};

use palisade_seccomp::Rule;

use super::*;
use crate::Sandbox;

const DOCKER: u64 = 0xa804_05fb;

fn bit(cap: Capability) -> u64 {
    1 << cap.index()
}

fn spec_of(edit: impl FnOnce(&mut crate::SandboxBuilder)) -> SecuritySpec {
    let mut b = Sandbox::builder("true");
    edit(&mut b);
    b.security.clone()
}

fn plan_of(edit: impl FnOnce(&mut crate::SandboxBuilder)) -> SecurityPlan {
    spec_of(edit)
        .prepare(SecurityContext {
            user_ns: false,
            setgroups_denied: false,
        })
        .unwrap()
}

fn invalid_what(result: Result<SecurityPlan>) -> &'static str {
    match result {
        Err(Error::InvalidValue { what, .. }) => what,
        other => panic!("expected an invalid argument, got {other:?}"),
    }
}

#[test]
fn the_default_is_dockers() {
    let spec = SecuritySpec::default();
    assert_eq!(spec.caps, Capabilities::docker_default());
    assert!(spec.added.is_empty());
    assert!(spec.no_new_privs);
    assert_eq!(
        spec.seccomp, None,
        "the default profile, adapted to the capabilities"
    );
    assert!(spec.user.is_none() && spec.groups.is_none() && spec.rlimits.is_empty());

    let plan = spec
        .prepare(SecurityContext {
            user_ns: false,
            setgroups_denied: false,
        })
        .unwrap();
    assert_eq!(plan.caps.bounding, DOCKER);
    assert_eq!(plan.caps.effective, DOCKER);
    assert_eq!(plan.caps.permitted, DOCKER);
    assert_eq!(plan.caps.inheritable | plan.caps.ambient, 0);
    assert_eq!(plan.bounding_drop, valid_mask(last_cap()) & !DOCKER);
    assert!(!plan.keep_caps && plan.groups.is_none() && plan.user.is_none());
    assert!(plan.seccomp.is_some() && plan.no_new_privs);
    assert!(!plan.wants_listener());
}

#[test]
fn masks_for_root_and_for_another_user() {
    let set: Capabilities = "chown,kill,net_admin,sys_time".parse().unwrap();
    let added: Capabilities = "net_admin,sys_time".parse().unwrap();
    let root = CapMasks::compute(set, added, true, 40, u64::MAX);
    assert_eq!(root.bounding, set.bits());
    assert_eq!((root.permitted, root.effective), (set.bits(), set.bits()));
    assert_eq!((root.inheritable, root.ambient), (0, 0));

    let user = CapMasks::compute(set, added, false, 40, u64::MAX);
    assert_eq!(user.bounding, set.bits());
    for mask in [
        user.permitted,
        user.effective,
        user.inheritable,
        user.ambient,
    ] {
        assert_eq!(mask, added.bits());
    }
    // Nothing added: a non-root user holds nothing, only the bounding set remains.
    let bare = CapMasks::compute(set, Capabilities::empty(), false, 40, u64::MAX);
    assert_eq!(bare.bounding, set.bits());
    assert_eq!(
        bare.permitted | bare.effective | bare.inheritable | bare.ambient,
        0
    );
}

#[test]
fn capabilities_the_kernel_lacks_are_left_out() {
    // A kernel whose last capability is CAP_AUDIT_READ (37) has no CAP_BPF (39).
    let set = Capabilities::all();
    let masks = CapMasks::compute(set, set, false, 37, u64::MAX);
    assert_eq!(masks.bounding, (1 << 38) - 1);
    assert_eq!(masks.ambient, (1 << 38) - 1);
    assert_eq!(valid_mask(37) & !masks.bounding, 0);
    assert_eq!(valid_mask(0), 1);
    assert_eq!(valid_mask(63), u64::MAX);
    assert_eq!(valid_mask(80), u64::MAX);

    // The plan only drops capabilities the running kernel has from the bounding set.
    let plan = plan_of(|b| {
        b.cap_drop_all();
    });
    assert_eq!(plan.bounding_drop, valid_mask(last_cap()));
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap();
    assert_eq!(last_cap(), last.trim().parse::<u32>().unwrap());
}

#[test]
fn builder_calls_apply_in_order() {
    let spec = spec_of(|b| {
        b.cap_add(Capability::CAP_NET_ADMIN)
            .cap_drop(Capability::CAP_NET_ADMIN)
            .cap_drop(Capability::CAP_CHOWN)
            .cap_add(Capability::CAP_SYS_TIME)
            .cap_add(Capability::CAP_KILL);
    });
    assert!(!spec.caps.contains(Capability::CAP_NET_ADMIN));
    assert!(!spec.caps.contains(Capability::CAP_CHOWN));
    assert_eq!(spec.added.to_string(), "CAP_KILL,CAP_SYS_TIME");
    assert_eq!(
        spec.caps.bits(),
        DOCKER & !bit(Capability::CAP_CHOWN) | bit(Capability::CAP_SYS_TIME)
    );

    let spec = spec_of(|b| {
        b.cap_add(Capability::CAP_SYS_ADMIN)
            .cap_drop_all()
            .cap_add(Capability::CAP_NET_RAW);
    });
    assert_eq!(spec.caps.bits(), bit(Capability::CAP_NET_RAW));
    assert_eq!(spec.added, spec.caps);

    let set: Capabilities = "chown,setuid".parse().unwrap();
    let spec = spec_of(|b| {
        b.capabilities(set);
    });
    assert_eq!((spec.caps, spec.added), (set, set));

    let spec = spec_of(|b| {
        b.rlimit(Rlimit::fixed(RlimitResource::Nofile, 10))
            .rlimit(Rlimit::fixed(RlimitResource::Core, 0))
            .rlimit(Rlimit::new(RlimitResource::Nofile, 20, 30))
            .user(1000, 100)
            .groups([100, 27])
            .no_new_privs(false)
            .seccomp(Profile::unconfined());
    });
    assert_eq!(
        spec.rlimits,
        [
            Rlimit::new(RlimitResource::Nofile, 20, 30),
            Rlimit::fixed(RlimitResource::Core, 0)
        ]
    );
    assert_eq!(spec.user, Some((1000, 100)));
    assert_eq!(spec.groups.as_deref(), Some(&[100, 27][..]));
    assert!(!spec.no_new_privs);
    assert!(spec.seccomp.as_ref().is_some_and(Profile::is_unconfined));
}

#[test]
fn prepare_turns_the_spec_into_plain_data() {
    let plan = plan_of(|b| {
        b.cap_add(Capability::CAP_NET_ADMIN)
            .user(1000, 100)
            .rlimit("nofile=1024:2048".parse().unwrap())
            .rlimit("core=0".parse().unwrap())
            .seccomp(Profile::unconfined());
    });
    let added = bit(Capability::CAP_NET_ADMIN);
    assert_eq!(plan.caps.bounding, DOCKER | added);
    assert_eq!(plan.caps.ambient, added);
    assert!(
        plan.keep_caps,
        "a non-root user keeping capabilities needs PR_SET_KEEPCAPS"
    );
    let user = plan.user.map(|(u, g)| (u.as_raw(), g.as_raw()));
    assert_eq!(user, Some((1000, 100)));
    // A new user starts without the caller's supplementary groups.
    assert_eq!(plan.groups.as_deref(), Some(&[][..]));
    let raw: Vec<(u32, u64, u64)> = plan
        .rlimits
        .iter()
        .map(|(r, l)| {
            (
                *r as u32,
                l.current.unwrap_or(u64::MAX),
                l.maximum.unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(
        raw,
        [(libc::RLIMIT_NOFILE, 1024, 2048), (libc::RLIMIT_CORE, 0, 0)]
    );
    assert!(plan.seccomp.is_none());
    assert_eq!(plan.seccomp_flags, LoadFlags::empty());

    // Nothing kept: no PR_SET_KEEPCAPS.
    let plan = plan_of(|b| {
        b.user(1000, 100);
    });
    assert!(!plan.keep_caps);
    assert_eq!(plan.caps.permitted | plan.caps.ambient, 0);
    // uid 0 is root: it keeps the whole set, and no KEEPCAPS is needed.
    let plan = plan_of(|b| {
        b.user(0, 100);
    });
    assert!(!plan.keep_caps);
    assert_eq!(plan.caps.effective, DOCKER);
}

#[test]
fn groups_are_only_touched_where_allowed() {
    let prepare = |user_ns: bool, edit: &dyn Fn(&mut crate::SandboxBuilder)| {
        let mut b = Sandbox::builder("true");
        edit(&mut b);
        b.security
            .prepare(SecurityContext {
                user_ns,
                setgroups_denied: false,
            })
            .unwrap()
            .groups
            .map(|g| g.iter().map(|g| g.as_raw()).collect::<Vec<u32>>())
    };
    let user = |b: &mut crate::SandboxBuilder| {
        b.user(5, 5);
    };
    let with_groups = |b: &mut crate::SandboxBuilder| {
        b.user(5, 5).groups([7, 8]);
    };
    let none = |_: &mut crate::SandboxBuilder| {};
    assert_eq!(prepare(false, &user), Some(vec![]));
    // setgroups(2) may be denied in a user namespace: left alone unless asked for.
    assert_eq!(prepare(true, &user), None);
    assert_eq!(prepare(true, &with_groups), Some(vec![7, 8]));
    assert_eq!(prepare(false, &with_groups), Some(vec![7, 8]));
    assert_eq!(prepare(false, &none), None);
    // Where setgroups(2) is denied, asking for groups fails before the spawn.
    let mut b = Sandbox::builder("true");
    b.user(5, 5).groups([7]);
    let denied = b.security.prepare(SecurityContext {
        user_ns: true,
        setgroups_denied: true,
    });
    assert_eq!(invalid_what(denied), "supplementary groups");
}

#[test]
fn bad_settings_are_typed_errors() {
    let ctx = SecurityContext {
        user_ns: false,
        setgroups_denied: false,
    };
    let prepare = |edit: &dyn Fn(&mut crate::SandboxBuilder)| {
        let mut b = Sandbox::builder("true");
        edit(&mut b);
        b.security.prepare(ctx)
    };
    assert_eq!(
        invalid_what(prepare(&|b| {
            b.user(u32::MAX, 0);
        })),
        "user id"
    );
    assert_eq!(
        invalid_what(prepare(&|b| {
            b.user(0, u32::MAX);
        })),
        "group id"
    );
    assert_eq!(
        invalid_what(prepare(&|b| {
            b.groups([1, u32::MAX]);
        })),
        "supplementary group"
    );
    assert_eq!(
        invalid_what(prepare(&|b| {
            b.groups(0..=NGROUPS_MAX as u32);
        })),
        "supplementary groups"
    );
    assert!(prepare(&|b| {
        b.groups(0..NGROUPS_MAX as u32);
    })
    .is_ok());
    // Built by hand, past the parser's check.
    let err = prepare(&|b| {
        b.rlimit(Rlimit::new(RlimitResource::Nofile, 10, 5));
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidValue { what: "rlimit", value, .. } if value == "nofile=10:5"),
        "{err}"
    );
    // The builder reports it as well.
    let err = Sandbox::builder("true")
        .rlimit(Rlimit::new(RlimitResource::Core, 1, 0))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidValue { what: "rlimit", .. }),
        "{err}"
    );
}

#[test]
fn a_listener_is_asked_for_when_the_profile_notifies() {
    let mut notify = Profile::new(Action::Allow);
    notify.add(Rule::new("acct", Action::UserNotify));
    let plan = plan_of(|b| {
        b.seccomp(notify.clone());
    });
    assert!(plan.wants_listener());
    assert!(plan.seccomp_flags.contains(LoadFlags::NEW_LISTENER));

    let mut errno = Profile::new(Action::Allow);
    errno.add(Rule::new("acct", Action::Errno(1)));
    assert!(!plan_of(|b| {
        b.seccomp(errno);
    })
    .wants_listener());
    assert!(!plan_of(|_| {}).wants_listener());
    assert!(!plan_of(|b| {
        b.seccomp(Profile::unconfined());
    })
    .wants_listener());
}

#[test]
fn failures_are_described() {
    let plan = plan_of(|b| {
        b.user(65534, 100)
            .groups([1, 2])
            .rlimit("nofile=1:2".parse().unwrap())
            .rlimit("core=0".parse().unwrap());
    });
    let describe = |step| plan.describe(step);
    assert_eq!(
        describe(ChildStep::SetUser).as_deref(),
        Some("uid 65534, gid 100")
    );
    assert_eq!(describe(ChildStep::Groups).as_deref(), Some("groups 1,2"));
    assert_eq!(
        describe(ChildStep::Rlimit).as_deref(),
        Some("nofile=1:2 core=0")
    );
    assert_eq!(describe(ChildStep::Seccomp), None);
    let err = Error::Child {
        step: ChildStep::SetUser,
        context: crate::Context {
            subject: describe(ChildStep::SetUser),
        },
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
    };
    assert_eq!(
        err.to_string(),
        "sandbox child failed to switch to its user \"uid 65534, gid 100\": Invalid argument (os error 22)"
    );
}

#[test]
fn the_plan_can_be_shared_between_threads() {
    fn shared<T: Send + Sync + std::fmt::Debug>() {}
    shared::<SecurityPlan>();
    shared::<Capabilities>();
    shared::<Rlimit>();
}

// --- Against the kernel: a forked child applies a plan, then executes a shell. ---

/// Returns false (after saying so, or failing under `PALISADE_NO_SKIP`) when not root.
fn root() -> bool {
    let root = palisade_test_support::is_root();
    if !root {
        palisade_test_support::skip("needs root");
    }
    root
}

/// Writes all of `bytes` to `fd` (in the forked child: no allocation).
fn put(fd: RawFd, bytes: &[u8]) {
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: writes from a live slice.
        let n = unsafe { libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n <= 0 {
            return;
        }
        done += n as usize;
    }
}

/// Writes `n` in decimal (in the forked child: no allocation).
fn put_num(fd: RawFd, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    put(fd, &buf[at..]);
}

/// Writes an `apply` failure as `step N errno M`.
fn put_failure(fd: RawFd, (step, errno): (ChildStep, rustix::io::Errno)) {
    put(fd, b"step ");
    put_num(fd, step as u64);
    put(fd, b" errno ");
    put_num(fd, errno.raw_os_error() as u64);
    put(fd, b"\n");
}

/// Forks; the child runs `body` with the write end of a pipe and exits with what it returns.
/// Returns the child's wait status and everything it wrote.
fn forked(body: impl FnOnce(RawFd) -> i32) -> (i32, String) {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: the child calls only async-signal-safe functions and raw system calls (the
    // plan's `apply`) on data prepared before the fork, and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: closes this process's copy of the read end.
        unsafe { libc::close(fds[0]) };
        let code = body(fds[1]);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) }
    }
    // SAFETY: the parent's copy of the write end, closed once.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours alone.
    let mut read = unsafe { File::from_raw_fd(fds[0]) };
    let mut out = String::new();
    read.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    (status, out)
}

/// `/bin/sh -c script`, prepared before the fork.
struct Shell {
    _strings: [CString; 1],
    argv: [*const libc::c_char; 4],
}

impl Shell {
    fn new(script: &str) -> Shell {
        let script = CString::new(script).unwrap();
        let argv = [
            c"/bin/sh".as_ptr(),
            c"-c".as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        Shell {
            _strings: [script],
            argv,
        }
    }

    /// In the forked child: sends stdout and stderr to `out` and executes the shell.
    fn exec(&self, out: RawFd) -> i32 {
        // SAFETY: dup2 and execv on live, NUL-terminated strings and a NULL-terminated array.
        unsafe {
            libc::dup2(out, 1);
            libc::dup2(out, 2);
            libc::execv(self.argv[0], self.argv.as_ptr());
        }
        put(out, b"execv failed\n");
        126
    }
}

/// The shell's view of its privileges: status fields, then the lines the script printed.
const REPORT: &str = "grep -E '^(Cap...|NoNewPrivs|Seccomp):' /proc/self/status; \
                      echo soft=$(ulimit -S -n) hard=$(ulimit -H -n); \
                      echo uid=$(id -u) gid=$(id -g) groups=$(id -G | tr ' ' ,)";

/// Parses `Name:\tvalue` and `a=b c=d` lines.
fn fields(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once(":\t") {
            map.insert(k.to_owned(), v.trim().to_owned());
        } else {
            for pair in line.split_whitespace() {
                if let Some((k, v)) = pair.split_once('=') {
                    map.insert(k.to_owned(), v.to_owned());
                }
            }
        }
    }
    map
}

fn mask(map: &BTreeMap<String, String>, key: &str) -> u64 {
    u64::from_str_radix(&map[key], 16).unwrap()
}

/// Runs `plan` in a forked child (after `before`), then [`REPORT`]; returns its fields.
fn applied(plan: &SecurityPlan, before: impl FnOnce()) -> BTreeMap<String, String> {
    let shell = Shell::new(REPORT);
    let (status, out) = forked(|out| {
        before();
        // SAFETY: a forked, single-threaded child that executes right after.
        match unsafe { plan.apply(true) } {
            Ok(_) => shell.exec(out),
            Err(failure) => {
                put_failure(out, failure);
                125
            }
        }
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status:#x}: {out}"
    );
    fields(&out)
}

/// Whether this process holds `cap` in its effective set.
fn holds(cap: Capability) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    mask(&fields(&status), "CapEff") & bit(cap) != 0
}

#[test]
fn root_gets_dockers_capabilities_limits_and_filter() {
    if !root() {
        return;
    }
    let plan = plan_of(|b| {
        b.rlimit("nofile=1024:2048".parse().unwrap());
    });
    // With CAP_SYS_RESOURCE (not every host grants it, even to root), lower the hard limit
    // first: raising it back must happen before the capability is dropped.
    let raise = holds(Capability::CAP_SYS_RESOURCE);
    let got = applied(&plan, || {
        if raise {
            let low = libc::rlimit {
                rlim_cur: 512,
                rlim_max: 512,
            };
            // SAFETY: reads one rlimit.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
        }
    });
    let bounding = DOCKER & valid_mask(last_cap());
    assert_eq!(mask(&got, "CapBnd"), bounding, "{got:?}");
    assert_eq!(mask(&got, "CapPrm"), bounding);
    assert_eq!(mask(&got, "CapEff"), bounding);
    assert_eq!(mask(&got, "CapInh"), 0);
    assert_eq!(mask(&got, "CapAmb"), 0);
    assert_eq!(got["NoNewPrivs"], "1");
    assert_eq!(got["Seccomp"], "2");
    assert_eq!(
        (got["soft"].as_str(), got["hard"].as_str()),
        ("1024", "2048")
    );
    assert_eq!(got["uid"], "0");
}

#[test]
fn another_user_keeps_only_added_capabilities() {
    if !root() {
        return;
    }
    let plan = plan_of(|b| {
        b.cap_add(Capability::CAP_NET_BIND_SERVICE)
            .cap_add(Capability::CAP_SYS_TIME)
            .cap_drop(Capability::CAP_NET_RAW)
            .user(65534, 65534)
            .groups([65534, 100])
            .rlimit(Rlimit::fixed(RlimitResource::Nofile, 256));
    });
    let got = applied(&plan, || {});
    let kept = bit(Capability::CAP_NET_BIND_SERVICE) | bit(Capability::CAP_SYS_TIME);
    let bounding = DOCKER & !bit(Capability::CAP_NET_RAW) | bit(Capability::CAP_SYS_TIME);
    assert_eq!(mask(&got, "CapBnd"), bounding, "{got:?}");
    for set in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(mask(&got, set), kept, "{set}: {got:?}");
    }
    assert_eq!(got["NoNewPrivs"], "1");
    assert_eq!(got["Seccomp"], "2");
    assert_eq!((got["soft"].as_str(), got["hard"].as_str()), ("256", "256"));
    assert_eq!(
        (got["uid"].as_str(), got["gid"].as_str()),
        ("65534", "65534")
    );
    let groups: BTreeSet<&str> = got["groups"].split(',').collect();
    assert_eq!(groups, BTreeSet::from(["65534", "100"]));
}

#[test]
fn without_no_new_privs_the_filter_goes_in_before_the_capabilities_go() {
    if !root() {
        return;
    }
    // Were the filter loaded after the switch to a user without CAP_SYS_ADMIN and without
    // no_new_privs, seccomp(2) would fail with EACCES.
    let plan = plan_of(|b| {
        b.no_new_privs(false).user(65534, 65534);
    });
    let got = applied(&plan, || {});
    assert_eq!(got["NoNewPrivs"], "0", "{got:?}");
    assert_eq!(got["Seccomp"], "2");
    assert_eq!(mask(&got, "CapEff") | mask(&got, "CapPrm"), 0);
    assert_eq!(mask(&got, "CapBnd"), DOCKER & valid_mask(last_cap()));
    assert_eq!(got["uid"], "65534");
    // The caller's supplementary groups are gone.
    assert_eq!(got["groups"], "65534");
}

#[test]
fn a_notifying_profile_returns_its_listener() {
    if !root() {
        return;
    }
    let mut profile = Profile::new(Action::Allow);
    profile.add(Rule::new("acct", Action::UserNotify));
    let plan = plan_of(|b| {
        b.seccomp(profile);
    });
    let (status, out) = forked(|out| {
        // SAFETY: a forked, single-threaded child.
        let fd = match unsafe { plan.apply(true) } {
            Ok(Some(fd)) => std::os::fd::IntoRawFd::into_raw_fd(fd),
            Ok(None) => return 124,
            Err(failure) => {
                put_failure(out, failure);
                return 125;
            }
        };
        // "/proc/self/fd/<fd>", built without allocating.
        let mut path = [0u8; 40];
        let prefix = b"/proc/self/fd/";
        path[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 10];
        let (mut n, mut len) = (fd as u32, 0);
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            path[prefix.len() + i] = digits[len - 1 - i];
        }
        let mut target = [0u8; 64];
        // SAFETY: a NUL-terminated path (the buffer is zeroed past it) and a live buffer.
        let n = unsafe {
            libc::readlink(
                path.as_ptr().cast(),
                target.as_mut_ptr().cast(),
                target.len(),
            )
        };
        if n > 0 {
            put(out, &target[..n as usize]);
        }
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        put(
            out,
            if flags & libc::FD_CLOEXEC != 0 {
                b" cloexec"
            } else {
                b" inherited"
            },
        );
        0
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{out}"
    );
    assert_eq!(out, "anon_inode:seccomp notify cloexec");
}

#[test]
fn a_failed_step_is_reported_with_its_errno() {
    if !root() {
        return;
    }
    let first = plan_of(|b| {
        b.seccomp(Profile::unconfined())
            .rlimit(Rlimit::fixed(RlimitResource::Nofile, 64));
    });
    // Raising the hard limit again needs CAP_SYS_RESOURCE, which the first plan dropped.
    let second = plan_of(|b| {
        b.seccomp(Profile::unconfined())
            .rlimit(Rlimit::new(RlimitResource::Nofile, 64, 128));
    });
    let shell = Shell::new("grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status");
    let (status, out) = forked(|out| {
        // SAFETY: a forked, single-threaded child that executes right after.
        unsafe {
            if let Err(failure) = first.apply(true) {
                put_failure(out, failure);
                return 125;
            }
            match second.apply(true) {
                Ok(_) => put(out, b"second plan applied\n"),
                Err(failure) => put_failure(out, failure),
            }
        }
        shell.exec(out)
    });
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{out}"
    );
    let expected = format!(
        "step {} errno {}\nNoNewPrivs:\t1\nSeccomp:\t0\n",
        ChildStep::Rlimit as u32,
        libc::EPERM
    );
    assert_eq!(out, expected);
}

#[test]
fn root_gets_every_capability_the_caller_can_pass_on() {
    if !root() {
        return;
    }
    // Some hosts withhold capabilities even from root (this one may lack CAP_SYS_RESOURCE):
    // asking for all of them must not make capset(2) fail.
    let plan = plan_of(|b| {
        b.capabilities(Capabilities::all());
    });
    let got = applied(&plan, || {});
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mine = fields(&status);
    let held = mask(&mine, "CapPrm") & mask(&mine, "CapBnd");
    assert_eq!(mask(&got, "CapEff"), held, "{got:?}");
    assert_eq!(mask(&got, "CapPrm"), held);
    assert_eq!(mask(&got, "CapBnd"), mask(&mine, "CapBnd"));
    assert_eq!(mask(&got, "CapInh") | mask(&got, "CapAmb"), 0);
}

/// The order of the security steps, checked without a kernel: [`apply::Calls`] recorded.
mod order {
    use super::*;
    use crate::security::apply::Calls;
    use rustix::io::Errno;
    use rustix::thread::{CapabilitySet, CapabilitySets};
    use std::os::fd::OwnedFd;

    /// Records each call by name; fails the call named `fail_at`.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<&'static str>,
        fail_at: Option<&'static str>,
    }

    impl Recorder {
        fn call(&mut self, name: &'static str) -> Result<(), Errno> {
            self.calls.push(name);
            if self.fail_at == Some(name) {
                return Err(Errno::PERM);
            }
            Ok(())
        }
    }

    impl Calls for Recorder {
        fn set_rlimit(
            &mut self,
            _: rustix::process::Resource,
            _: rustix::process::Rlimit,
        ) -> Result<(), Errno> {
            self.call("rlimit")
        }
        fn load_filter(
            &mut self,
            _: &palisade_seccomp::BpfProgram,
            _: palisade_seccomp::LoadFlags,
        ) -> Result<Option<OwnedFd>, Errno> {
            self.call("filter").map(|()| None)
        }
        fn drop_bounding(&mut self, _: CapabilitySet) -> Result<(), Errno> {
            self.call("bounding")
        }
        fn keep_caps(&mut self) -> Result<(), Errno> {
            self.call("keepcaps")
        }
        fn set_groups(&mut self, _: &[rustix::process::Gid]) -> Result<(), Errno> {
            self.call("groups")
        }
        fn set_ids(
            &mut self,
            _: rustix::process::Uid,
            _: rustix::process::Gid,
        ) -> Result<(), Errno> {
            self.call("user")
        }
        fn set_caps(&mut self, _: CapabilitySets) -> Result<(), Errno> {
            self.call("caps")
        }
        fn clear_ambient(&mut self) -> Result<(), Errno> {
            self.call("clear-ambient")
        }
        fn raise_ambient(&mut self, _: CapabilitySet) -> Result<(), Errno> {
            self.call("ambient")
        }
        fn no_new_privs(&mut self) -> Result<(), Errno> {
            self.call("nnp")
        }
        fn set_personality(&mut self, _: u32) -> Result<(), Errno> {
            self.call("personality")
        }
        fn set_io_priority(&mut self, _: u32) -> Result<(), Errno> {
            self.call("ioprio")
        }
        fn set_scheduler(&mut self, _: &crate::security::sched::SchedAttr) -> Result<(), Errno> {
            self.call("scheduler")
        }
        fn set_affinity(&mut self, _: &rustix::thread::CpuSet) -> Result<(), Errno> {
            self.call("affinity")
        }
    }

    /// The calls `plan` makes, deduplicated where a step repeats (one per capability).
    fn order_of(
        plan: &SecurityPlan,
        filter: bool,
        fail_at: Option<&'static str>,
    ) -> Vec<&'static str> {
        let mut rec = Recorder {
            fail_at,
            ..Recorder::default()
        };
        let _ = plan.steps(&mut rec, filter, &mut None);
        rec.calls.dedup();
        rec.calls
    }

    fn full(b: &mut crate::SandboxBuilder) {
        b.rlimit(Rlimit::fixed(RlimitResource::Nofile, 64))
            .user(1000, 100)
            .groups([7])
            .cap_add(Capability::CAP_NET_BIND_SERVICE);
    }

    #[test]
    fn with_no_new_privs_the_filter_comes_last() {
        let plan = plan_of(full);
        assert_eq!(
            order_of(&plan, true, None),
            [
                "rlimit",
                "bounding",
                "keepcaps",
                "groups",
                "user",
                "caps",
                "clear-ambient",
                "ambient",
                "nnp",
                "filter"
            ]
        );
    }

    #[test]
    fn without_no_new_privs_the_filter_goes_in_while_privileged() {
        let plan = plan_of(|b| {
            full(b);
            b.no_new_privs(false);
        });
        assert_eq!(
            order_of(&plan, true, None),
            [
                "rlimit",
                "filter",
                "bounding",
                "keepcaps",
                "groups",
                "user",
                "caps",
                "clear-ambient",
                "ambient"
            ]
        );
    }

    #[test]
    fn the_init_gets_everything_but_the_filter_and_always_no_new_privs() {
        let plan = plan_of(|b| {
            full(b);
            b.no_new_privs(false);
        });
        let calls = order_of(&plan, false, None);
        assert!(!calls.contains(&"filter"), "{calls:?}");
        assert_eq!(calls.last(), Some(&"nnp"));
    }

    fn scheduled(b: &mut crate::SandboxBuilder) {
        full(b);
        b.personality(Personality::new(ExecDomain::Linux32))
            .io_priority(IoPriority::new(IoClass::BestEffort, 7).unwrap())
            .scheduler(Scheduler::new(SchedPolicy::Batch).nice(5))
            .cpu_affinity("0".parse().unwrap());
    }

    #[test]
    fn scheduling_comes_while_privileged_and_the_affinity_last_before_the_filter() {
        let plan = plan_of(scheduled);
        assert_eq!(
            order_of(&plan, true, None),
            [
                "rlimit",
                "personality",
                "ioprio",
                "scheduler",
                "bounding",
                "keepcaps",
                "groups",
                "user",
                "caps",
                "clear-ambient",
                "ambient",
                "nnp",
                "affinity",
                "filter"
            ]
        );
        let plan = plan_of(|b| {
            scheduled(b);
            b.no_new_privs(false);
        });
        assert_eq!(
            order_of(&plan, true, None)[..6],
            [
                "rlimit",
                "personality",
                "ioprio",
                "scheduler",
                "affinity",
                "filter"
            ]
        );
        let mut rec = Recorder {
            fail_at: Some("scheduler"),
            ..Recorder::default()
        };
        let failure = plan.steps(&mut rec, true, &mut None).unwrap_err();
        assert_eq!(failure, (ChildStep::Scheduler, Errno::PERM));
    }

    #[test]
    fn neither_the_init_nor_a_later_command_takes_the_scheduling() {
        let plan = plan_of(scheduled);
        let calls = order_of(&plan, false, None);
        for call in ["personality", "ioprio", "scheduler", "affinity"] {
            assert!(!calls.contains(&call), "{calls:?}");
        }
        let exec = plan.narrowed(None, None, false).unwrap();
        let calls = order_of(&exec, true, None);
        assert!(!calls.contains(&"scheduler"), "{calls:?}");
        let recorded = SecurityPlan::from_record(plan.to_record()).unwrap();
        assert!(!order_of(&recorded, true, None).contains(&"ioprio"));
    }

    #[test]
    fn a_failed_step_ends_the_sequence_and_names_itself() {
        let plan = plan_of(full);
        assert_eq!(
            order_of(&plan, true, Some("user")),
            ["rlimit", "bounding", "keepcaps", "groups", "user"]
        );
        let mut rec = Recorder {
            fail_at: Some("caps"),
            ..Recorder::default()
        };
        let failure = plan.steps(&mut rec, true, &mut None).unwrap_err();
        assert_eq!(failure, (ChildStep::Capabilities, Errno::PERM));
    }
}

fn sets(b: &str, e: &str, p: &str, i: &str, a: &str) -> CapSets {
    CapSets {
        bounding: b.parse().unwrap(),
        effective: e.parse().unwrap(),
        permitted: p.parse().unwrap(),
        inheritable: i.parse().unwrap(),
        ambient: a.parse().unwrap(),
    }
}

#[test]
fn exact_sets_follow_the_kernels_rules() {
    let ok = sets(
        "kill,chown,net_admin",
        "kill",
        "kill,chown",
        "chown",
        "chown",
    );
    let plan = plan_of(|b| {
        b.capability_sets(ok);
    });
    assert_eq!(plan.caps.bounding & DOCKER, ok.bounding.bits() & DOCKER);
    assert_eq!(plan.caps.ambient, ok.ambient.bits());
    assert_eq!(plan.caps.inheritable, ok.inheritable.bits());
    assert_eq!(plan.caps.effective, ok.effective.bits());
    for bad in [
        sets("kill", "kill", "", "", ""),
        sets("kill", "", "", "chown", ""),
        sets("kill", "", "kill", "", "kill"),
        sets("kill", "", "", "kill", "kill"),
    ] {
        let spec = spec_of(|b| {
            b.capability_sets(bad);
        });
        let result = spec.prepare(SecurityContext {
            user_ns: false,
            setgroups_denied: false,
        });
        assert_eq!(invalid_what(result), "capability sets", "{bad:?}");
    }
    // The simple model again after the exact one: the last call wins.
    let spec = spec_of(|b| {
        b.capability_sets(ok).cap_add(Capability::CAP_KILL);
    });
    assert!(spec.exact.is_none());
}

/// Exact sets, applied and executed: what the shell then holds (after the kernel's
/// transformation at execve(2), which these sets survive unchanged).
fn applied_exactly(uid: u32, given: CapSets) -> BTreeMap<String, String> {
    let plan = plan_of(|b| {
        b.capability_sets(given).user(uid, uid).no_new_privs(true);
    });
    applied(&plan, || {})
}

#[test]
fn exact_sets_reach_root_and_another_user_as_given() {
    if !root() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let held = mask(&fields(&status), "CapPrm");
    let wanted = |names: &str| names.parse::<Capabilities>().unwrap().bits();
    // Root: permitted and effective are the union of the bounding, inheritable and ambient sets.
    let root_sets = sets(
        "chown,kill,net_bind_service",
        "chown,kill,net_bind_service",
        "chown,kill,net_bind_service",
        "kill,net_bind_service",
        "kill",
    );
    // Another user: permitted and effective are the ambient set.
    let user_sets = sets(
        "chown,kill,net_bind_service,sys_time",
        "kill,net_bind_service",
        "kill,net_bind_service",
        "kill,net_bind_service,chown",
        "kill,net_bind_service",
    );
    for (uid, given) in [(0, root_sets), (1000, user_sets)] {
        if wanted("chown,kill,net_bind_service,sys_time") & !held != 0 {
            return;
        }
        let got = applied_exactly(uid, given);
        assert_eq!(got["uid"], uid.to_string());
        for (field, set) in [
            ("CapBnd", given.bounding),
            ("CapPrm", given.permitted),
            ("CapEff", given.effective),
            ("CapInh", given.inheritable),
            ("CapAmb", given.ambient),
        ] {
            assert_eq!(mask(&got, field), set.bits(), "uid {uid} {field}: {got:?}");
        }
    }
}

#[test]
fn the_default_filter_follows_the_exact_bounding_set() {
    let mount = |bounding: &str| {
        let plan = plan_of(|b| {
            b.capability_sets(sets(bounding, "", "", "", ""));
        });
        let program = plan.seccomp.as_ref().expect("the default filter");
        action(program, libc::SYS_mount).is_ok_and(allowed)
    };
    // Docker's rule: mount(2) is allowed to a command that can hold CAP_SYS_ADMIN.
    assert!(mount("sys_admin,kill"));
    assert!(!mount("kill"));
}
