//! MariaDB for the database end-to-end tests: a `mariadbd` with its own data directory in a
//! lab namespace, the `mariadb` command-line client's sessions (short ones, long ones fed
//! statement by statement, and one opened before tcpcopy starts), and the rows of the test's
//! table, read through the server's socket file (which any namespace reaches) as root.
//!
//! Every server holds database [`DATABASE`] with table `t (id INT PRIMARY KEY, who
//! VARCHAR(40), n INT)`; one that checks passwords also has user [`USER`] with
//! [`PASSWORD`] (mysql_native_password, MariaDB's default), allowed everything in
//! [`DATABASE`]. Packages: `mariadb-server` and `mariadb-client`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::netlab::{Child, Lab};

/// The user the clients log in as.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-Pa55";
/// The database the clients use.
pub const DATABASE: &str = "shop";
/// How long [`Mariadb::start`] waits for the server to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a server checks logins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MariadbAuth {
    /// Passwords checked (the usual).
    Passwords,
    /// `--skip-grant-tables`: any user, any password.
    SkipGrantTables,
}

/// A `mariadbd` in a lab namespace, stopped on drop (its data directory stays with the
/// test's scratch directory).
pub struct Mariadb {
    child: Child,
    listen: SocketAddrV4,
    socket: PathBuf,
}

