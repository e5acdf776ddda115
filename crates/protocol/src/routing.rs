//! Intercept's routing rules, sans-IO: which tcpcopy connection gets each of the target's
//! responses. It takes the connections as they come and go, the routes each announces
//! ([`crate::Message::Routes`]: the client endpoints of its sessions) and the destination of each
//! response, with the time; it answers with a [`Destination`] and forgets routes that saw no
//! traffic for the route timeout. No sockets, clock or threads: the intercept driver owns those
//! (and the lock around a [`Router`] that several capture threads share).
//!
//! The rules:
//! - a response goes to the connection that last announced its destination (the session's
//!   client endpoint, as the target sees it); each response refreshes that route;
//! - a response whose route is unknown (its announcement may still be in flight, or the session
//!   is not replicated here) goes to every tcpcopy instance, once each: to one connection per
//!   [`Owner`], as a tcpcopy ignores sessions that are not its own, and a duplicated SYN-ACK
//!   would make it send a second handshake ACK, which a target answering with SYN cookies can
//!   reset;
//! - a route unused for the route timeout is forgotten ([`Router::expire`]);
//! - a connection that goes away takes its routes with it, and its instance is served by
//!   another of its connections, if it has one.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A tcpcopy connection, as the driver numbers them (never reused while connected).
pub type ConnId = u64;

/// The tcpcopy instance behind a connection: its host and the instance id of its hello. One
/// instance opens several connections (`-C`, and one set per capture thread).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub host: IpAddr,
    pub instance: u32,
}

/// Where one response goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Destination {
    /// To this connection only.
    Conn(ConnId),
    /// Route unknown: to every connection of [`Router::everyone`].
    Everyone,
}

/// The route table and the connections it routes to. `S` hashes the route keys, which remote
/// clients choose (intercept uses a seeded fast hash).
pub struct Router<S = RandomState> {
    /// Client endpoint -> the connection that announced it, and when it was last used.
    routes: HashMap<SocketAddr, (ConnId, Instant), S>,
    conns: HashMap<ConnId, Owner>,
    /// One connection per owner (the earliest connected of its connections), in the order the
    /// owners came.
    everyone: Vec<ConnId>,
    timeout: Duration,
}

impl<S: BuildHasher + Default> Router<S> {
    /// An empty table whose routes live `timeout` past their last use.
    pub fn new(timeout: Duration) -> Self {
        Router {
            routes: HashMap::default(),
            conns: HashMap::new(),
            everyone: Vec::new(),
            timeout,
        }
    }

    /// A tcpcopy connection was welcomed.
    pub fn connect(&mut self, id: ConnId, owner: Owner) {
        self.conns.insert(id, owner);
        if !self
            .everyone
            .iter()
            .any(|c| self.conns.get(c) == Some(&owner))
        {
            self.everyone.push(id);
        }
    }

    /// A tcpcopy connection went away: its routes go too, and its owner is served by another of
    /// its connections, if any.
    pub fn disconnect(&mut self, id: ConnId) {
        let Some(owner) = self.conns.remove(&id) else {
            return;
        };
        self.routes.retain(|_, (c, _)| *c != id);
        if let Some(at) = self.everyone.iter().position(|&c| c == id) {
            let next = self
                .conns
                .iter()
                .filter(|(_, o)| **o == owner)
                .map(|(&c, _)| c)
                .min();
            match next {
                Some(c) => self.everyone[at] = c,
                None => {
                    self.everyone.remove(at);
                }
            }
        }
    }

    /// Connection `id` announced these client endpoints: their responses are its, from `now`.
    pub fn announce(
        &mut self,
        id: ConnId,
        routes: impl IntoIterator<Item = SocketAddr>,
        now: Instant,
    ) {
        for r in routes {
            self.routes.insert(r, (id, now));
        }
    }

    /// Where a response to `dst` goes; its route, if known, counts as used at `now`.
    #[inline]
    pub fn route(&mut self, dst: SocketAddr, now: Instant) -> Destination {
        let owner = self.routes.get_mut(&dst).map(|r| {
            r.1 = now;
            r.0
        });
        match owner.filter(|c| self.conns.contains_key(c)) {
            Some(c) => Destination::Conn(c),
            None => Destination::Everyone,
        }
    }

    /// Whether a tcpcopy announced `dst` as one of its sessions' client endpoints.
    #[inline]
    pub fn knows(&self, dst: SocketAddr) -> bool {
        self.routes.contains_key(&dst)
    }

