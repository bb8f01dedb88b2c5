//! Resource usage in the exit status (CPU time and peak memory), against the real kernel, with
//! and without an init and a cgroup. They need root (namespaces); they skip with a reason on
//! stderr when not root, and fail instead when PALISADE_NO_SKIP is set (as CI does).
//!
//! Only lower bounds are asserted: what the command provably used.

mod common;

use std::time::Duration;

use common::{detached, sh, Cleanup};
use palisade::SandboxBuilder;
use palisade_test_support::require_root;

/// A shell that spins until the kernel has counted 300 ms of user time for it (30 clock ticks
/// of field 14 of `/proc/self/stat`, `proc(5)`; `USER_HZ` is 100), whatever the machine's speed.
const BURN: &str = "while :; do read -r l < /proc/$$/stat; set -- $l; \
                    [ \"${14}\" -ge 30 ] && break; done";

/// Touches 64 MiB: `dd` reads into a buffer of that size, faulting in every page of it.
const TOUCH_64_MIB: &str = "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null";

const MIB_64: u64 = 64 << 20;

/// The variants every usage is checked under: with an init and without, with a cgroup and
/// without.
fn variants(script: &str) -> Vec<(&'static str, SandboxBuilder)> {
    let plain = sh(script);
    let mut grouped = sh(script);
    grouped.cgroup(true);
    let mut no_init = sh(script);
    no_init.init(false);
    let mut no_init_grouped = sh(script);
    no_init_grouped.init(false).cgroup(true);
    vec![
        ("init, no cgroup", plain),
        ("init, cgroup", grouped),
        ("no init, no cgroup", no_init),
        ("no init, cgroup", no_init_grouped),
    ]
}

#[test]
fn a_busy_command_reports_its_cpu_time() {
    require_root!();
    for (what, mut b) in variants(BURN) {
        let status = b.status().unwrap();
        assert!(status.success(), "{what}: {status}");
        let user = status.user_time().expect("user time");
        let system = status.system_time().expect("system time");
        assert!(
            user >= Duration::from_millis(300),
            "{what}: {user:?} of user time"
        );
        assert_eq!(status.cpu_time(), Some(user + system), "{what}");
        eprintln!("{what}: {status:#}");
    }
}

/// Without a cgroup, a peak is reported only above the caller's own (see `ExitStatus`): these
/// checks run in a process of their own, by the test below, whose peak no other test raises.
#[test]
#[ignore = "run by a_command_that_touches_64_mib_reports_a_peak_of_at_least_that"]
fn touch_64_mib_probe() {
    for (what, mut b) in variants(TOUCH_64_MIB) {
        let mut child = b.spawn().unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "{what}: {status}");
        let peak = status.peak_memory().expect("a peak");
        assert!(peak >= MIB_64, "{what}: a peak of {peak} bytes");
        // With a memory controller, the figure is the group's own.
        if let Ok(stats) = child.stats() {
            if let Some(group_peak) = stats.memory.and_then(|m| m.peak) {
                assert_eq!(peak, group_peak.0, "{what}");
            }
        }
        eprintln!("{what}: {status:#}");
    }
}

#[test]
fn a_command_that_touches_64_mib_reports_a_peak_of_at_least_that() {
    require_root!();
    run_probe("touch_64_mib_probe");
    run_probe("descendants_probe");
}

/// Runs the ignored test `name` of this file in a process of its own, and fails with its output
/// unless it passes.
fn run_probe(name: &str) {
    let (passed, output) = palisade_test_support::run_ignored_test(name);
    assert!(passed, "{name}: {output}");
}

#[test]
#[ignore = "run by a_command_that_touches_64_mib_reports_a_peak_of_at_least_that"]
fn descendants_probe() {
    // The busy shell and the memory-hungry dd are children of the command, not the command.
    let script = format!("sh -c '{BURN}' && {TOUCH_64_MIB} && true");
    let status = sh(&script).status().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        status.user_time().unwrap() >= Duration::from_millis(300),
        "{status:#}"
    );
    assert!(status.peak_memory().unwrap() >= MIB_64, "{status:#}");
}

/// A named sandbox's handle, from another process as from this one, reads the usage its init
/// recorded.
#[test]
fn a_handles_wait_reports_the_cpu_time_of_a_busy_command() {
    require_root!();
    let root = palisade_test_support::TempDir::new("state");
    let name = "pal-usage";
    // Removes it whatever happens: left running, it would outlive the test.
    let _cleanup = Cleanup(&root, name);
    // Left running: only the handle waits.
    let mut h = detached(&root, name, &mut sh(BURN));
    let status = h.wait().unwrap().expect("the init reports the status");
    assert!(status.success(), "{status}");
    let user = status.user_time().expect("user time");
    assert!(user >= Duration::from_millis(300), "{user:?} of user time");
    assert_eq!(
        status.cpu_time(),
        Some(user + status.system_time().expect("system time"))
    );
    // The record holds it for whoever opens the sandbox later.
    let again = palisade::Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(
        again.state().exit.and_then(|e| e.cpu_time()),
        status.cpu_time()
    );
    h.delete().unwrap();
}

#[test]
fn a_timed_out_sandbox_still_reports_its_usage() {
    require_root!();
    let mut b = sh(&format!("{BURN}; sleep 100"));
    b.timeout(Duration::from_secs(2));
    let status = b.status().unwrap();
    assert!(status.timed_out(), "{status}");
    // The init was killed before it could report: the usage is what the kernel gathered as it
    // reaped the namespace's processes, which includes the shell's spin if it ended in time.
    assert!(status.user_time().is_some(), "{status:#}");
}

#[test]
fn a_status_made_from_a_raw_value_has_no_usage() {
    let status = palisade::ExitStatus::from_raw(0);
    assert_eq!(
        (
            status.user_time(),
            status.system_time(),
            status.peak_memory()
        ),
        (None, None, None)
    );
}

/// A caller with a large resident set: without a cgroup, the sandbox's figure (which starts
/// from the caller's memory, see `ExitStatus`) is not reported; with one, the group's is, and
/// holds nothing of the caller's. Run in a process of its own by the test below, so that its
/// memory counts in no other test's caller.
#[test]
#[ignore = "run by a_big_callers_memory_is_never_reported_as_the_sandboxs"]
fn big_caller_probe() {
    const BIG: u64 = 256 << 20;
    // Non-zero bytes: every page is written, hence resident.
    let big = vec![1u8; BIG as usize];
    std::hint::black_box(&big);
    let plain = sh("true").status().unwrap();
    assert!(plain.success(), "{plain}");
    assert_eq!(plain.peak_memory(), None, "{plain:#}");
    // Positive control: a command that does exceed the caller's peak is reported.
    let touched = sh("dd if=/dev/zero of=/dev/null bs=320M count=1 2>/dev/null")
        .status()
        .unwrap();
    assert!(touched.peak_memory().unwrap() >= 320 << 20, "{touched:#}");
    let grouped = sh("true").cgroup(true).status().unwrap();
    if let Some(peak) = grouped.peak_memory() {
        assert!(peak < BIG, "{grouped:#}");
    }
    drop(big);
}

#[test]
fn a_big_callers_memory_is_never_reported_as_the_sandboxs() {
    require_root!();
    run_probe("big_caller_probe");
}
