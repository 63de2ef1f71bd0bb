//! The checksum of a channel's state: defined once, in the client crate, where clients verify it;
//! the hub computes the same. See `gpuscout_client::checksum` and `docs/protocol.md`.

pub use gpuscout_client::checksum::{apply_delta, canonical, checksum_of, item_crc};

/// Round to 4 decimals: every fractional number the hub publishes goes through this.
pub fn round4(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}
