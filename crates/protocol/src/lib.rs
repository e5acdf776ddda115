//! The tcpcopy <-> intercept wire protocol: versioned, framed, batched. Sans-IO: this crate turns
//! messages into bytes and bytes into messages; the caller owns the sockets.
//!
//! Every frame is `length: u32 BE | kind: u8 | body`, where `length` counts `kind` and `body`.
//! A connection opens with [`Message::Hello`] from tcpcopy, answered by [`Message::Welcome`] or
//! [`Message::Reject`] from intercept. Afterwards tcpcopy sends [`Message::Routes`] (the client
//! endpoints of its sessions, so that intercept knows where each response belongs) and intercept sends
//! [`Message::Responses`] batches (the target's IP+TCP headers, payload only when asked for).
//!
//! A tcpcopy that compares answers says so in its hello ([`FLAG_COMPARE`], with how many first
//! bytes of each answer it wants); intercept then sends it [`Message::Answers`] instead: each
//! packet's headers with an [`Annotation`] (capture time, payload digest, the answer's first
//! bytes; see [`heads`] for where an answer begins). Either side may be asked the time
//! ([`Message::TimeAsk`], [`Message::TimeTell`]); [`clock`] turns the replies into an estimate of
//! how far the two hosts' clocks differ.
//!
//! Which connection gets which response is [`routing`]'s business.
//!
//! All integers are big-endian. Addresses are `family: u8 (4|6) | octets | port: u16`.
#![forbid(unsafe_code)]

pub mod answers;
pub mod check;
pub mod clock;
pub mod heads;
pub mod routing;
pub mod secure;

pub use answers::{Annotation, AnswerBatch, Answers};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Protocol version spoken by this build. A peer with another version is rejected at hello.
pub const VERSION: u16 = 1;
/// The intercept's default listening port.
pub const DEFAULT_PORT: u16 = 36524;
/// Largest frame accepted; a longer length prefix means the peer speaks another protocol.
pub const MAX_FRAME: usize = 4 << 20;

const HELLO_MAGIC: [u8; 4] = *b"TCPY";
const WELCOME_MAGIC: [u8; 4] = *b"ICPT";

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REJECT: u8 = 3;
const KIND_ROUTES: u8 = 4;
const KIND_RESPONSES: u8 = 5;
const KIND_PING: u8 = 6;
const KIND_ANSWERS: u8 = 7;
const KIND_TIME_ASK: u8 = 8;
const KIND_TIME_TELL: u8 = 9;
const KIND_SECURE_HELLO: u8 = 10;
const KIND_SECURE_WELCOME: u8 = 11;

/// Hello flag: forward response payloads too, not only headers.
pub const FLAG_WANT_PAYLOAD: u16 = 1;
/// Hello flag: send [`Message::Answers`] (annotated headers) instead of [`Message::Responses`];
/// the hello then carries how many first bytes of each answer to forward.
pub const FLAG_COMPARE: u16 = 2;

