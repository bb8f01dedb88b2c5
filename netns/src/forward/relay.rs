//! The forwarder's event loop: one thread per [`Forwarder`](super::Forwarder), one `epoll(7)`
//! instance, every socket non-blocking.
//!
//! Each epoll registration carries a token: the kind of socket in its low bits and an id (the
//! published port's index, a connection's or a session's number) above them. Registrations are
//! level-triggered; a TCP socket is registered only while the relay wants something of it, and
//! removed (`EPOLL_CTL_DEL`) otherwise, because `EPOLLHUP` and `EPOLLERR` are reported whatever
//! the interest and would wake the loop forever.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ForwarderLimits, Socket, Target};
use crate::proto::Proto;

const KIND_BITS: u32 = 3;
const STOP: u64 = 0;
const LISTENER: u64 = 1;
const CLIENT: u64 = 2;
const UPSTREAM: u64 = 3;
const SESSION: u64 = 4;

/// Bytes buffered per direction of a TCP connection.
const TCP_BUF: usize = 16 * 1024;
/// At most this many accepts or datagrams per readiness report, so that one busy socket does
/// not starve the others (the level-triggered registration reports it again).
const BATCH: usize = 64;
/// The first pause of a listener after an accept error for lack of resources, doubled on each
/// consecutive failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Descriptors held by the relays of every forwarder of this process (two per TCP connection,
/// one per UDP session).
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A share of [`HELD`], given back when dropped.
#[derive(Debug)]
struct Held(usize);

