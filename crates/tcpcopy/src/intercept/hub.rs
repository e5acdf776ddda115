//! What intercept's threads share: the tcpcopy connections' writers, the route table (a
//! [`Router`], whose rules live in `protocol::routing`) and the counters. The capture threads
//! hand it batches of responses ([`Hub::dispatch`]), which it parses, routes and delivers; the
//! connection threads tell it about connections and their routes. One lock guards the table and
//! the writers; a capture thread takes it once per batch.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::routing::{ConnId, Destination, Owner, Router};
use protocol::ResponseBatch;
use wire::TcpPacket;

use super::conn::ConnOut;

/// Routes are keyed by endpoints remote clients choose: a seeded fast hash (foldhash).
type RouteTable = Router<foldhash::fast::RandomState>;

struct HubState {
    /// The write side of every connection the router knows.
    outs: HashMap<ConnId, Arc<ConnOut>>,
    router: RouteTable,
}

/// A capture thread's buffers for [`Hub::dispatch`], reused from batch to batch.
#[derive(Default)]
pub(super) struct Scratch {
    per_conn: HashMap<ConnId, (ResponseBatch, Vec<u8>)>,
    everyone: ResponseBatch,
    everyone_frames: Vec<u8>,
}

/// Connections and routes, shared by all threads.
pub struct Hub {
    state: Mutex<HubState>,
    next_conn: AtomicU64,
    /// Packets the capture ring had no room for (kernel count).
    pub capture_drops: Arc<AtomicU64>,
    pub responses: AtomicU64,
    pub routed: AtomicU64,
    pub broadcast: AtomicU64,
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
    /// Why a capture thread ended the run.
    failed: Mutex<Option<String>>,
}

impl Hub {
    /// A hub whose routes live `route_timeout` past their last use.
    pub fn new(route_timeout: Duration) -> Hub {
        Hub {
            state: Mutex::new(HubState {
                outs: HashMap::new(),
                router: Router::new(route_timeout),
            }),
            next_conn: AtomicU64::new(0),
            capture_drops: Arc::default(),
            responses: AtomicU64::new(0),
            routed: AtomicU64::new(0),
            broadcast: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            failed: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panicking thread cannot leave the maps half-updated (each update is a connection
        // added or removed with its writer, or routes inserted), so a poisoned lock is still
        // usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A welcomed connection: numbers it, and routes to `out` from now on.
    pub(super) fn connect(&self, out: Arc<ConnOut>, owner: Owner) -> ConnId {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut st = self.lock();
        st.outs.insert(id, out);
        st.router.connect(id, owner);
        id
    }

    /// Connection `id` announced these client endpoints.
    pub(super) fn announce(&self, id: ConnId, routes: Vec<SocketAddr>) {
        let now = Instant::now();
        self.lock().router.announce(id, routes, now);
    }

    /// Connection `id` is gone, and its routes with it.
    pub(super) fn disconnect(&self, id: ConnId) {
        let mut st = self.lock();
        st.router.disconnect(id);
        st.outs.remove(&id);
    }

    /// Forgets the routes unused for the route timeout.
    pub(super) fn expire_routes(&self) {
        let now = Instant::now();
        self.lock().router.expire(now);
    }

    /// A capture thread cannot go on: the run ends with `why`.
    pub(super) fn fail(&self, why: String) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
    }

    /// Why a capture thread ended the run, if one did.
    pub(super) fn take_failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Routes one batch of response packets to their owners' connections. `scratch` keeps its
    /// buffers from batch to batch.
    pub(super) fn dispatch<'a>(
        &self,
        packets: impl Iterator<Item = &'a [u8]>,
        max_batch: usize,
        scratch: &mut Scratch,
    ) {
        let now = Instant::now();
        let mut st = self.lock();
        let HubState { outs, router } = &mut *st;
        let Scratch {
            per_conn,
            everyone,
            everyone_frames,
        } = scratch;
        if per_conn.len() > 2 * outs.len() + 16 {
            per_conn.retain(|c, _| outs.contains_key(c));
        }
        for pkt in packets {
            self.responses.fetch_add(1, Ordering::Relaxed);
            let Ok(p) = TcpPacket::parse(pkt) else {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match router.route(p.dst(), now) {
                Destination::Conn(c) => {
                    self.routed.fetch_add(1, Ordering::Relaxed);
                    let (b, frames) = per_conn.entry(c).or_default();
                    if b.push(p.headers()) >= max_batch {
                        b.finish(frames);
                    }
                }
                Destination::Everyone => {
                    self.broadcast.fetch_add(1, Ordering::Relaxed);
                    if everyone.push(p.headers()) >= max_batch {
                        everyone.finish(everyone_frames);
                    }
                }
            }
        }
        everyone.finish(everyone_frames);
        for (c, (b, frames)) in per_conn.iter_mut() {
            b.finish(frames);
            if frames.is_empty() {
                continue;
            }
            if let Some(out) = outs.get(c) {
                self.deliver(out, frames);
            }
            frames.clear();
        }
        if !everyone_frames.is_empty() {
            // Once per tcpcopy instance, not per connection (see `protocol::routing`).
            for c in router.everyone() {
                if let Some(out) = outs.get(c) {
                    self.deliver(out, everyone_frames);
                }
            }
            everyone_frames.clear();
        }
    }

    /// Sends frames to one connection: at once from the calling (capture) thread when nothing
    /// is queued, else queued for its writer thread; a full queue (a slow tcpcopy) drops and
    /// counts.
    #[inline]
    fn deliver(&self, out: &ConnOut, frames: &[u8]) {
        if !out.send(frames) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The statistics line.
    pub fn summary(&self) -> String {
        let st = self.lock();
        format!(
            "responses {} (routed {}, to all {}, malformed {}), capture drops {}, frames dropped for slow tcpcopy {}, connections {}, routes {}",
            self.responses.load(Ordering::Relaxed),
            self.routed.load(Ordering::Relaxed),
            self.broadcast.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
            self.capture_drops.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            st.router.connections(),
            st.router.routes()
        )
    }
}