/// What can go wrong decoding a peer's bytes. Any of these ends the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error("peer does not speak the tcpcopy/intercept protocol (bad magic)")]
    BadMagic,
    #[error(
        "frame of {0} bytes exceeds the {MAX_FRAME}-byte limit (peer speaks another protocol?)"
    )]
    FrameTooLarge(usize),
    #[error("empty frame")]
    EmptyFrame,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// One decoded frame. `Responses` borrows the packets from the decoder's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Hello {
        version: u16,
        flags: u16,
        instance: u32,
        /// Present exactly when `flags` has [`FLAG_COMPARE`].
        compare_bytes: Option<u16>,
    },
    Welcome {
        version: u16,
    },
    Reject {
        reason: String,
    },
    Routes(Vec<SocketAddr>),
    Responses(Responses<'a>),
    Ping,
    Answers(Answers<'a>),
    /// tcpcopy asks the time; `t1` is when it asked (its clock, ns since the Unix epoch).
    TimeAsk {
        t1: u64,
    },
    /// intercept's reply: `t2` when the ask arrived, `t3` when the reply left (its clock).
    TimeTell {
        t1: u64,
        t2: u64,
        t3: u64,
    },
    /// tcpcopy opens an encrypted channel ([`secure`]): the body is its first handshake message.
    /// Sent in the clear, instead of a hello.
    SecureHello(&'a [u8]),
    /// intercept's answer to a [`Message::SecureHello`]: its handshake message. Everything after
    /// it, both ways, is records of the channel.
    SecureWelcome(&'a [u8]),
    /// `tcpcopy check`'s exchange ([`check`]).
    Check(check::CheckMessage),
}

/// A tcpcopy's hello, as accepted by [`answer_hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub flags: u16,
    pub instance: u32,
    /// First bytes of each answer to forward: `Some` for a tcpcopy that compares answers.
    pub compare_bytes: Option<u16>,
}

/// Why tcpcopy's side of the opening exchange failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("intercept speaks protocol version {theirs}, we speak {VERSION}")]
    Version { theirs: u16 },
    #[error("intercept refused us: {0}")]
    Rejected(String),
    #[error("expected {expected}, got another message")]
    Unexpected { expected: &'static str },
}

/// The intercept's side of the opening exchange: the hello to accept, or the reason to send back
/// in a [`Message::Reject`].
pub fn answer_hello(msg: &Message<'_>) -> Result<Hello, String> {
    match *msg {
        Message::Hello {
            version,
            flags,
            instance,
            compare_bytes,
        } if version == VERSION => Ok(Hello {
            flags,
            instance,
            compare_bytes,
        }),
        Message::Hello { version, .. } => Err(format!(
            "protocol version {version} unsupported (this intercept speaks {VERSION})"
        )),
        Message::SecureHello(_) => Err(
            "tcpcopy offers an encrypted channel, but this intercept has no secret (--secret-file)"
                .into(),
        ),
        _ => Err("expected a hello".into()),
    }
}

/// tcpcopy's side of the opening exchange: the intercept's first message must be a welcome of
/// our version.
pub fn check_welcome(msg: &Message<'_>) -> Result<(), HandshakeError> {
    match msg {
        Message::Welcome { version } if *version == VERSION => Ok(()),
        Message::Welcome { version } => Err(HandshakeError::Version { theirs: *version }),
        Message::Reject { reason } => Err(HandshakeError::Rejected(reason.clone())),
        _ => Err(HandshakeError::Unexpected {
            expected: "welcome",
        }),
    }
}

/// A batch of response packets (each one IP header first), iterated without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Responses<'a> {
    count: u16,
    body: &'a [u8],
}

impl<'a> Responses<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<2>()?;
            let len = usize::from(u16::from_be_bytes(*len));
            let pkt = tail.get(..len)?;
            rest = &tail[len..];
            Some(pkt)
        })
    }
}

