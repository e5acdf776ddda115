//! Every login path on simulated time: a replicator with the MySQL hook, a client whose
//! packets are captured as online, and a target modelled here (its TCP and its login checks,
//! written from the protocol's definitions, not from the code under test).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use session::testing::segment;
use session::{Config, Login as Outcome, Replicator, Rule};
use sha1::{Digest as _, Sha1};
use sha2::{Digest as _, Sha256};
use wire::{Flags, TcpPacket};

use super::packet::{self, ClientHello, HandshakeResponse, CLIENT_SSL};
use super::{Mysql, HEAD_BYTES};
use crate::{Credentials, Login};

const CLIENT: &str = "198.18.0.10:40000";
const CLIENT2: &str = "198.18.0.10:40001";
const ONLINE: &str = "198.18.0.20:3306";
const TARGET: &str = "198.18.0.30:3306";
/// The client's ISN and the online server's.
const C_ISN: u32 = 5000;
const O_ISN: u32 = 9000;
const T_ISN: u32 = 70_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An account at the target.
#[derive(Clone)]
struct Account {
    user: &'static str,
    password: &'static str,
    plugin: &'static str,
    /// caching_sha2_password: whether the server has the password cached (else it asks for
    /// full authentication).
    cached: bool,
}

/// The target: one TCP connection (the replicator's) and a MySQL server's login on it.
struct Target {
    /// The server's default plugin, named in its greeting.
    plugin: &'static str,
    /// `None`: --skip-grant-tables.
    accounts: Option<Vec<Account>>,
    salt: Vec<u8>,
    /// Next client sequence number expected; our next sequence number.
    rcv_nxt: Option<u32>,
    snd_nxt: u32,
    greeted: bool,
    got: Vec<u8>,
    /// Login state: the account an auth switch waits on, and whether logged in.
    switching: Option<Account>,
    logged_in: bool,
    /// Commands received after the login (payloads), in order.
    commands: Vec<Vec<u8>>,
    /// Packets for the replicator.
    out: Vec<Vec<u8>>,
    /// Handshake responses received (their payloads).
    hellos: Vec<Vec<u8>>,
    /// The greeting is held back until released (the target is slow to greet).
    hold_greeting: bool,
    /// Prepared statements (see `statements.rs`): the SQL of each id handed out, the next id,
    /// and whether prepares are refused.
    statements: std::collections::HashMap<u32, String>,
    next_statement: u32,
    refuse_prepares: bool,
    ok_len: usize,
    last_prepared: Option<u32>,
    /// The statements executed, in order (`?ID` for an id it never handed out).
    executed: Vec<String>,
    /// Answers (segments with data) are kept back until `answer_held` (a slow target).
    hold_answers: bool,
    held: Vec<Vec<u8>>,
    /// RSA full authentication (see `full_auth`): where it stands, the public key's PEM the
    /// target sends, the key requests it got and the passwords it decrypted.
    full: Option<full_auth::Full>,
    key_pem: Vec<u8>,
    key_requests: usize,
    decrypted: Vec<Vec<u8>>,
}

impl Target {
    fn new(plugin: &'static str, accounts: Option<Vec<Account>>) -> Target {
        Target {
            plugin,
            accounts,
            salt: b"TARGETSALT0123456789".to_vec(),
            rcv_nxt: None,
            snd_nxt: T_ISN + 1,
            greeted: false,
            got: Vec::new(),
            switching: None,
            logged_in: false,
            commands: Vec::new(),
            out: Vec::new(),
            hellos: Vec::new(),
            hold_greeting: false,
            statements: Default::default(),
            next_statement: 1,
            refuse_prepares: false,
            ok_len: 12,
            last_prepared: None,
            executed: Vec::new(),
            hold_answers: false,
            held: Vec::new(),
            full: None,
            key_pem: full_auth::PUBLIC_KEY.as_bytes().to_vec(),
            key_requests: 0,
            decrypted: Vec::new(),
        }
    }

