//! `docker run`, the Palisade way: runs a command in a sandbox and exits with its status.
//!
//! ```text
//! cargo run --release --example run -- [OPTIONS] -- CMD [ARGS...]
//! cargo run --release --example run -- --hostname box -- sh -c 'hostname; echo $$'
//! cargo run --release --example run -- --memory 64M --cpus 1.5 --pids-limit 64 -- sh -c 'tail /dev/zero'
//! cargo run --release --example run -- -d --name web -- sleep 1000
//! cargo run --release --example run -- --image /tmp/busybox-oci --user nobody -- id
//! cargo run --release --example run -- --image alpine -- echo hi
//! cargo run --release --example run -- --image localhost:5000/busybox --insecure -- echo hi
//! ```
//!
//! The command runs confined as `docker run` confines a container: Docker's default
//! capabilities, `no_new_privs`, and the default seccomp profile; `--cap-add`, `--cap-drop`,
//! `--user`, `--security-opt` and `--ulimit` change that.
//!
//! With a limit, the sandbox gets a cgroup of its own; `OOM-killed` is printed on stderr when the
//! kernel's OOM killer killed the command for going over `--memory`.
//!
//! Options keep `docker run`'s names. Exit status: the command's, 128 + signal when it was killed,
//! 125 when the sandbox could not be set up, 126 when the command could not be executed, 127 when
//! it was not found — as `docker run` reports them.
//!
//! With `--name` the sandbox is recorded under the state root (`--root`), so that the `exec`,
//! `ps` and `stop` examples find it by that name (which is also its hostname unless `-h` says
//! otherwise, as docker makes a container's id its hostname). It stays recorded, stopped, with
//! the command's status once it has exited, until `stop` removes it, or `--rm` removes it as soon
//! as it exits. `-d` (`--detach`) starts a named sandbox that outlives this program: it prints
//! the name (`pal-` and 8 random hex digits without `--name`) and exits; the sandbox's stdio is
//! `/dev/null`, since nothing can attach to it later. `-d --rm` marks it `palisade.rm=true`, and
//! `ps` and `stop` remove it once it has exited.
//!
//! `--image` takes an OCI image layout directory (`DIR[:TAG]`, imported into the layer store), or
//! else a registry reference (`alpine`, `ghcr.io/o/r:tag`, `localhost:5000/x@sha256:…`): the
//! image recorded under that name in the store, pulled first when it is not there, as
//! `docker run` does (`--pull always` pulls anyway; `--insecure` allows a plain-HTTP registry,
//! `--platform` picks from a multi-platform image). The pulled layers are verified against their
//! digests before anything of them is stored or run.
//!
//! With `--image`, the image's config applies as with `docker run`: its `Env` (under `-e`), its
//! `WorkingDir` (unless `-w`), its `User` (unless `--user`), and with no command after `--` its
//! `Entrypoint` and `Cmd`; a command replaces `Cmd`, `--entrypoint` replaces `Entrypoint`.
//! `--user` takes names, resolved with the `/etc/passwd` and `/etc/group` of the sandbox's root
//! (the image's, the `--rootfs` directory's, or the host's).

#[path = "common/mod.rs"]
mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use clap::Parser;
use palisade::cgroup::{Bytes, CpuSet, DeviceRule};
use palisade::image::{
    Image, LayerStore, NoProgress, OpaqueXattr, Platform, PullOptions, Reference, StoreOptions,
};
use palisade::netns::ipam::Subnet;
use palisade::netns::{Bridge, Network, PortMap};
use palisade::overlay::rootfs::{Access, MountAttr, Rootfs, Tmpfs, TmpfsOptions};
use palisade::seccomp::{JsonOptions, Profile};
use palisade::{
    parse_capability, Capabilities, ChildStep, Error, Rlimit, Sandbox, SandboxBuilder, Stdio,
};

