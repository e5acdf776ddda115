//! Each login path on scripted target messages: what the target gets, and the session's status.

use std::sync::Arc;

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::*;
use crate::postgres::message::SSL_REQUEST;
use crate::postgres::message::{frontend, query, request_code, terminate, GSSENC_REQUEST};
use crate::postgres::{md5_password, ScramError};

const NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL";

fn credentials(logins: &[&str]) -> Arc<Credentials> {
    Arc::new(Credentials::new(
        logins.iter().map(|l| l.parse().unwrap()).collect(),
    ))
}

fn session(logins: &[&str]) -> Session {
    Session::new(credentials(logins), None, ClientNonce::new(NONCE).unwrap())
}

fn auth(code: u32, data: &[u8]) -> Vec<u8> {
    frontend(b'R', &[&code.to_be_bytes()[..], data].concat())
}

/// What a server sends after AuthenticationOk.
fn welcome() -> Vec<u8> {
    [
        auth(0, &[]),
        frontend(b'S', b"server_version\x0015.8\0"),
        frontend(b'K', &[0, 0, 0, 42, 1, 2, 3, 4]),
        frontend(b'Z', b"I"),
    ]
    .concat()
}

fn startup() -> Vec<u8> {
    Startup::new("alice", "shop").encode()
}

/// The client's own side of a SCRAM login with the online server: never for the target.
fn online_scram_messages() -> Vec<u8> {
    [
        message::sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=onlinenonce"),
        message::sasl_response(b"c=biws,r=onlinenonceSERVER,p=AAAA"),
    ]
    .concat()
}

fn requests() -> Vec<u8> {
    [query("insert into t values (1)"), terminate()].concat()
}

/// Splits a byte stream into whole typed messages.
fn messages(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(message::Framed { ty, body, len }) = message::split_message(bytes).unwrap() {
        out.push((ty, body.to_vec()));
        bytes = &bytes[len..];
    }
    assert!(bytes.is_empty(), "a partial message left: {bytes:?}");
    out
}

/// The server side of SCRAM-SHA-256, enough to check the client's proof.
struct ScramServer {
    salted: [u8; 32],
    server_first: String,
    client_first_bare: String,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

impl ScramServer {
    fn new(password: &str, client_first: &[u8]) -> ScramServer {
        let client_first = std::str::from_utf8(client_first).unwrap();
        let bare = client_first
            .strip_prefix("n,,")
            .expect("no channel binding");
        let nonce = bare.split(',').find_map(|a| a.strip_prefix("r=")).unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), b"saltsalt", 4096, &mut salted);
        ScramServer {
            salted,
            server_first: format!(
                "r={nonce}SERVERPART,s={},i=4096",
                STANDARD.encode(b"saltsalt")
            ),
            client_first_bare: bare.to_owned(),
        }
    }

    /// Checks the client-final message's proof; returns the server-final message.
    fn check(&self, client_final: &[u8]) -> Option<String> {
        let client_final = std::str::from_utf8(client_final).unwrap();
        let (without_proof, proof) = client_final.split_once(",p=").unwrap();
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let stored_key = Sha256::digest(hmac(&self.salted, b"Client Key"));
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof = STANDARD.decode(proof).unwrap();
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        if Sha256::digest(&client_key) != stored_key {
            return None;
        }
        let server_key = hmac(&self.salted, b"Server Key");
        let v = STANDARD.encode(hmac(&server_key, auth_message.as_bytes()));
        Some(format!("v={v}"))
    }
}

