//! MySQL packets as the login needs them: framing, the server's greeting, the client's
//! handshake response (read and written), and the server's answers to a login.
//!
//! Everything here reads bytes it is given and never panics on them: a packet that does not
//! parse is `None` (the conversation counts the session as malformed).

/// Capability flags (the protocol's own numbers).
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub const CLIENT_COMPRESS: u32 = 0x20;
/// MySQL 8's zstd compression (its frames are compressed as CLIENT_COMPRESS's are).
pub const CLIENT_ZSTD_COMPRESSION: u32 = 1 << 26;
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
pub const CLIENT_SSL: u32 = 0x800;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;

/// Commands (the first payload byte of a client's packet with sequence id 0).
pub const COM_INIT_DB: u8 = 0x02;

/// A packet's header: payload length and sequence id.
pub const HEADER: usize = 4;

/// The first complete packet in `buf`: (sequence id, payload); `None` when it is not all there.
pub fn split(buf: &[u8]) -> Option<(u8, &[u8])> {
    let h = buf.get(..HEADER)?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let payload = buf.get(HEADER..HEADER + len)?;
    Some((h[3], payload))
}

/// The payload length a packet header at the start of `buf` announces (`None`: fewer than 4
/// bytes).
pub fn payload_len(buf: &[u8]) -> Option<usize> {
    let h = buf.get(..HEADER)?;
    Some(usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16)
}

/// Appends a packet with sequence id `seq` and `payload` (shorter than 16 MiB) to `out`.
pub fn write(out: &mut Vec<u8>, seq: u8, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
}

/// A reader over a payload; every read is checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A NUL-terminated string (without its NUL); a string running to the end of the payload
    /// is taken whole.
    fn cstr(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.at.min(self.buf.len())..];
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                self.at += n + 1;
                &rest[..n]
            }
            None => {
                self.at = self.buf.len();
                rest
            }
        }
    }

    /// A length-encoded integer.
    fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.u16().map(u64::from),
            0xfd => {
                let b = self.take(3)?;
                Some(u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16)
            }
            0xfe => {
                let b = self.take(8)?;
                Some(u64::from_le_bytes(b.try_into().ok()?))
            }
            _ => None,
        }
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.at.min(self.buf.len())..]
    }
}

/// Appends `n` as a length-encoded integer.
fn put_lenenc(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=0xfa => out.push(n as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        _ => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
    }
}

/// What a login needs of the server's greeting (Initial Handshake, protocol version 10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    pub capabilities: u32,
    /// The salt (auth plugin data), without its trailing NUL.
    pub salt: Vec<u8>,
    /// The server's default authentication plugin ("mysql_native_password" when none named).
    pub plugin: String,
}

impl Greeting {
    /// Reads a greeting's payload; `None` when it is not one (an error packet, say).
    pub fn parse(payload: &[u8]) -> Option<Greeting> {
        let mut r = Reader::new(payload);
        if r.u8()? != 10 {
            return None;
        }
        r.cstr(); // server version
        r.take(4)?; // connection id
        let mut salt = r.take(8)?.to_vec();
        r.take(1)?;
        let mut capabilities = u32::from(r.u16()?);
        let mut plugin = String::from("mysql_native_password");
        if r.rest().is_empty() {
            return Some(Greeting {
                capabilities,
                salt,
                plugin,
            });
        }
        r.take(1)?; // character set
        r.take(2)?; // status
        capabilities |= u32::from(r.u16()?) << 16;
        let data_len = usize::from(r.u8()?);
        r.take(10)?; // reserved (MariaDB: its extended capabilities)
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = data_len.saturating_sub(8).max(13);
            let part2 = r.take(n.min(r.rest().len()))?;
            // The second part ends with a NUL that is no part of the salt.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            salt.extend_from_slice(part2);
        }
        if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            let name = r.cstr();
            if !name.is_empty() {
                plugin = String::from_utf8_lossy(name).into_owned();
            }
        }
        Some(Greeting {
            capabilities,
            salt,
            plugin,
        })
    }
}

/// A client's handshake response (Protocol::HandshakeResponse41), split so that its
/// authentication can be replaced and the rest kept as the client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    /// Max packet size, character set and the 23 filler bytes (MariaDB's extended capabilities
    /// among them), as sent.
    pub fixed: Vec<u8>,
    pub user: String,
    pub auth: Vec<u8>,
    pub database: Option<String>,
    pub plugin: Option<String>,
    /// Everything after the plugin name (connection attributes and later fields), as sent.
    pub tail: Vec<u8>,
}

/// A client's COM_CHANGE_USER (its payload after the command byte): a new login on the
/// connection, its auth data made for the connection's salt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeUser {
    pub user: String,
    pub auth: Vec<u8>,
    /// The plugin the auth data was made with, when named.
    pub plugin: Option<String>,
    /// Everything after the auth data (database, character set, plugin, attributes), as sent.
    tail: Vec<u8>,
}

