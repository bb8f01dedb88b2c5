//! What the registry tests run against: the real `docker-registry` (distribution 2.8) on a
//! loopback port, fixtures pushed into it with `skopeo`, and small test-side HTTP servers (a
//! proxy that cuts connections or demands authentication, a token server) on plain `std`
//! sockets.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use palisade_test_support::registry::Registry;

/// What an HTTP request looked like: its head (request line and headers).
#[derive(Clone, Debug)]
pub struct Request {
    pub head: String,
}

impl Request {
    pub fn line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// A header's value (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Reads a request or response head, up to the blank line; `None` at the end of the stream.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" || line == "\n" {
            return Ok(Some(head));
        }
        head.push_str(&line);
        if head.len() > 64 << 10 {
            return Err(io::Error::other("head too long"));
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// A loopback server handing each connection to a handler thread; stopped and joined on drop.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: Arc<dyn Fn(TcpStream) + Send + Sync>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut workers = Vec::new();
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
                let handler = handler.clone();
                workers.push(std::thread::spawn(move || handler(stream)));
            }
            for worker in workers {
                let _ = worker.join();
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a [`Proxy`] demands before it forwards a request.
#[derive(Clone)]
pub enum Demand {
    Nothing,
    /// `Authorization: Bearer <token>`, else a 401 with a Bearer challenge for `realm`.
    Bearer {
        token: String,
        realm: String,
        service: String,
    },
    /// `Authorization: Basic <b64>`, else a 401 with a Basic challenge.
    Basic {
        b64: String,
    },
}

struct ProxyState {
    upstream: SocketAddr,
    requests: Mutex<Vec<Request>>,
    /// The first GET whose request line has this text gets only this many bytes of its answer
    /// (head included) before the connection is cut.
    cut: Mutex<Option<Cut>>,
    demand: Demand,
    /// Where authorized blob GETs are redirected (`http://host:port`), if anywhere.
    redirect_blobs: Mutex<Option<String>>,
    /// Blob GETs being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// An answer to cut short: the request line's text, the bytes let through, and whether the
/// connection then stalls (kept open, silent) rather than closes.
struct Cut {
    what: String,
    bytes: usize,
    stall: bool,
}

/// An HTTP proxy (one request per connection) in front of the registry that records every
/// request, may demand authentication, and may cut one answer short.
pub struct Proxy {
    state: Arc<ProxyState>,
    server: Server,
}

impl Proxy {
    pub fn start(upstream: SocketAddr, demand: Demand) -> Proxy {
        let state = Arc::new(ProxyState {
            upstream,
            requests: Mutex::new(Vec::new()),
            cut: Mutex::new(None),
            demand,
            redirect_blobs: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let st = state.clone();
        let server = Server::start(Arc::new(move |stream| {
            let _ = proxy_one(stream, &st);
        }));
        Proxy { state, server }
    }

    pub fn addr(&self) -> String {
        self.server.addr.to_string()
    }

    /// Cuts the answer to the next GET whose request line contains `what` after `bytes` bytes.
    pub fn cut_next(&self, what: &str, bytes: usize) {
        *self.state.cut.lock().unwrap() = Some(Cut {
            what: what.to_owned(),
            bytes,
            stall: false,
        });
    }

    /// Lets the next GET whose request line contains `what` have `bytes` bytes of its answer,
    /// then sends nothing more, until the client gives up.
    pub fn stall_next(&self, what: &str, bytes: usize) {
        *self.state.cut.lock().unwrap() = Some(Cut {
            what: what.to_owned(),
            bytes,
            stall: true,
        });
    }

    /// Answers authorized blob GETs with a redirect to the same path at `origin`.
    pub fn redirect_blobs_to(&self, origin: &str) {
        *self.state.redirect_blobs.lock().unwrap() = Some(origin.to_owned());
    }

    /// The most blob GETs that were answered at once.
    pub fn max_blob_gets_at_once(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }
}

fn proxy_one(client: TcpStream, st: &ProxyState) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let request = Request { head: head.clone() };
    st.requests.lock().unwrap().push(request.clone());
    let authorized = match &st.demand {
        Demand::Nothing => true,
        Demand::Bearer { token, .. } => {
            request.header("authorization").as_deref() == Some(&format!("Bearer {token}"))
        }
        Demand::Basic { b64 } => {
            request.header("authorization").as_deref() == Some(&format!("Basic {b64}"))
        }
    };
    if !authorized {
        let challenge = match &st.demand {
            Demand::Bearer { realm, service, .. } => {
                let name = request
                    .line()
                    .split(' ')
                    .nth(1)
                    .and_then(|p| p.strip_prefix("/v2/"))
                    .and_then(|p| {
                        p.rfind("/manifests/")
                            .or_else(|| p.rfind("/blobs/"))
                            .map(|i| p[..i].to_owned())
                    })
                    .unwrap_or_default();
                format!(
                    "Bearer realm=\"{realm}\",service=\"{service}\",scope=\"repository:{name}:pull\""
                )
            }
            _ => "Basic realm=\"test\"".to_owned(),
        };
        respond(
            &mut client,
            "401 Unauthorized",
            &[
                ("WWW-Authenticate", &challenge),
                ("Content-Type", "application/json"),
            ],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        return Ok(());
    }
    let is_blob_get = request.line().starts_with("GET ") && request.line().contains("/blobs/");
    if is_blob_get {
        if let Some(origin) = st.redirect_blobs.lock().unwrap().clone() {
            let path = request.line().split(' ').nth(1).unwrap_or("/");
            respond(
                &mut client,
                "307 Temporary Redirect",
                &[("Location", &format!("{origin}{path}"))],
                b"",
            );
            return Ok(());
        }
    }
    let mut upstream = TcpStream::connect(st.upstream)?;
    upstream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = String::new();
    for line in head.lines() {
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes())?;
    let cut = {
        let mut cut = st.cut.lock().unwrap();
        match &*cut {
            Some(c) if request.line().starts_with("GET ") && request.line().contains(&c.what) => {
                cut.take()
            }
            _ => None,
        }
    };
    if is_blob_get {
        let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    }
    // The answer counts as in flight until its last byte is handed to the client (not until
    // the registry closes its end, which may come after the client has moved on).
    let mut answered = false;
    let mut done = || {
        if is_blob_get && !answered {
            answered = true;
            st.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    };
    let result = pump(&mut upstream, &mut client, cut.as_ref(), &mut done);
    done();
    result
}

/// Copies the answer from `upstream` to `client`, cutting or stalling it as `cut` says;
/// `done` is called once the whole answer (head and `Content-Length` bytes) is forwarded.
fn pump(
    upstream: &mut TcpStream,
    client: &mut TcpStream,
    cut: Option<&Cut>,
    done: &mut dyn FnMut(),
) -> io::Result<()> {
    let mut sent = 0usize;
    let mut head = Vec::new();
    let mut total: Option<usize> = None;
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = upstream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let n = match cut {
            Some(c) => n.min(c.bytes - sent),
            None => n,
        };
        client.write_all(&buf[..n])?;
        sent += n;
        if total.is_none() {
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                total = Some(end + 4 + length);
            }
        }
        if total.is_some_and(|t| sent >= t) {
            done();
        }
        if let Some(c) = cut.filter(|c| sent >= c.bytes) {
            client.flush()?;
            if c.stall {
                // Silent until the client closes its end (or the read timeout passes).
                let mut byte = [0u8; 1];
                while let Ok(n) = client.read(&mut byte) {
                    if n == 0 {
                        break;
                    }
                }
            }
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// A token server (distribution's "Token Authentication Specification"): `GET /token`
/// answers `{"token": …}`: the good token for the right Basic credentials, a useless one for
/// anonymous requests, 401 for wrong credentials.
pub struct TokenServer {
    requests: Arc<Mutex<Vec<Request>>>,
    server: Server,
}

impl TokenServer {
    pub fn start(b64_credentials: &str, good_token: &str) -> TokenServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let expected = format!("Basic {b64_credentials}");
        let good = good_token.to_owned();
        let server = Server::start(Arc::new(move |stream: TcpStream| {
            let Ok(clone) = stream.try_clone() else {
                return;
            };
            let mut reader = BufReader::new(clone);
            let mut stream = stream;
            let Ok(Some(head)) = read_head(&mut reader) else {
                return;
            };
            let request = Request { head };
            reqs.lock().unwrap().push(request.clone());
            match request.header("authorization") {
                None => respond(
                    &mut stream,
                    "200 OK",
                    &[("Content-Type", "application/json")],
                    br#"{"token":"anonymous-token"}"#,
                ),
                Some(auth) if auth == expected => respond(
                    &mut stream,
                    "200 OK",
                    &[("Content-Type", "application/json")],
                    format!(r#"{{"access_token":"{good}","expires_in":300}}"#).as_bytes(),
                ),
                Some(_) => respond(&mut stream, "401 Unauthorized", &[], b"{}"),
            }
        }));
        TokenServer { requests, server }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}
