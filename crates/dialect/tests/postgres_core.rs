//! `--protocol postgres` through the replication core, on simulated time: scripted client
//! captures (a psql-like session with its login to the online server), a scripted PostgreSQL
//! target that checks SCRAM-SHA-256, md5 (for its own nonce and salt) and cleartext answers,
//! and the replicator in between with the PostgreSQL hook. Each test asserts what the target
//! received (its queries, never the client's authentication) and the login the core reported.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::{engine::general_purpose::STANDARD, Engine};
use dialect::postgres::md5_password;
use dialect::postgres::message::{self, CancelKey, Framed, Initial, SSL_REQUEST};
use dialect::{Credentials, Protocol};
use hmac::{Hmac, Mac};
use session::testing::segment;
use session::{Config, Login, Replicator, Rule};
use sha2::{Digest, Sha256};
use wire::{Flags, Seq, TcpPacket};

const ONLINE: &str = "198.18.0.20:5432";
const TARGET: &str = "198.18.0.30:5432";
const CLIENT: &str = "10.1.0.7:40001";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    Trust,
    Cleartext,
    Md5,
    Scram,
}

/// A PostgreSQL stand-in at the target: one connection, its login by `method` with `password`,
/// then every Query answered with CommandComplete and ReadyForQuery.
struct Target {
    method: Method,
    password: &'static str,
    isn: u32,
    rcv_nxt: Option<Seq>,
    snd_nxt: u32,
    received: Vec<u8>,
    user: Option<String>,
    scram: Option<(String, String)>,
    /// The target's view: whole frontend messages received after the startup message.
    messages: Vec<(u8, Vec<u8>)>,
    queries: Vec<String>,
    reset: bool,
    /// This connection's backend key (its BackendKeyData).
    key: CancelKey,
    /// The CancelRequest that was this connection's first packet.
    cancel: Option<CancelKey>,
}

impl Target {
    fn new(method: Method, password: &'static str) -> Target {
        Target {
            method,
            password,
            isn: 7_000_000,
            rcv_nxt: None,
            snd_nxt: 7_000_001,
            received: Vec::new(),
            user: None,
            scram: None,
            messages: Vec::new(),
            queries: Vec::new(),
            reset: false,
            key: CancelKey {
                pid: 42,
                secret: vec![1, 2, 3, 4],
            },
            cancel: None,
        }
    }

    /// One packet from the replicator; returns the target's packets.
    fn handle(&mut self, packet: &[u8]) -> Vec<Vec<u8>> {
        let p = TcpPacket::parse(packet).unwrap();
        let (me, peer) = (p.dst(), p.src());
        if p.flags().rst() {
            self.reset = true;
            return vec![];
        }
        if p.flags().syn() {
            self.rcv_nxt = Some(p.seq() + 1);
            let flags = Flags::SYN | Flags::ACK;
            return vec![segment(me, peer, self.isn, p.seq().0 + 1, flags, b"")];
        }
        let Some(rcv_nxt) = self.rcv_nxt else {
            return vec![];
        };
        if p.seq() != rcv_nxt || p.payload().is_empty() {
            return vec![];
        }
        self.received.extend_from_slice(p.payload());
        let rcv_nxt = rcv_nxt + p.payload().len() as u32;
        self.rcv_nxt = Some(rcv_nxt);
        let answer = self.answer();
        let out = segment(
            me,
            peer,
            self.snd_nxt,
            rcv_nxt.0,
            Flags::ACK | Flags::PSH,
            &answer,
        );
        self.snd_nxt += answer.len() as u32;
        vec![out]
    }

