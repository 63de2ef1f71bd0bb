//! The five-minute path in Rust: an API key → connection tokens (exchanged by the client) →
//! `gpu:rtx-4090` → three deltas printed, each checksum verified by the book.
//!
//!     GSK=gsk_… HUB=http://127.0.0.1:8080 cargo run -p gpuscout-client --example five_minutes

use gpuscout_client::book::Applied;
use gpuscout_client::{BookEvent, Client, Options, TokenSource};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hub = std::env::var("HUB").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let key = std::env::var("GSK")?;
    let url = format!("{}/connection/websocket", hub.replacen("http", "ws", 1));
    let client = Client::connect(Options::new(url.clone(), TokenSource::api_key(&url, key)));
    let mut book = client.market_book("gpu:rtx-4090");
    let mut deltas = 0;
    while let Some(event) = book.next().await {
        match event {
            BookEvent::Update(Applied::Snapshot { seq }) => println!("snapshot seq {seq}, checksum ok"),
            BookEvent::Update(Applied::Delta { seq, changed, .. }) => {
                println!("delta seq {seq}: {} checksum ok", changed.join(", "));
                deltas += 1;
                if deltas == 3 {
                    break;
                }
            }
            BookEvent::Resync(why) => println!("resync: {why:?}"),
            BookEvent::Error(e) => return Err(e.message.into()),
            BookEvent::Update(_) => {}
        }
    }
    client.close();
    Ok(())
}
