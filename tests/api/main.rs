//! Integration tests: a real hub on a free port, driven over real sockets.

mod advisor;
mod alerts;
mod auth;
mod channels;
mod fakes;
mod fanout;
mod helpers;
mod lifecycle;
mod llm_fake;
mod market;
mod protocol_errors;
mod recovery;
mod rust_sdk;
mod server_api;
mod store;
mod supervision;