impl Held {
    /// Takes `n` descriptors of the process-wide budget: half of the soft `RLIMIT_NOFILE`
    /// (`getrlimit(2)`), so that sessions alone never use up the caller's descriptors.
    fn take(n: usize) -> Option<Held> {
        let budget = fd_budget();
        let mut cur = HELD.load(Ordering::Relaxed);
        loop {
            if cur + n > budget {
                return None;
            }
            match HELD.compare_exchange_weak(cur, cur + n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Some(Held(n)),
                Err(now) => cur = now,
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

fn fd_budget() -> usize {
    // SAFETY: getrlimit(2) fills the struct we pass; it is zeroed plain data.
    let mut lim: libc::rlimit = unsafe { zeroed() };
    // SAFETY: a valid resource and a pointer to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur / 2).unwrap_or(usize::MAX)
}

/// Live session counts, shared with the [`Forwarder`](super::Forwarder) handle.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) tcp: AtomicUsize,
    pub(super) udp: AtomicUsize,
}

/// A buffer of one direction of a TCP relay: bytes `start..end` are waiting to be written.
struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0; TCP_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn has_room(&self) -> bool {
        self.end < self.data.len()
    }

    /// Reads from `from` into the free space; `Ok(true)` at end of stream.
    fn fill(&mut self, from: &mut TcpStream) -> io::Result<bool> {
        while self.has_room() {
            match from.read(&mut self.data[self.end..]) {
                Ok(0) => return Ok(true),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Writes what is buffered to `to`, as much as it takes now.
    fn drain(&mut self, to: &mut TcpStream) -> io::Result<()> {
        while !self.is_empty() {
            match to.write(&self.data[self.start..self.end]) {
                Ok(n) => self.start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.is_empty() {
            (self.start, self.end) = (0, 0);
        }
        Ok(())
    }
}

/// One direction's progress.
#[derive(Default, Clone, Copy)]
struct Side {
    /// The peer's stream has ended (read returned 0).
    eof: bool,
    /// We have shut down writing towards this socket.
    wr_shut: bool,
    /// The epoll interest registered for the socket (0: not registered).
    reg: u32,
}

struct Conn {
    client: TcpStream,
    up: TcpStream,
    connecting: bool,
    /// Client to upstream, and upstream to client.
    c2u: Buf,
    u2c: Buf,
    cs: Side,
    us: Side,
    last: Instant,
    _held: Held,
}

struct Session {
    port: usize,
    client: SocketAddrV4,
    local: Ipv4Addr,
    up: UdpSocket,
    last: Instant,
    _held: Held,
}

struct Port {
    socket: Socket,
    /// The sandbox port.
    port: u16,
    /// While set, the listener is out of the epoll set until then (accept back-off).
    paused_until: Option<Instant>,
    backoff: Duration,
}

/// The state of the loop; dropping it closes every socket.
pub(super) struct Loop {
    ep: OwnedFd,
    ports: Vec<Port>,
    conns: HashMap<u64, Conn>,
    sessions: HashMap<u64, Session>,
    by_client: HashMap<(usize, SocketAddrV4, Ipv4Addr), u64>,
    next_id: u64,
    limits: ForwarderLimits,
    target: Target,
    counts: Arc<Counts>,
    buf: Vec<u8>,
}

fn token(kind: u64, id: u64) -> u64 {
    (id << KIND_BITS) | kind
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `epoll_ctl(2)`.
fn ctl(ep: &OwnedFd, op: libc::c_int, fd: RawFd, events: u32, tok: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: tok };
    // SAFETY: a valid epoll descriptor, and an event struct that lives for the call.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) }).map(drop)
}

/// Sets up the epoll instance of a forwarder: `stop` (an eventfd) and every listener, which are
/// made non-blocking; UDP listeners also get `IP_PKTINFO` (`ip(7)`), so that each datagram tells
/// which local address it was sent to.
pub(super) fn new_loop(
    stop: RawFd,
    sockets: Vec<(Socket, u16)>,
    target: Target,
    limits: ForwarderLimits,
    counts: Arc<Counts>,
) -> io::Result<Loop> {
    // SAFETY: epoll_create1(2) with a valid flag; the result is checked.
    let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    ctl(&ep, libc::EPOLL_CTL_ADD, stop, libc::EPOLLIN as u32, STOP)?;
    let mut ports = Vec::new();
    for (i, (socket, port)) in sockets.into_iter().enumerate() {
        let fd = match &socket {
            Socket::Tcp(l) => {
                l.set_nonblocking(true)?;
                l.as_raw_fd()
            }
            Socket::Udp(u) => {
                u.set_nonblocking(true)?;
                set_pktinfo(u.as_raw_fd())?;
                u.as_raw_fd()
            }
        };
        ctl(
            &ep,
            libc::EPOLL_CTL_ADD,
            fd,
            libc::EPOLLIN as u32,
            token(LISTENER, i as u64),
        )?;
        ports.push(Port {
            socket,
            port,
            paused_until: None,
            backoff: MIN_BACKOFF,
        });
    }
    Ok(Loop {
        ep,
        ports,
        conns: HashMap::new(),
        sessions: HashMap::new(),
        by_client: HashMap::new(),
        next_id: 0,
        limits,
        target,
        counts,
        buf: vec![0; 65536],
    })
}

fn set_pktinfo(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) reads an int that lives for the call.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl Loop {
    /// Serves until the stop eventfd becomes readable (or epoll itself fails).
    pub(super) fn run(mut self) {
        let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let tick = self.tick();
        let mut next_sweep = Instant::now() + tick;
        loop {
            let now = Instant::now();
            let mut wake = next_sweep;
            for p in &self.ports {
                if let Some(t) = p.paused_until {
                    wake = wake.min(t);
                }
            }
            let timeout = wake.saturating_duration_since(now).as_millis().min(1000) as libc::c_int;
            // SAFETY: `events` is a writable array of its length.
            let n = unsafe {
                libc::epoll_wait(
                    self.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    timeout,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for ev in &events[..n as usize] {
                let (flags, tok) = (ev.events, ev.u64);
                let (kind, id) = (tok & ((1 << KIND_BITS) - 1), tok >> KIND_BITS);
                match kind {
                    STOP => return,
                    LISTENER => self.on_listener(id as usize),
                    CLIENT | UPSTREAM => self.on_conn(id, kind == UPSTREAM, flags),
                    SESSION => self.on_session(id),
                    _ => {}
                }
            }
            let now = Instant::now();
            self.resume_listeners(now);
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + tick;
            }
        }
    }

    /// How often timeouts are checked: a quarter of the shortest one, between 10 ms and 1 s.
    fn tick(&self) -> Duration {
        let mut t = self
            .limits
            .udp_idle_timeout
            .min(self.limits.tcp_connect_timeout);
        if let Some(idle) = self.limits.tcp_idle_timeout {
            t = t.min(idle);
        }
        (t / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn resume_listeners(&mut self, now: Instant) {
        for (i, p) in self.ports.iter_mut().enumerate() {
            if p.paused_until.is_some_and(|t| t <= now) {
                p.paused_until = None;
                let fd = p.socket.raw_fd();
                let _ = ctl(
                    &self.ep,
                    libc::EPOLL_CTL_ADD,
                    fd,
                    libc::EPOLLIN as u32,
                    token(LISTENER, i as u64),
                );
            }
        }
    }

    /// Stops polling listener `i` for a while after a failure for lack of resources
    /// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, or any unexpected error): the pending
    /// connection stays in the backlog, and the level-triggered listener would otherwise report
    /// it again at once, forever.
    fn pause(&mut self, i: usize) {
        let p = &mut self.ports[i];
        if p.paused_until.is_some() {
            return;
        }
        let _ = ctl(&self.ep, libc::EPOLL_CTL_DEL, p.socket.raw_fd(), 0, 0);
        p.paused_until = Some(Instant::now() + p.backoff);
        p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
    }

    fn sweep(&mut self, now: Instant) {
        let udp_idle = self.limits.udp_idle_timeout;
        let expired: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last) >= udp_idle)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.close_session(id);
        }
        let (connect, idle) = (
            self.limits.tcp_connect_timeout,
            self.limits.tcp_idle_timeout,
        );
        let expired: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let quiet = now.duration_since(c.last);
                (c.connecting && quiet >= connect) || idle.is_some_and(|i| quiet >= i)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.close_conn(id);
        }
    }

    fn on_listener(&mut self, i: usize) {
        match &self.ports[i].socket {
            Socket::Tcp(_) => self.accept(i),
            Socket::Udp(_) => self.on_udp_listener(i),
        }
    }

    fn accept(&mut self, i: usize) {
        for _ in 0..BATCH {
            let Socket::Tcp(listener) = &self.ports[i].socket else {
                return;
            };
            let client = match accept_nb(listener) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
                    ) =>
                {
                    continue; // that connection is gone; others may wait
                }
                Err(_) => return self.pause(i),
            };
            self.ports[i].backoff = MIN_BACKOFF;
            // Over the limit the connection is closed at once (the client sees it end), which
            // costs one descriptor for an instant.
            if self.conns.len() >= self.limits.max_tcp_connections {
                continue;
            }
            let Some(held) = Held::take(2) else {
                continue;
            };
            let up = match self.connect(Proto::Tcp, self.ports[i].port) {
                Ok(fd) => TcpStream::from(fd),
                Err(e) => {
                    if is_resource_error(&e) {
                        self.pause(i);
                        return;
                    }
                    continue;
                }
            };
            let id = self.next_id;
            self.next_id += 1;
            self.conns.insert(
                id,
                Conn {
                    client,
                    up,
                    connecting: true,
                    c2u: Buf::new(),
                    u2c: Buf::new(),
                    cs: Side::default(),
                    us: Side::default(),
                    last: Instant::now(),
                    _held: held,
                },
            );
            self.counts.tcp.store(self.conns.len(), Ordering::Relaxed);
            if self.update(id).is_err() {
                self.close_conn(id);
            }
        }
    }

    /// A new non-blocking socket towards the sandbox's `port`, connecting.
    fn connect(&self, proto: Proto, port: u16) -> io::Result<OwnedFd> {
        let (fd, ip) = match &self.target {
            Target::Addr(std::net::IpAddr::V4(ip)) => (new_socket(proto)?, *ip),
            Target::Addr(std::net::IpAddr::V6(_)) => {
                return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
            }
            // This thread joined the namespace when it started.
            Target::Netns(_) => (new_socket(proto)?, Ipv4Addr::LOCALHOST),
            Target::Sockets(source) => {
                let fd = source.socket(proto)?;
                set_nonblocking(fd.as_raw_fd())?;
                (fd, Ipv4Addr::LOCALHOST)
            }
        };
        super::connect_to(&fd, SocketAddrV4::new(ip, port))?;
        Ok(fd)
    }

    fn on_conn(&mut self, id: u64, upstream: bool, flags: u32) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if flags & libc::EPOLLERR as u32 != 0 && !(upstream && c.connecting) {
            return self.close_conn(id);
        }
        if c.connecting {
            if !upstream {
                return;
            }
            match c.up.take_error() {
                Ok(None) => c.connecting = false,
                _ => return self.close_conn(id),
            }
        }
        let before = (
            c.c2u.start,
            c.c2u.end,
            c.u2c.start,
            c.u2c.end,
            c.cs.eof,
            c.us.eof,
        );
        if pump(c).is_err() {
            return self.close_conn(id);
        }
        let after = (
            c.c2u.start,
            c.c2u.end,
            c.u2c.start,
            c.u2c.end,
            c.cs.eof,
            c.us.eof,
        );
        // A hang-up needs no handling of its own: a registered socket that hung up reads its
        // end of stream or fails its write, either of which moves the relay on.
        if before != after {
            c.last = Instant::now();
        }
        let done = c.cs.eof && c.us.eof && c.c2u.is_empty() && c.u2c.is_empty();
        if done || self.update(id).is_err() {
            self.close_conn(id);
        }
    }

    /// Registers the sockets of connection `id` for what it waits for now.
    fn update(&mut self, id: u64) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let (inn, out) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
        let mut want_c = 0;
        let mut want_u = 0;
        if c.connecting {
            want_u = out;
        } else {
            if !c.cs.eof && c.c2u.has_room() {
                want_c |= inn;
            }
            if !c.u2c.is_empty() {
                want_c |= out;
            }
            if !c.us.eof && c.u2c.has_room() {
                want_u |= inn;
            }
            if !c.c2u.is_empty() {
                want_u |= out;
            }
        }
        for (sock, side, want, kind) in [
            (c.client.as_raw_fd(), &mut c.cs, want_c, CLIENT),
            (c.up.as_raw_fd(), &mut c.us, want_u, UPSTREAM),
        ] {
            if side.reg == want {
                continue;
            }
            let op = match (side.reg, want) {
                (0, _) => libc::EPOLL_CTL_ADD,
                (_, 0) => libc::EPOLL_CTL_DEL,
                _ => libc::EPOLL_CTL_MOD,
            };
            ctl(&self.ep, op, sock, want, token(kind, id))?;
            side.reg = want;
        }
        Ok(())
    }

    fn close_conn(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            for (fd, side) in [(c.client.as_raw_fd(), c.cs), (c.up.as_raw_fd(), c.us)] {
                if side.reg != 0 {
                    let _ = ctl(&self.ep, libc::EPOLL_CTL_DEL, fd, 0, 0);
                }
            }
        }
        self.counts.tcp.store(self.conns.len(), Ordering::Relaxed);
    }

    fn on_udp_listener(&mut self, i: usize) {
        for _ in 0..BATCH {
            let Socket::Udp(listener) = &self.ports[i].socket else {
                return;
            };
            let (n, client, local) = match recv_pktinfo(listener.as_raw_fd(), &mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let key = (i, client, local);
            let id = match self.by_client.get(&key) {
                Some(id) => *id,
                None => match self.new_session(i, client, local) {
                    Some(id) => id,
                    None => continue, // over the limit, or no socket: dropped
                },
            };
            if let Some(s) = self.sessions.get_mut(&id) {
                s.last = Instant::now();
                let _ = s.up.send(&self.buf[..n]);
            }
        }
    }

    fn new_session(&mut self, i: usize, client: SocketAddrV4, local: Ipv4Addr) -> Option<u64> {
        if self.sessions.len() >= self.limits.max_udp_sessions {
            return None;
        }
        let held = Held::take(1)?;
        let up = UdpSocket::from(self.connect(Proto::Udp, self.ports[i].port).ok()?);
        let id = self.next_id;
        self.next_id += 1;
        let tok = token(SESSION, id);
        ctl(
            &self.ep,
            libc::EPOLL_CTL_ADD,
            up.as_raw_fd(),
            libc::EPOLLIN as u32,
            tok,
        )
        .ok()?;
        self.sessions.insert(
            id,
            Session {
                port: i,
                client,
                local,
                up,
                last: Instant::now(),
                _held: held,
            },
        );
        self.by_client.insert((i, client, local), id);
        self.counts
            .udp
            .store(self.sessions.len(), Ordering::Relaxed);
        Some(id)
    }

    fn on_session(&mut self, id: u64) {
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let Socket::Udp(listener) = &self.ports[s.port].socket else {
            return;
        };
        for _ in 0..BATCH {
            // An error (ECONNREFUSED after an ICMP error, `ip(7)`) is consumed by this recv.
            let Ok(n) = s.up.recv(&mut self.buf) else {
                break;
            };
            s.last = Instant::now();
            let _ = send_from(listener.as_raw_fd(), &self.buf[..n], s.client, s.local);
        }
    }

    fn close_session(&mut self, id: u64) {
        if let Some(s) = self.sessions.remove(&id) {
            let _ = ctl(&self.ep, libc::EPOLL_CTL_DEL, s.up.as_raw_fd(), 0, 0);
            self.by_client.remove(&(s.port, s.client, s.local));
        }
        self.counts
            .udp
            .store(self.sessions.len(), Ordering::Relaxed);
    }
}

/// Moves what can be moved now in both directions, half-closing (`shutdown(2)` with
/// `SHUT_WR`) towards a side once the other side's stream has ended and all of it was written.
fn pump(c: &mut Conn) -> io::Result<()> {
    if !c.cs.eof {
        c.cs.eof = c.c2u.fill(&mut c.client)?;
    }
    c.c2u.drain(&mut c.up)?;
    if c.cs.eof && c.c2u.is_empty() && !c.us.wr_shut {
        c.up.shutdown(Shutdown::Write)?;
        c.us.wr_shut = true;
    }
    if !c.us.eof {
        c.us.eof = c.u2c.fill(&mut c.up)?;
    }
    c.u2c.drain(&mut c.client)?;
    if c.us.eof && c.u2c.is_empty() && !c.cs.wr_shut {
        c.client.shutdown(Shutdown::Write)?;
        c.cs.wr_shut = true;
    }
    Ok(())
}

fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// `accept4(2)` of a non-blocking, close-on-exec connection.
fn accept_nb(listener: &TcpListener) -> io::Result<TcpStream> {
    // SAFETY: null address arguments are allowed; flags are valid.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    let fd = cvt(fd)?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// A non-blocking IPv4 socket in the calling thread's network namespace.
fn new_socket(proto: Proto) -> io::Result<OwnedFd> {
    let ty = match proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket(2) with valid arguments; the result is checked.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) F_GETFL/F_SETFL on a descriptor the caller owns.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Space for one `IP_PKTINFO` control message, aligned for `cmsghdr`.
#[repr(C)]
union CmsgBuf {
    _align: libc::cmsghdr,
    bytes: [u8; 64],
}

/// `recvmsg(2)` of one datagram with its sender and the local address it was sent to
/// (`ipi_spec_dst` of `IP_PKTINFO`, `ip(7)`).
fn recv_pktinfo(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4, Ipv4Addr)> {
    // SAFETY: plain data, valid when zeroed.
    let mut from: libc::sockaddr_in = unsafe { zeroed() };
    let mut cbuf = CmsgBuf { bytes: [0; 64] };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data, valid when zeroed.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: the union's bytes are its whole storage.
    msg.msg_control = unsafe { cbuf.bytes.as_mut_ptr() }.cast();
    // `as _`: the field is a `size_t` in glibc and a `socklen_t` in musl.
    msg.msg_controllen = size_of::<CmsgBuf>() as _;
    // SAFETY: every pointer in `msg` points to storage that lives for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let client = SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr)),
        u16::from_be(from.sin_port),
    );
    let mut local = Ipv4Addr::UNSPECIFIED;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen; the pktinfo is read unaligned from its data.
    unsafe {
        let mut cm = libc::CMSG_FIRSTHDR(&msg);
        while !cm.is_null() {
            if (*cm).cmsg_level == libc::IPPROTO_IP && (*cm).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::in_pktinfo>());
                local = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            }
            cm = libc::CMSG_NXTHDR(&msg, cm);
        }
    }
    Ok((n as usize, client, local))
}

/// `sendmsg(2)` of one datagram to `to`, from local address `local` (an `IP_PKTINFO` control
/// message with `ipi_spec_dst` set, `ip(7)`), so the client sees the reply come from the address
/// it sent to. An unspecified `local` lets the kernel choose.
fn send_from(fd: RawFd, data: &[u8], to: SocketAddrV4, local: Ipv4Addr) -> io::Result<()> {
    let dest = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*to.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut cbuf = CmsgBuf { bytes: [0; 64] };
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: plain data, valid when zeroed.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&dest as *const libc::sockaddr_in as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !local.is_unspecified() {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) } as usize;
        // SAFETY: the union's bytes are its whole storage.
        msg.msg_control = unsafe { cbuf.bytes.as_mut_ptr() }.cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is aligned for cmsghdr and has `space` (<= 64) bytes, so
        // the first header and its data fit; the pktinfo is written unaligned.
        unsafe {
            let cm = libc::CMSG_FIRSTHDR(&msg);
            (*cm).cmsg_level = libc::IPPROTO_IP;
            (*cm).cmsg_type = libc::IP_PKTINFO;
            (*cm).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(local).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<libc::in_pktinfo>(), info);
        }
    }
    // SAFETY: every pointer in `msg` points to storage that lives for the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
