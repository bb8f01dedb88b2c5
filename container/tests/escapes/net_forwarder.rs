//! The userspace forwarder. A published port of a sandbox without a bridge (and a bridge
//! sandbox's port reached from the host itself) is served by a forwarder in the caller's
//! process. Anyone who can reach the port could open connections until the caller had no
//! descriptor left (each took a thread and about six of them), which stopped every published
//! port and spun the accept loop on the errors. Sessions are bounded, and so is the share of
//! the caller's descriptors they may take.

use palisade_test_support::require_root;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio as StdStdio;
use std::time::{Duration, Instant};

use crate::lifetime::{kill, pidfd, self_probe};
use palisade::netns::Proto;
use palisade::{Sandbox, Stdio};

/// Connects to the published port and reads what the server says, retrying while it starts.
fn ask(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            if !out.is_empty() || Instant::now() > deadline {
                return out;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the published port never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_flood_of_connections_cannot_exhaust_the_callers_descriptors() {
    require_root!();
    let mut caller = self_probe("net_forwarder::probe_caller_with_a_published_port")
        .stdin(StdStdio::piped())
        .stdout(StdStdio::piped())
        .stderr(StdStdio::null())
        .spawn()
        .unwrap();
    let caller_fd = pidfd(caller.id()).unwrap();
    let mut lines = BufReader::new(caller.stdout.take().unwrap()).lines();
    let mut port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("port ") {
            port = p.parse::<u16>().ok();
            break;
        }
    }
    let Some(port) = port else {
        kill(&caller_fd);
        panic!("the caller did not report its port");
    };
    // Control: the port answers.
    assert_eq!(ask(port), "hi\n");
    // The flood: far more connections than the caller has descriptors (its limit is 256).
    let flood: Vec<TcpStream> = (0..600)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    assert!(
        flood.len() > 300,
        "the flood itself failed: {}",
        flood.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut stdin = caller.stdin.take().unwrap();
    stdin.write_all(b"check\n").unwrap();
    let verdict = lines.next().map(|l| l.unwrap()).unwrap_or_default();
    drop(flood);
    assert_eq!(verdict, "open ok", "the caller ran out of descriptors");
    // Once the flood is gone, the port serves again.
    assert_eq!(ask(port), "hi\n");
    drop(stdin);
    if caller.wait().is_err() {
        kill(&caller_fd);
    }
}

/// Runs only as a subprocess of `a_flood_of_connections_cannot_exhaust_the_callers_descriptors`:
/// with a limit of 256 descriptors, publishes a port of a sandbox, prints it, and on `check`
/// says whether it can still open files.
#[test]
#[ignore = "run as a subprocess by a_flood_of_connections_cannot_exhaust_the_callers_descriptors"]
fn probe_caller_with_a_published_port() {
    assert!(std::env::var_os("PALISADE_PROBE_CALLER").is_some());
    println!();
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: setrlimit(2) with a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let child = Sandbox::builder("busybox")
        .args(["nc", "-ll", "-p", "80", "-e", "/bin/echo", "hi"])
        .publish(0, 80, Proto::Tcp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    println!("port {}", child.ports()[0].host_port);
    let mut line = String::new();
    let stdin = std::io::stdin();
    while stdin.lock().read_line(&mut line).unwrap_or(0) > 0 {
        if line.trim() == "check" {
            let opened: Vec<_> = (0..20)
                .filter_map(|_| std::fs::File::open("/dev/null").ok())
                .collect();
            println!(
                "{}",
                if opened.len() == 20 {
                    "open ok"
                } else {
                    "open failed"
                }
            );
        }
        line.clear();
    }
    drop(child);
}
