//! PostgreSQL in a lab namespace, for the end-to-end tests of `--protocol postgres`: a server
//! (initdb in a scratch directory, run as the `postgres` user, listening on its host's address
//! with one authentication method for every TCP client), SQL over its Unix socket (psql, trusted,
//! from outside the namespace), and pgbench.
//!
//! Every server gets the same role [`USER`] (password [`PASSWORD`]) owning the same database
//! [`DATABASE`], so that pgbench initialises both sides alike.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::netlab::{Child, Lab};

/// The service port.
pub const PORT: u16 = 5432;
/// The role pgbench logs in as, on every server.
pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-pw";
pub const DATABASE: &str = "bench";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the server authenticates TCP clients (`pg_hba.conf`'s method for every host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgAuth {
    ScramSha256,
    /// md5, with the role's password stored as md5 (a SCRAM-stored one would get SCRAM).
    Md5,
    /// No password asked.
    Trust,
}

impl PgAuth {
    fn method(self) -> &'static str {
        match self {
            PgAuth::ScramSha256 => "scram-sha-256",
            PgAuth::Md5 => "md5",
            PgAuth::Trust => "trust",
        }
    }
}

/// PostgreSQL's programs: `TCPCOPY_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/*/bin`
/// holding initdb and postgres (package postgresql).
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TCPCOPY_POSTGRES_BIN") {
        return Some(dir.into());
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let version = e.as_ref().ok()?.file_name().to_str()?.parse().ok()?;
            Some((version, e.ok()?.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists() && bin.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// The `postgres` user's uid and gid (initdb and the server refuse root).
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("no postgres user (apt-get install postgresql)")?;
    let fields: Vec<&str> = line.split(':').collect();
    let id = |i: usize| fields.get(i).and_then(|f| f.parse().ok());
    id(2)
        .zip(id(3))
        .context("a malformed postgres line in /etc/passwd")
}

/// A running PostgreSQL server; stopped (fast shutdown) on drop.
pub struct PostgresServer {
    child: Child,
    bin: PathBuf,
    /// Its data directory's parent, which holds its Unix socket.
    dir: PathBuf,
    listen: SocketAddrV4,
    user: (u32, u32),
}

impl PostgresServer {
    /// Initialises a cluster in `dir` (created), starts it in namespace `ns` on `listen` with
    /// `auth` for TCP clients and its log in `log`, and makes role [`USER`] and database
    /// [`DATABASE`].
    pub fn start(
        lab: &Lab,
        ns: &str,
        listen: SocketAddrV4,
        auth: PgAuth,
        dir: &Path,
        log: &Path,
    ) -> anyhow::Result<PostgresServer> {
        let bin = bin_dir().context("PostgreSQL not found: apt-get install postgresql")?;
        let user = postgres_user()?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(user.0), Some(user.1))
            .with_context(|| format!("giving {} to postgres", dir.display()))?;
        let data = dir.join("data");
        let out = Command::new(bin.join("initdb"))
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
            .uid(user.0)
            .gid(user.1)
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let hba = format!(
            "local all all trust\nhost all all 0.0.0.0/0 {}\n",
            auth.method()
        );
        std::fs::write(data.join("pg_hba.conf"), hba).context("writing pg_hba.conf")?;
        let args: Vec<String> = [
            "--reuid",
            &user.0.to_string(),
            "--regid",
            &user.1.to_string(),
            "--clear-groups",
            &bin.join("postgres").display().to_string(),
            "-D",
            &data.display().to_string(),
            "-p",
            &listen.port().to_string(),
            "-c",
            &format!("listen_addresses={}", listen.ip()),
            "-c",
            &format!("unix_socket_directories={}", dir.display()),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // setpriv execs postgres: the child's pid is the server's.
        let child = lab.spawn_as_root(ns, Path::new("/usr/bin/setpriv"), &args, log)?;
        let mut server = PostgresServer {
            child,
            bin,
            dir: dir.to_path_buf(),
            listen,
            user,
        };
        server.wait_ready()?;
        server.create_role(auth)?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + READY_TIMEOUT;
        loop {
            if self.sql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            let log = std::fs::read_to_string(self.child.log_path()).unwrap_or_default();
            if !self.child.is_running() || Instant::now() > end {
                bail!("postgres on {} did not start: {log}", self.listen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_role(&self, auth: PgAuth) -> anyhow::Result<()> {
        let role = format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'");
        let encryption = match auth {
            PgAuth::Md5 => "SET password_encryption = 'md5'; ",
            _ => "",
        };
        self.sql("postgres", &format!("{encryption}{role}"))?;
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {DATABASE} OWNER {USER}"),
        )?;
        Ok(())
    }

    /// Runs `sql` in `database` as the superuser over the Unix socket; its rows, one a line,
    /// columns separated by `|`.
    pub fn sql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = self
            .client("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql `{sql}`: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pgbench -i -s scale` into [`DATABASE`], as [`USER`], over the Unix socket: the same
    /// tables and rows on every server.
    pub fn pgbench_init(&self, scale: u32) -> anyhow::Result<()> {
        let out = self
            .client("pgbench")
            .args(["-i", "-q", "-s", &scale.to_string(), "-U", USER, DATABASE])
            .output()
            .context("running pgbench -i")?;
        if !out.status.success() {
            bail!(
                "pgbench -i: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// One of its programs, as the postgres user, pointed at its Unix socket.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.uid(self.user.0)
            .gid(self.user.1)
            .env("PGHOST", &self.dir)
            .env("PGPORT", self.listen.port().to_string())
            .current_dir(&self.dir);
        cmd
    }

    /// The pgbench tables' contents that a faithful replay reproduces: every account's balance
    /// that moved, the tellers' and branches' balances, and the history rows without their
    /// times (the server's clock sets them), all sorted.
    pub fn pgbench_state(&self) -> anyhow::Result<String> {
        let queries = [
            "SELECT aid, abalance FROM pgbench_accounts WHERE abalance <> 0 ORDER BY aid",
            "SELECT tid, tbalance FROM pgbench_tellers ORDER BY tid",
            "SELECT bid, bbalance FROM pgbench_branches ORDER BY bid",
            "SELECT tid, bid, aid, delta FROM pgbench_history ORDER BY tid, bid, aid, delta",
        ];
        let mut state = String::new();
        for q in queries {
            state.push_str(&self.sql(DATABASE, q)?);
            state.push_str("--\n");
        }
        Ok(state)
    }

    pub fn addr(&self) -> SocketAddr {
        self.listen.into()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGINT, a fast shutdown: replicated sessions left open do not hold it up (SIGTERM
        // would wait for them). The child's own drop then finds it gone.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.pid().to_string()])
            .status();
        let _ = self.child.stop();
    }
}

/// Runs pgbench in namespace `ns` against `server` as [`USER`] with its password: `clients`
/// connections, `transactions` each, the default TPC-B-like script, simple query protocol,
/// no vacuum first. Returns its output.
pub fn pgbench(
    lab: &Lab,
    ns: &str,
    server: SocketAddr,
    clients: u32,
    transactions: u32,
) -> anyhow::Result<String> {
    let bin = bin_dir().context("PostgreSQL not found: apt-get install postgresql")?;
    let pgbench = bin.join("pgbench").display().to_string();
    let (host, port) = (server.ip().to_string(), server.port().to_string());
    let (clients, transactions) = (clients.to_string(), transactions.to_string());
    let password = format!("PGPASSWORD={PASSWORD}");
    lab.sh(
        ns,
        &[
            "env",
            &password,
            &pgbench,
            "-n",
            "-h",
            &host,
            "-p",
            &port,
            "-U",
            USER,
            "-c",
            &clients,
            "-j",
            "2",
            "-t",
            &transactions,
            DATABASE,
        ],
    )
}
