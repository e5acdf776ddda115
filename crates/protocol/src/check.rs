//! The setup check's exchange (`tcpcopy check`): after the welcome, tcpcopy sends a
//! [`CheckAsk`] naming the probe it is about to send (a SYN from a fake client endpoint to the
//! target) and intercept answers with a [`CheckTell`]: what its host says about answers to that
//! endpoint (which mode it runs in, ip_forward, rp_filter, the route back to the fake client, the
//! MTU towards tcpcopy), and whether it sent a probe of its own from its host. Whether the
//! target's answer to the probe arrives, tcpcopy sees as in a run: it announces the probe's
//! endpoint in a [`crate::Message::Routes`] and intercept forwards the answer.
//!
//! Additive: an intercept without it closes the connection on the unknown frame kind, which
//! tcpcopy reports as "too old to be checked". A tell's body may grow: fields after the known
//! ones are skipped, so that an older tcpcopy reads a newer intercept's tell.
//!
//! Frames: ask `flags: u8 | from: addr | to: addr`; tell `mode: u8 | ip_forward: u8 |
//! rp_filter: u8 | fake_route: u8 | mtu: u32 | probe: u8 [| later fields]` (255, or an MTU of 0:
//! unknown). Addresses as in [`crate::Message::Routes`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{frame, ProtocolError};

pub(crate) const KIND_CHECK_ASK: u8 = 12;
pub(crate) const KIND_CHECK_TELL: u8 = 13;

/// Ask flag: intercept sends a SYN from `from` to `to` itself, from its own host (assistant
/// mode), to tell a target that ignores fake clients from a path that drops them.
pub const ASK_OWN_PROBE: u8 = 1;

const UNKNOWN: u8 = 255;

/// A check message, either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckMessage {
    Ask(CheckAsk),
    Tell(CheckTell),
}

/// tcpcopy's question: the probe's endpoints (`from`: a fake client, `to`: the target's
/// service), and [`ASK_OWN_PROBE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckAsk {
    pub flags: u8,
    pub from: SocketAddr,
    pub to: SocketAddr,
}

/// How intercept catches the target's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterceptMode {
    /// On the target, from NFQUEUE: its host is the target's.
    Queue,
    /// On an assistant host, capturing what the target routes to it.
    Assistant,
    /// A mode this build does not know (a newer intercept).
    Other(u8),
}

/// Where intercept's host routes packets to the probe's fake client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeRoute {
    /// No route at all.
    None,
    /// Out of the interface that faces tcpcopy (where the probe arrives).
    SameInterface,
    /// Out of another interface.
    OtherInterface,
    Unknown,
}

/// Whether intercept sent the probe of its own that [`ASK_OWN_PROBE`] asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnProbe {
    NotAsked,
    Sent,
    /// Asked, but it could not (queue mode, or no raw socket).
    Failed,
}

/// intercept's answer: facts of its host, each `None` when unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckTell {
    pub mode: InterceptMode,
    /// `net.ipv4.ip_forward` (or IPv6's `forwarding`), for the probe's family.
    pub ip_forward: Option<bool>,
    /// The effective `rp_filter` (the larger of `all` and the interface's) on the interface
    /// that faces tcpcopy: 0 off, 1 strict, 2 loose.
    pub rp_filter: Option<u8>,
    pub fake_route: FakeRoute,
    /// The MTU of the interface that faces tcpcopy.
    pub mtu: Option<u32>,
    pub own_probe: OwnProbe,
}

/// Appends a check ask.
pub fn encode_ask(out: &mut Vec<u8>, ask: &CheckAsk) {
    frame(out, KIND_CHECK_ASK, |b| {
        b.push(ask.flags);
        put_addr(b, ask.from);
        put_addr(b, ask.to);
    });
}

/// Appends a check tell.
pub fn encode_tell(out: &mut Vec<u8>, tell: &CheckTell) {
    frame(out, KIND_CHECK_TELL, |b| {
        b.push(match tell.mode {
            InterceptMode::Queue => 1,
            InterceptMode::Assistant => 2,
            InterceptMode::Other(m) => m,
        });
        b.push(tell.ip_forward.map_or(UNKNOWN, u8::from));
        b.push(tell.rp_filter.unwrap_or(UNKNOWN));
        b.push(match tell.fake_route {
            FakeRoute::None => 0,
            FakeRoute::SameInterface => 1,
            FakeRoute::OtherInterface => 2,
            FakeRoute::Unknown => UNKNOWN,
        });
        b.extend_from_slice(&tell.mtu.unwrap_or(0).to_be_bytes());
        b.push(match tell.own_probe {
            OwnProbe::NotAsked => 0,
            OwnProbe::Sent => 1,
            OwnProbe::Failed => 2,
        });
    });
}

pub(crate) fn decode(kind: u8, body: &[u8]) -> Result<CheckMessage, ProtocolError> {
    match kind {
        KIND_CHECK_ASK => decode_ask(body)
            .map(CheckMessage::Ask)
            .ok_or(ProtocolError::Malformed("check ask")),
        _ => decode_tell(body)
            .map(CheckMessage::Tell)
            .ok_or(ProtocolError::Malformed("check tell")),
    }
}

