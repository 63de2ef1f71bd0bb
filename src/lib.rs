//! GPUScout Hub: the real-time core of GPUScout.
//!
//! One path, one direction: sources → market book → bus → hub → sockets.
//! `docs/architecture.md` draws it, with the task tree and where to add things.
//!
//! The modules, from the top (wiring) to the bottom (leaves). **A module imports only modules
//! below it in this list**; a lower module reaches a higher one only through a trait it defines
//! and the higher one implements (the hub's `SnapshotProvider` and `RpcHandler`, the bus's
//! `PublicationHandler`), connected in `startup`. `scripts/check-deps.py` holds the code to this
//! order and finds import cycles between files; CI runs it.
//!
//! - [`startup`]: builds every part whole from its parts, starts the tasks, serves, shuts down.
//! - [`http`]: the router: `/ws`, REST, server API, health, metrics, static files.
//! - [`ingest`]: market sources, the poll scheduler, the market runner, subscribe snapshots.
//! - [`advisor`]: the AI advisor: language-model providers, streamed answers, quotas.
//! - [`hub`]: connections, subscriptions, fan-out, per-connection queues, RPC dispatch.
//! - [`alerts`]: alert rules, their evaluation on market changes, delivery.
//! - [`portfolio`]: a host's own machines: linked accounts polled, placed in the market, priced.
//! - [`auth`]: connection JWTs.
//! - [`bus`]: publish, subscribe, history and recovery, in-process or on Redis; leadership, the
//!   state nodes share about users, control messages between nodes, shared snapshots.
//! - [`market`]: offers, the book, diffs, aggregates, checksums, channel payloads; no I/O.
//! - [`store`]: the database (rows in, rows out; no business rules).
//! - [`telemetry`]: logging and Prometheus metrics.
//! - [`config`]: layered settings, validated at start.
//! - [`tier`]: subscription tiers and their channel policy.
//! - [`channels`]: channel names, built and parsed.
//! - [`tasks`]: the task tree: supervised critical tasks.
//! - [`upstream`]: the HTTP client for upstream services, `Retry-After`.
//! - [`secrets`]: sealing what users entrust to the hub (AES-256-GCM, key rotation).
//! - [`clock`]: wall-clock time.
//! - [`protocol`]: the JSON Centrifugo client protocol (commands, replies, pushes, codes), defined
//!   once in the `gpuscout-client` crate and shared with it.
//! - [`backoff`]: exponential backoff with full jitter, the one retry schedule (also from
//!   `gpuscout-client`, so the hub and the SDK retry alike).

pub mod advisor;
pub mod alerts;
pub mod auth;
pub use gpuscout_client::backoff;
pub mod bus;
pub mod channels;
pub mod clock;
pub mod config;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod market;
pub mod portfolio;
pub use gpuscout_client::protocol;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tier;
pub mod upstream;

/// This build's version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit this build was made from (`build.rs`): `gpuscout --version`, `gpuscout_build_info`.
pub const COMMIT: &str = env!("GPUSCOUT_COMMIT");
/// What `gpuscout --version` prints after the name.
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("GPUSCOUT_COMMIT"), ")");
