//! Wall-clock time as Unix epoch seconds and milliseconds: what tokens, offers, alerts and the
//! database record. Durations and deadlines use `tokio::time::Instant` instead.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
