//! Two sandboxes on one bridge that talk to each other: a TCP echo server in one, a client in
//! the other, and a port published from the host to the server.
//!
//! ```text
//! cargo run --release --example two_sandboxes              # on the bridge palisade0
//! cargo run --release --example two_sandboxes -- pal-demo 10.77.0.0/24
//! ```
//!
//! Needs root (the bridge, veths and NAT rules are made on the host) and `busybox` on the host
//! (the sandboxes run on the host's root file system, read-only with a throwaway upper layer).
//! Everything made is removed when the sandboxes end. To keep the host's own network untouched,
//! run it inside a throwaway network namespace: `unshare --net sh -c 'ip link set lo up; …'`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use palisade::netns::ipam::Subnet;
use palisade::netns::{Bridge, Network, Proto};
use palisade::{Sandbox, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut bridge = match args.next() {
        Some(name) => Bridge::new(&name)?,
        None => Bridge::default(),
    };
    if let Some(subnet) = args.next() {
        bridge = bridge.subnet(subnet.parse::<Subnet>()?);
    }
    let network = Network::bridge(bridge);

    // The server echoes every connection back; its port 7 is also published on the host.
    let server = Sandbox::builder("busybox")
        .args(["nc", "-ll", "-p", "7", "-e", "/bin/cat"])
        .hostname("server")
        .network(network.clone())
        .publish(0, 7, Proto::Tcp)
        .spawn()?;
    let server_ip = server.address().ok_or("the server has no bridge address")?;
    let host_port = server.ports()[0].host_port;
    println!("server: {server_ip}:7, published on the host as port {host_port}");

    // The client, a second sandbox on the same bridge, talks to the server's address.
    let script = format!(
        "hostname; ip -4 -o addr show eth0 | busybox awk '{{print $4}}'; \
         for i in $(seq 100); do r=$(echo hello from the client | busybox nc -w 2 {server_ip} 7) \
         && [ -n \"$r\" ] && echo \"echoed: $r\" && exit 0; sleep 0.05; done; exit 1"
    );
    let out = Sandbox::builder("sh")
        .args(["-c", &script])
        .hostname("client")
        .network(network)
        .stdout(Stdio::piped())
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!("client: {}", out.status).into());
    }

    // The host reaches the server through the published port.
    let deadline = Instant::now() + Duration::from_secs(5);
    let reply = loop {
        let mut c = TcpStream::connect(("127.0.0.1", host_port))?;
        c.write_all(b"hello from the host\n")?;
        c.shutdown(std::net::Shutdown::Write)?;
        let mut reply = String::new();
        c.read_to_string(&mut reply)?;
        if !reply.is_empty() || Instant::now() > deadline {
            break reply;
        }
    };
    print!("host via port {host_port}: {reply}");
    Ok(())
}
