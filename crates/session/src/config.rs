//! Validated replication settings, independent of how they were spelled on the command line.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// One transfer rule: client traffic to `online_port` (on `online_addr`, or any local address when
/// `None`) is replicated to `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub online_addr: Option<IpAddr>,
    pub online_port: u16,
    pub target: SocketAddr,
}

impl Rule {
    pub fn matches(&self, dst: SocketAddr) -> bool {
        dst.port() == self.online_port && self.online_addr.is_none_or(|a| a == dst.ip())
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub rules: Vec<Rule>,
    /// Source addresses to give the replicated sessions (`-c`); empty keeps the real client address.
    pub fake_clients: Vec<IpAddr>,
    /// A session with no activity for this long while it still works towards the target (bytes
    /// unacknowledged, an answer awaited) is reset at the target and forgotten (`-t`).
    pub session_timeout: Duration,
    /// The same for a session with nothing outstanding, idle between requests as a kept-alive
    /// connection is (`-k`, C TCPCopy's keepalive timeout). `None`: `session_timeout`.
    pub idle_timeout: Option<Duration>,
    /// How long a client's SYN is held for its handshake with the online server to complete
    /// (its ACK or first data) before the session is forgotten without reaching the target
    /// (capped by `session_timeout`). A client retransmits its SYN for about a minute.
    pub half_open_timeout: Duration,
    /// Largest TCP payload we send in one segment (`-D`, further capped by `-M` and the target's MSS).
    pub mss: u16,
    /// Path MTU towards the target (`-M`).
    pub mtu: u16,
    /// Retransmission timeout before any RTT was measured (`-R`).
    pub initial_rto: Duration,
    /// Floor of the retransmission timeout: 200 ms, as a client's TCP (Linux `TCP_RTO_MIN`).
    /// A lower floor resends requests an overloaded target has only not taken yet.
    pub min_rto: Duration,
    /// Retransmissions of one segment before the session is given up.
    pub max_retries: u32,
    /// How long to wait for the target's answer to a request before sending the next one anyway.
    pub response_wait: Duration,
    /// Send each request without waiting for the answer to the previous one (`-W`).
    pub no_wait: bool,
    /// How long the acknowledgment of one data segment from the target may wait for a segment
    /// of ours to ride on (the next request, usually), as a client's delayed ACK does; every
    /// second segment, a FIN or a repeated segment is acknowledged at once. `None`: at once always.
    pub delayed_ack: Option<Duration>,
    /// Bytes one session may hold for the target before it is dropped (and counted).
    pub max_session_bytes: usize,
    /// Bytes all sessions together may hold (`-m`), each session counted at a fixed cost
    /// ([`crate::SESSION_COST`]) besides the client bytes it holds: half-open sessions are shed
    /// first (oldest first), then the session that would pass it is dropped.
    pub max_buffered_bytes: usize,
    /// Window-scale shift offered to the target (`None`: no window scaling, 64 KiB windows).
    pub window_scale: Option<u8>,
    /// Sessions already open before capture started are joined with a synthesized handshake.
    pub join_open_sessions: bool,
    /// TTL of the packets sent to the target.
    pub ttl: u8,
    /// Replicated sessions made from each captured one (`-n`): copy 0 keeps the client's port,
    /// copy k uses it shifted by k × `port_shift` (`--port-shift`), so each is a distinct session at
    /// the target.
    pub copies: u16,
    pub port_shift: u16,
    /// Added to every copy's client port, copy 0 included (`-f F` gives F × 2048, as C TCPCopy):
    /// several tcpcopy instances replicating the same clients to one target then use different
    /// ports. 0: copy 0 keeps the client's port.
    pub port_offset: u16,
    /// Source address given to clients on the loopback network (`-H`): the target cannot answer
    /// 127.0.0.1. Fake client addresses (`fake_clients`) take precedence.
    pub localhost_as: Option<IpAddr>,
    /// Share of client connections replicated (`-r`), 1 to 100: whole connections, chosen by a hash
    /// of the client's address and port, so the same ones every run.
    pub sample_percent: u8,
    /// Start with 1 % of the connections and take one point more each second (from the
    /// replicator's first call), up to `sample_percent` (`-g`, C TCPCopy's gradual replay). A
    /// connection left out stays out until it ends.
    pub sample_ramp: bool,
    /// Advance every session's ISN towards the target by a clock (`isn_base` + one per 4 µs), so a
    /// later run never reuses an earlier run's sequence numbers on the same endpoints. Off: the
    /// target sees the client's own ISN.
    pub clock_isn: bool,
    /// Where the ISN clock starts; the driver derives it from the wall clock (4 µs ticks).
    pub isn_base: u32,
    /// A second target fed every session too (a comparison's baseline).
    pub baseline: Option<SocketAddr>,
    /// Record when each request went to the target in full ([`crate::Replicator::drain_sends`]),
    /// and say whose session each target packet is (a comparison needs both).
    pub trace_sends: bool,
    /// Skip holes in a client's stream that its client will never fill (the capture or the
    /// mirror lost a segment the online server received): at once when the online server's
    /// acknowledgment passed the hole (its packets are captured or mirrored too), else once
    /// bytes waited behind the hole this long. The request the hole is in is lost, the later
    /// ones go on. `None`: a hole waits for the client's retransmission until the session times
    /// out (`session_timeout`).
    pub hole_wait: Option<Duration>,
}

impl Config {
    pub fn new(rules: Vec<Rule>) -> Self {
        Config {
            rules,
            fake_clients: Vec::new(),
            session_timeout: Duration::from_secs(600),
            idle_timeout: None,
            half_open_timeout: Duration::from_secs(60),
            mss: 1460,
            mtu: 1500,
            initial_rto: Duration::from_millis(200),
            min_rto: Duration::from_millis(200),
            max_retries: 8,
            response_wait: Duration::from_millis(500),
            no_wait: false,
            delayed_ack: Some(Duration::from_millis(40)),
            max_session_bytes: 64 << 20,
            max_buffered_bytes: 1 << 30,
            window_scale: Some(7),
            join_open_sessions: true,
            ttl: 64,
            copies: 1,
            port_shift: 1000,
            port_offset: 0,
            localhost_as: None,
            sample_percent: 100,
            sample_ramp: false,
            clock_isn: true,
            isn_base: 0,
            baseline: None,
            trace_sends: false,
            hole_wait: None,
        }
    }

