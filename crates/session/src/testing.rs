//! Test support, shared by the tests, benches, examples and the lab harness: a seeded PRNG, a
//! packet builder and a simulator that runs thousands of sessions through a faulty network to a
//! simulated target on simulated time.
//!
//! Compiled only for this crate's tests or with the `testing` feature. **Not for production:**
//! nothing here is hardened, the PRNG is not for anything secret, and the simulator panics on
//! whatever it cannot check. It uses only the crate's public API (plus one internal consistency
//! check of the replicator), so what it exercises is what the drivers get.
//!
//! Everything here is deterministic: the same seed gives the same random stream, the same
//! packets and the same simulation, run after run (no hash table iteration order, no clock: time
//! is counted from an `Instant` taken once and only differences are used).

mod packet;
mod rng;
mod sim;

pub use packet::{segment, PacketBuilder};
pub use rng::Rng;
pub use sim::{simulate, Faults, Outcome};
