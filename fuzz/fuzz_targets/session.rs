//! See `tcpcopy_fuzz::session` (fuzz/src/session.rs), which the regression tests of the crate it
//! exercises replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpcopy_fuzz::session::run(data));
