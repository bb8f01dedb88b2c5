//! Profiles that cannot exit. A caller may pass any syscall filter, and an untrusted one may
//! refuse or suspend the very calls the child needs to report a failure and exit: the spawn must
//! still end, promptly, with a typed error, and leave no process spinning behind.
//!
//! Each spawn runs in a subprocess (this binary, as an ignored `probe_*` test), so that a hang
//! is bounded and ends with the subprocess's death, taking what it started along.

use palisade_test_support::require_root;
use std::time::Duration;

use crate::lifetime::{output_within, self_probe};
use palisade::seccomp::{JsonOptions, Profile};
use palisade::{Sandbox, Stdio};

/// Runs the probe `name` as the caller, and returns the line it printed about the spawn.
fn spawn_result(name: &str) -> String {
    let out = output_within(self_probe(name), Duration::from_secs(8));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find(|l| l.starts_with("spawn "))
        .unwrap_or_else(|| {
            panic!(
                "the probe reported nothing: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .to_owned()
}

/// Spawns `true` under `json`, and prints `spawn error …` or `spawn ok …` with what followed.
fn spawn_under(json: &str) {
    assert!(std::env::var_os("PALISADE_PROBE_CALLER").is_some());
    println!();
    let profile = Profile::from_json(json, &JsonOptions::default()).unwrap();
    let spawned = Sandbox::builder("true")
        .seccomp(profile)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Err(e) => println!("spawn error {e:?}"),
        Ok(mut child) => {
            // Nobody listens: dropping the listener fails the suspended calls (`seccomp_unotify(2)`).
            drop(child.take_seccomp_listener());
            match child.wait() {
                Ok(status) => println!("spawn ok, then success={} ({status})", status.success()),
                Err(e) => println!("spawn ok, then wait error {e:?}"),
            }
        }
    }
}

#[test]
fn a_profile_that_refuses_everything_fails_the_spawn_promptly() {
    require_root!();
    let line = spawn_result("seccomp::probe_spawn_refusing_everything");
    assert!(line.starts_with("spawn error "), "{line}");
}

#[test]
#[ignore = "run as a subprocess by a_profile_that_refuses_everything_fails_the_spawn_promptly"]
fn probe_spawn_refusing_everything() {
    spawn_under(r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#);
}

#[test]
fn a_profile_that_suspends_execve_with_nobody_listening_ends_promptly() {
    require_root!();
    let line = spawn_result("seccomp::probe_spawn_suspending_execve");
    assert!(
        line.starts_with("spawn error ") || line.starts_with("spawn ok, then success=false"),
        "{line}"
    );
}

#[test]
#[ignore = "run as a subprocess by a_profile_that_suspends_execve_with_nobody_listening_ends_promptly"]
fn probe_spawn_suspending_execve() {
    spawn_under(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["execve", "execveat"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    );
}
