//! intercept's side of `tcpcopy check` ([`protocol::check`]): answers a check ask with its
//! host's facts ([`crate::hostfacts`]) and, in assistant mode when asked, sends the SYN of its
//! own probe from the fake client endpoint the ask names. That probe's raw socket is opened at
//! start, while intercept still holds CAP_NET_RAW; it sends nothing but the one SYN a welcomed
//! tcpcopy's check asks for.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::check::{CheckAsk, CheckTell, FakeRoute, InterceptMode, OwnProbe, ASK_OWN_PROBE};
use tracing::{debug, info};
use wire::{Flags, SegmentRepr, Seq};

use crate::config::{InterceptConfig, ResponseSource};
use crate::hostfacts;

/// What a check needs from the running intercept: its mode and, in assistant mode, a raw
/// socket for its own probe.
pub(super) struct Prober {
    mode: InterceptMode,
    raw: Option<Mutex<netio::RawSender>>,
}

impl Prober {
    /// Opens the probe's raw socket in assistant mode (without it, a check learns that the own
    /// probe failed).
    pub(super) fn new(cfg: &InterceptConfig) -> Prober {
        let mode = match cfg.source {
            ResponseSource::Queue { .. } => InterceptMode::Queue,
            ResponseSource::Capture { .. } => InterceptMode::Assistant,
        };
        let raw = match mode {
            InterceptMode::Assistant => match netio::RawSender::open() {
                Ok(s) => Some(Mutex::new(s)),
                Err(e) => {
                    debug!("no raw socket for check probes: {e}");
                    None
                }
            },
            _ => None,
        };
        Prober { mode, raw }
    }

    /// A queue-mode prober, which needs no socket (for tests).
    #[cfg(test)]
    pub(super) fn in_queue_mode() -> Prober {
        Prober {
            mode: InterceptMode::Queue,
            raw: None,
        }
    }

    /// The facts of this host as they concern answers to `ask.from`, for the tcpcopy at `peer`.
    pub(super) fn answer(&self, ask: &CheckAsk, peer: IpAddr) -> CheckTell {
        let routes = hostfacts::routes();
        let facing = hostfacts::iface_towards(&routes, peer);
        let fake_route = match (ask.from.ip(), &facing) {
            (IpAddr::V4(fake), Some(facing)) => match hostfacts::route_for(&routes, fake) {
                None => FakeRoute::None,
                Some(r) if &r.iface == facing => FakeRoute::SameInterface,
                Some(_) => FakeRoute::OtherInterface,
            },
            _ => FakeRoute::Unknown,
        };
        let own_probe = if ask.flags & ASK_OWN_PROBE == 0 {
            OwnProbe::NotAsked
        } else {
            self.probe(ask)
        };
        info!(
            "tcpcopy {peer} checks the path from {} to {}",
            ask.from.ip(),
            ask.to
        );
        CheckTell {
            mode: self.mode,
            ip_forward: hostfacts::forwarding(ask.from.ip()),
            rp_filter: facing.as_deref().and_then(hostfacts::rp_filter),
            fake_route,
            mtu: facing.as_deref().and_then(hostfacts::mtu),
            own_probe,
        }
    }

    /// Sends the SYN of the own probe (assistant mode only: on the target, in queue mode, a
    /// probe from its own host tells nothing).
    fn probe(&self, ask: &CheckAsk) -> OwnProbe {
        let Some(raw) = &self.raw else {
            return OwnProbe::Failed;
        };
        if ask.from.is_ipv4() != ask.to.is_ipv4() {
            return OwnProbe::Failed;
        }
        let mut packet = Vec::with_capacity(64);
        syn(ask, &mut packet);
        let mut raw = raw.lock().unwrap_or_else(|p| p.into_inner());
        match raw.send_all([&packet[..]]) {
            Ok(()) => OwnProbe::Sent,
            Err(e) => {
                debug!("check probe not sent: {e:?}");
                OwnProbe::Failed
            }
        }
    }
}

/// A probe's SYN from `ask.from` to `ask.to`.
pub(crate) fn syn(ask: &CheckAsk, out: &mut Vec<u8>) {
    let isn = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos());
    SegmentRepr {
        src: ask.from,
        dst: ask.to,
        seq: Seq(isn),
        ack: Seq(0),
        flags: Flags::SYN,
        window: 64240,
        mss: Some(1460),
        window_scale: None,
        ttl: 64,
    }
    .emit(&[], out);
}
