//! `docker stop` and `docker rm` in one, the Palisade way: stops named sandboxes and removes
//! their records.
//!
//! ```text
//! cargo run --release --example stop -- [--root DIR] [-t SECONDS] NAME...
//! ```
//!
//! Each running sandbox gets SIGTERM (its init forwards it to the command), then, if it still
//! runs after the grace period (`-t`, 10 seconds by default), SIGKILL for every process of it;
//! then it is removed: its cgroup, what its network left, and its record. A sandbox that has
//! stopped already is just removed. Each name is printed once it is gone; the exit status is 1
//! if any of them could not be stopped or removed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use palisade::{Error, Sandbox, Signal, Status};

/// Stop and remove named sandboxes.
#[derive(Debug, Parser)]
#[command(name = "stop", version)]
struct Options {
    /// Where named sandboxes are recorded (default: `/run/palisade` for root,
    /// `$XDG_RUNTIME_DIR/palisade` otherwise).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Seconds to wait after SIGTERM before killing.
    #[arg(
        long = "time",
        short = 't',
        value_name = "SECONDS",
        default_value_t = 10
    )]
    time: u64,
    /// The sandboxes' names.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
}

fn main() -> ExitCode {
    let opts = Options::parse();
    let root = opts
        .root
        .clone()
        .unwrap_or_else(palisade::state::default_root);
    let mut failed = false;
    for name in &opts.names {
        match stop(&root, name, Duration::from_secs(opts.time)) {
            Ok(()) => println!("{name}"),
            Err(err) => {
                eprintln!("stop: {name}: {err}");
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

fn stop(root: &Path, name: &str, grace: Duration) -> Result<(), Error> {
    let mut handle = Sandbox::open_in(root, name)?;
    if handle.status() == Status::Stopped {
        return handle.delete();
    }
    match handle.signal(Signal::SIGTERM) {
        // It stopped meanwhile.
        Ok(()) | Err(Error::NotRunning { .. }) => {}
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + grace;
    while handle.status() != Status::Stopped && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if handle.status() == Status::Stopped {
        handle.delete()
    } else {
        // SIGKILL to its first process and its cgroup, the wait, and the removal.
        handle.force_delete()
    }
}
