//! End to end, PostgreSQL (`--protocol postgres`): PostgreSQL online with scram-sha-256 and at
//! the target (scram-sha-256, or trust), pgbench initialised the same on both; pgbench's
//! clients run online while tcpcopy replicates, each session logging in at the target with
//! `--login`. The target's pgbench tables must end equal to the online ones: every account,
//! teller and branch balance, every history row (its time aside).
//!
//! And a session open before tcpcopy started (its login never captured) continues at the target
//! after a login of tcpcopy's own.
//!
//! Needs root (namespaces) and PostgreSQL (package postgresql); skips without them, unless
//! TCPCOPY_REQUIRE_POSTGRES=1 (CI), which makes a missing PostgreSQL fail.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lab::postgres::{self, PgAuth};
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};

const CLIENTS: u32 = 8;
const TRANSACTIONS: u32 = 150;

fn runnable() -> bool {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    if postgres::bin_dir().is_none() {
        assert!(
            std::env::var("TCPCOPY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "PostgreSQL is absent and TCPCOPY_REQUIRE_POSTGRES=1"
        );
        eprintln!("skipped: no PostgreSQL (apt-get install postgresql)");
        return false;
    }
    true
}

fn pgbench_replicates(tag: &str, mode: Mode, target_auth: PgAuth) {
    pgbench_replicates_as("postgres", tag, mode, target_auth)
}

/// [`pgbench_replicates`] with `--protocol protocol`.
fn pgbench_replicates_as(protocol: &str, tag: &str, mode: Mode, target_auth: PgAuth) {
    let _guard = sequential();
    let login = format!("{}:{}", postgres::USER, postgres::PASSWORD);
    let spec = ScenarioSpec {
        extra_tcpcopy_args: ["--protocol", protocol, "--login", &login]
            .map(String::from)
            .to_vec(),
        target_servers: Some(Servers::Postgres(target_auth)),
        start_tcpcopy: false,
        ..ScenarioSpec::new(tag, mode, Servers::Postgres(PgAuth::ScramSha256), bin_dir())
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    {
        let (online, target) = sc.postgres().expect("PostgreSQL on both sides");
        online.pgbench_init(1).expect("pgbench -i online");
        target.pgbench_init(1).expect("pgbench -i at the target");
        assert_eq!(
            online.pgbench_state().unwrap(),
            target.pgbench_state().unwrap()
        );
    }
    sc.start_tcpcopy().expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("connected");
    let sniffer = sniff_client(&sc);
    let out = postgres::pgbench(
        &sc.lab,
        sc.lab.ns_client(),
        sc.online_service(),
        CLIENTS,
        TRANSACTIONS,
    )
    .expect("pgbench runs online");
    assert!(
        out.contains(&format!(
            "number of transactions actually processed: {}",
            CLIENTS * TRANSACTIONS
        )),
        "{out}"
    );
    let (online, target) = sc.postgres().unwrap();
    let expected = online.pgbench_state().unwrap();
    let history = expected
        .lines()
        .filter(|l| l.split('|').count() == 4)
        .count();
    assert_eq!(
        history as u32,
        CLIENTS * TRANSACTIONS,
        "online history rows"
    );
    // The target finishes a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = target.pgbench_state().unwrap();
    while got != expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        got = target.pgbench_state().unwrap();
    }
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert!(
        got == expected,
        "the target's pgbench tables differ from the online ones\n{}\ntcpcopy: {}",
        first_difference(&expected, &got),
        final_line(&log)
    );
    // pgbench's clients and its first connection (the scale it reads) logged in, none failed.
    let logins = logins_line(&log);
    let ok: u32 = logins
        .strip_prefix("logins ok ")
        .and_then(|l| l.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{logins}"));
    assert!(ok > CLIENTS, "{logins}");
    assert!(logins.contains("(joined 0) not logged in 0"), "{logins}");
    assert_client_isolated(sniffer);
}

/// tcpcopy's final line on logins (`--protocol`), from "logins ok" on.
fn logins_line(log: &str) -> String {
    log.lines()
        .rev()
        .find_map(|l| {
            // "final PROTOCOL logins ok ..."
            let (_, protocol_on) = l.split_once("final ")?;
            let (_, logins) = protocol_on.split_once(' ')?;
            logins.starts_with("logins ok ").then(|| logins.to_string())
        })
        .unwrap_or_else(|| "(no logins line)".into())
}

/// The first line where `got` differs from `expected`, for the failure message.
fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    let at = e
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(e.len().min(g.len()));
    format!(
        "{} lines online, {} at the target; line {at}: online {:?}, target {:?}",
        e.len(),
        g.len(),
        e.get(at),
        g.get(at)
    )
}

/// Done-when 3: scram-sha-256 on both sides.
#[test]
fn pgbench_with_scram_on_both_sides_leaves_equal_tables() {
    if runnable() {
        pgbench_replicates("pgS", Mode::Assistant, PgAuth::ScramSha256);
    }
}

/// Done-when 3, the "trust" target: it lets each session in at once.
#[test]
fn pgbench_against_a_trust_target_leaves_equal_tables() {
    if runnable() {
        pgbench_replicates("pgT", Mode::Assistant, PgAuth::Trust);
    }
}

/// Polls `f` every 200 ms until it returns `want` or 30 s pass; returns its last value.
fn settle(want: &str, mut f: impl FnMut() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = f();
    while got != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = f();
    }
    got
}

