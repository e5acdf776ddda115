//! The PostgreSQL login machine against a real server: a private PostgreSQL (initdb in a
//! temporary directory, 127.0.0.1 on a free port) whose pg_hba.conf asks each user for another
//! method (scram-sha-256, md5, password, trust). Each test plays a captured client stream through
//! `dialect::postgres::Session` over a plain TcpStream and checks the server's answers.
//!
//! Skips when PostgreSQL's binaries are absent (`/usr/lib/postgresql/*/bin`, or the folder in
//! TCPCOPY_POSTGRES_BIN), unless TCPCOPY_REQUIRE_POSTGRES=1. As root, the server runs as the
//! `postgres` user (initdb refuses root).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dialect::postgres::message::{self, Framed, GSSENC_REQUEST, SSL_REQUEST};
use dialect::postgres::{ClientNonce, LoginError, Method, Session, Status};
use dialect::Credentials;

/// One statement a Query message: CREATE DATABASE refuses a multi-statement one's transaction.
const SETUP: &[&str] = &[
    "CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw'",
    "CREATE DATABASE scram_user OWNER scram_user",
    "CREATE ROLE clear_user LOGIN PASSWORD 'clear:pw'",
    "CREATE ROLE trust_user LOGIN",
    // SASLprep: a soft hyphen (removed) and U+2168 ROMAN NUMERAL NINE ("IX" by NFKC).
    "CREATE ROLE prep_user LOGIN PASSWORD 'pen\u{00AD}cil\u{2168}'",
    // A password SASLprep refuses (right-to-left, then a digit): salted as given.
    "CREATE ROLE raw_user LOGIN PASSWORD '\u{0627}1'",
    "SET password_encryption = 'md5'",
    "CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw'",
    "CREATE TABLE items (id int PRIMARY KEY, name text)",
    "GRANT ALL ON items TO PUBLIC",
];

const HBA: &str = "\
host all postgres   127.0.0.1/32 trust
host all trust_user 127.0.0.1/32 trust
host all md5_user   127.0.0.1/32 md5
host all clear_user 127.0.0.1/32 password
host all all        127.0.0.1/32 scram-sha-256
";

struct Server {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown, the backends go with the postmaster.
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// The last lines of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TCPCOPY_POSTGRES_BIN") {
        return Some(dir.into());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    // The newest version: "15" sorts after "13" and before "9" only by number.
    dirs.sort_by_key(|d| {
        let version = d
            .parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok());
        version.unwrap_or(0)
    });
    dirs.pop()
}

/// The uid and gid of `postgres` when running as root (initdb refuses root).
fn server_user() -> Option<(u32, u32)> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root, the server needs the postgres user");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn command(bin: &Path, name: &str, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin.join(name));
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn start_server() -> Option<Server> {
    let Some(bin) = bin_dir() else {
        if std::env::var("TCPCOPY_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("PostgreSQL's binaries are absent and TCPCOPY_REQUIRE_POSTGRES=1");
        }
        eprintln!("skipped: no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)");
        return None;
    };
    let user = server_user();
    let dir = std::env::temp_dir().join(format!("tcpcopy-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    let data = dir.join("data");
    let out = command(&bin, "initdb", user)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ])
        .arg("-D")
        .arg(&data)
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(data.join("pg_hba.conf"), HBA).unwrap();
    // A free port: the kernel's choice, released for the server.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("server.log")).unwrap();
    let child = command(&bin, "postgres", user)
        .arg("-D")
        .arg(&data)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-p",
            &port.to_string(),
        ])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("postgres starts");
    let server = Server { port, dir, child };
    wait_ready(&server);
    let setup = run_as(&server, "postgres", "postgres", &[], SETUP);
    assert!(setup.error.is_none(), "setup: {:?}", setup.error);
    Some(server)
}

