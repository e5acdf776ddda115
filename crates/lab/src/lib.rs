//! Test network and traffic for tcpcopy: the four-host namespace lab, an embedded HTTP server, an HTTP
//! load generator and a real nginx wrapper.
//!
//! Used by `tcpcopy demo` (which must work on a bare Debian host: `iproute2` only, embedded servers
//! only) and by the end-to-end tests (which may also use nginx). Everything here runs in namespaces the
//! caller created through [`netlab::Lab`] or on loopback; nothing touches the root namespace's network
//! configuration. This crate owns no `unsafe`: namespace switching is `netio::netns::enter`.

#![forbid(unsafe_code)]

mod acceptor;
pub mod http;
pub mod httpd;
pub mod loadgen;
pub mod memcache;
pub mod netlab;
pub mod nginx;
pub mod redis;
pub mod rng;
pub mod scratch;
pub mod stream;
pub mod wrk;

pub use httpd::{HttpServer, RequestLog};
pub use loadgen::{LoadReport, LoadSpec};
pub use netlab::{run_in_ns, Child, Lab, LabSpec};
pub use nginx::Nginx;
pub use scratch::ScratchDir;
