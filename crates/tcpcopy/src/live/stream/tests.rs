//! Stream mode's answer heads on simulated time: the real session core with a protocol hook,
//! the socket bridge and [`Notes`] between them, as `Streams::respond` and the worker's sink
//! wire them, against a simulated target that greets first and wants a login. The hook must
//! see the target's greeting and answers (each answer's head, cut at its limit) and its login
//! must reach the target before the client's requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::{Bridge, Command};
use session::dialect::{Edit, SessionInfo};
use session::testing::segment;
use session::{Config, Conversation, Dialect, Login, Replicator, Rule};
use wire::Flags;

use super::Notes;

const C_ISN: u32 = 5000;
const O_ISN: u32 = 90_000;
/// What the hook asks of each answer.
const HEAD: u16 = 64;
/// An answer longer than one synthesized segment.
const BIG: usize = 70_000;

fn client() -> SocketAddr {
    "10.0.0.9:40000".parse().unwrap()
}
fn online() -> SocketAddr {
    "10.0.0.1:3306".parse().unwrap()
}
fn target() -> SocketAddr {
    "198.18.0.30:3306".parse().unwrap()
}

type Seen = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Holds the client's bytes until the target greets, then logs in with `LOGIN\n` and lets
/// them go on the target's next answer; records every head it is given.
#[derive(Debug)]
struct LogsIn {
    seen: Seen,
    greeted: bool,
    logged_in: bool,
}

impl Conversation for LogsIn {
    fn client(&mut self, edit: &mut Edit<'_>, from: u64) {
        if !self.greeted && from == 0 {
            edit.hold(Some(0));
        }
    }

    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, bytes: &[u8]) {
        self.seen.lock().unwrap().push((offset, bytes.to_vec()));
        if !self.greeted {
            self.greeted = true;
            edit.insert(0, b"LOGIN\n").expect("held, not sent");
            edit.hold(Some(6));
        } else if !self.logged_in {
            self.logged_in = true;
            edit.hold(None);
            edit.report(Login::LoggedIn, false);
        }
    }
}

struct Hook(Seen);

impl Dialect for Hook {
    fn open(&mut self, _: &SessionInfo) -> Option<Box<dyn Conversation>> {
        Some(Box::new(LogsIn {
            seen: self.0.clone(),
            greeted: false,
            logged_in: false,
        }))
    }

    fn head_bytes(&self) -> u16 {
        HEAD
    }
}

/// The simulated target: greets on connect, answers each line it gets (`big` at length).
#[derive(Default)]
struct Target {
    got: Vec<u8>,
    answered: usize,
}

impl Target {
    fn answer(line: &[u8]) -> Vec<u8> {
        match line {
            b"LOGIN" => b"OK\n".to_vec(),
            b"big" => (0..BIG).map(|i| b'a' + (i % 26) as u8).collect(),
            _ => b"answer\n".to_vec(),
        }
    }
}

/// One round: the core's packets to the bridge, the sockets' part played by `target`, the
/// bridge's packets back to the core with their notes.
fn step(core: &mut Replicator, b: &mut Bridge, notes: &mut Notes, t: &mut Target, now: Instant) {
    core.handle_timeout(now);
    core.drain_transmits(|p| b.handle_transmit(now, p));
    while let Some(cmd) = b.poll_command() {
        match cmd {
            Command::Connect { conn, .. } => {
                b.connected(now, conn);
                b.received(now, conn, b"HELLO\n");
            }
            Command::Write { conn } => {
                let n = {
                    let bytes = b.pending(conn);
                    t.got.extend_from_slice(bytes);
                    bytes.len()
                };
                b.written(now, conn, n);
                let lines: Vec<Vec<u8>> =
                    t.got.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
                // The last piece is what follows the last newline.
                let complete = lines.len() - 1;
                for line in &lines[t.answered..complete] {
                    b.received(now, conn, &Target::answer(line));
                }
                t.answered = complete;
            }
            Command::Shutdown { conn } => b.eof(now, conn),
            Command::Linger { conn } => b.drained(conn),
            Command::Abort { .. } | Command::Close { .. } => {}
        }
    }
    b.drain_responses(|packet, payload| {
        let note = notes
            .note(packet, payload)
            .expect("the bridge's packets parse");
        core.handle_response_head(now, packet, note.head);
    });
}

#[test]
fn a_protocol_hook_reads_the_targets_answers_from_the_bridge_and_logs_in_first() {
    let t0 = Instant::now();
    let mut cfg = Config::new(vec![Rule {
        online_addr: None,
        online_port: 3306,
        target: target(),
    }]);
    cfg.mss = bridge::MAX_SEGMENT as u16;
    cfg.mtu = u16::MAX;
    let mut core = Replicator::new(cfg);
    let seen = Seen::default();
    core.set_dialect(Box::new(Hook(seen.clone())));
    let limit = core.head_bytes().expect("a hook asks for heads");
    let mut notes = Notes::new(limit, false);
    let mut b = Bridge::new(bridge::Config::default());
    let mut t = Target::default();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let (c, o) = (client(), online());
    core.handle_capture(ms(0), &segment(c, o, C_ISN, 0, Flags::SYN, b""));
    core.handle_capture(ms(1), &segment(c, o, C_ISN + 1, O_ISN + 1, Flags::ACK, b""));
    // The online server greeted (7 bytes), then answered each request.
    let requests: [(&[u8], u32); 2] = [(b"req1\n", 7), (b"big\n", BIG as u32)];
    let (mut seq, mut ack, mut now) = (C_ISN + 1, O_ISN + 8, 2);
    for (r, answer) in requests {
        let p = segment(c, o, seq, ack, Flags::ACK | Flags::PSH, r);
        core.handle_capture(ms(now), &p);
        seq += r.len() as u32;
        ack += answer;
        for _ in 0..5 {
            now += 1;
            step(&mut core, &mut b, &mut notes, &mut t, ms(now));
        }
    }
    let fin = segment(c, o, seq, ack, Flags::ACK | Flags::FIN, b"");
    core.handle_capture(ms(now), &fin);
    for _ in 0..5 {
        now += 50;
        step(&mut core, &mut b, &mut notes, &mut t, ms(now));
    }
    assert_eq!(
        String::from_utf8_lossy(&t.got),
        "LOGIN\nreq1\nbig\n",
        "the login first, then the client's requests, each after the previous answer"
    );
    let big: Vec<u8> = Target::answer(b"big");
    let expected: Vec<(u64, Vec<u8>)> = vec![
        (0, b"HELLO\n".to_vec()),
        (6, b"OK\n".to_vec()),
        (9, b"answer\n".to_vec()),
        // The long answer's head only: its first segment cut at the limit, its second none.
        (16, big[..usize::from(HEAD)].to_vec()),
    ];
    assert_eq!(*seen.lock().unwrap(), expected);
    let s = core.stats();
    assert_eq!((s.requests_online, s.requests_target), (2, 2));
    assert_eq!(s.sessions_completed, 1);
    assert_eq!(s.logins.logged_in, 1);
    let mut reports = Vec::new();
    core.drain_logins(|r| reports.push(r.login));
    assert_eq!(reports, [Login::LoggedIn]);
}
