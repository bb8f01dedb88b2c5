//! The userspace port forwarder: published ports served by an event loop of the managing
//! process, where kernel DNAT cannot serve them (rootless sandboxes, and connections made on the
//! host itself to a bridge sandbox's loopback-published port).
//!
//! A published port is bound on the host before the sandbox starts (so a port that is taken fails
//! the spawn with [`Error::PortInUse`] and nothing is made). Each TCP connection accepted on it is
//! relayed to the sandbox over a fresh connection, both ways, half-closing each way as it ends
//! (`shutdown(2)`); each UDP client (per client address and local address it sent to) gets a
//! session socket of its own, so replies find their way back, and each reply leaves from the
//! local address the client sent to (`IP_PKTINFO`, `ip(7)`). Sessions are bounded and expire:
//! see [`ForwarderLimits`].
//!
//! The sandbox is reached either at its address (bridge mode: the bridge routes to it) or, for a
//! sandbox that has only loopback, at `127.0.0.1:<port>` inside its network namespace: the
//! forwarder's thread joins the namespace with `setns(2)`, or, where the manager may not join it
//! (rootless), a [`SocketSource`] inside the sandbox makes the socket. A socket stays in the
//! namespace it was created in (`network_namespaces(7)`), so listeners bound on the host keep
//! serving the host from that thread.
//!
//! One thread per [`Forwarder`] runs an `epoll(7)` loop over non-blocking sockets. Dropping the
//! forwarder wakes it through an `eventfd(2)`, and the thread is joined, closing every socket.

mod relay;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::proto::Proto;
use crate::{Error, Result};

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
}

impl Socket {
    fn raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(l) => l.as_raw_fd(),
            Socket::Udp(u) => u.as_raw_fd(),
        }
    }
}

/// `connect(2)`s `sock` to `addr` (in the namespace the socket belongs to). On a non-blocking
/// socket a connection under way (`EINPROGRESS`) counts as success: its outcome is read later
/// with `SO_ERROR`.
fn connect_to(sock: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
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
    match err.raw_os_error() {
        // EINTR: the connection goes on asynchronously, as for EINPROGRESS (`connect(2)`).
        Some(libc::EINPROGRESS | libc::EINTR) => Ok(()),
        _ => Err(err),
    }
}

/// The bounds of one [`Forwarder`]: how many sessions it keeps and for how long.
///
/// A sandbox, or anyone who can reach a published port, decides how many connections and UDP
/// clients come; these bounds keep that from using up the caller's descriptors or memory.
/// Besides them, the relays of all the forwarders of a process together hold at most half of its
/// soft `RLIMIT_NOFILE` (`getrlimit(2)`), read each time a session opens: two descriptors per TCP
/// connection, one per UDP session.
///
/// - Over [`max_tcp_connections`](Self::max_tcp_connections) (or the descriptor budget), a new
///   TCP connection is accepted and closed at once: the client sees it end without data.
/// - Over [`max_udp_sessions`](Self::max_udp_sessions), datagrams of new UDP clients are dropped;
///   known clients are still served.
///
/// When `accept(2)` fails for lack of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, or any
/// other unexpected error), the listener is left out of the event loop for a pause that starts
/// at 10 ms and doubles on each consecutive failure up to 1 s; meanwhile new connections wait in
/// the listen backlog (`listen(2)`). A successful accept resets the pause. The loop therefore
/// never spins on an error it cannot clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwarderLimits {
    /// Concurrent TCP connections relayed (default 1024).
    pub max_tcp_connections: usize,
    /// Concurrent UDP sessions, one per client address and local address it sent to (default
    /// 1024).
    pub max_udp_sessions: usize,
    /// A UDP session with no datagram either way for this long is closed (default 60 s).
    pub udp_idle_timeout: Duration,
    /// A TCP connection with no byte relayed either way for this long is closed (default: never).
    pub tcp_idle_timeout: Option<Duration>,
    /// A connection to the sandbox not established within this time is given up, and the
    /// client's connection closed (default 30 s).
    pub tcp_connect_timeout: Duration,
}

impl Default for ForwarderLimits {
    fn default() -> ForwarderLimits {
        ForwarderLimits {
            max_tcp_connections: 1024,
            max_udp_sessions: 1024,
            udp_idle_timeout: Duration::from_secs(60),
            tcp_idle_timeout: None,
            tcp_connect_timeout: Duration::from_secs(30),
        }
    }
}

impl ForwarderLimits {
    /// Sets [`max_tcp_connections`](Self::max_tcp_connections).
    pub fn max_tcp_connections(mut self, n: usize) -> ForwarderLimits {
        self.max_tcp_connections = n;
        self
    }

    /// Sets [`max_udp_sessions`](Self::max_udp_sessions).
    pub fn max_udp_sessions(mut self, n: usize) -> ForwarderLimits {
        self.max_udp_sessions = n;
        self
    }