    /// Answers every whole message received so far.
    fn answer(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            if self.user.is_none() {
                let Ok(Some(len)) = message::initial_len(&self.received) else {
                    break;
                };
                if self.received.len() < len {
                    break;
                }
                let packet: Vec<u8> = self.received.drain(..len).collect();
                if let Ok(Initial::CancelRequest(key)) = Initial::parse(&packet) {
                    self.cancel = Some(key);
                    break;
                }
                let Ok(Initial::Startup(s)) = Initial::parse(&packet) else {
                    panic!("the target got a first packet that is no startup message: {packet:?}")
                };
                self.user = Some(s.user().unwrap().to_owned());
                out.extend(match self.method {
                    Method::Trust => welcome(&self.key),
                    Method::Cleartext => auth(3, &[]),
                    Method::Md5 => auth(5, &[1, 2, 3, 4]),
                    Method::Scram => auth(10, b"SCRAM-SHA-256\0\0"),
                });
                continue;
            }
            let Ok(Some(Framed { ty, body, len })) = message::split_message(&self.received) else {
                break;
            };
            let body = body.to_vec();
            self.received.drain(..len);
            self.messages.push((ty, body.clone()));
            out.extend(self.message(ty, &body));
        }
        out
    }

    fn message(&mut self, ty: u8, body: &[u8]) -> Vec<u8> {
        let user = self.user.clone().unwrap();
        match (ty, self.method) {
            (b'Q', _) => {
                self.queries
                    .push(String::from_utf8_lossy(&body[..body.len() - 1]).into());
                [frontend(b'C', b"SELECT 1\0"), frontend(b'Z', b"I")].concat()
            }
            (b'X', _) => vec![],
            (b'p', Method::Cleartext) => {
                if &body[..body.len() - 1] == self.password.as_bytes() {
                    welcome(&self.key)
                } else {
                    refusal()
                }
            }
            (b'p', Method::Md5) => {
                let expected = md5_password(&user, self.password, [1, 2, 3, 4]);
                if &body[..body.len() - 1] == expected.as_bytes() {
                    welcome(&self.key)
                } else {
                    refusal()
                }
            }
            (b'p', Method::Scram) if self.scram.is_none() => {
                let client_first = std::str::from_utf8(&body[18..]).unwrap();
                let bare = client_first.strip_prefix("n,,").unwrap().to_owned();
                let nonce = bare.split(',').find_map(|a| a.strip_prefix("r=")).unwrap();
                let server_first = format!(
                    "r={nonce}TARGET,s={},i=4096",
                    STANDARD.encode(b"target-salt")
                );
                self.scram = Some((bare, server_first.clone()));
                auth(11, server_first.as_bytes())
            }
            (b'p', Method::Scram) => {
                let (bare, server_first) = self.scram.clone().unwrap();
                match scram_check(self.password, &bare, &server_first, body) {
                    Some(server_final) => {
                        [auth(12, server_final.as_bytes()), welcome(&self.key)].concat()
                    }
                    None => refusal(),
                }
            }
            (ty, method) => panic!("the target got message {:?} with {method:?}", ty as char),
        }
    }
}

/// The server's check of a SCRAM client-final message; the server-final message if it holds.
fn scram_check(
    password: &str,
    bare: &str,
    server_first: &str,
    client_final: &[u8],
) -> Option<String> {
    let hmac = |key: &[u8], data: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    };
    let client_final = std::str::from_utf8(client_final).unwrap();
    let (without_proof, proof) = client_final.split_once(",p=").unwrap();
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), b"target-salt", 4096, &mut salted);
    let stored_key = Sha256::digest(hmac(&salted, b"Client Key"));
    let signature = hmac(&stored_key, auth_message.as_bytes());
    let proof = STANDARD.decode(proof).unwrap();
    let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
    (Sha256::digest(&client_key) == stored_key).then(|| {
        let server_key = hmac(&salted, b"Server Key");
        format!(
            "v={}",
            STANDARD.encode(hmac(&server_key, auth_message.as_bytes()))
        )
    })
}

fn frontend(ty: u8, body: &[u8]) -> Vec<u8> {
    message::frontend(ty, body)
}

fn auth(code: u32, data: &[u8]) -> Vec<u8> {
    frontend(b'R', &[&code.to_be_bytes()[..], data].concat())
}

/// AuthenticationOk and what follows it, with the backend's `key`.
fn welcome(key: &CancelKey) -> Vec<u8> {
    let key_data = [&key.pid.to_be_bytes()[..], &key.secret].concat();
    [
        auth(0, &[]),
        frontend(b'S', b"server_version\x0015.8\0"),
        frontend(b'S', b"client_encoding\0UTF8\0"),
        frontend(b'K', &key_data),
        frontend(b'Z', b"I"),
    ]
    .concat()
}

fn refusal() -> Vec<u8> {
    frontend(b'E', b"SFATAL\0C28P01\0Mpassword authentication failed\0\0")
}

/// One captured client request: its bytes, then how many bytes the online server answered.
struct Request(Vec<u8>, u32);