    fn send(&mut self, to: SocketAddr, flags: Flags, payload: &[u8]) {
        let ack = self.rcv_nxt.unwrap_or(0);
        let s = segment(addr(TARGET), to, self.snd_nxt, ack, flags, payload);
        if self.hold_answers && !payload.is_empty() {
            self.held.push(s);
        } else {
            self.out.push(s);
        }
        self.snd_nxt = self.snd_nxt.wrapping_add(payload.len() as u32);
    }

    fn packet(&mut self, to: SocketAddr, seq: u8, payload: &[u8]) {
        let mut p = Vec::new();
        packet::write(&mut p, seq, payload);
        self.send(to, Flags::ACK | Flags::PSH, &p);
    }

    fn greeting(&self) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"10.11.6-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(&self.salt[..8]);
        p.push(0);
        let caps: u32 = 0xf7fe | 0x81bf << 16;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(&self.salt[8..]);
        p.push(0);
        p.extend_from_slice(self.plugin.as_bytes());
        p.push(0);
        p
    }

    fn greet(&mut self, to: SocketAddr) {
        if !self.greeted {
            self.greeted = true;
            let g = self.greeting();
            self.packet(to, 0, &g);
        }
    }

    /// A segment the replicator sent.
    fn take(&mut self, bytes: &[u8]) {
        let p = TcpPacket::parse(bytes).unwrap();
        let from = p.src();
        let flags = p.flags();
        if flags.rst() {
            self.rcv_nxt = None;
            return;
        }
        if flags.syn() {
            self.rcv_nxt = Some(p.seq().0.wrapping_add(1));
            self.out.push(segment(
                addr(TARGET),
                from,
                T_ISN,
                p.seq().0.wrapping_add(1),
                Flags::SYN | Flags::ACK,
                &[],
            ));
            return;
        }
        let Some(nxt) = self.rcv_nxt else { return };
        if !self.greeted && !self.hold_greeting && p.ack().0 == T_ISN + 1 {
            self.greet(from);
        }
        if p.payload_len() == 0 || p.seq().0 != nxt {
            return;
        }
        self.got.extend_from_slice(p.payload());
        self.rcv_nxt = Some(nxt.wrapping_add(p.payload_len() as u32));
        while let Some((seq, payload)) = packet::split(&self.got) {
            let (seq, payload) = (seq, payload.to_vec());
            self.got.drain(..4 + payload.len());
            self.serve(from, seq, &payload);
        }
        if self.out.is_empty() {
            self.send(from, Flags::ACK, &[]);
        }
    }

    /// One client packet at the server.
    fn serve(&mut self, to: SocketAddr, seq: u8, payload: &[u8]) {
        const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];
        if self.logged_in {
            self.commands.push(payload.to_vec());
            if payload.first() == Some(&0x11) {
                return self.change_user(to, payload);
            }
            if let Some(answer) = self.statement_command(payload) {
                if !answer.is_empty() {
                    self.packet(to, 1, &answer);
                }
                return;
            }
            return self.packet(to, 1, OK);
        }
        if let Some(full) = self.full.take() {
            return self.full_auth(to, seq, full, payload);
        }
        if let Some(account) = self.switching.take() {
            return self.check(to, seq, &account, account.plugin, payload);
        }
        self.hellos.push(payload.to_vec());
        let Some(ClientHello::Response(hello)) = HandshakeResponse::parse(payload) else {
            panic!("the target got no handshake response: {payload:?}");
        };
        let Some(accounts) = &self.accounts else {
            self.logged_in = true;
            return self.packet(to, seq + 1, OK);
        };
        let Some(account) = accounts.iter().find(|a| a.user == hello.user).cloned() else {
            return self.packet(to, seq + 1, b"\xff\x15\x04#28000Access denied");
        };
        let plugin = hello.plugin.as_deref().unwrap_or("mysql_native_password");
        if plugin != account.plugin {
            // The account's plugin differs: switch, with a new salt.
            self.salt = b"SWITCHSALT9876543210".to_vec();
            let mut p = vec![0xfe];
            p.extend_from_slice(account.plugin.as_bytes());
            p.push(0);
            p.extend_from_slice(&self.salt);
            p.push(0);
            self.switching = Some(account);
            return self.packet(to, seq + 1, &p);
        }
        self.check(to, seq, &account, plugin, &hello.auth);
    }

    /// The server's check of a scramble, from the plugins' definitions.
    fn check(&mut self, to: SocketAddr, seq: u8, account: &Account, plugin: &str, auth: &[u8]) {
        if self.full_auth_begins(to, seq, account, plugin, auth) {
            return;
        }
        let pw = account.password.as_bytes();
        let good = match plugin {
            "mysql_native_password" => {
                let stored = Sha1::digest(Sha1::digest(pw));
                let mut h = Sha1::new();
                h.update(&self.salt);
                h.update(stored);
                let stage1: Vec<u8> = auth.iter().zip(h.finalize()).map(|(a, b)| a ^ b).collect();
                auth.len() == 20 && Sha1::digest(&stage1) == stored
            }
            "caching_sha2_password" => {
                let stored = Sha256::digest(Sha256::digest(pw));
                let mut h = Sha256::new();
                h.update(stored);
                h.update(&self.salt);
                let stage1: Vec<u8> = auth.iter().zip(h.finalize()).map(|(a, b)| a ^ b).collect();
                auth.len() == 32 && Sha256::digest(&stage1) == stored
            }
            // An empty password: a NUL, in the clear.
            "sha256_password" => pw.is_empty() && auth == [0],
            _ => false,
        };
        if !good {
            return self.packet(to, seq + 1, b"\xff\x15\x04#28000Access denied");
        }
        if plugin == "caching_sha2_password" {
            // Fast path: "done", then the OK, in one segment.
            let mut p = Vec::new();
            packet::write(&mut p, seq + 1, &[1, 3]);
            packet::write(&mut p, seq + 2, &[0, 0, 0, 2, 0, 0, 0]);
            self.logged_in = true;
            return self.send(to, Flags::ACK | Flags::PSH, &p);
        }
        self.logged_in = true;
        self.packet(to, seq + 1, &[0, 0, 0, 2, 0, 0, 0]);
    }
}

