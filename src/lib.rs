//! GPUScout Hub: the real-time core of GPUScout.
//!
//! One path, one direction: sources → market book → bus → hub → sockets.
//!
//! - [`config`]: layered settings, validated at start.
//! - [`telemetry`]: logging and Prometheus metrics.
//! - [`protocol`]: the JSON Centrifugo client protocol (commands, replies, pushes, codes), defined
//!   once in the `gpuscout-client` crate and shared with it.
//! - [`auth`]: JWTs, tiers and their channel policy, API keys.
//! - [`bus`]: publish, subscribe, history and recovery, in-process or on Redis.
//! - [`hub`]: connections, subscriptions, fan-out, per-connection queues.
//! - [`ingest`]: market sources and the poll scheduler.
//! - [`market`]: offers, the book, diffs, aggregates, checksums, channel payloads.
//! - [`alerts`]: alert rules, their evaluation on market changes, delivery.
//! - [`advisor`]: the AI advisor: language-model providers, streamed answers, quotas.
//! - [`store`]: the database.
//! - [`http`]: the router: `/ws`, REST, server API, health, metrics.
//! - [`startup`]: wiring and graceful shutdown.

pub mod advisor;
pub mod alerts;
pub mod auth;
pub mod bus;
pub mod channels;
pub mod clock;
pub mod config;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod market;
pub use gpuscout_client::protocol;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tier;
