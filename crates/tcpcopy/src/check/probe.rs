//! The probes of `tcpcopy check`, thin: connect to intercept and exchange the check messages,
//! send the probe SYN from a fake client address, connect to the target, read this host's
//! route, MTU and GRO. What they see goes into [`Observations`] unjudged.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol::check::{CheckAsk, CheckMessage, CheckTell, ASK_OWN_PROBE};
use protocol::secure::{Channel, Psk};
use protocol::{Decoder, HandshakeError, Message, ProtocolError};
use wire::{Flags, SegmentRepr, Seq, TcpPacket};

use super::diagnose::{Reach, TargetPort};
use crate::hostfacts;
use crate::plumbing::{read_first_message, read_or_timeout};

/// How long each step waits: a connection, intercept's answers, the target's answer.
const CONNECT_WAIT: Duration = Duration::from_secs(2);
const TELL_WAIT: Duration = Duration::from_secs(3);
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// A welcomed connection to intercept.
pub struct InterceptLink {
    stream: TcpStream,
    dec: Decoder,
    channel: Option<Channel>,
}

/// Connects to intercept and opens as a run does (hello, or the encrypted channel with a
/// secret); says how that went.
pub fn open(intercept: SocketAddr, secret: Option<&Psk>) -> (Reach, Option<InterceptLink>) {
    let mut s = match TcpStream::connect_timeout(&intercept, CONNECT_WAIT) {
        Ok(s) => s,
        Err(e) => return (Reach::Unreachable(connect_error(&e)), None),
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(TELL_WAIT));
    let _ = s.set_write_timeout(Some(CONNECT_WAIT));
    let mut hello = Vec::new();
    protocol::encode_hello(&mut hello, 0, 0, None);
    let opened = match secret {
        Some(psk) => crate::channel::open(&mut s, psk, &hello, protocol::check_welcome)
            .map(|(w, dec, c)| (w, dec, Some(c))),
        None => s
            .write_all(&hello)
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                let mut dec = Decoder::new();
                read_first_message(&mut s, &mut dec, protocol::check_welcome)
                    .map(|w| (w, dec, None))
            }),
    };
    let reach = match opened {
        Ok((Ok(()), dec, channel)) => {
            let link = InterceptLink {
                stream: s,
                dec,
                channel,
            };
            return (Reach::Welcomed, Some(link));
        }
        Ok((Err(HandshakeError::Version { theirs }), ..)) => Reach::Version(theirs),
        Ok((Err(HandshakeError::Rejected(why)), ..)) => Reach::Refused(why),
        Ok((Err(e), ..)) => Reach::NotIntercept(e.to_string()),
        Err(e) if e.downcast_ref::<ProtocolError>().is_some() => {
            Reach::NotIntercept(format!("{e:#}"))
        }
        Err(e) => match format!("{e:#}") {
            refused if refused.starts_with("intercept refused us: ") => {
                Reach::Refused(refused["intercept refused us: ".len()..].to_string())
            }
            other => Reach::NotIntercept(other),
        },
    };
    (reach, None)
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            "connection refused (nothing listens there)".into()
        }
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!(
                "no answer within {} s (a firewall, or no such host)",
                CONNECT_WAIT.as_secs()
            )
        }
        _ => e.to_string(),
    }
}

/// What the exchange with intercept brought: its tell, and which probe endpoints the target
/// answered (as intercept reported).
#[derive(Debug, Default)]
pub struct Heard {
    pub tell: Option<CheckTell>,
    pub answered: Vec<(SocketAddr, TcpAnswer)>,
    /// intercept closed the connection (an older one does on the check ask).
    pub closed: bool,
}

/// The target's answer to a probe: enough to reset it.
#[derive(Clone, Copy, Debug)]
pub struct TcpAnswer {
    pub from: SocketAddr,
    pub ack: Seq,
    pub rst: bool,
}

