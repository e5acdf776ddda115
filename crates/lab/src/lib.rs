//! Test network and traffic for tcpcopy: the four-host namespace lab, an embedded HTTP server (with
//! per-path [`plan`]s of differing answers), an HTTP load generator, real nginx, redis and memcached
//! wrappers, wrk, and the replication [`scenario`] that runs the `tcpcopy` and `intercept` binaries
//! in that lab (with a baseline host for comparisons).
//!
//! Used by `tcpcopy demo` (which must work on a bare Debian host: `iproute2` only, embedded servers
//! only), by the load harness (`tcpcopy-bench`) and by the end-to-end tests (which may also use
//! nginx). Not for production hosts: `tcpcopy` links it (and through it `session`'s `testing`
//! feature) into the `tcpcopy` and `intercept` binaries only for its default `demo` feature, so
//! `cargo build --release -p tcpcopy --no-default-features` builds them without it. Everything
//! here runs in namespaces the caller created through [`netlab::Lab`] or on loopback; nothing
//! touches the root namespace's network configuration. This crate owns no `unsafe`: namespace
//! switching is `netio::netns::enter`.

#![forbid(unsafe_code)]

mod acceptor;
pub mod counter;
pub mod flood;
pub mod http;
pub mod httpd;
pub mod loadgen;
pub mod mariadb;
pub mod memcache;
pub mod mirror;
pub mod nat;
pub mod netlab;
pub mod nginx;
pub mod plan;
pub mod postgres;
pub mod redis;
pub mod scenario;
pub mod scratch;
pub mod stream;
pub mod unprivileged;
pub mod wrk;

pub use httpd::{HttpServer, RequestLog};
pub use loadgen::{LoadReport, LoadSpec};
pub use netlab::{run_in_ns, Child, Lab, LabSpec};
pub use nginx::Nginx;
pub use plan::{AnswerPlan, Twist};
pub use scratch::ScratchDir;