/// A replicator of port 3306's sessions to the target, with `dialect`.
fn replicator(dialect: Box<dyn session::Dialect>) -> Replicator {
    let mut c = Config::new(vec![Rule {
        online_addr: None,
        online_port: 3306,
        target: addr(TARGET),
    }]);
    c.clock_isn = false;
    c.delayed_ack = None;
    let mut rep = Replicator::new(c);
    rep.set_dialect(dialect);
    rep
}

/// The replicator, its clock, the target, and the client connections as captured.
struct Lab {
    rep: Replicator,
    now: Instant,
    target: Target,
}

impl Lab {
    fn new(target: Target, logins: &[&str]) -> Lab {
        Lab::with(target, logins, false)
    }

    /// With `--protocol auto`: sessions found to be MySQL are.
    fn auto(target: Target, logins: &[&str]) -> Lab {
        Lab::with(target, logins, true)
    }

    fn with(target: Target, logins: &[&str], detect: bool) -> Lab {
        let logins = logins.iter().map(|l| l.parse::<Login>().unwrap()).collect();
        let credentials = Credentials::new(logins);
        let rep = replicator(Box::new(if detect {
            Mysql::detecting(credentials)
        } else {
            Mysql::new(credentials)
        }));
        assert_eq!(rep.head_bytes(), Some(512));
        Lab {
            rep,
            now: Instant::now(),
            target,
        }
    }

    /// Lets packets go back and forth until nobody has anything more to say, 1 ms apart.
    fn drive(&mut self) {
        for _ in 0..100 {
            self.now += Duration::from_millis(1);
            let mut sent = Vec::new();
            self.rep.drain_transmits(|p| sent.push(p.to_vec()));
            for p in &sent {
                self.target.take(p);
            }
            let answers = std::mem::take(&mut self.target.out);
            for a in &answers {
                // The head an intercept forwards (each answer here is one segment).
                let payload = TcpPacket::parse(a).unwrap().payload().to_vec();
                let head = &payload[..payload.len().min(usize::from(HEAD_BYTES))];
                self.rep.handle_response_head(self.now, a, head);
            }
            if sent.is_empty() && answers.is_empty() {
                self.rep.handle_timeout(self.now);
                if self.rep.pending_transmits() == 0 {
                    return;
                }
            }
        }
        panic!("the exchange did not settle");
    }

