//! Answers as real servers and captures give them, on simulated time: MySQL 8's 13-byte
//! COM_STMT_PREPARE_OK, MariaDB's pipelined prepare + execute (-1), answers repeated
//! (retransmitted, with a later acknowledgment) or two in one segment, an online answer the
//! capture lost, an empty packet. No statement may run under another's id.

use super::*;
use crate::mysql::stmt::{COM_STMT_EXECUTE, COM_STMT_PREPARE};

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    packet::write(&mut p, seq, payload);
    p
}

fn prepare_ok(id: u32, len: usize) -> Vec<u8> {
    let mut ok = vec![0];
    ok.extend_from_slice(&id.to_le_bytes());
    ok.resize(len, 0);
    pkt(1, &ok)
}

fn exec(id: u32) -> Vec<u8> {
    let mut payload = vec![COM_STMT_EXECUTE];
    payload.extend_from_slice(&id.to_le_bytes());
    payload.extend_from_slice(&[0, 1, 0, 0, 0]);
    pkt(0, &payload)
}

fn prep(sql: &str) -> Vec<u8> {
    let mut payload = vec![COM_STMT_PREPARE];
    payload.extend_from_slice(sql.as_bytes());
    pkt(0, &payload)
}

fn lab() -> Lab {
    Lab::new(
        Target::new(NATIVE, Some(vec![account(NATIVE)])),
        &["app:s3cret"],
    )
}

/// The client's next offset and the online server's (what its segments acknowledge).
struct Client {
    c: u32,
    o: u32,
}

impl Client {
    /// A client segment, acknowledging what the online server sent so far.
    fn send(&mut self, lab: &mut Lab, bytes: &[u8]) {
        lab.client(CLIENT, self.c, self.o, Flags::ACK | Flags::PSH, bytes);
        self.c += bytes.len() as u32;
    }

    /// The online server's answer, captured.
    fn answer(&mut self, lab: &mut Lab, bytes: &[u8]) {
        online(lab, self.o, self.c, bytes);
        self.o += bytes.len() as u32;
    }
}

/// Logs in (the online server's OK captured when `answers`).
fn login(lab: &mut Lab, answers: bool) -> Client {
    lab.connect(CLIENT);
    let h = hello("app", NATIVE, None);
    lab.client(CLIENT, 1, 101, Flags::ACK | Flags::PSH, &h);
    let ok = pkt(2, &[0, 0, 0, 2, 0, 0, 0]);
    if answers {
        online(lab, 101, 1 + h.len() as u32, &ok);
    }
    Client {
        c: 1 + h.len() as u32,
        o: 101 + ok.len() as u32,
    }
}

fn online(lab: &mut Lab, o: u32, c: u32, bytes: &[u8]) {
    let p = segment(
        addr(ONLINE),
        addr(CLIENT),
        O_ISN + o,
        C_ISN + c,
        Flags::ACK | Flags::PSH,
        bytes,
    );
    lab.now += Duration::from_millis(1);
    lab.rep.handle_capture(lab.now, &p);
    lab.drive();
}

/// A 13-byte COM_STMT_PREPARE_OK (MySQL 8, CLIENT_OPTIONAL_RESULTSET_METADATA: metadata_follows).
#[test]
fn a_13_byte_prepare_ok_pairs() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    lab.target.ok_len = 13;
    let mut cl = login(&mut lab, true);
    let p = prep("select ?");
    cl.send(&mut lab, &p);
    let ok = prepare_ok(1, 13);
    cl.answer(&mut lab, &ok);
    let e = exec(1);
    cl.send(&mut lab, &e);
    let sent = lab.target.commands.last().unwrap().clone();
    assert_eq!(
        sent[1..5],
        100u32.to_le_bytes(),
        "{}",
        lab.rep.dialect_summary().unwrap_or_default()
    );
}

/// The same without the online answers (the target's id is kept): the execute runs.
#[test]
fn a_13_byte_prepare_ok_pairs_without_online_answers_too() {
    let mut lab = lab();
    lab.target.next_statement = 1;
    lab.target.ok_len = 13;
    let mut cl = login(&mut lab, false);
    let p = prep("select ?");
    cl.send(&mut lab, &p);
    let e = exec(1);
    // The online server's answer (17 bytes) is not captured.
    cl.o += 17;
    cl.send(&mut lab, &e);
    for _ in 0..50 {
        lab.now += Duration::from_millis(100);
        lab.rep.handle_timeout(lab.now);
        lab.drive();
    }
    assert_eq!(lab.target.executed, ["select ?"]);
}

