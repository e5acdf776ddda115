//! The [`Message::Answers`](crate::Message::Answers) frame: response packets (IP+TCP headers) for
//! a tcpcopy that compares answers, each with an [`Annotation`]. Built with [`AnswerBatch`],
//! iterated without copying through [`Answers`]; validated once at decode, after which iteration
//! yields exactly the announced items.
//!
//! Body: `count u16 | per item: pkt_len u16 | pkt | at_ns u64 | hash u64 | head_len u16 | head`.

use crate::{ProtocolError, KIND_ANSWERS, MAX_FRAME};

/// What intercept adds to a response packet for a comparing tcpcopy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Annotation<'a> {
    /// When intercept captured the packet: ns since the Unix epoch, on intercept's clock.
    pub at_ns: u64,
    /// Digest of the packet's whole payload (`compare::Digest::of(payload).hash`; its length is
    /// the payload length the IP header gives).
    pub hash: u64,
    /// The payload bytes that belong to the first `compare_bytes` of the answer this segment is
    /// part of (see [`heads`](crate::heads)); empty for the later segments of a long answer.
    pub head: &'a [u8],
}

/// The largest item: a packet and a head of 65535 bytes each, with their fields.
const MAX_ITEM: usize = 2 + 65535 + 8 + 8 + 2 + 65535;

/// A batch holding this many bytes should be finished: one more item could take the frame past
/// [`MAX_FRAME`].
pub const FULL_BYTES: usize = MAX_FRAME - MAX_ITEM - 16;

/// Builds [`Message::Answers`](crate::Message::Answers) frames incrementally: push annotated
/// packets, then [`AnswerBatch::finish`]. Finish it once it holds `max_batch` items or
/// [`AnswerBatch::is_full`] says so.
#[derive(Debug, Default)]
pub struct AnswerBatch {
    buf: Vec<u8>,
    count: u16,
}

impl AnswerBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one packet and its annotation (each cut to 65535 bytes). Returns the number of items
    /// now in the batch; a batch of 65535 items takes no more.
    pub fn push(&mut self, packet: &[u8], note: &Annotation<'_>) -> usize {
        if self.count == u16::MAX {
            return usize::from(self.count);
        }
        if self.buf.is_empty() {
            self.buf
                .extend_from_slice(&[0, 0, 0, 0, KIND_ANSWERS, 0, 0]);
        }
        let p = &packet[..packet.len().min(usize::from(u16::MAX))];
        let head = &note.head[..note.head.len().min(usize::from(u16::MAX))];
        self.buf.extend_from_slice(&(p.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(p);
        self.buf.extend_from_slice(&note.at_ns.to_be_bytes());
        self.buf.extend_from_slice(&note.hash.to_be_bytes());
        self.buf
            .extend_from_slice(&(head.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(head);
        self.count += 1;
        usize::from(self.count)
    }

    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the batch must be finished before the next push (see [`FULL_BYTES`]).
    pub fn is_full(&self) -> bool {
        self.buf.len() >= FULL_BYTES || self.count == u16::MAX
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

/// A decoded batch of annotated response packets, iterated without copying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answers<'a> {
    count: u16,
    body: &'a [u8],
}

impl<'a> Answers<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each packet (IP header first) with its annotation.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], Annotation<'a>)> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let (item, tail) = split_item(rest)?;
            rest = tail;
            Some(item)
        })
    }
}

/// One item: the packet and its annotation.
type Item<'a> = (&'a [u8], Annotation<'a>);

/// The first item of `rest` and what follows it; `None` when `rest` does not hold a whole item.
fn split_item(rest: &[u8]) -> Option<(Item<'_>, &[u8])> {
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    let pkt = rest.get(..len)?;
    let (at_ns, rest) = rest[len..].split_first_chunk::<8>()?;
    let (hash, rest) = rest.split_first_chunk::<8>()?;
    let (head_len, rest) = rest.split_first_chunk::<2>()?;
    let head_len = usize::from(u16::from_be_bytes(*head_len));
    let head = rest.get(..head_len)?;
    let note = Annotation {
        at_ns: u64::from_be_bytes(*at_ns),
        hash: u64::from_be_bytes(*hash),
        head,
    };
    Some(((pkt, note), &rest[head_len..]))
}

