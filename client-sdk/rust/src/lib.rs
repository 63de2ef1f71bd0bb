//! `gpuscout-client`: a client of GPUScout Hub.
//!
//! - [`protocol`]: the wire types of the hub's client protocol (the JSON form of the Centrifugo
//!   client protocol). The hub itself uses these same types, so both ends share one definition.
//! - [`checksum`] and [`book`]: a market channel's items kept exact from its snapshot and deltas,
//!   every checksum verified (the canonical form of the hub's `docs/protocol.md`).
//! - [`backoff`]: exponential backoff with full jitter, the retry schedule of client and hub.
//! - [`client`] (feature `client`, on by default): a reconnecting WebSocket client with
//!   subscriptions recovered after a reconnect, RPC, token refresh and market books.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use gpuscout_client::{Client, Options, TokenSource};
//! let client = Client::connect(Options::new(
//!     "ws://127.0.0.1:8080/connection/websocket",
//!     TokenSource::Static("<jwt>".into()),
//! ));
//! let mut book = client.market_book("market:summary");
//! while let Some(event) = book.next().await {
//!     if let Some(rtx) = book.book().get("rtx-4090") {
//!         println!("{event:?}: RTX 4090 median {}", rtx["price_available"]["median"]);
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod backoff;
pub mod book;
pub mod checksum;
pub mod protocol;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "client")]
pub use client::http_origin;
#[cfg(any(feature = "tls", feature = "api-key"))]
pub use client::install_crypto_provider;
#[cfg(feature = "client")]
pub use client::{BookEvent, Client, Error, Event, MarketBook, Options, State, SubEvent, Subscription, TokenSource};
