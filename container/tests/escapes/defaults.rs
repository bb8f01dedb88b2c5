//! Defaults for untrusted code. A sandbox made with nothing but a program must not hand it the
//! caller's environment (tokens, paths, credentials) nor the host's secrets and personal files
//! through the default root; the programs it needs still run.

use palisade_test_support::require_root;
use std::path::PathBuf;

use crate::common::{sh, stdout_of};

/// Variables a default sandbox sets itself, or its shell does.
const OWN: &[&str] = &["PATH", "HOME", "HOSTNAME", "TERM", "PWD", "SHLVL", "_"];

#[test]
fn the_callers_environment_stays_out_of_a_default_sandbox() {
    require_root!();
    let caller: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !OWN.contains(&k.as_str()))
        .collect();
    assert!(
        !caller.is_empty(),
        "the test process has no environment to leak (cargo sets CARGO_PKG_NAME, …)"
    );
    let out = stdout_of(&mut sh("env"));
    let seen: Vec<&str> = out.lines().collect();
    let leaked: Vec<String> = caller
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .filter(|kv| seen.contains(&kv.as_str()))
        .collect();
    assert!(
        leaked.is_empty(),
        "the caller's environment reached the sandbox: {leaked:?}"
    );
    for key in ["PATH", "HOSTNAME", "HOME"] {
        assert!(
            seen.iter().any(|l| l.starts_with(&format!("{key}="))),
            "{key} is not set: {out}"
        );
    }
}

/// A file this test made on the host, removed on drop.
struct Marker(PathBuf);

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_default_root_holds_no_host_secrets_or_personal_files() {
    require_root!();
    // Proof that /root is emptied rather than empty by chance.
    let marker = Marker(PathBuf::from(format!(
        "/root/palisade-test-marker-{}",
        std::process::id()
    )));
    std::fs::write(&marker.0, "host\n").unwrap();
    let dirs = [
        "/root", "/home", "/var", "/srv", "/mnt", "/media", "/run", "/boot", "/tmp",
    ];
    let script = format!(
        "echo \"shadow $(cat /etc/shadow 2>/dev/null | wc -c)\"; \
         echo \"ssh-keys $(ls /etc/ssh/ 2>/dev/null | grep -c '^ssh_host_.*_key$')\"; \
         for d in {}; do echo \"$d $(ls -A $d 2>/dev/null | wc -l)\"; done; \
         test -x /usr/bin/env && test -s /etc/passwd && echo control ok",
        dirs.join(" ")
    );
    let out = stdout_of(&mut sh(&script));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.last(), Some(&"control ok"), "{out}");
    let mut expected = vec!["shadow 0".to_owned(), "ssh-keys 0".to_owned()];
    expected.extend(dirs.iter().map(|d| format!("{d} 0")));
    expected.push("control ok".into());
    assert_eq!(lines, expected, "the default root shows host files");
}