    /// The client port copy `copy` of a session uses: shifted by `port_offset + copy *
    /// port_shift`, wrapping within 1024..=65535.
    pub fn copy_port(&self, port: u16, copy: u16) -> u16 {
        // The baseline's session (one past the copies) goes to another host: the client's port.
        if copy >= self.copies || (copy == 0 && self.port_offset == 0) {
            return port;
        }
        const FIRST: u32 = 1024;
        let span = 65536 - FIRST;
        let base = u32::from(port).max(FIRST) - FIRST;
        let shift = u32::from(self.port_offset) + u32::from(copy) * u32::from(self.port_shift);
        (FIRST + (base + shift) % span) as u16
    }

    /// The share of connections replicated `elapsed` after the first packet: `sample_percent`,
    /// or with `sample_ramp` 1 % at first and one point more each second, up to it.
    pub fn sample_percent_at(&self, elapsed: Duration) -> u8 {
        if !self.sample_ramp {
            return self.sample_percent;
        }
        let ramp = elapsed.as_secs().saturating_add(1).min(100) as u8;
        ramp.min(self.sample_percent)
    }

    /// Whether a connection from `client` is replicated under `sample_percent`.
    pub fn samples(&self, client: SocketAddr) -> bool {
        self.samples_at(client, self.sample_percent)
    }

    /// Whether a connection from `client` is replicated when `percent` % are: a connection taken
    /// at some share is taken at every larger one.
    pub fn samples_at(&self, client: SocketAddr, percent: u8) -> bool {
        if percent >= 100 {
            return true;
        }
        // splitmix64 over address and port: neighbouring ports land far apart.
        let ip = match client.ip() {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64)
            }
        };
        let mut z = (ip << 16 | u64::from(client.port())).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % 100 < u64::from(percent)
    }

    /// Replicated sessions made of each captured connection: the copies, and the baseline's.
    pub fn sessions_per_connection(&self) -> u16 {
        self.copies + u16::from(self.baseline.is_some())
    }

    pub(crate) fn rule_for(&self, dst: SocketAddr) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(dst))
    }
}
