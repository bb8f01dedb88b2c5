//! Hand-made Ethernet frames, sent and captured through packet sockets (`packet(7)`), for the
//! layer-2 attack tests. Everything here is what a sandbox holding `CAP_NET_RAW` could send.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];

/// `ff:ff:ff:ff:ff:ff`, the Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];
/// `33:33:00:00:00:01`, the Ethernet address of IPv6's all-nodes group.
pub const ALL_NODES: Mac = [0x33, 0x33, 0, 0, 0, 1];
const ETH_P_ALL: u16 = 0x0003;

fn ethernet(dst: Mac, src: Mac, ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + body.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// An Ethernet/IPv4 ARP packet (`op` 1 request, 2 reply) from `src` (the frame's source) to
/// `dst`, claiming that `sender_ip` is at `sender_mac`; `marker` follows as padding, so a capture
/// can tell this frame from any other.
#[allow(clippy::too_many_arguments)]
pub fn arp(
    dst: Mac,
    src: Mac,
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
    marker: &[u8],
) -> Vec<u8> {
    let mut body = vec![0, 1, 0x08, 0x00, 6, 4];
    body.extend_from_slice(&op.to_be_bytes());
    body.extend_from_slice(&sender_mac);
    body.extend_from_slice(&sender_ip.octets());
    body.extend_from_slice(&target_mac);
    body.extend_from_slice(&target_ip.octets());
    body.extend_from_slice(marker);
    ethernet(dst, src, 0x0806, &body)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 UDP datagram (UDP checksum 0: none, as IPv4 allows) carrying `payload`.
#[allow(clippy::too_many_arguments)]
pub fn udp(
    dst: Mac,
    src: Mac,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len() as u16;
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&sport.to_be_bytes());
    ip.extend_from_slice(&dport.to_be_bytes());
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ethernet(dst, src, 0x0800, &ip)
}

/// A TCP SYN from `src:sport` to `dst:dport`, with valid IPv4 and TCP checksums.
pub fn tcp_syn(
    dst_mac: Mac,
    src_mac: Mac,
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&0x5041_4c31u32.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words, no options
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, tcp.len() as u8]);
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&40u16.to_be_bytes());
    ip.extend_from_slice(&[0x70, 0x61, 0x40, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ethernet(dst_mac, src_mac, 0x0800, &ip)
}

/// `frame` with an 802.1Q tag of VLAN `vid` after its source address.
pub fn vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// An IPv6 router advertisement (`icmpv6` type 134) from the link-local address made from
/// `src`, to all nodes, offering the prefix `2001:db8:bad::/64` for autoconfiguration and
/// itself as default router for 1800 s; `marker` follows as an unknown option's padding.
pub fn router_advertisement(src: Mac, marker: &[u8]) -> Vec<u8> {
    let mut src_ip = [0u8; 16];
    src_ip[0] = 0xfe;
    src_ip[1] = 0x80;
    src_ip[8..11].copy_from_slice(&[src[0] ^ 2, src[1], src[2]]);
    src_ip[11] = 0xff;
    src_ip[12] = 0xfe;
    src_ip[13..16].copy_from_slice(&src[3..6]);
    let mut dst_ip = [0u8; 16];
    dst_ip[0] = 0xff;
    dst_ip[1] = 0x02;
    dst_ip[15] = 1;
    // type, code, checksum, hop limit, flags, router lifetime, reachable, retrans
    let mut icmp = vec![134, 0, 0, 0, 64, 0];
    icmp.extend_from_slice(&1800u16.to_be_bytes());
    icmp.extend_from_slice(&[0; 8]);
    // Prefix information: type 3, length 4 (32 bytes), /64, on-link and autonomous.
    icmp.extend_from_slice(&[3, 4, 64, 0xc0]);
    icmp.extend_from_slice(&86400u32.to_be_bytes());
    icmp.extend_from_slice(&14400u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad, 0, 0]);
    icmp.extend_from_slice(&[0; 8]);
    // Source link-layer address: type 1, length 1 (8 bytes).
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&src);
    // The marker as an option of an unknown type (receivers skip those), padded to 8 bytes.
    let len = (2 + marker.len()).div_ceil(8);
    icmp.extend_from_slice(&[250, len as u8]);
    icmp.extend_from_slice(marker);
    icmp.resize(icmp.len() + (len * 8 - 2 - marker.len()), 0);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src_ip);
    pseudo.extend_from_slice(&dst_ip);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = checksum(&pseudo);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[58, 255]);
    ip.extend_from_slice(&src_ip);
    ip.extend_from_slice(&dst_ip);
    ip.extend_from_slice(&icmp);
    ethernet(ALL_NODES, src, 0x86dd, &ip)
}

/// A packet socket (`AF_PACKET`, `SOCK_RAW`, every protocol) bound to the link `ifname` of the
/// calling thread's network namespace. Needs `CAP_NET_RAW`.
pub fn packet_socket(ifname: &str) -> std::io::Result<OwnedFd> {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: if_nametoindex(3) reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: socket(2) with plain values.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ALL.to_be();
    addr.sll_ifindex = index as i32;
    // SAFETY: bind(2) with a sockaddr_ll of the right size, which it only reads.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sends `frame` as it is through `sock` (from [`packet_socket`]).
pub fn send(sock: &OwnedFd, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: send(2) reads `frame.len()` bytes of a live slice.
    let n = unsafe { libc::send(sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The frames `sock` receives for `window`, each as received.
pub fn capture(sock: &OwnedFd, window: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + window;
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return frames;
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd of ours.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if ready <= 0 {
            continue;
        }
        // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            frames.push(buf[..n as usize].to_vec());
        }
    }
}

/// Whether any of `frames` contains `marker`.
pub fn seen(frames: &[Vec<u8>], marker: &[u8]) -> bool {
    frames
        .iter()
        .any(|f| f.windows(marker.len()).any(|w| w == marker))
}

/// The MAC address of the link `ifname` of the calling thread's namespace, from sysfs (which
/// shows the namespace that mounted it, so this reads `/sys/class/net` only for the caller's own
/// sysfs view; use it inside a sandbox, or read the address over netlink elsewhere).
pub fn sysfs_mac(ifname: &str) -> Option<Mac> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address")).ok()?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}