impl Mariadb {
    /// Makes a data directory in `dir` (`mariadb-install-db`), starts `mariadbd` inside `ns`
    /// on `listen` (output in `log`), waits (up to 60 s) until it greets over TCP, then creates
    /// the test's database, table and (checking passwords) user.
    pub fn start(
        lab: &Lab,
        ns: &str,
        listen: SocketAddrV4,
        dir: &Path,
        log: &Path,
        auth: MariadbAuth,
    ) -> anyhow::Result<Mariadb> {
        let data = dir.join("data");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .stdin(Stdio::null())
            .output()
            .context("running mariadb-install-db (apt-get install mariadb-server)")?;
        if !install.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&install.stderr)
            );
        }
        let socket = dir.join("mariadbd.sock");
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", data.display()),
            format!("--socket={}", socket.display()),
            format!("--pid-file={}", dir.join("mariadbd.pid").display()),
            format!("--bind-address={}", listen.ip()),
            format!("--port={}", listen.port()),
            "--user=root".into(),
            "--skip-log-bin".into(),
            "--skip-name-resolve".into(),
            "--innodb-buffer-pool-size=32M".into(),
            // The tests compare rows, not durability: no flush per commit.
            "--innodb-flush-log-at-trx-commit=0".into(),
            "--max-connections=500".into(),
        ];
        if auth == MariadbAuth::SkipGrantTables {
            args.push("--skip-grant-tables".into());
        }
        let mut child = lab.spawn(ns, Path::new("/usr/sbin/mariadbd"), &args, log)?;
        child
            .wait_serving(ns, READY_TIMEOUT, || greets(listen.into()))
            .with_context(|| format!("starting mariadbd on {listen}"))?;
        let server = Mariadb {
            child,
            listen,
            socket,
        };
        let mut setup = format!(
            "CREATE DATABASE {DATABASE}; CREATE TABLE {DATABASE}.t (id INT PRIMARY KEY, who VARCHAR(40) NOT NULL, n INT NOT NULL);"
        );
        if auth == MariadbAuth::Passwords {
            setup.push_str(&format!(
                "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';"
            ));
        }
        server.sql(&setup).context("setting up the test database")?;
        Ok(server)
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.listen.into()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Runs `sql` as root through the server's socket file; returns what it printed (tab
    /// separated, no column names).
    pub fn sql(&self, sql: &str) -> anyhow::Result<String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .context("running mariadb (apt-get install mariadb-client)")?;
        if !out.status.success() {
            bail!(
                "mariadb -e {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The test table's rows, in id order, one `id\twho\tn` line each.
    pub fn rows(&self) -> anyhow::Result<Vec<String>> {
        let out = self.sql(&format!("SELECT id, who, n FROM {DATABASE}.t ORDER BY id"))?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

/// The online server's rows of the test table, and the target's once they equal them (the
/// target lags behind) or `timeout` passed, as they are then.
pub fn rows_when_equal(
    online: &Mariadb,
    target: &Mariadb,
    timeout: Duration,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let want = online.rows().context("online rows")?;
    let end = std::time::Instant::now() + timeout;
    loop {
        let got = target.rows().context("target rows")?;
        if got == want || std::time::Instant::now() >= end {
            return Ok((want, got));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether a MySQL server answers at `addr`: its first packet is a greeting (protocol version
/// 10) or an error (it refuses this host, before any user exists for it).
fn greets(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut head = [0u8; 5];
    std::io::Read::read_exact(&mut s, &mut head).is_ok() && matches!(head[4], 10 | 0xff)
}

/// The `mariadb` client's arguments for a session to `server` as [`USER`] in [`DATABASE`]:
/// batch mode, no column names, no option files.
fn client_args(server: SocketAddr) -> Vec<String> {
    vec![
        "--no-defaults".into(),
        "-h".into(),
        server.ip().to_string(),
        "-P".into(),
        server.port().to_string(),
        "-u".into(),
        USER.into(),
        format!("-p{PASSWORD}"),
        "-N".into(),
        "-B".into(),
        DATABASE.into(),
    ]
}

/// One short session from namespace `ns`: the client logs in to `server`, runs `sql`, and
/// leaves.
pub fn run_client(ns: &str, server: SocketAddr, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "mariadb"])
        .args(client_args(server))
        .args(["-e", sql])
        .stdin(Stdio::null())
        .output()
        .context("running mariadb")?;
    if !out.status.success() {
        bail!(
            "mariadb -e {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A client program driven line by line: statements on its standard input, a line of output
/// for each; killed on drop unless it finished.
struct Driven {
    child: std::process::Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Driven {
    fn spawn(mut command: Command, what: &str) -> anyhow::Result<Driven> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("running {what}"))?;
        let stdin = child.stdin.take().context("client stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("client stdout")?);
        Ok(Driven {
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    fn write_line(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("session already finished")?;
        writeln!(stdin, "{line}").context("writing to the client")?;
        stdin.flush().context("writing to the client")
    }

    /// The client's next line of output, without its line end.
    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .context("reading the client's output")?;
        if line.is_empty() {
            bail!("the client ended");
        }
        Ok(line.trim_end().to_owned())
    }

    /// Closes the client's input and waits for it to log out; fails when it failed.
    fn finish(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait().context("waiting for the client")?;
        if !status.success() {
            bail!("the client failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A long session: the client reads statements from its standard input, one request (and one
/// answer) each, until it is closed.
pub struct ClientSession(Driven);

impl ClientSession {
    /// Opens a session from namespace `ns` to `server` and waits until it is logged in (its
    /// first `SELECT` answered).
    pub fn open(ns: &str, server: SocketAddr) -> anyhow::Result<ClientSession> {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, "mariadb"])
            .args(client_args(server))
            // Each answer printed at once, not when the client ends.
            .arg("--unbuffered");
        let mut s = ClientSession(Driven::spawn(command, "mariadb")?);
        s.ask("SELECT 1").context("the client's first answer")?;
        Ok(s)
    }

    /// Sends one statement that prints a line, and returns the line.
    pub fn ask(&mut self, sql: &str) -> anyhow::Result<String> {
        self.send(sql)?;
        self.0
            .read_line()
            .with_context(|| format!("answering {sql:?}"))
    }

    /// Sends statements (`;` added to each).
    pub fn send(&mut self, sql: &str) -> anyhow::Result<()> {
        self.0.write_line(&format!("{sql};"))
    }

    /// Closes the client's input and waits for it to log out; fails when it failed.
    pub fn finish(self) -> anyhow::Result<()> {
        self.0.finish()
    }
}

/// Which client library a [`PreparingSession`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Perl's DBD::MariaDB with server-side prepares (package `libdbd-mariadb-perl`).
    Perl,
    /// MySQL's own mysql-connector-python (pure Python), from the Python at `python`: it also
    /// changes the user (COM_CHANGE_USER).
    Python(&'static str),
}

/// The Python [`Driver::Python`] uses in the tests: the test tools' venv made by `.ci/run`.
pub const TOOLS_PYTHON: &str = "/opt/tcpcopy-lint/bin/python";

/// Whether `python` has mysql-connector-python.
pub fn has_connector(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import mysql.connector"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A client that prepares its statements on the server (the binary protocol's
/// COM_STMT_PREPARE, COM_STMT_EXECUTE and COM_STMT_CLOSE), as connection pools of real
/// applications do, through a real client library ([`Driver`]), driven statement by
/// statement.
pub struct PreparingSession(Driven);

impl PreparingSession {
    /// Opens a session from namespace `ns` to `server` as [`USER`] in [`DATABASE`] with the
    /// Perl driver (its script written to `dir`) and waits until it is logged in.
    pub fn open(ns: &str, server: SocketAddr, dir: &Path) -> anyhow::Result<PreparingSession> {
        Self::open_with(Driver::Perl, ns, server, dir)
    }

    /// The same with `driver`.
    pub fn open_with(
        driver: Driver,
        ns: &str,
        server: SocketAddr,
        dir: &Path,
    ) -> anyhow::Result<PreparingSession> {
        let (program, name, text) = match driver {
            Driver::Perl => ("perl", "prepared.pl", include_str!("mariadb/prepared.pl")),
            Driver::Python(python) => {
                (python, "connector.py", include_str!("mariadb/connector.py"))
            }
        };
        let script = dir.join(name);
        std::fs::write(&script, text).with_context(|| format!("writing {}", script.display()))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, program])
            .arg(&script)
            .args([&server.ip().to_string(), &server.port().to_string()])
            .args([USER, PASSWORD, DATABASE]);
        let mut s = PreparingSession(Driven::spawn(command, program)?);
        s.expect("ready").context("the client's login")?;
        Ok(s)
    }

    /// Prepares `sql` (with `?` for its parameters) on the server as `name`.
    pub fn prepare(&mut self, name: &str, sql: &str) -> anyhow::Result<()> {
        self.say(&format!("prepare\t{name}\t{sql}"))
    }

    /// Executes statement `name` with `args`.
    pub fn execute(&mut self, name: &str, args: &[&dyn std::fmt::Display]) -> anyhow::Result<()> {
        let mut line = format!("execute\t{name}");
        for a in args {
            line.push('\t');
            line.push_str(&a.to_string());
        }
        self.say(&line)
    }

    /// Closes statement `name` on the server.
    pub fn close(&mut self, name: &str) -> anyhow::Result<()> {
        self.say(&format!("close\t{name}"))
    }

    /// Logs in again as `user` (COM_CHANGE_USER; [`Driver::Python`] only): the server forgets
    /// the session's statements.
    pub fn change_user(&mut self, user: &str, password: &str) -> anyhow::Result<()> {
        self.say(&format!("change_user\t{user}\t{password}"))
    }

    fn say(&mut self, line: &str) -> anyhow::Result<()> {
        self.0.write_line(line)?;
        self.expect("ok").with_context(|| format!("{line:?}"))
    }

    fn expect(&mut self, word: &str) -> anyhow::Result<()> {
        let line = self.0.read_line()?;
        if line != word {
            bail!("the client said {line:?}, not {word:?}");
        }
        Ok(())
    }

    /// Closes the client's input and waits for it to log out; fails when it failed.
    pub fn finish(self) -> anyhow::Result<()> {
        self.0.finish()
    }
}
