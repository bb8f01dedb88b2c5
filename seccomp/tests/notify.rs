//! User notification: a forked child loads a filter that sends `getppid` to a supervisor, passes
//! the listener fd to the test process, which answers with a value, an errno, and "continue".

mod child;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use child::{spawn, sys, wait, Exit};
use palisade_seccomp::notify::{Listener, Response};
use palisade_seccomp::{set_no_new_privs, Action, Arch, Filter, LoadFlags, Rule};

/// Room for one `cmsghdr` carrying one fd, 8-byte aligned.
type CmsgBuf = [u64; 4];

/// Sends `fd` over a unix socket with `SCM_RIGHTS`, without allocating.
fn send_fd(sock: RawFd, fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf: CmsgBuf = [0; 4];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: msg_control points to a buffer of msg_controllen bytes, large enough for one
    // header and an int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        libc::CMSG_DATA(cmsg).cast::<RawFd>().write_unaligned(fd);
    }
    // SAFETY: msg and everything it points to are valid for the call.
    unsafe { libc::sendmsg(sock, &msg, 0) == 1 }
}

/// Receives one fd sent by [`send_fd`].
fn recv_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf: CmsgBuf = [0; 4];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of::<CmsgBuf>() as _;
    // SAFETY: msg and everything it points to are valid for the call.
    if unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) } != 1 {
        return None;
    }
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR checks msg_controllen.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        let fd = libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned();
        Some(OwnedFd::from_raw_fd(fd))
    }
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair returned two new fds that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Waits up to ten seconds for `fd` to be readable, so a broken child fails the test instead of
/// hanging it.
fn readable(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 10_000) == 1 && pfd.revents & libc::POLLIN != 0 }
}

#[test]
fn supervisor_answers_value_errno_and_continue() {
    let arch = Arch::native();
    let getppid = arch.syscall_nr("getppid").unwrap();
    let mut f = Filter::new(arch, Action::Allow);
    f.add(Rule::new("getppid", Action::UserNotify)).unwrap();
    let prog = f.compile().unwrap();
    let (ours, theirs) = socketpair();
    // SAFETY: getpid cannot fail.
    let me = i64::from(unsafe { libc::getpid() });

    let pid = spawn(|| {
        if set_no_new_privs().is_err() {
            return 10;
        }
        let listener = match prog.load(LoadFlags::NEW_LISTENER) {
            Ok(Some(fd)) => fd,
            _ => return 11,
        };
        if !send_fd(theirs.as_raw_fd(), listener.as_raw_fd()) {
            return 12;
        }
        drop(listener);
        if sys(libc::SYS_getppid, 0, 0, 0) != Ok(4242) {
            return 13;
        }
        if sys(libc::SYS_getppid, 0, 0, 0) != Err(libc::EACCES) {
            return 14;
        }
        if sys(libc::SYS_getppid, 0, 0, 0) != Ok(me) {
            return 15;
        }
        0
    });
    // Only the child holds its end now, so a child that dies early gives us EOF.
    drop(theirs);

    let fd = recv_fd(ours.as_raw_fd());
    let Some(fd) = fd else {
        panic!("no listener fd; child ended with {:?}", wait(pid));
    };
    let listener = Listener::from(fd);
    for response in [
        Response::Value(4242),
        Response::Errno(libc::EACCES),
        Response::Continue,
    ] {
        assert!(readable(listener.as_raw_fd()), "no notification");
        let n = listener.recv().unwrap();
        assert_eq!(n.pid, pid as u32);
        assert_eq!(n.data.nr as u32, getppid);
        assert_eq!(n.data.arch, arch.audit_arch());
        assert!(listener.id_valid(n.id));
        listener.respond(n.id, response).unwrap();
        assert!(!listener.id_valid(n.id));
        assert!(listener.respond(n.id, response).is_err());
    }
    assert_eq!(wait(pid), Exit::Code(0));
}
