//! Where intercept says an answer begins (`protocol::heads::AnswerHeads`), driven by arbitrary
//! server segments on a few flows (in order, repeated, reordered, acknowledging earlier or later
//! requests, ending with FIN or RST) with a small table: it never panics, never remembers more
//! flows than its capacity, a segment of the answer being read lies at its offset, and the head
//! it forwards stays within the limit.
#![no_main]

use std::collections::hash_map::RandomState;
use std::net::SocketAddr;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use protocol::heads::{self, AnswerHeads, Segment};
use wire::Seq;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(capacity) = u.int_in_range(0..=6usize) else {
        return;
    };
    let limit: u16 = u.arbitrary().unwrap_or(1024);
    let mut table: AnswerHeads<RandomState> = AnswerHeads::with_capacity(capacity);
    // Per flow: the next sequence and acknowledgment numbers.
    let mut cursors = [(0u32, 0u32); 8];
    while !u.is_empty() {
        if one(&mut u, &mut table, &mut cursors, limit).is_err() {
            break;
        }
        assert!(
            table.len() <= capacity.max(2),
            "{} flows, capacity {capacity}",
            table.len()
        );
        #[allow(clippy::len_zero)] // the two must agree
        let empty = table.len() == 0;
        assert_eq!(table.is_empty(), empty);
    }
});

fn one(
    u: &mut Unstructured<'_>,
    table: &mut AnswerHeads<RandomState>,
    cursors: &mut [(u32, u32); 8],
    limit: u16,
) -> Result<()> {
    let i = u.int_in_range(0..=7usize)?;
    let (seq, ack) = &mut cursors[i];
    let s = Segment {
        src: SocketAddr::from(([198, 18, 0, 30], 80)),
        dst: SocketAddr::from(([198, 19, 0, 1], 40000 + i as u16)),
        seq: Seq(match u.int_in_range(0..=3u8)? {
            0 | 1 => *seq,
            2 => seq.wrapping_add(u.int_in_range(-3000i32..=3000)? as u32),
            _ => u.arbitrary()?,
        }),
        ack: Seq(match u.int_in_range(0..=3u8)? {
            0 => *ack,
            1 => ack.wrapping_add(u.int_in_range(1..=100u32)?),
            2 => ack.wrapping_sub(u.int_in_range(1..=100u32)?),
            _ => u.arbitrary()?,
        }),
        payload_len: u.int_in_range(0..=3000usize)?,
        end: u.ratio(1, 16)?,
    };
    let payload: Vec<u8> = if u.ratio(1, 3)? {
        let mut p = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec();
        p.resize(s.payload_len.max(p.len()), b'x');
        p.truncate(s.payload_len);
        p
    } else {
        let present = s.payload_len.min(u.len());
        u.bytes(present)?.to_vec()
    };
    let (offset, cut) = table.place(&s, &payload);
    if s.payload_len == 0 {
        assert_eq!(offset, None, "a segment without payload placed");
    }
    if offset == Some(0) {
        assert_eq!(cut, heads::http_cut(&payload, u16::MAX));
    }
    if let Some(c) = cut {
        assert!(c >= heads::BODY_SAMPLE + 4);
    }
    let head = heads::head(&payload, offset, limit, cut);
    assert!(payload.starts_with(head));
    let room = offset.map_or(0, |o| u64::from(limit).saturating_sub(o));
    assert!(head.len() as u64 <= room);
    *seq = s.seq.0.wrapping_add(s.payload_len as u32);
    *ack = s.ack.0;
    Ok(())
}
