//! The bridge on simulated time: the core's packets built by hand (and, at the end, by the real
//! session core), the sockets' outcomes reported by hand.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use session::testing::PacketBuilder;
use wire::{Flags, TcpPacket};

use super::*;

const ISN: u32 = 1000;

fn client() -> SocketAddr {
    "198.19.0.7:40000".parse().unwrap()
}

fn target() -> SocketAddr {
    "198.18.0.30:80".parse().unwrap()
}

/// A segment of the core's (window scaling offered, as the core does).
fn core(seq: u32, flags: Flags, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder {
        window_scale: Some(7),
        ..PacketBuilder::default()
    };
    b.segment(client(), target(), seq, 0, flags, payload)
}

/// A target packet as the core gets it.
#[derive(Debug, PartialEq, Eq)]
struct Out {
    flags: Flags,
    seq: u32,
    ack: u32,
    window: u16,
    len: usize,
    payload: Vec<u8>,
}

fn responses(b: &mut Bridge) -> Vec<Out> {
    let mut v = Vec::new();
    b.drain_responses(|h, payload| {
        let p = TcpPacket::parse(h).expect("a packet the core can parse");
        assert_eq!(p.src(), target());
        assert!(p.payload().is_empty(), "headers only");
        assert_eq!(
            p.payload_len(),
            payload.len(),
            "IP length counts the payload"
        );
        v.push(Out {
            flags: p.flags(),
            seq: p.seq().0,
            ack: p.ack().0,
            window: p.window(),
            len: p.payload_len(),
            payload: payload.to_vec(),
        });
    });
    v
}

fn commands(b: &mut Bridge) -> Vec<Command> {
    std::iter::from_fn(|| b.poll_command()).collect()
}

/// A bridge with one open connection (its SYN-ACK and commands taken); returns its id and our ISN.
fn open(cfg: Config, t0: Instant) -> (Bridge, ConnId, u32) {
    let mut b = Bridge::new(cfg);
    b.handle_transmit(t0, &core(ISN, Flags::SYN, b""));
    let [Command::Connect { conn, .. }] = commands(&mut b)[..] else {
        panic!("one connect")
    };
    b.connected(t0, conn);
    let synack = responses(&mut b);
    (b, conn, synack[0].seq)
}

#[test]
fn syn_connects_once_and_connected_answers_syn_ack() {
    let t0 = Instant::now();
    let mut b = Bridge::new(Config::default());
    b.handle_transmit(t0, &core(ISN, Flags::SYN, b""));
    b.handle_transmit(t0 + Duration::from_millis(200), &core(ISN, Flags::SYN, b""));
    let conn = ConnId(1);
    assert_eq!(
        commands(&mut b),
        vec![Command::Connect {
            conn,
            target: target(),
            client: client()
        }],
        "a repeated SYN while connecting is ignored"
    );
    assert!(responses(&mut b).is_empty());
    b.connected(t0, conn);
    let mut synack = Vec::new();
    b.drain_responses(|h, _| synack = h.to_vec());
    let p = TcpPacket::parse(&synack).unwrap();
    assert_eq!(p.flags(), Flags::SYN | Flags::ACK);
    assert_eq!(p.ack().0, ISN + 1);
    assert_eq!(p.mss(), Some(MAX_SEGMENT as u16));
    // 256 KiB said with a shift of 3, since the core offered window scaling.
    assert_eq!(p.window_scale(), Some(3));
    assert_eq!(b.stats().opened, 1);
}

