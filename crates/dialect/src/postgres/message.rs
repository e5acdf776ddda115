//! PostgreSQL v3 wire messages: framing of both directions, the few backend messages a login
//! reads, and the frontend messages a login writes.
//!
//! Two framings exist. The first packet of a connection (startup message, SSLRequest,
//! GSSENCRequest, CancelRequest) is untyped: an i32 length that counts itself, then an i32 code.
//! Every later message, from either side, is typed: one type byte, then an i32 length that counts
//! itself but not the type byte. All integers are big-endian.
//!
//! Parsing never panics on network input: lengths are checked before any slice is taken, and
//! malformed input is a [`Malformed`] error.

use thiserror::Error;

/// Protocol 3.0's code in a startup message (major 3 in the high 16 bits, minor in the low).
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// The code of an SSLRequest.
pub const SSL_REQUEST: u32 = 80_877_103;
/// The code of a GSSENCRequest.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// The code of a CancelRequest.
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// The longest secret key of a backend (protocol 3.2 lets a server choose 4 to 256 bytes; 3.0
/// has 4).
pub const MAX_SECRET_LEN: usize = 256;
/// The server's limit on an untyped first packet (PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_INITIAL_LEN: usize = 10_000;
/// The largest backend message a login reads; a login's messages are a few hundred bytes.
pub const MAX_LOGIN_MESSAGE_LEN: usize = 64 * 1024;

/// Frontend message types a login deals with.
pub const PASSWORD: u8 = b'p';
pub const QUERY: u8 = b'Q';
pub const TERMINATE: u8 = b'X';

/// Input that is not PostgreSQL's wire protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Malformed {
    #[error("a first packet of {0} bytes (8 to 10000 expected)")]
    InitialLength(usize),
    #[error("a message of type {ty:#04x} with length field {len} (at least 4 expected)")]
    Length { ty: u8, len: u32 },
    #[error("a backend message of {0} bytes during the login (at most 65536 expected)")]
    TooLong(usize),
    #[error("message {ty:#04x} is cut short")]
    Truncated { ty: u8 },
    #[error("a string that is not UTF-8 in message {ty:#04x}")]
    NotUtf8 { ty: u8 },
    #[error("a startup message without a user")]
    NoUser,
    #[error("a cancel request or key data with a secret key of {0} bytes (4 to 256 expected)")]
    SecretLength(usize),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Length of the untyped first packet at the start of `buf`, or `None` while its length field
/// is incomplete.
pub fn initial_len(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = be32(buf) as usize;
    if !(8..=MAX_INITIAL_LEN).contains(&len) {
        return Err(Malformed::InitialLength(len));
    }
    Ok(Some(len))
}

/// Whether `buf` starts like an untyped first packet: typed messages start with a letter, a
/// first packet with the high byte of a length below 10000, which is zero.
pub fn looks_initial(buf: &[u8]) -> bool {
    buf.first() == Some(&0)
}

/// Length (type byte included) of the typed message at the start of `buf`, or `None` while its
/// header is incomplete. Frontend and backend messages share this framing; it is also where a
/// client's request ends.
pub fn message_len(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = be32(&buf[1..]);
    if len < 4 {
        return Err(Malformed::Length { ty: buf[0], len });
    }
    Ok(Some(1 + len as usize))
}

/// One whole typed message in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    pub ty: u8,
    pub body: &'a [u8],
    /// The whole message's length, type byte included.
    pub len: usize,
}

/// The typed message at the start of `buf` if it is whole.
pub fn split_message(buf: &[u8]) -> Result<Option<Framed<'_>>, Malformed> {
    match message_len(buf)? {
        Some(len) if buf.len() >= len => Ok(Some(Framed {
            ty: buf[0],
            body: &buf[5..len],
            len,
        })),
        _ => Ok(None),
    }
}

/// An untyped first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initial {
    Startup(Startup),
    SslRequest,
    GssEncRequest,
    /// A CancelRequest for the backend with this key.
    CancelRequest(CancelKey),
    /// A startup message of a protocol version other than 3.x.
    OtherVersion(u32),
}

