use super::*;
use crate::{Decoder, Message};

fn psk(s: &str) -> Psk {
    Psk::derive(s.as_bytes()).unwrap()
}

/// The body of the one frame in `bytes`, which must be of the given kind.
fn body(bytes: &[u8], secure_hello: bool) -> Vec<u8> {
    let mut dec = Decoder::new();
    dec.feed(bytes);
    let got = match dec.next_message().unwrap().unwrap() {
        Message::SecureHello(b) if secure_hello => b.to_vec(),
        Message::SecureWelcome(b) if !secure_hello => b.to_vec(),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(dec.pending(), 0);
    got
}

/// Both ends of a channel opened with the secrets given.
fn open_pair(ours: &Psk, theirs: &Psk) -> Result<(Channel, Channel), SecureError> {
    let mut hello = Vec::new();
    let init = Initiator::start(ours, &mut hello)?;
    let mut welcome = Vec::new();
    let responder = respond(theirs, &body(&hello, true), &mut welcome)?;
    let initiator = init.finish(&body(&welcome, false))?;
    Ok((initiator, responder))
}

/// Opens all of `wire`, fed in pieces of the given sizes (cycled), into one plain buffer.
fn open_in_pieces(opener: &mut Opener, wire: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut plain = Vec::new();
    let mut rest = wire;
    for &n in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        opener.open(piece, |p| plain.extend_from_slice(p)).unwrap();
        rest = tail;
    }
    assert_eq!(opener.pending(), 0);
    plain
}

#[test]
fn the_pattern_parses_and_an_empty_secret_is_refused() {
    assert!(NOISE.parse::<snow::params::NoiseParams>().is_ok());
    assert_eq!(Psk::derive(b"").unwrap_err(), SecureError::EmptySecret);
    assert_eq!(format!("{:?}", psk("hunter2")), "Psk(..)");
}

#[test]
fn a_channel_carries_bytes_both_ways() {
    let (mut tcpcopy, mut intercept) = open_pair(&psk("s3cret"), &psk("s3cret")).unwrap();
    let send = |from: &mut Sealer, to: &mut Opener, text: &[u8]| {
        let mut wire = Vec::new();
        from.seal(text, &mut wire).unwrap();
        assert_eq!(wire.len(), Sealer::sealed_len(text.len()));
        assert!(
            !wire.windows(5).any(|w| text.starts_with(w)),
            "plain text on the wire"
        );
        let mut got = Vec::new();
        to.open(&wire, |p| got.extend_from_slice(p)).unwrap();
        assert_eq!(got, text);
    };
    send(
        &mut tcpcopy.sealer,
        &mut intercept.opener,
        b"hello intercept",
    );
    send(&mut intercept.sealer, &mut tcpcopy.opener, b"hello tcpcopy");
    send(&mut tcpcopy.sealer, &mut intercept.opener, b"and again");
}

#[test]
fn a_wrong_secret_fails_on_either_side() {
    // intercept holds another secret: tcpcopy's hello does not authenticate.
    let mut hello = Vec::new();
    let _init = Initiator::start(&psk("right"), &mut hello).unwrap();
    let mut welcome = Vec::new();
    assert_eq!(
        respond(&psk("wrong"), &body(&hello, true), &mut welcome).err(),
        Some(SecureError::NotProven)
    );
    assert!(
        welcome.is_empty(),
        "nothing is sent to a peer that proved nothing"
    );

    // A (fake) intercept answering with another secret does not authenticate to tcpcopy.
    let mut hello = Vec::new();
    let init = Initiator::start(&psk("right"), &mut hello).unwrap();
    let mut other_hello = Vec::new();
    let _other = Initiator::start(&psk("wrong"), &mut other_hello).unwrap();
    let mut welcome = Vec::new();
    let _ = respond(&psk("wrong"), &body(&other_hello, true), &mut welcome).unwrap();
    assert_eq!(
        init.finish(&body(&welcome, false)).err(),
        Some(SecureError::NotProven)
    );
}

