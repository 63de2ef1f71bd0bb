//! Exponential backoff with full jitter, the one retry schedule of the client and the hub.
//!
//! Attempt `n` (0-based) waits a uniformly random time in `[0, min(max, initial × 2ⁿ)]`: many
//! parties that failed together spread over the whole window instead of returning together (the
//! "full jitter" of the AWS architecture note on backoff, and what the JS SDK's `backoff` does).

use std::time::Duration;

/// A retry schedule: the first window and the largest one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max }
    }

    /// From millisecond settings, as the configuration holds them.
    pub const fn from_millis(initial_ms: u64, max_ms: u64) -> Self {
        Self::new(Duration::from_millis(initial_ms), Duration::from_millis(max_ms))
    }

    /// The window of attempt `attempt` (0-based): `initial × 2^attempt`, at most `max`.
    pub fn window(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max)
    }

    /// The wait before retry `attempt` for a draw `unit` in `[0, 1)`: `unit × window(attempt)`.
    pub fn wait_for(&self, attempt: u32, unit: f64) -> Duration {
        self.window(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before retry `attempt`, drawn at random over its whole window.
    pub fn wait(&self, attempt: u32) -> Duration {
        self.wait_for(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff::from_millis(500, 30_000);

    #[test]
    fn the_window_doubles_up_to_the_cap() {
        let windows: Vec<u64> = (0..8).map(|a| B.window(a).as_millis() as u64).collect();
        assert_eq!(windows, [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]);
        assert_eq!(B.window(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn the_wait_spans_the_whole_window_from_zero() {
        assert_eq!(B.wait_for(3, 0.0), Duration::ZERO);
        assert_eq!(B.wait_for(3, 0.25), Duration::from_millis(1000));
        assert_eq!(B.wait_for(3, 1.0), Duration::from_millis(4000));
    }

    #[test]
    fn random_waits_fall_below_half_the_window_too() {
        let waits: Vec<Duration> = (0..400).map(|_| B.wait(2)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(2000)));
        // Full jitter, not [window/2, window]: about half the draws land in the lower half.
        let low = waits.iter().filter(|w| **w < Duration::from_millis(1000)).count();
        assert!((100..=300).contains(&low), "{low} of 400 in the lower half");
    }
}
