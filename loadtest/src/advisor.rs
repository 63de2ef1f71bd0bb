//! `advisor`: M concurrent advisor answers through the hub, from a fake OpenAI-compatible provider
//! this tool serves. Each token the provider writes is the time it was written (µs since the
//! epoch); the client subtracts it from the time the `delta` publication arrived: the latency the
//! hub adds per token (plus the loopback hops). Clients are `gpuscout-client` clients.
//!
//! The hub must use the provider: `GPUSCOUT__ADVISOR__PROVIDER=openai
//! GPUSCOUT__ADVISOR__OPENAI__BASE_URL=http://<--provider-listen>`.
//!
//! `mixed`: the fan-out scenario, these advisor streams and market-book clients (every delta's
//! checksum verified by the SDK) whose users keep price alert rules, on one hub at the same time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use gpuscout_client::{BookEvent, Client, Options, SubEvent, TokenSource};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::report::{self, Progress, hub_usage, now_us, procs_stats};
use crate::{Cli, hub_addrs, token_minter};

#[derive(clap::Args, Clone)]
#[group(id = "advisor")]
pub struct Args {
    /// Concurrent answer streams (one client connection each).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 100)]
    pub tokens: usize,
    /// Pause between two tokens of one answer (ms).
    #[arg(long, default_value_t = 20)]
    pub token_gap_ms: u64,
    /// Where the fake provider listens (the hub's `advisor.openai.base_url`).
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub provider_listen: SocketAddr,
    /// Give up on answers after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub answer_seconds: u64,
}