/// A recorded handshake and first records, replayed to a new responder: it answers the hello
/// (the handshake reply is all it sends) but the first replayed record fails to open.
#[test]
fn a_replayed_handshake_opens_nothing() {
    let key = psk("s3cret");
    let mut hello = Vec::new();
    let init = Initiator::start(&key, &mut hello).unwrap();
    let mut welcome = Vec::new();
    let _ = respond(&key, &body(&hello, true), &mut welcome).unwrap();
    let mut tcpcopy = init.finish(&body(&welcome, false)).unwrap();
    let mut recorded = Vec::new();
    tcpcopy
        .sealer
        .seal(b"a hello frame", &mut recorded)
        .unwrap();

    let mut welcome2 = Vec::new();
    let mut replayed = respond(&key, &body(&hello, true), &mut welcome2).unwrap();
    assert_ne!(welcome, welcome2, "a fresh ephemeral key per connection");
    let mut got = Vec::new();
    assert_eq!(
        replayed
            .opener
            .open(&recorded, |p| got.extend_from_slice(p)),
        Err(SecureError::BadRecord)
    );
    assert!(got.is_empty());
}

#[test]
fn tampered_reordered_or_malformed_records_fail() {
    let (mut a, mut b) = open_pair(&psk("k"), &psk("k")).unwrap();
    let mut first = Vec::new();
    a.sealer.seal(b"one", &mut first).unwrap();
    let mut second = Vec::new();
    a.sealer.seal(b"two", &mut second).unwrap();

    let mut flipped = first.clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(b.opener.open(&flipped, |_| {}), Err(SecureError::BadRecord));

    let (_, mut b) = open_pair(&psk("k"), &psk("k")).unwrap();
    // A record of another connection, or out of order, carries the wrong nonce.
    assert_eq!(b.opener.open(&second, |_| {}), Err(SecureError::BadRecord));
    let (_, mut b) = open_pair(&psk("k"), &psk("k")).unwrap();
    assert_eq!(
        b.opener.open(&[0, 3, 1, 2, 3], |_| {}),
        Err(SecureError::Malformed)
    );
    let (_, mut b) = open_pair(&psk("k"), &psk("k")).unwrap();
    assert_eq!(b.opener.open(&[0], |_| {}), Ok(()));
    assert_eq!(b.opener.open(&[1], |_| {}), Err(SecureError::Malformed));
}

/// Records cut anywhere by the reads (one byte at a time, odd sizes, a record's length prefix
/// split) open to the same bytes, including a write larger than one record.
#[test]
fn record_boundaries_across_reads() {
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for sizes in [&[1usize][..], &[3, 65_537, 2], &[65_553], &[100_000, 1]] {
        let (mut a, mut b) = open_pair(&psk("k"), &psk("k")).unwrap();
        let mut wire = Vec::new();
        a.sealer.seal(&plain[..10], &mut wire).unwrap();
        a.sealer.seal(&plain[10..], &mut wire).unwrap();
        assert_eq!(
            wire.len(),
            Sealer::sealed_len(10) + Sealer::sealed_len(plain.len() - 10)
        );
        assert_eq!(
            open_in_pieces(&mut b.opener, &wire, sizes),
            plain,
            "{sizes:?}"
        );
    }
}

#[test]
fn handshake_frames_decode_and_the_records_after_them_are_handed_over() {
    let mut hello = Vec::new();
    let _init = Initiator::start(&psk("k"), &mut hello).unwrap();
    hello.extend_from_slice(b"records");
    let mut dec = Decoder::new();
    dec.feed(&hello);
    assert!(
        matches!(dec.next_message(), Ok(Some(Message::SecureHello(b))) if b.len() == HANDSHAKE_LEN)
    );
    assert_eq!(dec.take_pending(), b"records");
    assert_eq!(dec.pending(), 0);
    // A handshake frame of another length is not this channel.
    let mut odd = Vec::new();
    crate::frame(&mut odd, crate::KIND_SECURE_HELLO, |b| {
        b.extend_from_slice(&[0; 47])
    });
    dec.feed(&odd);
    assert_eq!(
        dec.next_message(),
        Err(crate::ProtocolError::Malformed("handshake"))
    );
}
