//! Google's Gemini API, streamed: `POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse`
//! with `x-goog-api-key`.
//!
//! Each event is a `GenerateContentResponse`. Answer text comes from `candidates[0].content.parts[].text`,
//! except parts marked `thought: true` (thought summaries) and function calls. `usageMetadata` is
//! cumulative. A `finishReason` of `STOP` or `MAX_TOKENS` ends the answer; `SAFETY`, `RECITATION`
//! and the other refusals, or a `promptFeedback.blockReason`, are errors: the answer was withheld.

use async_trait::async_trait;
use serde_json::{Value, json};

use super::sse::SseEvent;
use super::{
    ChatRequest, Decoder, Endpoint, EventStream, LlmProvider, ProviderError, Role, StreamEvent, Timeouts, error_fields,
    json_data,
};
use crate::config::LlmProviderSettings;

pub struct GeminiProvider {
    endpoint: Endpoint,
}

impl GeminiProvider {
    pub fn new(client: reqwest::Client, settings: &LlmProviderSettings, timeouts: Timeouts) -> Self {
        let model = settings.model.trim().trim_start_matches("models/").to_owned();
        let url = format!(
            "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
            settings.base_url.trim_end_matches('/'),
            model
        );
        Self {
            endpoint: Endpoint::new(client, url, settings, model, timeouts),
        }
    }

    pub fn body(&self, request: &ChatRequest) -> Value {
        let contents: Vec<Value> = request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "model",
                };
                json!({"role": role, "parts": [{"text": m.content}]})
            })
            .collect();
        json!({
            "systemInstruction": {"parts": [{"text": request.system}]},
            "contents": contents,
            "generationConfig": {"maxOutputTokens": request.max_tokens},
        })
    }
}

#[async_trait]
impl LlmProvider for GeminiProvider {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn model(&self) -> &str {
        self.endpoint.model()
    }

    async fn stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        let auth = |http: reqwest::RequestBuilder, key: &str| http.header("x-goog-api-key", key);
        self.endpoint
            .stream(&self.body(request), auth, GeminiDecoder::default())
            .await
    }
}

#[derive(Debug, Default)]
pub struct GeminiDecoder {
    done: bool,
}

impl Decoder for GeminiDecoder {
    fn decode(&mut self, event: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data = json_data(event)?;
        if let Some((kind, message)) = error_fields(&data["error"]) {
            let code = data["error"]["code"].as_u64().unwrap_or(0);
            return Err(ProviderError::Upstream {
                retryable: code == 429 || code >= 500 || kind == "UNAVAILABLE" || kind == "RESOURCE_EXHAUSTED",
                kind,
                message,
            });
        }
        if let Some(reason) = data["promptFeedback"]["blockReason"].as_str() {
            return Err(ProviderError::Blocked(format!("the question was blocked ({reason})")));
        }
        let candidate = &data["candidates"][0];
        if let Some(parts) = candidate["content"]["parts"].as_array() {
            for part in parts {
                if part["thought"] == true || part.get("functionCall").is_some() {
                    continue;
                }
                if let Some(text) = part["text"].as_str()
                    && !text.is_empty()
                {
                    out.push(StreamEvent::Delta(text.to_owned()));
                }
            }
        }
        let usage = &data["usageMetadata"];
        if usage.is_object() {
            let n = |k: &str| usage[k].as_u64().unwrap_or(0);
            out.push(StreamEvent::Usage {
                input_tokens: n("promptTokenCount"),
                // Thinking tokens are billed as output.
                output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
            });
        }
        match candidate["finishReason"].as_str() {
            None | Some("FINISH_REASON_UNSPECIFIED") => {}
            Some("STOP") => {
                self.done = true;
                out.push(StreamEvent::Done {
                    stop_reason: "end_turn".into(),
                });
            }
            Some("MAX_TOKENS") => {
                self.done = true;
                out.push(StreamEvent::Done {
                    stop_reason: "max_tokens".into(),
                });
            }
            Some(other) => {
                return Err(ProviderError::Blocked(format!("the answer was withheld ({other})")));
            }
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.done
    }
}
