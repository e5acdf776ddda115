//! See `tcpcopy_fuzz::dialect` (fuzz/src/dialect/), which the regression tests of the crates it
//! exercises can replay too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpcopy_fuzz::dialect::run(data));
