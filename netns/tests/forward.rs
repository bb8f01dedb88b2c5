//! The userspace forwarder against the real kernel: relaying both ways with half-close, bounded
//! sessions, UDP idle expiry, replies from the address the client used, no spinning when the
//! process runs out of descriptors, and a prompt stop.
//!
//! Every test runs in a thread that has unshared a network namespace of its own (a throwaway
//! "host", lo up); the backend servers are run by the test itself, on loopback of that
//! namespace or of a second throwaway namespace standing for the sandbox. The tests that count
//! the process's descriptors need that no other test of this binary opens or closes sockets
//! meanwhile: every test holds [`SERIAL`].

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::in_host;
use palisade_netns::forward::{BoundPort, ForwarderLimits, Target};
use palisade_netns::link::Netlink;
use palisade_netns::{Forwarder, PortMap, Proto};
use palisade_test_support::{in_new_netns, require_root};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits up to 5 s for `cond`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP server on `listener`: each connection gets back `"echo:"` and all it sent, once it has
/// half-closed. Runs until the listener's namespace is gone or the process ends.
fn echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = conn.read_to_end(&mut got);
                let _ = conn.write_all(b"echo:");
                let _ = conn.write_all(&got);
            });
        }
    });
}

/// A UDP server on `sock`: answers each datagram with `"pong "` and the datagram.
fn udp_echo_server(sock: UdpSocket) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut reply = b"pong ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, from);
        }
    });
}

fn ask_tcp(port: u16, request: &[u8]) -> String {
    let mut c = TcpStream::connect((LOCALHOST, port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(request).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    reply
}

fn bind(map: PortMap) -> BoundPort {
    BoundPort::bind(map.host_ip(Ipv4Addr::LOCALHOST)).unwrap()
}

/// A second throwaway namespace (the "sandbox", lo up) with a TCP listener on
/// `127.0.0.1:port` in it, and the namespace's fd.
fn sandbox_ns(port: u16) -> (TcpListener, OwnedFd) {
    in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        let ns = File::open("/proc/thread-self/ns/net").unwrap();
        (l, OwnedFd::from(ns))
    })
}

#[test]
fn tcp_is_relayed_both_ways_with_half_close_into_a_namespace() {
    require_root!();
    let _serial = serial();
    in_host(|| {
        let (listener, ns) = sandbox_ns(80);
        echo_server(listener);
        let fwd = Forwarder::start(
            vec![bind(PortMap::new(0, 80, Proto::Tcp))],
            Target::Netns(Arc::new(ns)),
        )
        .unwrap();
        let port = fwd.ports()[0].host_port;
        // Large enough to fill the relay's buffers several times over.
        let big = vec![b'x'; 1 << 20];
        let reply = ask_tcp(port, &big);
        assert_eq!(reply.len(), 5 + big.len());
        assert!(reply.starts_with("echo:x"));
        for i in 0..5 {
            assert_eq!(
                ask_tcp(port, format!("hi{i}").as_bytes()),
                format!("echo:hi{i}")
            );
        }
        eventually("the connections to end", || fwd.sessions().tcp == 0);
    });
}

