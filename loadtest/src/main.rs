//! `loadtest`: drive a running hub through the protocol and its server API, and measure.
//!
//! Scenarios (each bounded in count and time, each printing a table and JSON):
//! - `fanout`: N subscribers on one channel (spread over 127.0.0.x source addresses and over
//!   several hub nodes), a publisher through `/api/publish` at R publications/s carrying a send
//!   timestamp: connections held, delivered vs expected, loss, latency percentiles, deliveries
//!   per second, the hub's RSS and CPU time from `/proc/<pid>`.
//! - `connect-storm`: authenticated connects at a rate until a cap or failures, held idle.
//! - `market-age`: N subscribers on market channels; the age of the data they receive (receipt
//!   minus the payload's `source_ts`), publications per channel, the hub's CPU per delivery.
//! - `failover`: one of two nodes killed; its clients reconnect to the other and recover.
//! - `advisor`: M concurrent advisor answers from a fake OpenAI-compatible provider this tool
//!   serves; added latency per token, upstream write to client receipt.
//! - `mixed`: fan-out, advisor streams, market books (checksums verified) and alert rules at once.
//! - `bare-server`: a minimal tokio-tungstenite broadcast server (no auth, no history, no
//!   batching), the ceiling of the stack, to run `fanout` against for comparison.
//! - `plot`: one SVG of the latency percentiles of several JSON reports.
//!
//! `cargo run --release -p loadtest -- fanout --connections 1000 --publications 1000 --rate 200`

mod advisor;
mod age;
mod bare;
mod failover;
mod fanout;
mod report;
mod storm;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use gpuscout_hub::auth::TokenVerifier;
use gpuscout_hub::config::Settings;
use gpuscout_hub::tier::Tier;
use serde_json::Value;

#[derive(Parser)]
#[command(name = "loadtest", about = "Load generator for GPUScout Hub")]
pub struct Cli {
    /// The hub's HTTP address; several nodes comma-separated (subscribers are spread over them
    /// round-robin, publications go through the first).
    #[arg(long, default_value = "127.0.0.1:8080", global = true)]
    hub: String,
    /// Server API key (`api.key` of the hub).
    #[arg(long, env = "GPUSCOUT__API__KEY", default_value = "", global = true)]
    api_key: String,
    /// Hub process ids (comma-separated), to read their RSS and CPU time from /proc (summed).
    #[arg(long, global = true, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// Write the results as JSON here.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Write a latency-percentile plot (SVG) here.
    #[arg(long, global = true)]
    svg: Option<PathBuf>,
    /// A label for this run in reports and plots.
    #[arg(long, global = true, default_value = "hub")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Subscribers on one channel, a publisher at a fixed rate.
    Fanout(fanout::Args),
    /// Open authenticated connections at a rate until a cap (or failures), hold them idle, and
    /// report connects per second, connect latency and the hub's memory per connection.
    ConnectStorm(storm::Args),
    /// Subscribers on market channels of a hub polling a changing source: how old the data is
    /// when it reaches them (receipt minus `source_ts`), and what that costs the hub.
    MarketAge(age::Args),
    /// Two nodes on one Redis (`--hub A,B --hub-pid A,B`): kill A under load, then measure how
    /// fast its clients are live again on B, what they recovered, and B's CPU and memory.
    Failover(failover::Args),
    /// Concurrent advisor answers from a fake provider served here; added latency per token.
    Advisor(advisor::Args),
    /// Fan-out, advisor streams and market books on the same hub at the same time.
    Mixed {
        #[command(flatten)]
        fanout: fanout::Args,
        #[command(flatten)]
        advisor: advisor::Args,
        /// Market-book clients on `market:summary` (checksums verified on every delta).
        #[arg(long, default_value_t = 50)]
        books: usize,
        /// Price alert rules each market-book user keeps (evaluated by the hub on every change).
        #[arg(long, default_value_t = 10)]
        rules_per_book: usize,
    },
    /// A minimal tokio-tungstenite broadcast server speaking just enough of the protocol for
    /// `fanout` (connect, subscribe, pings; `POST /api/publish`): the stack's ceiling.
    BareServer {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
    },
    /// Plot the latency percentiles of JSON reports (from `--json`) into one SVG (`--svg`).
    Plot { reports: Vec<PathBuf> },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    gpuscout_hub::startup::install_tls_provider();
    match &cli.scenario {
        Scenario::Fanout(args) => {
            let report = fanout::run(&cli, args).await?;
            emit(&cli, &report)?;
            fanout::check(args, &report)?;
        }
        Scenario::ConnectStorm(args) => {
            let report = storm::run(&cli, args).await?;
            emit(&cli, &report)?;
        }
        Scenario::MarketAge(args) => {
            let report = age::run(&cli, args).await?;
            emit(&cli, &report)?;
        }
        Scenario::Failover(args) => {
            let report = failover::run(&cli, args).await?;
            emit(&cli, &report)?;
        }
        Scenario::Advisor(args) => {
            let report = advisor::run(&cli, args).await?;
            emit(&cli, &report)?;
        }
        Scenario::Mixed {
            fanout: f,
            advisor: a,
            books,
            rules_per_book,
        } => {
            let report = advisor::mixed(&cli, f, a, *books, *rules_per_book).await?;
            emit(&cli, &report)?;
            fanout::check(f, &report["fanout"])?;
        }
        Scenario::BareServer { listen } => bare::serve(*listen).await?,
        Scenario::Plot { reports } => {
            let Some(svg) = &cli.svg else {
                bail!("plot needs --svg <file>")
            };
            let mut series = Vec::new();
            for path in reports {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                let v: Value = serde_json::from_str(&text)?;
                series.extend(report::series_of(&v));
            }
            std::fs::write(svg, report::latency_svg(&series))?;
            println!("wrote {}", svg.display());
        }
    }
    Ok(())
}

/// Print the report as a table, and write it as JSON (else print it on one line) and the plot
/// where asked.
fn emit(cli: &Cli, report: &Value) -> anyhow::Result<()> {
    println!("{}", report::table(report));
    match &cli.json {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(report)?)?,
        None => println!("{report}"),
    }
    if let Some(path) = &cli.svg {
        std::fs::write(path, report::latency_svg(&report::series_of(report)))?;
    }
    Ok(())
}

/// The hub addresses of `--hub`.
fn hub_addrs(cli: &Cli) -> anyhow::Result<Vec<SocketAddr>> {
    cli.hub
        .split(',')
        .map(|h| h.trim().parse().context("--hub is host:port[,host:port...]"))
        .collect()
}

/// A WebSocket connection to `hub`'s `/connection/websocket` from `source` (one of the 127.0.0.x
/// addresses, ~28k ports each). A port still in TIME_WAIT from an earlier run may be bound again,
/// so back-to-back runs of 19,000 connections do not run out of ports.
pub async fn open_ws(
    source: std::net::Ipv4Addr,
    hub: SocketAddr,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(std::net::IpAddr::V4(source), 0))?;
    let stream = socket.connect(hub).await?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{hub}/connection/websocket"), stream).await?;
    Ok(ws)
}

/// Mints tokens signed like `gpuscout token`, with the hub's configured secret.
fn token_minter() -> anyhow::Result<impl Fn(&str) -> anyhow::Result<String>> {
    let settings = Settings::load().context("loading settings for the token secret")?;
    let verifier = TokenVerifier::new(&settings.auth)?;
    Ok(move |user: &str| Ok(verifier.mint(user, Tier::Enterprise, 3600)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