    /// A client segment as captured: `off` bytes into the client's stream, acknowledging `ack`
    /// bytes of the online server's.
    fn client(&mut self, from: &str, off: u32, ack: u32, flags: Flags, payload: &[u8]) {
        let p = segment(
            addr(from),
            addr(ONLINE),
            C_ISN + off,
            O_ISN + ack,
            flags,
            payload,
        );
        self.now += Duration::from_millis(1);
        self.rep.handle_capture(self.now, &p);
        self.drive();
    }

    /// The client's handshake: SYN and handshake ACK.
    fn connect(&mut self, from: &str) {
        let syn = segment(addr(from), addr(ONLINE), C_ISN, 0, Flags::SYN, &[]);
        self.rep.handle_capture(self.now, &syn);
        self.client(from, 1, 1, Flags::ACK, &[]);
    }

    fn logins(&mut self) -> Vec<Outcome> {
        let mut v = Vec::new();
        self.rep.drain_logins(|r| v.push(r.login));
        v
    }
}

fn hello(user: &str, plugin: &str, db: Option<&str>) -> Vec<u8> {
    let mut h = HandshakeResponse::own(user, u32::MAX);
    // A scramble made for the online server's salt: never right at the target.
    h.auth = vec![0x5a; 20];
    h.plugin = Some(plugin.into());
    h.database = db.map(Into::into);
    let mut p = Vec::new();
    packet::write(&mut p, 1, &h.payload());
    p
}

fn query(q: &str) -> Vec<u8> {
    let mut payload = vec![0x03];
    payload.extend_from_slice(q.as_bytes());
    let mut p = Vec::new();
    packet::write(&mut p, 0, &payload);
    p
}

const NATIVE: &str = "mysql_native_password";
const SHA2: &str = "caching_sha2_password";
const SHA256: &str = "sha256_password";

fn account(plugin: &'static str) -> Account {
    Account {
        user: "app",
        password: "s3cret",
        plugin,
        cached: true,
    }
}

/// A fresh session: handshake, login (online greeting 100 bytes), two queries (OK 11 bytes).
fn fresh_session(lab: &mut Lab, from: &str, login: &[u8]) {
    lab.connect(from);
    lab.client(from, 1, 101, Flags::ACK | Flags::PSH, login);
    let q1 = query("insert into t values (1)");
    let at = 1 + login.len() as u32;
    lab.client(from, at, 112, Flags::ACK | Flags::PSH, &q1);
    let q2 = query("insert into t values (2)");
    lab.client(
        from,
        at + q1.len() as u32,
        123,
        Flags::ACK | Flags::PSH,
        &q2,
    );
}

fn commands(t: &Target) -> Vec<String> {
    t.commands
        .iter()
        .map(|c| String::from_utf8_lossy(&c[1..]).into_owned())
        .collect()
}

#[test]
fn a_native_password_login_is_made_again_for_the_targets_salt() {
    let mut lab = Lab::new(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, Some("shop")));
    assert!(lab.target.logged_in);
    assert_eq!(
        commands(&lab.target),
        ["insert into t values (1)", "insert into t values (2)"]
    );
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
    let s = lab.rep.stats();
    assert_eq!(s.logins.logged_in, 1);
    // Every request the client sent online reached the target.
    assert_eq!((s.requests_online, s.requests_target), (3, 2));
    // The database the client named goes with the login.
    let ClientHello::Response(h) = HandshakeResponse::parse(&lab.target.hellos[0]).unwrap() else {
        panic!()
    };
    assert_eq!(h.database.as_deref(), Some("shop"));
}

