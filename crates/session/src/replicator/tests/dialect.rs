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
