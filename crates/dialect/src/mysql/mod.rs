//! MySQL and MariaDB (in progress): the client's login answered for the target's greeting.

use session::dialect::{Conversation, Dialect, Edit, SessionInfo};

use crate::Credentials;

/// The MySQL hook: one per replicator.
#[derive(Debug)]
pub struct Mysql {
    #[allow(dead_code)]
    credentials: Credentials,
}

impl Mysql {
    pub fn new(credentials: Credentials) -> Mysql {
        Mysql { credentials }
    }
}

impl Dialect for Mysql {
    fn open(&mut self, _: &SessionInfo) -> Option<Box<dyn Conversation>> {
        Some(Box::new(Session))
    }

    fn head_bytes(&self) -> u16 {
        512
    }
}

#[derive(Debug)]
struct Session;

impl Conversation for Session {
    fn client(&mut self, _: &mut Edit<'_>, _: u64) {}
    fn target(&mut self, _: &mut Edit<'_>, _: u64, _: &[u8]) {}
}
