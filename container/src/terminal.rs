//! Pseudo-terminals for sandboxes (`pty(7)`): the master end of a sandbox's terminal, and a
//! proxy between it and the caller's own terminal.
//!
//! With [`SandboxBuilder::tty`](crate::SandboxBuilder::tty), the command opens the terminal on
//! the sandbox's own devpts (its `/dev/ptmx`), so the replica lives inside the sandbox (`tty`
//! prints `/dev/pts/0`), makes it its controlling terminal in a session of its own (`setsid(2)`,
//! `TIOCSCTTY` of `ioctl_tty(2)`) and its stdin, stdout and stderr, and hands the master to the
//! caller over the spawn's control socket: [`Child::take_pty`](crate::Child::take_pty).

use std::io::{self, IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use rustix::termios::{OptionalActions, Termios, Winsize};

/// How often [`Pty::proxy`] looks at the caller's window size when nothing else happens.
const RESIZE_CHECK: Duration = Duration::from_millis(250);

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TerminalSize {
    /// Rows (lines).
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl Default for TerminalSize {
    /// 24 rows of 80 columns, the classic terminal's.
    fn default() -> TerminalSize {
        TerminalSize { rows: 24, cols: 80 }
    }
}

impl TerminalSize {
    pub(crate) fn winsize(self) -> Winsize {
        Winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// The master end of a sandbox's pseudo-terminal: what is written to it is the command's
/// input, what the command writes is read from it. Reading gives `EIO` once every replica is
/// closed, which is how the end of the command shows.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
}

impl Pty {
    pub(crate) fn new(master: OwnedFd) -> Pty {
        Pty { master }
    }

    /// Sets the terminal's size (`TIOCSWINSZ`); the kernel sends `SIGWINCH` to its foreground
    /// process group (`ioctl_tty(2)`).
    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        rustix::termios::tcsetwinsize(&self.master, size.winsize()).map_err(Into::into)
    }

    /// The terminal's size (`TIOCGWINSZ`).
    pub fn size(&self) -> io::Result<TerminalSize> {
        let w = rustix::termios::tcgetwinsize(&self.master)?;
        Ok(TerminalSize {
            rows: w.ws_row,
            cols: w.ws_col,
        })
    }

    /// Sends the master over the Unix socket `socket` as `SCM_RIGHTS` (`unix(7)`), with one
    /// byte of data, as an OCI runtime's `--console-socket` expects.
    pub fn send(&self, socket: &UnixStream) -> io::Result<()> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds = [self.master.as_fd()];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let data = [IoSlice::new(b"\0")];
        rustix::net::sendmsg(socket, &data, &mut control, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Connects the caller's terminal to this one until the command's side closes: the caller's
    /// stdin is put in raw mode (and restored on every way out, panics included), its input
    /// goes to the sandbox and the sandbox's output to its stdout. The caller's window size is
    /// copied now and whenever it changes, checked on every input and at least every 250 ms, so
    /// that no `SIGWINCH` handler is installed behind the caller's back.
    ///
    /// Without a terminal on stdin, input is copied as it is, and sizes are left alone.
    ///
    /// # Errors
    /// I/O errors of either side other than the end of the command's output.
    pub fn proxy(&self) -> io::Result<()> {
        let stdin = io::stdin();
        let stdin = stdin.as_fd();
        let _raw = RawMode::enter(stdin)?;
        let mut size = self.sync_size(stdin, None);
        let mut stdin_open = true;
        let mut buf = [0u8; 4096];
        let mut out = io::stdout();
        let timeout = rustix::event::Timespec {
            tv_sec: RESIZE_CHECK.as_secs() as i64,
            tv_nsec: i64::from(RESIZE_CHECK.subsec_nanos()),
        };
        loop {
            let mut fds = [
                PollFd::new(&self.master, PollFlags::IN),
                PollFd::new(&stdin, PollFlags::IN),
            ];
            // Once stdin is at its end, only the master is watched.
            let watched = if stdin_open { 2 } else { 1 };
            match rustix::event::poll(&mut fds[..watched], Some(&timeout)) {
                Err(rustix::io::Errno::INTR) => continue,
                other => other?,
            };
            let master_ready = !fds[0].revents().is_empty();
            let stdin_ready = stdin_open && !fds[1].revents().is_empty();
            size = self.sync_size(stdin, size);
            if master_ready {
                match rustix::io::read(&self.master, &mut buf) {
                    // EIO: every replica is closed, the command is gone.
                    Ok(0) | Err(rustix::io::Errno::IO) => return Ok(()),
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                    Ok(n) => {
                        out.write_all(&buf[..n])?;
                        out.flush()?;
                    }
                }
            }
            if stdin_ready {
                match rustix::io::read(stdin, &mut buf) {
                    Ok(0) => stdin_open = false,
                    Ok(n) => self.write_all(&buf[..n])?,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    /// Writes all of `data` to the command's input.
    pub fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match rustix::io::write(&self.master, data) {
                Ok(n) => data = &data[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Reads what the command wrote, as `read(2)`: `Ok(0)` once the command's side is closed
    /// (the kernel's `EIO` on a master without replicas).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match rustix::io::read(&self.master, &mut *buf) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::IO) => return Ok(0),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Copies the size of the terminal on `from` to this one when it differs from `last`;
    /// returns the size seen (`None` without a terminal there).
    fn sync_size(&self, from: BorrowedFd<'_>, last: Option<Winsize>) -> Option<Winsize> {
        let now = rustix::termios::tcgetwinsize(from).ok()?;
        let changed = last.is_none_or(|l| (l.ws_row, l.ws_col) != (now.ws_row, now.ws_col));
        if changed {
            let _ = rustix::termios::tcsetwinsize(&self.master, now);
        }
        Some(now)
    }
}

impl AsFd for Pty {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

impl From<Pty> for OwnedFd {
    fn from(pty: Pty) -> OwnedFd {
        pty.master
    }
}

/// A terminal in raw mode (`termios(3)`), restored to its settings on drop.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Option<Termios>,
}

impl<'a> RawMode<'a> {
    /// Raw mode on `fd` if it is a terminal; nothing otherwise.
    fn enter(fd: BorrowedFd<'a>) -> io::Result<RawMode<'a>> {
        let saved = match rustix::termios::tcgetattr(fd) {
            Ok(t) => t,
            Err(rustix::io::Errno::NOTTY) => return Ok(RawMode { fd, saved: None }),
            Err(e) => return Err(e.into()),
        };
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(RawMode {
            fd,
            saved: Some(saved),
        })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(self.fd, OptionalActions::Now, saved);
        }
    }
}
