//! Protocol messages built from fuzz input, mostly well-formed: MySQL packets (greetings,
//! handshake responses, auth switches, OK/ERR, commands naming statement ids) and PostgreSQL
//! messages (startup, SSLRequest, CancelRequest, authentication requests and answers, queries).
//! A target's answer may be made for what the core last sent it (`sent`): the packet sequence
//! number MySQL expects, SCRAM's nonce and server signature.
//!
//! Every choice is one byte (`pick`: the byte modulo the number of choices), so that the seed
//! generator (crates/tcpcopy/tests/fuzz/seeds.rs) can write inputs that take a given path.

use arbitrary::{Result, Unstructured};
use base64::{engine::general_purpose::STANDARD, Engine};
use dialect::postgres::message::{self, Startup, CANCEL_REQUEST, SSL_REQUEST};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `--login` users; the client logs in as one of them or as `nobody`, who has none.
pub const LOGINS: [(&str, &str); 3] = [("app", "secret"), ("ro", ""), ("root", "pw:x")];
const USERS: [&str; 4] = ["app", "ro", "root", "nobody"];
const MYSQL_PLUGINS: [&str; 4] = [
    "mysql_native_password",
    "caching_sha2_password",
    "sha256_password",
    "",
];

/// One of `n` choices (1 to 256): the next byte modulo `n` (0 once the input is used up).
pub fn pick(u: &mut Unstructured<'_>, n: usize) -> Result<usize> {
    Ok(usize::from(u.arbitrary::<u8>()?) % n)
}

/// One of `choices`, as [`pick`] chooses.
pub fn one_of<T: Copy>(u: &mut Unstructured<'_>, choices: &[T]) -> Result<T> {
    Ok(choices[pick(u, choices.len())?])
}

/// A length up to `max` ([`pick`]), then as many bytes of the input (fewer at its end).
fn bytes(u: &mut Unstructured<'_>, max: usize) -> Result<Vec<u8>> {
    let n = pick(u, max + 1)?;
    Ok(u.bytes(n.min(u.len()))?.to_vec())
}

fn stmt_id(u: &mut Unstructured<'_>) -> Result<u32> {
    one_of(u, &[1, 2, 3, 7, 0, u32::MAX])
}

fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

/// A packet of a MySQL client: its login, its answer to an auth switch, or a command.
pub fn mysql_client(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let kind = pick(u, 12)?;
    let (seq, payload) = match kind {
        0..=2 => (1, handshake_response(u, kind == 2)?),
        3 => (pick(u, 8)? as u8, bytes(u, 40)?),
        4 => (0, [&[0x03][..], b"SELECT 1"].concat()),
        5 => (0, [&[0x16][..], b"SELECT ?"].concat()),
        6..=8 => {
            let command = [0x17, 0x19, 0x1a, 0x18, 0x1c][pick(u, 5)?];
            let mut p = vec![command];
            p.extend_from_slice(&stmt_id(u)?.to_le_bytes());
            p.extend(bytes(u, 12)?);
            (0, p)
        }
        9 => {
            let mut p = vec![0x11];
            cstr(&mut p, USERS[pick(u, USERS.len())?].as_bytes());
            p.push(20);
            p.extend_from_slice(&[0x5a; 20]);
            cstr(&mut p, b"db");
            p.extend_from_slice(&[33, 0]);
            cstr(&mut p, MYSQL_PLUGINS[pick(u, 3)?].as_bytes());
            (0, p)
        }
        10 => (0, vec![[0x02, 0x01, 0x1f, 0x0e][pick(u, 4)?], b'd']),
        _ => (pick(u, 4)? as u8, bytes(u, 60)?),
    };
    Ok(mysql_packet(seq, &payload))
}

/// A HandshakeResponse41 (or, with `tls`, an SSLRequest).
fn handshake_response(u: &mut Unstructured<'_>, tls: bool) -> Result<Vec<u8>> {
    // PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH, and optional ones from the input.
    let mut caps: u32 = 0x200 | 0x8000 | 0x8_0000;
    // CONNECT_WITH_DB, COMPRESS, PLUGIN_AUTH_LENENC_CLIENT_DATA.
    for flag in [0x8u32, 0x20, 0x20_0000] {
        if pick(u, 4)? == 0 {
            caps |= flag;
        }
    }
    if tls {
        caps |= 0x800;
    }
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 33]);
    p.extend_from_slice(&[0; 23]);
    if tls {
        return Ok(p);
    }
    cstr(&mut p, USERS[pick(u, USERS.len())?].as_bytes());
    // 20 bytes of scramble: the same length byte with or without the lenenc flag.
    p.push(20);
    p.extend_from_slice(&[0x11; 20]);
    if caps & 0x8 != 0 {
        cstr(&mut p, b"shop");
    }
    cstr(&mut p, MYSQL_PLUGINS[pick(u, 3)?].as_bytes());
    p.extend(bytes(u, 8)?);
    Ok(p)
}

