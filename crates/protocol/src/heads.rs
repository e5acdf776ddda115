//! Where an answer begins, and so which payload bytes belong to the head an intercept forwards
//! ([`Annotation::head`](crate::Annotation::head)): the first `compare_bytes` of each answer.
//!
//! The rule, which tcpcopy's comparison pairs answers by too: an answer is the server's data
//! sent with one acknowledgment number (the end of the request it answers). An answer begins
//! when a payload segment acknowledges more than the flow's previous payload segment did; a
//! segment acknowledging less belongs to an earlier answer (a late retransmission) and carries
//! no head. Within an answer, sequence numbers say where each segment lies, so retransmitted and
//! reordered segments find their place.
//!
//! An HTTP/1.x answer whose first segment holds its whole head (status line and headers) is
//! forwarded only that far and [`BODY_SAMPLE`] bytes into its body: the body is compared by
//! digest, and its bytes would only make the channel carry most of every answer again.
//!
//! [`AnswerHeads`] keeps that per flow, sans-IO: a flow is forgotten at FIN or RST, and when the
//! table reaches its capacity the least recently used half goes (a forgotten flow's next answer
//! simply starts anew).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;

use wire::Seq;

/// Flows remembered by default.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// Body bytes forwarded after a whole HTTP head, for the report's samples.
pub const BODY_SAMPLE: u64 = 64;

/// Where the forwarded head of an answer whose first segment is `payload` may stop: past an
/// HTTP/1.x head found whole within the first `limit` bytes, and [`BODY_SAMPLE`] bytes into its
/// body; `None` (up to the limit) otherwise.
pub fn http_cut(payload: &[u8], limit: u16) -> Option<u64> {
    let first = &payload[..payload.len().min(usize::from(limit))];
    if !first.starts_with(b"HTTP/1.") {
        return None;
    }
    let end = first.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some(end as u64 + BODY_SAMPLE)
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    /// What the current answer's segments acknowledge.
    ack: Seq,
    /// Sequence number of the current answer's first byte.
    start: Seq,
    /// When the flow was last seen, in segments counted by the table.
    used: u64,
    /// Where the current answer's forwarded head stops ([`http_cut`] of its first segment).
    cut: Option<u64>,
}

/// The current answer of every flow (keyed by the server's and the client's endpoints).
pub struct AnswerHeads<S = RandomState> {
    flows: HashMap<(SocketAddr, SocketAddr), Flow, S>,
    capacity: usize,
    clock: u64,
}

/// One data segment as the table needs it.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: Seq,
    pub ack: Seq,
    pub payload_len: usize,
    /// FIN or RST: the flow ends with it.
    pub end: bool,
}

impl<S: BuildHasher + Default> Default for AnswerHeads<S> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<S: BuildHasher + Default> AnswerHeads<S> {
    /// A table that remembers up to `capacity` flows (at least 2).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            flows: HashMap::default(),
            capacity: capacity.max(2),
            clock: 0,
        }
    }

    /// Flows remembered now.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Takes one segment of the server's: where its payload starts within its answer, `None`
    /// when it carries no payload or belongs to an earlier answer.
    pub fn segment(&mut self, s: &Segment) -> Option<u64> {
        let key = (s.src, s.dst);
        if s.payload_len == 0 {
            if s.end {
                self.flows.remove(&key);
            }
            return None;
        }
        self.clock += 1;
        if !s.end && self.flows.len() >= self.capacity && !self.flows.contains_key(&key) {
            self.evict();
        }
        let fresh = Flow {
            ack: s.ack,
            start: s.seq,
            used: self.clock,
            cut: None,
        };
        let flow = self.flows.entry(key).or_insert(fresh);
        flow.used = self.clock;
        let offset = if s.ack > flow.ack {
            *flow = fresh;
            Some(0)
        } else if s.ack < flow.ack {
            None
        } else {
            match s.seq.diff(flow.start) {
                // Earlier bytes of the same answer arrived late: they begin it.
                d if d < 0 => {
                    flow.start = s.seq;
                    Some(0)
                }
                d => Some(d as u64),
            }
        };
        if s.end {
            self.flows.remove(&key);
        }
        offset
    }

    /// Forgets the least recently used half of the flows.
    /// [`AnswerHeads::segment`], with `payload` the segment's: its offset in its answer, and
    /// where the answer's forwarded head may stop (found in the answer's first segment).
    pub fn place(&mut self, s: &Segment, payload: &[u8]) -> (Option<u64>, Option<u64>) {
        let key = (s.src, s.dst);
        let offset = self.segment(s);
        let cut = match offset {
            Some(0) => {
                let cut = http_cut(payload, u16::MAX);
                if let Some(flow) = self.flows.get_mut(&key) {
                    flow.cut = cut;
                }
                cut
            }
            Some(_) => self.flows.get(&key).and_then(|f| f.cut),
            None => None,
        };
        (offset, cut)
    }

    fn evict(&mut self) {
        let mut used: Vec<u64> = self.flows.values().map(|f| f.used).collect();
        let mid = used.len() / 2;
        // Stamps are unique: exactly `mid` flows are older than the one at `mid`.
        let (_, &mut cut, _) = used.select_nth_unstable(mid);
        self.flows.retain(|_, f| f.used >= cut);
    }
}