#[test]
fn without_window_scaling_the_window_is_at_most_64k() {
    let t0 = Instant::now();
    let mut b = Bridge::new(Config::default());
    let syn = PacketBuilder::default().segment(client(), target(), ISN, 0, Flags::SYN, b"");
    b.handle_transmit(t0, &syn);
    let _ = commands(&mut b);
    b.connected(t0, ConnId(1));
    let mut synack = Vec::new();
    b.drain_responses(|h, _| synack = h.to_vec());
    let p = TcpPacket::parse(&synack).unwrap();
    assert_eq!((p.window_scale(), p.window()), (None, 0xffff));
    // The queue holds no more than the window said.
    let big = vec![1u8; 70_000];
    b.handle_transmit(
        t0,
        &PacketBuilder::default().segment(
            client(),
            target(),
            ISN + 1,
            0,
            Flags::ACK,
            &big[..60_000],
        ),
    );
    b.handle_transmit(
        t0,
        &PacketBuilder::default().segment(
            client(),
            target(),
            ISN + 60_001,
            0,
            Flags::ACK,
            &big[60_000..],
        ),
    );
    assert_eq!(b.pending(ConnId(1)).len(), 0xffff);
}

#[test]
fn in_order_bytes_are_acknowledged_once_the_kernel_took_them() {
    let t0 = Instant::now();
    let (mut b, conn, _) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK | Flags::PSH, b"hello"));
    b.handle_transmit(t0, &core(ISN + 6, Flags::ACK | Flags::PSH, b" world"));
    assert_eq!(commands(&mut b), vec![Command::Write { conn }]);
    assert!(responses(&mut b).is_empty(), "nothing accepted yet");
    assert_eq!(b.pending(conn), b"hello world");
    b.written(t0, conn, 3);
    b.written(t0, conn, 8);
    let acks: Vec<u32> = responses(&mut b).iter().map(|o| o.ack).collect();
    assert_eq!(acks, vec![ISN + 4, ISN + 12]);
    assert!(b.pending(conn).is_empty());
    assert_eq!(b.stats().bytes_written, 11);
}

#[test]
fn retransmission_below_what_was_accepted_gets_a_duplicate_ack() {
    let t0 = Instant::now();
    let (mut b, conn, _) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"abcd"));
    let _ = commands(&mut b);
    b.written(t0, conn, 4);
    let _ = responses(&mut b);
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"abcd"));
    let out = responses(&mut b);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, ISN + 5);
    assert!(commands(&mut b).is_empty(), "nothing written twice");
    assert!(b.pending(conn).is_empty());
}

#[test]
fn out_of_order_segment_is_dropped_and_the_hole_acknowledged() {
    let t0 = Instant::now();
    let (mut b, conn, _) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 5, Flags::ACK, b"later"));
    let out = responses(&mut b);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ack, ISN + 1, "still waits for the first byte");
    assert!(b.pending(conn).is_empty());
    // The core retransmits from the hole: both parts go, in order.
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"abcdlater"));
    assert_eq!(b.pending(conn), b"abcdlater");
}

#[test]
fn partly_new_segment_queues_only_its_new_bytes() {
    let t0 = Instant::now();
    let (mut b, conn, _) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"abc"));
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"abcdef"));
    assert_eq!(b.pending(conn), b"abcdef");
}

#[test]
fn core_fin_shuts_down_after_the_last_byte_and_target_eof_closes() {
    let t0 = Instant::now();
    let (mut b, conn, isn) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK | Flags::FIN, b"bye"));
    assert_eq!(commands(&mut b), vec![Command::Write { conn }]);
    assert!(responses(&mut b).is_empty(), "the FIN waits for its bytes");
    b.written(t0, conn, 3);
    assert_eq!(commands(&mut b), vec![Command::Shutdown { conn }]);
    let out = responses(&mut b);
    assert_eq!(
        out.last().unwrap().ack,
        ISN + 5,
        "bytes and FIN acknowledged"
    );
    b.received(t0, conn, b"ok");
    b.eof(t0, conn);
    let out = responses(&mut b);
    assert_eq!(out[0].seq, isn + 1);
    assert_eq!(out[0].payload, b"ok");
    assert_eq!(out[1].flags, Flags::FIN | Flags::ACK);
    assert_eq!(out[1].seq, isn + 3);
    assert_eq!(commands(&mut b), vec![Command::Close { conn }]);
    assert_eq!(b.connections(), 0);
}