/// A psql-like session as captured: SSLRequest refused online, startup, SCRAM with the online
/// server (two messages), then `queries` and Terminate.
fn captured_session(queries: &[&str]) -> Vec<Request> {
    let mut requests = vec![
        Request(message::request_code(SSL_REQUEST), 1),
        Request(message::Startup::new("app", "shop").encode(), 24),
        Request(
            message::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=onlineonline"),
            90,
        ),
        Request(
            message::sasl_response(b"c=biws,r=onlineonlineSRV,p=cHJvb2Y="),
            400,
        ),
    ];
    for q in queries {
        requests.push(Request(message::query(q), 30));
    }
    requests.push(Request(message::terminate(), 0));
    requests
}

/// What a run ended with.
struct Run {
    target: Target,
    logins: Vec<Login>,
    elapsed: Duration,
}

/// Replays `requests` (the client's, `gap` apart, from the handshake on unless `joined`)
/// through a replicator with the PostgreSQL hook and `logins`, against `target`.
fn run(requests: &[Request], joined: bool, logins: &[&str], target: Target, gap: Duration) -> Run {
    run_with(Protocol::Postgres, requests, joined, logins, target, gap)
}

/// [`run`] with the hook of `protocol`.
fn run_with(
    protocol: Protocol,
    requests: &[Request],
    joined: bool,
    logins: &[&str],
    mut target: Target,
    gap: Duration,
) -> Run {
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 5432,
        target: TARGET.parse().unwrap(),
    }]);
    // A stall waiting for an answer the target never sends shows as a 10 s run.
    cfg.response_wait = Duration::from_secs(10);
    let mut r = Replicator::new(cfg);
    let credentials = Credentials::new(logins.iter().map(|l| l.parse().unwrap()).collect());
    r.set_dialect(protocol.dialect(&credentials));
    let (client, online): (SocketAddr, SocketAddr) =
        (CLIENT.parse().unwrap(), ONLINE.parse().unwrap());
    let start = Instant::now();
    let mut captures: Vec<(Instant, Vec<u8>)> = Vec::new();
    let (mut seq, mut ack) = (1000u32, 5001u32);
    if !joined {
        captures.push((start, segment(client, online, 999, 0, Flags::SYN, b"")));
        captures.push((start, segment(client, online, seq, ack, Flags::ACK, b"")));
    }
    let mut at = start + Duration::from_millis(1);
    for Request(bytes, answer) in requests {
        captures.push((
            at,
            segment(client, online, seq, ack, Flags::ACK | Flags::PSH, bytes),
        ));
        seq += bytes.len() as u32;
        ack += answer;
        at += gap;
    }
    let mut now = start;
    let mut queue: BTreeMap<Instant, Vec<Vec<u8>>> = BTreeMap::new();
    for (at, packet) in captures {
        queue.entry(at).or_default().push(packet);
    }
    let mut logins_seen = Vec::new();
    while now < start + Duration::from_secs(5) {
        for packet in queue.remove(&now).unwrap_or_default() {
            r.handle_capture(now, &packet);
        }
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
        // The target answers at once; its answers go back within the same millisecond.
        for _ in 0..8 {
            let mut sent = Vec::new();
            r.drain_transmits(|p| sent.push(p.to_vec()));
            if sent.is_empty() {
                break;
            }
            for answer in sent.iter().flat_map(|p| target.handle(p)) {
                let head = TcpPacket::parse(&answer).unwrap().payload().to_vec();
                r.handle_response_head(now, &answer, &head);
            }
        }
        r.drain_routes(|_| {});
        r.drain_logins(|l| logins_seen.push(l.login));
        if queue.is_empty() && (target.reset || target.messages.last().is_some_and(|m| m.0 == b'X'))
        {
            break;
        }
        now += Duration::from_millis(1);
    }
    Run {
        target,
        logins: logins_seen,
        elapsed: now - start,
    }
}

fn queries(run: &Run) -> Vec<&str> {
    run.target.queries.iter().map(String::as_str).collect()
}

