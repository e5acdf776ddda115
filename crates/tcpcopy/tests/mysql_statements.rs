//! Prepared statements of MariaDB sessions (`--protocol mysql`), with a client that prepares
//! them on the server as connection pools do (DBD::MariaDB with server-side prepares): the
//! statement ids the online server handed out are mapped to the target's, and a session open
//! before tcpcopy started, whose statements were prepared then, gets them prepared again at the
//! target from those another session of its client prepared. The target's table must equal the
//! online one, row for row. With MySQL's own Python driver too, whose sessions also change
//! their user (COM_CHANGE_USER), made again for the target's salt. Each test builds and removes
//! its own lab (needs root).

mod common;
use common::*;

use std::time::Duration;

use lab::mariadb::{Driver, MariadbAuth, PreparingSession, PASSWORD, USER};
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};

const INSERT: &str = "INSERT INTO t VALUES (?, ?, ?)";
const UPDATE: &str = "UPDATE t SET n = n + ? WHERE id = ?";
const DELETE: &str = "DELETE FROM t WHERE id = ?";

#[test]
fn prepared_statements_reach_the_target_under_its_own_ids_joined_sessions_too() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let _guard = common::sequential();
    // Two capture threads: a session and the earlier one of its client it prepares its
    // statements from may fall to either.
    let (mut sc, login) = scenario("myPS", &[(USER, PASSWORD)], &["--threads", "2"]);
    let sniffer = sniff_client(&sc);
    let online = sc.online_service();
    let client = sc.lab.ns_client().to_string();
    let dir = sc.scratch.path().to_path_buf();

    // Open before tcpcopy starts: logged in, its statements prepared (ids 1 and 2 online).
    let mut early = PreparingSession::open(&client, online, &dir).expect("the early session");
    early.prepare("ins", INSERT).unwrap();
    early.prepare("upd", UPDATE).unwrap();
    sc.start_tcpcopy_with(&login).expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connected to intercept");

    // A session of the same client after tcpcopy started: the same statements, prepared in
    // the same order, then one more.
    let mut pool = PreparingSession::open(&client, online, &dir).expect("a new session");
    pool.prepare("ins", INSERT).unwrap();
    pool.prepare("upd", UPDATE).unwrap();
    for id in 0..300 {
        pool.execute("ins", &[&id, &"pool", &id]).unwrap();
    }
    for id in 0..100 {
        pool.execute("upd", &[&7, &id]).unwrap();
    }
    pool.prepare("del", DELETE).unwrap();
    for id in 250..300 {
        pool.execute("del", &[&id]).unwrap();
    }
    pool.close("ins").unwrap();
    pool.finish().expect("the new session ends");

    // The early session goes on with the statements it prepared before tcpcopy started: the
    // update first (the target prepares it first, under another id than online).
    for id in 0..50 {
        early.execute("upd", &[&1000, &id]).unwrap();
    }
    for id in 0..500 {
        early
            .execute("ins", &[&(10_000 + id), &"early", &id])
            .unwrap();
    }
    // One prepared after tcpcopy started: its id comes from the online server's answer.
    early.prepare("del", DELETE).unwrap();
    for id in 10_400..10_500 {
        early.execute("del", &[&id]).unwrap();
    }
    early.close("upd").unwrap();
    early.finish().expect("the early session ends");

    let (want, got) = {
        let (on, at) = sc.mariadbs().expect("MariaDB servers");
        lab::mariadb::rows_when_equal(on, at, Duration::from_secs(60)).expect("rows")
    };
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(want.len(), 250 + 400, "online rows");
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
    let statements = log
        .lines()
        .rev()
        .find(|l| l.contains("mysql prepared statements:"))
        .unwrap_or("(no statements line)");
    assert!(
        got == want,
        "target rows differ: {} online, {} target, missing e.g. {missing:?}\n{}\n{statements}",
        want.len(),
        got.len(),
        final_line(&log),
    );
    // Both statements of the early session were prepared again at the target, none was
    // missing, and its later statement got the target's id.
    assert!(
        statements.contains("2 re-prepared for joined sessions, 0 naming a statement not found"),
        "{statements}"
    );
    assert!(
        log.contains("logins ok 2 (joined 1) not logged in 0"),
        "{}",
        final_line(&log)
    );
    eprintln!("{} rows equal; {statements}", want.len());
    assert_client_isolated(sniffer);
}

