//! `spec` and `features`: what a bundle starts from, and what this runtime supports.

use std::path::PathBuf;

use clap::Args;
use oci_spec::runtime::Spec;
use serde_json::json;

use super::{CliError, Result, OCI_VERSION};

// `spec`'s options.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The bundle's directory, where config.json is written.
    #[arg(short = 'b', long, value_name = "DIR", default_value = ".")]
    pub bundle: PathBuf,
    /// A spec for a rootless container: a user namespace mapping the caller to root.
    #[arg(long)]
    pub rootless: bool,
}

/// Writes runc's default `config.json`: `sh` on a terminal in `rootfs` (read-only), with
/// oci-spec's defaults for the mounts, masked paths and namespaces, and runc's capabilities.
pub fn spec(args: SpecArgs) -> Result<()> {
    let path = args.bundle.join("config.json");
    if path.exists() {
        return Err(CliError::msg("File config.json exists. Remove it first."));
    }
    let mut spec = if args.rootless {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        Spec::rootless(uid, gid)
    } else {
        Spec::default()
    };
    spec.set_version(OCI_VERSION.to_owned());
    spec.set_hostname(Some("palisade".to_owned()));
    if let Some(process) = spec.process_mut() {
        process.set_terminal(Some(true));
        // runc's spec holds its capabilities in the bounding, effective and permitted sets
        // only: inheritable and ambient ones would reach every program, privileged or not.
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_inheritable(None);
            caps.set_ambient(None);
            process.set_capabilities(Some(caps));
        }
    }
    if let Some(root) = spec.root_mut() {
        root.set_path(PathBuf::from("rootfs"));
        root.set_readonly(Some(true));
    }
    let text = serde_json::to_string_pretty(&spec)
        .map_err(|e| CliError::msg(format!("encode the spec: {e}")))?;
    std::fs::write(&path, text + "\n").map_err(CliError::io("write", &path))
}

/// Prints the runtime spec's features document (`features.md`): only what a bundle may use
/// with this runtime.
pub fn features() -> Result<()> {
    let capabilities: Vec<String> = palisade::Capabilities::all()
        .to_string()
        .split(',')
        .map(str::to_owned)
        .collect();
    let doc = json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [
            "prestart", "createRuntime", "createContainer", "startContainer", "poststart",
            "poststop"
        ],
        // The options of the mounts the bundle accepts (filesystem-specific data left out, as
        // the specification asks).
        "mountOptions": [
            "atime", "bind", "diratime", "exec", "idmap", "noatime", "nodev", "nodiratime",
            "noexec", "norelatime", "nostrictatime", "nosuid", "nosymfollow", "private",
            "ratime", "rbind", "rdiratime", "relatime", "rexec", "ridmap", "rnoatime",
            "rnodev", "rnodiratime", "rnoexec", "rnorelatime", "rnostrictatime", "rnosuid",
            "rnosymfollow", "ro", "rprivate", "rrelatime", "rro", "rrw", "rshared", "rslave",
            "rstrictatime", "rsuid", "rsymfollow", "runbindable", "rw", "shared", "slave",
            "strictatime", "suid", "symfollow", "unbindable"
        ],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": capabilities,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": true
            },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                    "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X86_64"]
            },
            "apparmor": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": true } },
            "selinux": { "enabled": false }
        },
        "annotations": {
            "org.palisade.oci.version": env!("CARGO_PKG_VERSION")
        }
    });
    let text = serde_json::to_string_pretty(&doc)
        .map_err(|e| CliError::msg(format!("encode the features: {e}")))?;
    println!("{text}");
    Ok(())
}