fn wait_ready(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", server.port)).is_ok() {
            let probe = run_as(server, "postgres", "postgres", &[], &["SELECT 1"]);
            if probe.error.is_none() {
                return;
            }
        }
        let log = std::fs::read_to_string(server.dir.join("server.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "postgres did not start: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the server answered a replayed session.
#[derive(Debug)]
struct Answer {
    status: Status,
    rows: Vec<Vec<Option<String>>>,
    error: Option<String>,
}

/// Replays a captured client stream (`client`) through a session with `logins` over a
/// connection to the server, the login's answers fed back to the session; then reads the
/// answers to the requests until the server closes (the streams end with a Terminate).
fn replay(
    server: &Server,
    client: &[u8],
    logins: &[&str],
    joined: Option<message::Startup>,
) -> Answer {
    let credentials = Credentials::new(logins.iter().map(|l| l.parse().unwrap()).collect());
    let nonce = ClientNonce::random().unwrap();
    let mut session = Session::new(Arc::new(credentials), joined, nonce);
    session.handle_client(client);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = vec![0; 64 * 1024];
    let mut answers = Vec::new();
    loop {
        stream.write_all(&session.take_transmit()).unwrap();
        if session.status() != Status::Pending {
            break;
        }
        let n = stream.read(&mut buf).expect("the server answers the login");
        if n == 0 {
            break;
        }
        session.handle_target(&buf[..n]);
    }
    if matches!(session.status(), Status::LoggedIn { .. }) {
        stream.read_to_end(&mut answers).unwrap();
    }
    let (rows, error) = parse_answers(&answers);
    Answer {
        status: session.status(),
        rows,
        error,
    }
}

/// Logs in as `user` (no captured authentication) and runs each of `sql`.
fn run_as(server: &Server, user: &str, db: &str, logins: &[&str], sql: &[&str]) -> Answer {
    let mut client = message::Startup::new(user, db).encode();
    for statement in sql {
        client.extend(message::query(statement));
    }
    client.extend(message::terminate());
    replay(server, &client, logins, None)
}

fn parse_answers(mut bytes: &[u8]) -> (Vec<Vec<Option<String>>>, Option<String>) {
    let (mut rows, mut error) = (Vec::new(), None);
    while let Some(Framed { ty, body, len }) = message::split_message(bytes).unwrap() {
        match ty {
            b'D' => rows.push(data_row(body)),
            b'E' => error = Some(String::from_utf8_lossy(body).into_owned()),
            _ => {}
        }
        bytes = &bytes[len..];
    }
    (rows, error)
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let n = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
            at += 4;
            (len >= 0).then(|| {
                let value = String::from_utf8_lossy(&body[at..at + len as usize]).into_owned();
                at += len as usize;
                value
            })
        })
        .collect()
}

fn row(values: &[&str]) -> Vec<Vec<Option<String>>> {
    vec![values.iter().map(|v| Some(v.to_string())).collect()]
}

/// The client's messages to the online server, answering its challenge: never for the target.
fn online_authentication() -> Vec<u8> {
    [
        message::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=onlinenonceonlinenonce"),
        message::sasl_response(b"c=biws,r=onlinenonceonlinenonceSRV,p=b25saW5lIHByb29m"),
    ]
    .concat()
}

fn logged_in(method: Method, joined: bool) -> Status {
    Status::LoggedIn { method, joined }
}

/// One server for every case (initdb and startup take seconds), stopped when the test ends or
/// fails.
#[test]
fn logins_against_a_real_postgresql() {
    let Some(server) = start_server() else { return };
    each_method_logs_in_and_runs_the_query(&server);
    a_wrong_password_is_refused_and_counted(&server);
    a_joined_session_logs_in_before_its_first_request(&server);
    encryption_refused_online_is_not_asked_of_the_target(&server);
    non_ascii_scram_passwords_are_prepared_as_the_server_prepares_them(&server);
}