/// The fake provider: every `POST …/chat/completions` streams `tokens` timestamp tokens.
async fn start_provider(args: &Args) -> anyhow::Result<Arc<AtomicU64>> {
    let listener = TcpListener::bind(args.provider_listen)
        .await
        .with_context(|| format!("binding the fake provider on {}", args.provider_listen))?;
    let served = Arc::new(AtomicU64::new(0));
    let (tokens, gap) = (args.tokens, Duration::from_millis(args.token_gap_ms));
    let served_c = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let served = served_c.clone();
            tokio::spawn(async move {
                if stream_answer(stream, tokens, gap).await.is_ok() {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(served)
}

/// Read one request, answer with an OpenAI-compatible SSE stream, close.
async fn stream_answer(mut stream: TcpStream, tokens: usize, gap: Duration) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the request");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        .await?;
    for i in 0..tokens {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        let chunk = json!({"id": "lt", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": format!("{} ", now_us())}, "finish_reason": null}]});
        stream.write_all(format!("data: {chunk}\n\n").as_bytes()).await?;
    }
    let stop = json!({"id": "lt", "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    let usage = json!({"id": "lt", "object": "chat.completion.chunk", "choices": [],
        "usage": {"prompt_tokens": 50, "completion_tokens": tokens, "total_tokens": 50 + tokens}});
    stream
        .write_all(format!("data: {stop}\n\ndata: {usage}\n\ndata: [DONE]\n\n").as_bytes())
        .await?;
    stream.shutdown().await?;
    Ok(())
}

/// Run the advisor streams (the provider must already be serving).
async fn streams(cli: &Cli, args: &Args) -> anyhow::Result<Value> {
    let hubs = hub_addrs(cli)?;
    let mint = token_minter()?;
    let deadline = Instant::now() + Duration::from_secs(args.answer_seconds);
    // Connect every client first, so the answers stream concurrently.
    let connected = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("advisor clients", args.streams as u64, connected.clone(), None);
    let mut clients = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let user = format!("adv{i}");
        let mut options = Options::new(
            format!("ws://{}/connection/websocket", hubs[i % hubs.len()]),
            TokenSource::Static(mint(&user)?),
        );
        options.name = "loadtest".into();
        options.timeout = Duration::from_secs(60);
        let client = Client::connect(options);
        let answers = client.server_subscription(format!("advisor:#{user}"));
        clients.push((client, answers));
    }
    for (client, _) in &clients {
        client.connected().await.context("an advisor client did not connect")?;
        connected.fetch_add(1, Ordering::Relaxed);
    }
    progress.finish().await;

    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("answers", args.streams as u64, finished.clone(), Some(failed.clone()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let n = args.streams;
    for (i, (client, mut answers)) in clients.into_iter().enumerate() {
        let (latencies, received, failed, finished) =
            (latencies.clone(), received.clone(), failed.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            // Questions arrive over half a second, not all in the same millisecond.
            tokio::time::sleep(Duration::from_micros(500_000 * i as u64 / n as u64)).await;
            let outcome = async {
                let ask = client.rpc("advisor.ask", &json!({"text": "RTX 4090 prices?"})).await?;
                let message_id = ask["message_id"].as_str().unwrap_or_default().to_owned();
                let mut mine = Vec::new();
                loop {
                    let event = tokio::time::timeout_at(deadline.into(), answers.next())
                        .await
                        .context("answer timed out")?
                        .context("client closed")?;
                    let SubEvent::Publication { data, .. } = event else {
                        continue;
                    };
                    let arrived = now_us();
                    let v: Value = serde_json::from_str(data.get())?;
                    if v["message_id"] != message_id.as_str() {
                        continue;
                    }
                    match v["type"].as_str() {
                        Some("delta") => {
                            for stamp in v["text"].as_str().unwrap_or_default().split_whitespace() {
                                if let Ok(sent) = stamp.parse::<u64>() {
                                    mine.push(arrived.saturating_sub(sent));
                                }
                            }
                        }
                        Some("done") => return anyhow::Ok(mine),
                        Some("error") => anyhow::bail!("answer failed: {v}"),
                        _ => {}
                    }
                }
            }
            .await;
            client.close();
            match outcome {
                Ok(mine) => {
                    received.fetch_add(mine.len() as u64, Ordering::Relaxed);
                    latencies.lock().await.extend(mine);
                    finished.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("advisor stream: {e:#}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    progress.finish().await;
    let seconds = started.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *latencies.lock().await);
    let received = received.load(Ordering::Relaxed);
    let expected = (args.streams * args.tokens) as u64;
    Ok(json!({
        "streams": args.streams,
        "tokens_per_stream": args.tokens,
        "token_gap_ms": args.token_gap_ms,
        "answers_completed": finished.load(Ordering::Relaxed),
        "answers_failed": failed.load(Ordering::Relaxed),
        "tokens_expected": expected,
        "tokens_received": received,
        "tokens_lost": expected.saturating_sub(received),
        "tokens_per_second": received as f64 / seconds,
        "seconds": seconds,
        "added_latency_ms": report::latency(&lat),
    }))
}

pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Value> {
    let served = start_provider(args).await?;
    let before = procs_stats(&cli.hub_pid);
    let mut report = streams(cli, args).await?;
    let after = procs_stats(&cli.hub_pid);
    let extra = json!({"scenario": "advisor", "label": cli.label, "provider_answers": served.load(Ordering::Relaxed)});
    report::merge(&mut report, extra);
    report::merge(&mut report, hub_usage(before, after, args.streams as u64));
    Ok(report)
}

/// Market books on `market:summary` until `stop`: updates applied, resyncs, refusals. Each book's
/// user also keeps `rules` price alert rules on models of the book, thresholds at the current
/// median (alternately above and below), and counts the alerts pushed on `alerts:#<user>`.
async fn books(
    cli: &Cli,
    count: usize,
    rules: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Value> {
    let hubs = hub_addrs(cli)?;
    let mint = token_minter()?;
    let http = reqwest::Client::new();
    let counters: [Arc<AtomicU64>; 5] = Default::default();
    let mut tasks = Vec::new();
    for i in 0..count {
        let user = format!("book{i}");
        let token = mint(&user)?;
        let hub = hubs[i % hubs.len()];
        let client = Client::connect(Options::new(
            format!("ws://{hub}/connection/websocket"),
            TokenSource::Static(token.clone()),
        ));
        let mut book = client.market_book("market:summary");
        let mut alerts = client.server_subscription(format!("alerts:#{user}"));
        let (counters, mut stop, http) = (counters.clone(), stop.clone(), http.clone());
        let [updates, resyncs, errors, created, fired] = counters;
        tasks.push(tokio::spawn(async move {
            let mut pending_rules = rules;
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    e = book.next() => match e {
                        Some(BookEvent::Update(_)) => {
                            updates.fetch_add(1, Ordering::Relaxed);
                            if pending_rules > 0 {
                                pending_rules = 0;
                                let n = create_rules(&http, hub, &token, book.book().items(), i * rules, rules).await;
                                created.fetch_add(n, Ordering::Relaxed);
                            }
                        }
                        Some(BookEvent::Resync(_)) => { resyncs.fetch_add(1, Ordering::Relaxed); }
                        Some(BookEvent::Error(_)) | None => { errors.fetch_add(1, Ordering::Relaxed); break; }
                    },
                    a = alerts.next() => {
                        if let Some(SubEvent::Publication { .. }) = a {
                            fired.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            client.close();
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let [updates, resyncs, errors, created, fired] = counters.map(|c| c.load(Ordering::Relaxed));
    Ok(json!({
        "clients": count,
        "updates_applied": updates,
        "checksum_or_gap_resyncs": resyncs,
        "errors": errors,
        "alert_rules": created,
        "alerts_received": fired,
    }))
}

/// Create up to `n` price rules over the book's models, from the `first`-th priced model on (so
/// users watch different models); how many the hub accepted.
async fn create_rules(
    http: &reqwest::Client,
    hub: SocketAddr,
    token: &str,
    items: &serde_json::Map<String, Value>,
    first: usize,
    n: usize,
) -> u64 {
    let mut created = 0;
    let priced: Vec<(&String, f64)> = items
        .iter()
        .filter_map(|(model, v)| Some((model, v["price_available"]["median"].as_f64()?)))
        .collect();
    if priced.is_empty() {
        return 0;
    }
    let picks = priced.iter().cycle().skip(first % priced.len()).take(n);
    for (k, (model, median)) in picks.enumerate() {
        let rule = json!({
            "name": format!("loadtest {k}"), "kind": "price", "model": model, "stat": "median",
            "direction": if k % 2 == 0 { "above" } else { "below" }, "threshold_usd": median,
            "cooldown_s": 60,
        });
        let sent = http
            .post(format!("http://{hub}/api/v1/alerts/rules"))
            .bearer_auth(token)
            .json(&rule)
            .send()
            .await;
        if sent.is_ok_and(|r| r.status().is_success()) {
            created += 1;
        }
    }
    created
}

pub async fn mixed(
    cli: &Cli,
    fanout: &crate::fanout::Args,
    advisor: &Args,
    book_clients: usize,
    rules: usize,
) -> anyhow::Result<Value> {
    let served = start_provider(advisor).await?;
    let before = procs_stats(&cli.hub_pid);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let books = books(cli, book_clients, rules, stop_rx);
    let load = async {
        let (f, a) = tokio::join!(crate::fanout::run(cli, fanout), streams(cli, advisor));
        let _ = stop_tx.send(true);
        (f, a)
    };
    let ((f, a), b) = tokio::join!(load, books);
    let after = procs_stats(&cli.hub_pid);
    let mut report = json!({
        "scenario": "mixed",
        "label": cli.label,
        "fanout": f?,
        "advisor": a?,
        "market_books": b?,
        "provider_answers": served.load(Ordering::Relaxed),
    });
    report::merge(&mut report, hub_usage(before, after, 0));
    Ok(report)
}
