//! MariaDB sessions replayed whole, logins included (`--protocol mysql`): the mariadb client's
//! short sessions (one login, one insert each), long ones (1,000 inserts each) and one session
//! opened before tcpcopy started, against a target that checks passwords (tcpcopy logs in with
//! `--login-file`) and against one started with `--skip-grant-tables` (no login given). The
//! target's table must equal the online one, row for row. Each test builds and removes its own
//! lab (needs root); a mutex keeps them sequential.

mod common;
use common::*;

use std::time::{Duration, Instant};

use lab::mariadb::{run_client, ClientSession, MariadbAuth, PASSWORD, USER};
use lab::scenario::{Mode, Scenario, ScenarioSpec, Servers};

/// Short sessions, and long sessions with their inserts each.
const SHORT: u32 = 40;
const LONG: u32 = 3;
const LONG_INSERTS: u32 = 1000;

#[test]
fn mariadb_sessions_log_in_at_a_target_that_checks_passwords() {
    replicate(
        "myP",
        Mode::Assistant,
        MariadbAuth::Passwords,
        true,
        "mysql",
    );
}

/// The same with `--protocol auto`: the sessions are found to be MySQL (the joined one by its
/// server, found so by the short sessions before it).
#[test]
fn mariadb_sessions_found_by_auto_detection_log_in_too() {
    replicate("myA", Mode::Assistant, MariadbAuth::Passwords, true, "auto");
}

#[test]
fn mariadb_sessions_reach_a_target_without_grant_tables_with_no_login_given() {
    replicate(
        "myS",
        Mode::Assistant,
        MariadbAuth::SkipGrantTables,
        false,
        "mysql",
    );
}

fn insert(id: u32, who: &str, n: u32) -> String {
    format!("INSERT INTO t VALUES ({id}, '{who}', {n})")
}

fn replicate(tag: &str, mode: Mode, target_auth: MariadbAuth, with_login: bool, protocol: &str) {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        target_servers: Some(Servers::Mariadb(target_auth)),
        extra_tcpcopy_args: vec!["--protocol".into(), protocol.into()],
        ..ScenarioSpec::new(
            tag,
            mode,
            Servers::Mariadb(MariadbAuth::Passwords),
            bin_dir(),
        )
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let mut login = Vec::new();
    if with_login {
        // Read by tcpcopy, which may run as nobody.
        let file = sc.scratch.path().join("logins");
        std::fs::write(&file, format!("# the test's user\n{USER}:{PASSWORD}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(sc.scratch.path(), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        login = vec!["--login-file".to_string(), file.display().to_string()];
    }
    let sniffer = sniff_client(&sc);
    let online = sc.online_service();
    let client = sc.lab.ns_client().to_string();

    // Open before tcpcopy starts: its login is never seen.
    let mut early = ClientSession::open(&client, online).expect("the early session logs in");
    sc.start_tcpcopy_with(&login).expect("tcpcopy starts");
    sc.wait_connected(Duration::from_secs(15))
        .expect("tcpcopy connected to intercept");

    for i in 0..SHORT {
        run_client(&client, online, &insert(i, "short", i)).expect("a short session");
    }
    let long = std::thread::scope(|s| {
        let sessions: Vec<_> = (0..LONG)
            .map(|l| {
                let client = client.clone();
                s.spawn(move || -> anyhow::Result<()> {
                    let mut c = ClientSession::open(&client, online)?;
                    for k in 0..LONG_INSERTS {
                        c.send(&insert(100_000 * (l + 1) + k, "long", k))?;
                    }
                    c.finish()
                })
            })
            .collect();
        // Meanwhile the early session goes on: its inserts must reach the target too.
        for k in 0..LONG_INSERTS {
            early
                .send(&insert(900_000 + k, "early", k))
                .expect("the early session's insert");
        }
        sessions
            .into_iter()
            .map(|h| h.join().expect("session thread"))
            .collect::<anyhow::Result<Vec<()>>>()
    });
    long.expect("the long sessions");
    early.finish().expect("the early session ends");

    let (want, got) = {
        let (on, at) = sc.mariadbs().expect("MariaDB servers");
        lab::mariadb::rows_when_equal(on, at, Duration::from_secs(60)).expect("rows")
    };
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert_eq!(
        want.len() as u32,
        SHORT + (LONG + 1) * LONG_INSERTS,
        "online rows"
    );
    let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
    assert!(
        got == want,
        "target rows differ: {} online, {} target, missing e.g. {missing:?}\n{}\n{}",
        want.len(),
        got.len(),
        final_line(&log),
        logins_line(&log)
    );
    // Every session logged in: the short and long ones, and the early one by tcpcopy.
    let logins = logins_line(&log);
    assert!(
        logins.contains(&format!("final {protocol} logins")),
        "{logins}"
    );
    let ok = SHORT + LONG + 1;
    assert!(
        logins.contains(&format!("logins ok {ok} (joined 1) not logged in 0")),
        "{logins}"
    );
    eprintln!(
        "mariadb ({mode:?}, {target_auth:?}, --protocol {protocol}): {} rows equal; {logins}",
        want.len()
    );
    assert_client_isolated(sniffer);
}

/// tcpcopy's final logins line.
fn logins_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| l.contains("tcpcopy final") && l.contains(" logins ok"))
        .unwrap_or("(no logins line)")
}