pub(crate) fn frame(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, kind]);
    body(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a hello frame. With `compare_bytes`, the hello asks for [`Message::Answers`]
/// ([`FLAG_COMPARE`] is set whatever `flags` says).
pub fn encode_hello(out: &mut Vec<u8>, flags: u16, instance: u32, compare_bytes: Option<u16>) {
    let flags = match compare_bytes {
        Some(_) => flags | FLAG_COMPARE,
        None => flags & !FLAG_COMPARE,
    };
    frame(out, KIND_HELLO, |b| {
        b.extend_from_slice(&HELLO_MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&instance.to_be_bytes());
        if let Some(n) = compare_bytes {
            b.extend_from_slice(&n.to_be_bytes());
        }
    });
}

/// Appends a time ask: `t1` is now on the asker's clock (ns since the Unix epoch).
pub fn encode_time_ask(out: &mut Vec<u8>, t1: u64) {
    frame(out, KIND_TIME_ASK, |b| {
        b.extend_from_slice(&t1.to_be_bytes())
    });
}

/// Appends the reply to a time ask: `t2` when it arrived, `t3` now (the replier's clock).
pub fn encode_time_tell(out: &mut Vec<u8>, t1: u64, t2: u64, t3: u64) {
    frame(out, KIND_TIME_TELL, |b| {
        for t in [t1, t2, t3] {
            b.extend_from_slice(&t.to_be_bytes());
        }
    });
}

/// Appends a welcome frame.
pub fn encode_welcome(out: &mut Vec<u8>) {
    frame(out, KIND_WELCOME, |b| {
        b.extend_from_slice(&WELCOME_MAGIC);
        b.extend_from_slice(&VERSION.to_be_bytes());
    });
}

/// Appends a reject frame; the reason is cut to 1000 bytes.
pub fn encode_reject(out: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(1000);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    frame(out, KIND_REJECT, |b| {
        b.extend_from_slice(&reason.as_bytes()[..end])
    });
}

/// Appends a keepalive frame.
pub fn encode_ping(out: &mut Vec<u8>) {
    frame(out, KIND_PING, |_| {});
}

/// Appends one routes frame per 4096 endpoints.
pub fn encode_routes(out: &mut Vec<u8>, routes: &[SocketAddr]) {
    for chunk in routes.chunks(4096) {
        frame(out, KIND_ROUTES, |b| {
            b.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            for r in chunk {
                match r.ip() {
                    IpAddr::V4(a) => {
                        b.push(4);
                        b.extend_from_slice(&a.octets());
                    }
                    IpAddr::V6(a) => {
                        b.push(6);
                        b.extend_from_slice(&a.octets());
                    }
                }
                b.extend_from_slice(&r.port().to_be_bytes());
            }
        });
    }
}

/// Builds [`Message::Responses`] frames incrementally: push packets, then [`ResponseBatch::finish`].
#[derive(Debug, Default)]
pub struct ResponseBatch {
    buf: Vec<u8>,
    count: u16,
}

impl ResponseBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one packet (cut to 65535 bytes). Returns the number of packets now in the batch.
    pub fn push(&mut self, packet: &[u8]) -> usize {
        if self.count == u16::MAX {
            return usize::from(self.count);
        }
        if self.buf.is_empty() {
            self.buf
                .extend_from_slice(&[0, 0, 0, 0, KIND_RESPONSES, 0, 0]);
        }
        let p = &packet[..packet.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&(p.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(p);
        self.count += 1;
        usize::from(self.count)
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends the finished frame to `out` and empties the batch; does nothing when empty.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.count == 0 {
            return;
        }
        let len = (self.buf.len() - 4) as u32;
        self.buf[0..4].copy_from_slice(&len.to_be_bytes());
        self.buf[5..7].copy_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.buf);
        self.buf.clear();
        self.count = 0;
    }
}

/// Incremental frame decoder: [`Decoder::feed`] bytes as they arrive, then call
/// [`Decoder::next_message`] until it returns `Ok(None)`.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the bytes received but not decoded (those after an encrypted channel's handshake
    /// are its records, for a [`secure::Opener`]).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.pos);
        self.buf.clear();
        self.pos = 0;
        rest
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, ProtocolError> {
        let avail = &self.buf[self.pos..];
        let Some(len) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_FRAME {
            return Err(ProtocolError::FrameTooLarge(len));
        }
        if len == 0 {
            return Err(ProtocolError::EmptyFrame);
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let start = self.pos + 4;
        self.pos += 4 + len;
        let frame = &self.buf[start..start + len];
        decode(frame[0], &frame[1..]).map(Some)
    }
}

fn decode(kind: u8, body: &[u8]) -> Result<Message<'_>, ProtocolError> {
    match kind {
        KIND_HELLO => decode_hello(body),
        KIND_WELCOME => {
            let b: &[u8; 6] = body
                .try_into()
                .map_err(|_| magic_or(body, WELCOME_MAGIC, "welcome"))?;
            if b[0..4] != WELCOME_MAGIC {
                return Err(ProtocolError::BadMagic);
            }
            Ok(Message::Welcome {
                version: u16::from_be_bytes([b[4], b[5]]),
            })
        }
        KIND_REJECT => Ok(Message::Reject {
            reason: String::from_utf8_lossy(body).into_owned(),
        }),
        KIND_PING if body.is_empty() => Ok(Message::Ping),
        KIND_PING => Err(ProtocolError::Malformed("ping")),
        KIND_ROUTES => decode_routes(body).ok_or(ProtocolError::Malformed("routes")),
        KIND_ANSWERS => answers::decode(body).map(Message::Answers),
        KIND_TIME_ASK => {
            let t: &[u8; 8] = body
                .try_into()
                .map_err(|_| ProtocolError::Malformed("time ask"))?;
            Ok(Message::TimeAsk {
                t1: u64::from_be_bytes(*t),
            })
        }
        KIND_TIME_TELL => {
            let t: &[u8; 24] = body
                .try_into()
                .map_err(|_| ProtocolError::Malformed("time tell"))?;
            // Three 8-byte words: every chunk converts.
            let [t1, t2, t3] = [0, 8, 16]
                .map(|i| u64::from_be_bytes(t[i..i + 8].try_into().expect("an 8-byte chunk")));
            Ok(Message::TimeTell { t1, t2, t3 })
        }
        KIND_SECURE_HELLO if body.len() == secure::HANDSHAKE_LEN => Ok(Message::SecureHello(body)),
        KIND_SECURE_WELCOME if body.len() == secure::HANDSHAKE_LEN => {
            Ok(Message::SecureWelcome(body))
        }
        KIND_SECURE_HELLO | KIND_SECURE_WELCOME => Err(ProtocolError::Malformed("handshake")),
        KIND_RESPONSES => {
            let (count, rest) = body
                .split_first_chunk::<2>()
                .ok_or(ProtocolError::Malformed("responses"))?;
            let count = u16::from_be_bytes(*count);
            let r = Responses { count, body: rest };
            // Validate once so that iteration yields exactly `count` packets.
            let (mut n, mut used) = (0usize, 0usize);
            for p in r.iter() {
                n += 1;
                used += 2 + p.len();
            }
            if n != usize::from(count) || used != rest.len() {
                return Err(ProtocolError::Malformed("responses"));
            }
            Ok(Message::Responses(r))
        }
        check::KIND_CHECK_ASK | check::KIND_CHECK_TELL => {
            check::decode(kind, body).map(Message::Check)
        }
        k => Err(ProtocolError::UnknownKind(k)),
    }
}