/// A packet of a MySQL server (online or target). `sent` is what the core last sent this
/// server, if known: a well-formed answer follows its sequence number.
pub fn mysql_server(u: &mut Unstructured<'_>, sent: &[u8]) -> Result<Vec<u8>> {
    let next = sent.get(3).map_or(0, |s| s.wrapping_add(1));
    let seq = if pick(u, 8)? == 0 {
        pick(u, 4)? as u8
    } else {
        next
    };
    let payload = match pick(u, 10)? {
        0 => {
            let mut p = vec![10];
            cstr(&mut p, b"8.0.36");
            p.extend_from_slice(&[1, 0, 0, 0]);
            let salt = u.bytes(20.min(u.len()))?.to_vec();
            let salt = [salt, vec![0x33; 20]].concat();
            p.extend_from_slice(&salt[..8]);
            p.push(0);
            // Capabilities: PROTOCOL_41, SECURE_CONNECTION, CONNECT_WITH_DB, COMPRESS,
            // PLUGIN_AUTH, PLUGIN_AUTH_LENENC_CLIENT_DATA; charset, status; salt length.
            p.extend_from_slice(&[0x28, 0x82, 33, 2, 0, 0x28, 0x00, 21]);
            p.extend_from_slice(&[0; 10]);
            p.extend_from_slice(&salt[8..20]);
            p.push(0);
            cstr(&mut p, MYSQL_PLUGINS[pick(u, 4)?].as_bytes());
            return Ok(mysql_packet(0, &p));
        }
        1..=3 => vec![0, 0, 0, 2, 0, 0, 0],
        4 => [&[0xff, 0x15, 0x04][..], b"#28000Access denied"].concat(),
        5 => {
            let mut p = vec![0xfe];
            cstr(&mut p, MYSQL_PLUGINS[pick(u, 3)?].as_bytes());
            p.extend_from_slice(&[0x44; 20]);
            p.push(0);
            p
        }
        // AuthMoreData: fast authentication done, full authentication, or a public key.
        6 => match pick(u, 3)? {
            0 => vec![1, 3],
            1 => vec![1, 4],
            _ => [
                &[1][..],
                b"-----BEGIN PUBLIC KEY-----\nMFww\n-----END PUBLIC KEY-----\n",
            ]
            .concat(),
        },
        7 | 8 => {
            // PREPARE_OK: the statement id, no columns, one parameter (whose definition and
            // EOF follow in packets of their own, left out).
            let mut p = vec![0];
            p.extend_from_slice(&stmt_id(u)?.to_le_bytes());
            p.extend_from_slice(&[0, 0, pick(u, 2)? as u8, 0, 0, 0, 0]);
            p
        }
        _ => bytes(u, 60)?,
    };
    Ok(mysql_packet(seq, &payload))
}

/// A message of a PostgreSQL client.
pub fn postgres_client(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let user = USERS[pick(u, USERS.len())?];
    Ok(match pick(u, 10)? {
        0..=2 => Startup::new(user, "shop").encode(),
        3 => message::request_code(SSL_REQUEST),
        4 => {
            let mut m = 16u32.to_be_bytes().to_vec();
            m.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 42, 1, 2, 3, 4]);
            m
        }
        5 => message::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=clientnonce"),
        6 => message::sasl_response(b"c=biws,r=clientnonceserver,p=cHJvb2Y="),
        7 => message::password_message(b"md5d41d8cd98f00b204e9800998ecf8427e"),
        8 => message::query("SELECT 1"),
        _ => message::frontend(one_of(u, b"QXpPBES")?, &bytes(u, 40)?),
    })
}

/// A SCRAM exchange at the target as far as it went: the client's first message (bare) and
/// the server's.
#[derive(Clone, Default)]
pub struct Scram {
    client_first_bare: String,
    server_first: String,
    salt: Vec<u8>,
    iterations: u32,
}

fn authentication(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    backend(b'R', &body)
}

fn backend(ty: u8, body: &[u8]) -> Vec<u8> {
    message::frontend(ty, body)
}

/// The text after `from` in `sent`, up to `to` (or the end).
fn field(sent: &[u8], from: &str, to: &str) -> Option<String> {
    let text = String::from_utf8_lossy(sent);
    let start = text.find(from)?;
    let rest = &text[start..];
    Some(rest[..rest.find(to).unwrap_or(rest.len())].to_owned())
}

/// A message of a PostgreSQL server, made for what the core last sent it (`sent`).
pub fn postgres_server(
    u: &mut Unstructured<'_>,
    sent: &[u8],
    scram: &mut Scram,
) -> Result<Vec<u8>> {
    Ok(match pick(u, 13)? {
        0 => authentication(0, &[]),
        1 => authentication(3, &[]),
        2 => authentication(5, &[1, 2, 3, 4]),
        3 => authentication(10, b"SCRAM-SHA-256\0\0"),
        4 => {
            // SASLContinue for the nonce the core sent.
            let bare = field(sent, "n=", "\u{0}").unwrap_or_default();
            let nonce = field(bare.as_bytes(), "r=", ",").unwrap_or_default();
            scram.salt = u.bytes(8.min(u.len()))?.to_vec();
            scram.iterations = 1 + pick(u, 4)? as u32;
            scram.server_first = format!(
                "{nonce}srv,s={},i={}",
                STANDARD.encode(&scram.salt),
                scram.iterations
            );
            scram.client_first_bare = bare;
            authentication(11, scram.server_first.as_bytes())
        }
        5 => {
            // SASLFinal signed with one of the passwords.
            let password = LOGINS[pick(u, LOGINS.len())?].1;
            let without_proof = field(sent, "c=", ",p=").unwrap_or_default();
            let auth = format!(
                "{},{},{without_proof}",
                scram.client_first_bare, scram.server_first
            );
            let mut salted = [0; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(
                password.as_bytes(),
                &scram.salt,
                scram.iterations.max(1),
                &mut salted,
            );
            let server_key = hmac(&salted, b"Server Key");
            let signature = hmac(&server_key, auth.as_bytes());
            authentication(12, format!("v={}", STANDARD.encode(signature)).as_bytes())
        }
        6 => backend(b'K', &[0, 0, 0, 42, 1, 2, 3, 4]),
        7 => backend(b'S', b"server_version\x0016.1\0"),
        8 => backend(b'Z', b"I"),
        9 => backend(b'E', b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"),
        10 => vec![one_of(u, b"SN")?],
        11 => backend(b'C', b"SELECT 1\0"),
        _ => backend(one_of(u, b"RKSZEDTCN")?, &bytes(u, 40)?),
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}