/// sysbench's oltp_read_write (one client, transactions of reads, updates, a delete and an
/// insert, server-side prepared statements) through tcpcopy, its tables prepared through
/// tcpcopy too: the target's tables end equal to the online ones. One client thread: with
/// several, the target could commit conflicting transactions in another order than online.
#[test]
fn sysbench_oltp_read_write_leaves_the_same_tables_at_the_target() {
    if !lab::netlab::is_root() {
        eprintln!("skipped: needs root (network namespaces)");
        return;
    }
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        target_servers: Some(Servers::Mariadb(MariadbAuth::Passwords)),
        extra_tcpcopy_args: vec![
            "--protocol".into(),
            "mysql".into(),
            "--login".into(),
            format!("{USER}:{PASSWORD}"),
        ],
        ..ScenarioSpec::new(
            "mySb",
            Mode::Assistant,
            Servers::Mariadb(MariadbAuth::Passwords),
            bin_dir(),
        )
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let online = sc.online_service();
    let client = sc.lab.ns_client().to_string();
    let sysbench = |command: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &client, "sysbench", "oltp_read_write"])
            .arg(format!("--mysql-host={}", online.ip()))
            .arg(format!("--mysql-port={}", online.port()))
            .arg(format!("--mysql-user={USER}"))
            .arg(format!("--mysql-password={PASSWORD}"))
            .arg(format!("--mysql-db={}", lab::mariadb::DATABASE))
            .args([
                "--tables=2",
                "--table-size=1000",
                "--threads=1",
                "--events=1500",
            ])
            .args(["--time=0", "--rand-seed=7", command])
            .output()
            .expect("sysbench runs (apt-get install sysbench)");
        assert!(
            out.status.success(),
            "sysbench {command}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    sysbench("prepare");
    // The run's session must not overtake the prepare's at the target (which lags behind
    // production): wait until its tables are filled.
    {
        let (on, at) = sc.mariadbs().expect("MariaDB servers");
        let count = "SELECT COUNT(*) FROM shop.sbtest1 UNION ALL SELECT COUNT(*) FROM shop.sbtest2";
        let want = on.sql(count).expect("online counts");
        let end = Instant::now() + Duration::from_secs(60);
        while at.sql(count).unwrap_or_default() != want && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let report = sysbench("run");
    let mut differs = Vec::new();
    let (on, at) = sc.mariadbs().expect("MariaDB servers");
    for table in ["sbtest1", "sbtest2"] {
        let sql = format!("SELECT id, k, c, pad FROM shop.{table} ORDER BY id");
        let want = on.sql(&sql).expect("online rows");
        let end = Instant::now() + Duration::from_secs(60);
        let got = loop {
            let got = at.sql(&sql).unwrap_or_default();
            if got == want || Instant::now() >= end {
                break got;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        if got != want {
            let first = want.lines().zip(got.lines()).find(|(w, g)| w != g);
            differs.push(format!(
                "{table} differs: {} rows online, {} at the target, first {first:?}",
                want.lines().count(),
                got.lines().count()
            ));
        }
        assert!(want.lines().count() > 900, "{table}: {want:.200}");
    }
    let log = sc.stop_tcpcopy().expect("tcpcopy stops");
    assert!(
        differs.is_empty(),
        "{}\n{}\n{}",
        differs.join("\n"),
        final_line(&log),
        logins_line(&log)
    );
    let transactions = report
        .lines()
        .find(|l| l.contains("transactions:"))
        .unwrap_or("(no transactions line)");
    eprintln!("sysbench: tables equal; {}", transactions.trim());
}

/// What `--protocol mysql` costs tcpcopy: CPU time per request for the same sysbench load
/// (oltp_read_write, 4 clients, 4,000 transactions) replicated as plain bytes and with the
/// protocol, one after the other in the same lab, to a `--skip-grant-tables` target (which
/// takes both). A measurement, not a check: run by hand with `-- --ignored --nocapture`.
#[test]
#[ignore]
fn cpu_per_request_with_and_without_the_mysql_protocol() {
    let _guard = common::sequential();
    let spec = ScenarioSpec {
        start_tcpcopy: false,
        target_servers: Some(Servers::Mariadb(MariadbAuth::SkipGrantTables)),
        ..ScenarioSpec::new(
            "myCpu",
            Mode::Assistant,
            Servers::Mariadb(MariadbAuth::Passwords),
            bin_dir(),
        )
    };
    let mut sc = Scenario::start(&spec).expect("scenario starts");
    let sysbench = |ns: &str, host: std::net::SocketAddr, command: &str| {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sysbench", "oltp_read_write"])
            .arg(format!("--mysql-host={}", host.ip()))
            .arg(format!("--mysql-user={USER}"))
            .arg(format!("--mysql-password={PASSWORD}"))
            .arg(format!("--mysql-db={}", lab::mariadb::DATABASE))
            .args([
                "--tables=4",
                "--table-size=10000",
                "--threads=4",
                "--events=4000",
            ])
            .args(["--time=0", command])
            .output()
            .expect("sysbench runs");
        assert!(out.status.success(), "sysbench {command}");
    };
    let (client, target_ns) = (
        sc.lab.ns_client().to_string(),
        sc.lab.ns_target().to_string(),
    );
    let (online, target) = (sc.online_service(), sc.target_service());
    sysbench(&client, online, "prepare");
    sysbench(&target_ns, target, "prepare");
    for protocol in [false, true] {
        let args: Vec<String> = if protocol {
            vec!["--protocol".into(), "mysql".into()]
        } else {
            Vec::new()
        };
        sc.start_tcpcopy_with(&args).expect("tcpcopy starts");
        sc.wait_connected(Duration::from_secs(15))
            .expect("connected");
        let pid = sc.tcpcopy.as_ref().expect("tcpcopy").pid();
        let (before, _) = lab::scenario::proc_usage(pid).expect("tcpcopy's CPU");
        let started = Instant::now();
        sysbench(&client, online, "run");
        let took = started.elapsed();
        // The target catches up (its requests wait for each answer, reported by intercept).
        std::thread::sleep(Duration::from_secs(40));
        let (after, _) = lab::scenario::proc_usage(pid).expect("tcpcopy's CPU");
        let log = sc.stop_tcpcopy().expect("tcpcopy stops");
        let stats = final_stats(&log);
        let per_request = (after - before) * 1e6 / stats.requests_target.max(1) as f64;
        eprintln!(
            "{}: sysbench {took:?}, {:.2} s CPU, {} requests online ({} at the target), {per_request:.1} us CPU per request at the target; {}\n{}",
            if protocol { "--protocol mysql" } else { "bytes" },
            after - before,
            stats.requests_online,
            stats.requests_target,
            logins_line(&log),
            final_line(&log)
        );
    }
}

/// Stream mode (`--mode stream`: tcpcopy's own connections, no intercept): the same sessions
/// log in at a target that checks passwords (`--login-file`), the early one joined by a login
/// of tcpcopy's own; the target's table equals the online one, row for row.
#[test]
fn mariadb_sessions_in_stream_mode_log_in_at_a_target_that_checks_passwords() {
    replicate("myW", Mode::Stream, MariadbAuth::Passwords, true, "mysql");
}
