//! The AI advisor: answers pricing questions grounded in the live market, streamed token by token on
//! the user's `advisor:#<uid>` channel (DESIGN §8).
//!
//! - [`LlmProvider`]: one streamed answer from a language model, as [`StreamEvent`]s. Backends side
//!   by side: [`anthropic`] (Messages API), [`gemini`] (`streamGenerateContent`), [`openai`] (any
//!   OpenAI-compatible `/v1/chat/completions`), and [`offline`] (no model: the live aggregates,
//!   summarised). Every HTTP backend reads its stream with the one SSE reader in [`sse`].
//! - [`context`]: which models a question is about, the market figures and the earlier turns that go
//!   with it.
//! - [`service`]: the `advisor.ask` / `advisor.cancel` RPCs, quotas, conversation memory, and the
//!   generation tasks that publish `start`, `delta`, `done` / `error` through the bus.
//!
//! Generation runs in its own task: it never blocks a connection or the hub. Only `startup` chooses
//! the provider.

pub mod anthropic;
pub mod context;
pub mod gemini;
pub mod offline;
pub mod openai;
pub mod service;
pub mod sse;

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

pub use context::MarketContext;
pub use service::{Advisor, AdvisorParts};
use sse::{SseEvent, SseReader};

use crate::config::LlmProviderSettings;
use crate::store::advisor::MessageRole;

/// What a provider's stream reports.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Answer text to append.
    Delta(String),
    /// Tokens so far (cumulative: the latest report replaces earlier ones).
    Usage { input_tokens: u64, output_tokens: u64 },
    /// The answer is complete. `stop_reason` is normalised: `end_turn`, `max_tokens`, or the
    /// provider's own value in lower case.
    Done { stop_reason: String },
}

pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl From<MessageRole> for Role {
    fn from(role: MessageRole) -> Self {
        match role {
            MessageRole::User => Self::User,
            MessageRole::Assistant => Self::Assistant,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// One question with everything that goes with it.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Instructions and the live market figures.
    pub system: String,
    /// Earlier turns, oldest first, then the question: starts with a user turn, roles alternate.
    pub messages: Vec<ChatMessage>,
    /// The answer's token limit.
    pub max_tokens: u32,
    /// The market figures in structured form (the offline advisor answers from them).
    pub market: MarketContext,
}

impl ChatRequest {
    /// The question being asked.
    pub fn question(&self) -> &str {
        self.messages.last().map(|m| m.content.as_str()).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with an HTTP error; `message` is the provider's own.
    #[error("HTTP {status}: {message}")]
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// An `error` in the stream after a successful start.
    #[error("{kind}: {message}")]
    Upstream {
        kind: String,
        message: String,
        retryable: bool,
    },
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Transport(String),
    /// The body ended before the provider's end marker.
    #[error("stream ended early")]
    EndedEarly,
    /// The provider refused the question or withheld the answer (safety, recitation…).
    #[error("blocked by the provider: {0}")]
    Blocked(String),
    #[error("invalid stream: {0}")]
    Invalid(String),
}

impl ProviderError {
    /// The `code` of the `error` publication.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Status { .. } | Self::Upstream { .. } => "provider_error",
            Self::Timeout(_) => "timeout",
            Self::Transport(_) => "unavailable",
            Self::EndedEarly => "stream_ended_early",
            Self::Blocked(_) => "blocked",
            Self::Invalid(_) => "invalid_response",
        }
    }

    /// Whether the same request may succeed if tried again soon.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 408 | 409 | 429 | 500..=599),
            Self::Upstream { retryable, .. } => *retryable,
            Self::Timeout(_) | Self::Transport(_) | Self::EndedEarly => true,
            Self::Blocked(_) | Self::Invalid(_) => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout(e.to_string())
        } else if e.is_body() || e.is_decode() {
            // The body broke off mid-stream.
            Self::EndedEarly
        } else {
            Self::Transport(e.to_string())
        }
    }
}

/// A streamed answer from a language model.
#[async_trait]
pub trait LlmProvider: Send + Sync + 'static {
    /// `anthropic`, `gemini`, `openai` or `offline`.
    fn name(&self) -> &'static str;
    /// The model that answers.
    fn model(&self) -> &str;
    /// Send the request; the stream yields the answer as it arrives. Dropping the stream closes
    /// the upstream connection.
    async fn stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError>;
}

