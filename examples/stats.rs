//! `docker stats` for one sandbox: runs a busy command under limits and prints its resource
//! usage once a second, read from the sandbox's cgroup.
//!
//! ```text
//! cargo run --release --example stats -- [--seconds N] [--cpus CPUS] [--memory BYTES] [-- CMD ...]
//! cargo run --release --example stats -- --seconds 3 --cpus 0.5
//! ```
//!
//! Without a command it runs two busy loops and a `tail` holding 96 MiB, so that the CPU limit and
//! memory use show.

use std::time::{Duration, Instant};

use clap::Parser;
use palisade::cgroup::{Bytes, Stats};
use palisade::{Error, Sandbox, Signal, Stdio};

/// Print a sandbox's live resource usage.
#[derive(Debug, Parser)]
#[command(name = "stats", version)]
struct Options {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// CPU limit in CPUs.
    #[arg(long, default_value_t = 1.0)]
    cpus: f64,
    /// Memory limit, e.g. `256M`.
    #[arg(long, short = 'm', default_value = "256M")]
    memory: Bytes,
    /// The command to run (default: a busy shell).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> Result<(), Error> {
    let opts = Options::parse();
    let command = if opts.command.is_empty() {
        ["sh", "-c", "(while :; do :; done) & (while :; do :; done) & head -c 96M /dev/zero | tail -c 96M | sleep 1000"]
            .map(String::from)
            .to_vec()
    } else {
        opts.command.clone()
    };
    let mut child = Sandbox::builder(&command[0])
        .args(&command[1..])
        .cpus(opts.cpus)
        .memory_max(opts.memory)
        .stdout(Stdio::null())
        .spawn()?;

    println!(
        "{:>6}  {:>8}  {:>22}  {:>5}  {:>21}  {:>10}",
        "TIME", "CPU %", "MEM USAGE / LIMIT", "PIDS", "BLOCK I/O", "THROTTLED"
    );
    let start = Instant::now();
    let mut last = (start, child.stats()?);
    while start.elapsed() < Duration::from_secs(opts.seconds) {
        std::thread::sleep(Duration::from_secs(1));
        if child.try_wait()?.is_some() {
            break;
        }
        let now = (Instant::now(), child.stats()?);
        print_line(start, &last, &now);
        last = now;
    }
    child.signal(Signal::SIGKILL)?;
    let status = child.wait()?;
    println!("sandbox ended: {status}");
    Ok(())
}

fn print_line(start: Instant, (t0, s0): &(Instant, Stats), (t1, s1): &(Instant, Stats)) {
    let wall = t1.duration_since(*t0).as_secs_f64();
    let cpu = match (&s0.cpu, &s1.cpu) {
        (Some(a), Some(b)) => format!("{:.1}%", (b.usage - a.usage).as_secs_f64() / wall * 100.0),
        _ => "-".into(),
    };
    let throttled = match (&s0.cpu, &s1.cpu) {
        (Some(a), Some(b)) => format!("{:.2}s", (b.throttled - a.throttled).as_secs_f64()),
        _ => "-".into(),
    };
    let mem = s1.memory.as_ref().map_or("-".into(), |m| {
        let limit = m
            .limit
            .map_or("unlimited".into(), |l| Bytes(l.0).to_string());
        format!("{} / {limit}", m.working_set())
    });
    let pids = s1.pids.map_or("-".into(), |p| p.current.to_string());
    let io = s1.io.as_ref().map_or("-".into(), |io| {
        let t = io.total();
        format!("{} / {}", Bytes(t.read_bytes), Bytes(t.write_bytes))
    });
    println!(
        "{:>5}s  {cpu:>8}  {mem:>22}  {pids:>5}  {io:>21}  {throttled:>10}",
        t1.duration_since(start).as_secs()
    );
}
