//! What callers read: `state`, `list`, `ps`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use palisade::{Handle, Sandbox, Status};
use serde::Serialize;

use super::{open, rfc3339, status_of, CliError, Global, Result, BUNDLE_ANNOTATION, OCI_VERSION};

/// How `list` and `ps` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
}

// `list`'s options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the ids only.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// table or json.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

// `ps`'s options.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// table or json (an array of pids).
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The container's id.
    pub id: String,
    /// ps(1)'s options in runc; accepted and ignored.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub ps_args: Vec<String>,
}

/// The runtime spec's state of a container, with runc's additions (`rootfs`, `created`,
/// `owner`) that containerd's go-runc reads.
#[derive(Debug, Serialize)]
struct StateJson {
    #[serde(rename = "ociVersion")]
    oci_version: &'static str,
    id: String,
    pid: u32,
    status: &'static str,
    bundle: String,
    rootfs: String,
    created: String,
    owner: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// The container's bundle directory, recorded at create, and its annotations without that
/// record.
pub(super) fn bundle_and_annotations(
    state: &palisade::State,
) -> (String, BTreeMap<String, String>) {
    let mut annotations = state.annotations.clone();
    let bundle = annotations.remove(BUNDLE_ANNOTATION).unwrap_or_default();
    (bundle, annotations)
}

/// The pid the specification's state shows: the container's first process, 0 once stopped.
pub(super) fn state_pid(state: &palisade::State, status: &str) -> u32 {
    if status == "stopped" {
        0
    } else {
        state.process.pid
    }
}

fn state_of(h: &mut Handle) -> StateJson {
    let status = status_of(h);
    let state = h.state();
    let (bundle, annotations) = bundle_and_annotations(state);
    let rootfs = if Path::new(&state.rootfs).is_relative() && !bundle.is_empty() {
        Path::new(&bundle)
            .join(&state.rootfs)
            .to_string_lossy()
            .into_owned()
    } else {
        state.rootfs.clone()
    };
    StateJson {
        oci_version: OCI_VERSION,
        id: state.id.clone(),
        // The container's first process, as in the pid file (see `create`).
        pid: state_pid(state, status),
        status,
        bundle,
        rootfs,
        created: rfc3339(UNIX_EPOCH + Duration::from_secs(state.created)),
        owner: owner(),
        annotations,
    }
}

/// The owner's name as runc prints it: the user running the runtime.
fn owner() -> String {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 {
        "root".to_owned()
    } else {
        uid.to_string()
    }
}

fn print_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::msg(format!("encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

pub fn state(global: &Global, id: &str) -> Result<()> {
    let mut h = open(global, id)?;
    print_json(&state_of(&mut h))
}

pub fn list(global: &Global, args: ListArgs) -> Result<()> {
    let mut states: Vec<StateJson> = Sandbox::list_in(&global.root)?
        .iter_mut()
        .map(state_of)
        .collect();
    states.sort_by(|a, b| a.id.cmp(&b.id));
    if args.quiet {
        for s in &states {
            println!("{}", s.id);
        }
        return Ok(());
    }
    if args.format == Format::Json {
        return print_json(&states);
    }
    let rows: Vec<[String; 6]> =
        std::iter::once(["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(str::to_owned))
            .chain(states.into_iter().map(|s| {
                [
                    s.id,
                    s.pid.to_string(),
                    s.status.to_owned(),
                    s.bundle,
                    s.created,
                    s.owner,
                ]
            }))
            .collect();
    print_table(&rows);
    Ok(())
}

/// Prints rows in columns padded to their widest cell, as Go's tabwriter does for runc.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}

/// Every process of the container, by pid in this PID namespace: those of its cgroup (and its
/// groups' children), or without a cgroup its first process and that one's descendants.
pub fn pids(h: &mut Handle) -> Vec<u32> {
    let mut pids = BTreeSet::new();
    for dir in &h.state().cgroup {
        procs_under(dir, &mut pids);
    }
    if h.state().cgroup.is_empty() && h.status() != Status::Stopped {
        pids.insert(h.pid());
        descendants(h.pid(), &mut pids);
    }
    pids.into_iter().collect()
}

/// The pids in `cgroup.procs` of `dir` and of the groups below it (`cgroups(7)`).
fn procs_under(dir: &Path, pids: &mut BTreeSet<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                procs_under(&entry.path(), pids);
            }
        }
    }
}

/// Adds the descendants of `root`, from the parent pids of `/proc/<pid>/stat` (`proc(5)`).
fn descendants(root: u32, pids: &mut BTreeSet<u32>) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(pid, ppid) in &parents {
            if ppid == parent && pids.insert(pid) {
                frontier.push(pid);
            }
        }
    }
}

pub fn ps(global: &Global, args: PsArgs) -> Result<()> {
    let mut h = open(global, &args.id)?;
    let pids = pids(&mut h);
    if args.format == Format::Json {
        return print_json(&pids);
    }
    let rows: Vec<[String; 2]> = std::iter::once(["PID".to_owned(), "CMD".to_owned()])
        .chain(pids.into_iter().map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| {
                    raw.split(|&b| b == 0)
                        .filter(|a| !a.is_empty())
                        .map(String::from_utf8_lossy)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            [pid.to_string(), cmd]
        }))
        .collect();
    print_table(&rows);
    Ok(())
}
