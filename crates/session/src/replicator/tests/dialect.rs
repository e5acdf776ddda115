//! The protocol hook (`crate::dialect`) on simulated time: a conversation that holds the
//! client's bytes until the target greets, inserts a login of its own before them, and releases
//! them on the target's answer; or ends the session when the target refuses. The target sees
//! the edited stream with consistent sequence numbers, and what is reported back (a comparison's
//! marks, whose request an answer is) is in the client's sequence space.

use super::*;
use crate::dialect::{Conversation, Dialect, Edit, Login, SessionInfo};

/// Logs in with `LOGIN\n` once the target said anything; `refuse`: the target's second answer
/// is a refusal.
#[derive(Debug)]
struct Greeted {
    refuse: bool,
    greeted: bool,
}

impl Conversation for Greeted {
    fn client(&mut self, edit: &mut Edit<'_>, from: u64) {
        if !self.greeted && from == 0 {
            edit.hold(Some(0));
        }
    }

    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, bytes: &[u8]) {
        if offset == 0 {
            assert_eq!(bytes, b"HI");
            self.greeted = true;
            edit.insert(0, b"LOGIN\n").expect("held, not sent");
            edit.hold(Some(6));
            return;
        }
        if self.refuse {
            edit.report(Login::Refused, true);
        } else {
            edit.hold(None);
            edit.report(Login::LoggedIn, false);
        }
    }
}

struct Hook {
    refuse: bool,
}

impl Dialect for Hook {
    fn open(&mut self, session: &SessionInfo) -> Option<Box<dyn Conversation>> {
        assert!(!session.joined);
        Some(Box::new(Greeted {
            refuse: self.refuse,
            greeted: false,
        }))
    }

    fn head_bytes(&self) -> u16 {
        64
    }
}

fn with_hook(base: Instant, refuse: bool) -> Replicator {
    let mut r = Replicator::new(Config {
        trace_sends: true,
        ..config()
    });
    r.set_dialect(Box::new(Hook { refuse }));
    assert_eq!(r.head_bytes(), Some(64));
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    r.handle_response(
        ms(base, 1),
        &target_pkt(T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    sent(&mut r);
    // The client's first request, after the online server's greeting.
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 11, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    assert!(sent(&mut r).is_empty(), "held for the target's greeting");
    r.handle_response_head(
        ms(base, 3),
        &target_pkt(T_ISN + 1, C_ISN + 1, Flags::ACK | Flags::PSH, 2),
        b"HI",
    );
    let login = sent(&mut r);
    assert_eq!(
        login,
        vec![(
            C_ISN + 1,
            T_ISN + 3,
            Flags::ACK | Flags::PSH,
            b"LOGIN\n".to_vec()
        )],
        "the inserted login goes first, alone"
    );
    r
}

#[test]
fn inserted_bytes_go_first_and_the_client_bytes_follow_shifted() {
    let base = Instant::now();
    let mut r = with_hook(base, false);
    let owner = r
        .handle_response_head(
            ms(base, 4),
            &target_pkt(T_ISN + 3, C_ISN + 7, Flags::ACK | Flags::PSH, 2),
            b"OK",
        )
        .expect("a payload packet of a traced session");
    assert_eq!(
        owner.client_ack,
        Seq(C_ISN + 1),
        "the answer to the inserted login is reported where it was inserted"
    );
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 7,
            T_ISN + 5,
            Flags::ACK | Flags::PSH,
            b"req1\n".to_vec()
        )],
        "the client's request follows, after the inserted bytes"
    );
    let mut marks = Vec::new();
    r.drain_sends(|m| marks.push(m.end));
    assert_eq!(
        marks,
        [Seq(C_ISN + 1), Seq(C_ISN + 6)],
        "in the client's space"
    );
    let owner = r
        .handle_response_head(
            ms(base, 5),
            &target_pkt(T_ISN + 5, C_ISN + 12, Flags::ACK | Flags::PSH, 3),
            b"",
        )
        .unwrap();
    assert_eq!(owner.client_ack, Seq(C_ISN + 6));
    assert_eq!(
        sent(&mut r),
        vec![(C_ISN + 12, T_ISN + 8, Flags::ACK, vec![])],
        "the answer acknowledged, in the target's space"
    );
    // The client's next request keeps its own sequence numbers, shifted at the target.
    r.handle_capture(
        ms(base, 6),
        &client_pkt(C_ISN + 6, O_ISN + 30, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    assert_eq!(
        sent(&mut r),
        vec![(
            C_ISN + 12,
            T_ISN + 8,
            Flags::ACK | Flags::PSH,
            b"req2\n".to_vec()
        )]
    );
    let mut logins = Vec::new();
    r.drain_logins(|l| logins.push(l.login));
    assert_eq!(logins, [Login::LoggedIn]);
    r.handle_response(
        ms(base, 7),
        &target_pkt(T_ISN + 8, C_ISN + 17, Flags::ACK, 0),
    );
    let s = r.stats();
    assert_eq!(s.logins.logged_in, 1);
    assert_eq!(s.target_bytes, 16, "the inserted bytes count as sent");
    assert_eq!(
        (s.requests_online, s.requests_target),
        (2, 1),
        "the first request counted once the second was acknowledged, as without a hook"
    );
}

#[test]
fn a_refused_login_ends_the_session_and_counts() {
    let base = Instant::now();
    let mut r = with_hook(base, true);
    r.handle_response_head(
        ms(base, 4),
        &target_pkt(T_ISN + 3, C_ISN + 7, Flags::ACK | Flags::PSH, 2),
        b"NO",
    );
    let out = sent(&mut r);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].2.rst(), "reset at the target: {out:?}");
    assert_eq!(out[0].3, b"", "the client's request never went");
    let s = r.stats();
    assert_eq!((s.logins.refused, s.sessions_active), (1, 0));
    assert_eq!(s.lost.not_answered, 1);
    // The client's later segments are not joined as a new session.
    r.handle_capture(
        ms(base, 6),
        &client_pkt(C_ISN + 6, O_ISN + 30, Flags::ACK | Flags::PSH, b"req2\n"),
    );
    assert!(sent(&mut r).is_empty());
    assert_eq!(r.stats().sessions_joined, 0);
}

