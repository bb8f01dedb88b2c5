//! Handles on namespace files: `/proc/<pid>/ns/<kind>` (`namespaces(7)`).

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::Namespace;

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)` (`ioctl_ns(2)`).
const NS_GET_NSTYPE: rustix::ioctl::Opcode = rustix::ioctl::opcode::none(0xb7, 0x3);

/// The `NS_GET_NSTYPE` request: no argument; the kind comes back as the call's result.
struct GetNsType;

// SAFETY: NS_GET_NSTYPE takes no argument, so the kernel reads and writes no memory through
// the (null) pointer, and on success returns the namespace's CLONE_NEW* value (`ioctl_ns(2)`).
unsafe impl rustix::ioctl::Ioctl for GetNsType {
    type Output = libc::c_int;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> rustix::ioctl::Opcode {
        NS_GET_NSTYPE
    }

    fn as_ptr(&mut self) -> *mut libc::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        out: rustix::ioctl::IoctlOutput,
        _: *mut libc::c_void,
    ) -> rustix::io::Result<libc::c_int> {
        Ok(out)
    }
}

/// The identity of a namespace: the device and inode number of its nsfs file, which is what
/// `ls -l /proc/<pid>/ns` shows as `net:[4026531833]`. Two processes are in the same namespace
/// exactly when these are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId {
    /// The kind of namespace.
    pub kind: Namespace,
    /// The device of the nsfs file system.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
}

impl NsId {
    /// The identity of `pid`'s namespace of the given kind, read with `stat(2)` without opening
    /// the file.
    pub fn of(pid: libc::pid_t, kind: Namespace) -> Result<NsId> {
        let path = proc_path(&pid.to_string(), kind)?;
        let meta = std::fs::metadata(&path).map_err(|e| Error::io("stat", &path, e))?;
        Ok(NsId {
            kind,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

/// Formats as `ls -l /proc/<pid>/ns` does: `net:[4026531833]`.
impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:[{}]", self.kind.proc_name().unwrap_or("?"), self.ino)
    }
}

/// An open namespace file: a reference that keeps the namespace alive while it is open, can be
/// joined with [`setns`](NsFile::setns), and compared by [`id`](NsFile::id).
#[derive(Debug)]
pub struct NsFile {
    fd: OwnedFd,
    kind: Namespace,
}

fn proc_path(pid: &str, kind: Namespace) -> Result<PathBuf> {
    let name = kind.proc_name().ok_or_else(|| Error::WrongKind {
        path: PathBuf::from(format!("/proc/{pid}/ns")),
        expected: kind,
        found: Namespace::empty(),
    })?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/{name}")))
}

impl NsFile {
    /// Opens `/proc/<pid>/ns/<kind>`. `kind` must be a single kind.
    pub fn open(pid: libc::pid_t, kind: Namespace) -> Result<NsFile> {
        Self::open_kind(&proc_path(&pid.to_string(), kind)?, kind)
    }

    /// Opens the calling thread's namespace of the given kind (`/proc/thread-self/ns/<kind>`;
    /// per thread, since `unshare(2)` and `setns(2)` act on threads).
    pub fn open_current(kind: Namespace) -> Result<NsFile> {
        Self::open_kind(&proc_path("thread-self", kind)?, kind)
    }

    /// Opens a namespace file at any path — a `/proc` entry, or a bind mount made by
    /// [`persist`](crate::persist) or `ip netns add` — and asks the kernel which kind it is.
    pub fn open_path(path: impl AsRef<Path>) -> Result<NsFile> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let kind = Self::kind_of(file.as_fd()).map_err(|errno| {
            let err = if errno == rustix::io::Errno::NOTTY {
                io::Error::new(io::ErrorKind::InvalidInput, "not a namespace file")
            } else {
                io::Error::from_raw_os_error(errno.raw_os_error())
            };
            Error::io("ioctl(NS_GET_NSTYPE)", path, err)
        })?;
        Ok(NsFile {
            fd: file.into(),
            kind,
        })
    }

    /// Opens a namespace file at `path` and checks that it is of the `expected` kind.
    pub fn open_kind(path: &Path, expected: Namespace) -> Result<NsFile> {
        let file = Self::open_path(path)?;
        if file.kind != expected {
            return Err(Error::WrongKind {
                path: path.to_owned(),
                expected,
                found: file.kind,
            });
        }
        Ok(file)
    }

    /// Wraps an already open namespace file descriptor, asking the kernel its kind.
    pub fn from_fd(fd: OwnedFd) -> Result<NsFile> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let kind = Self::kind_of(fd.as_fd()).map_err(|errno| {
            let err = io::Error::from_raw_os_error(errno.raw_os_error());
            Error::io("ioctl(NS_GET_NSTYPE)", path, err)
        })?;
        Ok(NsFile { fd, kind })
    }

    /// Asks the kernel which kind of namespace the nsfs file `fd` refers to (`ioctl_ns(2)`,
    /// `NS_GET_NSTYPE`); `ENOTTY` when it is not a namespace file.
    ///
    /// # Child safety
    ///
    /// One `ioctl(2)` through rustix's `linux_raw` backend: no allocation, no lock, no `errno`,
    /// no panic.
    pub fn kind_of(fd: BorrowedFd<'_>) -> rustix::io::Result<Namespace> {
        // SAFETY: `GetNsType` describes NS_GET_NSTYPE exactly (see its `Ioctl` impl).
        let raw = unsafe { rustix::ioctl::ioctl(fd, GetNsType) }?;
        // A CLONE_NEW* value: positive, and a single flag.
        Ok(Namespace::from_bits_truncate(raw as u64))
    }

    /// The kind of this namespace.
    pub fn kind(&self) -> Namespace {
        self.kind
    }

    /// The namespace's identity (device and inode, from `fstat(2)`).
    pub fn id(&self) -> Result<NsId> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `st` is a valid out-pointer for one `struct stat`.
        let ret = unsafe { libc::fstat(self.fd.as_raw_fd(), st.as_mut_ptr()) };
        if ret == -1 {
            return Err(Error::io(
                "fstat",
                format!("/proc/self/fd/{}", self.fd.as_raw_fd()),
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: fstat succeeded and filled the struct.
        let st = unsafe { st.assume_init() };
        Ok(NsId {
            kind: self.kind,
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }

    /// Moves the calling thread into this namespace (`setns(2)`).
    pub fn setns(&self) -> Result<()> {
        crate::setns(self.fd.as_fd(), self.kind)
    }
}

impl AsFd for NsFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<NsFile> for OwnedFd {
    fn from(file: NsFile) -> OwnedFd {
        file.fd
    }
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`, Linux 5.3), usable with [`setns`](crate::setns) to
/// join several of that process's namespaces at once.
pub fn pidfd_open(pid: libc::pid_t) -> Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret == -1 {
        return Err(Error::Process {
            call: "pidfd_open",
            pid,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

pub(crate) fn cstring(path: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            "convert",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
        )
    })
}

