//! The parent's end of the control socket (see [`ChildFds::control`](super::child::ChildFds)):
//! receiving the seccomp listener, and asking the init for sockets in the sandbox's network
//! namespace.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use palisade_netns::forward::SocketSource;
use palisade_netns::Proto;

use super::init::SocketRequest;

/// A connected `SOCK_SEQPACKET` pair (`socketpair(2)`), both ends close-on-exec: the parent's
/// end first.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair(2) writes two descriptors into the array, which we then own.
    let ret = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if ret == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Receives one message of the child: an errno (0: success) and, on success, a descriptor.
/// With `wait` false, fails with `WouldBlock` when no message is pending.
pub(crate) fn recv_fd(sock: &OwnedFd, wait: bool) -> io::Result<OwnedFd> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut errno = [0u8; 4];
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if !wait {
        flags |= RecvFlags::DONTWAIT;
    }
    let received = loop {
        let iov = [IoSliceMut::new(&mut errno)];
        match rustix::net::recvmsg(sock, &mut { iov }, &mut control, flags) {
            Err(rustix::io::Errno::INTR) => {}
            other => break other?,
        }
    };
    // The descriptor, if any, is a new one of this process, owned from here.
    let fd = control.drain().find_map(|message| match message {
        RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
        _ => None,
    });
    if received.bytes == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the sandbox's init closed its control socket",
        ));
    }
    match (i32::from_ne_bytes(errno), fd) {
        (0, Some(fd)) if received.bytes == 4 => Ok(fd),
        (0, _) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed message on the control socket",
        )),
        (errno, _) => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Sockets made by the sandbox's init in its network namespace, for the port forwarder of a
/// rootless sandbox. Requests are answered in order, one at a time.
#[derive(Debug)]
pub(crate) struct SocketFactory {
    sock: Mutex<OwnedFd>,
}

impl SocketFactory {
    pub(crate) fn new(sock: OwnedFd) -> Self {
        SocketFactory {
            sock: Mutex::new(sock),
        }
    }
}

impl SocketSource for SocketFactory {
    fn socket(&self, proto: Proto) -> io::Result<OwnedFd> {
        let request = match proto {
            Proto::Tcp => SocketRequest::Tcp,
            Proto::Udp => SocketRequest::Udp,
        } as u8;
        // A poisoned lock only means another relay thread panicked; the socket is still sound.
        let sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            // SAFETY: send(2) of one byte from this stack on a descriptor we own.
            let ret = unsafe {
                libc::send(
                    sock.as_raw_fd(),
                    (&request as *const u8).cast(),
                    1,
                    libc::MSG_NOSIGNAL,
                )
            };
            if ret == 1 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        recv_fd(&sock, true)
    }
}
