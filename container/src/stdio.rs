use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{ChildStderr, ChildStdin, ChildStdout};
use std::sync::Arc;

use crate::error::{Error, Result};

/// What to connect one of the sandboxed command's standard streams to, as with
/// [`std::process::Stdio`].
///
/// Besides [`inherit`](Self::inherit), [`null`](Self::null) and [`piped`](Self::piped), any
/// open descriptor can be given: an [`OwnedFd`], a [`File`], or the pipe end of a
/// [`std::process::Child`] ([`ChildStdin`], [`ChildStdout`], [`ChildStderr`]), which chains a
/// sandbox to an ordinary process as a shell pipeline does:
///
/// ```no_run
/// use std::process::{Command, Stdio as StdStdio};
/// use palisade::{Sandbox, Stdio};
///
/// // `seq 3 | sandboxed wc -l`
/// let mut seq = Command::new("seq").arg("3").stdout(StdStdio::piped()).spawn()?;
/// let seq_out = seq.stdout.take().expect("piped");
/// let out = Sandbox::builder("wc")
///     .arg("-l")
///     .stdin(seq_out)
///     .stdout(Stdio::piped())
///     .output()?;
/// assert_eq!(out.stdout, b"3\n");
/// seq.wait()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// There is no `From<std::process::Stdio>`: std gives no way, on stable Rust, to tell which
/// of its kinds a `std::process::Stdio` is or to take the descriptor out of it (the conversion
/// exists only the other way, `From<OwnedFd> for std::process::Stdio`). Give the descriptor
/// itself instead. Likewise `std::io::PipeReader` and `PipeWriter` (Rust 1.87, above this
/// crate's minimum) convert through [`OwnedFd`]: `Stdio::from(OwnedFd::from(reader))`.
///
/// A `Stdio` is [`Clone`]: a clone shares the descriptor it was given (each spawn duplicates
/// it, `dup(2)`), so one configuration serves any number of sandboxes; the descriptor is closed
/// when the last clone goes.
#[derive(Debug, Clone)]
pub struct Stdio(Kind);

#[derive(Debug, Clone)]
enum Kind {
    Inherit,
    Null,
    Piped,
    /// Shared by clones of the configuration; each spawn installs a duplicate.
    Fd(Arc<OwnedFd>),
}

impl Stdio {
    /// The command uses the parent's stream (the default for [`spawn`](crate::Sandbox::spawn)).
    pub fn inherit() -> Stdio {
        Stdio(Kind::Inherit)
    }

    /// The stream is connected to `/dev/null`.
    pub fn null() -> Stdio {
        Stdio(Kind::Null)
    }

    /// A new pipe connects the stream to the parent, available as
    /// [`Child::stdin`](crate::Child::stdin) and friends.
    pub fn piped() -> Stdio {
        Stdio(Kind::Piped)
    }

    /// A copy of this configuration, sharing its descriptor (each spawn duplicates it).
    pub(crate) fn try_clone(&self) -> Result<Stdio> {
        Ok(self.clone())
    }

    pub(crate) fn is_inherit(&self) -> bool {
        matches!(self.0, Kind::Inherit)
    }
}

impl From<OwnedFd> for Stdio {
    /// The stream is connected to this open file descriptor (duplicated for each spawn).
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(Kind::Fd(Arc::new(fd)))
    }
}

impl From<File> for Stdio {
    /// The stream is connected to this file (duplicated for each spawn).
    fn from(file: File) -> Stdio {
        Stdio::from(OwnedFd::from(file))
    }
}

impl From<ChildStdin> for Stdio {
    /// The stream is connected to the write end of a [`std::process::Child`]'s stdin pipe:
    /// the sandboxed command's output feeds that process (duplicated for each spawn).
    fn from(stdin: ChildStdin) -> Stdio {
        Stdio::from(OwnedFd::from(stdin))
    }
}

impl From<ChildStdout> for Stdio {
    /// The stream is connected to the read end of a [`std::process::Child`]'s stdout pipe:
    /// that process's output feeds the sandboxed command (duplicated for each spawn).
    fn from(stdout: ChildStdout) -> Stdio {
        Stdio::from(OwnedFd::from(stdout))
    }
}

impl From<ChildStderr> for Stdio {
    /// The stream is connected to the read end of a [`std::process::Child`]'s stderr pipe
    /// (duplicated for each spawn).
    fn from(stderr: ChildStderr) -> Stdio {
        Stdio::from(OwnedFd::from(stderr))
    }
}

/// One stream resolved for one spawn: the descriptor the child installs (none: inherit) and the
/// parent's end of a pipe.
#[derive(Debug, Default)]
pub(crate) struct Resolved {
    pub child: Option<OwnedFd>,
    pub parent: Option<File>,
}

impl Resolved {
    pub fn child_fd(&self) -> Option<BorrowedFd<'_>> {
        self.child.as_ref().map(|fd| fd.as_fd())
    }
}

/// Creates a pipe with both ends close-on-exec: `(read, write)`.
pub(crate) fn pipe(what: &'static str) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(Error::Setup {
            what,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Stdio {
    /// Resolves this configuration for one spawn; `input` says whether the child reads (stdin).
    pub(crate) fn resolve(&self, input: bool) -> Result<Resolved> {
        let setup = |what| move |source| Error::Setup { what, source };
        Ok(match &self.0 {
            Kind::Inherit => Resolved::default(),
            Kind::Null => {
                let file = std::fs::OpenOptions::new()
                    .read(input)
                    .write(!input)
                    .open("/dev/null")
                    .map_err(setup("open /dev/null"))?;
                Resolved {
                    child: Some(file.into()),
                    parent: None,
                }
            }
            Kind::Piped => {
                let (r, w) = pipe("create a stdio pipe")?;
                let (child, parent) = if input { (r, w) } else { (w, r) };
                Resolved {
                    child: Some(child),
                    parent: Some(File::from(parent)),
                }
            }
            Kind::Fd(fd) => Resolved {
                child: Some(
                    fd.try_clone()
                        .map_err(setup("duplicate a stdio descriptor"))?,
                ),
                parent: None,
            },
        })
    }
}
