//! A code-execution service in miniature: runs untrusted shell snippets, each in a sandbox of its
//! own with a memory, process and CPU limit and a wall-clock timeout, and reports what each did:
//! its output, its exit, whether it ran out of time or memory, and the CPU time and peak memory it
//! used. One prepared builder serves every request (it is `Clone`).
//!
//! ```text
//! cargo run --release --example code_exec
//! cargo run --release --example code_exec -- 'echo hello' 'sleep 60' 'head -c 300M /dev/zero | tail'
//! ```
//!
//! With no arguments it runs four snippets that end in the four ways a service sees: success, a
//! failure, a timeout, and the OOM killer. Needs root (the cgroup and the namespaces).

use std::process::ExitCode;
use std::time::Duration;

use palisade::{Bytes, Sandbox, SandboxBuilder, Stdio};

/// What each snippet may use.
const MEMORY: Bytes = Bytes::mib(64);
const PIDS: u64 = 32;
const CPUS: f64 = 1.0;
const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of each stream the report shows.
const SHOWN: usize = 200;

/// The template every request starts from.
fn template() -> SandboxBuilder {
    let mut builder = Sandbox::builder("sh");
    builder
        .memory_max(MEMORY)
        .pids_max(PIDS)
        .cpus(CPUS)
        .timeout(TIMEOUT)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    builder
}

fn main() -> ExitCode {
    let mut snippets: Vec<String> = std::env::args().skip(1).collect();
    if snippets.is_empty() {
        snippets = [
            "echo 'hello from the sandbox'; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
            "echo 'about to fail' >&2; exit 3",
            "echo 'sleeping past the timeout'; sleep 60",
            "echo 'filling memory'; head -c 300M /dev/zero | tail",
        ]
        .map(str::to_owned)
        .to_vec();
    }
    let template = template();
    let mut failed = false;
    for (i, snippet) in snippets.iter().enumerate() {
        let mut request = template.clone();
        request.args(["-c", snippet]);
        println!("[{i}] $ {snippet}");
        match request.output() {
            Ok(output) => {
                let status = output.status;
                let verdict = if status.timed_out() {
                    "timed out".to_owned()
                } else if status.oom_killed() {
                    "killed: out of memory".to_owned()
                } else {
                    status.to_string()
                };
                println!("    {verdict}");
                let mib = |b: u64| b as f64 / (1 << 20) as f64;
                println!(
                    "    cpu {}, peak memory {}",
                    status
                        .cpu_time()
                        .map_or("unknown".into(), |t| format!("{t:.3?}")),
                    status
                        .peak_memory()
                        .map_or("unknown".into(), |b| format!("{:.1} MiB", mib(b))),
                );
                show("stdout", &output.stdout);
                show("stderr", &output.stderr);
            }
            Err(err) => {
                println!("    could not run: {err}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints the start of a captured stream.
fn show(name: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
    let more = if bytes.len() > SHOWN { " …" } else { "" };
    println!("    {name}: {}{more}", text.trim_end());
}
