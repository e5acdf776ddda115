//! Protocol hooks ([`session::dialect`]) for sessions that do not replay as bytes: database
//! logins, which answer the server's random salt with a scramble made for it.
//!
//! Each protocol is a module of its own implementing [`session::Dialect`] (one per replicator,
//! holding what its sessions share) and [`session::Conversation`] (one per session): `mysql`
//! (MySQL and MariaDB), `postgres` (PostgreSQL); `auto` gives each session to the one its first
//! bytes show. [`Protocol`] names them for the command line, [`Credentials`] holds the `--login`
//! users and passwords they log in with, and [`Protocol::dialect`] makes the hook a replicator
//! takes. This crate is sans-IO like the core:
//! no sockets, no clock, no threads; every protocol is tested on simulated time.
#![forbid(unsafe_code)]

pub mod auto;
pub mod mysql;
pub mod postgres;

use std::fmt;
use std::str::FromStr;

/// The application protocol of the replicated sessions (`--protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// MySQL and MariaDB: the client's login is answered for the target's own greeting.
    Mysql,
    /// Each session's protocol found from its first bytes (a PostgreSQL first packet, a MySQL
    /// handshake response, the target's MySQL greeting); sessions of no known protocol stay
    /// bytes.
    Auto,
    /// PostgreSQL: the client's startup kept, its login answered for the target's own challenge.
    Postgres,
}

impl Protocol {
    /// The hook a replicator takes for this protocol, logging in with `credentials`.
    pub fn dialect(self, credentials: &Credentials) -> Box<dyn session::Dialect> {
        self.hook(credentials).dialect()
    }

    /// The hook for this protocol, to be shared by several replicators (the capture threads of
    /// one run): each takes [`Hook::dialect`], and all see what the others' sessions saw.
    pub fn hook(self, credentials: &Credentials) -> Hook {
        Hook(match self {
            Protocol::Mysql => Kind::Mysql(mysql::Mysql::new(credentials.clone())),
            Protocol::Auto => Kind::Auto(auto::Auto::new(credentials.clone())),
            Protocol::Postgres => Kind::Postgres(postgres::Postgres::new(credentials.clone())),
        })
    }

    /// How many of the first bytes of each target answer this protocol's sessions need (the
    /// driver asks the intercepts for them).
    pub fn head_bytes(self) -> u16 {
        match self {
            Protocol::Mysql => mysql::HEAD_BYTES,
            Protocol::Postgres => postgres::HEAD_BYTES,
            Protocol::Auto => mysql::HEAD_BYTES.max(postgres::HEAD_BYTES),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Mysql => "mysql",
            Protocol::Auto => "auto",
            Protocol::Postgres => "postgres",
        }
    }
}

/// A protocol's hook shared by the replicators of one run: what sessions share (the logins
/// seen per client, the statements they prepared, the backend keys of cancel requests, the
/// counters) is one for all of them, whichever capture thread a session falls to.
#[derive(Clone, Debug)]
pub struct Hook(Kind);

#[derive(Clone, Debug)]
enum Kind {
    Mysql(mysql::Mysql),
    Auto(auto::Auto),
    Postgres(postgres::Postgres),
}

impl Hook {
    /// A replicator's handle on the hook (sharing everything with the others).
    pub fn dialect(&self) -> Box<dyn session::Dialect> {
        match &self.0 {
            Kind::Mysql(h) => Box::new(h.clone()),
            Kind::Auto(h) => Box::new(h.clone()),
            Kind::Postgres(h) => Box::new(h.clone()),
        }
    }

    /// Whether the sessions read the online server's answers ([`session::Dialect::online_answers`]):
    /// a live capture then takes them.
    pub fn online_answers(&self) -> bool {
        use session::Dialect as _;
        match &self.0 {
            Kind::Mysql(h) => h.online_answers(),
            Kind::Auto(h) => h.online_answers(),
            Kind::Postgres(h) => h.online_answers(),
        }
    }

    /// The line for the end of the run, over every replicator's sessions
    /// ([`session::Dialect::summary`]).
    pub fn summary(&self) -> Option<String> {
        use session::Dialect as _;
        match &self.0 {
            Kind::Mysql(h) => h.summary(),
            Kind::Auto(h) => h.summary(),
            Kind::Postgres(h) => h.summary(),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--protocol` value that names no protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol {0:?} (expected mysql, postgres or auto)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mysql" | "mariadb" => Ok(Protocol::Mysql),
            "auto" => Ok(Protocol::Auto),
            "postgres" | "postgresql" => Ok(Protocol::Postgres),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// One user and password to log in with (`--login USER:PASSWORD`).
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A password never reaches a log.
        write!(f, "Login {{ user: {:?}, password: <hidden> }}", self.user)
    }
}

/// A `--login` value that is not `USER:PASSWORD`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a login is USER:PASSWORD (a user without ':' given)")]
pub struct BadLogin;

impl FromStr for Login {
    type Err = BadLogin;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (user, password) = s.split_once(':').ok_or(BadLogin)?;
        if user.is_empty() {
            return Err(BadLogin);
        }
        Ok(Login {
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }
}

/// The users and passwords tcpcopy logs in with, first given first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    logins: Vec<Login>,
}

impl Credentials {
    pub fn new(logins: Vec<Login>) -> Credentials {
        Credentials { logins }
    }

    /// Reads a login file: one `USER:PASSWORD` a line; empty lines and lines starting with `#`
    /// are skipped. Errors name the line.
    pub fn parse_file(text: &str) -> Result<Vec<Login>, String> {
        let mut logins = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            logins.push(line.parse().map_err(|e| format!("line {}: {e}", n + 1))?);
        }
        Ok(logins)
    }

    /// The password of `user`, if given.
    pub fn password(&self, user: &str) -> Option<&str> {
        self.logins
            .iter()
            .find(|l| l.user == user)
            .map(|l| l.password.as_str())
    }

    /// The first login given: the one a joined session uses when no login of its client was
    /// seen.
    pub fn first(&self) -> Option<&Login> {
        self.logins.first()
    }

    pub fn is_empty(&self) -> bool {
        self.logins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_user_colon_password_and_a_password_may_hold_colons() {
        let l: Login = "app:s3:cr3t".parse().unwrap();
        assert_eq!((l.user.as_str(), l.password.as_str()), ("app", "s3:cr3t"));
        assert_eq!("app".parse::<Login>(), Err(BadLogin));
        assert_eq!(":x".parse::<Login>(), Err(BadLogin));
        assert!(!format!("{l:?}").contains("s3"));
    }

    #[test]
    fn a_login_file_skips_comments_and_names_a_bad_line() {
        let logins = Credentials::parse_file("# users\napp:pw\n\nro:\n").unwrap();
        let c = Credentials::new(logins);
        assert_eq!(c.password("app"), Some("pw"));
        assert_eq!(c.password("ro"), Some(""));
        assert_eq!(c.first().unwrap().user, "app");
        assert_eq!(
            Credentials::parse_file("app:pw\nnobody\n"),
            Err("line 2: a login is USER:PASSWORD (a user without ':' given)".into())
        );
    }
}
