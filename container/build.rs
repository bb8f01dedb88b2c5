//! Builds `palisade-init` (container/init/), the sandbox's static init program, into
//! `$OUT_DIR/palisade-init`, where `src/spawn/init_image.rs` embeds it.
//!
//! The program has no libc and no start files: a freestanding, statically linked, non-PIE ELF
//! of a few KB that the sandbox executes from a sealed memfd. It is compiled with the `RUSTC`
//! cargo runs (wrappers such as clippy-driver are left out) for the crate's `TARGET`, linked by
//! `cc` natively, by the target's configured linker (`RUSTC_LINKER`), or by `rust-lld` when
//! cross-compiling without one. Cargo's `RUSTFLAGS` are not passed on: the program's flags are
//! fixed, whatever the profile.

use std::env;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{exit, Command};

/// Architectures the init's system calls, entry point and seccomp filter are written for.
const SUPPORTED: [&str; 2] = ["x86_64", "aarch64"];

fn main() {
    let manifest = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let source = manifest.join("init").join("main.rs");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=init");

    let arch = var("CARGO_CFG_TARGET_ARCH");
    let os = var("CARGO_CFG_TARGET_OS");
    if os != "linux" || !SUPPORTED.contains(&arch.as_str()) {
        fail(&format!(
            "palisade-init supports Linux on {} only, not {os} on {arch}",
            SUPPORTED.join(" and ")
        ));
    }

    let output = PathBuf::from(var("OUT_DIR")).join("palisade-init");
    let mut rustc = Command::new(var("RUSTC"));
    rustc
        .arg("--target")
        .arg(var("TARGET"))
        .args(["--crate-type", "bin", "--crate-name", "palisade_init"])
        .args(["--edition", "2021"])
        .args(["-C", "panic=abort"])
        .args(["-C", "opt-level=s"])
        .args(["-C", "codegen-units=1"])
        .args(["-C", "debuginfo=0"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "strip=symbols"]);
    // No C runtime and no start files: the program brings its own `_start`.
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        // The C compiler driver configured for the target.
        let mut arg = OsString::from("linker=");
        arg.push(linker);
        rustc.arg("-C").arg(arg);
        cc_link_args(&mut rustc);
    } else if var("TARGET") != var("HOST") {
        // Cross-compiling without a configured linker: the host's `cc` cannot link for the
        // target, but the LLVM linker shipped with rustc can, and needs no C toolchain.
        rustc
            .args(["-C", "linker=rust-lld", "-C", "linker-flavor=ld.lld"])
            .args(["-C", "link-arg=-static", "-C", "link-arg=--build-id=none"]);
    } else {
        cc_link_args(&mut rustc);
    }
    rustc.arg("-o").arg(&output).arg(&source);

    match rustc.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "compiling {} failed ({status}): {rustc:?}",
            source.display()
        )),
        Err(e) => fail(&format!("cannot run {rustc:?}: {e}")),
    }
}

/// Link arguments for a C compiler driver (`cc`): static, without start files or libraries.
fn cc_link_args(rustc: &mut Command) {
    rustc
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