/// How long an HTTP provider waits, shared by the backends.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the response headers.
    pub first_byte: Duration,
    /// Between two events.
    pub idle: Duration,
}

/// What every HTTP provider holds: its client, the URL it posts to, its key, model and timeouts.
pub(crate) struct Endpoint {
    client: reqwest::Client,
    url: String,
    api_key: SecretString,
    model: String,
    timeouts: Timeouts,
}

impl Endpoint {
    pub(crate) fn new(
        client: reqwest::Client,
        url: String,
        settings: &LlmProviderSettings,
        model: String,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            client,
            url,
            api_key: settings.api_key.clone(),
            model,
            timeouts,
        }
    }

    pub(crate) fn model(&self) -> &str {
        &self.model
    }

    /// POST `body` asking for an event stream, with `auth` adding the provider's way of sending
    /// the API key, and decode the response with `decoder`.
    pub(crate) async fn stream<D: Decoder>(
        &self,
        body: &Value,
        auth: impl FnOnce(reqwest::RequestBuilder, &str) -> reqwest::RequestBuilder,
        decoder: D,
    ) -> Result<EventStream, ProviderError> {
        let http = self
            .client
            .post(&self.url)
            .header("accept", "text/event-stream")
            .json(body);
        let reader = send(auth(http, self.api_key.expose_secret()), self.timeouts).await?;
        Ok(drive(reader, decoder))
    }
}

/// Send a streaming request: a non-success status becomes [`ProviderError::Status`] with the
/// provider's message.
async fn send(request: reqwest::RequestBuilder, timeouts: Timeouts) -> Result<SseReader, ProviderError> {
    let response = tokio::time::timeout(timeouts.first_byte, request.send())
        .await
        .map_err(|_| ProviderError::Timeout(format!("no response within {} ms", timeouts.first_byte.as_millis())))?
        .map_err(ProviderError::from_reqwest)?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = crate::upstream::retry_after(response.headers());
        let body = tokio::time::timeout(timeouts.idle, response.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(ProviderError::Status {
            status: status.as_u16(),
            message: error_message(&body),
            retry_after,
        });
    }
    Ok(SseReader::new(response, timeouts.idle))
}

/// The message of a provider's error body: `{"error":{"message","type"|"status"|"code"}}` for all
/// three APIs (Gemini sometimes wraps it in an array); otherwise the start of the body.
pub(crate) fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| match v {
        Value::Array(items) => items.first().cloned().unwrap_or(Value::Null),
        other => other.clone(),
    });
    if let Some(error) = error
        && let Some((kind, message)) = error_fields(&error["error"])
    {
        return if kind.is_empty() {
            message
        } else {
            format!("{kind}: {message}")
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no error message".into()
    } else {
        text.chars().take(300).collect()
    }
}

/// `(kind, message)` of an error object, `kind` from `type`, `status` or `code`.
pub(crate) fn error_fields(error: &Value) -> Option<(String, String)> {
    let message = error.get("message")?.as_str()?.to_owned();
    let kind = ["type", "status", "code"]
        .iter()
        .find_map(|k| error.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    Some((kind, message))
}

/// What a provider makes of its SSE events.
pub(crate) trait Decoder: Send + 'static {
    /// The events `event` means; an error ends the stream (after what `out` already holds).
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
    /// The provider's end marker was seen: nothing more is read.
    fn complete(&self) -> bool;
}

struct Drive<D> {
    reader: SseReader,
    decoder: D,
    pending: VecDeque<StreamEvent>,
    failure: Option<ProviderError>,
    finished: bool,
}

/// The event stream of an SSE response, decoded by `decoder`. A body that ends before the
/// decoder saw its end marker is [`ProviderError::EndedEarly`].
fn drive<D: Decoder>(reader: SseReader, decoder: D) -> EventStream {
    let state = Drive {
        reader,
        decoder,
        pending: VecDeque::new(),
        failure: None,
        finished: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if let Some(e) = s.failure.take() {
                return Some((Err(e), s));
            }
            if s.finished {
                return None;
            }
            match s.reader.next_event().await {
                Ok(Some(event)) => {
                    let mut out = Vec::new();
                    let result = s.decoder.decode(&event, &mut out);
                    s.pending.extend(out);
                    if let Err(e) = result {
                        // An event cut short by the end of the body is a truncated stream.
                        let cut = matches!(e, ProviderError::Invalid(_)) && s.reader.ended();
                        s.failure = Some(if cut { ProviderError::EndedEarly } else { e });
                        s.finished = true;
                    } else if s.decoder.complete() {
                        s.finished = true;
                    }
                }
                Ok(None) => {
                    s.failure = Some(ProviderError::EndedEarly);
                    s.finished = true;
                }
                Err(e) => {
                    s.failure = Some(e);
                    s.finished = true;
                }
            }
        }
    }))
}