/// MariaDB pipelining (Connector/J 3, node mariadb): PREPARE + EXECUTE(-1) in one segment; the
/// online answers acknowledge both. Then the statement is executed again by its id.
#[test]
fn a_pipelined_prepare_and_execute_of_the_last_prepared_go_together() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut cl = login(&mut lab, true);
    let mut both = prep("select ?");
    both.extend_from_slice(&exec(u32::MAX));
    cl.send(&mut lab, &both);
    let mut ans = prepare_ok(1, 12);
    ans.extend_from_slice(&pkt(1, &[0, 1, 0, 2, 0, 0, 0]));
    cl.answer(&mut lab, &ans);
    let e = exec(1);
    cl.send(&mut lab, &e);
    assert_eq!(
        lab.target.executed,
        ["select ?", "select ?"],
        "{}",
        lab.rep.dialect_summary().unwrap_or_default()
    );
}

/// The target's answer to prepare 1 comes again (retransmitted) after prepare 2 reached it:
/// its acknowledgment now covers prepare 2.
#[test]
fn a_repeated_target_answer_does_not_pair_with_the_next_prepare() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut cl = login(&mut lab, true);
    let s0 = lab.target.snd_nxt;
    let p1 = prep("insert into t values (?)");
    cl.send(&mut lab, &p1);
    let ok = prepare_ok(1, 12);
    cl.answer(&mut lab, &ok);
    lab.target.hold_answers = true;
    let p2 = prep("update t set v = ?");
    cl.send(&mut lab, &p2);
    let ok2 = prepare_ok(2, 12);
    cl.answer(&mut lab, &ok2);
    // Retransmission of answer 1 with the current acknowledgment.
    let again = segment(
        addr(TARGET),
        addr(CLIENT),
        s0,
        lab.target.rcv_nxt.unwrap(),
        Flags::ACK | Flags::PSH,
        &prepare_ok(100, 12),
    );
    let payload = TcpPacket::parse(&again).unwrap().payload().to_vec();
    lab.rep.handle_response_head(lab.now, &again, &payload);
    lab.target.hold_answers = false;
    lab.target.out.append(&mut lab.target.held);
    lab.drive();
    let e = exec(2);
    cl.send(&mut lab, &e);
    assert_eq!(lab.target.executed, ["update t set v = ?"]);
}

/// Two answers in one target segment (the target got both prepares before answering: the core
/// sent the second after response_wait).
#[test]
fn two_prepare_answers_in_one_target_segment_both_pair() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut cl = login(&mut lab, true);
    lab.target.hold_answers = true;
    let p1 = prep("insert into t values (?)");
    cl.send(&mut lab, &p1);
    let ok = prepare_ok(1, 12);
    cl.answer(&mut lab, &ok);
    let p2 = prep("update t set v = ?");
    cl.send(&mut lab, &p2);
    let ok2 = prepare_ok(2, 12);
    cl.answer(&mut lab, &ok2);
    let e = exec(2);
    cl.send(&mut lab, &e);
    // Let response_wait pass: the core sends prepare 2 unanswered.
    for _ in 0..10 {
        lab.now += Duration::from_millis(100);
        lab.rep.handle_timeout(lab.now);
        lab.drive();
    }
    // The target answers both in one segment.
    let held = std::mem::take(&mut lab.target.held);
    let mut payload = Vec::new();
    let mut first = None;
    for s in &held {
        let p = TcpPacket::parse(s).unwrap();
        first.get_or_insert(p.seq().0);
        payload.extend_from_slice(p.payload());
    }
    lab.target.hold_answers = false;
    let seg = segment(
        addr(TARGET),
        addr(CLIENT),
        first.unwrap(),
        lab.target.rcv_nxt.unwrap(),
        Flags::ACK | Flags::PSH,
        &payload,
    );
    lab.rep.handle_response_head(lab.now, &seg, &payload);
    lab.drive();
    for _ in 0..10 {
        lab.now += Duration::from_millis(100);
        lab.rep.handle_timeout(lab.now);
        lab.drive();
    }
    assert_eq!(
        lab.target.executed,
        ["update t set v = ?"],
        "held answers: {}",
        held.len()
    );
}

/// A pipelined prepare, then another prepare: the first statement, executed by its id later,
/// runs itself (not the second, the last prepared).
#[test]
fn a_pipelined_prepare_is_named_by_its_id_later() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut cl = login(&mut lab, true);
    let mut both = prep("insert into t values (?)");
    both.extend_from_slice(&exec(u32::MAX));
    cl.send(&mut lab, &both);
    let mut ans = prepare_ok(1, 12);
    ans.extend_from_slice(&pkt(1, &[0, 1, 0, 2, 0, 0, 0]));
    cl.answer(&mut lab, &ans);
    let p2 = prep("delete from t where k = ?");
    cl.send(&mut lab, &p2);
    let ok2 = prepare_ok(2, 12);
    cl.answer(&mut lab, &ok2);
    let e = exec(1);
    cl.send(&mut lab, &e);
    assert_eq!(
        lab.target.executed,
        ["insert into t values (?)", "insert into t values (?)"],
        "{}",
        lab.rep.dialect_summary().unwrap_or_default()
    );
}

