//! Small input holes: values a caller passes on from an untrusted source (an image's config, a
//! request) that the kernel would accept but that make no sense, refused as typed errors before
//! anything is created.

use crate::require_root;
use std::time::Duration;

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
                Some(Error::InvalidArgument {
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
            Err(Error::Cgroup(_)) | Err(Error::InvalidArgument { .. })
        ),
        "{result:?}"
    );
}
