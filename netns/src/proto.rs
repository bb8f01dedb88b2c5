//! The transport protocols of published ports. A leaf: the errors, the NAT rules and the
//! forwarder all name a protocol, and none of them needs the others for it.

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The IP protocol number (`IPPROTO_TCP`, `IPPROTO_UDP`; `protocols(5)`), as the NAT rules
    /// and their state keys hold it.
    pub(crate) fn number(self) -> u8 {
        match self {
            Proto::Tcp => libc::IPPROTO_TCP as u8,
            Proto::Udp => libc::IPPROTO_UDP as u8,
        }
    }

    /// The protocol with IP protocol number `n`, if it is one of these.
    pub(crate) fn from_number(n: u8) -> Option<Proto> {
        match i32::from(n) {
            libc::IPPROTO_TCP => Some(Proto::Tcp),
            libc::IPPROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip() {
        for p in [Proto::Tcp, Proto::Udp] {
            assert_eq!(Proto::from_number(p.number()), Some(p));
        }
        assert_eq!(Proto::from_number(1), None);
    }
}