    /// Sets [`udp_idle_timeout`](Self::udp_idle_timeout).
    pub fn udp_idle_timeout(mut self, t: Duration) -> ForwarderLimits {
        self.udp_idle_timeout = t;
        self
    }

    /// Sets [`tcp_idle_timeout`](Self::tcp_idle_timeout).
    pub fn tcp_idle_timeout(mut self, t: Option<Duration>) -> ForwarderLimits {
        self.tcp_idle_timeout = t;
        self
    }

    /// Sets [`tcp_connect_timeout`](Self::tcp_connect_timeout).
    pub fn tcp_connect_timeout(mut self, t: Duration) -> ForwarderLimits {
        self.tcp_connect_timeout = t;
        self
    }
}

/// How many sessions a [`Forwarder`] holds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionCounts {
    /// Relayed TCP connections (including those still connecting to the sandbox).
    pub tcp: usize,
    /// Open UDP sessions.
    pub udp: usize,
}

/// The running forwarder of one sandbox's published ports: one thread running an `epoll(7)`
/// loop over every published port and every relayed session. Dropping it stops the loop and
/// closes every socket.
#[derive(Debug)]
pub struct Forwarder {
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
    counts: Arc<relay::Counts>,
    ports: Vec<PortMap>,
    limits: ForwarderLimits,
}

impl Forwarder {
    /// Starts serving `ports` towards `target`, with the default [`ForwarderLimits`].
    ///
    /// # Errors
    /// As [`Forwarder::start_with_limits`].
    pub fn start(ports: Vec<BoundPort>, target: Target) -> Result<Forwarder> {
        Forwarder::start_with_limits(ports, target, ForwarderLimits::default())
    }

    /// Starts serving `ports` towards `target` within `limits`.
    ///
    /// For [`Target::Netns`] the loop's thread joins the namespace (`setns(2)`) before it
    /// serves, so that the sockets it makes towards the sandbox are made there; the listeners
    /// and accepted connections stay in the namespace they were made in.
    ///
    /// # Errors
    /// [`Error::Io`] if the eventfd, the epoll instance or the thread cannot be made, a listener
    /// cannot be set up, or the namespace of [`Target::Netns`] cannot be joined. Nothing is left
    /// running then.
    pub fn start_with_limits(
        ports: Vec<BoundPort>,
        target: Target,
        limits: ForwarderLimits,
    ) -> Result<Forwarder> {
        let io_err = |op: &'static str, target: &str| {
            let target = target.to_owned();
            move |source| Error::Io { op, target, source }
        };
        // SAFETY: eventfd(2) with valid flags; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io_err("create", "the forwarder's eventfd")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(fd) };
        let maps: Vec<PortMap> = ports.iter().map(BoundPort::map).collect();
        let counts = Arc::new(relay::Counts::default());
        let sockets = ports.into_iter().map(|b| (b.socket, b.map.port)).collect();
        let event_loop = relay::new_loop(
            stop.as_raw_fd(),
            sockets,
            target.clone(),
            limits,
            counts.clone(),
        )
        .map_err(io_err("set up", "the forwarder's event loop"))?;
        let netns = match &target {
            Target::Netns(fd) => Some(fd.clone()),
            _ => None,
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pal-fwd".into())
            .spawn(move || {
                if let Some(ns) = netns {
                    // SAFETY: setns(2) reads the fd, kept open by the Arc; it moves this thread
                    // only, which serves nothing else.
                    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        let _ = ready_tx.send(Err(io::Error::last_os_error()));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(()));
                event_loop.run();
            })
            .map_err(io_err("start the forwarder thread for", "published ports"))?;
        let started = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(io::Error::from_raw_os_error(libc::ESRCH)));
        if let Err(source) = started {
            let _ = thread.join();
            return Err(Error::Io {
                op: "setns(CLONE_NEWNET) into",
                target: "the sandbox's network namespace for the forwarder".into(),
                source,
            });
        }
        Ok(Forwarder {
            stop,
            thread: Some(thread),
            counts,
            ports: maps,
            limits,
        })
    }

    /// The ports being forwarded.
    pub fn ports(&self) -> &[PortMap] {
        &self.ports
    }

    /// The limits it runs with.
    pub fn limits(&self) -> ForwarderLimits {
        self.limits
    }

    /// How many sessions it holds now.
    pub fn sessions(&self) -> SessionCounts {
        SessionCounts {
            tcp: self.counts.tcp.load(Ordering::Relaxed),
            udp: self.counts.udp.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Forwarder {
    /// Wakes the loop through its eventfd and joins its thread, which drops every socket. The
    /// loop handles each readiness report without blocking, so the join waits at most for the
    /// batch under way (a [`SocketSource`] asked for a socket is the only call that may wait).
    fn drop(&mut self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
