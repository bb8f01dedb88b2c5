//! Supervising syscalls that a filter hands to user space (`SECCOMP_RET_USER_NOTIF`).
//!
//! A filter loaded with [`LoadFlags::NEW_LISTENER`](crate::LoadFlags::NEW_LISTENER) returns a
//! listener fd. Each syscall for which the filter returns [`Action::UserNotify`](crate::Action)
//! blocks the calling thread and queues a [`Notification`]; the supervisor
//! [`recv`](Listener::recv)s it, decides, and [`respond`](Listener::respond)s with a return value,
//! an errno, or "continue" (run the syscall as if allowed). See `seccomp_unotify(2)`.
//!
//! Pointers in the arguments refer to the target's memory, which can change between the check and
//! the use (TOCTOU). Check [`Listener::id_valid`] after reading `/proc/PID/mem` to be sure the
//! notification (and so the pid) is still live, and never use [`Response::Continue`] to enforce
//! a security decision based on pointed-to data: the target can rewrite it before the kernel
//! reads it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::bpf::SeccompData;
use crate::error::{Error, Result};

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawNotif {
    id: u64,
    pid: u32,
    flags: u32,
    data: SeccompData,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawSizes {
    notif: u16,
    resp: u16,
    data: u16,
}

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, '!', nr, size)` with the generic ioctl encoding that x86-64 and aarch64 use.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'!' as u64) << 8) | nr
}

/// `SECCOMP_IOCTL_NOTIF_RECV`: `_IOWR('!', 0, struct seccomp_notif)`.
pub const SECCOMP_IOCTL_NOTIF_RECV: u64 =
    ioc(IOC_READ | IOC_WRITE, 0, std::mem::size_of::<RawNotif>());
/// `SECCOMP_IOCTL_NOTIF_SEND`: `_IOWR('!', 1, struct seccomp_notif_resp)`.
pub const SECCOMP_IOCTL_NOTIF_SEND: u64 =
    ioc(IOC_READ | IOC_WRITE, 1, std::mem::size_of::<RawResp>());
/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: `_IOW('!', 2, __u64)`.
pub const SECCOMP_IOCTL_NOTIF_ID_VALID: u64 = ioc(IOC_WRITE, 2, std::mem::size_of::<u64>());

const _: () = assert!(std::mem::size_of::<RawNotif>() == 80);
const _: () = assert!(std::mem::size_of::<RawResp>() == 24);

/// Sizes of the notification structures in the running kernel (`SECCOMP_GET_NOTIF_SIZES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotifSizes {
    /// `sizeof(struct seccomp_notif)`.
    pub notif: u16,
    /// `sizeof(struct seccomp_notif_resp)`.
    pub resp: u16,
    /// `sizeof(struct seccomp_data)`.
    pub data: u16,
}

/// Asks the kernel for its notification structure sizes (`seccomp(SECCOMP_GET_NOTIF_SIZES)`).
pub fn notif_sizes() -> Result<NotifSizes> {
    let mut sizes = RawSizes::default();
    let args = (&mut sizes as *mut RawSizes).cast();
    // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one struct seccomp_notif_sizes to the pointer,
    // which points to one.
    unsafe { crate::load::seccomp(crate::load::SECCOMP_GET_NOTIF_SIZES, 0, args) }
        .map_err(|errno| Error::sys("seccomp(SECCOMP_GET_NOTIF_SIZES)", errno))?;
    Ok(NotifSizes {
        notif: sizes.notif,
        resp: sizes.resp,
        data: sizes.data,
    })
}

/// A syscall waiting for the supervisor's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// Cookie identifying this notification in [`Listener::respond`] and
    /// [`Listener::id_valid`].
    pub id: u64,
    /// The calling thread's id, in the listener's PID namespace (0 if not visible there).
    pub pid: u32,
    /// Reserved by the kernel; currently 0.
    pub flags: u32,
    /// The syscall: number, architecture, instruction pointer and arguments.
    pub data: SeccompData,
}