/// The lab: MariaDB online and at the target (both checking passwords), tcpcopy not started
/// (`--protocol mysql` and `args`); and the `--login-file` arguments giving `logins`.
fn scenario(tag: &str, logins: &[(&str, &str)], args: &[&str]) -> (Scenario, Vec<String>) {
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        target_servers: Some(Servers::Mariadb(MariadbAuth::Passwords)),
        extra_tcpcopy_args: ["--protocol", "mysql"]
            .iter()
            .chain(args)
            .map(|a| a.to_string())
            .collect(),
        ..ScenarioSpec::new(
            tag,
            Mode::Assistant,
            Servers::Mariadb(MariadbAuth::Passwords),
            bin_dir(),
        )
    };
    let sc = Scenario::start(&spec).expect("scenario starts");
    use std::os::unix::fs::PermissionsExt;
    let file = sc.scratch.path().join("logins");
    let lines: String = logins.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    // Read by tcpcopy, which may run as nobody.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(sc.scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let login = vec!["--login-file".to_string(), file.display().to_string()];
    (sc, login)
}

/// The second user the Python sessions change to.
const REPORT: &str = "report";
const REPORT_PASSWORD: &str = "r3port-Pw";

/// mysql-connector-python (MySQL's own driver): a session open before tcpcopy started and one
/// after, each inserting through a prepared statement, then changing its user (COM_CHANGE_USER)
/// and inserting as that user. The rows record the user the server ran each insert as
/// (`CURRENT_USER()`): the target's must equal the online ones, so the target ran the inserts
/// after the change as the new user.
#[test]
fn a_change_of_user_logs_in_again_at_the_target() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let python = lab::mariadb::TOOLS_PYTHON;
    if !lab::mariadb::has_connector(python) {
        assert!(
            std::env::var_os("TCPCOPY_REQUIRE_MYSQL_CONNECTOR").is_none(),
            "mysql-connector-python is missing from {python} (see .ci/run)"
        );
        eprintln!("skipped: no mysql-connector-python in {python}");
        return;
    }
    let _guard = common::sequential();
    let (mut sc, login) = scenario("myCU", &[(USER, PASSWORD), (REPORT, REPORT_PASSWORD)], &[]);
    {
        let (on, at) = sc.mariadbs().expect("MariaDB servers");
        for db in [on, at] {
            db.sql(&format!(
                "CREATE USER '{REPORT}'@'%' IDENTIFIED BY '{REPORT_PASSWORD}'; \
                 GRANT ALL ON {}.* TO '{REPORT}'@'%'",
                lab::mariadb::DATABASE
            ))
            .expect("the second user");
        }
    }
    let sniffer = sniff_client(&sc);
    let online = sc.online_service();
    let client = sc.lab.ns_client().to_string();
    let dir = sc.scratch.path().to_path_buf();
    let driver = Driver::Python(python);
    const AS_USER: &str = "INSERT INTO t VALUES (?, CURRENT_USER(), ?)";

    let mut early = PreparingSession::open_with(driver, &client, online, &dir).expect("early");
    early.prepare("ins", AS_USER).unwrap();
    sc.start_tcpcopy_with(&login).expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connected to intercept");

    let mut later = PreparingSession::open_with(driver, &client, online, &dir).expect("later");
    later.prepare("ins", AS_USER).unwrap();
    for id in 0..100 {
        later.execute("ins", &[&id, &id]).unwrap();
    }
    later.change_user(REPORT, REPORT_PASSWORD).unwrap();
    later.prepare("ins", AS_USER).unwrap();
    for id in 100..200 {
        later.execute("ins", &[&id, &id]).unwrap();
    }
    later.finish().expect("the later session ends");

    for id in 1000..1100 {
        early.execute("ins", &[&id, &id]).unwrap();
    }
    early.change_user(REPORT, REPORT_PASSWORD).unwrap();
    early.prepare("ins", AS_USER).unwrap();
    for id in 1100..1200 {
        early.execute("ins", &[&id, &id]).unwrap();
    }
    early.finish().expect("the early session ends");

    let (want, got) = {
        let (on, at) = sc.mariadbs().expect("MariaDB servers");
        lab::mariadb::rows_when_equal(on, at, Duration::from_secs(60)).expect("rows")
    };
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    let summary = log
        .lines()
        .rev()
        .find(|l| l.contains("mysql prepared statements:"))
        .unwrap_or("(no statements line)");
    assert_eq!(want.len(), 400, "online rows");
    let as_report = want.iter().filter(|r| r.contains("\treport@")).count();
    assert_eq!(as_report, 200, "online, half the rows inserted as {REPORT}");
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
    assert!(
        got == want,
        "target rows differ: {} online, {} target, missing e.g. {missing:?}\n{}\n{summary}",
        want.len(),
        got.len(),
        final_line(&log),
    );
    assert!(
        summary.ends_with("COM_CHANGE_USER 2 ok, 0 failed at the target"),
        "{summary}"
    );
    assert!(
        log.contains("logins ok 2 (joined 1) not logged in 0"),
        "{}",
        final_line(&log)
    );
    eprintln!("{} rows equal; {summary}", want.len());
    assert_client_isolated(sniffer);
}
