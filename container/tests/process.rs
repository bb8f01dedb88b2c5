//! The command's process attributes against the real kernel: NIS domain name, I/O priority,
//! scheduling policy, CPU affinity, personality and exact capability sets. They need root
//! (namespaces, and the privileged values); they skip with a reason on stderr when not root, and
//! fail instead when PALISADE_NO_SKIP is set (as CI does).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use common::{sh, stdout_of};
use palisade::overlay::rootfs::Access;
use palisade::security::{
    CapSets, ExecDomain, IoClass, IoPriority, Personality, SchedFlags, SchedPolicy, Scheduler,
};
use palisade::{Capabilities, ChildStep, Error, Namespace, Sandbox};
use palisade_test_support::{require_root, TempDir};

/// Asserts that `err` is a child-side failure at `step`.
fn assert_step(err: &Error, step: ChildStep) {
    assert!(
        matches!(err, Error::Child { step: s, .. } if *s == step),
        "expected a failure to {step}, got: {err}"
    );
}

#[test]
fn the_domain_name_is_the_sandboxs_own() {
    require_root!();
    let host = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let mut b = sh("domainname; cat /proc/sys/kernel/domainname");
    b.domainname("pal.nis");
    assert_eq!(stdout_of(&mut b), "pal.nis\npal.nis\n");
    let after = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    assert_eq!(after, host, "the host's domain name must not change");
}

#[test]
fn a_domain_name_needs_a_uts_namespace_of_the_sandboxs_own() {
    let invalid = |b: &mut palisade::SandboxBuilder| match b.build() {
        Err(Error::InvalidValue { what, .. }) => assert_eq!(what, "domain name"),
        other => panic!("expected an invalid domain name, got {other:?}"),
    };
    let mut b = sh("true");
    b.domainname("pal.nis")
        .namespaces(Sandbox::DEFAULT_NAMESPACES - Namespace::UTS);
    invalid(&mut b);
    // The caller's own UTS namespace, joined: setting the name there would change the host's.
    let mut b = sh("true");
    b.domainname("pal.nis").join_namespace("/proc/self/ns/uts");
    invalid(&mut b);
    let mut b = sh("true");
    b.domainname("d".repeat(65));
    invalid(&mut b);
}

#[test]
fn the_io_priority_is_the_commands() {
    require_root!();
    for (priority, shown) in [
        (
            IoPriority::new(IoClass::BestEffort, 7),
            "best-effort: prio 7",
        ),
        (IoPriority::new(IoClass::Idle, 0), "idle"),
        (IoPriority::new(IoClass::RealTime, 3), "realtime: prio 3"),
    ] {
        let mut b = sh("ionice -p $$");
        b.io_priority(priority.unwrap());
        assert_eq!(stdout_of(&mut b).trim(), shown);
    }
    // The host's shell keeps its own.
    let host = std::process::Command::new("ionice")
        .args(["-p", &std::process::id().to_string()])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("idle"));
}

/// Fields 19 (nice) and 41 (policy) of the shell's `/proc/<pid>/stat` (`proc_pid_stat(5)`).
const NICE_AND_POLICY: &str = "cut -d' ' -f19,41 /proc/$$/stat";

#[test]
fn the_scheduling_policy_is_the_commands() {
    require_root!();
    let mut b = sh(NICE_AND_POLICY);
    b.scheduler(Scheduler::new(SchedPolicy::Batch).nice(5));
    // SCHED_BATCH is 3.
    assert_eq!(stdout_of(&mut b), "5 3\n");
    let mut b = sh("chrt -p $$");
    b.scheduler(
        Scheduler::new(SchedPolicy::RoundRobin)
            .priority(7)
            .flags(SchedFlags::RESET_ON_FORK),
    );
    let out = stdout_of(&mut b);
    assert!(out.contains("SCHED_RR|SCHED_RESET_ON_FORK"), "{out}");
    assert!(out.contains("priority: 7"), "{out}");
    // Without the privilege (a user namespace of its own, so nothing on the host), the kernel
    // refuses a real-time policy, and the spawn says where.
    let mut b = sh("true");
    b.rootless()
        .scheduler(Scheduler::new(SchedPolicy::Fifo).priority(10));
    let err = b.status().unwrap_err();
    assert_step(&err, ChildStep::Scheduler);
    assert_eq!(err.errno(), Some(libc::EPERM), "{err}");
}

#[test]
fn the_command_runs_on_its_final_cpus_and_the_init_on_the_initial_ones() {
    require_root!();
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if cpus.trim() == "0" {
        return palisade_test_support::skip("needs two CPUs");
    }
    let mut b = sh("grep Cpus_allowed_list /proc/$$/status /proc/1/status");
    b.initial_cpu_affinity("1".parse().unwrap())
        .cpu_affinity("0".parse().unwrap());
    let out = stdout_of(&mut b);
    let lists: Vec<&str> = out
        .lines()
        .map(|l| l.rsplit('\t').next().unwrap())
        .collect();
    assert_eq!(lists, ["0", "1"], "{out}");
    // A CPU the machine does not have.
    let mut b = sh("true");
    b.cpu_affinity("1000".parse().unwrap());
    let err = b.status().unwrap_err();
    assert_step(&err, ChildStep::CpuAffinity);
    assert!(err.to_string().contains("CPUs 1000"), "{err}");
}

