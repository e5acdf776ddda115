//! `tcpcopy-bench --pps`: packets per second through capture → rewrite → send.
//!
//! The lab's client host blasts TCP segments of 256 sessions (their SYNs first, then 64-byte data
//! segments round robin) at an address of the online host's segment that no host owns: the
//! online host's kernel drops them right after its capture ring saw them, so nothing but the
//! pipeline under test works on them. On the online host the real pieces run as `tcpcopy` runs
//! them, on one thread: the capture ring read in place, the session core, and the batched
//! sender, towards a target behind a device whose queue discards every frame (a `blackhole`
//! qdisc: the kernel's whole send path up to the device, as a NIC would take it; no receive
//! path, whose softirq backlog would otherwise overflow and make the sink the limit). The
//! target's answers are
//! made up in process: a SYN-ACK for every SYN the core sends, and one cumulative ACK per session
//! and round for the data it sends.
//!
//! What is measured: packets captured and sent per second, the ring's drops, the packets that
//! reached the target's link (counted by its queue in the kernel, not by the pipeline), and the
//! pipeline thread's CPU time per packet (the receive path into the ring runs in the sender's
//! context on a veth, so that part is the generator's, as it would be a NIC's interrupt).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use lab::scenario::Sniffer;
use lab::{Lab, LabSpec};
use netio::bpf::TcpFilter;
use netio::capture::{RingCapture, RingConfig};
use netio::raw::{PacketSink, RawSender};
use session::testing::PacketBuilder;
use session::{Config, Replicator, Rule};
use wire::{Flags, Seq, TcpPacket};

use tcpcopy::cli::SendLayer;
use tcpcopy::config::SendVia;
use tcpcopy::live::Sender;
use tcpcopy::plumbing::{raise_capture_priority, stop_on_signals};

const SESSIONS: u16 = 256;
const PAYLOAD: usize = 64;
/// Address on the lab segment that no host owns (frames go to the online host's MAC).
const PHANTOM: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 99);
/// Target behind the online host's sink device.
const TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 30);
/// The target's link on the online host, whose queue discards (and counts) every frame.
const SINK: &str = "tsink0";

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    cpu_of("/proc/thread-self/stat")
}

fn cpu_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some(end) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[end + 2..].split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// A generated client segment of session `port` towards the address nobody owns.
fn segment(port: u16, seq: u32, flags: Flags, payload: &[u8], out: &mut Vec<u8>) {
    PacketBuilder::default().emit(
        SocketAddr::new(IpAddr::V4(Lab::CLIENT_IP), port),
        SocketAddr::new(IpAddr::V4(PHANTOM), 80),
        seq,
        if flags.syn() { 0 } else { 7_000_001 },
        flags,
        payload,
        out,
    );
}

/// Sends segments until `stop`; returns (packets sent, its thread's CPU seconds).
fn generate(stop: &AtomicBool) -> anyhow::Result<(u64, f64)> {
    let mut tx = RawSender::open().context("generator raw socket")?;
    let mut buf = Vec::with_capacity(128);
    let mut sent = 0u64;
    for port in 0..SESSIONS {
        buf.clear();
        segment(20_000 + port, 1_000, Flags::SYN, &[], &mut buf);
        tx.send(&buf)?;
    }
    let _ = tx.flush();
    thread::sleep(Duration::from_millis(50));
    let payload = [b'x'; PAYLOAD];
    let mut seq = vec![1_001u32; usize::from(SESSIONS)];
    let cpu0 = thread_cpu();
    while !stop.load(Ordering::Relaxed) {
        for port in 0..SESSIONS {
            let s = &mut seq[usize::from(port)];
            buf.clear();
            segment(20_000 + port, *s, Flags::ACK, &payload, &mut buf);
            *s = s.wrapping_add(PAYLOAD as u32);
            tx.send(&buf)?;
        }
        let _ = tx.flush();
        sent += u64::from(SESSIONS);
    }
    Ok((sent, thread_cpu() - cpu0))
}

/// The target's side, made up: SYN-ACKs for SYNs, one ACK per session for the data of a round.
#[derive(Default)]
struct FakeTarget {
    /// Per replicated session (its endpoint at the target): highest sequence number sent + 1.
    acked: HashMap<SocketAddr, Seq>,
    answers: Vec<Vec<u8>>,
}

impl FakeTarget {
    fn saw(&mut self, p: &[u8]) {
        let Ok(t) = TcpPacket::parse(p) else { return };
        let flags = t.flags();
        if flags.syn() {
            let mut out = Vec::new();
            let builder = PacketBuilder {
                window_scale: t.window_scale().map(|_| 7),
                ..PacketBuilder::default()
            };
            let ack = t.seq() + 1;
            builder.emit(
                t.dst(),
                t.src(),
                50_000,
                ack.0,
                Flags::SYN | Flags::ACK,
                &[],
                &mut out,
            );
            self.answers.push(out);
        } else if t.payload_len() > 0 {
            self.acked.insert(t.src(), t.seq() + t.payload_len() as u32);
        }
    }