/// An event's data as JSON.
pub(crate) fn json_data(event: &SseEvent) -> Result<Value, ProviderError> {
    serde_json::from_str(&event.data).map_err(|e| {
        let start: String = event.data.chars().take(80).collect();
        ProviderError::Invalid(format!("event data is not JSON ({e}): {start}"))
    })
}

pub use crate::upstream::http_client;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn fixture(path: &str) -> Vec<u8> {
        let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
    }

    /// Run a fixture through the SSE reader and a decoder, in chunks of 7 bytes.
    async fn replay<D: Decoder>(path: &str, decoder: D) -> (String, Vec<StreamEvent>, Option<ProviderError>) {
        let bytes = fixture(path);
        let chunks: Vec<Result<Bytes, reqwest::Error>> =
            bytes.chunks(7).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let reader = SseReader::from_stream(Box::pin(futures_util::stream::iter(chunks)), Duration::from_secs(1));
        let mut stream = drive(reader, decoder);
        let (mut text, mut events, mut error) = (String::new(), Vec::new(), None);
        while let Some(item) = futures_util::StreamExt::next(&mut stream).await {
            match item {
                Ok(StreamEvent::Delta(t)) => text.push_str(&t),
                Ok(e) => events.push(e),
                Err(e) => error = Some(e),
            }
        }
        (text, events, error)
    }

    fn usage(input_tokens: u64, output_tokens: u64) -> StreamEvent {
        StreamEvent::Usage {
            input_tokens,
            output_tokens,
        }
    }

    fn done(stop_reason: &str) -> StreamEvent {
        StreamEvent::Done {
            stop_reason: stop_reason.into(),
        }
    }

    #[tokio::test]
    async fn anthropic_streams_text_only() {
        use anthropic::AnthropicDecoder as A;
        let (text, events, error) = replay("anthropic/sdk_basic_response.sse", A::default()).await;
        assert_eq!(text, "Hello there!");
        assert!(error.is_none(), "{error:?}");
        assert_eq!(events, vec![usage(11, 1), usage(11, 6), done("end_turn")]);

        let (text, _, error) = replay("anthropic/docs_extended_thinking_stream.sse", A::default()).await;
        assert_eq!(text, "27 * 453 = 12,231", "thinking is not the answer");
        assert!(error.is_none());

        let (text, events, error) = replay("anthropic/sdk_tool_use_response.sse", A::default()).await;
        assert!(!text.contains('{'), "tool input is not the answer: {text}");
        assert_eq!(events.last(), Some(&done("tool_use")));
        assert!(error.is_none());

        let (text, _, _) = replay("anthropic/pai_thinking_part_stream.sse", A::default()).await;
        assert!(!text.is_empty());
    }

    /// Decode a whole SSE body, delivered in one chunk, with the Anthropic decoder.
    async fn anthropic_items(body: &'static [u8]) -> Vec<Result<StreamEvent, ProviderError>> {
        let chunks = vec![Ok::<_, reqwest::Error>(Bytes::from_static(body))];
        let reader = SseReader::from_stream(Box::pin(futures_util::stream::iter(chunks)), Duration::from_secs(1));
        futures_util::StreamExt::collect(drive(reader, anthropic::AnthropicDecoder::default())).await
    }

    /// A text delta with no `message_stop` after it.
    const ANTHROPIC_CUT: &[u8] = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n";

    #[tokio::test]
    async fn anthropic_error_event_fails_retryably() {
        // One literal per event, so every line stands alone.
        let mid = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        let items = anthropic_items(mid.as_bytes()).await;
        let err = items.into_iter().find_map(Result::err).expect("an error");
        assert_eq!(err.to_string(), "overloaded_error: Overloaded");
        assert!(err.retryable());
    }

    #[tokio::test]
    async fn anthropic_cut_before_message_stop_ends_early() {
        let items = anthropic_items(ANTHROPIC_CUT).await;
        assert!(matches!(items[0], Ok(StreamEvent::Delta(_))));
        assert!(matches!(items.last(), Some(Err(ProviderError::EndedEarly))));
    }

    #[tokio::test]
    async fn anthropic_cut_mid_event_ends_early() {
        let items = anthropic_items(&ANTHROPIC_CUT[..60]).await;
        assert!(
            matches!(items.as_slice(), [Err(ProviderError::EndedEarly)]),
            "{items:?}"
        );
        assert_eq!(ProviderError::EndedEarly.to_string(), "stream ended early");
    }

    #[tokio::test]
    async fn gemini_streams_text_without_thoughts_or_calls() {
        use gemini::GeminiDecoder as G;
        let (text, events, error) = replay(
            "gemini/vertexai-testdata_googleai_streaming-success-basic-reply-short.sse",
            G::default(),
        )
        .await;
        assert_eq!(text, "The capital of Wyoming is **Cheyenne**.\n");
        assert!(error.is_none(), "{error:?}");
        assert_eq!(events.last(), Some(&done("end_turn")));
        assert!(events.contains(&usage(7, 10)));

        let (text, _, error) = replay(
            "gemini/vertexai-testdata_googleai_streaming-success-thinking-function-call-thought-summary-signature.sse",
            G::default(),
        )
        .await;
        assert_eq!(text, "", "thought summaries and function calls are not the answer");
        assert!(error.is_none());

        let (_, _, error) = replay(
            "gemini/vertexai-testdata_googleai_streaming-failure-prompt-blocked-safety.sse",
            G::default(),
        )
        .await;
        assert!(
            matches!(error, Some(ProviderError::Blocked(ref m)) if m.contains("SAFETY")),
            "{error:?}"
        );

        let (_, _, error) = replay(
            "gemini/vertexai-testdata_googleai_streaming-failure-recitation-no-content.sse",
            G::default(),
        )
        .await;
        assert!(
            matches!(error, Some(ProviderError::Blocked(ref m)) if m.contains("RECITATION")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn openai_streams_content_only() {
        use openai::OpenAiDecoder as O;
        let (text, events, error) = replay("openai_compat/pai_openai_gpt-4o-mini_stream_text.sse", O::default()).await;
        assert_eq!(text, "The capital of the UK is London.");
        assert!(error.is_none());
        assert_eq!(events, vec![usage(78, 9), done("end_turn")]);

        let (text, events, error) = replay(
            "openai_compat/pai_openai_gpt-4o-mini_stream_tool_call.sse",
            O::default(),
        )
        .await;
        assert_eq!(text, "", "tool call arguments are not the answer");
        assert_eq!(events.last(), Some(&done("tool_calls")));
        assert!(error.is_none());

        let (text, _, error) = replay("openai_compat/pai_crusoe_vllm_stream.sse", O::default()).await;
        assert!(text.starts_with("1, 2, 3"), "{text}");
        assert!(error.is_none(), "{error:?}");

        let (text, _, error) = replay(
            "openai_compat/pai_groq_stream_event_error_tool_use_failed.sse",
            O::default(),
        )
        .await;
        assert_eq!(text, "", "reasoning is not the answer");
        let error = error.expect("the error event ends the answer");
        assert!(
            error
                .to_string()
                .starts_with("tool_use_failed: Tool call validation failed"),
            "{error}"
        );
        assert!(!error.retryable());
    }

    #[test]
    fn error_bodies_give_the_providers_message() {
        let anthropic =
            br#"{"error": {"message": "model: claude-sonet-4-5", "type": "not_found_error"}, "type": "error"}"#;
        assert_eq!(error_message(anthropic), "not_found_error: model: claude-sonet-4-5");
        let gemini = br#"[{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}]"#;
        assert_eq!(error_message(gemini), "INVALID_ARGUMENT: API key not valid.");
        assert_eq!(
            error_message(b"<html>502 Bad Gateway</html>"),
            "<html>502 Bad Gateway</html>"
        );
        assert_eq!(error_message(b""), "no error message");
    }
}