/// Run a command in a Palisade sandbox.
#[derive(Debug, Parser)]
#[command(name = "run", version, disable_help_flag = true)]
struct Options {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Hostname inside the sandbox (`-h`, as in docker run).
    #[arg(long, short = 'h', value_name = "NAME")]
    hostname: Option<String>,
    /// Map the caller's uid and gid to root in a new user namespace (works unprivileged).
    #[arg(long)]
    rootless: bool,
    /// Run the command as PID 1 instead of under the minimal init.
    #[arg(long)]
    no_init: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the caller's value). Nothing else
    /// of the caller's environment is passed: the sandbox gets PATH, HOSTNAME and HOME (and
    /// TERM on a terminal), as with docker run.
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Pass the caller's whole environment (every token and secret in it).
    #[arg(long)]
    inherit_env: bool,
    /// Pass the caller's descriptors 3 to 3+N-1 to the command, as `runc --preserve-fds` does.
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: i32,
    /// Bound the sandbox's writes to its throwaway root layer and /tmp together, e.g. `256M`
    /// (default 1G).
    #[arg(long, value_name = "BYTES")]
    scratch_size: Option<Bytes>,
    /// With the default root, show the host's data and secrets too (/root, /home, /var, …,
    /// /etc/shadow): the whole host view, read-only under the throwaway layer.
    #[arg(long)]
    host_data: bool,
    /// Add a rule to the device policy, e.g. `c 10:200 rwm` (as docker's
    /// --device-cgroup-rule); the sandbox gets a cgroup that enforces it.
    #[arg(long = "device-cgroup-rule", value_name = "RULE")]
    device_rules: Vec<DeviceRule>,
    /// Working directory inside the sandbox (default: the image's WorkingDir, else `/`).
    #[arg(long, short = 'w', value_name = "DIR")]
    workdir: Option<String>,
    /// Give the command a terminal of the sandbox's own (`/dev/pts/0` inside), of this terminal's
    /// size, with this terminal in raw mode while it runs (as `docker run -t`).
    #[arg(long, short = 't')]
    tty: bool,
    /// Keep stdin open to the command (as `docker run -i`); without it the command's stdin is
    /// `/dev/null`. With `-t`, what is typed goes to the command's terminal.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// `none`: a network namespace of its own with only `lo` (up); `host`: the host's network
    /// stack; `bridge`: the bridge `palisade0` (10.213.0.0/16) with outbound NAT, or
    /// `bridge:NAME[:SUBNET]` for another; `container:PID`: the network namespace of process PID
    /// (e.g. another sandbox).
    #[arg(long, value_name = "MODE", default_value = "none")]
    network: String,
    /// With a bridge network: isolate its sandboxes from each other (they still reach the host,
    /// the outside and published ports). Every sandbox on one bridge must agree.
    #[arg(long = "isolate-sandboxes")]
    isolate_sandboxes: bool,
    /// Publish a port: `[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]` (host port 0: any free one).
    #[arg(long = "publish", short = 'p', value_name = "SPEC")]
    publish: Vec<PortMap>,
    /// Memory limit, e.g. `64M`, `1.5g`, `512k` (binary units, as docker).
    #[arg(long, short = 'm', value_name = "BYTES")]
    memory: Option<Bytes>,
    /// CPU limit in CPUs, e.g. `1.5`.
    #[arg(long, value_name = "CPUS")]
    cpus: Option<f64>,
    /// Maximum number of processes and threads in the sandbox, its init included.
    #[arg(long, value_name = "N")]
    pids_limit: Option<u64>,
    /// CPUs the sandbox may run on, e.g. `0-2,4`.
    #[arg(long, value_name = "LIST")]
    cpuset_cpus: Option<CpuSet>,
    /// Use this directory as the root file system (default: the host's `/` under a throwaway
    /// writable layer).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<std::path::PathBuf>,
    /// Use an image as the root file system and apply its config (Env, WorkingDir, User, and
    /// with no command its Entrypoint and Cmd): an OCI image layout directory, imported into the
    /// layer store first (TAG: the `org.opencontainers.image.ref.name` annotation; optional if
    /// the layout holds one image), or a registry reference, pulled if the store lacks it.
    #[arg(
        long,
        value_name = "OCI_LAYOUT_DIR[:TAG]|REF",
        conflicts_with = "rootfs"
    )]
    image: Option<String>,
    /// With a registry --image: `missing` (pull only when the store lacks it) or `always`.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "missing",
        requires = "image"
    )]
    pull: PullPolicy,
    /// With a registry --image: allow a plain-HTTP registry.
    #[arg(long, requires = "image")]
    insecure: bool,
    /// With a registry --image: the platform to take from a multi-platform image.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", requires = "image")]
    platform: Option<Platform>,
    /// With --image: run this program instead of the image's Entrypoint (and without its Cmd:
    /// the command after `--` follows it), as docker's --entrypoint; `''` clears it.
    #[arg(long, value_name = "CMD", requires = "image")]
    entrypoint: Option<String>,
    /// The layer store for --image (rootless, a store of its own: it marks opaque directories
    /// with `user.overlay.opaque`).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/palisade/layers")]
    store: std::path::PathBuf,
    /// Bind a host path into the sandbox: HOST:GUEST, HOST:GUEST:ro or HOST:GUEST:rw.
    #[arg(long = "volume", short = 'v', value_name = "HOST:GUEST[:ro|rw]")]
    volumes: Vec<String>,
    /// Make the root file system read-only.
    #[arg(long)]
    read_only: bool,
    /// Mount an empty tmpfs at this path, with options as docker's --tmpfs takes them:
    /// `size=BYTES` (e.g. `64m`), `mode=OCTAL` (at most 7777), `uid=N`, `gid=N`, `noexec`,
    /// `exec`, e.g. `/run:size=64m,mode=1777,uid=1000,gid=1000`. It replaces a mount at the same
    /// place (the sandbox's /tmp or /dev/shm, or a volume).
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// A mount as docker's --mount: `type=bind|tmpfs`, `source`/`src`, `target`/`dst`/
    /// `destination`, `readonly`/`ro`, and for a tmpfs `tmpfs-size`, `tmpfs-mode`, e.g.
    /// `type=bind,src=/srv/data,dst=/data,readonly`. `type=volume` (a named volume) is refused:
    /// Palisade keeps no volumes of its own; bind a directory instead.
    #[arg(long = "mount", value_name = "type=…,source=…,target=…")]
    mounts: Vec<String>,
    /// Read environment variables from a file, as docker's --env-file: `KEY=VALUE` lines (the
    /// value taken as written, quotes included), `#` comments, blank lines; a bare `KEY`
    /// passes the caller's value, if it has one. Applied before -e.
    #[arg(long = "env-file", value_name = "FILE")]
    env_files: Vec<std::path::PathBuf>,
    /// Share the host's mount table (seen through a private copy) instead of a root file system
    /// of the sandbox's own.
    #[arg(long)]
    host_mounts: bool,
    /// Run the command as this user, as docker's --user: `USER[:GROUP]`, names or ids, e.g.
    /// `1000:1000` or `app`. Names are resolved with the /etc/passwd and /etc/group of the
    /// sandbox's root, which also give a user its group (a uid without an entry gets group 0),
    /// supplementary groups and HOME.
    #[arg(long, short = 'u', value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Supplementary groups of the user given with --user.
    #[arg(long = "group-add", value_name = "GID")]
    group_add: Vec<u32>,
    /// Add a capability to Docker's default set (`NET_ADMIN`, `CAP_NET_ADMIN`, or `ALL`).
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from the set (`NET_RAW`, or `ALL`).
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// `seccomp=unconfined`, `seccomp=PROFILE.json` (a Docker/OCI profile), or
    /// `no-new-privileges[=true|false]` (on by default).
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// A resource limit, `NAME=SOFT[:HARD]`, e.g. `nofile=1024:2048` (as docker's --ulimit).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<Rlimit>,
    /// Run the sandbox in the background, detached from this program: print its name and exit
    /// (as `docker run -d`). Its stdio is `/dev/null`.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Name the sandbox and record it under the state root, for `exec`, `ps` and `stop`.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Remove the sandbox's record once it exits (with `-d`: the next `ps` or `stop` after it
    /// exits does).
    #[arg(long)]
    rm: bool,
    /// Where named sandboxes are recorded (default: `/run/palisade` for root,
    /// `$XDG_RUNTIME_DIR/palisade` otherwise).
    #[arg(long, value_name = "DIR")]
    root: Option<std::path::PathBuf>,
    /// Label the sandbox's record, `KEY=VALUE` (or `KEY`, empty value), as docker's --label
    /// (only named sandboxes are recorded).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The command and its arguments (with --image, optional: the image's default).
    #[arg(required_unless_present = "image", trailing_var_arg = true)]
    command: Vec<String>,
}

