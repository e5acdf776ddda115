//! Cancel requests: the online server's backend keys mapped to the target's.
//!
//! A client cancels a running query from a *new* connection: its only message, a CancelRequest,
//! names the backend by the process id and secret key the server gave the session in
//! BackendKeyData. The target's backend of the same session has another pid and key, so a
//! CancelRequest replayed as captured cancels nothing there (or, should the pair exist, another
//! session's query). Each session learns both keys: the online server's from its captured login
//! answers ([`scan_online`]), the target's from its own login; [`Cancels`] (shared by the
//! sessions of one replicator, bounded) maps one to the other, and a cancel session's request is
//! sent with the target's key, or not at all.

use std::collections::{HashMap, VecDeque};

use super::message::{self, CancelKey};

/// Backend keys mapped at most; then the oldest go.
const MAX_KEYS: usize = 1 << 16;

/// What the cancel requests came to, for the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CancelCounts {
    /// Cancel requests sent with the target's key.
    pub mapped: u64,
    /// Cancel requests for a backend whose target key is not known: not sent, session ended.
    pub not_found: u64,
}

/// Online backend keys and the target's for the same session, per replicated copy (each copy
/// of a connection has its own backend at the target).
#[derive(Debug, Default)]
pub(super) struct Cancels {
    keys: HashMap<(u16, CancelKey), CancelKey>,
    /// Insertion order, for dropping the oldest.
    order: VecDeque<(u16, CancelKey)>,
    pub(super) counts: CancelCounts,
}

impl Cancels {
    /// Session copy `copy` has backend `online` online and `target` at the target.
    pub(super) fn learn(&mut self, copy: u16, online: CancelKey, target: CancelKey) {
        let key = (copy, online);
        if self.keys.insert(key.clone(), target).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > MAX_KEYS {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// The target's key for a cancel request of copy `copy` naming online backend `online`,
    /// counted either way.
    pub(super) fn target_key(&mut self, copy: u16, online: &CancelKey) -> Option<CancelKey> {
        let found = self.keys.get(&(copy, online.clone())).cloned();
        match found {
            Some(_) => self.counts.mapped += 1,
            None => self.counts.not_found += 1,
        }
        found
    }
}

/// What one of the online server's segments tells of its session's login.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct OnlineLogin {
    /// The backend's key, if the segment holds BackendKeyData.
    pub(super) key: Option<CancelKey>,
    /// The login is over (ReadyForQuery or an ErrorResponse): later segments answer requests.
    pub(super) over: bool,
}

/// Reads the whole messages at the start of an online server's segment. During a login the
/// server sends whole messages (it flushes at each step), so a segment starts at a message's
/// start; reading stops at the first one cut short or malformed.
pub(super) fn scan_online(mut bytes: &[u8]) -> OnlineLogin {
    let mut seen = OnlineLogin::default();
    while let Ok(Some(message::Framed { ty, body, len })) = message::split_message(bytes) {
        match ty {
            b'K' => seen.key = CancelKey::parse(body).ok(),
            b'Z' | b'E' => seen.over = true,
            _ => {}
        }
        bytes = &bytes[len..];
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::message::frontend;

    fn key(pid: u32, secret: u8) -> CancelKey {
        CancelKey {
            pid,
            secret: vec![secret; 4],
        }
    }

    #[test]
    fn keys_map_per_copy_and_count_what_was_not_found() {
        let mut c = Cancels::default();
        c.learn(0, key(1, 1), key(100, 7));
        c.learn(1, key(1, 1), key(200, 8));
        assert_eq!(c.target_key(0, &key(1, 1)), Some(key(100, 7)));
        assert_eq!(c.target_key(1, &key(1, 1)), Some(key(200, 8)));
        assert_eq!(c.target_key(0, &key(1, 2)), None, "another secret");
        assert_eq!(
            c.counts,
            CancelCounts {
                mapped: 2,
                not_found: 1
            }
        );
    }

    #[test]
    fn the_oldest_keys_go_first_when_full() {
        let mut c = Cancels::default();
        for pid in 0..=MAX_KEYS as u32 {
            c.learn(0, key(pid, 1), key(pid + 1, 2));
        }
        // A key learnt again does not count twice.
        c.learn(0, key(MAX_KEYS as u32, 1), key(9, 9));
        assert_eq!(c.keys.len(), MAX_KEYS);
        assert_eq!(c.target_key(0, &key(0, 1)), None);
        assert_eq!(c.target_key(0, &key(1, 1)), Some(key(2, 2)));
        assert_eq!(c.target_key(0, &key(MAX_KEYS as u32, 1)), Some(key(9, 9)));
    }

    #[test]
    fn the_online_login_answers_give_the_key_and_the_end_of_the_login() {
        let welcome = [
            frontend(b'R', &[0, 0, 0, 0]),
            frontend(b'S', b"server_version\x0015.8\0"),
            frontend(b'K', &[0, 0, 0, 9, 1, 1, 1, 1]),
            frontend(b'Z', b"I"),
        ]
        .concat();
        assert_eq!(
            scan_online(&welcome),
            OnlineLogin {
                key: Some(key(9, 1)),
                over: true
            }
        );
        // The answer to an SSLRequest, then a SCRAM step: nothing yet.
        assert_eq!(scan_online(b"N"), OnlineLogin::default());
        let continue_ = frontend(b'R', b"\0\0\0\x0br=abc,s=c2FsdA==,i=4096");
        assert_eq!(scan_online(&continue_), OnlineLogin::default());
        // A segment cut inside its key data.
        assert_eq!(scan_online(&welcome[..welcome.len() - 8]).key, None);
        let refused = frontend(b'E', b"SFATAL\0C28P01\0Mno\0\0");
        assert!(scan_online(&refused).over);
    }
}
