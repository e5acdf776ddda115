//! The tcpcopy <-> intercept codec (`protocol::Decoder`), fed arbitrary bytes in arbitrary
//! chunks: it never panics, never yields a frame it cannot re-encode to the same message, and
//! stops at the first error as a connection would. Inputs that start with `M` instead encode
//! messages of every kind built from the fuzz input and feed them in arbitrary chunks: every
//! message comes back as it was sent. The time frames also go through `clock::ClockSync`.
#![no_main]

use std::net::SocketAddr;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use protocol::check::CheckMessage;
use protocol::clock::ClockSync;
use protocol::{Annotation, AnswerBatch, Decoder, Message, ResponseBatch, MAX_FRAME, VERSION};
use tcpcopy_fuzz::endpoint;

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'M', rest)) => messages_round_trip(rest),
        _ => arbitrary_stream(data),
    }
});

/// `[chunk length][chunk]...` fed to a decoder, each decoded message re-encoded and decoded
/// again.
fn arbitrary_stream(data: &[u8]) {
    let mut decoder = Decoder::new();
    let mut clock = ClockSync::new(4);
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (chunk, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        decoder.feed(chunk);
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    check_reencodes(&msg);
                    if let Message::TimeTell { t1, t2, t3 } = msg {
                        clock_sample(&mut clock, t1, t2, t3, u64::from(len) << 20);
                    }
                }
                Ok(None) => break,
                // The connection ends here: nothing after an error is read.
                Err(_) => return,
            }
        }
        assert!(
            decoder.pending() <= 4 + MAX_FRAME,
            "buffered past one frame"
        );
    }
}

fn clock_sample(clock: &mut ClockSync, t1: u64, t2: u64, t3: u64, t4: u64) {
    let before = clock.samples();
    let taken = clock.sample(t1, t2, t3, t4);
    let expected = if taken { (before + 1).min(4) } else { before };
    assert_eq!(clock.samples(), expected);
    if taken {
        assert!(clock.round_trip_ns().is_some() && clock.offset_ns().is_some());
    }
    assert!(clock.samples() <= 4);
}

/// Encodes `msg` again (where this build can: hellos and welcomes of other versions, long
/// rejects are not re-encodable) and checks it decodes to the same message.
fn check_reencodes(msg: &Message<'_>) {
    let mut out = Vec::new();
    match msg {
        Message::Hello {
            version,
            flags,
            instance,
            compare_bytes,
        } => {
            if *version != VERSION {
                return;
            }
            protocol::encode_hello(&mut out, *flags, *instance, *compare_bytes);
        }
        Message::Welcome { version } => {
            if *version != VERSION {
                return;
            }
            protocol::encode_welcome(&mut out);
        }
        // Handshake messages: fixed-length opaque bytes, checked by the Noise handshake itself.
        Message::SecureHello(_) | Message::SecureWelcome(_) => return,
        Message::Reject { reason } => {
            if reason.len() > 1000 {
                return;
            }
            protocol::encode_reject(&mut out, reason);
        }
        Message::Routes(routes) => {
            assert!(routes.len() <= usize::from(u16::MAX));
            protocol::encode_routes(&mut out, routes);
            let mut again: Vec<SocketAddr> = Vec::new();
            let mut d = Decoder::new();
            d.feed(&out);
            while let Some(m) = d.next_message().expect("our routes decode") {
                let Message::Routes(r) = m else {
                    panic!("routes re-encoded as {m:?}")
                };
                again.extend(r);
            }
            assert_eq!(&again, routes);
            return;
        }
        Message::Responses(responses) => {
            let packets: Vec<&[u8]> = responses.iter().collect();
            assert_eq!(packets.len(), responses.len(), "iteration yields the count");
            let mut batch = ResponseBatch::new();
            for p in &packets {
                batch.push(p);
            }
            if packets.is_empty() {
                // An empty batch writes no frame.
                batch.finish(&mut out);
                assert!(out.is_empty());
                return;
            }
            batch.finish(&mut out);
        }
        Message::Answers(answers) => {
            let items: Vec<_> = answers.iter().collect();
            assert_eq!(items.len(), answers.len(), "iteration yields the count");
            if items.is_empty() {
                return;
            }
            let mut batch = AnswerBatch::new();
            for (p, note) in &items {
                batch.push(p, note);
            }
            batch.finish(&mut out);
        }
        Message::Ping => protocol::encode_ping(&mut out),
        Message::TimeAsk { t1 } => protocol::encode_time_ask(&mut out, *t1),
        Message::TimeTell { t1, t2, t3 } => protocol::encode_time_tell(&mut out, *t1, *t2, *t3),
        // A tell's unknown values and later fields decode to the same message once re-encoded.
        Message::Check(CheckMessage::Ask(ask)) => protocol::check::encode_ask(&mut out, ask),
        Message::Check(CheckMessage::Tell(tell)) => protocol::check::encode_tell(&mut out, tell),
    }
    let mut d = Decoder::new();
    d.feed(&out);
    let again = d.next_message().expect("a re-encoded message decodes");
    assert_eq!(again.as_ref(), Some(msg));
    assert_eq!(d.pending(), 0, "one frame");
}

/// A message this build sends, owned, as the decoder should return it.
#[derive(Debug)]
enum Sent {
    Hello {
        flags: u16,
        instance: u32,
        compare_bytes: Option<u16>,
    },
    Welcome,
    Reject(String),
    Routes(Vec<SocketAddr>),
    Responses(Vec<Vec<u8>>),
    Answers(Vec<(Vec<u8>, u64, u64, Vec<u8>)>),
    Ping,
    TimeAsk(u64),
    TimeTell(u64, u64, u64),
}