impl Initial {
    /// Parses one whole first packet (as framed by [`initial_len`]).
    pub fn parse(packet: &[u8]) -> Result<Initial, Malformed> {
        if packet.len() < 8 {
            return Err(Malformed::InitialLength(packet.len()));
        }
        let code = be32(&packet[4..]);
        Ok(match code {
            SSL_REQUEST => Initial::SslRequest,
            GSSENC_REQUEST => Initial::GssEncRequest,
            CANCEL_REQUEST => Initial::CancelRequest(CancelKey::parse(&packet[8..])?),
            c if c >> 16 == 3 => Initial::Startup(Startup::parse_params(c, &packet[8..])?),
            c => Initial::OtherVersion(c),
        })
    }
}

/// What names a backend to cancel its query: its process id and secret key, as the server
/// handed them out in BackendKeyData and a CancelRequest gives them back.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: Vec<u8>,
}

impl CancelKey {
    /// The key in a BackendKeyData body or after a CancelRequest's code: the pid, then the
    /// secret (the rest).
    pub fn parse(body: &[u8]) -> Result<CancelKey, Malformed> {
        let secret = body.get(4..).unwrap_or_default();
        if !(4..=MAX_SECRET_LEN).contains(&secret.len()) {
            return Err(Malformed::SecretLength(secret.len()));
        }
        Ok(CancelKey {
            pid: be32(body),
            secret: secret.to_vec(),
        })
    }

    /// The CancelRequest for this key.
    pub fn cancel_request(&self) -> Vec<u8> {
        let mut out = request_code(CANCEL_REQUEST);
        out.extend_from_slice(&self.pid.to_be_bytes());
        out.extend_from_slice(&self.secret);
        let len = out.len() as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is what lets one cancel a backend's queries: never in a log.
        write!(f, "CancelKey {{ pid: {}, secret: <hidden> }}", self.pid)
    }
}

/// A startup message: protocol version and parameters (`user`, `database`, `options`,
/// `application_name`, ...), in the client's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub version: u32,
    pub params: Vec<(String, String)>,
}

impl Startup {
    /// A protocol 3.0 startup message for `user` and `database`.
    pub fn new(user: &str, database: &str) -> Startup {
        Startup {
            version: PROTOCOL_3_0,
            params: vec![
                ("user".to_owned(), user.to_owned()),
                ("database".to_owned(), database.to_owned()),
            ],
        }
    }

    fn parse_params(version: u32, mut body: &[u8]) -> Result<Startup, Malformed> {
        let mut params = Vec::new();
        loop {
            let (name, rest) = cstring(body, 0)?;
            if name.is_empty() {
                break;
            }
            let (value, rest) = cstring(rest, 0)?;
            params.push((name.to_owned(), value.to_owned()));
            body = rest;
        }
        let startup = Startup { version, params };
        if startup.user().is_none() {
            return Err(Malformed::NoUser);
        }
        Ok(startup)
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The user to log in as (required by the server).
    pub fn user(&self) -> Option<&str> {
        self.param("user")
    }

    /// The database; the server takes the user's name when it is absent.
    pub fn database(&self) -> &str {
        self.param("database").or(self.user()).unwrap_or_default()
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0; 4];
        out.extend_from_slice(&self.version.to_be_bytes());
        for (name, value) in &self.params {
            for s in [name, value] {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
        }
        out.push(0);
        let len = out.len() as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out
    }
}

/// A NUL-terminated UTF-8 string at the start of `buf`, and what follows it.
fn cstring(buf: &[u8], ty: u8) -> Result<(&str, &[u8]), Malformed> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(Malformed::Truncated { ty })?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| Malformed::NotUtf8 { ty })?;
    Ok((s, &buf[end + 1..]))
}

/// An authentication request ('R' message) from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// SASL, with the mechanisms the server offers.
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, SCM credentials, GSSAPI, SSPI: code as sent.
    Other(u32),
}

/// The fields of an ErrorResponse that say what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// SQLSTATE, such as `28P01` (invalid password) or `3D000` (no such database).
    pub code: String,
    pub message: String,
}

/// A backend message as far as a login cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend<'a> {
    Auth(Auth<'a>),
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    BackendKeyData(CancelKey),
    /// Transaction status: `I` idle, `T` in a transaction, `E` in a failed transaction.
    ReadyForQuery(u8),
    ErrorResponse(ErrorFields),
    /// Notices, NegotiateProtocolVersion and everything a login lets pass.
    Other(u8),
}

