//! The password sent RSA-encrypted, as a client does without TLS: caching_sha2_password's full
//! authentication (the target's cache lacks the account, as after every restart) and
//! sha256_password. The target model decrypts what it gets with its private key (a 2048-bit
//! test key made with `openssl genpkey`, as MySQL's own) and checks it is the password and a
//! NUL, XOR its salt.

use rsa::pkcs8::DecodePrivateKey;
use rsa::PrivateKey;

use super::*;

/// The target's key pair: the private key (test data only) and the public key it sends.
const PRIVATE_KEY: &str = include_str!("testdata/target_key.pem");
pub(super) const PUBLIC_KEY: &str = include_str!("testdata/target_key.pub.pem");

/// Where a full authentication stands at the target: for `account`, waiting for the packet
/// with sequence id `next`.
pub(super) struct Full {
    account: Account,
    next: u8,
    stage: Stage,
}

enum Stage {
    /// caching_sha2_password asked for full authentication: the client asks for the key.
    KeyRequest,
    /// The key went: the encrypted password comes.
    Password,
}

const ERR: &[u8] = b"\xff\x15\x04#28000Access denied";
const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

impl Target {
    /// The server's step after a login's first answer `auth`, when it is a full
    /// authentication's: caching_sha2_password without the account cached asks for it (it
    /// cannot check the scramble), sha256_password sends its key when asked. `false`: the
    /// scramble is checked as usual.
    pub(super) fn full_auth_begins(
        &mut self,
        to: SocketAddr,
        seq: u8,
        account: &Account,
        plugin: &str,
        auth: &[u8],
    ) -> bool {
        let stage = match plugin {
            SHA2 if !account.cached => Stage::KeyRequest,
            SHA256 if auth == [1] => Stage::Password,
            _ => return false,
        };
        let full = Full {
            account: account.clone(),
            next: seq + 2,
            stage,
        };
        match full.stage {
            Stage::KeyRequest => self.packet(to, seq + 1, &[1, 4]),
            Stage::Password => self.send_key(to, seq + 1),
        }
        self.full = Some(full);
        true
    }

    /// AuthMoreData with the public key's PEM.
    fn send_key(&mut self, to: SocketAddr, seq: u8) {
        let mut p = vec![1];
        p.extend_from_slice(&self.key_pem.clone());
        self.packet(to, seq, &p);
    }

    pub(super) fn full_auth(&mut self, to: SocketAddr, seq: u8, full: Full, payload: &[u8]) {
        if seq != full.next {
            return self.packet(to, seq + 1, b"\xff\x53\x04#08S01Got packets out of order");
        }
        match full.stage {
            Stage::KeyRequest if payload == [2] => {
                self.key_requests += 1;
                self.full = Some(Full {
                    next: seq + 2,
                    stage: Stage::Password,
                    ..full
                });
                self.send_key(to, seq + 1);
            }
            Stage::KeyRequest => self.packet(to, seq + 1, ERR),
            Stage::Password => {
                let key = PrivateKey::from_pkcs8_pem(PRIVATE_KEY).unwrap();
                let Ok(plain) = key.oaep_decrypt::<Sha1>(payload) else {
                    return self.packet(to, seq + 1, ERR);
                };
                let clear = xor_salt(&plain, &self.salt);
                self.decrypted.push(clear.clone());
                let mut expected = full.account.password.as_bytes().to_vec();
                expected.push(0);
                if clear != expected {
                    return self.packet(to, seq + 1, ERR);
                }
                self.logged_in = true;
                self.packet(to, seq + 1, OK);
            }
        }
    }
}

fn xor_salt(data: &[u8], salt: &[u8]) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, b)| b ^ salt[i % salt.len()])
        .collect()
}

fn uncached(plugin: &'static str) -> Account {
    Account {
        cached: false,
        ..account(plugin)
    }
}

