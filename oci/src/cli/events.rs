//! `events`: a container's resource usage as runc's JSON events (`{"type":"stats",…}` every
//! interval, `{"type":"oom",…}` when the OOM killer kills in its cgroup), until it stops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use palisade::cgroup::{Cgroup, Stats};
use serde_json::{json, Map, Value};

use super::{open, status_of, CliError, Global, Result};

// `events`' options.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print the stats once, then exit.
    #[arg(long)]
    pub stats: bool,
    /// How often to print the stats (Go's duration form: `5s`, `100ms`, `1m30s`).
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    pub interval: String,
    /// The container's id.
    pub id: String,
}

/// Parses a duration as Go's `time.ParseDuration` does: numbers, each with a unit among
/// `ns`, `us`/`µs`, `ms`, `s`, `m` and `h`, one after the other.
fn parse_duration(text: &str) -> Result<Duration> {
    let bad = || CliError::msg(format!("invalid duration {text:?}"));
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..end].parse().map_err(|_| bad())?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Puts `value` under `key` unless it is zero, as Go's `omitempty` leaves it out.
fn put(map: &mut Map<String, Value>, key: &str, value: u64) {
    if value != 0 {
        map.insert(key.to_owned(), value.into());
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One counter of a device's block I/O, with runc's name for its operation.
type Counter = fn(&palisade::cgroup::IoDeviceStats) -> u64;

/// Palisade's stats in the shape of runc's `types.Stats` (CPU times in nanoseconds, an
/// unlimited memory limit as the largest u64, as runc reports cgroup v2's `max`).
fn stats_json(stats: &Stats, group: &Cgroup) -> Value {
    let mut data = Map::new();
    if let Some(cpu) = &stats.cpu {
        let mut usage = Map::new();
        usage.insert("kernel".to_owned(), nanos(cpu.system).into());
        usage.insert("user".to_owned(), nanos(cpu.user).into());
        put(&mut usage, "total", nanos(cpu.usage));
        let mut throttling = Map::new();
        put(&mut throttling, "periods", cpu.nr_periods);
        put(&mut throttling, "throttledPeriods", cpu.nr_throttled);
        put(&mut throttling, "throttledTime", nanos(cpu.throttled));
        data.insert(
            "cpu".to_owned(),
            json!({ "usage": usage, "throttling": throttling }),
        );
    }
    if let Some(memory) = &stats.memory {
        let failcnt = group.memory_events().ok().flatten().map_or(0, |e| e.max);
        let mut usage = Map::new();
        usage.insert(
            "limit".to_owned(),
            memory.limit.map_or(u64::MAX, |b| b.0).into(),
        );
        put(&mut usage, "usage", memory.current.0);
        put(&mut usage, "max", memory.peak.map_or(0, |b| b.0));
        usage.insert("failcnt".to_owned(), failcnt.into());
        let mut out = Map::new();
        // v2 names the page cache `file`, v1 `cache`.
        let cache = ["file", "total_cache", "cache"]
            .iter()
            .find_map(|k| memory.stat.get(*k))
            .copied()
            .unwrap_or(0);
        put(&mut out, "cache", cache);
        out.insert("usage".to_owned(), usage.into());
        if !memory.stat.is_empty() {
            let raw: BTreeMap<&str, u64> =
                memory.stat.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            out.insert("raw".to_owned(), json!(raw));
        }
        data.insert("memory".to_owned(), out.into());
    }
    if let Some(pids) = &stats.pids {
        let mut out = Map::new();
        put(&mut out, "current", pids.current);
        put(&mut out, "limit", pids.limit.unwrap_or(0));
        data.insert("pids".to_owned(), out.into());
    }
    if let Some(io) = &stats.io {
        let entries = |op_values: &[(&str, Counter)]| {
            io.devices
                .iter()
                .flat_map(|(dev, d)| {
                    op_values.iter().map(move |(op, get)| {
                        json!({
                            "major": dev.major,
                            "minor": dev.minor,
                            "op": op,
                            "value": get(d),
                        })
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut blkio = Map::new();
        let bytes = entries(&[("Read", |d| d.read_bytes), ("Write", |d| d.write_bytes)]);
        let ops = entries(&[("Read", |d| d.read_ops), ("Write", |d| d.write_ops)]);
        if !bytes.is_empty() {
            blkio.insert("ioServiceBytesRecursive".to_owned(), bytes.into());
            blkio.insert("ioServicedRecursive".to_owned(), ops.into());
        }
        data.insert("blkio".to_owned(), blkio.into());
    }
    data.into()
}

/// Prints one event a line, its keys in runc's order (`type`, `id`, `data`), which a JSON map
/// would sort.
fn print_event(kind: &str, id: &str, data: Option<Value>) {
    let (kind, id) = (Value::from(kind), Value::from(id));
    match data {
        Some(data) => println!(r#"{{"type":{kind},"id":{id},"data":{data}}}"#),
        None => println!(r#"{{"type":{kind},"id":{id}}}"#),
    }
}

fn oom_kills(group: &Cgroup) -> u64 {
    group
        .memory_events()
        .ok()
        .flatten()
        .map_or(0, |e| e.oom_kill)
}

/// The container's cgroup, where its stats are read.
fn group<'a>(h: &'a palisade::Handle, id: &str) -> Result<&'a Cgroup> {
    h.cgroup().ok_or_else(|| {
        CliError::msg(format!(
            "container {id} has no cgroup: there are no stats to report"
        ))
    })
}

pub fn events(global: &Global, args: EventsArgs) -> Result<()> {
    let interval = parse_duration(&args.interval)?;
    if interval.is_zero() {
        return Err(CliError::msg("duration interval must be greater than 0"));
    }
    let mut h = open(global, &args.id)?;
    if status_of(&mut h) == "stopped" {
        return Err(CliError::msg(format!(
            "container with id {} is not running",
            args.id
        )));
    }
    if args.stats {
        let g = group(&h, &args.id)?;
        print_event("stats", &args.id, Some(stats_json(&h.stats()?, g)));
        return Ok(());
    }
    let mut ooms = oom_kills(group(&h, &args.id)?);
    // OOM kills and the container's end are looked for more often than stats are printed.
    let poll = interval.min(Duration::from_millis(100));
    let mut next = Instant::now();
    loop {
        let g = group(&h, &args.id)?;
        let now_ooms = oom_kills(g);
        if now_ooms > ooms {
            print_event("oom", &args.id, None);
        }
        ooms = ooms.max(now_ooms);
        if Instant::now() >= next {
            // A read that races the container's end is no error: the loop ends below.
            if let Ok(stats) = g.stats() {
                print_event("stats", &args.id, Some(stats_json(&stats, g)));
            }
            next += interval;
        }
        if status_of(&mut h) == "stopped" {
            return Ok(());
        }
        std::thread::sleep(poll.min(next.saturating_duration_since(Instant::now())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("5s"), Duration::from_secs(5));
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("0"), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
