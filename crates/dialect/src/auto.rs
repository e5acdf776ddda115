//! `--protocol auto`: each session's protocol found from its first bytes, MySQL or PostgreSQL.
//!
//! [`Auto`] opens, for each session, a conversation that decides before any byte goes: a
//! PostgreSQL client speaks first, with an untyped first packet (a startup message of protocol
//! 3, an SSLRequest, a GSSENCRequest or a CancelRequest: [`looks_postgres`]); a MySQL server
//! speaks first, with its greeting. So the client's first 8 bytes, when they come before any
//! target byte, tell PostgreSQL from the rest; anything else (the target speaking first, client
//! bytes of another shape) goes to MySQL's detecting conversation ([`Mysql::detecting`]),
//! unchanged, which finds MySQL or leaves the session as bytes. Client bytes that may still
//! become a PostgreSQL first packet (fewer than 8, starting with a zero) are held meanwhile.
//!
//! A joined session (its first bytes never seen) is PostgreSQL when its server was found to
//! be, else it goes to MySQL's detection as well. What each protocol's sessions share stays in
//! its own hook; this one keeps only the servers found to speak PostgreSQL.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use session::dialect::{Conversation, Dialect, Edit, SessionInfo};

use crate::mysql::Mysql;
use crate::postgres::message::{
    CANCEL_REQUEST, GSSENC_REQUEST, MAX_INITIAL_LEN, MAX_SECRET_LEN, SSL_REQUEST,
};
use crate::postgres::Postgres;
use crate::Credentials;

/// Servers remembered as PostgreSQL at most; then the set starts over.
const MAX_SERVERS: usize = 4096;

/// The hook of `--protocol auto`: MySQL's and PostgreSQL's, each session given to its own. A
/// clone shares everything with the original.
#[derive(Clone, Debug)]
pub struct Auto {
    mysql: Mysql,
    postgres: Postgres,
    /// Online servers whose sessions were found to be PostgreSQL (for their joined sessions).
    postgres_servers: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl Auto {
    pub fn new(credentials: Credentials) -> Auto {
        Auto {
            mysql: Mysql::detecting(credentials.clone()),
            postgres: Postgres::new(credentials),
            postgres_servers: Arc::default(),
        }
    }
}

impl Dialect for Auto {
    fn open(&mut self, info: &SessionInfo) -> Option<Box<dyn Conversation>> {
        let known = info.joined && lock(&self.postgres_servers).contains(&info.online);
        if known {
            return self.postgres.open(info);
        }
        Some(Box::new(Detecting {
            info: *info,
            mysql: self.mysql.open(info),
            postgres: self.postgres.clone(),
            postgres_servers: self.postgres_servers.clone(),
            chosen: None,
        }))
    }

    fn head_bytes(&self) -> u16 {
        self.mysql.head_bytes().max(self.postgres.head_bytes())
    }

    fn online_answers(&self) -> bool {
        self.mysql.online_answers() || self.postgres.online_answers()
    }

    fn summary(&self) -> Option<String> {
        let lines: Vec<String> = [self.mysql.summary(), self.postgres.summary()]
            .into_iter()
            .flatten()
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain data: a panic elsewhere while it was held leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the first 8 bytes of a client's stream say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A PostgreSQL first packet's length and code.
    Postgres,
    /// Not one.
    Other,
    /// Too few bytes to tell (fewer than 8, the first a zero).
    Unknown,
}

/// Whether a client's first bytes are a PostgreSQL first packet: its length (counting
/// itself) fits the code that follows: a startup message of protocol 3.x, an SSLRequest or a
/// GSSENCRequest (8 bytes), a CancelRequest (a pid and a 4 to 256 byte key). A MySQL client's
/// first packet never looks so (its 3-byte little-endian length would read as more than
/// 10,000).
pub fn looks_postgres(bytes: &[u8]) -> FirstBytes {
    let Some(head) = bytes.get(..8) else {
        return match bytes.first() {
            Some(0) | None => FirstBytes::Unknown,
            Some(_) => FirstBytes::Other,
        };
    };
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let (len, code) = (be32(head), be32(&head[4..]) as u32);
    let fits = match code {
        SSL_REQUEST | GSSENC_REQUEST => len == 8,
        CANCEL_REQUEST => (16..=12 + MAX_SECRET_LEN).contains(&len),
        c if c >> 16 == 3 => (9..=MAX_INITIAL_LEN).contains(&len),
        _ => false,
    };
    if fits {
        FirstBytes::Postgres
    } else {
        FirstBytes::Other
    }
}

/// One session while its protocol is unknown, then that protocol's conversation.
#[derive(Debug)]
struct Detecting {
    info: SessionInfo,
    /// MySQL's detecting conversation: what the session is given when it is not PostgreSQL.
    mysql: Option<Box<dyn Conversation>>,
    /// A handle on the PostgreSQL hook, to open its conversation once the session is found so.
    postgres: Postgres,
    postgres_servers: Arc<Mutex<HashSet<SocketAddr>>>,
    chosen: Option<Chosen>,
}

#[derive(Debug)]
enum Chosen {
    Postgres(Box<dyn Conversation>),
    /// MySQL's detection, or bytes (MySQL's hook declined at open).
    Mysql(Option<Box<dyn Conversation>>),
}

impl Detecting {
    fn choose_postgres(&mut self, edit: &mut Edit<'_>) {
        {
            let mut servers = lock(&self.postgres_servers);
            if servers.len() >= MAX_SERVERS && !servers.contains(&self.info.online) {
                servers.clear();
            }
            servers.insert(self.info.online);
        }
        edit.hold(None);
        let mut pg = self.postgres.open(&self.info);
        if let Some(pg) = pg.as_deref_mut() {
            pg.client(edit, 0);
        }
        self.chosen = Some(match pg {
            Some(pg) => Chosen::Postgres(pg),
            None => Chosen::Mysql(None),
        });
    }

