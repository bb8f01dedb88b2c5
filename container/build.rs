//! Builds `palisade-init` (container/init/, a crate and workspace of its own), the sandbox's
//! static init program, into `$OUT_DIR/palisade-init`, where `src/spawn/init_image.rs` embeds it.
//!
//! The program has no libc and no start files: a freestanding, statically linked, non-PIE ELF
//! of a few KB that the sandbox executes from a sealed memfd. Its kernel ABI comes from the
//! `syscalls` and `linux-raw-sys` crates, so it is built by cargo (the `CARGO` that runs this
//! script, with its `RUSTC`), in release with the crate's own profile (`panic = "abort"`, LTO),
//! for the crate's `TARGET`, into a target directory under `$OUT_DIR`, with its lock file. The
//! program is linked by `cc` natively, by the target's configured linker (`RUSTC_LINKER`), or by
//! `rust-lld` when cross-compiling without one. Cargo's `RUSTFLAGS` and wrappers are not passed
//! on: the program's flags are fixed, whatever the profile of the build around it.

use std::env;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{exit, Command};

/// Architectures the init's entry point and seccomp filter are written for.
const SUPPORTED: [&str; 2] = ["x86_64", "aarch64"];

/// What the nested cargo may see of this script's environment: where cargo and the toolchain
/// live, whether the network may be used, and the jobserver, so that it shares the outer build's
/// job slots. Everything else (`RUSTFLAGS`, `CARGO_TARGET_DIR`, wrappers such as clippy's) stays
/// out.
const PASSED_ON: [&str; 8] = [
    "PATH",
    "HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_NET_OFFLINE",
    "CARGO_MAKEFLAGS",
    "CARGO_HTTP_TIMEOUT",
];

fn main() {
    let manifest = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    for (file, _) in INIT_FILES {
        println!("cargo:rerun-if-changed=init/{file}");
    }

    let arch = var("CARGO_CFG_TARGET_ARCH");
    let os = var("CARGO_CFG_TARGET_OS");
    if os != "linux" || !SUPPORTED.contains(&arch.as_str()) {
        fail(&format!(
            "palisade-init supports Linux on {} only, not {os} on {arch}",
            SUPPORTED.join(" and ")
        ));
    }

    let out = PathBuf::from(var("OUT_DIR"));
    // The init's crate is built from a copy in `$OUT_DIR`: its manifest is kept as
    // `Cargo.toml.in`, because cargo leaves a directory holding a `Cargo.toml` out of the
    // package it makes of this crate (`cargo package`), and the build of a published crate
    // would then find no init to build.
    let init = out.join("init-src");
    if let Err(e) = std::fs::create_dir_all(&init) {
        fail(&format!("cannot create {}: {e}", init.display()));
    }
    for (file, copy) in INIT_FILES {
        let from = manifest.join("init").join(file);
        if let Err(e) = std::fs::copy(&from, init.join(copy)) {
            fail(&format!("cannot copy {}: {e}", from.display()));
        }
    }
    let target_dir = out.join("init-target");
    let target = var("TARGET");
    let mut cargo = Command::new(var("CARGO"));
    cargo.env_clear();
    for name in PASSED_ON {
        if let Some(value) = env::var_os(name) {
            cargo.env(name, value);
        }
    }
    cargo
        .env("RUSTC", var("RUSTC"))
        .current_dir(&init)
        .args(["rustc", "--release", "--locked", "--quiet"])
        .arg("--manifest-path")
        .arg(init.join("Cargo.toml"))
        .arg("--target")
        .arg(&target)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--")
        .args(["-C", "relocation-model=static"]);
    // A musl target links its own start files and libc (`crt1.o`, `libc.a`) unless told not
    // to, and `crt1.o` brings a second `_start`.
    if var("CARGO_CFG_TARGET_ENV") == "musl" {
        cargo.args(["-C", "link-self-contained=no"]);
    }
    // No C runtime and no start files: the program brings its own `_start`.
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        // The C compiler driver configured for the target.
        let mut arg = OsString::from("linker=");
        arg.push(linker);
        cargo.arg("-C").arg(arg);
        cc_link_args(&mut cargo);
    } else if target != var("HOST") {
        // Cross-compiling without a configured linker: the host's `cc` cannot link for the
        // target, but the LLVM linker shipped with rustc can, and needs no C toolchain.
        cargo
            .args(["-C", "linker=rust-lld", "-C", "linker-flavor=ld.lld"])
            .args(["-C", "link-arg=-static", "-C", "link-arg=--build-id=none"]);
    } else {
        cc_link_args(&mut cargo);
    }

    match cargo.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building {} failed ({status}): {cargo:?}",
            init.display()
        )),
        Err(e) => fail(&format!("cannot run {cargo:?}: {e}")),
    }
    let built = target_dir
        .join(&target)
        .join("release")
        .join("palisade-init");
    if let Err(e) = std::fs::copy(&built, out.join("palisade-init")) {
        fail(&format!("cannot copy {}: {e}", built.display()));
    }
}

/// The init crate's files in `init/`, and their names in the copy that is built.
const INIT_FILES: [(&str, &str); 4] = [
    ("Cargo.toml.in", "Cargo.toml"),
    ("Cargo.lock", "Cargo.lock"),
    ("main.rs", "main.rs"),
    ("abi.rs", "abi.rs"),
];

/// Link arguments for a C compiler driver (`cc`): static, without start files or libraries.
fn cc_link_args(cargo: &mut Command) {
    cargo
        .args(["-C", "link-arg=-nostartfiles"])
        .args(["-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        .args(["-C", "link-arg=-Wl,--build-id=none"]);
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo:warning={message}");
    exit(1);
}