/// Whether the process of `pidfd` has exited, without waiting: a pidfd polls readable once its
/// process has exited, reaped or not (`pidfd_open(2)`). A failed poll counts as exited. Makes
/// one system call and no allocation, so a spawn's child may use it.
pub fn pidfd_exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut poll = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut poll, Some(&zero)) != Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespaces_match_proc_self() {
        let pid = std::process::id() as libc::pid_t;
        for kind in Namespace::JOIN_ORDER {
            let file = NsFile::open(pid, kind).unwrap();
            assert_eq!(file.kind(), kind);
            assert_eq!(file.id().unwrap(), NsId::of(pid, kind).unwrap());
            let shown = std::fs::read_link(format!("/proc/{pid}/ns/{}", kind.proc_name().unwrap()))
                .unwrap();
            assert_eq!(file.id().unwrap().to_string(), shown.to_str().unwrap());
        }
    }

    #[test]
    fn open_path_rejects_other_files() {
        let err = NsFile::open_path("/proc/self/status").unwrap_err();
        assert!(err.to_string().contains("not a namespace file"), "{err}");
        let err = NsFile::open_kind(Path::new("/proc/self/ns/net"), Namespace::UTS).unwrap_err();
        assert!(matches!(err, Error::WrongKind { .. }), "{err}");
        let err = NsFile::open(1, Namespace::NET | Namespace::UTS).unwrap_err();
        assert!(matches!(err, Error::WrongKind { .. }), "{err}");
    }

    #[test]
    fn kind_of_reports_the_kernels_answer() {
        for kind in [Namespace::NET, Namespace::UTS, Namespace::MOUNT] {
            let name = kind.proc_name().unwrap();
            let file = File::open(format!("/proc/self/ns/{name}")).unwrap();
            assert_eq!(NsFile::kind_of(file.as_fd()), Ok(kind));
        }
        let status = File::open("/proc/self/status").unwrap();
        assert_eq!(
            NsFile::kind_of(status.as_fd()),
            Err(rustix::io::Errno::NOTTY)
        );
    }
}
