//! Integration tests: a real hub on a free port, driven over real sockets.

#[path = "../common/mod.rs"]
mod common;
use common::{fakes, helpers, llm_fake};

mod abuse;
mod advisor;
mod alerts;
mod auth;
mod channels;
mod cli;
mod delivery;
mod fanout;
mod hardening;
mod jwks;
mod keys;
mod layers;
mod lifecycle;
mod market;
mod openapi;
mod portfolio;
mod postgres_tls;
mod protocol_errors;
mod push;
mod recovery;
mod retention;
mod rust_sdk;
mod server_api;
mod store;
mod supervision;