/// `HOST:GUEST[:MODE]`, MODE a comma-separated list of `ro` and `rw`; anything else is refused
/// rather than taken as part of the path.
fn parse_volume(spec: &str) -> Result<(&str, &str, Access), Error> {
    let bad = |reason| Error::InvalidValue {
        what: "volume",
        value: spec.to_owned(),
        reason,
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(host), Some(guest)) = (parts.next(), parts.next()) else {
        return Err(bad("expected HOST:GUEST[:ro|rw]"));
    };
    if host.is_empty() || guest.is_empty() {
        return Err(bad("expected HOST:GUEST[:ro|rw]"));
    }
    let mut access = Access::ReadWrite;
    if let Some(modes) = parts.next() {
        for mode in modes.split(',') {
            access = match mode {
                "ro" => Access::ReadOnly,
                "rw" => Access::ReadWrite,
                _ => return Err(bad("unknown mode: the modes are ro and rw")),
            };
        }
    }
    Ok((host, guest, access))
}

/// `PATH[:OPTIONS]` of --tmpfs: docker's `size`, `mode`, `uid`, `gid`, `noexec` and `exec`;
/// anything else, a bad number, a mode above 7777 and a size of 0 are refused.
fn parse_tmpfs(spec: &str) -> Result<(Tmpfs, TmpfsOptions), Error> {
    let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
    let bad = |reason| Error::InvalidValue {
        what: "tmpfs",
        value: spec.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(bad("expected PATH[:size=…,mode=…,uid=…,gid=…]"));
    }
    let mut tmpfs = Tmpfs::new(path);
    let mut extra = TmpfsOptions::default();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("size", v)) => {
                tmpfs.size = Some(
                    parse_size(v)
                        .ok_or_else(|| bad("size: a number of bytes above 0, e.g. 64m"))?,
                )
            }
            Some(("mode", v)) => {
                tmpfs.mode =
                    parse_mode(v).ok_or_else(|| bad("mode: an octal mode, at most 7777"))?
            }
            Some(("uid", v)) => {
                extra.uid = Some(parse_id(v).ok_or_else(|| bad("uid: a number below 4294967295"))?)
            }
            Some(("gid", v)) => {
                extra.gid = Some(parse_id(v).ok_or_else(|| bad("gid: a number below 4294967295"))?)
            }
            None if option == "noexec" => tmpfs.noexec = true,
            None if option == "exec" => tmpfs.noexec = false,
            _ => {
                return Err(bad(
                    "unknown option: the options are size, mode, uid, gid, noexec and exec",
                ))
            }
        }
    }
    Ok((tmpfs, extra))
}