/// The supervisor's answer to a [`Notification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The syscall returns this value without running.
    Value(i64),
    /// The syscall fails with this (positive) errno without running.
    Errno(i32),
    /// The syscall runs as if the filter had allowed it (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
}

/// The supervisor end of a filter's notifications.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Takes ownership of a listener fd (from [`BpfProgram::load`](crate::BpfProgram::load) with
    /// `NEW_LISTENER`, or received from the sandboxed process).
    pub fn new(fd: OwnedFd) -> Listener {
        Listener { fd }
    }

    /// Waits for the next notification (`SECCOMP_IOCTL_NOTIF_RECV`). Retries when interrupted
    /// by a signal. Fails with `ENOENT` if the target was killed or its syscall interrupted
    /// before the notification could be read.
    pub fn recv(&self) -> Result<Notification> {
        loop {
            // The kernel rejects a receive buffer that is not zeroed.
            let mut raw = RawNotif::default();
            // SAFETY: NOTIF_RECV writes one struct seccomp_notif, whose layout RawNotif matches
            // (size checked above), to a pointer to one.
            let rc = unsafe {
                libc::ioctl(
                    self.fd.as_raw_fd(),
                    SECCOMP_IOCTL_NOTIF_RECV as _,
                    &mut raw as *mut RawNotif,
                )
            };
            if rc == 0 {
                return Ok(Notification {
                    id: raw.id,
                    pid: raw.pid,
                    flags: raw.flags,
                    data: raw.data,
                });
            }
            let err = Error::last_os("ioctl(SECCOMP_IOCTL_NOTIF_RECV)");
            if !matches!(&err, Error::Sys { source, .. } if source.raw_os_error() == Some(libc::EINTR))
            {
                return Err(err);
            }
        }
    }

    /// Whether notification `id` is still pending (`SECCOMP_IOCTL_NOTIF_ID_VALID`): false once
    /// it was answered or the target died or was interrupted.
    pub fn id_valid(&self, id: u64) -> bool {
        // SAFETY: NOTIF_ID_VALID reads one u64 through the pointer.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_ID_VALID as _,
                &id as *const u64,
            )
        };
        rc == 0
    }

    /// Answers notification `id` (`SECCOMP_IOCTL_NOTIF_SEND`). Fails with `ENOENT` if it is no
    /// longer pending.
    pub fn respond(&self, id: u64, response: Response) -> Result<()> {
        let mut raw = RawResp {
            id,
            ..RawResp::default()
        };
        match response {
            Response::Value(v) => raw.val = v,
            Response::Errno(e) => raw.error = -e,
            Response::Continue => raw.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        }
        // SAFETY: NOTIF_SEND reads one struct seccomp_notif_resp, whose layout RawResp matches,
        // through the pointer.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                SECCOMP_IOCTL_NOTIF_SEND as _,
                &mut raw as *mut RawResp,
            )
        };
        if rc != 0 {
            return Err(Error::last_os("ioctl(SECCOMP_IOCTL_NOTIF_SEND)"));
        }
        Ok(())
    }
}

impl From<OwnedFd> for Listener {
    fn from(fd: OwnedFd) -> Listener {
        Listener::new(fd)
    }
}

impl From<Listener> for OwnedFd {
    fn from(listener: Listener) -> OwnedFd {
        listener.fd
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_sizes() {
        assert_eq!(SECCOMP_IOCTL_NOTIF_RECV, 0xc050_2100);
        assert_eq!(SECCOMP_IOCTL_NOTIF_SEND, 0xc018_2101);
        assert_eq!(SECCOMP_IOCTL_NOTIF_ID_VALID, 0x4008_2102);
        let sizes = notif_sizes().unwrap();
        assert!(usize::from(sizes.notif) >= std::mem::size_of::<RawNotif>());
        assert_eq!(usize::from(sizes.data), std::mem::size_of::<SeccompData>());
    }
}
