//! The request/acknowledgement exchange on a `NETLINK_ROUTE` socket (`netlink(7)`).

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::{Error, Result};

/// A connected `NETLINK_ROUTE` socket and its sequence counter.
#[derive(Debug)]
pub(super) struct RouteSocket {
    socket: Socket,
    seq: u32,
}

fn io_err(request: &str, source: io::Error) -> Error {
    Error::Netlink {
        request: request.to_owned(),
        source,
    }
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub(super) fn open() -> Result<RouteSocket> {
        let what = "socket(NETLINK_ROUTE)";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| io_err(what, e))?;
        socket.bind_auto().map_err(|e| io_err(what, e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_err(what, e))?;
        Ok(RouteSocket { socket, seq: 0 })
    }

    fn send(&mut self, request: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        let sent = self.socket.send(&buf, 0).map_err(|e| io_err(request, e))?;
        if sent != buf.len() {
            return Err(Error::Protocol {
                request: request.to_owned(),
                reason: format!("short send ({sent} of {} bytes)", buf.len()),
            });
        }
        Ok(self.seq)
    }

    /// Sends `msg` with `NLM_F_ACK` (and `flags`) and waits for the kernel's acknowledgement.
    pub(super) fn request(
        &mut self,
        request: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<()> {
        let seq = self.send(request, msg, flags | NLM_F_ACK)?;
        let mut done = false;
        self.receive(request, seq, |_| {}, &mut done)?;
        Ok(())
    }

    /// Sends a dump request and collects every reply message up to `NLMSG_DONE`.
    pub(super) fn dump(
        &mut self,
        request: &str,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(request, msg, NLM_F_DUMP)?;
        let mut out = Vec::new();
        let mut done = false;
        self.receive(request, seq, |m| out.push(m), &mut done)?;
        Ok(out)
    }

    /// Reads datagrams until the exchange numbered `seq` ends (an `NLMSG_ERROR`, which is an
    /// acknowledgement when its code is 0, or an `NLMSG_DONE`). Messages of other sequence
    /// numbers (stale replies) are skipped.
    fn receive(
        &mut self,
        request: &str,
        seq: u32,
        mut each: impl FnMut(RouteNetlinkMessage),
        done: &mut bool,
    ) -> Result<()> {
        while !*done {
            let (buf, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| io_err(request, e))?;
            let mut offset = 0;
            while offset + 16 <= buf.len() {
                let bytes = &buf[offset..];
                let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
                if len < 16 || len > bytes.len() {
                    return Err(Error::Protocol {
                        request: request.to_owned(),
                        reason: format!("bad nlmsg_len {len}"),
                    });
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| Error::Protocol {
                        request: request.to_owned(),
                        reason: e.to_string(),
                    })?;
                // NLMSG_ALIGN
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(err) => {
                        *done = true;
                        if let Some(code) = err.code {
                            return Err(io_err(request, io::Error::from_raw_os_error(-code.get())));
                        }
                    }
                    NetlinkPayload::Done(_) => *done = true,
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
