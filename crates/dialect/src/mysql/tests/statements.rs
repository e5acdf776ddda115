//! Prepared statements on simulated time: the target hands out ids of its own (here from 100,
//! or from 1 on a connection of its own), and every command naming a statement must reach it
//! under the target's id, the statement the client meant executed.

use super::*;
use crate::mysql::stmt::{
    COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE, COM_STMT_RESET, NO_STATEMENT,
};

impl Target {
    /// The answer to a command about prepared statements (empty: none is sent); `None` for
    /// another command.
    pub(super) fn statement_command(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let command = *payload.first()?;
        let last = self.last_prepared;
        // MariaDB 10.2+: -1 names the last statement prepared on the connection.
        let id = || match u32::from_le_bytes(payload[1..5].try_into().unwrap()) {
            u32::MAX => last.unwrap_or(u32::MAX),
            id => id,
        };
        match command {
            COM_STMT_PREPARE if self.refuse_prepares => Some(b"\xff\x28\x04#42000denied".to_vec()),
            COM_STMT_PREPARE => {
                let id = self.next_statement;
                self.next_statement += 1;
                let sql = String::from_utf8_lossy(&payload[1..]).into_owned();
                self.statements.insert(id, sql);
                let mut ok = vec![0];
                ok.extend_from_slice(&id.to_le_bytes());
                ok.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
                ok.resize(self.ok_len, 0);
                self.last_prepared = Some(id);
                Some(ok)
            }
            COM_STMT_EXECUTE | COM_STMT_RESET => match self.statements.get(&id()) {
                Some(sql) => {
                    if command == COM_STMT_EXECUTE {
                        self.executed.push(sql.clone());
                    }
                    Some(vec![0, 1, 0, 2, 0, 0, 0])
                }
                None => {
                    self.executed.push(format!("?{}", id()));
                    Some(b"\xff\xf3\x0c#HY000Unknown prepared statement handler".to_vec())
                }
            },
            COM_STMT_CLOSE => {
                self.statements.remove(&id());
                Some(Vec::new())
            }
            _ => None,
        }
    }
}

/// One client connection as captured: the client's next offset and the online server's (what
/// the client's segments acknowledge), and whether the online server's answers are captured.
struct Conn {
    from: &'static str,
    c: u32,
    o: u32,
    answers: bool,
}

impl Conn {
    /// A fresh connection: handshake, greeting (100 bytes online), the login and its OK.
    fn fresh(lab: &mut Lab, from: &'static str, answers: bool) -> Conn {
        lab.connect(from);
        let mut conn = Conn {
            from,
            c: 1,
            o: 101,
            answers,
        };
        conn.send(lab, &hello("app", NATIVE, None));
        conn.answer(lab, &ok_packet(2));
        conn
    }

    /// A connection open before tcpcopy started.
    fn joined(from: &'static str, answers: bool) -> Conn {
        Conn {
            from,
            c: 777,
            o: 555,
            answers,
        }
    }

    fn send(&mut self, lab: &mut Lab, bytes: &[u8]) {
        lab.client(self.from, self.c, self.o, Flags::ACK | Flags::PSH, bytes);
        self.c += bytes.len() as u32;
    }

    /// The online server's answer: captured (when answers are) and acknowledged by the
    /// client's next segment.
    fn answer(&mut self, lab: &mut Lab, bytes: &[u8]) {
        if self.answers {
            let p = segment(
                addr(ONLINE),
                addr(self.from),
                O_ISN + self.o,
                C_ISN + self.c,
                Flags::ACK | Flags::PSH,
                bytes,
            );
            lab.now += Duration::from_millis(1);
            lab.rep.handle_capture(lab.now, &p);
            lab.drive();
        }
        self.o += bytes.len() as u32;
    }

    /// The client prepares `sql`; the online server answers with `online_id`.
    fn prepare(&mut self, lab: &mut Lab, sql: &str, online_id: u32) {
        let mut payload = vec![COM_STMT_PREPARE];
        payload.extend_from_slice(sql.as_bytes());
        self.send(lab, &packet_of(&payload));
        let mut ok = vec![0];
        ok.extend_from_slice(&online_id.to_le_bytes());
        ok.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
        let mut p = Vec::new();
        packet::write(&mut p, 1, &ok);
        self.answer(lab, &p);
    }

