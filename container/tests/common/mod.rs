//! Helpers of the `palisade` integration tests (included as `mod common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use palisade::overlay::rootfs::Access;
use palisade::{Handle, Sandbox, SandboxBuilder};
use palisade_test_support::TempDir;

/// A sandbox running `sh -c script`.
pub fn sh(script: &str) -> SandboxBuilder {
    let mut b = Sandbox::builder("sh");
    b.args(["-c", script]);
    b
}

/// The host's mount points, to compare before and after.
pub fn host_mounts() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').skip(4).take(1).collect())
        .collect();
    v.sort();
    v
}

/// Every directory under the cgroup mounts whose name `matches`.
pub fn group_dirs(matches: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                if p.file_name().and_then(|n| n.to_str()).is_some_and(&matches) {
                    out.push(p);
                } else if p.components().count() < 12 {
                    stack.push(p);
                }
            }
        }
    }
    out
}

/// Runs the `run` example with `args`: its exit code and stderr.
pub fn run_example_code(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(example("run"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

/// A sandbox that runs the ignored test `name` of this very test binary, whose directory is
/// mounted read-only at `/mnt`: for checks that need a system call no shell tool makes. The
/// probe sees `PALISADE_PROBE` set.
pub fn probe(name: &str) -> SandboxBuilder {
    let exe = std::env::current_exe().unwrap();
    let mut b = Sandbox::builder(Path::new("/mnt").join(exe.file_name().unwrap()));
    b.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PALISADE_PROBE", "1")
    .volume(exe.parent().unwrap(), "/mnt", Access::ReadOnly);
    b
}

/// Asserts that the calling thread's network namespace (a test's throwaway host) holds nothing
/// of Palisade's: no `pal*` link, no nftables table of the `ip` or `bridge` family.
pub fn assert_no_network_leftovers() {
    use palisade::netns::link::Netlink;
    use palisade::netns::nft::Nftables;
    let links: Vec<String> = Netlink::open()
        .unwrap()
        .links()
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with("pal"))
        .collect();
    assert_eq!(links, Vec::<String>::new(), "links left behind");
    let mut nft = Nftables::open().unwrap();
    let mut tables = nft.tables().unwrap();
    tables.extend(nft.bridge_tables().unwrap());
    assert_eq!(tables, Vec::<String>::new(), "nftables tables left behind");
}

/// The built example `name`, checked to exist and to be newer than its source.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // <target>/<profile>/deps/examples-<hash> -> <target>/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .join("examples");
    let bin = dir.join(name);
    let built = std::fs::metadata(&bin).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "the example binary {} is missing: build the examples first \
             (`cargo build -p palisade --examples`; a `cargo test` without --test builds them too)",
            bin.display()
        );
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(format!("{name}.rs"));
    if let Ok(changed) = std::fs::metadata(&source).and_then(|m| m.modified()) {
        assert!(
            changed <= built,
            "the example binary {} is older than {}: rebuild the examples \
             (`cargo build -p palisade --examples`)",
            bin.display(),
            source.display()
        );
    }
    bin
}

/// Removes a named sandbox on drop, whatever the test did: a detached one left running would
/// outlive the test (and hold its output open).
pub struct Cleanup<'a>(pub &'a TempDir, pub &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(h) = Sandbox::open_in(self.0.path(), self.1) {
            let _ = h.force_delete();
        }
    }
}

/// A named sandbox made here and left running (its `Child` dropped, never waited for), opened
/// again by name as another process would.
pub fn detached(root: &TempDir, name: &str, builder: &mut SandboxBuilder) -> Handle {
    let child = builder
        .name(name)
        .state_root(root.path())
        .detach(true)
        .spawn()
        .unwrap();
    drop(child);
    Sandbox::open_in(root.path(), name).unwrap()
}
