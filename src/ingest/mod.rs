//! Market sources. Each adapter fetches offers from one source; nothing here publishes to clients
//! directly: data goes through the market book and the bus.

pub mod simulated;
