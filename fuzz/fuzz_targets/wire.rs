//! Packet parsing (`wire::TcpPacket::parse`) on arbitrary bytes: no accessor panics, the view
//! stays inside the buffer, and a packet rebuilt from the parsed fields parses back to the same
//! fields with checksums that verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{
    internet_checksum, tcp_checksum, SegmentRepr, Seq, TcpPacket, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = TcpPacket::parse(data) else {
        return;
    };
    let payload = p.payload();
    assert!(
        payload.len() <= p.payload_len(),
        "present payload beyond the wire length"
    );
    assert!(
        p.headers().len() + payload.len() <= data.len(),
        "view past the buffer"
    );
    assert!(data.starts_with(p.headers()));
    let flags = p.flags();
    let expected_len = p.payload_len() as u64 + u64::from(flags.syn()) + u64::from(flags.fin());
    assert_eq!(u64::from(p.seq_len()), expected_len);
    let options = p.options().count();
    assert!(options <= 40, "more options than header bytes");
    seq_arithmetic(p.seq(), p.ack());

    let repr = SegmentRepr {
        src: p.src(),
        dst: p.dst(),
        seq: p.seq(),
        ack: p.ack(),
        flags,
        window: p.window(),
        mss: p.mss(),
        window_scale: p.window_scale(),
        ttl: 64,
    };
    let mut out = Vec::new();
    repr.emit(payload, &mut out);
    let q = TcpPacket::parse(&out).expect("an emitted packet parses");
    assert_eq!(
        (q.src(), q.dst(), q.seq(), q.ack(), q.flags(), q.window()),
        (p.src(), p.dst(), p.seq(), p.ack(), p.flags(), p.window())
    );
    assert_eq!((q.mss(), q.window_scale()), (p.mss(), p.window_scale()));
    assert_eq!(q.payload(), payload);
    assert_eq!(q.payload_len(), payload.len());
    let ip_len = if q.is_ipv6() {
        IPV6_HEADER_LEN
    } else {
        IPV4_HEADER_LEN
    };
    if !q.is_ipv6() {
        assert_eq!(internet_checksum(&out[..ip_len]), 0, "IPv4 header checksum");
    }
    assert_eq!(
        tcp_checksum(q.src_addr(), q.dst_addr(), &out[ip_len..]),
        0,
        "TCP checksum"
    );
});

/// Serial arithmetic: `a + (b - a) == b`, and the order agrees with the signed distance. (At a
/// distance of exactly 2^31 each is before the other, as RFC 1982 leaves it undefined.)
fn seq_arithmetic(a: Seq, b: Seq) {
    assert_eq!(a + b.0.wrapping_sub(a.0), b);
    let d = b.diff(a);
    assert_eq!(d > 0, b > a, "{a:?} {b:?}");
    assert_eq!(d == 0, a == b);
    if d != i64::from(i32::MIN) {
        assert_eq!(a.max(b), if b > a { b } else { a });
        assert_eq!(a.diff(b), -d);
    }
}