fn decode_ask(body: &[u8]) -> Option<CheckAsk> {
    let (&flags, rest) = body.split_first()?;
    let (from, rest) = take_addr(rest)?;
    let (to, rest) = take_addr(rest)?;
    rest.is_empty().then_some(CheckAsk { flags, from, to })
}

fn decode_tell(body: &[u8]) -> Option<CheckTell> {
    // Fields after these nine bytes are a newer intercept's: skipped.
    let b: &[u8; 9] = body.first_chunk()?;
    let mtu = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    Some(CheckTell {
        mode: match b[0] {
            1 => InterceptMode::Queue,
            2 => InterceptMode::Assistant,
            m => InterceptMode::Other(m),
        },
        ip_forward: match b[1] {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        },
        rp_filter: (b[2] != UNKNOWN).then_some(b[2]),
        fake_route: match b[3] {
            0 => FakeRoute::None,
            1 => FakeRoute::SameInterface,
            2 => FakeRoute::OtherInterface,
            _ => FakeRoute::Unknown,
        },
        mtu: (mtu != 0).then_some(mtu),
        own_probe: match b[8] {
            0 => OwnProbe::NotAsked,
            1 => OwnProbe::Sent,
            _ => OwnProbe::Failed,
        },
    })
}

fn put_addr(b: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            b.push(4);
            b.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            b.push(6);
            b.extend_from_slice(&ip.octets());
        }
    }
    b.extend_from_slice(&a.port().to_be_bytes());
}

fn take_addr(b: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (&family, rest) = b.split_first()?;
    let (ip, rest) = match family {
        4 => {
            let (a, r) = rest.split_first_chunk::<4>()?;
            (IpAddr::V4(Ipv4Addr::from(*a)), r)
        }
        6 => {
            let (a, r) = rest.split_first_chunk::<16>()?;
            (IpAddr::V6(Ipv6Addr::from(*a)), r)
        }
        _ => return None,
    };
    let (port, rest) = rest.split_first_chunk::<2>()?;
    Some((SocketAddr::new(ip, u16::from_be_bytes(*port)), rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoder, Message};

    fn decode_one(bytes: &[u8]) -> Result<CheckMessage, ProtocolError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        match d.next_message()? {
            Some(Message::Check(c)) => Ok(c),
            other => panic!("not a check message: {other:?}"),
        }
    }

    fn tell() -> CheckTell {
        CheckTell {
            mode: InterceptMode::Assistant,
            ip_forward: Some(true),
            rp_filter: Some(2),
            fake_route: FakeRoute::OtherInterface,
            mtu: Some(9001),
            own_probe: OwnProbe::Sent,
        }
    }

    #[test]
    fn asks_and_tells_roundtrip_in_both_families() {
        for (from, to) in [
            ("198.19.0.7:40001", "198.18.0.30:80"),
            ("[2001:2:0:1::7]:40001", "[2001:2::30]:80"),
        ] {
            let ask = CheckAsk {
                flags: ASK_OWN_PROBE,
                from: from.parse().unwrap(),
                to: to.parse().unwrap(),
            };
            let mut b = Vec::new();
            encode_ask(&mut b, &ask);
            assert_eq!(decode_one(&b), Ok(CheckMessage::Ask(ask)));
        }
        let unknown = CheckTell {
            mode: InterceptMode::Queue,
            ip_forward: None,
            rp_filter: None,
            fake_route: FakeRoute::Unknown,
            mtu: None,
            own_probe: OwnProbe::NotAsked,
        };
        for t in [tell(), unknown] {
            let mut b = Vec::new();
            encode_tell(&mut b, &t);
            assert_eq!(decode_one(&b), Ok(CheckMessage::Tell(t)));
        }
    }

    #[test]
    fn a_newer_intercepts_longer_tell_is_read_and_a_short_one_is_malformed() {
        let mut b = Vec::new();
        encode_tell(&mut b, &tell());
        // Two more bytes of a later field.
        b.extend_from_slice(&[7, 7]);
        b[3] += 2;
        assert_eq!(decode_one(&b), Ok(CheckMessage::Tell(tell())));
        let mut b = Vec::new();
        frame(&mut b, KIND_CHECK_TELL, |body| {
            body.extend_from_slice(&[2; 8])
        });
        assert_eq!(decode_one(&b), Err(ProtocolError::Malformed("check tell")));
    }

    #[test]
    fn a_malformed_ask_is_refused() {
        for body in [
            &[][..],
            &[1, 4, 198, 19, 0, 7, 0x9c][..],
            &[1, 5, 198, 19, 0, 7, 0, 80, 4, 1, 2, 3, 4, 0, 80][..],
            &[1, 4, 198, 19, 0, 7, 0, 80, 4, 1, 2, 3, 4, 0, 80, 0][..],
        ] {
            let mut b = Vec::new();
            frame(&mut b, KIND_CHECK_ASK, |out| out.extend_from_slice(body));
            assert_eq!(
                decode_one(&b),
                Err(ProtocolError::Malformed("check ask")),
                "{body:?}"
            );
        }
    }
}
