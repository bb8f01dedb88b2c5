//! A sandbox's terminal, driven through its master as a terminal emulator would: the command's
//! `tty` is the sandbox's own `/dev/pts/0`, its size is the one given and follows resizes, and
//! Ctrl-C reaches the foreground process.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::sh;
use palisade::{Error, Pty, Stdio, TerminalSize};
use palisade_test_support::require_root;

/// Reads what the command writes until `want` has appeared (or the command's side closed, or
/// 10 s passed); returns all of it.
fn read_until(pty: &Pty, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(want) && Instant::now() < deadline {
        let mut poll = [rustix::event::PollFd::new(
            pty,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        if rustix::event::poll(&mut poll, Some(&timeout)).unwrap_or(0) == 0 {
            continue;
        }
        match pty.read(&mut buf).unwrap() {
            0 => break,
            n => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn the_command_gets_a_terminal_of_the_sandboxs_own_of_the_size_given() {
    require_root!();
    let mut b = sh("tty; stty size; echo done");
    b.tty_size(TerminalSize {
        rows: 30,
        cols: 100,
    });
    let mut child = b.spawn().unwrap();
    let pty = child.take_pty().expect("the terminal's master");
    let out = read_until(&pty, "done");
    assert!(out.contains("/dev/pts/0"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");
    assert!(child.wait().unwrap().success());
    // Only once.
    assert!(child.take_pty().is_none());
}

#[test]
fn resizes_and_ctrl_c_reach_the_command() {
    require_root!();
    // The shell is the session's foreground process group: Ctrl-C is its SIGINT.
    let mut b = sh(
        "trap 'echo got-int; exit 7' INT; echo ready; read line; stty size; \
                    echo resized; while :; do sleep 0.1; done",
    );
    b.tty(true);
    let mut child = b.spawn().unwrap();
    let pty = child.take_pty().unwrap();
    assert_eq!(pty.size().unwrap(), TerminalSize::default());
    assert!(read_until(&pty, "ready").contains("ready"));
    pty.resize(TerminalSize {
        rows: 40,
        cols: 120,
    })
    .unwrap();
    assert_eq!(
        pty.size().unwrap(),
        TerminalSize {
            rows: 40,
            cols: 120
        }
    );
    pty.write_all(b"go\n").unwrap();
    let out = read_until(&pty, "resized");
    assert!(out.contains("40 120"), "{out:?}");
    pty.write_all(b"\x03").unwrap();
    let out = read_until(&pty, "got-int");
    assert!(out.contains("got-int"), "{out:?}");
    assert_eq!(child.wait().unwrap().code(), Some(7));
}

#[test]
fn the_master_can_be_sent_over_a_unix_socket() {
    require_root!();
    let mut b = sh("read line; echo \"echo:$line\"");
    b.tty(true);
    let mut child = b.spawn().unwrap();
    let pty = child.take_pty().unwrap();
    // As an OCI runtime hands it to `--console-socket`.
    let (ours, theirs) = UnixStream::pair().unwrap();
    pty.send(&ours).unwrap();
    drop(pty);
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(
        &theirs,
        &mut iov,
        &mut control,
        rustix::net::RecvFlags::empty(),
    )
    .unwrap();
    let master = control
        .drain()
        .find_map(|m| match m {
            rustix::net::RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        })
        .expect("a descriptor");
    // The descriptor received drives the same terminal.
    rustix::io::write(&master, b"hi\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&out).contains("echo:hi") && Instant::now() < deadline {
        match rustix::io::read(&master, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    assert!(String::from_utf8_lossy(&out).contains("echo:hi"), "{out:?}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_terminal_needs_a_root_of_its_own_and_all_of_the_stdio() {
    require_root!();
    let mut b = sh("true");
    b.tty(true).host_mounts();
    assert!(matches!(
        b.build(),
        Err(Error::InvalidValue { what: "tty", .. })
    ));
    let mut b = sh("true");
    b.tty(true).stdout(Stdio::piped());
    assert!(matches!(
        b.build(),
        Err(Error::InvalidValue { what: "tty", .. })
    ));
}