/// The part of `payload` that falls within an answer's first `limit` bytes, for a segment that
/// starts `offset` bytes into its answer (`None`: not part of the current answer).
pub fn head(payload: &[u8], offset: Option<u64>, limit: u16, cut: Option<u64>) -> &[u8] {
    let limit = cut.map_or(u64::from(limit), |c| c.min(u64::from(limit)));
    match offset {
        Some(off) if off < limit => {
            let room = (limit - off) as usize;
            &payload[..payload.len().min(room)]
        }
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "198.18.0.30:80";

    fn seg(client_port: u16, seq: u32, ack: u32, len: usize, end: bool) -> Segment {
        Segment {
            src: SERVER.parse().unwrap(),
            dst: SocketAddr::from(([198, 19, 0, 1], client_port)),
            seq: Seq(seq),
            ack: Seq(ack),
            payload_len: len,
            end,
        }
    }

    #[test]
    fn an_answer_begins_where_the_acknowledgment_moves() {
        let mut t = AnswerHeads::<RandomState>::default();
        // First answer (to the request ending at 100): three segments.
        assert_eq!(t.segment(&seg(1, 1000, 100, 500, false)), Some(0));
        assert_eq!(t.segment(&seg(1, 1500, 100, 500, false)), Some(500));
        assert_eq!(t.segment(&seg(1, 2000, 100, 500, false)), Some(1000));
        // A pure ACK changes nothing.
        assert_eq!(t.segment(&seg(1, 2500, 180, 0, false)), None);
        // Second answer, to the request ending at 180.
        assert_eq!(t.segment(&seg(1, 2500, 180, 10, false)), Some(0));
        // Retransmission within it, and a late one from the first answer.
        assert_eq!(t.segment(&seg(1, 2500, 180, 10, false)), Some(0));
        assert_eq!(t.segment(&seg(1, 1500, 100, 500, false)), None);
        // Another flow keeps its own answers.
        assert_eq!(t.segment(&seg(2, 7, 100, 5, false)), Some(0));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn acknowledgments_and_sequences_wrap() {
        let mut t = AnswerHeads::<RandomState>::default();
        assert_eq!(
            t.segment(&seg(1, u32::MAX - 9, u32::MAX - 1, 10, false)),
            Some(0)
        );
        assert_eq!(t.segment(&seg(1, 0, u32::MAX - 1, 10, false)), Some(10));
        assert_eq!(
            t.segment(&seg(1, 10, 5, 10, false)),
            Some(0),
            "ack wrapped: later"
        );
    }

    #[test]
    fn a_reordered_first_segment_begins_the_answer() {
        let mut t = AnswerHeads::<RandomState>::default();
        assert_eq!(t.segment(&seg(1, 1500, 100, 500, false)), Some(0));
        assert_eq!(t.segment(&seg(1, 1000, 100, 500, false)), Some(0));
        assert_eq!(t.segment(&seg(1, 2000, 100, 500, false)), Some(1000));
    }

    #[test]
    fn fin_and_rst_end_the_flow() {
        let mut t = AnswerHeads::<RandomState>::default();
        t.segment(&seg(1, 1000, 100, 5, false));
        t.segment(&seg(2, 1000, 100, 5, false));
        assert_eq!(t.segment(&seg(1, 1005, 100, 0, true)), None);
        assert_eq!(
            t.segment(&seg(2, 1005, 100, 7, true)),
            Some(5),
            "data with FIN"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_used() {
        let mut t = AnswerHeads::<RandomState>::with_capacity(4);
        for port in 1..=4 {
            t.segment(&seg(port, 1000, 100, 5, false));
        }
        // Flows 1 and 2 are used again; flow 5 pushes out the two idle ones.
        t.segment(&seg(1, 1005, 100, 5, false));
        t.segment(&seg(2, 1005, 100, 5, false));
        assert_eq!(t.segment(&seg(5, 1, 1, 5, false)), Some(0));
        assert_eq!(t.len(), 3);
        assert_eq!(t.segment(&seg(1, 1010, 100, 5, false)), Some(10), "kept");
        assert_eq!(
            t.segment(&seg(3, 1005, 100, 5, false)),
            Some(0),
            "forgotten: starts anew"
        );
    }

    #[test]
    fn the_head_is_what_falls_within_the_first_bytes() {
        let p = b"0123456789";
        assert_eq!(head(p, Some(0), 4, None), b"0123");
        assert_eq!(head(p, Some(0), 100, None), p);
        assert_eq!(head(p, Some(2), 4, None), b"01");
        assert_eq!(head(p, Some(4), 4, None), b"");
        assert_eq!(head(p, None, 4, None), b"");
        assert_eq!(head(p, Some(u64::MAX), u16::MAX, None), b"");
        assert_eq!(
            head(p, Some(0), 100, Some(3)),
            b"012",
            "cut before the limit"
        );
        assert_eq!(head(p, Some(0), 2, Some(3)), b"01", "limit before the cut");
    }

    #[test]
    fn an_http_answer_s_head_stops_a_sample_into_its_body() {
        let mut t = AnswerHeads::<RandomState>::default();
        let body = [b'b'; 1000];
        let first = [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1400\r\n\r\n"[..],
            &body,
        ]
        .concat();
        let head_end = 41;
        let s1 = seg(1000, 100, 7, first.len(), false);
        let (offset, cut) = t.place(&s1, &first);
        assert_eq!((offset, cut), (Some(0), Some(head_end + BODY_SAMPLE)));
        let kept = head(&first, offset, 1024, cut);
        assert_eq!(kept.len() as u64, head_end + BODY_SAMPLE);
        assert!(kept.starts_with(b"HTTP/1.1 200 OK"));
        // The answer's next segment carries nothing more, even under the limit.
        let s2 = seg(1000, 100 + first.len() as u32, 7, 400, false);
        let (offset, cut) = t.place(&s2, &[b'b'; 400]);
        assert_eq!(head(&[b'b'; 400], offset, u16::MAX, cut), b"");
        // The next answer (another acknowledgment), not HTTP-looking: up to the limit.
        let s3 = seg(1000, 2000, 50, 300, false);
        let (offset, cut) = t.place(&s3, &[b'x'; 300]);
        assert_eq!((offset, cut), (Some(0), None));
        assert_eq!(head(&[b'x'; 300], offset, 100, cut).len(), 100);
        // An HTTP head longer than its first segment: no cut, the limit decides.
        let s4 = seg(1001, 100, 7, 20, false);
        assert_eq!(t.place(&s4, b"HTTP/1.1 200 OK\r\nX: "), (Some(0), None));
    }
}