/// A size as docker takes it: bytes, or with a binary unit (`k`, `m`, `g`, `t`, `b`); not 0.
fn parse_size(v: &str) -> Option<u64> {
    let bytes = v.parse::<Bytes>().ok()?.get();
    (bytes > 0).then_some(bytes)
}

/// An octal mode of at most `07777`.
fn parse_mode(v: &str) -> Option<u32> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777)
}

/// A user or group id (-1 is none).
fn parse_id(v: &str) -> Option<u32> {
    v.parse::<u32>().ok().filter(|id| *id != u32::MAX)
}

/// A docker --mount: a bind or a tmpfs.
enum MountSpec {
    Bind(String, String, Access),
    Tmpfs(Tmpfs, TmpfsOptions),
}

/// Parses docker's --mount syntax (`key=value` pairs, comma-separated; `readonly` alone).
fn parse_mount(spec: &str) -> Result<MountSpec, Error> {
    let bad = |reason| Error::InvalidValue {
        what: "mount",
        value: spec.to_owned(),
        reason,
    };
    let (mut kind, mut source, mut target, mut read_only) = (None, None, None, false);
    let (mut size, mut mode) = (None, None);
    for field in spec.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (key, value) {
            ("type", Some(v)) => kind = Some(v),
            ("source" | "src", Some(v)) => source = Some(v),
            ("target" | "dst" | "destination", Some(v)) => target = Some(v),
            ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => read_only = false,
            ("tmpfs-size", Some(v)) => {
                size = Some(
                    parse_size(v)
                        .ok_or_else(|| bad("tmpfs-size: a number of bytes above 0, e.g. 64m"))?,
                )
            }
            ("tmpfs-mode", Some(v)) => {
                mode = Some(
                    parse_mode(v).ok_or_else(|| bad("tmpfs-mode: an octal mode, at most 7777"))?,
                )
            }
            _ => {
                return Err(bad(
                    "unknown key or bad value: the keys are type, source (src), target (dst, \
                     destination), readonly (ro), tmpfs-size and tmpfs-mode",
                ))
            }
        }
    }
    let Some(target) = target.filter(|t| !t.is_empty()) else {
        return Err(bad("a target is needed"));
    };
    match kind {
        Some("bind") => {
            let Some(source) = source.filter(|s| !s.is_empty()) else {
                return Err(bad("a bind needs a source"));
            };
            if size.is_some() || mode.is_some() {
                return Err(bad("tmpfs-size and tmpfs-mode are for type=tmpfs"));
            }
            let access = if read_only {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            };
            Ok(MountSpec::Bind(
                source.to_owned(),
                target.to_owned(),
                access,
            ))
        }
        Some("tmpfs") => {
            if source.is_some() {
                return Err(bad("a tmpfs takes no source"));
            }
            let mut tmpfs = Tmpfs::new(target);
            tmpfs.size = size;
            tmpfs.mode = mode.unwrap_or(tmpfs.mode);
            let mut options = TmpfsOptions::default();
            if read_only {
                options.attrs.set = MountAttr::RDONLY;
            }
            Ok(MountSpec::Tmpfs(tmpfs, options))
        }
        Some("volume") => Err(bad(
            "named volumes are not supported: Palisade keeps no volume store; create a \
             directory and use type=bind,source=DIR",
        )),
        _ => Err(bad("type must be bind or tmpfs")),
    }
}