/// Runs a SCRAM login whose server knows `server_password`; returns the session and what the
/// target got after the client-final message.
fn scram_login(client_password: &str, server_password: &str) -> (Session, Vec<u8>) {
    let mut s = session(&[&format!("alice:{client_password}")]);
    s.handle_client(&startup());
    s.handle_client(&online_scram_messages());
    s.handle_client(&requests());
    assert_eq!(s.take_transmit(), startup(), "the startup message is kept");
    s.handle_target(&auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"));
    let sent = messages(&s.take_transmit());
    let [(b'p', initial)] = &sent[..] else {
        panic!("{sent:?}")
    };
    let (mechanism, rest) = initial.split_at(14);
    assert_eq!(mechanism, b"SCRAM-SHA-256\0");
    let client_first = &rest[4..];
    assert_eq!(client_first, format!("n,,n=,r={NONCE}").as_bytes());
    let server = ScramServer::new(server_password, client_first);
    s.handle_target(&auth(11, server.server_first.as_bytes()));
    let sent = messages(&s.take_transmit());
    let [(b'p', client_final)] = &sent[..] else {
        panic!("{sent:?}")
    };
    match server.check(client_final) {
        Some(server_final) => {
            s.handle_target(&[auth(12, server_final.as_bytes()), welcome()].concat())
        }
        None => s.handle_target(&frontend(
            b'E',
            b"SFATAL\0C28P01\0Mpassword authentication failed for user \"alice\"\0\0",
        )),
    }
    let after = s.take_transmit();
    (s, after)
}

#[test]
fn scram_is_answered_for_the_targets_salt_and_nonce() {
    let (s, after) = scram_login("pencil", "pencil");
    assert_eq!(
        after,
        requests(),
        "the held requests follow the login, the client's SCRAM never"
    );
    assert_eq!(
        s.status(),
        Status::LoggedIn {
            method: Method::ScramSha256,
            joined: false
        }
    );
    let login_len = [
        auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
        welcome(),
    ]
    .iter()
    .map(Vec::len)
    .sum::<usize>();
    assert!(s.target_login_len() > login_len as u64);
}

#[test]
fn a_target_refusing_the_password_ends_the_session() {
    let (mut s, after) = scram_login("wrong", "pencil");
    assert!(after.is_empty());
    let Status::Failed(LoginError::Refused(e)) = s.status() else {
        panic!("{:?}", s.status())
    };
    assert_eq!(e.code, "28P01");
    assert!(s.is_ended());
    s.handle_client(&query("select 1"));
    assert!(
        s.take_transmit().is_empty(),
        "nothing is sent after a refused login"
    );
}

#[test]
fn a_target_without_the_password_fails_scram_verification() {
    let mut s = session(&["alice:pencil"]);
    s.handle_client(&startup());
    s.handle_target(&auth(10, b"SCRAM-SHA-256\0\0"));
    let _ = s.take_transmit();
    s.handle_target(&auth(
        11,
        format!("r={NONCE}X,s=c2FsdA==,i=4096").as_bytes(),
    ));
    let _ = s.take_transmit();
    s.handle_target(&auth(12, b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
    assert_eq!(
        s.status(),
        Status::Failed(LoginError::Scram(ScramError::Signature))
    );
}

#[test]
fn md5_is_answered_for_the_targets_salt() {
    let mut s = session(&["alice:pw"]);
    s.handle_client(&[startup(), message::password_message(b"md5online")].concat());
    s.handle_target(&auth(5, &[7, 7, 7, 7]));
    // Known answer computed independently (Python's hashlib).
    let hash = b"md568b632299100eaa942a25b2ea0edc035";
    assert_eq!(
        s.take_transmit(),
        [startup(), message::password_message(hash)].concat()
    );
    s.handle_target(&welcome());
    s.handle_client(&requests());
    assert_eq!(s.take_transmit(), requests());
    assert_eq!(
        s.status(),
        Status::LoggedIn {
            method: Method::Md5,
            joined: false
        }
    );
}

#[test]
fn cleartext_sends_the_login_password() {
    let mut s = session(&["alice:pw"]);
    s.handle_client(&[startup(), message::password_message(b"online-pw")].concat());
    s.handle_target(&auth(3, &[]));
    assert_eq!(
        s.take_transmit(),
        [startup(), message::password_message(b"pw")].concat()
    );
    s.handle_target(&welcome());
    assert_eq!(
        s.status(),
        Status::LoggedIn {
            method: Method::Cleartext,
            joined: false
        }
    );
}

#[test]
fn a_trust_target_gets_none_of_the_clients_authentication() {
    let mut s = session(&[]);
    s.handle_client(&[startup(), online_scram_messages()].concat());
    s.handle_target(&welcome());
    s.handle_client(&requests());
    assert_eq!(s.take_transmit(), [startup(), requests()].concat());
    assert_eq!(
        s.status(),
        Status::LoggedIn {
            method: Method::Trust,
            joined: false
        }
    );
}

#[test]
fn a_password_request_without_login_fails() {
    let mut s = session(&["bob:pw"]);
    s.handle_client(&startup());
    s.handle_target(&auth(5, &[1, 2, 3, 4]));
    assert_eq!(
        s.status(),
        Status::Failed(LoginError::NoPassword {
            user: "alice".into()
        })
    );
}

#[test]
fn unsupported_methods_and_mechanisms_fail() {
    let mut s = session(&["alice:pw"]);
    s.handle_client(&startup());
    s.handle_target(&auth(7, &[]));
    assert_eq!(s.status(), Status::Failed(LoginError::UnsupportedMethod(7)));
    let mut s = session(&["alice:pw"]);
    s.handle_client(&startup());
    s.handle_target(&auth(10, b"SCRAM-SHA-256-PLUS\0\0"));
    assert_eq!(
        s.status(),
        Status::Failed(LoginError::NoMechanism(vec!["SCRAM-SHA-256-PLUS".into()]))
    );
}

#[test]
fn a_joined_session_gets_a_startup_and_login_of_its_own() {
    let mut s = session(&["app:pw", "other:x"]);
    s.handle_client(&requests());
    let sent = s.take_transmit();
    assert_eq!(
        sent,
        Startup::new("app", "app").encode(),
        "requests wait for the login"
    );
    s.handle_target(&auth(5, &[1, 2, 3, 4]));
    s.handle_target(&welcome());
    let hash = md5_password("app", "pw", [1, 2, 3, 4]);
    assert_eq!(
        s.take_transmit(),
        [message::password_message(hash.as_bytes()), requests()].concat()
    );
    assert_eq!(
        s.status(),
        Status::LoggedIn {
            method: Method::Md5,
            joined: true
        }
    );
}

#[test]
fn a_joined_session_takes_the_startup_given() {
    let seen = Startup::new("alice", "shop");
    let nonce = ClientNonce::new(NONCE).unwrap();
    let mut s = Session::new(credentials(&["app:pw"]), Some(seen.clone()), nonce);
    s.handle_client(&query("select 1"));
    assert_eq!(s.take_transmit(), seen.encode());
    assert_eq!(s.startup(), Some(&seen));
    let mut s = session(&[]);
    s.handle_client(&query("select 1"));
    assert_eq!(s.status(), Status::Failed(LoginError::NoUser));
    assert!(s.take_transmit().is_empty());
}

#[test]
fn an_ssl_request_refused_online_is_refused_in_the_targets_name() {
    let mut s = session(&[]);
    s.handle_client(&request_code(SSL_REQUEST));
    assert!(s.take_transmit().is_empty(), "the target is never asked");
    s.handle_client(&startup());
    assert_eq!(s.take_transmit(), startup());
    // GSS encryption refused, then TLS refused, then plain.
    let mut s = session(&[]);
    s.handle_client(
        &[
            request_code(GSSENC_REQUEST),
            request_code(SSL_REQUEST),
            startup(),
        ]
        .concat(),
    );
    s.handle_target(&welcome());
    assert_eq!(s.take_transmit(), startup());
    assert_eq!(
        s.status(),
        Status::LoggedIn {
            method: Method::Trust,
            joined: false
        }
    );
}

#[test]
fn a_session_encrypted_online_is_skipped() {
    let mut s = session(&[]);
    s.handle_client(&request_code(SSL_REQUEST));
    // A TLS ClientHello record.
    s.handle_client(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    assert_eq!(s.status(), Status::Skipped(Skip::Tls));
    s.handle_client(&requests());
    assert!(s.take_transmit().is_empty());
    let mut s = session(&[]);
    s.handle_client(&request_code(GSSENC_REQUEST));
    s.handle_client(&[0, 0, 0x40, 0, 0x60, 0x82]);
    assert_eq!(s.status(), Status::Skipped(Skip::GssEncryption));
}

#[test]
fn cancel_requests_stop_for_the_hook_and_other_versions_are_skipped() {
    let key = CancelKey {
        pid: 42,
        secret: vec![1, 2, 3, 4],
    };
    let cancel = key.cancel_request();
    let mut s = session(&[]);
    s.handle_client(&cancel[..7]);
    assert_eq!(s.status(), Status::Pending);
    s.handle_client(&cancel[7..]);
    assert_eq!(s.status(), Status::Cancel(key));
    assert!(
        s.take_transmit().is_empty(),
        "nothing sent with the online key"
    );
    let mut s = session(&[]);
    s.handle_client(&request_code(2 << 16));
    assert_eq!(s.status(), Status::Skipped(Skip::ProtocolVersion(2 << 16)));
    assert!(s.take_transmit().is_empty());
}

#[test]
fn a_malformed_target_ends_the_session() {
    let mut s = session(&[]);
    s.handle_client(&startup());
    s.handle_target(&[b'R', 0, 0, 0, 2]);
    assert_eq!(
        s.status(),
        Status::Failed(LoginError::Malformed(Malformed::Length {
            ty: b'R',
            len: 2
        }))
    );
    let mut s = session(&[]);
    s.handle_client(&startup());
    s.handle_target(&frontend(b'Z', b"I"));
    assert_eq!(s.status(), Status::Failed(LoginError::Unexpected('Z')));
}

/// The same streams cut into single bytes give the same result.
#[test]
fn byte_by_byte_input_gives_the_same_bytes() {
    let client = [
        request_code(SSL_REQUEST),
        startup(),
        message::password_message(b"x"),
        requests(),
    ]
    .concat();
    let target = [auth(5, &[9, 8, 7, 6]), welcome()].concat();
    let mut whole = session(&["alice:pw"]);
    whole.handle_client(&client);
    whole.handle_target(&target);
    let expected = whole.take_transmit();
    let mut bytewise = session(&["alice:pw"]);
    let mut got = Vec::new();
    for b in &client {
        bytewise.handle_client(std::slice::from_ref(b));
    }
    for b in &target {
        bytewise.handle_target(std::slice::from_ref(b));
        got.extend(bytewise.take_transmit());
    }
    assert_eq!(got, expected);
    assert_eq!(bytewise.status(), whole.status());
    assert_eq!(
        whole.status(),
        Status::LoggedIn {
            method: Method::Md5,
            joined: false
        }
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Cuts `bytes` at the given points (taken modulo its length).
    fn chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.extend([0, bytes.len()]);
        at.sort_unstable();
        at.windows(2).map(|w| bytes[w[0]..w[1]].to_vec()).collect()
    }

    proptest! {
        /// Network input never panics the session, whatever it is and however it is cut.
        #[test]
        fn arbitrary_input_never_panics(
            client in proptest::collection::vec(any::<u8>(), 0..300),
            target in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut s = session(&["alice:pw"]);
            for chunk in chunks(&client, &cuts) {
                s.handle_client(&chunk);
            }
            for chunk in chunks(&target, &cuts) {
                s.handle_target(&chunk);
            }
            let _ = s.take_transmit();
            let _ = s.status();
        }

        /// However the client's and the target's streams are cut, and however their pieces
        /// interleave, the target gets the same bytes and the session ends the same.
        #[test]
        fn cutting_the_streams_changes_nothing(
            client_cuts in proptest::collection::vec(any::<usize>(), 0..8),
            target_cuts in proptest::collection::vec(any::<usize>(), 0..8),
            target_first in any::<bool>(),
        ) {
            let client = [startup(), online_scram_messages(), requests()].concat();
            let target = [auth(5, &[4, 3, 2, 1]), welcome()].concat();
            let mut whole = session(&["alice:pw"]);
            whole.handle_client(&client);
            whole.handle_target(&target);
            let expected = whole.take_transmit();
            let mut cut = session(&["alice:pw"]);
            let mut got = Vec::new();
            let (client, target) = (chunks(&client, &client_cuts), chunks(&target, &target_cuts));
            if target_first {
                // The target cannot answer before the startup message went out: the first
                // client piece that completes it comes first.
                let mut pieces = client.into_iter();
                while cut.startup().is_none() {
                    let Some(piece) = pieces.next() else { break };
                    cut.handle_client(&piece);
                }
                for piece in &target {
                    cut.handle_target(piece);
                    got.extend(cut.take_transmit());
                }
                pieces.for_each(|piece| cut.handle_client(&piece));
            } else {
                client.iter().for_each(|piece| cut.handle_client(piece));
                for piece in &target {
                    cut.handle_target(piece);
                }
            }
            got.extend(cut.take_transmit());
            prop_assert_eq!(got, expected);
            prop_assert_eq!(cut.status(), Status::LoggedIn { method: Method::Md5, joined: false });
        }
    }
}

#[test]
fn the_targets_backend_key_is_learnt_during_the_login() {
    let mut s = session(&[]);
    s.handle_client(&startup());
    assert_eq!(s.target_key(), None);
    s.handle_target(&welcome());
    assert!(matches!(s.status(), Status::LoggedIn { .. }));
    let key = CancelKey {
        pid: 42,
        secret: vec![1, 2, 3, 4],
    };
    assert_eq!(s.target_key(), Some(&key));
}

#[test]
fn scram_passwords_are_prepared_as_postgresql_prepares_them() {
    // (the --login password, what the server salted when the role's password was set)
    let cases = [
        // U+00AD soft hyphen: mapped to nothing; U+2168 ROMAN NUMERAL NINE: "IX" by NFKC.
        ("pen\u{00AD}cil\u{2168}", "pencilIX"),
        // A space other than ASCII's becomes one; a decomposed "ä" is composed.
        ("a\u{00A0}pa\u{0308}ss", "a p\u{00E4}ss"),
        // ASCII as given, even a control character (SASLprep would refuse it).
        ("tab\there", "tab\there"),
        // SASLprep refuses (a control character, a right-to-left string ending left-to-right,
        // a code point unassigned in Unicode 3.2, nothing left): the password as given.
        ("\u{00E9}\u{0007}", "\u{00E9}\u{0007}"),
        ("\u{0627}1", "\u{0627}1"),
        ("x\u{0221}", "x\u{0221}"),
        ("\u{00AD}", "\u{00AD}"),
    ];
    for (given, salted) in cases {
        let (s, _) = scram_login(given, salted);
        assert!(
            matches!(s.status(), Status::LoggedIn { .. }),
            "{given:?}: {:?}",
            s.status()
        );
    }
    // The password as given is refused where SASLprep changes it.
    let (s, _) = scram_login("pen\u{00AD}cil\u{2168}", "pen\u{00AD}cil\u{2168}");
    assert!(
        matches!(s.status(), Status::Failed(LoginError::Refused(_))),
        "{:?}",
        s.status()
    );
}
