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

#[derive(Clone, Copy, Debug)]
struct Flow {
    /// What the current answer's segments acknowledge.
    ack: Seq,
    /// Sequence number of the current answer's first byte.
    start: Seq,
    /// When the flow was last seen, in segments counted by the table.
    used: u64,
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
pub fn head(payload: &[u8], offset: Option<u64>, limit: u16) -> &[u8] {
    match offset {
        Some(off) if off < u64::from(limit) => {
            let room = (u64::from(limit) - off) as usize;
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
        assert_eq!(head(p, Some(0), 4), b"0123");
        assert_eq!(head(p, Some(0), 100), p);
        assert_eq!(head(p, Some(2), 4), b"01");
        assert_eq!(head(p, Some(4), 4), b"");
        assert_eq!(head(p, None, 4), b"");
        assert_eq!(head(p, Some(u64::MAX), u16::MAX), b"");
    }
}