    fn choose_mysql(&mut self, edit: &mut Edit<'_>) -> Option<&mut Box<dyn Conversation>> {
        edit.hold(None);
        self.chosen = Some(Chosen::Mysql(self.mysql.take()));
        match &mut self.chosen {
            Some(Chosen::Mysql(c)) => c.as_mut(),
            _ => None,
        }
    }

    fn chosen(&mut self) -> Option<&mut Box<dyn Conversation>> {
        match &mut self.chosen {
            Some(Chosen::Postgres(c)) => Some(c),
            Some(Chosen::Mysql(c)) => c.as_mut(),
            None => None,
        }
    }
}

impl Conversation for Detecting {
    fn client(&mut self, edit: &mut Edit<'_>, from: u64) {
        if self.chosen.is_some() {
            if let Some(c) = self.chosen() {
                c.client(edit, from);
            }
            return;
        }
        // Undecided: nothing was sent, and the client's bytes start at 0.
        match looks_postgres(edit.bytes(0, 8)) {
            FirstBytes::Postgres => self.choose_postgres(edit),
            FirstBytes::Unknown => edit.hold(Some(0)),
            FirstBytes::Other => {
                if let Some(mysql) = self.choose_mysql(edit) {
                    mysql.client(edit, 0);
                }
            }
        }
    }

    fn target(&mut self, edit: &mut Edit<'_>, offset: u64, bytes: &[u8]) {
        // A PostgreSQL server never speaks first: the target's bytes before the client's
        // first packet was judged are MySQL's to judge.
        let c = match self.chosen {
            Some(_) => self.chosen(),
            None => self.choose_mysql(edit),
        };
        if let Some(c) = c {
            c.target(edit, offset, bytes);
        }
    }

    fn online(&mut self, edit: &mut Edit<'_>, bytes: &[u8]) {
        if let Some(c) = self.chosen() {
            c.online(edit, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::message::{request_code, CancelKey, Startup};

    #[test]
    fn postgresql_first_packets_are_told_from_mysql_and_other_bytes() {
        let cancel = CancelKey {
            pid: 1,
            secret: vec![2; 4],
        };
        let postgres = [
            Startup::new("app", "shop").encode(),
            request_code(SSL_REQUEST),
            request_code(GSSENC_REQUEST),
            cancel.cancel_request(),
        ];
        for bytes in &postgres {
            assert_eq!(looks_postgres(bytes), FirstBytes::Postgres, "{bytes:?}");
            assert_eq!(looks_postgres(&bytes[..5]), FirstBytes::Unknown);
        }
        // A MySQL handshake response (payload of 0xb5 bytes, sequence id 1), one whose length
        // is a multiple of 256, a MySQL command, HTTP, protocol 2, an SSLRequest's code with
        // another length.
        let others: [&[u8]; 6] = [
            &[0xb5, 0, 0, 1, 0x85, 0xa6, 0xff, 0x01],
            &[0, 2, 0, 1, 0x85, 0xa6, 0xff, 0x01],
            &[0x09, 0, 0, 0, 0x03, b's', b'e', b'l'],
            b"GET / HTTP/1.1\r\n",
            &[0, 0, 0, 40, 0, 2, 0, 0],
            &[0, 0, 0, 9, 0x04, 0xd2, 0x16, 0x2f],
        ];
        for bytes in others {
            assert_eq!(looks_postgres(bytes), FirstBytes::Other, "{bytes:?}");
        }
        assert_eq!(looks_postgres(b""), FirstBytes::Unknown);
        assert_eq!(looks_postgres(b"GE"), FirstBytes::Other);
    }
}