/// The variables of a docker --env-file: `KEY=VALUE` lines, the value as written; a bare `KEY`
/// takes the caller's value (and is left out if the caller has none); `#` comments and blank
/// lines are skipped. Leading whitespace of a line is ignored, as docker ignores it.
fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Setup {
        what: "read the --env-file",
        source,
    })?;
    let mut vars = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::InvalidValue {
                what: "--env-file line",
                value: format!("{}:{}: {line}", path.display(), n + 1),
                reason: "expected KEY=VALUE or KEY, the key without whitespace",
            });
        }
        let value = match value {
            Some(v) => v,
            None => match std::env::var(key) {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        vars.push((key.to_owned(), value));
    }
    Ok(vars)
}

/// The annotation by which `ps` and `stop` know a detached sandbox to remove once it exits.
const RM_ANNOTATION: &str = "palisade.rm";

/// A name for a detached sandbox given none: `pal-` and 8 hex digits, from `/dev/urandom` (or,
/// failing that, the time and pid).
fn generated_name() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    let n = match random {
        Ok(()) => u32::from_ne_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            nanos ^ std::process::id().rotate_left(16)
        }
    };
    format!("pal-{n:08x}")
}

fn main() -> ExitCode {
    let opts = Options::parse();
    if opts.detach && (opts.tty || opts.interactive) {
        // There is no `attach`: a detached sandbox's terminal or stdin would have no reader.
        eprintln!(
            "run: -d cannot be combined with -t or -i: nothing can attach to a detached sandbox"
        );
        return ExitCode::from(125);
    }
    match run(&opts) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("run: {err}");
            // SAFETY: geteuid cannot fail.
            if err.errno() == Some(libc::EPERM) && unsafe { libc::geteuid() } != 0 {
                eprintln!("run: creating namespaces needs root; add --rootless to run without it");
            }
            ExitCode::from(match &err {
                Error::Child {
                    step: ChildStep::Exec,
                    source,
                    ..
                } if source.raw_os_error() == Some(libc::ENOENT) => 127,
                Error::Child {
                    step: ChildStep::Exec,
                    ..
                } => 126,
                _ => 125,
            })
        }
    }
}

