use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// What to connect one of the sandboxed command's standard streams to, as with
/// [`std::process::Stdio`].
#[derive(Debug)]
pub struct Stdio(Kind);

#[derive(Debug)]
enum Kind {
    Inherit,
    Null,
    Piped,
    Fd(OwnedFd),
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

    /// A copy of this configuration; a descriptor is duplicated (`dup(2)`).
    pub(crate) fn try_clone(&self) -> Result<Stdio> {
        Ok(Stdio(match &self.0 {
            Kind::Inherit => Kind::Inherit,
            Kind::Null => Kind::Null,
            Kind::Piped => Kind::Piped,
            Kind::Fd(fd) => Kind::Fd(fd.try_clone().map_err(|source| Error::Setup {
                what: "duplicate a stdio descriptor",
                source,
            })?),
        }))
    }

    pub(crate) fn is_inherit(&self) -> bool {
        matches!(self.0, Kind::Inherit)
    }
}

impl From<OwnedFd> for Stdio {
    /// The stream is connected to this open file descriptor (duplicated for each spawn).
    fn from(fd: OwnedFd) -> Stdio {
        Stdio(Kind::Fd(fd))
    }
}

impl From<File> for Stdio {
    /// The stream is connected to this file (duplicated for each spawn).
    fn from(file: File) -> Stdio {
        Stdio(Kind::Fd(file.into()))
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
