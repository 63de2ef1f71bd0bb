//! `bare-server`: the smallest broadcast server on the hub's stack (tokio + tokio-tungstenite),
//! for `fanout` to measure the stack's ceiling against.
//!
//! It speaks just enough of the protocol for `fanout`: `connect` and `subscribe` are answered
//! without checks, server pings every 25 s, and `POST /api/publish` on the same port broadcasts
//! the publication's push (serialised once) to every socket. No authentication, channels, history,
//! limits, batching or slow-consumer handling: one task per connection writing each push as its own
//! frame. A subscriber that falls too far behind misses publications (counted, and `fanout`
//! reports them as lost).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gpuscout_client::protocol::{self, Method};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

struct Shared {
    pushes: broadcast::Sender<Bytes>,
    offset: AtomicU64,
    lagged: AtomicU64,
}

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("bare broadcast server on {listen}");
    let (pushes, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        pushes,
        offset: AtomicU64::new(0),
        lagged: AtomicU64::new(0),
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut first = [0u8; 4];
            let is_post = matches!(stream.peek(&mut first).await, Ok(4) if &first == b"POST");
            let result = if is_post {
                http(stream, &shared).await
            } else {
                websocket(stream, &shared).await
            };
            if let Err(e) = result {
                debug_log(&e);
            }
        });
    }
}

fn debug_log(e: &anyhow::Error) {
    if std::env::var_os("BARE_DEBUG").is_some() {
        eprintln!("connection: {e}");
    }
}

async fn websocket(stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let mut ws = tokio_tungstenite::accept_async(stream).await?;
    let mut rx: Option<broadcast::Receiver<Bytes>> = None;
    let mut ping = tokio::time::interval(Duration::from_secs(25));
    ping.tick().await;
    loop {
        tokio::select! {
            msg = ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                };
                let mut replies = Vec::new();
                for line in protocol::split_frame(text.as_str()) {
                    let command = protocol::decode_command(line)?;
                    match command.method() {
                        Some(Method::Connect(_)) => replies.push(format!(
                            r#"{{"id":{},"connect":{{"client":"bare","version":"0","ping":25,"pong":true}}}}"#,
                            command.id
                        )),
                        Some(Method::Subscribe(_)) => {
                            rx.get_or_insert_with(|| shared.pushes.subscribe());
                            replies.push(format!(r#"{{"id":{},"subscribe":{{}}}}"#, command.id));
                        }
                        _ => {}
                    }
                }
                if !replies.is_empty() {
                    ws.send(Message::text(replies.join("\n"))).await?;
                }
            }
            push = async { match rx.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => {
                match push {
                    Ok(bytes) => ws.send(Message::Text(Utf8Bytes::try_from(bytes)?)).await?,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        shared.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
            _ = ping.tick() => ws.send(Message::text("{}")).await?,
        }
    }
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
}

/// HTTP/1.1 keep-alive: each `POST /api/publish` broadcasts; anything else is 404.
async fn http(mut stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let (status, answer) = if head.starts_with("POST /api/publish ") {
            match serde_json::from_slice::<PublishBody>(&body) {
                Ok(p) => {
                    let offset = shared.offset.fetch_add(1, Ordering::Relaxed) + 1;
                    let push = protocol::encode_publication_push(&p.channel, offset, p.data.get());
                    let _ = shared.pushes.send(Bytes::from(push));
                    ("200 OK", format!(r#"{{"result":{{"offset":{offset}}}}}"#))
                }
                Err(e) => ("400 Bad Request", format!(r#"{{"error":{:?}}}"#, e.to_string())),
            }
        } else {
            ("404 Not Found", r#"{"error":"not found"}"#.to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}