impl<'a> Backend<'a> {
    /// Parses one backend message from its type and body (as split by [`split_message`]).
    pub fn parse(ty: u8, body: &'a [u8]) -> Result<Backend<'a>, Malformed> {
        let short = Malformed::Truncated { ty };
        Ok(match ty {
            b'R' => Backend::Auth(parse_auth(body)?),
            b'S' => {
                let (name, rest) = cstring(body, ty)?;
                let (value, _) = cstring(rest, ty)?;
                Backend::ParameterStatus { name, value }
            }
            b'K' => Backend::BackendKeyData(CancelKey::parse(body)?),
            b'Z' => Backend::ReadyForQuery(*body.first().ok_or(short)?),
            b'E' => Backend::ErrorResponse(parse_error_fields(body)?),
            other => Backend::Other(other),
        })
    }
}

fn parse_auth(body: &[u8]) -> Result<Auth<'_>, Malformed> {
    let short = Malformed::Truncated { ty: b'R' };
    if body.len() < 4 {
        return Err(short);
    }
    let rest = &body[4..];
    Ok(match be32(body) {
        0 => Auth::Ok,
        3 => Auth::CleartextPassword,
        5 => {
            let salt = rest.get(..4).ok_or(short)?;
            Auth::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            let mut rest = rest;
            loop {
                let (name, tail) = cstring(rest, b'R')?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name);
                rest = tail;
            }
            Auth::Sasl { mechanisms }
        }
        11 => Auth::SaslContinue(rest),
        12 => Auth::SaslFinal(rest),
        code => Auth::Other(code),
    })
}

fn parse_error_fields(mut body: &[u8]) -> Result<ErrorFields, Malformed> {
    let mut fields = ErrorFields {
        code: String::new(),
        message: String::new(),
    };
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let (value, rest) = cstring(rest, b'E')?;
        match field {
            b'C' => fields.code = value.to_owned(),
            b'M' => fields.message = value.to_owned(),
            _ => {}
        }
        body = rest;
    }
    Ok(fields)
}

/// A typed frontend message.
pub fn frontend(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(ty);
    out.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A PasswordMessage: a cleartext password or an md5 hash, NUL-terminated.
pub fn password_message(password: &[u8]) -> Vec<u8> {
    let mut body = password.to_vec();
    body.push(0);
    frontend(PASSWORD, &body)
}

/// A SASLInitialResponse: the mechanism chosen and the client's first message.
pub fn sasl_initial_response(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(mechanism.len() + 5 + data.len());
    body.extend_from_slice(mechanism.as_bytes());
    body.push(0);
    body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    body.extend_from_slice(data);
    frontend(PASSWORD, &body)
}

/// A SASLResponse: the client's next SASL message.
pub fn sasl_response(data: &[u8]) -> Vec<u8> {
    frontend(PASSWORD, data)
}

/// A simple Query.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    frontend(QUERY, &body)
}

/// A Terminate.
pub fn terminate() -> Vec<u8> {
    frontend(TERMINATE, &[])
}