#[test]
fn scram_md5_cleartext_and_trust_targets_get_their_own_login_and_every_query() {
    let session = captured_session(&["SELECT 1", "UPDATE t SET n = n + 1"]);
    for method in [Method::Scram, Method::Md5, Method::Cleartext, Method::Trust] {
        for gap in [Duration::ZERO, Duration::from_millis(3)] {
            let target = Target::new(method, "app-pw");
            let run = run(&session, false, &["app:app-pw"], target, gap);
            let what = format!("{method:?}, requests {gap:?} apart");
            assert_eq!(run.logins, [Login::LoggedIn], "{what}");
            assert_eq!(
                queries(&run),
                ["SELECT 1", "UPDATE t SET n = n + 1"],
                "{what}"
            );
            let auth: Vec<_> = run.target.messages.iter().filter(|m| m.0 == b'p').collect();
            let expected = match method {
                Method::Scram => 2,
                Method::Md5 | Method::Cleartext => 1,
                Method::Trust => 0,
            };
            assert_eq!(auth.len(), expected, "{what}: the target's own login only");
            assert!(
                auth.iter()
                    .all(|m| !String::from_utf8_lossy(&m.1).contains("online")),
                "{what}: the client's SCRAM never reaches the target"
            );
            assert!(
                run.elapsed < Duration::from_millis(200),
                "{what}: {:?}",
                run.elapsed
            );
        }
    }
}

#[test]
fn a_refused_login_is_counted_and_ends_the_session() {
    let session = captured_session(&["SELECT 1"]);
    for method in [Method::Scram, Method::Md5, Method::Cleartext] {
        let target = Target::new(method, "the-real-pw");
        let run = run(
            &session,
            false,
            &["app:wrong"],
            target,
            Duration::from_millis(2),
        );
        assert_eq!(run.logins, [Login::Refused], "{method:?}");
        assert!(run.target.queries.is_empty(), "{method:?}");
        assert!(
            run.target.reset,
            "{method:?}: the session ends with a reset"
        );
    }
}

#[test]
fn a_joined_session_logs_in_before_its_first_query() {
    let session = [
        Request(message::query("INSERT INTO t VALUES (1)"), 30),
        Request(message::query("INSERT INTO t VALUES (2)"), 30),
        Request(message::terminate(), 0),
    ];
    let target = Target::new(Method::Scram, "app-pw");
    let run = run(
        &session,
        true,
        &["app:app-pw"],
        target,
        Duration::from_millis(2),
    );
    assert_eq!(run.logins, [Login::JoinedLoggedIn]);
    assert_eq!(run.target.user.as_deref(), Some("app"));
    assert_eq!(
        queries(&run),
        ["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]
    );
}

#[test]
fn a_session_using_tls_online_is_skipped() {
    let session = [
        Request(message::request_code(SSL_REQUEST), 1),
        // The TLS ClientHello, after the online server's 'S'.
        Request(vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5], 100),
    ];
    let run = run(
        &session,
        false,
        &[],
        Target::new(Method::Trust, ""),
        Duration::from_millis(2),
    );
    assert_eq!(run.logins, [Login::Tls]);
    assert!(run.target.user.is_none(), "nothing reached the target");
}