impl ChangeUser {
    /// Reads a COM_CHANGE_USER payload (command byte first) of a connection with
    /// `capabilities`; `None` when it is not one tcpcopy can rewrite (no
    /// CLIENT_SECURE_CONNECTION: a pre-4.1 client).
    pub fn parse(payload: &[u8], capabilities: u32) -> Option<ChangeUser> {
        if capabilities & CLIENT_SECURE_CONNECTION == 0 {
            return None;
        }
        let mut r = Reader::new(payload.get(1..)?);
        let user = String::from_utf8_lossy(r.cstr()).into_owned();
        let n = usize::from(r.u8()?);
        let auth = r.take(n)?.to_vec();
        let tail = r.rest().to_vec();
        let mut t = Reader::new(&tail);
        t.cstr(); // the database
        let plugin = (capabilities & CLIENT_PLUGIN_AUTH != 0 && t.take(2).is_some())
            .then(|| String::from_utf8_lossy(t.cstr()).into_owned())
            .filter(|p| !p.is_empty());
        Some(ChangeUser {
            user,
            auth,
            plugin,
            tail,
        })
    }

    /// The payload (command byte first), with these user and auth data.
    pub fn payload(&self) -> Vec<u8> {
        let auth = &self.auth[..self.auth.len().min(255)];
        let mut out = Vec::with_capacity(3 + self.user.len() + auth.len() + self.tail.len());
        out.push(super::stmt::COM_CHANGE_USER);
        out.extend_from_slice(self.user.as_bytes());
        out.push(0);
        out.push(auth.len() as u8);
        out.extend_from_slice(auth);
        out.extend_from_slice(&self.tail);
        out
    }
}

/// The fixed part of a handshake response after the capabilities: max packet size (4),
/// character set (1), filler (23).
const FIXED: usize = 28;

/// What a client's first packet is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientHello {
    /// An SSLRequest: TLS follows.
    Tls,
    Response(HandshakeResponse),
}

impl HandshakeResponse {
    /// Reads a client's first packet's payload; `None` when it is not a protocol-4.1 handshake
    /// response.
    pub fn parse(payload: &[u8]) -> Option<ClientHello> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32()?;
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return None;
        }
        let fixed = r.take(FIXED)?.to_vec();
        if capabilities & CLIENT_SSL != 0 && r.rest().is_empty() {
            return Some(ClientHello::Tls);
        }
        let user = String::from_utf8_lossy(r.cstr()).into_owned();
        let auth = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            let n = usize::try_from(r.lenenc()?).ok()?;
            r.take(n)?.to_vec()
        } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = usize::from(r.u8()?);
            r.take(n)?.to_vec()
        } else {
            r.cstr().to_vec()
        };
        let database = (capabilities & CLIENT_CONNECT_WITH_DB != 0 && !r.rest().is_empty())
            .then(|| String::from_utf8_lossy(r.cstr()).into_owned());
        let plugin = (capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.rest().is_empty())
            .then(|| String::from_utf8_lossy(r.cstr()).into_owned());
        Some(ClientHello::Response(HandshakeResponse {
            capabilities,
            fixed,
            user,
            auth,
            database,
            plugin,
            tail: r.rest().to_vec(),
        }))
    }

    /// The payload, written as the client would with these fields.
    pub fn payload(&self) -> Vec<u8> {
        let mut caps = self.capabilities;
        if self.database.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        } else {
            caps &= !CLIENT_CONNECT_WITH_DB;
        }
        let mut out = Vec::with_capacity(64 + self.user.len() + self.auth.len() + self.tail.len());
        out.extend_from_slice(&caps.to_le_bytes());
        out.extend_from_slice(&self.fixed);
        out.extend_from_slice(self.user.as_bytes());
        out.push(0);
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc(&mut out, self.auth.len());
            out.extend_from_slice(&self.auth);
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            out.push(self.auth.len().min(255) as u8);
            out.extend_from_slice(&self.auth[..self.auth.len().min(255)]);
        } else {
            out.extend_from_slice(&self.auth);
            out.push(0);
        }
        if let Some(db) = &self.database {
            out.extend_from_slice(db.as_bytes());
            out.push(0);
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            if let Some(p) = &self.plugin {
                out.extend_from_slice(p.as_bytes());
            }
            out.push(0);
        }
        out.extend_from_slice(&self.tail);
        out
    }

    /// A handshake response of tcpcopy's own, for a session whose login was never seen:
    /// protocol 4.1 with the usual capabilities the server offers, utf8mb4, no attributes.
    pub fn own(user: &str, server_capabilities: u32) -> HandshakeResponse {
        /// LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION,
        /// MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS, PLUGIN_AUTH,
        /// PLUGIN_AUTH_LENENC_CLIENT_DATA (no SSL, no compression, no attributes).
        const WANTED: u32 = 0x1
            | 0x2
            | 0x4
            | 0x200
            | 0x2000
            | 0x8000
            | 0x1_0000
            | 0x2_0000
            | 0x4_0000
            | 0x8_0000
            | 0x20_0000;
        let mut fixed = vec![0u8; FIXED];
        fixed[..4].copy_from_slice(&(16u32 << 20).to_le_bytes());
        fixed[4] = 45; // utf8mb4_general_ci
        HandshakeResponse {
            capabilities: (WANTED & server_capabilities) | CLIENT_PROTOCOL_41,
            fixed,
            user: user.to_owned(),
            auth: Vec::new(),
            database: None,
            plugin: None,
            tail: Vec::new(),
        }
    }
}