/// An untyped first packet with no body beyond its code (SSLRequest, GSSENCRequest).
pub fn request_code(code: u32) -> Vec<u8> {
    let mut out = 8u32.to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trips_and_defaults_database_to_user() {
        let mut s = Startup::new("alice", "shop");
        s.params.push(("options".into(), "-c search_path=x".into()));
        let bytes = s.encode();
        assert_eq!(initial_len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(Initial::parse(&bytes), Ok(Initial::Startup(s.clone())));
        let only_user = Startup {
            version: PROTOCOL_3_0,
            params: vec![("user".into(), "bob".into())],
        };
        assert_eq!(only_user.database(), "bob");
    }

    #[test]
    fn first_packets_are_told_apart_by_code() {
        assert_eq!(
            Initial::parse(&request_code(SSL_REQUEST)),
            Ok(Initial::SslRequest)
        );
        assert_eq!(
            Initial::parse(&request_code(GSSENC_REQUEST)),
            Ok(Initial::GssEncRequest)
        );
        let key = CancelKey {
            pid: 4242,
            secret: vec![1, 2, 3, 4],
        };
        let cancel = key.cancel_request();
        assert_eq!(cancel.len(), 16);
        assert_eq!(&cancel[..8], &[0, 0, 0, 16, 4, 210, 22, 46]);
        assert_eq!(initial_len(&cancel), Ok(Some(16)));
        assert_eq!(Initial::parse(&cancel), Ok(Initial::CancelRequest(key)));
        // Protocol 3.2's longer keys.
        let long = CancelKey {
            pid: 7,
            secret: vec![9; 32],
        };
        assert_eq!(
            Initial::parse(&long.cancel_request()),
            Ok(Initial::CancelRequest(long))
        );
        assert_eq!(
            Initial::parse(&[0, 0, 0, 12, 4, 210, 22, 46, 0, 0, 0, 1]),
            Err(Malformed::SecretLength(0))
        );
        let debug = format!("{:?}", CancelKey::parse(&[0, 0, 0, 1, 9, 9, 9, 9]).unwrap());
        assert_eq!(debug, "CancelKey { pid: 1, secret: <hidden> }");
        assert_eq!(
            Initial::parse(&request_code(2 << 16)),
            Ok(Initial::OtherVersion(2 << 16))
        );
        assert_eq!(initial_len(&[0, 0, 0, 7]), Err(Malformed::InitialLength(7)));
        assert!(looks_initial(&request_code(SSL_REQUEST)));
        assert!(!looks_initial(&query("select 1")));
    }

    #[test]
    fn a_startup_without_user_is_malformed() {
        let s = Startup {
            version: PROTOCOL_3_0,
            params: vec![("database".into(), "x".into())],
        };
        assert_eq!(Initial::parse(&s.encode()), Err(Malformed::NoUser));
    }

    #[test]
    fn typed_messages_are_framed_and_parsed() {
        let q = query("select 1");
        assert_eq!(message_len(&q[..4]), Ok(None));
        assert_eq!(message_len(&q), Ok(Some(q.len())));
        assert_eq!(split_message(&q[..q.len() - 1]), Ok(None));
        assert_eq!(
            message_len(&[b'Q', 0, 0, 0, 3]),
            Err(Malformed::Length { ty: b'Q', len: 3 })
        );
        let md5 = [0, 0, 0, 5, 9, 8, 7, 6];
        let msg = frontend(b'R', &md5);
        let Framed { ty, body, .. } = split_message(&msg).unwrap().unwrap();
        assert_eq!(
            Backend::parse(ty, body),
            Ok(Backend::Auth(Auth::Md5Password { salt: [9, 8, 7, 6] }))
        );
        let sasl = frontend(b'R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let Framed { ty, body, .. } = split_message(&sasl).unwrap().unwrap();
        assert_eq!(
            Backend::parse(ty, body),
            Ok(Backend::Auth(Auth::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
            }))
        );
        let err = frontend(b'E', b"SFATAL\0C28P01\0Mpassword authentication failed\0\0");
        let Framed { ty, body, .. } = split_message(&err).unwrap().unwrap();
        assert_eq!(
            Backend::parse(ty, body),
            Ok(Backend::ErrorResponse(ErrorFields {
                code: "28P01".into(),
                message: "password authentication failed".into()
            }))
        );
        assert_eq!(
            Backend::parse(b'R', &[0, 0, 0, 5, 1]),
            Err(Malformed::Truncated { ty: b'R' })
        );
        assert_eq!(Backend::parse(b'Z', b"I"), Ok(Backend::ReadyForQuery(b'I')));
        assert_eq!(
            Backend::parse(b'K', &[0, 0, 0, 42, 1, 2, 3, 4]),
            Ok(Backend::BackendKeyData(CancelKey {
                pid: 42,
                secret: vec![1, 2, 3, 4]
            }))
        );
        assert_eq!(
            Backend::parse(b'K', &[0, 0, 0, 42, 1]),
            Err(Malformed::SecretLength(1))
        );
    }

    #[test]
    fn frontend_messages_have_their_wire_form() {
        assert_eq!(password_message(b"pw"), b"p\0\0\0\x07pw\0");
        assert_eq!(
            sasl_initial_response("M", b"ab"),
            b"p\0\0\0\x0cM\0\0\0\0\x02ab".to_vec()
        );
        assert_eq!(terminate(), b"X\0\0\0\x04");
    }
}