/// A joined session names a statement never seen, after one it re-prepared: it goes as id 0
/// (an error at the target), not as -1, which at a MariaDB target runs the last prepared
/// statement.
#[test]
fn an_unknown_statement_is_named_by_id_0_not_mariadbs_last_prepared() {
    let mut lab = lab();
    // An earlier session of the client's address prepares statement 1.
    let mut cl = login(&mut lab, true);
    let p = prep("delete from t");
    cl.send(&mut lab, &p);
    let ok = prepare_ok(1, 12);
    cl.answer(&mut lab, &ok);
    lab.target = Target::new(NATIVE, Some(vec![account(NATIVE)]));
    // Joined session from the same address, other port.
    lab.client(CLIENT2, 777, 555, Flags::ACK | Flags::PSH, &exec(1));
    lab.client(CLIENT2, 777 + 14, 566, Flags::ACK | Flags::PSH, &exec(4));
    // Statement 4 was never seen: it goes as 0, which no server has (MariaDB would run the
    // statement prepared last, "delete from t", under -1).
    assert_eq!(lab.target.executed, ["delete from t", "?0"]);
}

/// The online server's answer to prepare 1 is captured again (retransmitted: the client's ACK
/// was lost) after the client sent prepare 2: its acknowledgment is prepare 2's end.
#[test]
fn a_repeated_online_answer_does_not_pair_with_the_next_prepare() {
    let mut lab = lab();
    lab.target.next_statement = 100;
    let mut cl = login(&mut lab, true);
    let p1 = prep("insert into t values (?)");
    cl.send(&mut lab, &p1);
    let ok = prepare_ok(1, 12);
    let o1 = cl.o;
    cl.answer(&mut lab, &ok);
    let p2 = prep("update t set v = ?");
    cl.send(&mut lab, &p2);
    online(&mut lab, o1, cl.c, &ok); // the retransmission
    let ok2 = prepare_ok(2, 12);
    cl.answer(&mut lab, &ok2);
    let e = exec(1);
    cl.send(&mut lab, &e);
    cl.o += 11;
    let e = exec(2);
    cl.send(&mut lab, &e);
    assert_eq!(
        lab.target.executed,
        ["insert into t values (?)", "update t set v = ?"],
        "{}",
        lab.rep.dialect_summary().unwrap_or_default()
    );
}

/// A fresh (not joined) session whose prepare's online answer was not captured (ring drop):
/// its execute must not re-prepare another connection's statement 1 of the same address.
#[test]
fn a_lost_online_answer_leaves_the_statement_unknown_not_another_sessions() {
    let mut lab = lab();
    // Another connection of the address: its statement 1 deletes.
    let mut other = {
        lab.connect(CLIENT2);
        let h = hello("app", NATIVE, None);
        lab.client(CLIENT2, 1, 101, Flags::ACK | Flags::PSH, &h);
        (1 + h.len() as u32, 112u32)
    };
    let p = prep("delete from t");
    lab.client(CLIENT2, other.0, other.1, Flags::ACK | Flags::PSH, &p);
    other.0 += p.len() as u32;
    let seg = segment(
        addr(ONLINE),
        addr(CLIENT2),
        O_ISN + other.1,
        C_ISN + other.0,
        Flags::ACK | Flags::PSH,
        &prepare_ok(1, 12),
    );
    lab.now += Duration::from_millis(1);
    lab.rep.handle_capture(lab.now, &seg);
    lab.drive();
    lab.target = Target::new(NATIVE, Some(vec![account(NATIVE)]));
    // This connection: login OK captured online, the prepare's answer lost by the capture.
    let mut cl = login(&mut lab, true);
    let p = prep("select ?");
    cl.send(&mut lab, &p);
    // The online server's answer (16 bytes) is lost by the capture.
    cl.o += 16;
    let e = exec(1);
    cl.send(&mut lab, &e);
    // Its online id is not known: it goes as 0 (an error at the target), not as the other
    // session's statement 1 ("delete from t"), and not guessed.
    assert_eq!(
        lab.target.executed,
        ["?0"],
        "{}",
        lab.rep.dialect_summary().unwrap_or_default()
    );
}

/// A zero-length packet with sequence id 0 after the login (its command byte would be the
/// next packet's): passed over, no panic.
#[test]
fn an_empty_packet_after_the_login_is_passed_over() {
    let mut lab = lab();
    let mut cl = login(&mut lab, false);
    // An empty packet, then a query (whose first byte was read as the empty one's command).
    cl.send(&mut lab, &[0, 0, 0, 0]);
    cl.o += 1;
    cl.send(&mut lab, &query("select 1"));
    assert_eq!(lab.target.commands.last().unwrap(), b"\x03select 1");
    // An empty packet with a prepare's command byte behind it, not all there.
    let mut lab = super::pairing::lab();
    let mut cl = login(&mut lab, false);
    cl.send(&mut lab, &[0, 0, 0, 0, 0x16, 0, 0, 0]);
}
