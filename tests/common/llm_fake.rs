//! A local fake language-model server (Anthropic, Gemini and OpenAI-compatible paths alike). Each
//! request gets the next scripted reply: a captured SSE stream replayed byte for byte in chunks with
//! pauses between them, an HTTP error with a captured body, or a stream that goes silent. It records
//! every request and notices a client that hangs up before a stream's end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;

#[derive(Clone)]
pub enum Reply {
    /// 200 with these bytes, written in `chunks` with `gap` between them.
    Stream { chunks: Vec<Bytes>, gap: Duration },
    /// An HTTP error with this body.
    Error { status: u16, body: String },
    /// 200, these bytes, then silence (the connection stays open).
    Stall { head: Bytes },
    /// An OpenAI-compatible stream of `tokens` deltas, each the time it was written (µs since the
    /// epoch) and a space, `gap` apart.
    Timestamps { tokens: usize, gap: Duration },
}

impl Reply {
    /// Replay `bytes` in chunks of varying sizes (1 to 97 bytes), `gap` apart.
    pub fn replay(bytes: &[u8], gap: Duration) -> Self {
        let sizes = [1usize, 13, 97, 5, 64, 31];
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < bytes.len() {
            let end = (at + sizes[i % sizes.len()]).min(bytes.len());
            chunks.push(Bytes::copy_from_slice(&bytes[at..end]));
            at = end;
            i += 1;
        }
        Reply::Stream { chunks, gap }
    }

    /// Replay `bytes` cut at event boundaries (one event per chunk), `gap` apart.
    pub fn per_event(bytes: &[u8], gap: Duration) -> Self {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let sep = if text.contains("\r\n\r\n") { "\r\n\r\n" } else { "\n\n" };
        let chunks = text.split_inclusive(sep).map(|s| Bytes::from(s.to_owned())).collect();
        Reply::Stream { chunks, gap }
    }
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// Streams whose client hung up before the last chunk.
    hung_up: AtomicUsize,
    /// Streams written to the end.
    completed: AtomicUsize,
}

#[derive(Clone, Default)]
pub struct LlmFake(Arc<Inner>);

pub struct LlmServer {
    pub url: String,
    pub fake: LlmFake,
}

impl LlmServer {
    pub async fn start() -> Self {
        let fake = LlmFake::default();
        let url = super::serve(axum::Router::new().fallback(serve).with_state(fake.clone())).await;
        Self { url, fake }
    }
}

impl LlmFake {
    pub fn push(&self, reply: Reply) {
        self.0.replies.lock().unwrap().push_back(reply);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.0.seen.lock().unwrap().clone()
    }

    pub fn hung_up(&self) -> usize {
        self.0.hung_up.load(Ordering::SeqCst)
    }

    pub fn completed(&self) -> usize {
        self.0.completed.load(Ordering::SeqCst)
    }
}

/// Counts a stream that was dropped (the client hung up) before its end.
struct EndGuard {
    fake: LlmFake,
    finished: bool,
}

impl EndGuard {
    /// The stream was written to its end.
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.fake.0.completed
        } else {
            &self.fake.0.hung_up
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

fn timestamp_chunk(i: usize, tokens: usize) -> Bytes {
    if i < tokens {
        let content = format!("{} ", now_us());
        let chunk = serde_json::json!({"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
        Bytes::from(format!("data: {chunk}\n\n"))
    } else {
        let stop = serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let usage = serde_json::json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": tokens}});
        Bytes::from(format!("data: {stop}\n\ndata: {usage}\n\ndata: [DONE]\n\n"))
    }
}

async fn serve(State(fake): State<LlmFake>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    fake.0.seen.lock().unwrap().push(Seen {
        path,
        query,
        headers,
        body,
    });
    let reply = fake.0.replies.lock().unwrap().pop_front();
    let sse = [(header::CONTENT_TYPE, "text/event-stream")];
    match reply {
        None => (StatusCode::NOT_FOUND, "no reply scripted").into_response(),
        Some(Reply::Error { status, body }) => (
            StatusCode::from_u16(status).unwrap(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Some(Reply::Stall { head }) => {
            let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
                .chain(futures_util::stream::pending());
            (sse, Body::from_stream(stream)).into_response()
        }
        Some(Reply::Stream { chunks, gap }) => {
            let guard = EndGuard {
                fake: fake.clone(),
                finished: false,
            };
            let state = (chunks.into_iter(), guard, true);
            let stream = futures_util::stream::unfold(state, move |(mut it, guard, first)| async move {
                if !first {
                    tokio::time::sleep(gap).await;
                }
                match it.next() {
                    Some(chunk) => Some((Ok::<_, std::io::Error>(chunk), (it, guard, false))),
                    None => {
                        guard.finish();
                        None
                    }
                }
            });
            (sse, Body::from_stream(stream)).into_response()
        }
        Some(Reply::Timestamps { tokens, gap }) => {
            let guard = EndGuard {
                fake: fake.clone(),
                finished: false,
            };
            let stream = futures_util::stream::unfold((0usize, guard), move |(i, guard)| async move {
                if i > tokens {
                    guard.finish();
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(gap).await;
                }
                Some((Ok::<_, std::io::Error>(timestamp_chunk(i, tokens)), (i + 1, guard)))
            });
            (sse, Body::from_stream(stream)).into_response()
        }
    }
}