fn network(mode: &str, isolate: bool) -> Result<Network, Error> {
    match (network_mode(mode)?, isolate) {
        (Network::Bridge(bridge), true) => Ok(Network::bridge(bridge.isolate(true))),
        (_, true) => Err(Error::InvalidValue {
            what: "--isolate-sandboxes",
            value: mode.to_owned(),
            reason: "needs a bridge network",
        }),
        (network, false) => Ok(network),
    }
}

fn network_mode(mode: &str) -> Result<Network, Error> {
    let bad = || Error::InvalidValue {
        what: "network",
        value: mode.to_owned(),
        reason: "expected none, host, bridge[:NAME[:SUBNET]] or container:PID",
    };
    Ok(match mode {
        "none" => Network::none(),
        "host" => Network::host(),
        "bridge" => Network::bridge(Bridge::default()),
        other => {
            if let Some(pid) = other.strip_prefix("container:") {
                Network::join_pid(pid.parse().map_err(|_| bad())?)
            } else if let Some(spec) = other.strip_prefix("bridge:") {
                let (name, subnet) = match spec.split_once(':') {
                    Some((name, subnet)) => (name, Some(subnet.parse::<Subnet>()?)),
                    None => (spec, None),
                };
                let mut bridge = Bridge::new(name)?;
                if let Some(subnet) = subnet {
                    bridge = bridge.subnet(subnet);
                }
                Network::bridge(bridge)
            } else {
                return Err(bad());
            }
        }
    })
}

/// Applies --user, --group-add, --cap-add, --cap-drop, --security-opt and --ulimit. Drops
/// are applied before adds, so `--cap-drop ALL --cap-add NET_BIND_SERVICE` keeps one.
fn security(builder: &mut SandboxBuilder, opts: &Options) -> Result<(), Error> {
    if let Some(user) = &opts.user {
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        match user.split_once(':') {
            // Both ids given: nothing to look up.
            Some((uid, gid)) if numeric(uid) && numeric(gid) => {
                let (uid, gid) = common::parse_user(user)?;
                builder.user(uid, gid);
            }
            // Resolved when the sandbox is built, in its root.
            _ => {
                builder.user_name(user);
            }
        }
    }
    if !opts.group_add.is_empty() {
        builder.groups(opts.group_add.iter().copied());
    }
    // The set, also for the `includes` of a JSON profile.
    let mut caps = Capabilities::docker_default();
    for cap in &opts.cap_drop {
        if cap.eq_ignore_ascii_case("ALL") {
            builder.cap_drop_all();
            caps = Capabilities::empty();
        } else {
            let cap = parse_capability(cap)?;
            builder.cap_drop(cap);
            caps.remove(cap);
        }
    }
    for cap in &opts.cap_add {
        if cap.eq_ignore_ascii_case("ALL") {
            builder.capabilities(Capabilities::all());
            caps = Capabilities::all();
        } else {
            let cap = parse_capability(cap)?;
            builder.cap_add(cap);
            caps.insert(cap);
        }
    }
    let json = JsonOptions {
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        ..JsonOptions::default()
    };
    for opt in &opts.security_opt {
        match opt.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => {
                builder.seccomp(Profile::unconfined());
            }
            Some(("seccomp", path)) => {
                builder.seccomp(Profile::from_json_file(path, &json)?);
            }
            Some(("no-new-privileges", value)) => {
                let on = value.parse::<bool>().map_err(|_| Error::InvalidValue {
                    what: "security option",
                    value: opt.clone(),
                    reason: "no-new-privileges takes true or false",
                })?;
                builder.no_new_privs(on);
            }
            None if opt == "no-new-privileges" => {
                builder.no_new_privs(true);
            }
            _ => {
                return Err(Error::InvalidValue {
                    what: "security option",
                    value: opt.clone(),
                    reason: "expected seccomp=unconfined, seccomp=PROFILE.json or \
                             no-new-privileges[=true|false]",
                })
            }
        }
    }
    for limit in &opts.ulimit {
        builder.rlimit(*limit);
    }
    Ok(())
}

