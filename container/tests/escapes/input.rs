//! Small input holes: values a caller passes on from an untrusted source (an image's config, a
//! request) that the kernel would accept but that make no sense, refused as typed errors before
//! anything is created.

use palisade_test_support::require_root;
use std::time::Duration;

use crate::common::run_example_code;
use palisade::cgroup::Bytes;
use palisade::{Error, Sandbox};

#[test]
fn a_hostname_that_is_no_hostname_is_refused() {
    // No root needed: refused by `build`, before any process exists.
    for name in ["bad/name", "bad name"] {
        let err = Sandbox::builder("true").hostname(name).build().err();
        assert!(
            matches!(
                err,
                Some(Error::InvalidValue {
                    what: "hostname",
                    ..
                })
            ),
            "hostname {name:?}: {err:?}"
        );
    }
    // The control: an ordinary name (and a dotted one) builds.
    Sandbox::builder("true").hostname("box-1").build().unwrap();
    Sandbox::builder("true")
        .hostname("box.example")
        .build()
        .unwrap();
}

#[test]
fn a_memory_limit_too_small_to_start_is_a_typed_error() {
    require_root!();
    // Past `build` the sandbox would be OOM-killed, or spin, as it starts: bound the attempt.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = Sandbox::builder("true")
            .memory_max(Bytes(1))
            .output()
            .map(|out| out.status.to_string());
        let _ = tx.send(result);
    });
    let result = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the spawn did not end within 10 s");
    assert!(
        matches!(
            result,
            Err(Error::Cgroup(_)) | Err(Error::InvalidValue { .. })
        ),
        "{result:?}"
    );
}

#[test]
fn a_volume_mode_that_is_no_mode_is_refused() {
    require_root!();
    let dir = palisade_test_support::TempDir::new("volume-mode");
    let host = dir.path().to_str().unwrap();
    // Once taken as part of the path: a read-write volume at `/b:RO`.
    for spec in [format!("{host}:/b:RO"), format!("{host}:/b:ro,xyz")] {
        let (code, stderr) = run_example_code(&["-v", &spec, "--", "true"]);
        assert_eq!(code, 125, "{spec}: {stderr}");
        assert!(stderr.contains("unknown mode"), "{spec}: {stderr}");
    }
    // Control: the modes there are work.
    for spec in [
        format!("{host}:/b:ro"),
        format!("{host}:/b:rw"),
        format!("{host}:/b"),
    ] {
        let (code, stderr) = run_example_code(&["-v", &spec, "--", "test", "-d", "/b"]);
        assert_eq!(code, 0, "{spec}: {stderr}");
    }
    let (code, stderr) = run_example_code(&["-h", "bad/name", "--", "true"]);
    assert_eq!(code, 125, "{stderr}");
    let (code, stderr) = run_example_code(&["--memory", "1", "--", "true"]);
    assert_eq!(code, 125, "{stderr}");
}

/// A sysctl from an untrusted config (OCI's `linux.sysctl`) with the host's own network
/// namespace joined by path would set the host's `net.*` parameters: refused. The host's value
/// is read before and after.
#[test]
fn a_sysctl_never_reaches_the_hosts_network_namespace() {
    require_root!();
    let path = "/proc/sys/net/ipv4/ip_forward";
    let before = std::fs::read_to_string(path).unwrap();
    let flipped = if before.trim() == "1" { "0" } else { "1" };
    let host = format!("/proc/{}/ns/net", std::process::id());
    let err = Sandbox::builder("true")
        .network(palisade::Network::join_path(&host))
        .sysctl("net.ipv4.ip_forward", flipped)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidValue { what: "sysctl", .. }),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(path).unwrap(), before);
    // Positive control: in a network namespace of its own, the same parameter is set there.
    let out = Sandbox::builder("cat")
        .arg(path)
        .sysctl("net.ipv4.ip_forward", flipped)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), flipped);
    assert_eq!(std::fs::read_to_string(path).unwrap(), before);
}
