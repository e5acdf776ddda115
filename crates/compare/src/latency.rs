//! Latency distributions that merge exactly: log-scale buckets.

/// A latency histogram in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {}
