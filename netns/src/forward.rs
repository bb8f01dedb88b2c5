//! The userspace port forwarder: published ports served by threads of the managing process.
//!
//! A published port is bound on the host before the sandbox starts (so a port that is taken fails
//! the spawn with [`Error::PortInUse`] and nothing is made). Each TCP connection accepted on it is
//! relayed to the sandbox over a fresh connection; each UDP client gets a session socket of its
//! own, so replies find their way back, and sessions idle for a minute are dropped.
//!
//! The sandbox is reached either at its address (bridge mode: the bridge routes to it) or, for a
//! sandbox that has only loopback, at `127.0.0.1:<port>` inside its network namespace: the thread
//! that connects joins the namespace with `setns(2)` first, or, where the manager may not join it
//! (rootless), a [`SocketSource`] inside the sandbox makes the socket. A socket stays in the
//! namespace it was created in (`network_namespaces(7)`), so the relay itself works from any
//! thread.
//!
//! Threads stop when the [`Forwarder`] is dropped: an `eventfd(2)` wakes their `poll(2)`, every
//! relayed connection is shut down, and the threads are joined.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mode::in_netns;
use crate::nft::Proto;
use crate::{Error, Result};

/// The relayed TCP connections (client and upstream side) by relay id, and whether the forwarder
/// is stopping (then no new relay may register).
type Conns = Mutex<(bool, HashMap<u64, [TcpStream; 2]>)>;

/// How long a UDP session may stay idle before its socket is closed.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// A port published from the host to a sandbox, as `docker run -p` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMap {
    /// The protocol.
    pub proto: Proto,
    /// The host address to listen on; `0.0.0.0` (all) by default.
    pub host_ip: Ipv4Addr,
    /// The host port; 0 lets the kernel choose one (see [`BoundPort::host_port`]).
    pub host_port: u16,
    /// The port in the sandbox.
    pub port: u16,
}

impl PortMap {
    /// Publishes `port` of the sandbox as `host_port` on every host address.
    pub fn new(host_port: u16, port: u16, proto: Proto) -> PortMap {
        PortMap {
            proto,
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port,
            port,
        }
    }

    /// Listens on `ip` only.
    pub fn host_ip(mut self, ip: Ipv4Addr) -> PortMap {
        self.host_ip = ip;
        self
    }