impl InterceptLink {
    /// Announces both probe endpoints (answers to them come back here) and asks intercept
    /// for its facts and its own probe from `theirs` to `target`.
    pub fn ask(&mut self, ours: SocketAddr, theirs: SocketAddr, target: SocketAddr) -> bool {
        let mut f = Vec::new();
        protocol::encode_routes(&mut f, &[ours, theirs]);
        let ask = CheckAsk {
            flags: ASK_OWN_PROBE,
            from: theirs,
            to: target,
        };
        protocol::check::encode_ask(&mut f, &ask);
        self.send(f)
    }

    fn send(&mut self, plain: Vec<u8>) -> bool {
        let bytes = match &mut self.channel {
            Some(c) => {
                let mut out = Vec::new();
                if c.sealer.seal(&plain, &mut out).is_err() {
                    return false;
                }
                out
            }
            None => plain,
        };
        self.stream.write_all(&bytes).is_ok()
    }

    /// Reads until `done` says enough was heard, the connection closes, or `wait` passed.
    pub fn listen(&mut self, heard: &mut Heard, wait: Duration, done: impl Fn(&Heard) -> bool) {
        let until = Instant::now() + wait;
        let _ = self
            .stream
            .set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = vec![0u8; 64 * 1024];
        while !done(heard) && !heard.closed && Instant::now() < until {
            match read_or_timeout(&mut self.stream, &mut buf) {
                Ok(Some(0)) | Err(_) => heard.closed = true,
                Ok(Some(n)) => {
                    let fed = match &mut self.channel {
                        Some(c) => c.opener.open(&buf[..n], |p| self.dec.feed(p)).is_ok(),
                        None => {
                            self.dec.feed(&buf[..n]);
                            true
                        }
                    };
                    heard.closed |= !fed || !take_messages(&mut self.dec, heard);
                }
                Ok(None) => {}
            }
        }
    }
}

/// Takes the decoded messages into `heard`; false on a decoding error.
fn take_messages(dec: &mut Decoder, heard: &mut Heard) -> bool {
    loop {
        match dec.next_message() {
            Ok(Some(Message::Check(CheckMessage::Tell(t)))) => heard.tell = Some(t),
            Ok(Some(Message::Responses(r))) => r.iter().for_each(|p| note_answer(p, heard)),
            Ok(Some(Message::Answers(a))) => a.iter().for_each(|(p, _)| note_answer(p, heard)),
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

fn note_answer(packet: &[u8], heard: &mut Heard) {
    if let Ok(p) = TcpPacket::parse(packet) {
        let answer = TcpAnswer {
            from: p.src(),
            ack: p.ack(),
            rst: p.flags().rst(),
        };
        heard.answered.push((p.dst(), answer));
    }
}

/// The probe's SYN (or, `rst`, the reset that ends it) from `from` to `to`.
pub fn segment(from: SocketAddr, to: SocketAddr, seq: Seq, rst: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    SegmentRepr {
        src: from,
        dst: to,
        seq,
        ack: Seq(0),
        flags: if rst { Flags::RST } else { Flags::SYN },
        window: if rst { 0 } else { 64240 },
        mss: (!rst).then_some(1460),
        window_scale: None,
        ttl: 64,
    }
    .emit(&[], &mut out);
    out
}

/// Whether the target's service takes a connection from this host.
pub fn target_port(target: SocketAddr) -> TargetPort {
    match TcpStream::connect_timeout(&target, CONNECT_WAIT) {
        Ok(_) => TargetPort::Open,
        Err(e) => TargetPort::Closed(connect_error(&e)),
    }
}

/// The interface this host sends to `target` by, and its MTU.
pub fn local_mtu(target: IpAddr) -> Option<(String, u32)> {
    let dev = hostfacts::iface_towards(&hostfacts::routes(), target)?;
    let mtu = hostfacts::mtu(&dev)?;
    Some((dev, mtu))
}

/// Whether GRO is on for `dev` (`None`: cannot tell).
pub fn gro(dev: &str) -> Option<bool> {
    netio::netdev::gro(dev).ok()
}

/// The probe's source when no `-c` is given: TEST-NET-1, which no real client uses.
pub const DOC_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// How long to wait for intercept's tell, and then for the target's answers.
pub fn waits() -> (Duration, Duration) {
    (TELL_WAIT, ANSWER_WAIT)
}
