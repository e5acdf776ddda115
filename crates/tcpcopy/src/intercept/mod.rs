//! The `intercept` driver: catches the target's responses (assistant-mode capture or queue-mode
//! NFQUEUE), and streams their headers to the tcpcopy instance that owns each session.
//!
//! Threads: one per response source (`sources`: a capture ring per interface and thread, or the
//! NFQUEUE reader), the acceptor ([`run`], which also expires routes and logs statistics), a
//! reader plus a writer per tcpcopy connection (`conn`), and with `--metrics` the endpoint's
//! (which reads the hub's counters when scraped). A shared `Hub` holds the
//! connections' writers and the route table; sources lock it once per batch. Which connection
//! gets which response (the route announcements, their timeout, the fallback to every tcpcopy
//! for a response whose route is unknown) is decided by `protocol::routing`, without sockets.
//!
//! This module drives: no protocol logic lives here.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use crate::config::InterceptConfig;
use crate::metrics::{InterceptCounters, MetricsServer, Snapshot};

mod check;
mod conn;
mod hub;
mod queue_rule;
mod sources;

use hub::Hub;

/// Runs the intercept until `stop` is set.
pub fn run(cfg: &InterceptConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let hub = Arc::new(Hub::new(cfg.route_timeout));
    hub.set_clock_offset(cfg.clock_offset_ns);
    let connections = Arc::new(AtomicU64::new(0));
    let _metrics = match cfg.metrics {
        Some(addr) => Some(serve_metrics(addr, &hub, &connections)?),
        None => None,
    };
    let (ip, port) = (cfg.listen.ip(), cfg.listen.port());
    let listener =
        TcpListener::bind(cfg.listen).with_context(|| format!("cannot listen on {ip}:{port}"))?;
    listener.set_nonblocking(true)?;
    // Sources first, so that no response is missed once tcpcopy connects. In queue mode, the
    // iptables rule is removed when this returns.
    let _rule = sources::start(cfg, &hub, &stop)?;
    // Before the capabilities go: `tcpcopy check`'s own probe needs a raw socket.
    let prober = Arc::new(check::Prober::new(cfg));
    // Set up: keep only what removing the queue rule at exit needs (iptables, run from here).
    let keep: &[_] = if _rule.is_some() {
        &[netio::privilege::NET_ADMIN, netio::privilege::NET_RAW]
    } else {
        &[]
    };
    crate::plumbing::keep_capabilities(keep, netio::privilege::Scope::Exec);
    info!("listening for tcpcopy on {ip}:{port}");
    crate::plumbing::notify_ready();
    accept_loop(&listener, cfg, (&hub, &prober), &connections, &stop)?;
    info!("{}", hub.summary());
    if let Some(why) = hub.take_failure() {
        anyhow::bail!(why);
    }
    Ok(())
}

/// Takes tcpcopy connections (a thread each) until `stop` is set, expiring routes every second
/// and logging statistics every 10 s.
fn accept_loop(
    listener: &TcpListener,
    cfg: &InterceptConfig,
    (hub, prober): (&Arc<Hub>, &Arc<check::Prober>),
    connections: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut last_expiry = Instant::now();
    let mut last_stats = Instant::now();
    // Wait for connections in a poll (woken at least every 200 ms for stop, expiry and stats).
    let mut poll = mio::Poll::new().context("cannot create a poll")?;
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&listener.as_raw_fd()),
            mio::Token(0),
            mio::Interest::READABLE,
        )
        .context("cannot poll the listening socket")?;
    let mut events = mio::Events::with_capacity(8);
    let mut refusals = Refusals::default();
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("poll failed");
            }
        }
        // Edge-triggered: take every pending connection.
        while let Some(accepted) = accept_one(listener) {
            let Ok((stream, peer)) = accepted else {
                break;
            };
            if connections.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                refusals.refuse(peer);
                continue;
            }
            let hub = hub.clone();
            let door = conn::Door {
                allowed: cfg.allow.as_ref().is_none_or(|a| a.contains(&peer.ip())),
                secret: cfg.secret.clone(),
                prober: prober.clone(),
            };
            let stop = stop.clone();
            let open = OpenConnection::new(connections);
            let spawned = thread::Builder::new()
                .name(format!("conn-{peer}"))
                .spawn(move || {
                    crate::plumbing::unprivileged_thread();
                    let _open = open;
                    conn::serve(stream, peer, door, hub, stop)
                });
            if let Err(e) = spawned {
                warn!("refusing tcpcopy {peer}: cannot start a thread: {e}");
            }
        }
        if last_expiry.elapsed() >= Duration::from_secs(1) {
            hub.expire_routes();
            last_expiry = Instant::now();
        }
        if last_stats.elapsed() >= Duration::from_secs(10) {
            last_stats = Instant::now();
            info!("{}", hub.summary());
        }
    }
    Ok(())
}

/// tcpcopy connections open at most (each has two threads; one in its opening exchange has at
/// most [`crate::channel::OPENING_DEADLINE`]): a connection beyond is closed at once.
const MAX_CONNECTIONS: u64 = 256;

/// Connections refused for [`MAX_CONNECTIONS`]: logged once a second at most, with how many.
#[derive(Default)]
struct Refusals {
    logged: Option<Instant>,
    unlogged: u64,
}

impl Refusals {
    fn refuse(&mut self, peer: SocketAddr) {
        self.unlogged += 1;
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            warn!(
                "refusing tcpcopy {peer}: {MAX_CONNECTIONS} connections open, the limit ({} refused since the last line)",
                self.unlogged
            );
            self.logged = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

/// Serves `--metrics` from the hub's counters, read at scrape time.
fn serve_metrics(
    addr: SocketAddr,
    hub: &Arc<Hub>,
    connections: &Arc<AtomicU64>,
) -> anyhow::Result<MetricsServer> {
    let (hub, connections) = (hub.clone(), connections.clone());
    let server = MetricsServer::start(
        addr,
        Arc::new(move || Snapshot {
            intercept: Some(InterceptCounters {
                responses: hub.responses.load(Ordering::Relaxed),
                routed: hub.routed.load(Ordering::Relaxed),
                broadcast: hub.broadcast.load(Ordering::Relaxed),
                malformed: hub.malformed.load(Ordering::Relaxed),
                capture_drops: hub.capture_drops.load(Ordering::Relaxed),
                frames_dropped: hub.dropped.load(Ordering::Relaxed),
                connections: connections.load(Ordering::Relaxed),
            }),
            ..Snapshot::default()
        }),
    )?;
    info!("metrics on http://{}/metrics", server.local_addr());
    Ok(server)
}

/// Counts a tcpcopy connection open while its thread runs (whichever way the thread ends).
struct OpenConnection(Arc<AtomicU64>);

impl OpenConnection {
    fn new(count: &Arc<AtomicU64>) -> OpenConnection {
        count.fetch_add(1, Ordering::Relaxed);
        OpenConnection(count.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The next pending connection: `None` when there is none; an error is logged (e.g. out of file
/// descriptors: the next poll tries again).
fn accept_one(listener: &TcpListener) -> Option<std::io::Result<(TcpStream, SocketAddr)>> {
    loop {
        match listener.accept() {
            Ok(conn) => return Some(Ok(conn)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            // A connection reset before it was accepted: take the next one.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
            Err(e) => {
                warn!("accept: {e}");
                thread::sleep(Duration::from_millis(100));
                return Some(Err(e));
            }
        }
    }
}