    /// The client names statement `id` with `command`; the online server answers (but to a
    /// close).
    fn name(&mut self, lab: &mut Lab, command: u8, id: u32) {
        let mut payload = vec![command];
        payload.extend_from_slice(&id.to_le_bytes());
        if command == COM_STMT_EXECUTE {
            payload.extend_from_slice(&[0, 1, 0, 0, 0]);
        }
        self.send(lab, &packet_of(&payload));
        if command != COM_STMT_CLOSE {
            self.answer(lab, &ok_packet(1));
        }
    }
}

fn packet_of(payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    packet::write(&mut p, 0, payload);
    p
}

fn ok_packet(seq: u8) -> Vec<u8> {
    let mut p = Vec::new();
    packet::write(&mut p, seq, &[0, 0, 0, 2, 0, 0, 0]);
    p
}

fn lab() -> Lab {
    Lab::new(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    )
}

fn summary(lab: &Lab) -> String {
    lab.rep.dialect_summary().unwrap_or_default()
}

#[test]
fn statement_ids_are_mapped_to_the_targets_from_both_servers_answers() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut conn = Conn::fresh(&mut lab, CLIENT, true);
    conn.prepare(&mut lab, "insert into t values (?)", 1);
    conn.prepare(&mut lab, "update t set v = ?", 2);
    conn.name(&mut lab, COM_STMT_EXECUTE, 2);
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    conn.name(&mut lab, COM_STMT_RESET, 1);
    conn.name(&mut lab, COM_STMT_CLOSE, 1);
    conn.name(&mut lab, COM_STMT_EXECUTE, 2);
    assert_eq!(
        lab.target.executed,
        [
            "update t set v = ?",
            "insert into t values (?)",
            "update t set v = ?"
        ]
    );
    // The close reached the target under its id.
    assert_eq!(lab.target.statements.keys().collect::<Vec<_>>(), [&101]);
    assert_eq!(
        summary(&lab),
        "mysql prepared statements: 2 prepared at the target, 5 commands with the id mapped, \
         0 re-prepared for joined sessions, 0 naming a statement not found"
    );
    let s = lab.rep.stats();
    assert_eq!(
        s.requests_online,
        s.requests_target + 1,
        "all but the login's"
    );
}

#[test]
fn without_the_online_answers_a_session_keeps_the_ids_the_target_gave() {
    // Both servers number a connection's statements from 1: the ids agree.
    let mut lab = lab();
    let mut conn = Conn::fresh(&mut lab, CLIENT, false);
    conn.prepare(&mut lab, "select ?", 1);
    conn.prepare(&mut lab, "select ?, ?", 2);
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    conn.name(&mut lab, COM_STMT_EXECUTE, 2);
    assert_eq!(lab.target.executed, ["select ?", "select ?, ?"]);
    assert!(summary(&lab).contains("2 prepared at the target, 0 commands with the id mapped"));
}

#[test]
fn a_command_split_across_segments_waits_until_its_id_can_be_rewritten() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut conn = Conn::fresh(&mut lab, CLIENT, true);
    conn.prepare(&mut lab, "delete from t where k = ?", 7);
    let mut payload = vec![COM_STMT_EXECUTE];
    payload.extend_from_slice(&7u32.to_le_bytes());
    payload.extend_from_slice(&[0, 1, 0, 0, 0]);
    let p = packet_of(&payload);
    conn.send(&mut lab, &p[..6]);
    assert!(
        lab.target.executed.is_empty(),
        "held: its id is not all there"
    );
    conn.send(&mut lab, &p[6..]);
    assert_eq!(lab.target.executed, ["delete from t where k = ?"]);
}

/// A session of the client's address prepares two statements (ids 1 and 2 online), for the
/// joined session that follows.
fn earlier_session(lab: &mut Lab) {
    let mut conn = Conn::fresh(lab, CLIENT2, true);
    conn.prepare(lab, "insert into t values (?)", 1);
    conn.prepare(lab, "update t set v = ?", 2);
    conn.name(lab, COM_STMT_EXECUTE, 1);
    lab.target = Target::new(NATIVE, Some(vec![account(NATIVE)]));
}