/// Decodes an answers body, checking that it holds exactly `count` whole items.
pub(crate) fn decode(body: &[u8]) -> Result<Answers<'_>, ProtocolError> {
    let malformed = ProtocolError::Malformed("answers");
    let (count, mut rest) = body.split_first_chunk::<2>().ok_or(malformed.clone())?;
    let count = u16::from_be_bytes(*count);
    for _ in 0..count {
        let (_, tail) = split_item(rest).ok_or(malformed.clone())?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(malformed);
    }
    Ok(Answers {
        count,
        body: &body[2..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decoder, Message};

    fn note(at_ns: u64, hash: u64, head: &[u8]) -> Annotation<'_> {
        Annotation { at_ns, hash, head }
    }

    /// An item, owned: packet, time, hash, head.
    type Owned = (Vec<u8>, u64, u64, Vec<u8>);

    fn decode_one(bytes: &[u8]) -> Result<Vec<Owned>, ProtocolError> {
        let mut d = Decoder::new();
        d.feed(bytes);
        match d.next_message()? {
            Some(Message::Answers(a)) => {
                let items: Vec<_> = a
                    .iter()
                    .map(|(p, n)| (p.to_vec(), n.at_ns, n.hash, n.head.to_vec()))
                    .collect();
                assert_eq!(items.len(), a.len());
                Ok(items)
            }
            other => panic!("not answers: {other:?}"),
        }
    }

    #[test]
    fn answers_roundtrip_with_their_annotations() {
        let mut batch = AnswerBatch::new();
        assert_eq!(batch.push(b"hdr1", &note(1, u64::MAX, b"HTTP/1.1 200")), 1);
        assert_eq!(batch.push(b"", &note(u64::MAX, 0, b"")), 2);
        assert_eq!(batch.push(b"h3", &note(7, 9, b"")), 3);
        let mut out = Vec::new();
        batch.finish(&mut out);
        assert!(batch.is_empty());
        assert_eq!(
            decode_one(&out).unwrap(),
            vec![
                (b"hdr1".to_vec(), 1, u64::MAX, b"HTTP/1.1 200".to_vec()),
                (vec![], u64::MAX, 0, vec![]),
                (b"h3".to_vec(), 7, 9, vec![]),
            ]
        );
        // An empty batch writes nothing.
        let mut none = Vec::new();
        batch.finish(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_head_longer_than_a_field_holds_is_cut() {
        let big = vec![7u8; 70_000];
        let mut batch = AnswerBatch::new();
        batch.push(&big, &note(1, 2, &big));
        let mut out = Vec::new();
        batch.finish(&mut out);
        let items = decode_one(&out).unwrap();
        assert_eq!(items[0].0.len(), 65535);
        assert_eq!(items[0].3.len(), 65535);
    }

    #[test]
    fn a_full_batch_stays_within_the_frame_limit() {
        let big = vec![1u8; 65535];
        let mut batch = AnswerBatch::new();
        let mut out = Vec::new();
        let mut frames = 0;
        for _ in 0..100 {
            batch.push(&big, &note(0, 0, &big));
            if batch.is_full() {
                batch.finish(&mut out);
                frames += 1;
            }
        }
        batch.finish(&mut out);
        frames += 1;
        let mut d = Decoder::new();
        d.feed(&out);
        let mut items = 0;
        for _ in 0..frames {
            match d.next_message() {
                Ok(Some(Message::Answers(a))) => items += a.len(),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(items, 100);
        assert!(frames > 1, "100 items of 128 KiB need several frames");
    }

    /// The frame of one item `pkt "ab"`, at 1, hash 2, head "xyz".
    fn one_item() -> Vec<u8> {
        let mut batch = AnswerBatch::new();
        batch.push(b"ab", &note(1, 2, b"xyz"));
        let mut out = Vec::new();
        batch.finish(&mut out);
        out
    }

    /// Rewrites the frame's length prefix after an edit of its body.
    fn relength(mut f: Vec<u8>) -> Vec<u8> {
        let len = (f.len() - 4) as u32;
        f[0..4].copy_from_slice(&len.to_be_bytes());
        f
    }

    #[test]
    fn malformed_answers_are_errors_never_panics() {
        let malformed = Err(ProtocolError::Malformed("answers"));
        // The count claims two items, the body holds one.
        let mut f = one_item();
        f[6] = 2;
        assert_eq!(decode_one(&f), malformed);
        // The count claims none, the body holds one.
        let mut f = one_item();
        f[6] = 0;
        assert_eq!(decode_one(&f), malformed);
        // Truncated anywhere inside the item (the frame length says so).
        let whole = one_item();
        for cut in 1..whole.len() - 7 {
            let f = relength(whole[..whole.len() - cut].to_vec());
            assert_eq!(decode_one(&f), malformed, "cut {cut}");
        }
        // A head length beyond the frame.
        let mut f = one_item();
        let head_len_at = f.len() - 3 - 2;
        f[head_len_at] = 0xff;
        assert_eq!(decode_one(&f), malformed);
        // Trailing bytes after the last item.
        let mut f = one_item();
        f.push(0);
        assert_eq!(decode_one(&relength(f)), malformed);
        // No count at all.
        let mut f = Vec::new();
        crate::frame(&mut f, KIND_ANSWERS, |b| b.push(0));
        assert_eq!(decode_one(&f), malformed);
    }
}
