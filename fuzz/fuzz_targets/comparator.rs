//! See `tcpcopy_fuzz::comparator` (fuzz/src/comparator.rs), which the regression tests of the crate it
//! exercises replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpcopy_fuzz::comparator::run(data));
