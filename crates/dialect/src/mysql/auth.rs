//! Password scrambles of MySQL's authentication plugins: what a client answers a salt with.

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// The plugins tcpcopy answers.
pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";

/// The scramble `plugin` expects for `password` and `salt`; `None` for a plugin tcpcopy does
/// not know. An empty password is answered with no bytes, as clients do.
pub fn scramble(plugin: &str, password: &str, salt: &[u8]) -> Option<Vec<u8>> {
    if password.is_empty() && matches!(plugin, NATIVE | CACHING_SHA2) {
        return Some(Vec::new());
    }
    match plugin {
        NATIVE => Some(native(password.as_bytes(), salt)),
        CACHING_SHA2 => Some(caching_sha2(password.as_bytes(), salt)),
        _ => None,
    }
}

/// mysql_native_password: SHA1(password) XOR SHA1(salt, SHA1(SHA1(password))).
fn native(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(salt);
    h.update(stage2);
    let mask = h.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

/// caching_sha2_password (its fast path): SHA256(password) XOR
/// SHA256(SHA256(SHA256(password)), salt).
fn caching_sha2(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(salt);
    let mask = h.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// The server's check, written from the definition: SHA1(scramble XOR SHA1(salt, stored))
    /// must equal the stored SHA1(SHA1(password)).
    #[test]
    fn a_native_scramble_passes_the_servers_check() {
        let salt = b"abcdefghijklmnopqrst";
        let s = scramble(NATIVE, "secret", salt).unwrap();
        let stored = Sha1::digest(Sha1::digest(b"secret"));
        let mut h = Sha1::new();
        h.update(salt);
        h.update(stored);
        let mask = h.finalize();
        let stage1: Vec<u8> = s.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(hex(&Sha1::digest(&stage1)), hex(&stored));
        // A different salt, a different scramble.
        assert_ne!(
            s,
            scramble(NATIVE, "secret", b"tsrqponmlkjihgfedcba").unwrap()
        );
    }

    #[test]
    fn a_caching_sha2_scramble_passes_the_servers_check() {
        let salt = b"0123456789abcdefghij";
        let s = scramble(CACHING_SHA2, "pw", salt).unwrap();
        assert_eq!(s.len(), 32);
        let stored = Sha256::digest(Sha256::digest(b"pw"));
        let mut h = Sha256::new();
        h.update(stored);
        h.update(salt);
        let mask = h.finalize();
        let stage1: Vec<u8> = s.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(hex(&Sha256::digest(&stage1)), hex(&stored));
    }

    #[test]
    fn an_empty_password_is_no_bytes_and_an_unknown_plugin_none() {
        assert_eq!(scramble(NATIVE, "", b"x"), Some(Vec::new()));
        assert_eq!(scramble("client_ed25519", "pw", b"x"), None);
    }
}
