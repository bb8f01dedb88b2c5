//! `docker ps`, the Palisade way: lists the named sandboxes recorded under a state root.
//!
//! ```text
//! cargo run --release --example ps -- [--root DIR] [-a]
//! ```
//!
//! Prints a table of NAME, STATUS, PID (of the sandbox's first process, while it runs), CREATED,
//! ADDRESS (on its bridge) and PORTS. Without `-a` only created and running sandboxes are listed,
//! as `docker ps`; with it stopped ones too, as `exited (CODE)`. Stopped sandboxes that
//! `run -d --rm` marked (`palisade.rm=true`) are removed first.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use palisade::{Error, Handle, Sandbox, Status};

/// The annotation by which `run -d --rm` marks a sandbox to remove once it exits.
const RM_ANNOTATION: &str = "palisade.rm";

/// List named sandboxes.
#[derive(Debug, Parser)]
#[command(name = "ps", version)]
struct Options {
    /// Where named sandboxes are recorded (default: `/run/palisade` for root,
    /// `$XDG_RUNTIME_DIR/palisade` otherwise).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Show stopped sandboxes too.
    #[arg(long, short = 'a')]
    all: bool,
}

fn main() -> ExitCode {
    let opts = Options::parse();
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ps: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `docker ps`'s way of saying how long ago: "5 seconds ago", "About a minute ago", ….
fn ago(created: u64, now: u64) -> String {
    if created == 0 {
        return "-".to_owned();
    }
    let secs = now.saturating_sub(created);
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0 => "Less than a second ago".to_owned(),
        1..=59 => plural(secs, "second"),
        60..=119 => "About a minute ago".to_owned(),
        120..=3599 => plural(secs / 60, "minute"),
        3600..=7199 => "About an hour ago".to_owned(),
        7200..=172_799 => plural(secs / 3600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

fn status_of(handle: &mut Handle) -> String {
    match handle.status() {
        Status::Stopped => match handle.state().exit {
            Some(status) => format!("exited ({})", status.shell_code()),
            // Without an init, or its creator died before recording it.
            None => "exited (unknown)".to_owned(),
        },
        other => other.to_string(),
    }
}

fn run(opts: &Options) -> Result<(), Error> {
    let root = opts
        .root
        .clone()
        .unwrap_or_else(palisade::state::default_root);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut rows =
        vec![["NAME", "STATUS", "PID", "CREATED", "ADDRESS", "PORTS"].map(str::to_owned)];
    for mut handle in Sandbox::list_in(&root)? {
        let status = handle.status();
        let remove = handle
            .state()
            .annotations
            .get(RM_ANNOTATION)
            .is_some_and(|v| v == "true");
        if status == Status::Stopped && remove {
            let id = handle.id().to_owned();
            match handle.delete() {
                // Removed by someone else meanwhile.
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => eprintln!("ps: removing {id}: {e}"),
            }
            continue;
        }
        if status == Status::Stopped && !opts.all {
            continue;
        }
        let state = handle.state();
        let pid = match status {
            Status::Stopped => "-".to_owned(),
            _ => state.process.pid.to_string(),
        };
        let address = state
            .network
            .as_ref()
            .map_or_else(|| "-".to_owned(), |(_, ip)| ip.to_string());
        let ports = state
            .ports
            .iter()
            .map(|p| format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.port, p.proto))
            .collect::<Vec<_>>()
            .join(", ");
        let created = ago(state.created, now);
        let name = state.id.clone();
        rows.push([name, status_of(&mut handle), pid, created, address, ports]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        println!("{}", line.trim_end());
    }
    Ok(())
}