/// A hello: 12 bytes, or 14 with the trailing `compare_bytes` when [`FLAG_COMPARE`] is set.
fn decode_hello(body: &[u8]) -> Result<Message<'_>, ProtocolError> {
    let (b, tail) = body
        .split_first_chunk::<12>()
        .ok_or_else(|| magic_or(body, HELLO_MAGIC, "hello"))?;
    if b[0..4] != HELLO_MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let flags = u16::from_be_bytes([b[6], b[7]]);
    let compare_bytes = match (flags & FLAG_COMPARE != 0, tail) {
        (false, []) => None,
        (true, [hi, lo]) => Some(u16::from_be_bytes([*hi, *lo])),
        _ => return Err(ProtocolError::Malformed("hello")),
    };
    Ok(Message::Hello {
        version: u16::from_be_bytes([b[4], b[5]]),
        flags,
        instance: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        compare_bytes,
    })
}

fn magic_or(body: &[u8], magic: [u8; 4], what: &'static str) -> ProtocolError {
    if body.get(..4) == Some(&magic[..]) {
        ProtocolError::Malformed(what)
    } else {
        ProtocolError::BadMagic
    }
}

fn decode_routes(body: &[u8]) -> Option<Message<'static>> {
    let (count, mut rest) = body.split_first_chunk::<2>()?;
    let count = u16::from_be_bytes(*count);
    let mut routes = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (&family, tail) = rest.split_first()?;
        let (ip, tail) = match family {
            4 => {
                let (a, t) = tail.split_first_chunk::<4>()?;
                (IpAddr::V4(Ipv4Addr::from(*a)), t)
            }
            6 => {
                let (a, t) = tail.split_first_chunk::<16>()?;
                (IpAddr::V6(Ipv6Addr::from(*a)), t)
            }
            _ => return None,
        };
        let (port, t) = tail.split_first_chunk::<2>()?;
        routes.push(SocketAddr::new(ip, u16::from_be_bytes(*port)));
        rest = t;
    }
    rest.is_empty().then_some(Message::Routes(routes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Vec<String> {
        let mut d = Decoder::new();
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.next_message().unwrap() {
            out.push(match m {
                Message::Responses(r) => format!("responses {:?}", r.iter().collect::<Vec<_>>()),
                other => format!("{other:?}"),
            });
        }
        out
    }

    #[test]
    fn every_message_roundtrips() {
        let mut b = Vec::new();
        encode_hello(&mut b, FLAG_WANT_PAYLOAD, 7, None);
        encode_welcome(&mut b);
        encode_reject(&mut b, "host not allowed");
        encode_ping(&mut b);
        let routes: Vec<SocketAddr> = vec![
            "198.19.0.1:4000".parse().unwrap(),
            "[2001:2::1]:5".parse().unwrap(),
        ];
        encode_routes(&mut b, &routes);
        let mut batch = ResponseBatch::new();
        batch.push(b"abc");
        batch.push(b"");
        batch.push(b"defg");
        batch.finish(&mut b);
        assert!(batch.is_empty());
        assert_eq!(
            decode_all(&b),
            vec![
                format!(
                    "Hello {{ version: {VERSION}, flags: 1, instance: 7, compare_bytes: None }}"
                ),
                format!("Welcome {{ version: {VERSION} }}"),
                "Reject { reason: \"host not allowed\" }".to_string(),
                "Ping".to_string(),
                format!("{:?}", Message::Routes(routes)),
                "responses [[97, 98, 99], [], [100, 101, 102, 103]]".to_string(),
            ]
        );
    }

    #[test]
    fn handshake_accepts_our_version_and_names_the_problem_otherwise() {
        let hello = Message::Hello {
            version: VERSION,
            flags: 1,
            instance: 9,
            compare_bytes: None,
        };
        assert_eq!(
            answer_hello(&hello),
            Ok(Hello {
                flags: 1,
                instance: 9,
                compare_bytes: None,
            })
        );
        let old = Message::Hello {
            version: VERSION + 1,
            flags: 0,
            instance: 0,
            compare_bytes: None,
        };
        assert!(answer_hello(&old).unwrap_err().contains("unsupported"));
        assert!(answer_hello(&Message::Ping).is_err());
        assert_eq!(
            check_welcome(&Message::Welcome { version: VERSION }),
            Ok(())
        );
        assert_eq!(
            check_welcome(&Message::Welcome { version: 9 }),
            Err(HandshakeError::Version { theirs: 9 })
        );
        assert_eq!(
            check_welcome(&Message::Reject {
                reason: "no".into()
            }),
            Err(HandshakeError::Rejected("no".into()))
        );
        assert_eq!(
            check_welcome(&Message::Ping),
            Err(HandshakeError::Unexpected {
                expected: "welcome"
            })
        );
    }

    #[test]
    fn byte_at_a_time_feeding_yields_the_same_frames() {
        let mut b = Vec::new();
        encode_hello(&mut b, 0, 1, None);
        let mut batch = ResponseBatch::new();
        for i in 0..50u8 {
            batch.push(&[i; 60]);
        }
        batch.finish(&mut b);
        let mut d = Decoder::new();
        let mut seen = 0;
        for byte in &b {
            d.feed(std::slice::from_ref(byte));
            while let Some(m) = d.next_message().unwrap() {
                if let Message::Responses(r) = m {
                    assert_eq!(r.len(), 50);
                    assert!(r.iter().enumerate().all(|(i, p)| p == [i as u8; 60]));
                }
                seen += 1;
            }
        }
        assert_eq!(seen, 2);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn http_peer_is_reported_as_another_protocol() {
        let mut d = Decoder::new();
        d.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(matches!(
            d.next_message(),
            Err(ProtocolError::FrameTooLarge(_))
        ));
    }

    #[test]
    fn wrong_magic_is_bad_magic() {
        let mut b = Vec::new();
        encode_welcome(&mut b);
        b[5] = b'X';
        let mut d = Decoder::new();
        d.feed(&b);
        assert_eq!(d.next_message(), Err(ProtocolError::BadMagic));
    }

    #[test]
    fn lying_response_count_is_malformed() {
        let mut b = Vec::new();
        let mut batch = ResponseBatch::new();
        batch.push(b"abc");
        batch.finish(&mut b);
        b[6] = 2; // claims two packets, carries one
        let mut d = Decoder::new();
        d.feed(&b);
        assert_eq!(d.next_message(), Err(ProtocolError::Malformed("responses")));
    }

    #[test]
    fn a_comparing_hello_carries_its_byte_count_and_an_old_hello_still_decodes() {
        let mut b = Vec::new();
        encode_hello(&mut b, 0, 3, Some(1024));
        assert_eq!(b.len(), 4 + 1 + 14);
        // An old tcpcopy's hello, byte for byte as it always was.
        let old = [
            0, 0, 0, 13, KIND_HELLO, b'T', b'C', b'P', b'Y', 0, 1, 0, 0, 0, 0, 0, 5,
        ];
        b.extend_from_slice(&old);
        let mut d = Decoder::new();
        d.feed(&b);
        let first = d.next_message().unwrap().unwrap();
        assert_eq!(
            answer_hello(&first),
            Ok(Hello {
                flags: FLAG_COMPARE,
                instance: 3,
                compare_bytes: Some(1024)
            })
        );
        let second = d.next_message().unwrap().unwrap();
        assert_eq!(
            answer_hello(&second),
            Ok(Hello {
                flags: 0,
                instance: 5,
                compare_bytes: None
            })
        );
        // The flag follows the byte count, whatever the caller passed.
        let mut b = Vec::new();
        encode_hello(&mut b, FLAG_COMPARE | FLAG_WANT_PAYLOAD, 3, None);
        assert_eq!(b.len(), 4 + 1 + 12);
    }

    #[test]
    fn a_hello_whose_flag_and_length_disagree_is_malformed() {
        let malformed = Err(ProtocolError::Malformed("hello"));
        // The flag without the byte count.
        let mut b = Vec::new();
        encode_hello(&mut b, 0, 3, None);
        b[4 + 1 + 7] |= FLAG_COMPARE as u8;
        let mut d = Decoder::new();
        d.feed(&b);
        assert_eq!(d.next_message(), malformed);
        // The byte count without the flag.
        let mut b = Vec::new();
        encode_hello(&mut b, 0, 3, Some(10));
        b[4 + 1 + 7] &= !(FLAG_COMPARE as u8);
        let mut d = Decoder::new();
        d.feed(&b);
        assert_eq!(d.next_message(), malformed);
        // A byte count cut in half.
        let mut b = Vec::new();
        encode_hello(&mut b, 0, 3, Some(10));
        b.pop();
        b[3] -= 1;
        let mut d = Decoder::new();
        d.feed(&b);
        assert_eq!(d.next_message(), malformed);
    }

    #[test]
    fn time_frames_roundtrip_and_wrong_lengths_are_malformed() {
        let mut b = Vec::new();
        encode_time_ask(&mut b, 1_700_000_000_123_456_789);
        encode_time_tell(&mut b, 1, u64::MAX, 3);
        let mut d = Decoder::new();
        d.feed(&b);
        assert_eq!(
            d.next_message(),
            Ok(Some(Message::TimeAsk {
                t1: 1_700_000_000_123_456_789
            }))
        );
        assert_eq!(
            d.next_message(),
            Ok(Some(Message::TimeTell {
                t1: 1,
                t2: u64::MAX,
                t3: 3
            }))
        );
        for (kind, len, what) in [
            (KIND_TIME_ASK, 7, "time ask"),
            (KIND_TIME_ASK, 9, "time ask"),
            (KIND_TIME_TELL, 16, "time tell"),
            (KIND_TIME_TELL, 25, "time tell"),
            (KIND_TIME_TELL, 0, "time tell"),
        ] {
            let mut b = Vec::new();
            frame(&mut b, kind, |body| {
                body.extend(std::iter::repeat_n(0, len))
            });
            let mut d = Decoder::new();
            d.feed(&b);
            assert_eq!(d.next_message(), Err(ProtocolError::Malformed(what)));
        }
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..8)) {
            let mut d = Decoder::new();
            for c in chunks {
                d.feed(&c);
                loop {
                    match d.next_message() {
                        Ok(Some(Message::Responses(r))) => { let _ = r.iter().count(); }
                        Ok(Some(Message::Answers(a))) => { proptest::prop_assert_eq!(a.iter().count(), a.len()); }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}