/// One client connection as captured: when it starts (its SYN) and its requests, each with the
/// online server's answer (empty: none captured).
#[derive(Clone)]
struct Connection {
    client: &'static str,
    at: Duration,
    /// Open before the capture started: no SYN captured.
    joined: bool,
    exchanges: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What a run of several connections ended with: the target's side of each (by client
/// address), the logins reported and the hook's summary line.
struct Many {
    targets: HashMap<SocketAddr, Target>,
    logins: Vec<Login>,
    summary: Option<String>,
}

/// Replays `connections` through a replicator with the PostgreSQL hook (the online server's
/// answers captured too, when `online_answers`) against one target that checks SCRAM with
/// `app-pw` and gives its n-th connection backend pid 100 + n.
fn run_many(protocol: Protocol, connections: &[Connection], online_answers: bool) -> Many {
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 5432,
        target: TARGET.parse().unwrap(),
    }]);
    cfg.response_wait = Duration::from_secs(10);
    let mut r = Replicator::new(cfg);
    let credentials = Credentials::new(vec!["app:app-pw".parse().unwrap()]);
    r.set_dialect(protocol.dialect(&credentials));
    let online: SocketAddr = ONLINE.parse().unwrap();
    let start = Instant::now();
    let mut queue: BTreeMap<Instant, Vec<Vec<u8>>> = BTreeMap::new();
    for c in connections {
        let client: SocketAddr = c.client.parse().unwrap();
        let mut at = start + c.at;
        let (mut seq, mut ack) = (1000u32, 5001u32);
        let mut push = |at: Instant, p: Vec<u8>| queue.entry(at).or_default().push(p);
        if !c.joined {
            push(at, segment(client, online, 999, 0, Flags::SYN, b""));
        }
        for (request, answer) in &c.exchanges {
            at += Duration::from_millis(2);
            let flags = Flags::ACK | Flags::PSH;
            push(at, segment(client, online, seq, ack, flags, request));
            seq += request.len() as u32;
            if online_answers && !answer.is_empty() {
                push(at, segment(online, client, ack, seq, flags, answer));
            }
            ack += answer.len() as u32;
        }
    }
    let mut targets: HashMap<SocketAddr, Target> = HashMap::new();
    let mut logins = Vec::new();
    let mut now = start;
    while now < start + Duration::from_millis(400) {
        for packet in queue.remove(&now).unwrap_or_default() {
            r.handle_capture(now, &packet);
        }
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
        }
        for _ in 0..8 {
            let mut sent = Vec::new();
            r.drain_transmits(|p| sent.push(p.to_vec()));
            if sent.is_empty() {
                break;
            }
            for p in &sent {
                let n = targets.len() as u32;
                let target = targets
                    .entry(TcpPacket::parse(p).unwrap().src())
                    .or_insert_with(|| {
                        let mut t = Target::new(Method::Scram, "app-pw");
                        t.key.pid = 100 + n;
                        t
                    });
                for answer in target.handle(p) {
                    let head = TcpPacket::parse(&answer).unwrap().payload().to_vec();
                    r.handle_response_head(now, &answer, &head);
                }
            }
        }
        r.drain_routes(|_| {});
        r.drain_logins(|l| logins.push(l.login));
        now += Duration::from_millis(1);
    }
    Many {
        targets,
        logins,
        summary: r.dialect_summary(),
    }
}

/// The online server's answers to a psql-like login whose backend has `key`.
fn online_login(session: Vec<Request>, key: &CancelKey) -> Vec<(Vec<u8>, Vec<u8>)> {
    let answers = [
        b"N".to_vec(),
        auth(10, b"SCRAM-SHA-256\0\0"),
        auth(11, b"r=onlineonlineSRV,s=c2FsdA==,i=4096"),
        [auth(12, b"v=c2lnbmF0dXJl"), welcome(key)].concat(),
    ];
    let mut answers = answers.into_iter();
    session
        .into_iter()
        .map(|Request(bytes, _)| (bytes, answers.next().unwrap_or_default()))
        .collect()
}

#[test]
fn a_cancel_request_reaches_the_target_with_the_targets_backend_key() {
    let online_key = CancelKey {
        pid: 9001,
        secret: vec![5, 6, 7, 8],
    };
    let sleeper = Connection {
        client: "10.1.0.7:40001",
        at: Duration::ZERO,
        joined: false,
        exchanges: online_login(captured_session(&["SELECT pg_sleep(30)"]), &online_key),
    };
    // psql's cancel on Ctrl-C: a new connection, the online backend's key.
    let cancel = Connection {
        client: "10.1.0.7:40002",
        at: Duration::from_millis(100),
        joined: false,
        exchanges: vec![(online_key.cancel_request(), vec![])],
    };
    // A cancel for a backend no session was seen to have.
    let stranger = CancelKey {
        pid: 9001,
        secret: vec![0, 0, 0, 0],
    };
    let unknown = Connection {
        client: "10.1.0.7:40003",
        at: Duration::from_millis(120),
        joined: false,
        exchanges: vec![(stranger.cancel_request(), vec![])],
    };
    let cases = [
        (Protocol::Postgres, true),
        (Protocol::Postgres, false),
        (Protocol::Auto, true),
    ];
    for (protocol, online_answers) in cases {
        let connections = [sleeper.clone(), cancel.clone(), unknown.clone()];
        let run = run_many(protocol, &connections, online_answers);
        let what = format!("{protocol}, online answers captured: {online_answers}");
        let target = |client: &str| &run.targets[&client.parse::<SocketAddr>().unwrap()];
        let sleeping = target(sleeper.client);
        assert_eq!(sleeping.queries, ["SELECT pg_sleep(30)"], "{what}");
        assert_eq!(run.logins[0], Login::LoggedIn, "{what}");
        // The online key never reaches the target; the cancel goes with the target's own.
        let sent: Vec<_> = run
            .targets
            .values()
            .filter_map(|t| t.cancel.clone())
            .collect();
        let not_sent = run.targets.get(&unknown.client.parse().unwrap());
        assert!(
            not_sent.is_none_or(|t| t.cancel.is_none() && t.user.is_none()),
            "{what}"
        );
        if online_answers {
            assert_eq!(sent, std::slice::from_ref(&sleeping.key), "{what}");
            assert_eq!(
                run.logins[1..],
                [Login::Unsupported],
                "{what}: the unknown one"
            );
            assert_eq!(
                run.summary.as_deref(),
                Some(
                    "postgres cancel requests: 1 sent with the target's backend key, 1 for a \
                     backend whose target key was not known (not sent)"
                ),
                "{what}"
            );
        } else {
            assert!(sent.is_empty(), "{what}: {sent:?}");
            assert_eq!(
                run.logins[1..],
                [Login::Unsupported, Login::Unsupported],
                "{what}"
            );
            assert!(
                run.summary.as_deref().unwrap().contains(": 0 sent with"),
                "{what}"
            );
        }
    }
}