#[test]
fn a_target_without_grant_tables_takes_the_clients_login_with_no_password_given() {
    let mut lab = Lab::new(Target::new(NATIVE, None), &[]);
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn a_refused_login_is_counted_and_ends_the_session() {
    // No password given for a target that checks: the client's scramble fails there.
    let mut lab = Lab::new(Target::new(NATIVE, Some(vec![account(NATIVE)])), &[]);
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    assert!(!lab.target.logged_in);
    assert!(lab.target.commands.is_empty());
    assert_eq!(lab.logins(), [Outcome::Refused]);
    let s = lab.rep.stats();
    assert_eq!((s.logins.refused, s.sessions_active), (1, 0));
    // Reset at the target.
    assert_eq!(lab.target.rcv_nxt, None);
}

#[test]
fn the_targets_auth_switch_is_answered_for_its_new_salt() {
    // The target greets with caching_sha2_password; the account uses the native plugin.
    let mut lab = Lab::new(
        Target::new(SHA2, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    assert!(lab.target.logged_in);
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn caching_sha2_logs_in_on_its_fast_path() {
    let mut lab = Lab::new(
        Target::new(SHA2, Some(vec![account(SHA2)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", SHA2, None));
    assert!(lab.target.logged_in);
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn the_clients_answer_to_the_online_servers_auth_switch_is_not_sent() {
    let mut lab = Lab::new(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    );
    lab.connect(CLIENT);
    let h = hello("app", SHA2, None);
    lab.client(CLIENT, 1, 101, Flags::ACK | Flags::PSH, &h);
    // Online, the server switched the client to another plugin: its answer has sequence id 3.
    let mut switch_answer = Vec::new();
    packet::write(&mut switch_answer, 3, &[0x77; 20]);
    let at = 1 + h.len() as u32;
    lab.client(CLIENT, at, 150, Flags::ACK | Flags::PSH, &switch_answer);
    let q = query("select 1");
    lab.client(CLIENT, at + 24, 161, Flags::ACK | Flags::PSH, &q);
    assert!(lab.target.logged_in);
    assert_eq!(commands(&lab.target), ["select 1"]);
    assert_eq!(lab.target.hellos.len(), 1);
}

#[test]
fn a_login_captured_before_the_targets_greeting_waits_for_it() {
    let mut target = Target::new(NATIVE, Some(vec![account(NATIVE)]));
    target.hold_greeting = true;
    let mut lab = Lab::new(target, &["app:s3cret"]);
    lab.connect(CLIENT);
    let h = hello("app", NATIVE, None);
    lab.client(CLIENT, 1, 101, Flags::ACK | Flags::PSH, &h);
    let q = query("select 1");
    lab.client(CLIENT, 1 + h.len() as u32, 112, Flags::ACK | Flags::PSH, &q);
    // Nothing went: the login waits for the salt, the query for the login.
    assert!(lab.target.hellos.is_empty());
    lab.target.hold_greeting = false;
    lab.target.greet(addr(CLIENT));
    lab.drive();
    assert!(lab.target.logged_in);
    assert_eq!(commands(&lab.target), ["select 1"]);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn a_session_asking_for_tls_is_skipped_and_counted() {
    let mut lab = Lab::new(Target::new(NATIVE, None), &[]);
    lab.connect(CLIENT);
    let mut ssl = HandshakeResponse::own("", u32::MAX).payload();
    ssl.truncate(32);
    ssl[..4].copy_from_slice(&(0x200u32 | CLIENT_SSL | 0x8000).to_le_bytes());
    let mut p = Vec::new();
    packet::write(&mut p, 1, &ssl);
    lab.client(CLIENT, 1, 101, Flags::ACK | Flags::PSH, &p);
    // TLS records follow: never sent.
    lab.client(
        CLIENT,
        1 + p.len() as u32,
        101,
        Flags::ACK | Flags::PSH,
        &[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5],
    );
    assert!(lab.target.hellos.is_empty());
    assert_eq!(lab.logins(), [Outcome::Tls]);
    let s = lab.rep.stats();
    assert_eq!((s.logins.tls, s.sessions_active), (1, 0));
}

#[test]
fn a_joined_session_logs_in_as_its_clients_last_login_and_gets_its_database_back() {
    let mut lab = Lab::new(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    );
    // A login of this client seen on another connection, then a database selected.
    fresh_session(&mut lab, CLIENT2, &hello("app", NATIVE, Some("shop")));
    let mut use_db = Vec::new();
    packet::write(&mut use_db, 0, b"\x02stock");
    let h = hello("app", NATIVE, Some("shop"));
    let at = 1 + h.len() as u32 + 2 * query("insert into t values (1)").len() as u32;
    lab.client(CLIENT2, at, 134, Flags::ACK | Flags::PSH, &use_db);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
    lab.target.commands.clear();
    // A connection open before tcpcopy started: the target gets a connection of its own.
    let done = std::mem::replace(
        &mut lab.target,
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
    );
    assert!(done.logged_in);
    lab.client(
        CLIENT,
        777,
        555,
        Flags::ACK | Flags::PSH,
        &query("insert into t values (3)"),
    );
    assert!(lab.target.logged_in);
    assert_eq!(
        commands(&lab.target),
        ["stock", "insert into t values (3)"],
        "COM_INIT_DB, then the client's command"
    );
    assert_eq!(lab.target.commands[0][0], 0x02);
    assert_eq!(lab.logins(), [Outcome::JoinedLoggedIn]);
    let s = lab.rep.stats();
    assert_eq!((s.sessions_joined, s.logins.joined_logged_in), (1, 1));
}

#[test]
fn a_joined_session_with_no_login_seen_logs_in_as_the_first_login_given() {
    let mut lab = Lab::new(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret", "ro:x"],
    );
    lab.client(
        CLIENT,
        777,
        555,
        Flags::ACK | Flags::PSH,
        &query("select 1"),
    );
    assert!(lab.target.logged_in);
    assert_eq!(commands(&lab.target), ["select 1"]);
    assert_eq!(lab.logins(), [Outcome::JoinedLoggedIn]);
}

#[test]
fn a_joined_session_at_a_target_without_grant_tables_needs_no_login_given() {
    let mut lab = Lab::new(Target::new(NATIVE, None), &[]);
    lab.client(
        CLIENT,
        777,
        555,
        Flags::ACK | Flags::PSH,
        &query("select 1"),
    );
    let ClientHello::Response(h) = HandshakeResponse::parse(&lab.target.hellos[0]).unwrap() else {
        panic!()
    };
    assert_eq!(h.user, "root");
    assert_eq!(commands(&lab.target), ["select 1"]);
    assert_eq!(lab.logins(), [Outcome::JoinedLoggedIn]);
}

#[test]
fn detected_mysql_sessions_log_in_and_their_servers_joined_sessions_too() {
    let mut lab = Lab::auto(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT2, &hello("app", NATIVE, None));
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
    // A joined session of the same server: known to be MySQL now.
    lab.target = Target::new(NATIVE, Some(vec![account(NATIVE)]));
    lab.client(
        CLIENT,
        777,
        555,
        Flags::ACK | Flags::PSH,
        &query("select 1"),
    );
    assert_eq!(commands(&lab.target), ["select 1"]);
    assert_eq!(lab.logins(), [Outcome::JoinedLoggedIn]);
}

#[test]
fn sessions_not_found_to_be_mysql_stay_bytes() {
    let mut lab = Lab::auto(Target::new(NATIVE, None), &[]);
    // The target model greets; a session whose client speaks first is left alone all the same
    // when its first bytes are no MySQL packet.
    lab.target.hold_greeting = true;
    lab.connect(CLIENT);
    lab.client(
        CLIENT,
        1,
        1,
        Flags::ACK | Flags::PSH,
        b"GET / HTTP/1.1\r\n\r\n",
    );
    assert_eq!(
        lab.target.got, b"GET / HTTP/1.1\r\n\r\n",
        "sent as captured"
    );
    assert!(lab.logins().is_empty(), "no login reported");
    // A joined session of a server never found to be MySQL: bytes too.
    lab.client(
        CLIENT2,
        777,
        555,
        Flags::ACK | Flags::PSH,
        &query("select 1"),
    );
    assert!(lab.logins().is_empty());
}

mod change_user;
mod full_auth;
mod pairing;
mod statements;
