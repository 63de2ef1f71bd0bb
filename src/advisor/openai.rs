//! OpenAI-compatible chat completions, streamed: `POST {base_url}/v1/chat/completions` with
//! `stream: true` and `stream_options.include_usage: true`; the key, when set, as
//! `Authorization: Bearer`. Served by OpenAI and by vLLM, Ollama, llama.cpp, Groq and others.
//!
//! Answer text comes from `choices[0].delta.content` only: `reasoning` / `reasoning_content` and
//! `tool_calls` deltas are not the answer. Usage arrives in a last chunk with empty `choices`;
//! `data: [DONE]` ends the stream. An `error` (as an `event: error` or as a chunk with an `error`
//! object) after the 200 is an error of the answer.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::sse::SseEvent;
use super::{
    ChatRequest, Decoder, Endpoint, EventStream, LlmProvider, ProviderError, Role, StreamEvent, Timeouts, error_fields,
    json_data,
};
use crate::config::LlmProviderSettings;

pub struct OpenAiProvider {
    endpoint: Endpoint,
}

impl OpenAiProvider {
    pub fn new(client: reqwest::Client, settings: &LlmProviderSettings, timeouts: Timeouts) -> Self {
        let url = format!("{}/v1/chat/completions", settings.base_url.trim_end_matches('/'));
        Self {
            endpoint: Endpoint::new(client, url, settings, settings.model.clone(), timeouts),
        }
    }

    pub fn body(&self, request: &ChatRequest) -> Value {
        let mut messages = vec![json!({"role": "system", "content": request.system})];
        messages.extend(request.messages.iter().map(|m| {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": m.content})
        }));
        json!({
            "model": self.endpoint.model(),
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": request.max_tokens,
        })
    }
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn model(&self) -> &str {
        self.endpoint.model()
    }

    async fn stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        // A local OpenAI-compatible server may take no key: then no Authorization header is sent.
        let auth = |http: reqwest::RequestBuilder, key: &str| {
            if key.is_empty() { http } else { http.bearer_auth(key) }
        };
        self.endpoint
            .stream(&self.body(request), auth, OpenAiDecoder::default())
            .await
    }
}

#[derive(Debug, Default)]
pub struct OpenAiDecoder {
    finish_reason: Option<String>,
    done: bool,
}

fn normalise_finish(reason: &str) -> String {
    match reason {
        "stop" => "end_turn".into(),
        "length" => "max_tokens".into(),
        other => other.to_ascii_lowercase(),
    }
}

impl Decoder for OpenAiDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        if event.data.trim() == "[DONE]" {
            self.done = true;
            out.push(StreamEvent::Done {
                stop_reason: self.finish_reason.clone().unwrap_or_else(|| "end_turn".into()),
            });
            return Ok(());
        }
        let data = json_data(event)?;
        if let Some((kind, message)) = error_fields(&data["error"]) {
            let status = data["error"]["status_code"].as_u64().unwrap_or(0);
            // Some servers name the error by `code` ("tool_use_failed"); prefer it to the type.
            let kind = data["error"]["code"].as_str().map(str::to_owned).unwrap_or(kind);
            return Err(ProviderError::Upstream {
                retryable: status == 429 || status >= 500 || kind == "server_error",
                kind,
                message,
            });
        }
        if event.event == "error" {
            return Err(ProviderError::Upstream {
                kind: "error".into(),
                message: event.data.chars().take(300).collect(),
                retryable: false,
            });
        }
        let choice = &data["choices"][0];
        if let Some(text) = choice["delta"]["content"].as_str()
            && !text.is_empty()
        {
            out.push(StreamEvent::Delta(text.to_owned()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(normalise_finish(reason));
        }
        let usage = &data["usage"];
        if usage.is_object() {
            out.push(StreamEvent::Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.done
    }
}