#[test]
fn tcp_connections_stay_within_the_limit_and_serve_after_a_flood() {
    require_root!();
    let _serial = serial();
    in_host(|| {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        echo_server(backend);
        let limits = ForwarderLimits::default().max_tcp_connections(8);
        let fwd = Forwarder::start_with_limits(
            vec![bind(PortMap::new(0, backend_port, Proto::Tcp))],
            Target::Addr(LOCALHOST),
            limits,
        )
        .unwrap();
        assert_eq!(fwd.limits().max_tcp_connections, 8);
        let port = fwd.ports()[0].host_port;
        assert_eq!(ask_tcp(port, b"before"), "echo:before");
        eventually("the control connection to end", || fwd.sessions().tcp == 0);

        let before = open_fds();
        let flood: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect((LOCALHOST, port)).unwrap())
            .collect();
        eventually("the forwarder to take its share", || {
            fwd.sessions().tcp == 8
        });
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(fwd.sessions().tcp, 8, "over the limit");
        // The flood's own 200 sockets, and per relayed connection the forwarder's two and the
        // echo server's one; a little slack for the echo server's threads' bookkeeping.
        let during = open_fds();
        assert!(
            during <= before + 200 + 8 * 3 + 4,
            "{before} descriptors before the flood, {during} during it"
        );
        // Those over the limit were closed at once: the client reads the end.
        let refused = flood
            .iter()
            .filter(|c| {
                c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                match (&mut &**c).read(&mut [0u8; 1]) {
                    Ok(n) => n == 0,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count();
        assert!(
            refused >= 150,
            "only {refused} of the flood were turned away"
        );
        drop(flood);
        eventually("the flood's connections to end", || fwd.sessions().tcp == 0);
        assert_eq!(ask_tcp(port, b"after"), "echo:after");
        eventually("every descriptor to be given back", || open_fds() <= before);
    });
}

#[test]
fn udp_sessions_are_bounded_and_expire() {
    require_root!();
    let _serial = serial();
    in_host(|| {
        let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        udp_echo_server(backend);
        // Idle for 2 s: far longer than the 300 ms a dropped client waits below, even on a
        // loaded machine, and well within `eventually`'s 5 s.
        let limits = ForwarderLimits::default()
            .max_udp_sessions(2)
            .udp_idle_timeout(Duration::from_secs(2));
        let fwd = Forwarder::start_with_limits(
            vec![bind(PortMap::new(0, backend_port, Proto::Udp))],
            Target::Addr(LOCALHOST),
            limits,
        )
        .unwrap();
        let port = fwd.ports()[0].host_port;
        let before = open_fds();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| {
                let c = UdpSocket::bind("127.0.0.1:0").unwrap();
                c.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                c
            })
            .collect();
        let ask = |c: &UdpSocket, what: &[u8]| {
            c.send_to(what, (LOCALHOST, port)).unwrap();
            let mut buf = [0u8; 64];
            c.recv(&mut buf)
                .ok()
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        assert_eq!(ask(&clients[0], b"a").as_deref(), Some("pong a"));
        assert_eq!(ask(&clients[1], b"b").as_deref(), Some("pong b"));
        // A third client is over the limit: dropped.
        assert_eq!(ask(&clients[2], b"c"), None);
        assert_eq!(fwd.sessions().udp, 2);
        // Known clients are still served.
        assert_eq!(ask(&clients[0], b"a2").as_deref(), Some("pong a2"));
        // Idle sessions expire and their sockets are closed.
        eventually("the sessions to expire", || fwd.sessions().udp == 0);
        assert_eq!(open_fds(), before + 3, "the sessions' sockets stay open");
        assert_eq!(ask(&clients[2], b"c").as_deref(), Some("pong c"));
    });
}

#[test]
fn udp_replies_come_from_the_address_the_client_used() {
    require_root!();
    let _serial = serial();
    in_host(|| {
        let other = Ipv4Addr::new(198, 51, 100, 1);
        Netlink::open()
            .unwrap()
            .add_address("lo", IpAddr::V4(other), 32)
            .unwrap();
        let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        udp_echo_server(backend);
        // On every address, so that both are served by one socket.
        let bound = BoundPort::bind(PortMap::new(0, backend_port, Proto::Udp)).unwrap();
        let fwd = Forwarder::start(vec![bound], Target::Addr(LOCALHOST)).unwrap();
        let port = fwd.ports()[0].host_port;
        // Bound to 127.0.0.1: without IP_PKTINFO a reply to it would leave from 127.0.0.1
        // whatever address the client sent to.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        for dst in [Ipv4Addr::LOCALHOST, other, Ipv4Addr::LOCALHOST] {
            client.send_to(b"x", (dst, port)).unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"pong x");
            assert_eq!(
                from,
                SocketAddr::from((dst, port)),
                "reply to a datagram sent to {dst}"
            );
        }
        assert_eq!(fwd.sessions().udp, 2, "one session per local address");
    });
}

