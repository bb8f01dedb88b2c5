//! Helpers of the `palisade` integration tests (included as `mod common;`).
#![allow(dead_code)]

use std::path::Path;

use palisade::overlay::rootfs::Access;
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