    /// Checks a set of published ports: no container port 0 and no host port (per protocol and
    /// address) twice.
    pub fn validate(ports: &[PortMap]) -> Result<()> {
        for (i, p) in ports.iter().enumerate() {
            if p.port == 0 {
                return Err(Error::InvalidValue {
                    what: "published port",
                    value: p.to_string(),
                    reason: "the sandbox port must not be 0",
                });
            }
            let clash = ports[..i].iter().any(|q| {
                q.proto == p.proto
                    && q.host_port == p.host_port
                    && p.host_port != 0
                    && (q.host_ip == p.host_ip
                        || q.host_ip.is_unspecified()
                        || p.host_ip.is_unspecified())
            });
            if clash {
                return Err(Error::PortConflict {
                    proto: p.proto,
                    port: p.host_port,
                });
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for PortMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.host_ip.is_unspecified() {
            write!(f, "{}:", self.host_ip)?;
        }
        write!(f, "{}:{}/{}", self.host_port, self.port, self.proto)
    }
}

impl std::str::FromStr for PortMap {
    type Err = Error;

    /// Parses `[HOST_IP:]HOST_PORT:PORT[/tcp|/udp]`.
    fn from_str(s: &str) -> Result<PortMap> {
        let bad = |reason| Error::InvalidValue {
            what: "published port",
            value: s.to_owned(),
            reason,
        };
        let (spec, proto) = match s.rsplit_once('/') {
            Some((spec, "tcp")) => (spec, Proto::Tcp),
            Some((spec, "udp")) => (spec, Proto::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host, port) = match parts.as_slice() {
            [host, port] => (Ipv4Addr::UNSPECIFIED, *host, *port),
            [ip, host, port] => (
                ip.parse()
                    .map_err(|_| bad("the host address is not IPv4"))?,
                *host,
                *port,
            ),
            _ => return Err(bad("expected [HOST_IP:]HOST_PORT:PORT[/PROTO]")),
        };
        let host_port = host.parse().map_err(|_| bad("bad host port"))?;
        let port = port.parse().map_err(|_| bad("bad sandbox port"))?;
        Ok(PortMap::new(host_port, port, proto).host_ip(ip))
    }
}

/// A published port bound on the host, before the sandbox exists.
#[derive(Debug)]
pub struct BoundPort {
    map: PortMap,
    socket: Socket,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl BoundPort {
    /// Binds `map` in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`Error::PortInUse`] if the port is taken (by another sandbox or any program).
    pub fn bind(map: PortMap) -> Result<BoundPort> {
        let addr = SocketAddr::V4(SocketAddrV4::new(map.host_ip, map.host_port));
        let err = |source: io::Error| match source.raw_os_error() {
            Some(libc::EADDRINUSE) => Error::PortInUse {
                proto: map.proto,
                port: map.host_port,
                source,
            },
            _ => Error::Io {
                op: "bind published port",
                target: map.to_string(),
                source,
            },
        };
        let socket = match map.proto {
            Proto::Tcp => Socket::Tcp(TcpListener::bind(addr).map_err(err)?),
            Proto::Udp => Socket::Udp(UdpSocket::bind(addr).map_err(err)?),
        };
        let mut bound = BoundPort { map, socket };
        bound.map.host_port = bound.local_port().map_err(err)?;
        Ok(bound)
    }

    fn local_port(&self) -> io::Result<u16> {
        Ok(match &self.socket {
            Socket::Tcp(l) => l.local_addr()?.port(),
            Socket::Udp(u) => u.local_addr()?.port(),
        })
    }

    /// The mapping, with the host port the kernel chose if 0 was asked for.
    pub fn map(&self) -> PortMap {
        self.map
    }

    /// The host port.
    pub fn host_port(&self) -> u16 {
        self.map.host_port
    }
}

/// Makes sockets inside a sandbox's network namespace for a forwarder that may not join it.
///
/// Joining a network namespace with `setns(2)` needs `CAP_SYS_ADMIN` in the user namespace that
/// owns it, which a rootless manager lacks for its sandbox's namespaces. A process inside the
/// sandbox can create sockets there instead and pass them out (`SCM_RIGHTS`, `unix(7)`): a socket
/// stays in the namespace it was created in, whoever connects it.
pub trait SocketSource: Send + Sync + std::fmt::Debug {
    /// A new, unconnected IPv4 socket for `proto` (stream for TCP, datagram for UDP), created in
    /// the sandbox's network namespace.
    fn socket(&self, proto: Proto) -> io::Result<OwnedFd>;
}

/// Where the forwarder finds the sandbox.
#[derive(Debug, Clone)]
pub enum Target {
    /// At an address reachable from the host's namespace (the sandbox's bridge address).
    Addr(IpAddr),
    /// On loopback inside a network namespace (a `/proc/<pid>/ns/net` fd), which the connecting
    /// thread joins.
    Netns(Arc<OwnedFd>),
    /// On loopback inside a network namespace, through sockets made there by a [`SocketSource`].
    Sockets(Arc<dyn SocketSource>),
}

impl Target {
    /// The network namespace of process `pid` (`/proc/<pid>/ns/net`).
    pub fn netns_of(pid: u32) -> Result<Target> {
        let path = format!("/proc/{pid}/ns/net");
        let file = std::fs::File::open(&path).map_err(|source| Error::Io {
            op: "open",
            target: path,
            source,
        })?;
        Ok(Target::Netns(Arc::new(OwnedFd::from(file))))
    }

    fn connect_tcp(&self, port: u16) -> io::Result<TcpStream> {
        match self {
            Target::Addr(ip) => TcpStream::connect((*ip, port)),
            Target::Netns(fd) => in_netns(fd.as_fd(), || {
                TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            })?,
            Target::Sockets(source) => {
                let sock = source.socket(Proto::Tcp)?;
                connect_loopback(&sock, port)?;
                Ok(TcpStream::from(sock))
            }
        }
    }

    fn connect_udp(&self, port: u16) -> io::Result<UdpSocket> {
        let connect = |ip: IpAddr| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
            s.connect((ip, port))?;
            Ok(s)
        };
        match self {
            Target::Addr(ip) => connect(*ip),
            Target::Netns(fd) => in_netns(fd.as_fd(), || connect(IpAddr::V4(Ipv4Addr::LOCALHOST)))?,
            Target::Sockets(source) => {
                let sock = source.socket(Proto::Udp)?;
                connect_loopback(&sock, port)?;
                Ok(UdpSocket::from(sock))
            }
        }
    }
}

/// `connect(2)`s `sock` to `127.0.0.1:port` (in the namespace the socket belongs to).
fn connect_loopback(sock: &OwnedFd, port: u16) -> io::Result<()> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    loop {
        // SAFETY: connect(2) reads a sockaddr_in that lives for the call, on a descriptor we own.
        let ret = unsafe {
            libc::connect(
                sock.as_raw_fd(),
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// The running forwarder of one sandbox's published ports. Dropping it stops every thread and
/// closes every relayed connection.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<OwnedFd>,
    threads: Vec<JoinHandle<()>>,
    conns: Arc<Conns>,
    ports: Vec<PortMap>,
}

impl Forwarder {
    /// Starts serving `ports` towards `target`.
    pub fn start(ports: Vec<BoundPort>, target: Target) -> Result<Forwarder> {
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::Io {
                op: "create",
                target: "the forwarder's eventfd".into(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let stop = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut fwd = Forwarder {
            stop,
            threads: Vec::new(),
            conns: Arc::default(),
            ports: ports.iter().map(BoundPort::map).collect(),
        };
        for bound in ports {
            let (stop, target, conns) = (fwd.stop.clone(), target.clone(), fwd.conns.clone());
            let port = bound.map.port;
            let spawned = std::thread::Builder::new()
                .name(format!("pal-fwd-{}", bound.map.host_port))
                .spawn(move || match bound.socket {
                    Socket::Tcp(l) => serve_tcp(l, port, target, stop, conns),
                    Socket::Udp(u) => serve_udp(u, port, target, stop),
                })
                .map_err(|source| Error::Io {
                    op: "start forwarder thread for",
                    target: "published port".into(),
                    source,
                })?;
            fwd.threads.push(spawned);
        }
        Ok(fwd)
    }

    /// The ports being forwarded.
    pub fn ports(&self) -> &[PortMap] {
        &self.ports
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Ok(mut conns) = self.conns.lock() {
            conns.0 = true;
            for c in conns.1.values().flatten() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits until one of `fds` is readable (or has hung up); returns the readiness of each, or
/// `None` when `stop` fired.
fn wait(stop: RawFd, fds: &[RawFd], timeout_ms: i32) -> Option<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = std::iter::once(stop)
        .chain(fds.iter().copied())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `polls` is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
        if n >= 0 {
            break;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return None;
        }
    }
    if polls[0].revents != 0 {
        return None;
    }
    Some(polls[1..].iter().map(|p| p.revents != 0).collect())
}

fn serve_tcp(
    listener: TcpListener,
    port: u16,
    target: Target,
    stop: Arc<OwnedFd>,
    conns: Arc<Conns>,
) {
    let _ = listener.set_nonblocking(true);
    let mut relays: Vec<JoinHandle<()>> = Vec::new();
    while wait(stop.as_raw_fd(), &[listener.as_raw_fd()], -1).is_some() {
        let Ok((client, _)) = listener.accept() else {
            continue;
        };
        let _ = client.set_nonblocking(false);
        let (target, conns) = (target.clone(), conns.clone());
        let relay = std::thread::Builder::new()
            .name("pal-fwd-conn".into())
            .spawn(move || {
                let Ok(upstream) = target.connect_tcp(port) else {
                    return; // dropping `client` resets the connection
                };
                relay_tcp(client, upstream, &conns);
            });
        if let Ok(r) = relay {
            relays.push(r);
        }
        relays.retain(|r| !r.is_finished());
    }
    for r in relays {
        let _ = r.join();
    }
}

/// Copies both ways until both directions have ended, half-closing as each ends. The pair is
/// registered in `conns` meanwhile, so that stopping the forwarder can shut it down.
fn relay_tcp(client: TcpStream, upstream: TcpStream, conns: &Conns) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let (Ok(client2), Ok(upstream2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    match (conns.lock(), client.try_clone(), upstream.try_clone()) {
        (Ok(mut c), Ok(a), Ok(b)) if !c.0 => {
            c.1.insert(id, [a, b]);
        }
        _ => return,
    }
    let back = std::thread::spawn(move || pipe(upstream2, client2));
    pipe(client, upstream);
    let _ = back.join();
    if let Ok(mut c) = conns.lock() {
        c.1.remove(&id);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn serve_udp(socket: UdpSocket, port: u16, target: Target, stop: Arc<OwnedFd>) {
    let _ = socket.set_nonblocking(true);
    let mut sessions: HashMap<SocketAddr, (UdpSocket, Instant)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let peers: Vec<SocketAddr> = sessions.keys().copied().collect();
        let fds: Vec<RawFd> = std::iter::once(socket.as_raw_fd())
            .chain(peers.iter().map(|p| sessions[p].0.as_raw_fd()))
            .collect();
        let Some(ready) = wait(stop.as_raw_fd(), &fds, 1000) else {
            return;
        };
        if ready[0] {
            while let Ok((n, client)) = socket.recv_from(&mut buf) {
                let up = match sessions.entry(client) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let Ok(up) = target.connect_udp(port) else {
                            continue;
                        };
                        let _ = up.set_nonblocking(true);
                        e.insert((up, Instant::now()))
                    }
                };
                up.1 = Instant::now();
                let _ = up.0.send(&buf[..n]);
            }
        }
        for (i, peer) in peers.iter().enumerate() {
            if !ready[i + 1] {
                continue;
            }
            if let Some((up, seen)) = sessions.get_mut(peer) {
                while let Ok(n) = up.recv(&mut buf) {
                    *seen = Instant::now();
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        }
        sessions.retain(|_, (_, seen)| seen.elapsed() < UDP_IDLE);
    }
}
