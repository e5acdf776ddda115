//! Database protocols replayed whole.
#![forbid(unsafe_code)]

pub mod postgres;