#[test]
fn target_closing_first_keeps_the_connection_until_the_core_closes() {
    let t0 = Instant::now();
    let (mut b, conn, isn) = open(Config::default(), t0);
    b.eof(t0, conn);
    assert_eq!(responses(&mut b)[0].seq, isn + 1);
    assert!(commands(&mut b).is_empty());
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK | Flags::FIN, b""));
    assert_eq!(
        commands(&mut b),
        vec![Command::Shutdown { conn }, Command::Close { conn }]
    );
    assert_eq!(responses(&mut b)[0].ack, ISN + 2);
}

#[test]
fn answer_is_cut_into_segments_with_push_on_the_last() {
    let t0 = Instant::now();
    let (mut b, conn, isn) = open(Config::default(), t0);
    let answer = vec![7u8; MAX_SEGMENT + 10];
    b.received(t0, conn, &answer);
    let out = responses(&mut b);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].seq, out[0].len), (isn + 1, MAX_SEGMENT));
    assert!(!out[0].flags.psh());
    assert_eq!((out[1].seq, out[1].len), (isn + 1 + MAX_SEGMENT as u32, 10));
    assert!(out[1].flags.psh());
    assert_eq!(b.stats().bytes_read, answer.len() as u64);
}

#[test]
fn core_reset_lingers_until_drained() {
    let t0 = Instant::now();
    let (mut b, conn, _) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 1, Flags::RST, b""));
    assert_eq!(commands(&mut b), vec![Command::Linger { conn }]);
    assert_eq!((b.connections(), b.lingering()), (0, 1));
    b.drained(conn);
    assert_eq!(b.lingering(), 0);
    assert_eq!(b.poll_timeout(), None);
    b.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(commands(&mut b), vec![]);
    assert_eq!(b.stats().linger_expired, 0);
}

/// The bug: a short connection's request, acknowledged to the core once the local kernel took
/// it, was discarded from the send queue by the abortive close that followed the captured
/// client's reset (the target had not acknowledged it: its first transmission was lost).
/// The socket now lingers until drained, and is aborted only after [`Config::linger`].
#[test]
fn request_acknowledged_then_reset_by_the_core_is_not_aborted_before_the_linger() {
    let t0 = Instant::now();
    let cfg = Config {
        linger: Duration::from_secs(3),
        ..Config::default()
    };
    let (mut b, conn, _) = open(cfg, t0);
    let request = b"GET /short HTTP/1.1\r\nHost: t\r\n\r\n";
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK | Flags::PSH, request));
    b.handle_transmit(t0, &core(ISN + 1 + request.len() as u32, Flags::RST, b""));
    assert_eq!(
        commands(&mut b),
        vec![Command::Write { conn }, Command::Linger { conn }],
        "the write goes before the linger"
    );
    assert_eq!(b.pending(conn), request, "the request is still written");
    b.written(t0, conn, request.len());
    assert_eq!(b.pending(conn), b"");
    assert_eq!(b.stats().bytes_written, request.len() as u64);
    assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    // Not drained (the target has not acknowledged): no abort before the linger ran out.
    b.handle_timeout(t0 + Duration::from_millis(2_900));
    assert_eq!(commands(&mut b), vec![]);
    b.handle_timeout(t0 + Duration::from_secs(3));
    assert_eq!(commands(&mut b), vec![Command::Abort { conn }]);
    assert_eq!(b.stats().linger_expired, 1);
    assert_eq!((b.lingering(), b.poll_timeout()), (0, None));
}

#[test]
fn target_reset_resets_the_session() {
    let t0 = Instant::now();
    let (mut b, conn, isn) = open(Config::default(), t0);
    b.reset(t0, conn);
    let out = responses(&mut b);
    assert!(out[0].flags.rst());
    assert_eq!(out[0].seq, isn + 1);
    assert_eq!(commands(&mut b), vec![Command::Close { conn }]);
    assert_eq!(b.stats().reset_by_target, 1);
}