    fn answer(&mut self, now: Instant, core: &mut Replicator) {
        for a in self.answers.drain(..) {
            core.handle_response(now, &a);
        }
        let mut out = Vec::with_capacity(64);
        for (&local, &ack) in &self.acked {
            out.clear();
            let target = SocketAddr::new(IpAddr::V4(TARGET), 80);
            PacketBuilder::default().emit(target, local, 50_001, ack.0, Flags::ACK, &[], &mut out);
            core.handle_response(now, &out);
        }
        self.acked.clear();
    }
}

/// Builds the lab: the client's frames for the phantom address go to the online host, and the
/// target's link on the online host discards everything it is given.
fn build_lab() -> anyhow::Result<Lab> {
    lab::netlab::cleanup_orphans("tcpps");
    let lab = Lab::create(&LabSpec::unique("tcpps")).context("building the lab")?;
    let (cli, onl) = (lab.ns_client().to_string(), lab.ns_online().to_string());
    // The online host's MAC, for the client's neighbour entry of the phantom address.
    let link = lab.sh(&onl, &["ip", "-o", "link", "show", Lab::IFACE])?;
    let mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .context("no MAC address on the online host")?
        .to_string();
    let phantom = PHANTOM.to_string();
    lab.sh(
        &cli,
        &[
            "ip",
            "neigh",
            "replace",
            &phantom,
            "lladdr",
            &mac,
            "dev",
            Lab::IFACE,
        ],
    )?;
    // The target's link: a veth inside the online host whose queue discards every frame (the
    // `blackhole` qdisc comes with every kernel that has qdiscs; the dummy driver would be the
    // other clean sink, but not every kernel has it). Without IPv6 on it, the host itself sends
    // nothing there (no neighbour discovery), so the queue counts the pipeline's packets only.
    let target = TARGET.to_string();
    let no_ipv6 = |dev: &str| format!("net.ipv6.conf.{dev}.disable_ipv6=1");
    for cmd in [
        &[
            "ip", "link", "add", SINK, "type", "veth", "peer", "name", "tsink1",
        ][..],
        &["sysctl", "-q", "-w", &no_ipv6(SINK)],
        &["sysctl", "-q", "-w", &no_ipv6("tsink1")],
        &["ip", "link", "set", SINK, "up"],
        &["ip", "link", "set", "tsink1", "up"],
        &["tc", "qdisc", "add", "dev", SINK, "root", "blackhole"],
        &["ip", "route", "add", "198.18.7.0/24", "dev", SINK],
        &[
            "ip",
            "neigh",
            "replace",
            &target,
            "lladdr",
            "02:00:00:00:07:30",
            "dev",
            SINK,
        ],
    ] {
        lab.sh(&onl, cmd)?;
    }
    Ok(lab)
}

/// Packets the target's link took so far: its queue's drop counter (the `blackhole` qdisc drops
/// all it is given), as `tc -s qdisc` shows it.
fn sink_count(lab: &Lab) -> anyhow::Result<u64> {
    let text = lab.sh(lab.ns_online(), &["tc", "-s", "qdisc", "show", "dev", SINK])?;
    qdisc_dropped(&text).with_context(|| format!("no drop count in `tc -s qdisc`: {text}"))
}

/// The `dropped N` of `tc -s qdisc`'s output.
fn qdisc_dropped(text: &str) -> Option<u64> {
    let at = text.find("dropped ")? + "dropped ".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What the pipeline loop counted besides the core's statistics.
struct PipelineRun {
    seconds: f64,
    cpu: f64,
    send_failures: u64,
}

/// As in tcpcopy: one thread waits on the ring, handles what it holds in place, sends. Unlike
/// tcpcopy, without batches (`Replicator::begin_batch`): a batch would merge a session's
/// back-to-back small segments into fewer, larger ones, and this measures the cost per packet.
fn pipeline(
    ring: &mut RingCapture,
    sender: &mut Sender,
    core: &mut Replicator,
    seconds: u64,
    stop: &AtomicBool,
) -> anyhow::Result<PipelineRun> {
    raise_capture_priority();
    let mut target = FakeTarget::default();
    let started = Instant::now();
    let cpu0 = thread_cpu();
    let mut send_failures = 0u64;
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let mut now = Instant::now();
        let got = ring.poll_batch(Duration::from_millis(100), |p| {
            if p.pkttype != libc::PACKET_OUTGOING {
                core.handle_capture(now, p.data);
            }
        })?;
        if got == 0 {
            continue;
        }
        now = Instant::now();
        core.handle_timeout(now);
        let sent =
            core.drain_transmits_all(|packets| sender.send_all(packets.inspect(|p| target.saw(p))));
        if let Err(f) = sent {
            send_failures += f.count;
        }
        core.drain_routes(|_| {});
        target.answer(now, core);
    }
    Ok(PipelineRun {
        seconds: started.elapsed().as_secs_f64(),
        cpu: thread_cpu() - cpu0,
        send_failures,
    })
}

