//! Anthropic's Messages API, streamed: `POST {base_url}/v1/messages` with `stream: true`,
//! `x-api-key` and `anthropic-version: 2023-06-01`.
//!
//! Answer text comes from `content_block_delta` events with a `text_delta` only: thinking,
//! signature and tool-input deltas and tool-use blocks are not the answer. Usage comes from
//! `message_start` (input) and `message_delta` (output, cumulative); `message_stop` ends the stream.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::sse::SseEvent;
use super::{
    ChatRequest, Decoder, Endpoint, EventStream, LlmProvider, ProviderError, Role, StreamEvent, Timeouts, error_fields,
    json_data,
};
use crate::config::LlmProviderSettings;

pub const API_VERSION: &str = "2023-06-01";

pub struct AnthropicProvider {
    endpoint: Endpoint,
}

impl AnthropicProvider {
    pub fn new(client: reqwest::Client, settings: &LlmProviderSettings, timeouts: Timeouts) -> Self {
        let url = format!("{}/v1/messages", settings.base_url.trim_end_matches('/'));
        Self {
            endpoint: Endpoint::new(client, url, settings, settings.model.clone(), timeouts),
        }
    }

    pub fn body(&self, request: &ChatRequest) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                json!({"role": role, "content": m.content})
            })
            .collect();
        json!({
            "model": self.endpoint.model(),
            "max_tokens": request.max_tokens,
            "stream": true,
            "system": request.system,
            "messages": messages,
        })
    }
}

#[async_trait]
impl LlmProvider for AnthropicProvider {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn model(&self) -> &str {
        self.endpoint.model()
    }

    async fn stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        let auth = |http: reqwest::RequestBuilder, key: &str| {
            http.header("x-api-key", key).header("anthropic-version", API_VERSION)
        };
        let decoder = AnthropicDecoder::default();
        self.endpoint.stream(&self.body(request), auth, decoder).await
    }
}

/// The state of one Messages stream.
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    input_tokens: u64,
    output_tokens: u64,
    stop_reason: Option<String>,
    done: bool,
}

/// `end_turn` and `stop_sequence` are a finished answer; the rest is kept as Anthropic names it.
fn normalise_stop(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" => "end_turn".into(),
        other => other.to_ascii_lowercase(),
    }
}

impl AnthropicDecoder {
    fn usage(&mut self, usage: &Value, out: &mut Vec<StreamEvent>) {
        if !usage.is_object() {
            return;
        }
        if let Some(n) = usage["input_tokens"].as_u64() {
            self.input_tokens = n;
        }
        if let Some(n) = usage["output_tokens"].as_u64() {
            self.output_tokens = n;
        }
        out.push(StreamEvent::Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
        });
    }
}

impl Decoder for AnthropicDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data = json_data(event)?;
        let kind = data["type"].as_str().unwrap_or(event.event.as_str());
        match kind {
            "message_start" => self.usage(&data["message"]["usage"], out),
            "content_block_start" => {
                // A text block may start with text already.
                let block = &data["content_block"];
                if block["type"] == "text"
                    && let Some(text) = block["text"].as_str()
                    && !text.is_empty()
                {
                    out.push(StreamEvent::Delta(text.to_owned()));
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                if delta["type"] == "text_delta"
                    && let Some(text) = delta["text"].as_str()
                    && !text.is_empty()
                {
                    out.push(StreamEvent::Delta(text.to_owned()));
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(normalise_stop(reason));
                }
                self.usage(&data["usage"], out);
            }
            "message_stop" => {
                self.done = true;
                out.push(StreamEvent::Done {
                    stop_reason: self.stop_reason.clone().unwrap_or_else(|| "end_turn".into()),
                });
            }
            "error" => {
                let (kind, message) = error_fields(&data["error"])
                    .unwrap_or_else(|| ("error".into(), data.to_string().chars().take(200).collect()));
                let retryable = matches!(kind.as_str(), "overloaded_error" | "api_error" | "rate_limit_error");
                return Err(ProviderError::Upstream {
                    kind,
                    message,
                    retryable,
                });
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.done
    }
}