#[test]
fn dropping_the_forwarder_closes_everything_promptly() {
    require_root!();
    let _serial = serial();
    in_host(|| {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        echo_server(backend);
        let fwd = Forwarder::start(
            vec![bind(PortMap::new(0, backend_port, Proto::Tcp))],
            Target::Addr(LOCALHOST),
        )
        .unwrap();
        let port = fwd.ports()[0].host_port;
        let mut open = TcpStream::connect((LOCALHOST, port)).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        eventually("the connection to be relayed", || fwd.sessions().tcp == 1);
        let start = Instant::now();
        drop(fwd);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // The relayed connection is closed, and the port no longer listens.
        assert!(matches!(open.read(&mut [0u8; 8]), Ok(0) | Err(_)));
        assert!(TcpStream::connect((LOCALHOST, port)).is_err());
    });
}

/// The CPU time (user and system, in clock ticks) of process `pid`, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends at the last ')'): state is the 3rd field,
    // utime the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn accept_errors_for_lack_of_descriptors_do_not_spin() {
    require_root!();
    let _serial = serial();
    in_host(|| {
        let backend = TcpListener::bind("127.0.0.1:0").unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        echo_server(backend);
        // The forwarder runs in a process of its own (this binary, an ignored test), in this
        // thread's namespace: its descriptor limit is its own.
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "emfile_forwarder", "--ignored", "--nocapture"])
            .args(["--test-threads=1"])
            .env("PALISADE_EMFILE_BACKEND", backend_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stdin = child.stdin.take().unwrap();
        // Read on a thread of its own, so that the wait for the port is bounded.
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(i) = line.find("PORT ") {
                    let _ = tx.send(line[i + 5..].trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => port,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the forwarder process gave no port: {other:?}");
            }
        };
        // The child has used up its descriptors: every connection now fails its accept.
        let mut flood = Vec::new();
        let until = Instant::now() + Duration::from_millis(1500);
        let mut measured = None;
        let mut start = None;
        while Instant::now() < until {
            if let Ok(c) = TcpStream::connect_timeout(
                &SocketAddr::from((LOCALHOST, port)),
                Duration::from_millis(100),
            ) {
                flood.push(c);
            }
            if flood.len() > 100 {
                flood.remove(0);
            }
            match start {
                None if Instant::now() + Duration::from_secs(1) < until => {
                    start = Some((Instant::now(), cpu_ticks(pid)));
                }
                Some((t, ticks)) if t.elapsed() >= Duration::from_secs(1) && measured.is_none() => {
                    measured = Some(cpu_ticks(pid) - ticks);
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let spent = measured.expect("no measurement");
        // SAFETY: sysconf has no failure mode for this name.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert!(
            spent * 10 < hz * 2,
            "the forwarder used {spent} ticks of CPU in one second ({hz} a second)"
        );
        // The child frees its descriptors; the backlog is served once the pause ends.
        drop(flood);
        writeln!(stdin, "free").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ok = TcpStream::connect((LOCALHOST, port))
                .ok()
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                    c.write_all(b"after").ok()?;
                    c.shutdown(Shutdown::Write).ok()?;
                    let mut s = String::new();
                    c.read_to_string(&mut s).ok()?;
                    Some(s)
                });
            if ok.as_deref() == Some("echo:after") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no answer after the descriptors were freed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Runs only as the subprocess of `accept_errors_for_lack_of_descriptors_do_not_spin`: starts a
/// forwarder, then fills the descriptor table up to a low limit; frees it on a line of stdin and
/// exits at its end.
#[test]
#[ignore = "run by accept_errors_for_lack_of_descriptors_do_not_spin"]
fn emfile_forwarder() {
    let backend: u16 = std::env::var("PALISADE_EMFILE_BACKEND")
        .expect("run by accept_errors_for_lack_of_descriptors_do_not_spin")
        .parse()
        .unwrap();
    let fwd = Forwarder::start(
        vec![bind(PortMap::new(0, backend, Proto::Tcp))],
        Target::Addr(LOCALHOST),
    )
    .unwrap();
    let limit = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    // SAFETY: setrlimit(2) reads a struct that lives for the call; this process only.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    let mut filler = Vec::new();
    while let Ok(f) = File::open("/dev/null") {
        filler.push(f);
    }
    println!("\nPORT {}", fwd.ports()[0].host_port);
    let mut line = String::new();
    let stdin = std::io::stdin();
    stdin.lock().read_line(&mut line).unwrap();
    drop(filler);
    line.clear();
    let _ = stdin.lock().read_line(&mut line);
    drop(fwd);
}
