//! `tcpcopy check [OPTIONS]`: with the options of a real run, probes the path from this host to
//! each intercept and target and names each problem with its fix, or prints "ready".
//!
//! For each intercept (`-s`, or each target in queue mode): connect and open as a run does;
//! ask for its host's facts ([`protocol::check`]) and for a probe SYN of its own from a fake
//! client endpoint (assistant mode); send this host's probe SYN from another fake client
//! endpoint (`probe`); see which answers intercept reports; connect to the target's port;
//! read this host's MTU towards the target and GRO. [`diagnose()`] judges; nothing here does.

mod diagnose;
mod probe;
mod stream;

pub use diagnose::{diagnose, verdict, Finding, Kind, Observations, Reach, TargetPort};

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Input, LiveConfig};
use probe::{Heard, InterceptLink};

/// Runs every probe and prints the findings and the verdict; true when ready.
pub fn run(cfg: &LiveConfig) -> bool {
    if let Some(settings) = &cfg.stream {
        return print_verdict(&stream::check(cfg, settings));
    }
    let mut all = Vec::new();
    let pairs = pairs(cfg);
    for (intercept, target) in &pairs {
        let o = observe(cfg, *intercept, *target);
        let findings = diagnose(&o);
        if pairs.len() > 1 {
            println!("intercept {intercept}, target {target}:");
        }
        for f in &findings {
            println!("{f}");
        }
        all.extend(findings);
    }
    print_verdict(&all)
}

/// Prints the verdict's last line (the findings are printed already); true when ready.
fn print_verdict(all: &[Finding]) -> bool {
    let (ready, text) = verdict(all);
    print!(
        "{}",
        text.lines()
            .last()
            .map(|l| format!("{l}\n"))
            .unwrap_or(text)
    );
    ready
}

/// Each intercept with the target it answers for: the one on its host (queue mode), else the
/// first rule's.
fn pairs(cfg: &LiveConfig) -> Vec<(SocketAddr, SocketAddr)> {
    let targets: Vec<SocketAddr> = cfg.core.rules.iter().map(|r| r.target).collect();
    let mut out = Vec::new();
    for i in &cfg.intercepts {
        let t = targets
            .iter()
            .find(|t| t.ip() == i.ip())
            .or(targets.first())
            .copied();
        if let Some(t) = t {
            if !out.contains(&(*i, t)) {
                out.push((*i, t));
            }
        }
    }
    out
}

fn observe(cfg: &LiveConfig, intercept: SocketAddr, target: SocketAddr) -> Observations {
    let fakes = &cfg.core.fake_clients;
    let fake = fakes
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(probe::DOC_ADDR));
    let (reach, link) = probe::open(intercept, cfg.secret.as_ref());
    let (heard, ours_answered) = match link {
        Some(link) => exchange(link, fake, target),
        None => (Heard::default(), Ok(false)),
    };
    let port = ports();
    let theirs = SocketAddr::new(fake, port.1);
    let capture_dev = match &cfg.input {
        Input::Capture {
            interface: Some(dev),
        } => Some(dev.clone()),
        _ => probe::local_mtu(target.ip()).map(|(dev, _)| dev),
    };
    Observations {
        intercept,
        target,
        fake,
        fake_range: diagnose::covering_prefix(fakes),
        reach,
        tell: heard.tell,
        target_port: target_port(&heard, target, SocketAddr::new(fake, port.0)),
        ours_answered,
        theirs_answered: heard
            .tell
            .filter(|t| t.own_probe == protocol::check::OwnProbe::Sent)
            .map(|_| heard.answered.iter().any(|(to, _)| *to == theirs)),
        local_mtu: probe::local_mtu(target.ip()),
        mtu_option: cfg.core.mtu,
        gro: capture_dev.and_then(|d| probe::gro(&d).map(|on| (d, on))),
    }
}

/// Whether the target's service takes connections: from this host, unless intercept runs on
/// the target (queue mode), which drops the answers to this host too; then as the answer to the
/// probe (from `ours`) says.
fn target_port(heard: &Heard, target: SocketAddr, ours: SocketAddr) -> TargetPort {
    if !heard
        .tell
        .is_some_and(|t| t.mode == protocol::check::InterceptMode::Queue)
    {
        return probe::target_port(target);
    }
    match heard.answered.iter().find(|(to, _)| *to == ours) {
        Some((_, a)) if a.rst => {
            TargetPort::Closed("it resets a connection (nothing listens)".into())
        }
        Some(_) => TargetPort::Open,
        None => TargetPort::Unknown,
    }
}

/// The probe's two client ports (ours, intercept's), the same for the whole check.
fn ports() -> (u16, u16) {
    static PORTS: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *PORTS.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let base = 40_000 + ((nanos ^ std::process::id()) % 20_000) as u16;
        (base, base + 1)
    })
}

/// Asks intercept, sends our probe, listens for both answers, resets what answered.
fn exchange(
    mut link: InterceptLink,
    fake: IpAddr,
    target: SocketAddr,
) -> (Heard, Result<bool, String>) {
    let (ours, theirs) = (
        SocketAddr::new(fake, ports().0),
        SocketAddr::new(fake, ports().1),
    );
    let mut heard = Heard::default();
    let (tell_wait, answer_wait) = probe::waits();
    if !link.ask(ours, theirs, target) {
        heard.closed = true;
        return (heard, Err("the connection to intercept broke".into()));
    }
    link.listen(&mut heard, tell_wait, |h| h.tell.is_some());
    let mut raw = match netio::RawSender::open() {
        Ok(raw) => raw,
        Err(e) => return (heard, Err(format!("cannot open a raw socket: {e}"))),
    };
    let isn = wire::Seq(u32::from(ours.port()) << 12);
    if let Err(e) = raw.send_all([&probe::segment(ours, target, isn, false)[..]]) {
        return (
            heard,
            Err(format!("the probe could not be sent: {}", e.last)),
        );
    }
    let answered = |h: &Heard, to: SocketAddr| h.answered.iter().any(|(a, _)| *a == to);
    let own_sent = heard
        .tell
        .is_some_and(|t| t.own_probe == protocol::check::OwnProbe::Sent);
    link.listen(&mut heard, answer_wait, |h| {
        answered(h, ours) && (!own_sent || answered(h, theirs))
    });
    // The target keeps a half-open connection for each answered probe: reset it.
    let resets: Vec<Vec<u8>> = heard
        .answered
        .iter()
        .filter(|(_, a)| !a.rst)
        .map(|(to, a)| probe::segment(*to, a.from, a.ack, true))
        .collect();
    let _ = raw.send_all(resets.iter().map(|p| &p[..]));
    let ours_answered = answered(&heard, ours);
    (heard, Ok(ours_answered))
}
