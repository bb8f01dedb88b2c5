//! Helpers of the `palisade` integration tests (included as `mod common;`).
#![allow(dead_code)]

use palisade::{Sandbox, SandboxBuilder};

/// A sandbox running `sh -c script`.
pub fn sh(script: &str) -> SandboxBuilder {
    let mut b = Sandbox::builder("sh");
    b.args(["-c", script]);
    b
}

/// Runs the sandbox to completion, asserts that it succeeded, and returns its stdout.
pub fn stdout_of(builder: &mut SandboxBuilder) -> String {
    let out = builder.output().expect("spawn");
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