#[test]
fn linux32_makes_the_machine_i686() {
    require_root!();
    let mut b = sh("uname -m; cat /proc/self/personality");
    b.personality(
        Personality::new(ExecDomain::Linux32)
            .flag("ADDR_NO_RANDOMIZE")
            .unwrap(),
    );
    assert_eq!(stdout_of(&mut b), "i686\n00040008\n");
    assert_eq!(stdout_of(&mut sh("uname -m")), "x86_64\n");
}

fn caps(names: &str) -> Capabilities {
    names.parse().unwrap()
}

/// The `Cap*` masks of `/proc/self/status`, as the command sees them.
fn cap_fields(b: &mut palisade::SandboxBuilder) -> BTreeMap<String, u64> {
    stdout_of(b)
        .lines()
        .filter_map(|l| l.split_once(":\t"))
        .filter(|(k, _)| k.starts_with("Cap"))
        .map(|(k, v)| (k.to_owned(), u64::from_str_radix(v.trim(), 16).unwrap()))
        .collect()
}

#[test]
fn exact_capability_sets_reach_root_and_another_user_as_given() {
    require_root!();
    // Root: permitted and effective are what execve(2) makes them, the union of the others.
    let root = CapSets {
        bounding: caps("chown,kill,net_bind_service"),
        effective: caps("chown,kill,net_bind_service"),
        permitted: caps("chown,kill,net_bind_service"),
        inheritable: caps("kill,net_bind_service"),
        ambient: caps("kill"),
    };
    // Another user: permitted and effective are its ambient set.
    let user = CapSets {
        bounding: caps("chown,kill,net_bind_service,sys_time"),
        effective: caps("kill,net_bind_service"),
        permitted: caps("kill,net_bind_service"),
        inheritable: caps("chown,kill,net_bind_service"),
        ambient: caps("kill,net_bind_service"),
    };
    for (uid, sets) in [(0, root), (1000, user)] {
        let mut b = sh("grep ^Cap /proc/self/status");
        b.user(uid, uid).capability_sets(sets);
        let got = cap_fields(&mut b);
        let want = BTreeMap::from([
            ("CapBnd".to_owned(), sets.bounding.bits()),
            ("CapEff".to_owned(), sets.effective.bits()),
            ("CapPrm".to_owned(), sets.permitted.bits()),
            ("CapInh".to_owned(), sets.inheritable.bits()),
            ("CapAmb".to_owned(), sets.ambient.bits()),
        ]);
        assert_eq!(got, want, "uid {uid}");
    }
    // Sets the kernel would refuse are refused when built.
    let mut b = sh("true");
    b.capability_sets(CapSets {
        ambient: caps("kill"),
        ..CapSets::default()
    });
    assert!(matches!(
        b.build(),
        Err(Error::InvalidValue {
            what: "capability sets",
            ..
        })
    ));
}

/// A directory holding a copy of this test binary as `pal-suid`, owned by root with the
/// setuid bit.
fn setuid_copy(dir: &TempDir) -> PathBuf {
    let exe = dir.path().join("pal-suid");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    dir.path().to_owned()
}

#[test]
fn a_setuid_root_program_cannot_gain_beyond_the_bounding_set() {
    require_root!();
    let dir = TempDir::new("proc-suid");
    let bin = setuid_copy(&dir);
    // A user holding nothing, with no_new_privs off: executing a setuid-root program makes it
    // root, which gains every capability of its bounding set (`capabilities(7)`).
    let run = |bounding: &str| {
        let mut b = Sandbox::builder("/mnt/pal-suid");
        b.args([
            "--exact",
            "probe_caps",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PALISADE_PROBE", "1")
        .volume(&bin, "/mnt", Access::ReadOnly)
        .user(1000, 1000)
        .no_new_privs(false)
        .capability_sets(CapSets {
            bounding: caps(bounding),
            ..CapSets::default()
        });
        let out = stdout_of(&mut b);
        out.lines()
            .find_map(|l| l.strip_prefix("caps "))
            .unwrap_or_else(|| panic!("no caps in {out}"))
            .to_owned()
    };
    let mask = |names: &str| format!("{:016x}", caps(names).bits());
    let bounded = "chown,kill";
    // euid CapPrm CapEff
    assert_eq!(
        run(bounded),
        format!("0 {} {}", mask(bounded), mask(bounded))
    );
    // The control: with CAP_SYS_ADMIN in the bounding set, the same program gains it.
    let wider = "chown,kill,sys_admin";
    assert_eq!(run(wider), format!("0 {} {}", mask(wider), mask(wider)));
}

/// Runs only inside a sandbox: prints `caps EUID CAPPRM CAPEFF`.
#[test]
#[ignore = "run inside a sandbox by a_setuid_root_program_cannot_gain_beyond_the_bounding_set"]
fn probe_caps() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    // The test harness has printed the test's name without a line break.
    println!();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    // SAFETY: a getter with no failure mode.
    let euid = unsafe { libc::geteuid() };
    println!("caps {euid} {} {}", field("CapPrm:"), field("CapEff:"));
}