#[test]
fn protocol_auto_finds_postgresql_sessions_by_their_first_packet() {
    let session = captured_session(&["SELECT 1", "UPDATE t SET n = n + 1"]);
    for method in [Method::Scram, Method::Md5, Method::Trust] {
        for gap in [Duration::ZERO, Duration::from_millis(3)] {
            let target = Target::new(method, "app-pw");
            let run = run_with(
                Protocol::Auto,
                &session,
                false,
                &["app:app-pw"],
                target,
                gap,
            );
            let what = format!("{method:?}, requests {gap:?} apart");
            assert_eq!(run.logins, [Login::LoggedIn], "{what}");
            assert_eq!(
                queries(&run),
                ["SELECT 1", "UPDATE t SET n = n + 1"],
                "{what}"
            );
            assert!(
                run.target
                    .messages
                    .iter()
                    .all(|m| !String::from_utf8_lossy(&m.1).contains("online")),
                "{what}: the client's SCRAM never reaches the target"
            );
        }
    }
    // Found by its SSLRequest: a session using TLS online is skipped.
    let tls = [
        Request(message::request_code(SSL_REQUEST), 1),
        Request(vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5], 100),
    ];
    let target = Target::new(Method::Trust, "");
    let run = run_with(
        Protocol::Auto,
        &tls,
        false,
        &[],
        target,
        Duration::from_millis(2),
    );
    assert_eq!(run.logins, [Login::Tls]);
    assert!(run.target.user.is_none(), "nothing reached the target");
}

#[test]
fn protocol_auto_logs_in_a_joined_session_of_a_server_found_to_be_postgresql() {
    let key = CancelKey {
        pid: 9001,
        secret: vec![5, 6, 7, 8],
    };
    let first = Connection {
        client: "10.1.0.7:40001",
        at: Duration::ZERO,
        joined: false,
        exchanges: online_login(captured_session(&["SELECT 1"]), &key),
    };
    let joined = Connection {
        client: "10.1.0.8:40002",
        at: Duration::from_millis(100),
        joined: true,
        exchanges: vec![
            (message::query("INSERT INTO t VALUES (1)"), vec![0; 30]),
            (message::query("INSERT INTO t VALUES (2)"), vec![0; 30]),
        ],
    };
    let run = run_many(Protocol::Auto, &[first, joined.clone()], true);
    assert_eq!(run.logins, [Login::LoggedIn, Login::JoinedLoggedIn]);
    let target = &run.targets[&joined.client.parse::<SocketAddr>().unwrap()];
    assert_eq!(target.user.as_deref(), Some("app"));
    assert_eq!(
        target.queries,
        ["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]
    );
}

#[test]
fn protocol_auto_leaves_other_protocols_as_bytes() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let session = [Request(request.clone(), 100)];
    let target = Target::new(Method::Trust, "");
    let run = run_with(
        Protocol::Auto,
        &session,
        false,
        &["app:app-pw"],
        target,
        Duration::from_millis(2),
    );
    assert!(run.logins.is_empty(), "{:?}", run.logins);
    assert_eq!(run.target.received, request, "sent as captured");
}