/// Records what the hook is told of each answer: the acknowledgment (and its client offset)
/// of the target's and of the online server's, and the online server's sequence number.
#[derive(Debug)]
struct Watcher {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    inserted: bool,
}

impl Conversation for Watcher {
    fn client(&mut self, edit: &mut Edit<'_>, _from: u64) {
        if !std::mem::replace(&mut self.inserted, true) {
            edit.insert(0, b"LOGIN\n").expect("nothing sent yet");
        }
    }

    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, _bytes: &[u8]) {
        let acked = edit.acked().expect("an acknowledgment");
        self.seen.lock().unwrap().push(format!(
            "target at {offset} acked {acked} (client {})",
            edit.client_offset(acked)
        ));
    }

    fn online(&mut self, edit: &mut Edit<'_>, bytes: &[u8]) {
        self.seen.lock().unwrap().push(format!(
            "online {:?} acked {:?} seq {:?}",
            String::from_utf8_lossy(bytes),
            edit.acked(),
            edit.segment_seq()
        ));
    }
}

struct Watching(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Dialect for Watching {
    fn open(&mut self, _: &SessionInfo) -> Option<Box<dyn Conversation>> {
        Some(Box::new(Watcher {
            seen: self.0.clone(),
            inserted: false,
        }))
    }

    fn head_bytes(&self) -> u16 {
        64
    }

    fn online_answers(&self) -> bool {
        true
    }
}

#[test]
fn a_hook_hears_the_online_answers_in_the_clients_offsets_and_the_targets_in_the_streams() {
    let base = Instant::now();
    let seen = std::sync::Arc::default();
    let mut r = Replicator::new(config());
    r.set_dialect(Box::new(Watching(std::sync::Arc::clone(&seen))));
    assert!(r.wants_online_answers());
    handshake(&mut r, ms(base, 0), &client_pkt(C_ISN, 0, Flags::SYN, b""));
    r.handle_response(
        ms(base, 1),
        &target_pkt(T_ISN, C_ISN + 1, Flags::SYN | Flags::ACK, 0),
    );
    sent(&mut r);
    r.handle_capture(
        ms(base, 2),
        &client_pkt(C_ISN + 1, O_ISN + 1, Flags::ACK | Flags::PSH, b"req1\n"),
    );
    assert_eq!(sent(&mut r)[0].3, b"LOGIN\nreq1\n");
    // The online server answers the client's 5 bytes; the capture has it.
    let answer = segment(
        addr(ONLINE),
        addr(CLIENT),
        O_ISN + 1,
        C_ISN + 6,
        Flags::ACK | Flags::PSH,
        b"ANS",
    );
    r.handle_capture(ms(base, 3), &answer);
    // The target answers the 11 bytes it got.
    r.handle_response_head(
        ms(base, 4),
        &target_pkt(T_ISN + 1, C_ISN + 12, Flags::ACK | Flags::PSH, 3),
        b"ans",
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            format!("online \"ANS\" acked Some(5) seq Some({})", O_ISN + 1),
            "target at 0 acked 11 (client 5)".to_string(),
        ]
    );
}
