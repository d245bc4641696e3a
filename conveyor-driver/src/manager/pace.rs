//! The adaptive prefetch: how many events an instance takes ahead of its free slots.
//!
//! An event taken ahead waits for a slot in this instance, even while another instance has a
//! free one. That is worth it only while the wait is short: with reconciles of 1 ms, 64
//! events ahead at concurrency 64 wait about 1 ms each and spare every event a pull round
//! trip; with builds of minutes, one event ahead can wait minutes. So the instance takes
//! `concurrency × prefetch_wait / slowest` events ahead, where `slowest` is how long a slot
//! was held lately (reconcile, log flush, result publish). *Slowest*, not average: a mix of
//! 1 ms and 2 s reconciles averages 200 ms, but an event ahead can land behind four 2 s
//! ones. It is a maximum that decays by half every [`HALF_LIFE`] slot releases, so one long
//! reconcile stops prefetching at once and a run of short ones brings it back soon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Config, Prefetch};

/// Slot releases after which a long slot time counts half.
const HALF_LIFE: f64 = 64.0;

/// With [`Prefetch::Auto`], at most this many events ahead, or `concurrency` if that is more:
/// enough to keep a pull request in the air for short reconciles at any concurrency.
const AUTO_CAP: usize = 64;

/// How long slots were held lately, and what that allows.
#[derive(Debug)]
pub(super) struct Pace {
    /// Microseconds, as `f64` bits; 0 before the first release.
    slowest: AtomicU64,
    concurrency: usize,
    prefetch: Prefetch,
    /// `prefetch_wait` in microseconds.
    wait: f64,
}

impl Pace {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            slowest: AtomicU64::new(0f64.to_bits()),
            concurrency: config.concurrency,
            prefetch: config.prefetch,
            wait: config.prefetch_wait.as_secs_f64() * 1e6,
        }
    }

    /// The most events ever taken ahead: the pull slots beyond `concurrency`.
    pub(super) fn cap(&self) -> usize {
        match self.prefetch {
            Prefetch::Auto => self.concurrency.max(AUTO_CAP),
            Prefetch::Fixed(events) => events,
        }
    }

    /// How many events to take ahead now.
    pub(super) fn ahead(&self) -> usize {
        let Prefetch::Auto = self.prefetch else {
            return self.cap();
        };
        let slowest = f64::from_bits(self.slowest.load(Ordering::Relaxed));
        if slowest <= 0.0 {
            return 0; // nothing known yet: take only what starts at once
        }
        let ahead = self.concurrency as f64 * self.wait / slowest;
        // Saturating: a NaN or a huge ratio becomes the cap.
        (ahead as usize).min(self.cap())
    }

    /// Counts a slot held from `since` until now.
    pub(super) fn released(&self, since: Instant) {
        self.record(since.elapsed());
    }

    fn record(&self, held: Duration) {
        let held = held.as_secs_f64() * 1e6;
        let decay = 0.5f64.powf(1.0 / HALF_LIFE);
        let _ = self
            .slowest
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                let decayed = f64::from_bits(bits) * decay;
                Some(decayed.max(held).to_bits())
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(prefetch: Prefetch, concurrency: usize) -> Pace {
        Pace::new(
            &Config::default()
                .concurrency(concurrency)
                .prefetch(prefetch),
        )
    }

    #[test]
    fn takes_nothing_ahead_before_anything_is_known() {
        assert_eq!(pace(Prefetch::Auto, 4).ahead(), 0);
    }

    #[test]
    fn short_reconciles_pipeline_up_to_the_cap() {
        let pace = pace(Prefetch::Auto, 4);
        pace.record(Duration::from_millis(2));
        // 4 slots × 20 ms / 2 ms
        assert_eq!(pace.ahead(), 40);
        pace.record(Duration::from_micros(10));
        assert_eq!(pace.ahead(), 40, "the slowest counts, not the last");
        let fast = self::pace(Prefetch::Auto, 128);
        fast.record(Duration::from_micros(100));
        assert_eq!(fast.ahead(), 128, "capped at concurrency");
    }

    #[test]
    fn one_long_reconcile_stops_prefetching_until_short_ones_bring_it_back() {
        let pace = pace(Prefetch::Auto, 4);
        pace.record(Duration::from_millis(1));
        pace.record(Duration::from_secs(2));
        assert_eq!(pace.ahead(), 0);
        for _ in 0..64 {
            pace.record(Duration::from_millis(1));
        }
        assert_eq!(pace.ahead(), 0, "half of 2 s is still long");
        for _ in 0..(64 * 10) {
            pace.record(Duration::from_millis(1));
        }
        assert_eq!(
            pace.ahead(),
            64,
            "2 s / 2048 is under 1 ms: 80 ahead, capped at 64"
        );
    }

    #[test]
    fn a_fixed_prefetch_is_kept_whatever_the_times() {
        let pace = pace(Prefetch::Fixed(7), 4);
        assert_eq!(pace.ahead(), 7);
        pace.record(Duration::from_secs(60));
        assert_eq!((pace.ahead(), pace.cap()), (7, 7));
    }
}