/// The server's answer to a login step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthAnswer {
    Ok,
    /// An error: its code and message.
    Err(u16, String),
    /// Use another plugin, with this salt.
    Switch {
        plugin: String,
        salt: Vec<u8>,
    },
    /// More data for the plugin (caching_sha2_password: 3 fast path done, 4 full
    /// authentication wanted; or a public key).
    More(Vec<u8>),
}

impl AuthAnswer {
    /// Reads a server packet's payload during the login; `None` when it is none of these.
    pub fn parse(payload: &[u8]) -> Option<AuthAnswer> {
        match *payload.first()? {
            0x00 => Some(AuthAnswer::Ok),
            0xff => {
                let mut r = Reader::new(&payload[1..]);
                let code = r.u16()?;
                let mut msg = r.rest();
                if msg.first() == Some(&b'#') && msg.len() >= 6 {
                    msg = &msg[6..];
                }
                Some(AuthAnswer::Err(
                    code,
                    String::from_utf8_lossy(msg).into_owned(),
                ))
            }
            0xfe => {
                let mut r = Reader::new(&payload[1..]);
                let plugin = String::from_utf8_lossy(r.cstr()).into_owned();
                let salt = r.rest();
                let salt = salt.strip_suffix(&[0]).unwrap_or(salt).to_vec();
                Some(AuthAnswer::Switch { plugin, salt })
            }
            0x01 => Some(AuthAnswer::More(payload[1..].to_vec())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting as sent (connection id 3, salt `abcdefgh` + `ijklmnopqrst`).
    pub fn greeting_payload(plugin: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        let caps: u32 = 0xf7fe | 0x81bf << 16;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(plugin.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn a_greeting_gives_its_twenty_byte_salt_and_plugin() {
        let g = Greeting::parse(&greeting_payload("mysql_native_password")).unwrap();
        assert_eq!(g.salt, b"abcdefghijklmnopqrst");
        assert_eq!(g.plugin, "mysql_native_password");
        assert_ne!(g.capabilities & CLIENT_PLUGIN_AUTH, 0);
        assert_eq!(Greeting::parse(&[0xff, 1, 2]), None);
        assert_eq!(Greeting::parse(&[10, b'x']), None);
    }

    #[test]
    fn a_handshake_response_reads_back_as_written() {
        let mut own = HandshakeResponse::own("app", u32::MAX);
        own.auth = vec![7; 20];
        own.database = Some("shop".into());
        own.plugin = Some("mysql_native_password".into());
        own.capabilities |= 0x10_0000; // CLIENT_CONNECT_ATTRS
        own.tail = vec![3, 1, b'a', 0];
        let payload = own.payload();
        let ClientHello::Response(back) = HandshakeResponse::parse(&payload).unwrap() else {
            panic!("not a response");
        };
        assert_eq!(back.user, "app");
        assert_eq!(back.auth, vec![7; 20]);
        assert_eq!(back.database.as_deref(), Some("shop"));
        assert_eq!(back.plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(back.tail, vec![3, 1, b'a', 0]);
        assert_eq!(back.payload(), payload);
    }

    #[test]
    fn an_ssl_request_is_told_apart() {
        let mut p = (CLIENT_PROTOCOL_41 | CLIENT_SSL).to_le_bytes().to_vec();
        p.extend_from_slice(&[0; FIXED]);
        assert_eq!(HandshakeResponse::parse(&p), Some(ClientHello::Tls));
        assert_eq!(HandshakeResponse::parse(&p[..10]), None);
    }

    #[test]
    fn login_answers_are_told_apart() {
        assert_eq!(
            AuthAnswer::parse(&[0, 0, 0, 2, 0, 0, 0]),
            Some(AuthAnswer::Ok)
        );
        let err = b"\xff\x15\x04#28000Access denied";
        assert_eq!(
            AuthAnswer::parse(err),
            Some(AuthAnswer::Err(1045, "Access denied".into()))
        );
        let switch = b"\xfemysql_native_password\0saltsaltsaltsaltsalt\0";
        assert_eq!(
            AuthAnswer::parse(switch),
            Some(AuthAnswer::Switch {
                plugin: "mysql_native_password".into(),
                salt: b"saltsaltsaltsaltsalt".to_vec()
            })
        );
        assert_eq!(AuthAnswer::parse(&[1, 3]), Some(AuthAnswer::More(vec![3])));
        assert_eq!(AuthAnswer::parse(&[]), None);
    }

    #[test]
    fn packets_split_only_when_whole() {
        let mut b = Vec::new();
        write(&mut b, 1, b"hello");
        assert_eq!(split(&b), Some((1, &b"hello"[..])));
        assert_eq!(split(&b[..6]), None);
        assert_eq!(payload_len(&b), Some(5));
    }
}