#[test]
fn refused_connection_resets_the_syn_and_is_counted() {
    let t0 = Instant::now();
    let mut b = Bridge::new(Config::default());
    b.handle_transmit(t0, &core(ISN, Flags::SYN, b""));
    let _ = commands(&mut b);
    b.connect_failed(t0, ConnId(1), Failure::Refused);
    let out = responses(&mut b);
    assert_eq!(out[0].flags, Flags::RST | Flags::ACK);
    assert_eq!(out[0].ack, ISN + 1);
    assert_eq!(commands(&mut b), vec![Command::Close { conn: ConnId(1) }]);
    assert_eq!((b.stats().refused, b.stats().failed()), (1, 1));
    // Later data of that session finds no connection: a reset again.
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"x"));
    assert!(responses(&mut b)[0].flags.rst());
}

#[test]
fn window_bounds_the_queue_and_backpressure_holds_the_acknowledgment() {
    let t0 = Instant::now();
    let cfg = Config {
        buffer: 10,
        ..Config::default()
    };
    let (mut b, conn, _) = open(cfg, t0);
    b.handle_transmit(t0, &core(ISN + 1, Flags::ACK, b"0123456789abcde"));
    assert_eq!(b.pending(conn), b"0123456789", "only the window's worth");
    // The kernel takes nothing (its buffer is full): no acknowledgment, the core waits.
    b.written(t0, conn, 0);
    assert!(responses(&mut b).is_empty());
    b.written(t0, conn, 10);
    let out = responses(&mut b);
    assert_eq!((out[0].ack, out[0].window), (ISN + 11, 10));
    // The rest comes again from the core, and fits now.
    b.handle_transmit(t0, &core(ISN + 11, Flags::ACK, b"abcde"));
    assert_eq!(b.pending(conn), b"abcde");
}

#[test]
fn connections_past_the_bound_are_reset_at_their_syn() {
    let t0 = Instant::now();
    let cfg = Config {
        max_connections: 1,
        ..Config::default()
    };
    let mut b = Bridge::new(cfg);
    b.handle_transmit(t0, &core(ISN, Flags::SYN, b""));
    let other = PacketBuilder::default().segment(
        "198.19.0.8:40001".parse().unwrap(),
        target(),
        ISN,
        0,
        Flags::SYN,
        b"",
    );
    b.handle_transmit(t0, &other);
    assert_eq!(commands(&mut b).len(), 1, "one connect");
    let mut rst = Vec::new();
    b.drain_responses(|h, _| rst = h.to_vec());
    let p = TcpPacket::parse(&rst).unwrap();
    assert!(p.flags().rst());
    assert_eq!(p.dst().port(), 40001);
    assert_eq!(b.stats().over_limit, 1);
}

#[test]
fn stuck_connect_times_out_and_idle_connection_is_closed() {
    let t0 = Instant::now();
    let cfg = Config {
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let (mut b, open_conn, _) = open(cfg, t0);
    let late = PacketBuilder::default().segment(
        "198.19.0.8:40001".parse().unwrap(),
        target(),
        ISN,
        0,
        Flags::SYN,
        b"",
    );
    b.handle_transmit(t0, &late);
    let _ = commands(&mut b);
    assert!(b.poll_timeout().is_some());
    b.handle_timeout(t0 + Duration::from_secs(6));
    assert_eq!(commands(&mut b), vec![Command::Close { conn: ConnId(2) }]);
    assert_eq!(b.stats().timed_out, 1);
    b.handle_timeout(t0 + Duration::from_secs(31));
    assert_eq!(commands(&mut b), vec![Command::Abort { conn: open_conn }]);
    assert_eq!(b.stats().idle_closed, 1);
    let rsts = responses(&mut b);
    assert!(rsts.iter().all(|o| o.flags.rst()) && rsts.len() == 2);
    assert_eq!(b.connections(), 0);
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn new_session_on_the_same_endpoints_replaces_the_old_connection() {
    let t0 = Instant::now();
    let (mut b, conn, _) = open(Config::default(), t0);
    b.handle_transmit(t0, &core(ISN + 50_000, Flags::SYN, b""));
    let cmds = commands(&mut b);
    assert_eq!(cmds[0], Command::Linger { conn });
    assert!(matches!(
        cmds[1],
        Command::Connect {
            conn: ConnId(2),
            ..
        }
    ));
}

mod with_the_core;