/// When `run` pulls a registry `--image`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PullPolicy {
    /// Only when the store has no image of that name (or lacks one of its layers).
    Missing,
    /// Every time (layers already stored are not fetched again).
    Always,
}

/// The `--image`: an OCI image layout directory imported into the layer store, or a registry
/// reference: the image recorded under it, pulled when missing.
fn import_image(spec: &str, opts: &Options) -> Result<Image, Error> {
    let (dir, tag) = match spec.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => (dir, Some(tag)),
        _ => (spec, None),
    };
    // Rootless overlays read `user.overlay.*` xattrs (`userxattr`).
    let xattr = if opts.rootless {
        OpaqueXattr::User
    } else {
        OpaqueXattr::Trusted
    };
    let options = StoreOptions::new().opaque_xattr(xattr);
    let store = LayerStore::open_with(&opts.store, options)?;
    if std::path::Path::new(dir).is_dir() {
        return Ok(store.import(dir, tag)?);
    }
    let reference: Reference = spec.parse()?;
    if opts.pull == PullPolicy::Missing {
        match store.image(&reference.to_string()) {
            Ok(Some(image)) => return Ok(image),
            // A layer of it was removed or quarantined: the pull stores it again.
            Ok(None) | Err(palisade::image::Error::LayerMissing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut pull = PullOptions::new().insecure(opts.insecure);
    if let Some(platform) = &opts.platform {
        pull = pull.platform(platform.clone());
    }
    eprintln!("pulling {reference}");
    Ok(store.pull(&reference, &pull, &NoProgress)?)
}

fn run(opts: &Options) -> Result<u8, Error> {
    let image = match (&opts.image, opts.host_mounts) {
        (Some(spec), false) => Some(import_image(spec, opts)?),
        _ => None,
    };
    let mut builder = match &image {
        // The image's command, Entrypoint and Cmd replaced as docker replaces them, and its
        // config's defaults.
        Some(image) => {
            let entrypoint = opts.entrypoint.as_ref().map(|e| {
                if e.is_empty() {
                    vec![]
                } else {
                    vec![e.clone()]
                }
            });
            Sandbox::from_image(image, entrypoint.as_deref(), &opts.command)?
        }
        None => {
            let Some((program, args)) = opts.command.split_first() else {
                return Err(Error::InvalidValue {
                    what: "command",
                    value: String::new(),
                    reason: "a command is needed without --image",
                });
            };
            let mut builder = Sandbox::builder(program);
            builder.args(args);
            builder
        }
    };
    builder.init(!opts.no_init);
    let name = match (&opts.name, opts.detach) {
        (Some(name), _) => Some(name.clone()),
        (None, true) => Some(generated_name()),
        (None, false) => None,
    };
    if let Some(name) = &name {
        builder.name(name);
        builder.state_root(
            opts.root
                .clone()
                .unwrap_or_else(palisade::state::default_root),
        );
        if opts.hostname.is_none() {
            builder.hostname(name);
        }
        for label in &opts.labels {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            builder.annotation(key, value);
        }
        if opts.detach {
            builder.detach(true);
            if opts.rm {
                builder.annotation(RM_ANNOTATION, "true");
            }
        }
    }
    builder.network(network(&opts.network, opts.isolate_sandboxes)?);
    for port in &opts.publish {
        builder.publish_port(*port);
    }
    if opts.rootless {
        builder.rootless();
    }
    if let Some(name) = &opts.hostname {
        builder.hostname(name);
    }
    if let Some(dir) = &opts.workdir {
        builder.current_dir(dir);
    }
    if opts.host_mounts {
        builder.host_mounts();
    } else {
        let mut rootfs = match (&opts.rootfs, &image) {
            (Some(dir), _) => Rootfs::dir(dir),
            // The image's layers, as `Sandbox::from_image` set them, with the volumes below.
            (None, Some(image)) => Rootfs::layers(image.lower_dirs()),
            (None, None) => Rootfs::host().show_host_data(opts.host_data),
        };
        for v in &opts.volumes {
            let (host, guest, access) = parse_volume(v)?;
            rootfs = rootfs.volume(host, guest, access);
        }
        for t in &opts.tmpfs {
            let (tmpfs, options) = parse_tmpfs(t)?;
            rootfs = rootfs.tmpfs_with_options(tmpfs, options);
        }
        for m in &opts.mounts {
            rootfs = match parse_mount(m)? {
                MountSpec::Bind(host, guest, access) => rootfs.volume(host, guest, access),
                MountSpec::Tmpfs(tmpfs, options) => rootfs.tmpfs_with_options(tmpfs, options),
            };
        }
        builder.rootfs(rootfs.read_only(opts.read_only));
    }
    security(&mut builder, opts)?;
    if let Some(bytes) = opts.memory {
        builder.memory_max(bytes);
    }
    if let Some(cpus) = opts.cpus {
        builder.cpus(cpus);
    }
    if let Some(n) = opts.pids_limit {
        builder.pids_max(n);
    }
    if let Some(set) = &opts.cpuset_cpus {
        builder.cpuset(set.clone());
    }
    if opts.inherit_env {
        builder.env_inherit_all();
    }
    for file in &opts.env_files {
        for (key, value) in read_env_file(file)? {
            builder.env(key, value);
        }
    }
    for var in &opts.env {
        match var.split_once('=') {
            Some((k, v)) => builder.env(k, v),
            None => builder.env_inherit(var),
        };
    }
    for fd in 3..3 + opts.preserve_fds.max(0) {
        // SAFETY: duplicates a descriptor the caller handed us; the copy is owned below.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if dup < 0 {
            return Err(Error::Setup {
                what: "duplicate a preserved descriptor",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh descriptor nothing else owns.
        builder.inherit_fd(fd, unsafe { OwnedFd::from_raw_fd(dup) });
    }
    if let Some(bytes) = opts.scratch_size {
        builder.scratch_size(bytes);
    }
    for rule in &opts.device_rules {
        builder.device(*rule);
    }

    if opts.detach {
        builder
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = builder.spawn()?;
        for p in child.ports() {
            eprintln!(
                "published {}:{} -> {}/{}",
                p.host_ip, p.host_port, p.port, p.proto
            );
        }
        // Dropping the handle of a detached sandbox leaves it running.
        drop(child);
        println!("{}", name.as_deref().unwrap_or_default());
        return Ok(0);
    }

    // Forward the signals a terminal or supervisor sends us to the sandbox, as `docker run`
    // does: block them here (the sandbox starts with an empty mask) and relay them from a thread.
    let set = common::block_forwarded_signals()?;

    if opts.tty {
        // The caller's size, when stdin is a terminal.
        let size = common::terminal_size();
        builder.tty_size(size);
    } else if !opts.interactive {
        builder.stdin(Stdio::null());
    }
    let mut child = builder.spawn()?;
    // With `-p 0:PORT` the kernel chose the host port: say which, as `docker port` would.
    for p in child.ports() {
        eprintln!(
            "published {}:{} -> {}/{}",
            p.host_ip, p.host_port, p.port, p.proto
        );
    }
    common::forward_signals(set, &child)?;
    common::relay_terminal(&mut child, opts.interactive)?;
    let status = child.wait()?;
    if status.oom_killed() {
        eprintln!("OOM-killed");
    }
    // Its network and cgroup are released with the handle, before the record goes.
    drop(child);
    if let (Some(name), true) = (&name, opts.rm) {
        let root = opts
            .root
            .clone()
            .unwrap_or_else(palisade::state::default_root);
        match Sandbox::open_in(&root, name).and_then(|h| h.delete()) {
            // Removed meanwhile, by `stop`.
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => eprintln!("run: removing {name}: {e}"),
        }
    }
    Ok(status.shell_code().clamp(0, 255) as u8)
}
