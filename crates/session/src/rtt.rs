//! Round-trip time towards the target, and the retransmission timeout derived from it.
//!
//! Owns the smoothed RTT, its variation and the RTO of one session (RFC 6298), with the
//! exponential backoff after a timeout. It takes samples; it does not decide which round trips
//! may be sampled (Karn's rule lives with the sender, which knows what it retransmitted) and it
//! reads no clock.

use std::time::Duration;

/// The RTO never backs off past this.
const MAX_RTO: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub(crate) struct RttEstimator {
    rto: Duration,
    srtt: Option<Duration>,
    rttvar: Duration,
}

impl RttEstimator {
    /// No sample yet: the RTO is `initial_rto`.
    #[inline]
    pub(crate) fn new(initial_rto: Duration) -> RttEstimator {
        RttEstimator {
            rto: initial_rto,
            srtt: None,
            rttvar: Duration::ZERO,
        }
    }

    /// The current retransmission timeout.
    #[inline]
    pub(crate) fn rto(&self) -> Duration {
        self.rto
    }

    /// A round trip measured on a segment sent once; the RTO follows, never below `min_rto`.
    #[inline]
    pub(crate) fn sample(&mut self, rtt: Duration, min_rto: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        self.rto = (self.srtt.unwrap_or(rtt) + self.rttvar * 4).max(min_rto);
    }

    /// A retransmission timeout fired: the next one waits twice as long (up to [`MAX_RTO`]).
    #[inline]
    pub(crate) fn back_off(&mut self) {
        self.rto = (self.rto * 2).min(MAX_RTO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sample_sets_the_rto_and_backoff_is_capped() {
        let ms = Duration::from_millis;
        let mut r = RttEstimator::new(ms(1000));
        assert_eq!(r.rto(), ms(1000));
        r.sample(ms(100), ms(200));
        // srtt 100, rttvar 50: 100 + 4 * 50.
        assert_eq!(r.rto(), ms(300));
        r.sample(ms(100), ms(200));
        // rttvar 37.5: 100 + 150 = 250.
        assert_eq!(r.rto(), ms(250));
        r.sample(ms(1), ms(200));
        assert!(r.rto() >= ms(200), "never below min_rto");
        for _ in 0..20 {
            r.back_off();
        }
        assert_eq!(r.rto(), MAX_RTO);
    }
}