fn messages_round_trip(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut sent = Vec::new();
    let mut wire = Vec::new();
    while !u.is_empty() && sent.len() < 32 {
        let Ok(msg) = message(&mut u) else { break };
        encode(&msg, &mut wire);
        sent.push(msg);
    }
    let mut decoder = Decoder::new();
    let mut got = 0;
    let mut at = 0;
    while at < wire.len() || decoder.pending() > 0 {
        let step = u.int_in_range(1..=4096usize).unwrap_or(4096);
        let end = (at + step).min(wire.len());
        decoder.feed(&wire[at..end]);
        at = end;
        while let Some(msg) = decoder.next_message().expect("our own frames decode") {
            let want = sent.get(got).expect("no more messages than sent");
            assert_same(&msg, want);
            got += 1;
        }
        if at == wire.len() {
            break;
        }
    }
    assert_eq!(got, sent.len(), "every message came back");
    assert_eq!(decoder.pending(), 0);
}

fn message(u: &mut Unstructured<'_>) -> arbitrary::Result<Sent> {
    Ok(match u.int_in_range(0..=8u8)? {
        0 => Sent::Hello {
            flags: u.arbitrary()?,
            instance: u.arbitrary()?,
            compare_bytes: u.arbitrary()?,
        },
        1 => Sent::Welcome,
        2 => Sent::Reject(u.arbitrary()?),
        3 => {
            let n = u.int_in_range(1..=16usize)?;
            let v6 = u.arbitrary()?;
            Sent::Routes((0..n).map(|_| endpoint(u, v6)).collect::<Result<_, _>>()?)
        }
        4 => {
            let n = u.int_in_range(1..=8usize)?;
            Sent::Responses((0..n).map(|_| u.arbitrary()).collect::<Result<_, _>>()?)
        }
        5 => {
            let n = u.int_in_range(1..=8usize)?;
            Sent::Answers(
                (0..n)
                    .map(|_| {
                        Ok((
                            u.arbitrary()?,
                            u.arbitrary()?,
                            u.arbitrary()?,
                            u.arbitrary()?,
                        ))
                    })
                    .collect::<arbitrary::Result<_>>()?,
            )
        }
        6 => Sent::Ping,
        7 => Sent::TimeAsk(u.arbitrary()?),
        _ => Sent::TimeTell(u.arbitrary()?, u.arbitrary()?, u.arbitrary()?),
    })
}

fn encode(msg: &Sent, out: &mut Vec<u8>) {
    match msg {
        Sent::Hello {
            flags,
            instance,
            compare_bytes,
        } => protocol::encode_hello(out, *flags, *instance, *compare_bytes),
        Sent::Welcome => protocol::encode_welcome(out),
        Sent::Reject(reason) => protocol::encode_reject(out, reason),
        Sent::Routes(routes) => protocol::encode_routes(out, routes),
        Sent::Responses(packets) => {
            let mut batch = ResponseBatch::new();
            packets.iter().for_each(|p| {
                batch.push(p);
            });
            batch.finish(out);
        }
        Sent::Answers(items) => {
            let mut batch = AnswerBatch::new();
            for (p, at_ns, hash, head) in items {
                let note = Annotation {
                    at_ns: *at_ns,
                    hash: *hash,
                    head,
                };
                batch.push(p, &note);
            }
            batch.finish(out);
        }
        Sent::Ping => protocol::encode_ping(out),
        Sent::TimeAsk(t1) => protocol::encode_time_ask(out, *t1),
        Sent::TimeTell(t1, t2, t3) => protocol::encode_time_tell(out, *t1, *t2, *t3),
    }
}

fn assert_same(got: &Message<'_>, want: &Sent) {
    match (got, want) {
        (
            Message::Hello {
                version,
                flags,
                instance,
                compare_bytes,
            },
            Sent::Hello {
                flags: f,
                instance: i,
                compare_bytes: c,
            },
        ) => {
            let expected_flags = match c {
                Some(_) => f | protocol::FLAG_COMPARE,
                None => f & !protocol::FLAG_COMPARE,
            };
            assert_eq!(
                (*version, *flags, *instance, *compare_bytes),
                (VERSION, expected_flags, *i, *c)
            );
        }
        (Message::Welcome { version }, Sent::Welcome) => assert_eq!(*version, VERSION),
        (Message::Reject { reason }, Sent::Reject(r)) => {
            let mut end = r.len().min(1000);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            assert_eq!(reason, &r[..end]);
        }
        (Message::Routes(routes), Sent::Routes(r)) => assert_eq!(routes, r),
        (Message::Responses(responses), Sent::Responses(p)) => {
            let got: Vec<&[u8]> = responses.iter().collect();
            let want: Vec<&[u8]> = p.iter().map(|p| &p[..p.len().min(65535)]).collect();
            assert_eq!(got, want);
        }
        (Message::Answers(answers), Sent::Answers(items)) => {
            let got: Vec<_> = answers
                .iter()
                .map(|(p, n)| (p.to_vec(), n.at_ns, n.hash, n.head.to_vec()))
                .collect();
            assert_eq!(&got, items);
        }
        (Message::Ping, Sent::Ping) => {}
        (Message::TimeAsk { t1 }, Sent::TimeAsk(t)) => assert_eq!(t1, t),
        (Message::TimeTell { t1, t2, t3 }, Sent::TimeTell(a, b, c)) => {
            assert_eq!((t1, t2, t3), (a, b, c))
        }
        (got, want) => panic!("sent {want:?}, got {got:?}"),
    }
}