#[test]
fn caching_sha2_full_authentication_sends_the_password_encrypted_with_the_targets_key() {
    let mut lab = Lab::new(
        Target::new(SHA2, Some(vec![uncached(SHA2)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", SHA2, None));
    assert_eq!(lab.target.key_requests, 1);
    // What the target decrypted, its salt taken off: the password and its NUL.
    assert_eq!(lab.target.decrypted, [b"s3cret\0".to_vec()]);
    assert!(lab.target.logged_in);
    assert_eq!(
        commands(&lab.target),
        ["insert into t values (1)", "insert into t values (2)"]
    );
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
    let s = lab.rep.stats();
    assert_eq!(s.logins.logged_in, 1);
    assert_eq!((s.requests_online, s.requests_target), (3, 2));
}

#[test]
fn caching_sha2_full_authentication_after_an_auth_switch_uses_the_switchs_salt() {
    // A MySQL 8 target greeting with the native plugin; the account uses caching_sha2_password.
    let mut lab = Lab::new(
        Target::new(NATIVE, Some(vec![uncached(SHA2)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    assert_eq!(lab.target.salt, b"SWITCHSALT9876543210");
    assert_eq!(lab.target.key_requests, 1);
    assert_eq!(lab.target.decrypted, [b"s3cret\0".to_vec()]);
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn caching_sha2_full_authentication_without_a_password_known_is_unsupported() {
    let mut lab = Lab::new(Target::new(SHA2, Some(vec![uncached(SHA2)])), &[]);
    fresh_session(&mut lab, CLIENT, &hello("app", SHA2, None));
    assert_eq!(lab.target.key_requests, 0, "no key asked for");
    assert!(lab.target.commands.is_empty());
    assert_eq!(lab.logins(), [Outcome::Unsupported]);
    let s = lab.rep.stats();
    assert_eq!((s.logins.unsupported, s.sessions_active), (1, 0));
    assert_eq!(lab.target.rcv_nxt, None, "reset at the target");
}

#[test]
fn a_wrong_password_sent_encrypted_is_refused_by_the_target() {
    let mut lab = Lab::new(
        Target::new(SHA2, Some(vec![uncached(SHA2)])),
        &["app:not-it"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", SHA2, None));
    assert_eq!(lab.target.decrypted, [b"not-it\0".to_vec()]);
    assert!(!lab.target.logged_in);
    assert!(lab.target.commands.is_empty());
    assert_eq!(lab.logins(), [Outcome::Refused]);
    let s = lab.rep.stats();
    assert_eq!((s.logins.refused, s.sessions_active), (1, 0));
}

/// The key packet holds no key: the target did not follow the protocol (a key a client cannot
/// parse is the server's fault, not a step tcpcopy lacks), so malformed, not unsupported.
#[test]
fn a_public_key_that_does_not_parse_ends_the_session_as_malformed() {
    let mut target = Target::new(SHA2, Some(vec![uncached(SHA2)]));
    target.key_pem =
        b"-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n".to_vec();
    let mut lab = Lab::new(target, &["app:s3cret"]);
    fresh_session(&mut lab, CLIENT, &hello("app", SHA2, None));
    assert!(lab.target.decrypted.is_empty());
    assert!(lab.target.commands.is_empty());
    assert_eq!(lab.logins(), [Outcome::Malformed]);
    let s = lab.rep.stats();
    assert_eq!((s.logins.malformed, s.sessions_active), (1, 0));
}

/// A key packet longer than the answer head the intercept forwards (a 4096-bit key's PEM is
/// about 800 bytes) never comes whole: the session ends at once, counted, rather than waiting.
#[test]
fn a_public_key_longer_than_the_answer_head_is_unsupported_not_waited_for() {
    let mut target = Target::new(SHA2, Some(vec![uncached(SHA2)]));
    target.key_pem = vec![b'A'; 800];
    let mut lab = Lab::new(target, &["app:s3cret"]);
    fresh_session(&mut lab, CLIENT, &hello("app", SHA2, None));
    assert_eq!(lab.target.key_requests, 1);
    assert_eq!(lab.logins(), [Outcome::Unsupported]);
    assert_eq!(lab.rep.stats().sessions_active, 0);
}

#[test]
fn sha256_password_as_the_targets_default_plugin_logs_in() {
    let mut lab = Lab::new(
        Target::new(SHA256, Some(vec![account(SHA256)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", SHA256, None));
    // The handshake response asked for the key (its auth data: 1).
    let ClientHello::Response(h) = HandshakeResponse::parse(&lab.target.hellos[0]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (h.auth.as_slice(), h.plugin.as_deref()),
        (&[1u8][..], Some(SHA256))
    );
    assert_eq!(lab.target.decrypted, [b"s3cret\0".to_vec()]);
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn sha256_password_after_an_auth_switch_uses_the_switchs_salt() {
    // The target greets with the native plugin; the account uses sha256_password.
    let mut lab = Lab::new(
        Target::new(NATIVE, Some(vec![account(SHA256)])),
        &["app:s3cret"],
    );
    fresh_session(&mut lab, CLIENT, &hello("app", NATIVE, None));
    assert_eq!(lab.target.salt, b"SWITCHSALT9876543210");
    // Decrypted and XORed with the switch's salt: the password (any other salt: garbage).
    assert_eq!(lab.target.decrypted, [b"s3cret\0".to_vec()]);
    assert!(lab.target.logged_in);
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}

#[test]
fn sha256_password_with_an_empty_password_sends_a_nul_in_the_clear() {
    let mut empty = account(SHA256);
    empty.password = "";
    let mut lab = Lab::new(Target::new(SHA256, Some(vec![empty])), &["app:"]);
    fresh_session(&mut lab, CLIENT, &hello("app", SHA256, None));
    assert!(lab.target.decrypted.is_empty());
    assert_eq!(commands(&lab.target).len(), 2);
    assert_eq!(lab.logins(), [Outcome::LoggedIn]);
}