#[test]
fn a_joined_sessions_statements_are_prepared_again_from_those_its_client_prepared() {
    let mut lab = lab();
    earlier_session(&mut lab);
    // Open before tcpcopy started: its statements 2 and 1 were prepared then.
    let mut conn = Conn::joined(CLIENT, true);
    conn.name(&mut lab, COM_STMT_EXECUTE, 2);
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    conn.name(&mut lab, COM_STMT_EXECUTE, 2);
    // One prepared after tcpcopy started: its id comes from the online server's answer.
    conn.prepare(&mut lab, "delete from t where k = ?", 3);
    conn.name(&mut lab, COM_STMT_EXECUTE, 3);
    assert!(lab.target.logged_in);
    assert_eq!(
        lab.target.executed,
        [
            "update t set v = ?",
            "insert into t values (?)",
            "update t set v = ?",
            "delete from t where k = ?"
        ]
    );
    // Prepared in the order first named: 2 became the target's 1, 1 its 2, 3 its 3.
    let prepared: Vec<String> = lab
        .target
        .commands
        .iter()
        .filter(|c| c[0] == COM_STMT_PREPARE)
        .map(|c| String::from_utf8_lossy(&c[1..]).into_owned())
        .collect();
    assert_eq!(
        prepared,
        [
            "update t set v = ?",
            "insert into t values (?)",
            "delete from t where k = ?"
        ]
    );
    assert_eq!(lab.logins(), [Outcome::LoggedIn, Outcome::JoinedLoggedIn]);
    assert!(
        summary(&lab).contains("2 re-prepared for joined sessions, 0 naming"),
        "{}",
        summary(&lab)
    );
}

#[test]
fn a_joined_session_without_online_answers_takes_the_first_new_id_for_its_prepare() {
    let mut lab = lab();
    earlier_session(&mut lab);
    let mut conn = Conn::joined(CLIENT, false);
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    // Prepared after the join as 9 online; the target gives it 2.
    conn.prepare(&mut lab, "delete from t where k = ?", 9);
    conn.name(&mut lab, COM_STMT_EXECUTE, 9);
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    assert_eq!(
        lab.target.executed,
        [
            "insert into t values (?)",
            "delete from t where k = ?",
            "insert into t values (?)"
        ]
    );
}

#[test]
fn a_statement_never_seen_is_named_by_an_id_no_server_has() {
    let mut lab = lab();
    let mut conn = Conn::joined(CLIENT, true);
    conn.name(&mut lab, COM_STMT_EXECUTE, 4);
    conn.name(&mut lab, COM_STMT_CLOSE, 4);
    assert_eq!(lab.target.executed, [format!("?{NO_STATEMENT}")]);
    let closed = lab.target.commands.last().unwrap();
    assert_eq!(closed[0], COM_STMT_CLOSE);
    assert_eq!(closed[1..5], NO_STATEMENT.to_le_bytes());
    assert!(summary(&lab).ends_with("2 naming a statement not found"));
    // The session goes on.
    conn.send(&mut lab, &query("select 1"));
    assert_eq!(commands(&lab.target).last().unwrap(), "select 1");
}

#[test]
fn a_re_prepare_the_target_refuses_leaves_the_command_to_fail_there() {
    let mut lab = lab();
    earlier_session(&mut lab);
    lab.target.refuse_prepares = true;
    let mut conn = Conn::joined(CLIENT, true);
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    assert_eq!(lab.target.executed, [format!("?{NO_STATEMENT}")]);
    conn.send(&mut lab, &query("select 1"));
    assert_eq!(commands(&lab.target).last().unwrap(), "select 1");
}

