//! Market sources: one adapter per source behind `trait MarketSource`, the poll scheduler, and the
//! market runner that turns what sources report into publications.
//!
//! Adapters fetch and normalise; they never publish to clients. Everything they report goes through
//! [`MarketState`](crate::market::state::MarketState) and the bus.

pub mod farm500;
pub mod machines;
pub mod poller;
pub mod runner;
pub mod runpod;
pub mod simulated;
pub mod snapshots;
pub mod vast;
pub mod vast_machine;

use std::time::Duration;

use async_trait::async_trait;

use crate::market::Offer;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        /// From a 429's or 503's `Retry-After`.
        retry_after: Option<Duration>,
        body: String,
    },
    #[error("timed out")]
    Timeout,
    #[error("transport: {0}")]
    Transport(String),
    #[error("invalid response: {0}")]
    Invalid(String),
}

impl SourceError {
    /// Whether trying again soon may help (a 4xx other than 429 will not).
    pub fn retryable(&self) -> bool {
        match self {
            SourceError::Status { status, .. } => *status == 429 || *status >= 500,
            SourceError::Timeout | SourceError::Transport(_) | SourceError::Invalid(_) => true,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SourceError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What one fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// The source's complete current offers.
    Offers {
        offers: Vec<Offer>,
        /// When the source took this data, in milliseconds since the epoch: the source's own
        /// time where its answer gives one (500.farm's `timestamp`), else when the answer arrived.
        /// Payloads carry it as `source_ts`, so a client can tell how old what it shows is.
        source_ts_ms: i64,
    },
    /// Nothing changed since the last fetch (HTTP 304): costs nothing downstream.
    Unchanged,
}

#[async_trait]
pub trait MarketSource: Send + 'static {
    /// The source's name in payloads, health and metrics (`farm500`, `vast`, `runpod`, `simulated`).
    fn name(&self) -> &'static str;
    /// Fetch the source's current offers. `&mut self`: adapters keep validators (ETag) between polls.
    async fn fetch(&mut self) -> Result<Fetched, SourceError>;
    /// Forget the validators: the next fetch returns the whole data (this node starts afresh).
    fn forget_validators(&mut self) {}
}

pub use crate::upstream::http_client;

/// Turn a non-success response into a `SourceError` with its status, `Retry-After` and body start.
pub async fn status_error(response: reqwest::Response) -> SourceError {
    let status = response.status().as_u16();
    let retry_after = crate::upstream::retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    SourceError::Status {
        status,
        retry_after,
        body,
    }
}

pub fn transport_error(e: reqwest::Error) -> SourceError {
    if e.is_timeout() {
        SourceError::Timeout
    } else if e.is_decode() || e.is_body() {
        SourceError::Invalid(e.to_string())
    } else {
        SourceError::Transport(e.to_string())
    }
}

/// A Vast.ai `geolocation` as an offer holds it: the region as given and its country code, both
/// interned (remembered per thread: the same few hundred places come with every poll).
pub fn location(geolocation: &str) -> (crate::market::Text, Option<crate::market::Text>) {
    use crate::market::{Memo, Text, intern};
    thread_local! {
        static PLACES: std::cell::RefCell<Memo<(Text, Option<Text>)>> = Default::default();
    }
    PLACES.with_borrow_mut(|places| {
        places.get_or(geolocation, || {
            (intern(geolocation), country_of(geolocation).map(|c| intern(&c)))
        })
    })
}

/// The country code of a Vast.ai `geolocation` ("Ontario, CA" → "CA").
pub fn country_of(geolocation: &str) -> Option<String> {
    let code = geolocation.rsplit(", ").next()?.trim();
    (code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic())).then(|| code.to_ascii_uppercase())
}
