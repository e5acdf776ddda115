//! COM_CHANGE_USER on simulated time: a logged-in session logs in again as another user; its
//! scramble was made for the online server's salt, so tcpcopy makes it again for the target's.

use super::*;
use crate::mysql::packet::{ChangeUser, CLIENT_PLUGIN_AUTH, CLIENT_SECURE_CONNECTION};

impl Target {
    /// Sends the answers kept back.
    fn answer_held(&mut self) {
        self.out.append(&mut self.held);
    }

    /// The server's side of COM_CHANGE_USER: the new user's scramble checked for the
    /// connection's salt (mysql_native_password), OK or an error.
    pub(super) fn change_user(&mut self, to: SocketAddr, payload: &[u8]) {
        let caps = CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
        let change = ChangeUser::parse(payload, caps).expect("a COM_CHANGE_USER");
        let account = self
            .accounts
            .as_ref()
            .and_then(|a| a.iter().find(|a| a.user == change.user))
            .cloned();
        // A refusal leaves the connection logged in as before, here.
        self.logged_in = true;
        match account {
            Some(a) if change.plugin.as_deref() != Some(a.plugin) => {
                // Made with another plugin: switch to the account's, with a new salt.
                self.salt = b"SWITCHSALT9876543210".to_vec();
                let mut p = vec![0xfe];
                p.extend_from_slice(a.plugin.as_bytes());
                p.push(0);
                p.extend_from_slice(&self.salt);
                p.push(0);
                self.switching = Some(a);
                self.logged_in = false;
                self.packet(to, 1, &p);
            }
            Some(a) => self.check(to, 0, &a, NATIVE, &change.auth),
            None => self.packet(to, 1, b"\xff\x15\x04#28000Access denied"),
        }
    }
}

/// A COM_CHANGE_USER to `user` (database `shop`, mysql_native_password) with a scramble made
/// for the online server's salt.
fn change_user(user: &str) -> Vec<u8> {
    change_user_with(user, NATIVE)
}

fn change_user_with(user: &str, plugin: &str) -> Vec<u8> {
    let mut payload = vec![0x11];
    payload.extend_from_slice(user.as_bytes());
    payload.push(0);
    payload.push(20);
    payload.extend_from_slice(&[0x5a; 20]);
    payload.extend_from_slice(b"shop\0");
    payload.extend_from_slice(&45u16.to_le_bytes());
    payload.extend_from_slice(plugin.as_bytes());
    payload.push(0);
    let mut p = Vec::new();
    packet::write(&mut p, 0, &payload);
    p
}

fn two_accounts() -> Target {
    let mut report = account(NATIVE);
    report.user = "report";
    report.password = "r3port";
    Target::new(NATIVE, Some(vec![account(NATIVE), report]))
}

