//! What the `run` and `exec` examples share: forwarding the caller's signals to the command,
//! the caller's terminal size, relaying the command's terminal, and `--user`.

use palisade::{Child, Error, Signal, TerminalSize};

/// The signals a terminal or supervisor sends, forwarded to the command as `docker run` and
/// `docker exec` do.
const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Blocks the forwarded signals in this thread (before any other thread is started, so that
/// every thread inherits the mask): they are then taken by [`forward_signals`]'s thread.
/// A sandbox starts with an empty mask of its own.
pub fn block_forwarded_signals() -> Result<nix::sys::signal::SigSet, Error> {
    let mut set = nix::sys::signal::SigSet::empty();
    FORWARDED.iter().for_each(|s| set.add(*s));
    set.thread_block().map_err(|e| Error::Setup {
        what: "block forwarded signals",
        source: e.into(),
    })?;
    Ok(set)
}

/// Relays the signals of `set`, as they arrive, to `child` through its pidfd.
pub fn forward_signals(set: nix::sys::signal::SigSet, child: &Child) -> Result<(), Error> {
    let pidfd = child
        .pidfd()
        .try_clone_to_owned()
        .map_err(|source| Error::Setup {
            what: "duplicate the command's pidfd",
            source,
        })?;
    std::thread::spawn(move || loop {
        if let Ok(sig) = set.wait() {
            let sig = rustix::process::Signal::from_named_raw(sig as i32);
            if let Some(sig) = sig {
                let _ = rustix::process::pidfd_send_signal(&pidfd, sig);
            }
        }
    });
    Ok(())
}

/// The caller's terminal size, when stdin is a terminal.
pub fn terminal_size() -> TerminalSize {
    rustix::termios::tcgetwinsize(std::io::stdin())
        .map(|w| TerminalSize {
            rows: w.ws_row,
            cols: w.ws_col,
        })
        .unwrap_or_default()
}

/// Relays the command's terminal, if it has one: proxied to the caller's with `-i`, else its
/// output only (as `docker run -t` without `-i`).
pub fn relay_terminal(child: &mut Child, interactive: bool) -> Result<(), Error> {
    let Some(pty) = child.take_pty() else {
        return Ok(());
    };
    let relayed = if interactive {
        pty.proxy()
    } else {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        loop {
            match pty.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    use std::io::Write;
                    if let Err(e) = out.write_all(&buf[..n]).and_then(|()| out.flush()) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        }
    };
    relayed.map_err(|source| Error::Setup {
        what: "relay the command's terminal",
        source,
    })
}

/// `UID` or `UID:GID` (the group defaulting to the same number).
pub fn parse_user(user: &str) -> Result<(u32, u32), Error> {
    let bad = || Error::InvalidValue {
        what: "user",
        value: user.to_owned(),
        reason: "expected UID or UID:GID (numbers)",
    };
    match user.split_once(':') {
        Some((uid, gid)) => Ok((
            uid.parse().map_err(|_| bad())?,
            gid.parse().map_err(|_| bad())?,
        )),
        None => {
            let uid = user.parse().map_err(|_| bad())?;
            Ok((uid, uid))
        }
    }
}