/// Done-when 4, PostgreSQL: psql logs in and inserts once before tcpcopy starts, then inserts
/// 200 more rows on the same connection; the target gets those 200, the session logged in by
/// tcpcopy (as the first --login user, into the database of the same name).
#[test]
fn a_session_open_before_tcpcopy_started_continues_at_the_target() {
    if !runnable() {
        return;
    }
    let _guard = sequential();
    let login = format!("{}:{}", postgres::USER, postgres::PASSWORD);
    let spec = ScenarioSpec {
        extra_tcpcopy_args: [
            "--protocol",
            "postgres",
            "--login",
            &login,
            "--report",
            "{scratch}/report.json",
        ]
        .map(String::from)
        .to_vec(),
        start_tcpcopy: false,
        ..ScenarioSpec::new(
            "pgJ",
            Mode::Assistant,
            Servers::Postgres(PgAuth::ScramSha256),
            bin_dir(),
        )
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let table = "CREATE TABLE joined (n int); GRANT ALL ON joined TO bench";
    let count = "SELECT count(*), coalesce(min(n), -1), coalesce(max(n), -1) FROM joined";
    {
        let (online, target) = sc.postgres().expect("PostgreSQL on both sides");
        online.sql(postgres::DATABASE, table).unwrap();
        target.sql(postgres::DATABASE, table).unwrap();
    }
    let psql = postgres::bin_dir().unwrap().join("psql");
    let online_ip = sc.online_service().ip().to_string();
    let mut client = Command::new("ip")
        .args(["netns", "exec", sc.lab.ns_client()])
        .arg(&psql)
        .args([
            "-X",
            "-q",
            "-h",
            &online_ip,
            "-U",
            postgres::USER,
            postgres::DATABASE,
        ])
        .env("PGPASSWORD", postgres::PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql starts");
    let mut stdin = client.stdin.take().unwrap();
    writeln!(stdin, "INSERT INTO joined VALUES (0);").unwrap();
    let online_count = || {
        sc.postgres()
            .unwrap()
            .0
            .sql(postgres::DATABASE, count)
            .unwrap()
    };
    assert_eq!(
        settle("1|0|0\n", online_count),
        "1|0|0\n",
        "psql logged in online"
    );
    sc.start_tcpcopy().expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("connected");
    for n in 1..=200 {
        writeln!(stdin, "INSERT INTO joined VALUES ({n});").unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(stdin);
    assert!(client.wait().unwrap().success(), "psql");
    let (online, target) = sc.postgres().unwrap();
    assert_eq!(
        online.sql(postgres::DATABASE, count).unwrap(),
        "201|0|200\n"
    );
    let got = settle("200|1|200\n", || {
        target.sql(postgres::DATABASE, count).unwrap()
    });
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(got, "200|1|200\n", "tcpcopy: {log}");
    let logins = logins_line(&log);
    assert!(
        logins.starts_with("logins ok 1 (joined 1) not logged in 0"),
        "{logins}"
    );
    // The report says the same.
    let report = sc
        .read_report("report.json")
        .unwrap_or_else(|e| panic!("{e:#}\n{log}"));
    let l = report.sessions.logins.expect("logins in the report");
    assert_eq!(
        (l.protocol.as_str(), l.ok, l.joined, l.not_logged_in),
        ("postgres", 1, 1, 0),
        "{l:?}"
    );
}

/// Stream mode (`--mode stream`: tcpcopy's own connections, no intercept), scram-sha-256 on
/// both sides: pgbench's sessions log in at the target with the SCRAM exchange made for its
/// own nonce and salt, read from tcpcopy's connections; balances and history end equal.
#[test]
fn pgbench_in_stream_mode_with_scram_on_both_sides_leaves_equal_tables() {
    if runnable() {
        pgbench_replicates("pgW", Mode::Stream, PgAuth::ScramSha256);
    }
}

/// Cancel requests: psql runs `SELECT pg_sleep(30)` online and is interrupted (SIGINT: psql
/// cancels the query from a new connection, with the online backend's pid and secret key).
/// tcpcopy sends that CancelRequest with the key of the session's backend at the target, so
/// the target's pg_sleep ends too, well before its 30 s.
#[test]
fn a_query_cancelled_online_is_cancelled_at_the_target() {
    if !runnable() {
        return;
    }
    let _guard = sequential();
    let login = format!("{}:{}", postgres::USER, postgres::PASSWORD);
    let spec = ScenarioSpec {
        extra_tcpcopy_args: ["--protocol", "postgres", "--login", &login]
            .map(String::from)
            .to_vec(),
        ..ScenarioSpec::new(
            "pgC",
            Mode::Assistant,
            Servers::Postgres(PgAuth::ScramSha256),
            bin_dir(),
        )
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("connected");
    let sleeping = "SELECT count(*) FROM pg_stat_activity \
                    WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'";
    let psql = postgres::bin_dir().unwrap().join("psql");
    let online_ip = sc.online_service().ip().to_string();
    let client = Command::new("ip")
        .args(["netns", "exec", sc.lab.ns_client()])
        .arg(&psql)
        .args([
            "-X",
            "-h",
            &online_ip,
            "-U",
            postgres::USER,
            postgres::DATABASE,
        ])
        .args(["-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", postgres::PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql starts");
    let (online, target) = sc.postgres().unwrap();
    assert_eq!(
        settle("1\n", || online.sql("postgres", sleeping).unwrap()),
        "1\n",
        "psql's query runs online"
    );
    assert_eq!(
        settle("1\n", || target.sql("postgres", sleeping).unwrap()),
        "1\n",
        "the query runs at the target"
    );
    // `ip netns exec` runs psql in its own place: its pid is psql's.
    let interrupted = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &client.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("canceling statement due to user request"),
        "psql cancelled online: {stderr}"
    );
    let got = settle("0\n", || target.sql("postgres", sleeping).unwrap());
    let took = interrupted.elapsed();
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(got, "0\n", "the target's query still runs\ntcpcopy: {log}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        log.contains(
            "postgres cancel requests: 1 sent with the target's backend key, 0 for a backend \
             whose target key was not known (not sent)"
        ),
        "{log}"
    );
}

/// `--protocol auto`: pgbench's sessions are found to be PostgreSQL by their startup message
/// (or SSLRequest) and log in at the target as with `--protocol postgres`.
#[test]
fn pgbench_with_protocol_auto_leaves_equal_tables() {
    if runnable() {
        pgbench_replicates_as("auto", "pgA", Mode::Assistant, PgAuth::ScramSha256);
    }
}
