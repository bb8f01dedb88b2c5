//! The init. PID 1 of the sandbox is a process the command can see, signal and, with
//! `CAP_SYS_PTRACE`, trace: it must hold nothing of the caller's (memory, arguments,
//! environment) and no more privilege than the command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{sh, stdout_of};
use crate::lifetime::output_within;
use palisade::overlay::rootfs::Access;
use palisade::{Capability, Sandbox};
use palisade_test_support::{require_root, TempDir};

/// Compiles `probes/NAME.c` statically into `dir`, returning the binary's path.
pub(crate) fn compile_probe(dir: &TempDir, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/escapes/probes")
        .join(format!("{name}.c"));
    let bin = dir.path().join(name);
    let out = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc (gcc and libc6-dev are needed)");
    assert!(
        out.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// A value no other process can guess: 16 bytes of `getrandom(2)`, in hex.
fn unique_marker(tag: &str) -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, bytes.len() as isize);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("palisade-{tag}-{hex}")
}

/// A capability mask as `/proc/<pid>/status` prints it.
fn mask(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("not a capability mask: {hex}"))
}

#[test]
fn a_command_that_may_trace_the_init_finds_nothing_of_the_caller_there() {
    require_root!();
    let dir = TempDir::new("ptrace-init");
    compile_probe(&dir, "ptrace_init");
    // Held only by this process, for as long as the sandbox runs. The probe gets it reversed,
    // so that the plan's copy of its arguments is not what it finds.
    let secret = unique_marker("secret");
    let reversed: String = secret.chars().rev().collect();
    let mut b = Sandbox::builder("/probe/ptrace_init");
    b.arg(&reversed)
        .volume(dir.path(), "/probe", Access::ReadOnly)
        .cap_add(Capability::CAP_SYS_PTRACE);
    let out = stdout_of(&mut b);
    std::hint::black_box(&secret);
    let line = |key: &str| -> Vec<String> {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .split(' ')
            .map(str::to_owned)
            .collect()
    };
    let (me, init, found) = (line("self"), line("init"), line("found"));
    assert_eq!(
        found[0], "0",
        "the caller's secret is in PID 1's memory:\n{out}"
    );
    for (i, set) in ["CapEff", "CapBnd"].iter().enumerate() {
        let (mine, pid1) = (mask(&me[i]), mask(&init[i]));
        assert_eq!(
            pid1 & !mine,
            0,
            "PID 1's {set} {pid1:016x} exceeds the command's {mine:016x}:\n{out}"
        );
    }
}

#[test]
fn the_init_shows_neither_the_callers_arguments_nor_its_environment() {
    require_root!();
    // The caller is this binary run again, with a marker among its arguments (a test name
    // filter that matches nothing) and one in its environment.
    let argv_marker = unique_marker("argv");
    let env_marker = unique_marker("env");
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--exact",
        "init::probe_caller_shows_its_init",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        &argv_marker,
    ])
    .env("PALISADE_PROBE_CALLER", "1")
    .env("PALISADE_CALLER_MARKER", &env_marker);
    let out = output_within(cmd, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let seen = text
        .split_once("BEGIN\n")
        .and_then(|(_, rest)| rest.split_once("END\n"))
        .map(|(seen, _)| seen.to_owned())
        .unwrap_or_else(|| {
            panic!(
                "the caller did not run: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let exe_name = exe.file_name().unwrap().to_string_lossy().into_owned();
    for (what, marker) in [
        ("argument", argv_marker.as_str()),
        ("environment variable", env_marker.as_str()),
        ("program name", exe_name.as_str()),
    ] {
        assert!(
            !seen.contains(marker),
            "PID 1 shows the caller's {what} {marker}:\n{seen}"
        );
    }
}

/// Runs only as the caller of `the_init_shows_neither_the_callers_arguments_nor_its_environment`:
/// prints what PID 1 of a default sandbox shows as its command line and environment, between
/// `BEGIN` and `END` lines.
#[test]
#[ignore = "run as a subprocess by the_init_shows_neither_the_callers_arguments_nor_its_environment"]
fn probe_caller_shows_its_init() {
    assert!(std::env::var_os("PALISADE_PROBE_CALLER").is_some());
    println!();
    let seen = stdout_of(&mut sh(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; tr '\\0' '\\n' < /proc/1/environ; echo",
    ));
    println!("BEGIN\n{seen}END");
}

#[test]
fn the_init_has_no_new_privileges_and_a_syscall_filter() {
    require_root!();
    // A command that cannot trace PID 1 may start once the init is not dumpable, while the
    // init still installs its filter (see `spawn::init`): it is in place shortly after.
    let out = stdout_of(&mut sh(
        "for i in $(seq 500); do grep -q '^Seccomp:.2' /proc/1/status && break; sleep 0.01; \
         done; grep -E '^(NoNewPrivs|Seccomp):' /proc/1/status | tr -s '\\t' ' '",
    ));
    assert_eq!(
        out, "NoNewPrivs: 1\nSeccomp: 2\n",
        "PID 1 of a default sandbox"
    );
    // The control: the command itself is confined so.
    let out = stdout_of(&mut sh(
        "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t' ' '",
    ));
    assert_eq!(out, "NoNewPrivs: 1\nSeccomp: 2\n");
}

/// Without `CAP_SYS_PTRACE` the command cannot look into PID 1 at all: the init is not dumpable
/// (`PR_SET_DUMPABLE`), so even its `/proc/1/environ` and `/proc/1/mem` are refused to a process
/// of the same user (`proc(5)`, "ptrace access mode"). This holds from before the command runs
/// anything of its own.
#[test]
fn the_command_cannot_look_into_the_init() {
    require_root!();
    let script = "for f in /proc/1/environ /proc/1/mem /proc/self/environ; do \
                  if head -c 1 $f >/dev/null 2>&1; then echo $f readable; else echo $f refused; fi; \
                  done";
    assert_eq!(
        crate::common::stdout_of(&mut crate::common::sh(script)),
        "/proc/1/environ refused\n/proc/1/mem refused\n/proc/self/environ readable\n"
    );
}