#[test]
fn a_change_of_user_is_made_again_for_the_targets_salt() {
    let mut lab = Lab::new(two_accounts(), &["app:s3cret", "report:r3port"]);
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    let at = 1
        + hello("app", NATIVE, None).len() as u32
        + 2 * query("insert into t values (1)").len() as u32;
    let cu = change_user("report");
    lab.client(CLIENT, at, 134, Flags::ACK | Flags::PSH, &cu);
    // The client's answer to the online server's own auth switch: never the target's.
    let mut stray = Vec::new();
    packet::write(&mut stray, 3, &[0x77; 20]);
    let at = at + cu.len() as u32;
    lab.client(CLIENT, at, 134, Flags::ACK | Flags::PSH, &stray);
    let q = query("select 2");
    lab.client(
        CLIENT,
        at + stray.len() as u32,
        145,
        Flags::ACK | Flags::PSH,
        &q,
    );
    let last: Vec<_> = commands(&lab.target).into_iter().skip(2).collect();
    assert_eq!(
        last.len(),
        2,
        "the change of user and the query, nothing between: {last:?}"
    );
    assert_eq!(last[1], "select 2");
    assert_eq!(lab.target.out.len(), 0);
    let summary = lab.rep.dialect_summary().unwrap();
    assert!(
        summary.ends_with("COM_CHANGE_USER 1 ok, 0 failed at the target"),
        "{summary}"
    );
    // One login outcome for the session, not two.
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn a_change_of_user_without_its_password_fails_at_the_target_and_the_session_goes_on() {
    let mut lab = Lab::new(two_accounts(), &["app:s3cret"]);
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    let at = 1
        + hello("app", NATIVE, None).len() as u32
        + 2 * query("insert into t values (1)").len() as u32;
    let cu = change_user("report");
    lab.client(CLIENT, at, 134, Flags::ACK | Flags::PSH, &cu);
    lab.client(
        CLIENT,
        at + cu.len() as u32,
        145,
        Flags::ACK | Flags::PSH,
        &query("select 3"),
    );
    assert_eq!(commands(&lab.target).last().unwrap(), "select 3");
    let summary = lab.rep.dialect_summary().unwrap();
    assert!(
        summary.ends_with("COM_CHANGE_USER 0 ok, 1 failed at the target"),
        "{summary}"
    );
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
    assert_eq!(lab.rep.stats().sessions_active, 1);
}

#[test]
fn after_a_change_of_user_through_an_auth_switch_statements_are_followed_again() {
    use crate::mysql::stmt::{COM_STMT_EXECUTE, COM_STMT_PREPARE};
    let mut lab = Lab::new(two_accounts(), &["app:s3cret", "report:r3port"]);
    lab.target.next_statement = 100;
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    let mut at = 1
        + hello("app", NATIVE, None).len() as u32
        + 2 * query("insert into t values (1)").len() as u32;
    let mut o = 134;
    let mut send = |lab: &mut Lab, bytes: &[u8], o: u32| {
        lab.client(CLIENT, at, o, Flags::ACK | Flags::PSH, bytes);
        at += bytes.len() as u32;
    };
    // Made with caching_sha2_password: the target switches to the account's plugin.
    send(&mut lab, &change_user_with("report", SHA2), o);
    // The client's answer to the online server's own switch, never the target's.
    let mut stray = Vec::new();
    packet::write(&mut stray, 3, &[0x77; 20]);
    o += 40;
    send(&mut lab, &stray, o);
    o += 11;
    let mut prepare = vec![COM_STMT_PREPARE];
    prepare.extend_from_slice(b"select ?");
    let mut p = Vec::new();
    packet::write(&mut p, 0, &prepare);
    send(&mut lab, &p, o);
    // Online, the statement is 1 (the answers are not captured here: the target's id is kept).
    o += 16;
    let mut exec = vec![COM_STMT_EXECUTE];
    exec.extend_from_slice(&100u32.to_le_bytes());
    exec.extend_from_slice(&[0, 1, 0, 0, 0]);
    let mut p = Vec::new();
    packet::write(&mut p, 0, &exec);
    send(&mut lab, &p, o);
    assert_eq!(lab.target.executed, ["select ?"]);
    let summary = lab.rep.dialect_summary().unwrap();
    assert!(summary.contains("1 prepared at the target"), "{summary}");
    assert!(
        summary.ends_with("COM_CHANGE_USER 1 ok, 0 failed at the target"),
        "{summary}"
    );
}

#[test]
fn a_change_of_user_read_ahead_of_the_target_waits_for_its_own_answer() {
    // The client's queries and its change of user are all captured before the target answered
    // the first query: the OKs of the queries are not the change's verdict.
    let mut lab = Lab::new(two_accounts(), &["app:s3cret", "report:r3port"]);
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    let mut at = 1
        + hello("app", NATIVE, None).len() as u32
        + 2 * query("insert into t values (1)").len() as u32;
    let mut o = 134;
    lab.target.hold_answers = true;
    for q in ["select 1", "select 2"] {
        let q = query(q);
        lab.client(CLIENT, at, o, Flags::ACK | Flags::PSH, &q);
        at += q.len() as u32;
        o += 11;
    }
    let cu = change_user_with("report", SHA2);
    lab.client(CLIENT, at, o, Flags::ACK | Flags::PSH, &cu);
    at += cu.len() as u32;
    o += 11;
    let q = query("select 3");
    lab.client(CLIENT, at, o, Flags::ACK | Flags::PSH, &q);
    lab.target.hold_answers = false;
    lab.target.answer_held();
    lab.drive();
    let summary = lab.rep.dialect_summary().unwrap();
    assert!(
        summary.ends_with("COM_CHANGE_USER 1 ok, 0 failed at the target"),
        "{summary}"
    );
    assert_eq!(commands(&lab.target).last().unwrap(), "select 3");
}