/// Runs the microbenchmark for `seconds` and prints its figures.
pub fn run_pps(seconds: u64, threaded_receive: bool, send_layer: SendLayer) -> anyhow::Result<()> {
    lab::netlab::require_root("the harness")?;
    // With NAPI on the veths the generator outruns the receive thread: the veth's receive ring
    // overflows and drops segments before any capture sees them (tcpdump shows the same holes),
    // and a generator never retransmits, so the sessions stall. Not a measurement of tcpcopy.
    anyhow::ensure!(
        !threaded_receive,
        "--pps: --threaded-receive is not supported (the generator overruns the veth's receive ring)"
    );
    let stop_signal = stop_on_signals()?;
    let lab = build_lab()?;
    let (cli, onl) = (lab.ns_client().to_string(), lab.ns_online().to_string());
    let mut cfg = Config::new(vec![Rule {
        online_addr: Some(IpAddr::V4(PHANTOM)),
        online_port: 80,
        target: SocketAddr::new(IpAddr::V4(TARGET), 80),
    }]);
    cfg.no_wait = true;
    let filter = TcpFilter {
        dst_ports: vec![80],
        dst_addrs: vec![PHANTOM],
        drop_outgoing: true,
        ..TcpFilter::default()
    };
    let mut ring = lab.run_in(&onl, || {
        RingCapture::open(&RingConfig {
            interface: Some(Lab::IFACE.into()),
            filter: filter.compile(),
            ignore_outgoing: true,
            ..RingConfig::default()
        })
    })?;
    let via = match send_layer {
        SendLayer::Ip => SendVia::Kernel,
        SendLayer::Link => SendVia::LinkLayer { device: None },
    };
    let mut sender = lab.run_in(&onl, || Sender::open(&via))?;
    // No target packet exists here (its answers are made up in process); the check that none
    // reaches the client is the one every replicating run makes.
    let sniffer = Sniffer::start(&cli, IpAddr::V4(TARGET), IpAddr::V4(Lab::ONLINE_IP))?;
    let stop = Arc::new(AtomicBool::new(false));
    println!("tcpcopy-bench --pps: {SESSIONS} sessions of {PAYLOAD}-byte segments from the client, captured on the online host, rewritten, sent to a device whose queue discards them (--send-layer {}); {seconds} s", send_layer.name());
    let generator = {
        let stop = stop.clone();
        thread::spawn(move || lab::run_in_ns(&cli, || generate(&stop)))
    };
    let sink0 = sink_count(&lab)?;
    let mut core = Replicator::new(cfg);
    // On a thread in the online host's namespace, like the ring and the sender: the sender opens
    // a socket per destination when it first sends there, in the namespace of the thread that
    // sends (from this thread's, the root namespace, its packets would leave the lab).
    let run = lab.run_in(&onl, || {
        pipeline(&mut ring, &mut sender, &mut core, seconds, &stop_signal)
    });
    stop.store(true, Ordering::Relaxed);
    let run = run?;
    let at_target = sink_count(&lab)? - sink0;
    let (generated, gen_cpu) = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    let (leaked, _) = sniffer.finish()?;
    let st = core.stats();
    let secs = run.seconds;
    let per_packet = run.cpu * 1e6 / st.captured_packets.max(1) as f64;
    println!();
    println!(
        "generator   {:>10.0} packets/s ({} in all, {:.0}% of a core)",
        generated as f64 / secs,
        generated,
        gen_cpu * 100.0 / secs
    );
    println!(
        "captured    {:>10.0} packets/s  (ring drops {})",
        st.captured_packets as f64 / secs,
        ring.stats().map(|s| s.drops).unwrap_or(0)
    );
    println!(
        "sent        {:>10.0} packets/s  (send failures {}{})",
        st.packets_sent as f64 / secs,
        run.send_failures,
        match &sender {
            Sender::Link(s) => format!(
                "; {} at the link layer, {} routed",
                s.counts().link,
                s.counts().routed
            ),
            Sender::Ip(_) => String::new(),
        }
    );
    println!(
        "at target   {:>10.0} packets/s  ({at_target} in all, counted by the target link's queue)",
        at_target as f64 / secs
    );
    println!(
        "pipeline CPU: {:.0}% of a core (capture, core and send on one thread); {:.2} us per captured packet, so one core would carry {:.0} packets/s",
        run.cpu * 100.0 / secs,
        per_packet,
        1e6 / per_packet.max(1e-3)
    );
    println!("(the capture ceiling of this kind of machine is about 1.5 M packets/s)");
    println!("client isolation: {leaked} target packets reached the client");
    // Each session here is one request that never ends, so the request counts and loss say
    // nothing; bytes online and target do.
    println!("core (one endless request per session: compare bytes, not requests): {st}");
    anyhow::ensure!(leaked == 0, "target packets reached the client namespace");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_count_is_read_from_tc_s_qdisc() {
        let text = "qdisc blackhole 8001: root refcnt 2 \n Sent 0 bytes 0 pkt (dropped 1234567, overlimits 0 requeues 0) \n backlog 0b 0p requeues 0\n";
        assert_eq!(qdisc_dropped(text), Some(1_234_567));
        assert_eq!(qdisc_dropped("qdisc noqueue 0: root refcnt 2\n"), None);
    }
}
