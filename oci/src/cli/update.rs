//! `update`: new limits for a running container, from a JSON `LinuxResources` (`--resources`)
//! or from flags, mapped by the same code as `create`'s `linux.resources`.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use super::{open, status_of, CliError, Global, Result};

// `update`'s options. With `--resources`, the other options are ignored, as runc ignores them.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// A JSON file of the runtime spec's `linux.resources` (`-` for stdin).
    #[arg(short = 'r', long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (a `k`, `m`, `g` or `t` suffix multiplies by 1024s).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// Memory reservation (soft limit) in bytes.
    #[arg(
        long = "memory-reservation",
        value_name = "BYTES",
        allow_hyphen_values = true
    )]
    pub memory_reservation: Option<String>,
    /// Memory plus swap limit in bytes; -1 for unlimited swap.
    #[arg(long = "memory-swap", value_name = "BYTES", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// The most processes and threads the container may hold; -1 for no limit.
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// CPU time allowed in each period, in microseconds.
    #[arg(long = "cpu-quota", value_name = "USEC", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// The CPU bandwidth period, in microseconds.
    #[arg(long = "cpu-period", value_name = "USEC")]
    pub cpu_period: Option<u64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-share", alias = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// The CPUs the container may run on (`0-3,5`).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// The memory nodes the container may allocate from.
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// The container's id.
    pub id: String,
}

/// Parses a byte count as runc's `units.RAMInBytes` does: a number with an optional binary
/// suffix (`512m`, `1g`, `64KiB`); -1 passes through (unlimited where it means that).
fn bytes(flag: &str, text: &str) -> Result<i64> {
    let bad = || CliError::msg(format!("invalid value for {flag}: {text:?}"));
    let lower = text.trim().to_ascii_lowercase();
    if lower == "-1" {
        return Ok(-1);
    }
    let digits = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, suffix) = lower.split_at(digits);
    let shift = match suffix.trim().trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scaled = value * (1u64 << shift) as f64;
    if !scaled.is_finite() || scaled < 0.0 || scaled >= i64::MAX as f64 {
        return Err(bad());
    }
    Ok(scaled as i64)
}

/// The flags as the runtime spec's `linux.resources` JSON, so that they go through the same
/// mapping (and the same refusals) as a `--resources` file.
fn from_flags(args: &UpdateArgs) -> Result<Value> {
    let mut memory = Map::new();
    for (flag, key, value) in [
        ("--memory", "limit", &args.memory),
        (
            "--memory-reservation",
            "reservation",
            &args.memory_reservation,
        ),
        ("--memory-swap", "swap", &args.memory_swap),
    ] {
        if let Some(text) = value {
            memory.insert(key.to_owned(), bytes(flag, text)?.into());
        }
    }
    let mut cpu = Map::new();
    if let Some(v) = args.cpu_shares {
        cpu.insert("shares".to_owned(), v.into());
    }
    if let Some(v) = args.cpu_quota {
        cpu.insert("quota".to_owned(), v.into());
    }
    if let Some(v) = args.cpu_period {
        cpu.insert("period".to_owned(), v.into());
    }
    if let Some(v) = &args.cpuset_cpus {
        cpu.insert("cpus".to_owned(), v.clone().into());
    }
    if let Some(v) = &args.cpuset_mems {
        cpu.insert("mems".to_owned(), v.clone().into());
    }
    let mut out = Map::new();
    if !memory.is_empty() {
        out.insert("memory".to_owned(), memory.into());
    }
    if !cpu.is_empty() {
        out.insert("cpu".to_owned(), cpu.into());
    }
    if let Some(limit) = args.pids_limit {
        out.insert("pids".to_owned(), json!({ "limit": limit }));
    }
    Ok(out.into())
}

/// The resources to apply and the file they are from (for error messages).
fn requested(args: &UpdateArgs) -> Result<(LinuxResources, PathBuf)> {
    let Some(path) = &args.resources else {
        let value = from_flags(args)?;
        let r = serde_json::from_value(value)
            .map_err(|e| CliError::msg(format!("invalid resource flags: {e}")))?;
        return Ok((r, PathBuf::from("update flags")));
    };
    let mut text = Vec::new();
    let source = if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(CliError::io("read the resources from", "stdin"))?;
        PathBuf::from("stdin")
    } else {
        text = std::fs::read(path).map_err(CliError::io("read the resources file", path))?;
        path.clone()
    };
    let r = serde_json::from_slice(&text)
        .map_err(|e| CliError::msg(format!("decode {}: {e}", source.display())))?;
    Ok((r, source))
}

pub fn update(global: &Global, args: UpdateArgs) -> Result<()> {
    let (resources, source) = requested(&args)?;
    // Mapped before the container is looked at: a refused field changes nothing.
    let resources = palisade_oci::Bundle::cgroup_resources(&resources, &source)?;
    let mut h = open(global, &args.id)?;
    if status_of(&mut h) == "stopped" {
        return Err(CliError::msg(format!(
            "cannot update a stopped container {}",
            args.id
        )));
    }
    if resources.is_empty() {
        return Ok(());
    }
    h.update(&resources)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(bytes("--memory", "1024").unwrap(), 1024);
        assert_eq!(bytes("--memory", "512m").unwrap(), 512 << 20);
        assert_eq!(bytes("--memory", "1G").unwrap(), 1 << 30);
        assert_eq!(bytes("--memory", "64KiB").unwrap(), 64 << 10);
        assert_eq!(bytes("--memory", "-1").unwrap(), -1);
        assert!(bytes("--memory", "lots").is_err());
        assert!(bytes("--memory", "5x").is_err());
    }
}