fn non_ascii_scram_passwords_are_prepared_as_the_server_prepares_them(server: &Server) {
    let cases = [
        ("prep_user", "pen\u{00AD}cil\u{2168}"),
        // The same password once prepared.
        ("prep_user", "pencilIX"),
        ("raw_user", "\u{0627}1"),
    ];
    for (user, password) in cases {
        let login = format!("{user}:{password}");
        let answer = run_as(
            server,
            user,
            "postgres",
            &[&login],
            &["SELECT current_user"],
        );
        assert_eq!(
            answer.status,
            logged_in(Method::ScramSha256, false),
            "{user} with {password:?}; the server's log ends:\n{}",
            server.log_tail()
        );
        assert_eq!(answer.rows, row(&[user]), "{user}");
    }
}

fn each_method_logs_in_and_runs_the_query(server: &Server) {
    let logins = [
        "scram_user:scram-pw",
        "md5_user:md5-pw",
        "clear_user:clear:pw",
    ];
    let cases = [
        ("scram_user", Method::ScramSha256),
        ("md5_user", Method::Md5),
        ("clear_user", Method::Cleartext),
        ("trust_user", Method::Trust),
    ];
    for (user, method) in cases {
        let client = [
            message::Startup::new(user, "postgres").encode(),
            online_authentication(),
            message::query("SELECT current_user, 6 * 7"),
            message::terminate(),
        ]
        .concat();
        let answer = replay(server, &client, &logins, None);
        assert_eq!(
            answer.status,
            logged_in(method, false),
            "{user}; the server's log ends:\n{}",
            server.log_tail()
        );
        assert_eq!(answer.rows, row(&[user, "42"]), "{user}");
        assert_eq!(answer.error, None, "{user}");
    }
}

fn a_wrong_password_is_refused_and_counted(server: &Server) {
    for (user, login) in [
        ("scram_user", "scram_user:nope"),
        ("md5_user", "md5_user:nope"),
    ] {
        let answer = run_as(server, user, "postgres", &[login], &["SELECT 1"]);
        let Status::Failed(LoginError::Refused(e)) = &answer.status else {
            panic!("{user}: {:?}", answer.status)
        };
        assert_eq!(e.code, "28P01", "{user}: {e:?}");
        assert!(answer.rows.is_empty());
    }
    let answer = run_as(server, "scram_user", "postgres", &[], &["SELECT 1"]);
    assert_eq!(
        answer.status,
        Status::Failed(LoginError::NoPassword {
            user: "scram_user".into()
        })
    );
}

fn a_joined_session_logs_in_before_its_first_request(server: &Server) {
    let requests = [
        message::query(
            "CREATE TEMP TABLE notes (name text); INSERT INTO notes VALUES ('joined'); \
             SELECT name, current_database() FROM notes",
        ),
        message::terminate(),
    ]
    .concat();
    // The first --login user, into the database of its name.
    let answer = replay(server, &requests, &["scram_user:scram-pw"], None);
    assert_eq!(answer.status, logged_in(Method::ScramSha256, true));
    assert_eq!(
        answer.rows,
        row(&["joined", "scram_user"]),
        "{:?}",
        answer.error
    );
    // The startup message seen last from the client, its database included.
    let seen = message::Startup::new("md5_user", "postgres");
    let select = [
        message::query("SELECT current_user, current_database()"),
        message::terminate(),
    ]
    .concat();
    let answer = replay(server, &select, &["md5_user:md5-pw"], Some(seen));
    assert_eq!(answer.status, logged_in(Method::Md5, true));
    assert_eq!(answer.rows, row(&["md5_user", "postgres"]));
}

fn encryption_refused_online_is_not_asked_of_the_target(server: &Server) {
    let client = [
        message::request_code(GSSENC_REQUEST),
        message::request_code(SSL_REQUEST),
        message::Startup::new("scram_user", "postgres").encode(),
        online_authentication(),
        message::query("SELECT 'plain'"),
        message::terminate(),
    ]
    .concat();
    let answer = replay(server, &client, &["scram_user:scram-pw"], None);
    assert_eq!(answer.status, logged_in(Method::ScramSha256, false));
    assert_eq!(answer.rows, row(&["plain"]));
}
