//! COM_CHANGE_USER on simulated time: a logged-in session logs in again as another user; its
//! scramble was made for the online server's salt, so tcpcopy makes it again for the target's.

use super::*;
use crate::mysql::packet::{ChangeUser, CLIENT_PLUGIN_AUTH, CLIENT_SECURE_CONNECTION};

impl Target {
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
        match account {
            Some(a) => self.check(to, 0, &a, NATIVE, &change.auth),
            None => self.packet(to, 1, b"\xff\x15\x04#28000Access denied"),
        }
        // A refusal leaves the connection logged in as before, here.
        self.logged_in = true;
    }
}

/// A COM_CHANGE_USER to `user` (database `shop`, mysql_native_password) with a scramble made
/// for the online server's salt.
fn change_user(user: &str) -> Vec<u8> {
    let mut payload = vec![0x11];
    payload.extend_from_slice(user.as_bytes());
    payload.push(0);
    payload.push(20);
    payload.extend_from_slice(&[0x5a; 20]);
    payload.extend_from_slice(b"shop\0");
    payload.extend_from_slice(&45u16.to_le_bytes());
    payload.extend_from_slice(b"mysql_native_password\0");
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