#[test]
fn a_compressed_sessions_frames_go_as_they_are() {
    let mut lab = lab();
    lab.connect(CLIENT);
    let mut conn = Conn {
        from: CLIENT,
        c: 1,
        o: 101,
        answers: true,
    };
    let mut h = HandshakeResponse::own("app", u32::MAX);
    h.capabilities |= packet::CLIENT_COMPRESS;
    h.auth = vec![0x5a; 20];
    let mut p = Vec::new();
    packet::write(&mut p, 1, &h.payload());
    conn.send(&mut lab, &p);
    conn.answer(&mut lab, &ok_packet(2));
    assert!(lab.target.logged_in);
    // Bytes that would read as an execute of a statement never seen: in a compressed session
    // they are a frame's, and go untouched (not given an id no server has).
    let mut payload = vec![COM_STMT_EXECUTE];
    payload.extend_from_slice(&1u32.to_le_bytes());
    conn.send(&mut lab, &packet_of(&payload));
    let sent = lab.target.commands.last().unwrap();
    assert_eq!(sent[1..5], 1u32.to_le_bytes());
    assert_eq!(summary(&lab), "");
}

#[test]
fn online_answers_that_come_before_their_prepares_are_read_still_pair_with_them() {
    // The target is slow to greet: the client's login and prepares wait behind the hold while
    // the online server's answers to them are captured.
    let mut lab = lab();
    lab.target.hold_greeting = true;
    lab.target.next_statement = 100;
    let mut conn = Conn::fresh(&mut lab, CLIENT, true);
    conn.prepare(&mut lab, "insert into t values (?)", 1);
    conn.prepare(&mut lab, "update t set v = ?", 2);
    conn.name(&mut lab, COM_STMT_EXECUTE, 2);
    assert!(lab.target.hellos.is_empty(), "nothing went yet");
    lab.target.hold_greeting = false;
    lab.target.greet(addr(CLIENT));
    lab.drive();
    conn.name(&mut lab, COM_STMT_EXECUTE, 1);
    assert_eq!(
        lab.target.executed,
        ["update t set v = ?", "insert into t values (?)"]
    );
}

#[test]
fn replicators_sharing_one_hook_share_logins_and_statements() {
    // Two capture threads: the client's earlier session falls to one, its joined session to
    // the other; the joined one still logs in as that login and prepares its statements.
    let credentials = Credentials::new(vec!["app:s3cret".parse::<Login>().unwrap()]);
    let hook = crate::Protocol::Mysql.hook(&credentials);
    let replicator = || super::replicator(hook.dialect());
    let target = || Target::new(NATIVE, Some(vec![account(NATIVE)]));
    let mut first = Lab {
        rep: replicator(),
        now: Instant::now(),
        target: target(),
    };
    let mut conn = Conn::fresh(&mut first, CLIENT2, true);
    conn.prepare(&mut first, "insert into t values (?)", 1);
    let mut second = Lab {
        rep: replicator(),
        now: Instant::now(),
        target: target(),
    };
    let mut joined = Conn::joined(CLIENT, true);
    joined.name(&mut second, COM_STMT_EXECUTE, 1);
    assert!(second.target.logged_in);
    assert_eq!(second.target.executed, ["insert into t values (?)"]);
    assert_eq!(second.logins(), [Outcome::JoinedLoggedIn]);
    // One line for both.
    let summary = hook.summary().unwrap();
    assert!(
        summary.starts_with("mysql prepared statements: 2 prepared at the target"),
        "{summary}"
    );
    assert!(summary.contains("1 re-prepared"), "{summary}");
}

#[test]
fn a_session_compressed_in_a_way_the_target_does_not_offer_is_ended_as_unsupported() {
    // The online server offered zstd and the client took it; this target does not offer it.
    let mut lab = lab();
    lab.connect(CLIENT);
    let mut h = HandshakeResponse::own("app", u32::MAX);
    h.capabilities |= packet::CLIENT_ZSTD_COMPRESSION;
    h.auth = vec![0x5a; 20];
    let mut p = Vec::new();
    packet::write(&mut p, 1, &h.payload());
    lab.client(CLIENT, 1, 101, Flags::ACK | Flags::PSH, &p);
    assert!(lab.target.hellos.is_empty(), "no login sent");
    assert_eq!(lab.logins(), [Outcome::Unsupported]);
    assert_eq!(lab.rep.stats().sessions_active, 0);
}
