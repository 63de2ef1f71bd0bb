//! Integration tests: a real hub on a free port, driven over real sockets.

mod auth;
mod channels;
mod fanout;
mod helpers;
mod lifecycle;
mod protocol_errors;
mod recovery;
mod server_api;
mod store;