    /// The connections a [`Destination::Everyone`] response goes to: one per tcpcopy instance.
    #[inline]
    pub fn everyone(&self) -> &[ConnId] {
        &self.everyone
    }

    /// Whether `id` is connected.
    #[cfg(test)]
    fn is_connected(&self, id: ConnId) -> bool {
        self.conns.contains_key(&id)
    }

    /// Forgets the routes unused for the route timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.timeout;
        self.routes
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < timeout);
    }

    /// Connections now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Routes now.
    pub fn routes(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(host: u8, instance: u32) -> Owner {
        Owner {
            host: IpAddr::from([198, 18, 0, host]),
            instance,
        }
    }

    fn client(port: u16) -> SocketAddr {
        SocketAddr::from(([198, 19, 0, 1], port))
    }

    fn router() -> (Router, Instant) {
        (Router::new(Duration::from_secs(120)), Instant::now())
    }

    #[test]
    fn a_route_sends_its_sessions_responses_to_the_connection_that_announced_it() {
        let (mut r, t0) = router();
        r.connect(1, owner(20, 7));
        r.connect(2, owner(21, 9));
        r.announce(2, [client(5000), client(5001)], t0);
        assert_eq!(r.route(client(5000), t0), Destination::Conn(2));
        assert_eq!(r.route(client(5001), t0), Destination::Conn(2));
        // A later announcement (a session moved to another connection) wins.
        r.announce(1, [client(5001)], t0);
        assert_eq!(r.route(client(5001), t0), Destination::Conn(1));
        assert_eq!(r.routes(), 2);
    }

    #[test]
    fn an_unknown_session_goes_to_every_tcpcopy_once() {
        let (mut r, t0) = router();
        assert_eq!(r.route(client(5000), t0), Destination::Everyone);
        assert!(r.everyone().is_empty(), "nobody to send to yet");
        // Two instances on one host, the first with three connections (-C 3).
        r.connect(1, owner(20, 7));
        r.connect(2, owner(20, 7));
        r.connect(3, owner(20, 8));
        r.connect(4, owner(20, 7));
        assert_eq!(r.route(client(5000), t0), Destination::Everyone);
        assert_eq!(r.everyone(), [1, 3], "one connection per instance");
    }

    #[test]
    fn routes_expire_after_the_timeout_unless_responses_use_them() {
        let (mut r, t0) = router();
        let s = Duration::from_secs;
        r.connect(1, owner(20, 7));
        r.announce(1, [client(5000), client(5001)], t0);
        // Traffic at 100 s keeps 5000's route alive; 5001's is forgotten at 120 s.
        assert_eq!(r.route(client(5000), t0 + s(100)), Destination::Conn(1));
        r.expire(t0 + s(119));
        assert_eq!(r.routes(), 2);
        r.expire(t0 + s(120));
        assert_eq!(r.routes(), 1);
        assert_eq!(r.route(client(5001), t0 + s(120)), Destination::Everyone);
        assert_eq!(r.route(client(5000), t0 + s(219)), Destination::Conn(1));
        r.expire(t0 + s(338));
        assert_eq!(r.route(client(5000), t0 + s(338)), Destination::Conn(1));
        r.expire(t0 + s(338) + s(120));
        assert_eq!(r.routes(), 0);
    }

    #[test]
    fn a_connection_that_goes_away_takes_its_routes_and_hands_its_instance_on() {
        let (mut r, t0) = router();
        r.connect(1, owner(20, 7));
        r.connect(2, owner(20, 7));
        r.connect(3, owner(21, 7));
        r.announce(1, [client(5000)], t0);
        r.announce(2, [client(5001)], t0);
        r.disconnect(1);
        assert!(!r.is_connected(1));
        assert_eq!(r.routes(), 1, "connection 1's route is gone");
        assert_eq!(r.route(client(5000), t0), Destination::Everyone);
        assert_eq!(r.route(client(5001), t0), Destination::Conn(2));
        assert_eq!(r.everyone(), [2, 3], "instance 7 on .20 is served by 2 now");
        r.disconnect(3);
        assert_eq!(r.everyone(), [2]);
        r.disconnect(3);
        assert_eq!(r.connections(), 1, "a second disconnect changes nothing");
    }

    #[test]
    fn a_route_to_a_connection_no_longer_there_is_no_route() {
        // The driver removes a connection and its routes together; an announcement that raced
        // with the removal must still not route to it.
        let (mut r, t0) = router();
        r.connect(1, owner(20, 7));
        r.disconnect(1);
        r.announce(1, [client(5000)], t0);
        assert_eq!(r.route(client(5000), t0), Destination::Everyone);
    }
}
