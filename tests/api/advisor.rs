//! The advisor end to end: a fake provider replays captured SSE streams byte for byte → the hub's
//! provider client → `advisor:#<uid>` publications → a WebSocket client; conversations in the
//! database and over REST.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gpuscout_hub::config::{AdvisorProviderKind, Settings};
use gpuscout_hub::tier::Tier;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::llm_fake::{LlmServer, Reply};

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The answer text of a captured stream, read from its `data:` lines (independently of the hub's
/// SSE parser and decoders).
fn expected_text(provider: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for line in text.split('\n') {
        let Some(data) = line.trim_end_matches('\r').strip_prefix("data:") else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        match provider {
            "anthropic" => {
                if v["type"] == "content_block_delta" && v["delta"]["type"] == "text_delta" {
                    out.push_str(v["delta"]["text"].as_str().unwrap());
                }
            }
            "gemini" => {
                for part in v["candidates"][0]["content"]["parts"].as_array().into_iter().flatten() {
                    if part["thought"] != true
                        && let Some(t) = part["text"].as_str()
                    {
                        out.push_str(t);
                    }
                }
            }
            _ => {
                if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    out.push_str(t);
                }
            }
        }
    }
    out
}

fn use_provider(s: &mut Settings, provider: &str, url: &str) {
    let p = match provider {
        "anthropic" => {
            s.advisor.provider = AdvisorProviderKind::Anthropic;
            &mut s.advisor.anthropic
        }
        "gemini" => {
            s.advisor.provider = AdvisorProviderKind::Gemini;
            &mut s.advisor.gemini
        }
        _ => {
            s.advisor.provider = AdvisorProviderKind::Openai;
            &mut s.advisor.openai
        }
    };
    p.base_url = url.to_owned();
    p.api_key = SecretString::from("test-key");
    p.model = "test-model".into();
    s.advisor.backoff_initial_ms = 20;
    s.advisor.backoff_max_ms = 50;
}

/// A simulated market that polls once, so figures stay put during a test.
fn steady_market(s: &mut Settings) {
    s.ingest.simulated.enabled = true;
    s.ingest.simulated.seed = 7;
    s.ingest.simulated.poll_interval_ms = 600_000;
}

async fn wait_for_market(app: &TestApp) -> Value {
    let token = app.token("market-reader", Tier::Professional);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, snapshot) = get(app, &token, "/api/v1/market/snapshot").await;
        assert_eq!(status, 200);
        if snapshot["models"].as_array().is_some_and(|m| !m.is_empty()) {
            return snapshot;
        }
        assert!(Instant::now() < deadline, "the simulated market never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let resp = app
        .http
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("hub reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn ask(ws: &mut WsClient, data: Value) -> Value {
    ws.request(json!({"rpc": {"method": "advisor.ask", "data": data}}))
        .await
}

/// Ask and return `(conversation_id, message_id)`.
pub(crate) async fn ask_ok(ws: &mut WsClient, data: Value) -> (String, String) {
    let r = ask(ws, data).await;
    let d = &r["rpc"]["data"];
    assert!(d["message_id"].is_string(), "advisor.ask failed: {r}");
    (
        d["conversation_id"].as_str().unwrap().to_owned(),
        d["message_id"].as_str().unwrap().to_owned(),
    )
}

/// One answer as a client saw it.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) text: String,
    indices: Vec<u64>,
    /// Channel offsets of every publication of the answer.
    offsets: Vec<u64>,
    started: bool,
    end: Value,
}

/// Read publications of `message_id` on `advisor:#<user>` until its `done` or `error`.
async fn read_answer(ws: &mut WsClient, user: &str, message_id: &str, answer: &mut Answer) {
    let channel = format!("advisor:#{user}");
    loop {
        let v = ws.json().await;
        let push = &v["push"];
        if push["channel"] != channel.as_str() {
            continue;
        }
        if apply(push["pub"].clone(), message_id, answer) {
            return;
        }
    }
}

/// Apply one publication to `answer`; true when it ended the answer.
fn apply(publication: Value, message_id: &str, answer: &mut Answer) -> bool {
    let data = &publication["data"];
    if data["message_id"] != message_id {
        return false;
    }
    answer.offsets.push(publication["offset"].as_u64().unwrap());
    match data["type"].as_str().unwrap() {
        "start" => answer.started = true,
        "delta" => {
            answer.indices.push(data["index"].as_u64().unwrap());
            answer.text.push_str(data["text"].as_str().unwrap());
        }
        "done" | "error" => {
            answer.end = data.clone();
            return true;
        }
        other => panic!("unexpected publication type {other}"),
    }
    false
}

pub(crate) async fn answer_of(ws: &mut WsClient, user: &str, message_id: &str) -> Answer {
    let mut answer = Answer::default();
    read_answer(ws, user, message_id, &mut answer).await;
    assert!(answer.started, "start comes first");
    let n = answer.indices.len() as u64;
    assert_eq!(answer.indices, (0..n).collect::<Vec<_>>(), "delta indices 0, 1, 2, …");
    answer
}

async fn stored(app: &TestApp, user: &str, conversation_id: &str) -> Vec<Value> {
    let (status, body) = get(
        app,
        &app.token(user, Tier::Professional),
        &format!("/api/v1/conversations/{conversation_id}/messages"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().cloned().unwrap_or_default()
}

/// For each provider: the client's concatenated deltas are the captured answer, and it is stored.
async fn streams_and_stores(provider: &str, fixture_path: &str, gap_ms: u64) {
    let server = LlmServer::start().await;
    let bytes = fixture(fixture_path);
    let expected = expected_text(provider, &bytes);
    assert!(!expected.is_empty());
    server.fake.push(Reply::replay(&bytes, Duration::from_millis(gap_ms)));
    let app = spawn_app_with(|s| use_provider(s, provider, &server.url)).await;
    let (mut ws, _) = app.connect("7", Tier::Professional).await;
    let (conversation_id, message_id) = ask_ok(&mut ws, json!({"text": "What should I charge for an RTX 4090?"})).await;
    let answer = answer_of(&mut ws, "7", &message_id).await;
    assert_eq!(answer.text, expected, "{provider}: {fixture_path}");
    assert_eq!(answer.end["type"], "done", "{}", answer.end);
    assert!(
        answer.end["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{}",
        answer.end
    );
    let messages = stored(&app, "7", &conversation_id).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "What should I charge for an RTX 4090?");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["status"], "complete");
    assert_eq!(messages[1]["content"], expected.as_str());
    assert_eq!(messages[1]["provider"], provider);
    assert_eq!(messages[1]["model"], "test-model");
    assert_eq!(messages[1]["stop_reason"], answer.end["stop_reason"]);
    assert_eq!(messages[1]["output_tokens"], answer.end["usage"]["output_tokens"]);
    assert_eq!(server.fake.seen().len(), 1);
}

#[tokio::test]
async fn anthropic_answers_stream_token_by_token_and_are_stored() {
    streams_and_stores("anthropic", "anthropic/pai_thinking_part_stream.sse", 1).await;
    streams_and_stores("anthropic", "anthropic/sdk_basic_response.sse", 5).await;
}

#[tokio::test]
async fn gemini_answers_stream_token_by_token_and_are_stored() {
    streams_and_stores(
        "gemini",
        "gemini/vertexai-testdata_googleai_streaming-success-basic-reply-long.sse",
        1,
    )
    .await;
    streams_and_stores("gemini", "gemini/pai_gemini-2.5-flash_stream_usage.sse", 5).await;
}

#[tokio::test]
async fn openai_compatible_answers_stream_token_by_token_and_are_stored() {
    streams_and_stores("openai", "openai_compat/pai_openai_gpt-4o-mini_stream_text.sse", 5).await;
    streams_and_stores("openai", "openai_compat/pai_crusoe_vllm_stream.sse", 2).await;
}

#[tokio::test]
async fn requests_speak_each_wire_format_and_carry_the_market_and_the_conversation() {
    for provider in ["anthropic", "gemini", "openai"] {
        let server = LlmServer::start().await;
        let first = match provider {
            "anthropic" => fixture("anthropic/sdk_basic_response.sse"),
            "gemini" => fixture("gemini/vertexai-testdata_googleai_streaming-success-basic-reply-short.sse"),
            _ => fixture("openai_compat/pai_openai_gpt-4o-mini_stream_text.sse"),
        };
        server.fake.push(Reply::per_event(&first, Duration::from_millis(2)));
        server.fake.push(Reply::per_event(&first, Duration::from_millis(2)));
        let app = spawn_app_with(|s| {
            use_provider(s, provider, &server.url);
            steady_market(s);
        })
        .await;
        wait_for_market(&app).await;
        let (mut ws, _) = app.connect("11", Tier::Individual).await;
        let (conversation, m1) = ask_ok(&mut ws, json!({"text": "Is $0.45 right for my RTX 4090?"})).await;
        let first_answer = answer_of(&mut ws, "11", &m1).await.text;
        let (same, m2) = ask_ok(
            &mut ws,
            json!({"conversation_id": conversation, "text": "And for an A100?", "models": ["A100 SXM4"]}),
        )
        .await;
        assert_eq!(same, conversation);
        answer_of(&mut ws, "11", &m2).await;

        let seen = server.fake.seen();
        assert_eq!(seen.len(), 2);
        let (first_req, second) = (&seen[0], &seen[1]);
        let header = |s: &crate::llm_fake::Seen, k: &str| {
            s.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        // (system prompt, messages as (role, text)) of each request, per wire format.
        let turns = |b: &Value| -> (String, Vec<(String, String)>) {
            match provider {
                "anthropic" => (
                    b["system"].as_str().unwrap().to_owned(),
                    b["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| {
                            (
                                m["role"].as_str().unwrap().into(),
                                m["content"].as_str().unwrap().into(),
                            )
                        })
                        .collect(),
                ),
                "gemini" => (
                    b["systemInstruction"]["parts"][0]["text"].as_str().unwrap().to_owned(),
                    b["contents"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| {
                            (
                                m["role"].as_str().unwrap().into(),
                                m["parts"][0]["text"].as_str().unwrap().into(),
                            )
                        })
                        .collect(),
                ),
                _ => {
                    let all: Vec<(String, String)> = b["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| {
                            (
                                m["role"].as_str().unwrap().into(),
                                m["content"].as_str().unwrap().into(),
                            )
                        })
                        .collect();
                    assert_eq!(all[0].0, "system");
                    (all[0].1.clone(), all[1..].to_vec())
                }
            }
        };
        match provider {
            "anthropic" => {
                assert_eq!(first_req.path, "/v1/messages");
                assert_eq!(header(first_req, "x-api-key"), "test-key");
                assert_eq!(header(first_req, "anthropic-version"), "2023-06-01");
                assert_eq!(first_req.body["stream"], true);
                assert_eq!(first_req.body["model"], "test-model");
                assert_eq!(
                    first_req.body["max_tokens"], 1024,
                    "the individual tier's advisor_max_tokens"
                );
            }
            "gemini" => {
                assert_eq!(first_req.path, "/v1beta/models/test-model:streamGenerateContent");
                assert_eq!(first_req.query, "alt=sse");
                assert_eq!(header(first_req, "x-goog-api-key"), "test-key");
                assert_eq!(first_req.body["generationConfig"]["maxOutputTokens"], 1024);
            }
            _ => {
                assert_eq!(first_req.path, "/v1/chat/completions");
                assert_eq!(header(first_req, "authorization"), "Bearer test-key");
                assert_eq!(first_req.body["stream"], true);
                assert_eq!(first_req.body["stream_options"]["include_usage"], true);
                assert_eq!(first_req.body["max_tokens"], 1024);
            }
        }
        let assistant = if provider == "gemini" { "model" } else { "assistant" };
        let (system, messages) = turns(&first_req.body);
        assert!(
            system.contains("RTX 4090 (rtx-4090)"),
            "{provider}: the market of the model asked about: {system}"
        );
        assert_eq!(
            messages,
            vec![("user".to_owned(), "Is $0.45 right for my RTX 4090?".to_owned())]
        );
        let (system, messages) = turns(&second.body);
        assert!(
            system.contains("(a100-sxm4)"),
            "{provider}: `models` names the market: {system}"
        );
        assert_eq!(
            messages,
            vec![
                ("user".to_owned(), "Is $0.45 right for my RTX 4090?".to_owned()),
                (assistant.to_owned(), first_answer.clone()),
                ("user".to_owned(), "And for an A100?".to_owned()),
            ],
            "{provider}: earlier turns come from the database"
        );
        let (_, list) = get(&app, &app.token("11", Tier::Individual), "/api/v1/conversations").await;
        assert_eq!(list["conversations"].as_array().unwrap().len(), 1, "{list}");
        assert_eq!(list["conversations"][0]["id"], conversation.as_str());
        assert_eq!(list["conversations"][0]["title"], "Is $0.45 right for my RTX 4090?");
        assert_eq!(stored(&app, "11", &conversation).await.len(), 4);
    }
}

#[tokio::test]
async fn error_fixtures_end_in_an_error_publication_and_a_failed_message() {
    let cases = [
        (
            "anthropic",
            Reply::Error {
                status: 404,
                body: String::from_utf8(fixture("anthropic/pai_error_404_not_found.json")).unwrap(),
            },
            "provider_error",
            "not_found_error: model: claude-sonet-4-5",
        ),
        (
            "gemini",
            Reply::Error {
                status: 400,
                body: String::from_utf8(fixture("gemini/vertexai-testdata_googleai_unary-failure-api-key.json"))
                    .unwrap(),
            },
            "provider_error",
            "API key not valid. Please pass a valid API key.",
        ),
        (
            "gemini",
            Reply::replay(
                &fixture("gemini/vertexai-testdata_googleai_streaming-failure-prompt-blocked-safety.sse"),
                Duration::from_millis(1),
            ),
            "blocked",
            "SAFETY",
        ),
        (
            "gemini",
            Reply::replay(
                &fixture("gemini/vertexai-testdata_googleai_streaming-failure-recitation-no-content.sse"),
                Duration::from_millis(1),
            ),
            "blocked",
            "RECITATION",
        ),
        (
            "openai",
            Reply::replay(
                &fixture("openai_compat/pai_groq_stream_event_error_tool_use_failed.sse"),
                Duration::from_millis(0),
            ),
            "provider_error",
            "tool_use_failed: Tool call validation failed",
        ),
        (
            "openai",
            Reply::Error {
                status: 404,
                body: String::from_utf8(fixture("openai_compat/pai_openai_error_404_model_not_found.json")).unwrap(),
            },
            "provider_error",
            "The model `gpt-5.2-proo` does not exist",
        ),
    ];
    for (provider, reply, code, message) in cases {
        let server = LlmServer::start().await;
        server.fake.push(reply);
        let app = spawn_app_with(|s| use_provider(s, provider, &server.url)).await;
        let (mut ws, _) = app.connect("5", Tier::Free).await;
        let (conversation_id, message_id) = ask_ok(&mut ws, json!({"text": "price my 4090"})).await;
        let answer = answer_of(&mut ws, "5", &message_id).await;
        let end = &answer.end;
        assert_eq!(end["type"], "error", "{provider} {message}: {end}");
        assert_eq!(end["code"], code, "{end}");
        let text = end["message"].as_str().unwrap();
        assert!(text.starts_with(&format!("{provider}: ")), "{text}");
        assert!(
            text.contains(message),
            "{provider}: `{text}` should contain `{message}`"
        );
        let messages = stored(&app, "5", &conversation_id).await;
        assert_eq!(messages[1]["status"], "failed");
        assert_eq!(messages[1]["error"], text);
        assert_eq!(messages[1]["content"], answer.text.as_str());
        assert_eq!(
            server.fake.seen().len(),
            1,
            "{provider} {message}: a refusal is not retried"
        );
    }
}

#[tokio::test]
async fn failures_are_retried_only_before_the_first_token() {
    let server = LlmServer::start().await;
    let basic = fixture("anthropic/sdk_basic_response.sse");
    // Overloaded, then a stream cut before its first event: both retried; then the answer.
    server.fake.push(Reply::Error {
        status: 529,
        body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.into(),
    });
    server.fake.push(Reply::replay(&basic[..40], Duration::from_millis(1)));
    server.fake.push(Reply::replay(&basic, Duration::from_millis(1)));
    let app = spawn_app_with(|s| use_provider(s, "anthropic", &server.url)).await;
    let (mut ws, _) = app.connect("3", Tier::Free).await;
    let (_, message_id) = ask_ok(&mut ws, json!({"text": "hello"})).await;
    let answer = answer_of(&mut ws, "3", &message_id).await;
    assert_eq!(answer.text, "Hello there!");
    assert_eq!(answer.end["stop_reason"], "end_turn");
    assert_eq!(server.fake.seen().len(), 3);

    // Cut after text reached the client: no retry, an error.
    let cut = String::from_utf8(basic.clone()).unwrap();
    let cut = &cut[..cut.find("event: content_block_stop").unwrap()];
    server
        .fake
        .push(Reply::replay(cut.as_bytes(), Duration::from_millis(1)));
    server.fake.push(Reply::replay(&basic, Duration::from_millis(1)));
    let (conversation_id, message_id) = ask_ok(&mut ws, json!({"text": "hello again"})).await;
    let answer = answer_of(&mut ws, "3", &message_id).await;
    assert_eq!(answer.text, "Hello there!");
    assert_eq!(answer.end["type"], "error");
    assert_eq!(answer.end["code"], "stream_ended_early");
    assert_eq!(answer.end["message"], "anthropic: stream ended early");
    assert_eq!(server.fake.seen().len(), 4, "no retry once text was sent");
    let messages = stored(&app, "3", &conversation_id).await;
    assert_eq!(messages[1]["status"], "failed");
    assert_eq!(messages[1]["content"], "Hello there!");
}

#[tokio::test]
async fn a_silent_provider_times_out() {
    let server = LlmServer::start().await;
    let basic = String::from_utf8(fixture("anthropic/sdk_basic_response.sse")).unwrap();
    let head = &basic[..basic.find("event: content_block_start").unwrap()];
    server.fake.push(Reply::Stall {
        head: head.to_owned().into(),
    });
    let app = spawn_app_with(|s| {
        use_provider(s, "anthropic", &server.url);
        s.advisor.idle_timeout_ms = 300;
        s.advisor.max_retries = 0;
    })
    .await;
    let (mut ws, _) = app.connect("4", Tier::Free).await;
    let started = Instant::now();
    let (_, message_id) = ask_ok(&mut ws, json!({"text": "hello"})).await;
    let answer = answer_of(&mut ws, "4", &message_id).await;
    assert_eq!(answer.end["code"], "timeout", "{}", answer.end);
    assert_eq!(answer.end["usage"]["input_tokens"], 11, "usage so far is kept");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

/// A slow Gemini answer: one event every `gap`.
fn slow_gemini(gap_ms: u64) -> (Reply, String) {
    let bytes = fixture("gemini/vertexai-testdata_googleai_streaming-success-basic-reply-long.sse");
    let expected = expected_text("gemini", &bytes);
    (Reply::per_event(&bytes, Duration::from_millis(gap_ms)), expected)
}

#[tokio::test]
async fn cancel_stops_the_upstream_request() {
    let server = LlmServer::start().await;
    let (reply, expected) = slow_gemini(100);
    server.fake.push(reply);
    let app = spawn_app_with(|s| use_provider(s, "gemini", &server.url)).await;
    let (mut ws, _) = app.connect("9", Tier::Professional).await;
    let (conversation_id, message_id) = ask_ok(&mut ws, json!({"text": "tell me everything"})).await;
    let mut answer = Answer::default();
    while answer.indices.len() < 2 {
        let push = ws.push().await;
        assert!(!apply(push["pub"].clone(), &message_id, &mut answer), "ended early");
    }
    let r = ws
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["rpc"]["data"]["cancelled"], true, "{r}");
    read_answer(&mut ws, "9", &message_id, &mut answer).await;
    assert_eq!(answer.end["type"], "done");
    assert_eq!(answer.end["stop_reason"], "cancelled");
    assert!(answer.text.len() < expected.len());
    assert!(expected.starts_with(&answer.text));
    // The upstream server sees the connection closed.
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.fake.hung_up() == 0 {
        assert!(Instant::now() < deadline, "the provider never saw the request end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.fake.completed(), 0);
    let messages = stored(&app, "9", &conversation_id).await;
    assert_eq!(messages[1]["status"], "cancelled");
    assert_eq!(messages[1]["stop_reason"], "cancelled");
    assert_eq!(messages[1]["content"], answer.text.as_str());
    // Cancelling a finished answer is harmless.
    let r = ws
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["rpc"]["data"]["cancelled"], false, "{r}");
}

#[tokio::test]
async fn another_user_cannot_cancel_or_read() {
    let server = LlmServer::start().await;
    let (reply, expected) = slow_gemini(5);
    server.fake.push(reply);
    let app = spawn_app_with(|s| use_provider(s, "gemini", &server.url)).await;
    let (mut alice, _) = app.connect("alice", Tier::Professional).await;
    let (mut mallory, _) = app.connect("mallory", Tier::Professional).await;
    let (conversation_id, message_id) = ask_ok(&mut alice, json!({"text": "my prices?"})).await;
    let r = mallory
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["error"]["code"], 103, "{r}");
    let r = mallory
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": "no-such-id"}}}))
        .await;
    assert_eq!(r["error"]["code"], 107, "{r}");
    let r = ask(
        &mut mallory,
        json!({"conversation_id": conversation_id, "text": "and mine?"}),
    )
    .await;
    assert_eq!(r["error"]["code"], 107, "another user's conversation: {r}");
    // Mallory cannot subscribe to Alice's answers either.
    let r = mallory.subscribe("advisor:#alice").await;
    assert_eq!(r["error"]["code"], 103, "{r}");

    let answer = answer_of(&mut alice, "alice", &message_id).await;
    assert_eq!(answer.text, expected, "Alice's answer was not disturbed");

    let mallory_token = app.token("mallory", Tier::Professional);
    let (status, body) = get(
        &app,
        &mallory_token,
        &format!("/api/v1/conversations/{conversation_id}/messages"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = get(&app, &mallory_token, "/api/v1/conversations").await;
    assert_eq!(status, 200);
    assert_eq!(body["conversations"], json!([]));
    let resp = app.http.get(app.url("/api/v1/conversations")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[tokio::test]
async fn a_client_that_reconnects_mid_answer_gets_the_rest_through_recovery() {
    let server = LlmServer::start().await;
    let (reply, expected) = slow_gemini(20);
    server.fake.push(reply);
    let app = spawn_app_with(|s| use_provider(s, "gemini", &server.url)).await;
    let (mut ws, reply) = app.connect("12", Tier::Individual).await;
    let epoch = reply["connect"]["subs"]["advisor:#12"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, message_id) = ask_ok(&mut ws, json!({"text": "long answer please"})).await;
    let mut answer = Answer::default();
    while answer.indices.len() < 3 {
        let push = ws.push().await;
        assert!(!apply(push["pub"].clone(), &message_id, &mut answer));
    }
    let last = *answer.offsets.last().unwrap();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut ws = app.raw_ws().await;
    let r = ws
        .request(json!({"connect": {
            "token": app.token("12", Tier::Individual),
            "subs": {"advisor:#12": {"recover": true, "offset": last, "epoch": epoch}}
        }}))
        .await;
    let sub = &r["connect"]["subs"]["advisor:#12"];
    assert_eq!(sub["recovered"], true, "{r}");
    let recovered = sub["publications"].as_array().unwrap();
    assert!(!recovered.is_empty(), "publications made while away are recovered");
    let mut ended = false;
    for p in recovered {
        ended |= apply(p.clone(), &message_id, &mut answer);
    }
    if !ended {
        read_answer(&mut ws, "12", &message_id, &mut answer).await;
    }
    let n = answer.indices.len() as u64;
    assert_eq!(answer.indices, (0..n).collect::<Vec<_>>(), "no delta lost or repeated");
    assert_eq!(answer.text, expected);
    assert_eq!(answer.end["type"], "done");
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test]
async fn market_publications_keep_flowing_while_a_slow_answer_streams() {
    let server = LlmServer::start().await;
    let (reply, _) = slow_gemini(150);
    server.fake.push(reply);
    let app = spawn_app_with(|s| use_provider(s, "gemini", &server.url)).await;
    let (mut ws, _) = app.connect("13", Tier::Professional).await;
    ws.subscribe("gpu:rtx-4090").await;
    let (_, message_id) = ask_ok(&mut ws, json!({"text": "slowly please"})).await;

    let publisher = {
        let http = app.http.clone();
        let url = app.url("/api/publish");
        tokio::spawn(async move {
            for n in 0..40u64 {
                http.post(&url)
                    .header("X-API-Key", API_KEY)
                    .json(&json!({"channel": "gpu:rtx-4090", "data": {"n": n, "sent_ms": now_ms()}}))
                    .send()
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let mut delays = Vec::new();
    let mut deltas = 0;
    let mut answer = Answer::default();
    while delays.len() < 40 {
        let v = ws.json().await;
        let push = &v["push"];
        if push["channel"] == "gpu:rtx-4090" {
            delays.push(now_ms().saturating_sub(push["pub"]["data"]["sent_ms"].as_u64().unwrap()));
        } else if push["channel"] == "advisor:#13" {
            assert!(
                !apply(push["pub"].clone(), &message_id, &mut answer),
                "the answer is still streaming"
            );
            deltas += 1;
        }
    }
    publisher.await.unwrap();
    delays.sort_unstable();
    let p50 = delays[delays.len() / 2];
    let max = *delays.last().unwrap();
    println!(
        "market publications during a slow answer: {} received, delay p50 {p50} ms, max {max} ms ({deltas} answer publications meanwhile)",
        delays.len()
    );
    assert!(deltas >= 3, "the answer streamed meanwhile");
    assert!(max < 250, "a market publication waited {max} ms");
    let r = ws
        .request(json!({"rpc": {"method": "advisor.cancel", "data": {"message_id": message_id}}}))
        .await;
    assert_eq!(r["rpc"]["data"]["cancelled"], true);
}

#[tokio::test]
async fn the_offline_advisor_answers_from_the_live_market() {
    let app = spawn_app_with(steady_market).await;
    let snapshot = wait_for_market(&app).await;
    let rtx = snapshot["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "rtx-4090")
        .expect("the simulated market has RTX 4090s")
        .clone();
    let (mut ws, _) = app.connect("21", Tier::Free).await;
    let (conversation_id, message_id) = ask_ok(
        &mut ws,
        json!({"text": "I rent my RTX 4090 out at $0.45 an hour. Is that right?"}),
    )
    .await;
    let answer = answer_of(&mut ws, "21", &message_id).await;
    assert!(answer.indices.len() > 10, "streamed in small deltas");
    let text = &answer.text;
    assert!(text.contains("offline advisor"), "{text}");
    let median = rtx["price_available"]["median"].as_f64().unwrap();
    let rented = (rtx["utilisation"].as_f64().unwrap() * 100.0).round();
    assert!(
        text.contains(&format!(
            "RTX 4090: median ${median:.2}/h available, {rented:.0}% rented"
        )),
        "{text}"
    );
    let pct = ((0.45 / median - 1.0) * 100.0).round();
    let comparison = if pct.abs() < 3.0 {
        "at the median".to_owned()
    } else if pct > 0.0 {
        format!("{pct:.0}% above the median")
    } else {
        format!("{:.0}% below the median", -pct)
    };
    assert!(text.contains(&comparison), "expected `{comparison}` in {text}");
    assert_eq!(answer.end["stop_reason"], "end_turn");
    let messages = stored(&app, "21", &conversation_id).await;
    assert_eq!(messages[1]["provider"], "offline");
    assert_eq!(messages[1]["content"], text.as_str());
}

#[tokio::test]
async fn quotas_refuse_the_message_over_the_limit() {
    let app = spawn_app_with(|s| {
        s.advisor.offline_delta_interval_ms = 0;
        let free = s.tiers.get_mut(&Tier::Free).unwrap();
        free.advisor_messages_per_day = 2;
        let individual = s.tiers.get_mut(&Tier::Individual).unwrap();
        individual.advisor_tokens_per_day = 1;
    })
    .await;
    let (mut ws, _) = app.connect("31", Tier::Free).await;
    for _ in 0..2 {
        let (_, message_id) = ask_ok(&mut ws, json!({"text": "RTX 4090?"})).await;
        answer_of(&mut ws, "31", &message_id).await;
    }
    let r = ask(&mut ws, json!({"text": "one more"})).await;
    assert_eq!(r["error"]["code"], 106, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("advisor message limit reached: 2 questions per day"),
        "{message}"
    );
    // Refused questions are not stored.
    let (_, list) = get(&app, &app.token("31", Tier::Free), "/api/v1/conversations").await;
    assert_eq!(list["conversations"].as_array().unwrap().len(), 2);

    // Tokens: the first answer uses up the day's budget of 1.
    let (mut ws, _) = app.connect("32", Tier::Individual).await;
    let (_, message_id) = ask_ok(&mut ws, json!({"text": "RTX 4090?"})).await;
    let answer = answer_of(&mut ws, "32", &message_id).await;
    assert!(answer.end["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let r = ask(&mut ws, json!({"text": "again"})).await;
    assert_eq!(r["error"]["code"], 106, "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("token limit"), "{r}");

    // Bad requests name the problem.
    for (data, needle) in [
        (json!({"text": "  "}), "text required"),
        (json!({"text": "x".repeat(5000)}), "longer than"),
        (json!({"txt": 1, "text": 5}), "invalid data"),
    ] {
        let r = ask(&mut ws, data).await;
        assert_eq!(r["error"]["code"], 107, "{r}");
        assert!(r["error"]["message"].as_str().unwrap().contains(needle), "{r}");
    }
}

/// Added latency per token, upstream write → client receipt, with `streams` answers at once.
/// `cargo test --release --test api advisor::token_latency -- --ignored --nocapture`
/// (`ADVISOR_LATENCY_STREAMS=1000x100` for 1,000 streams of a token every 100 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn token_latency() {
    let configs: Vec<(usize, usize, u64)> = std::env::var("ADVISOR_LATENCY_STREAMS")
        .ok()
        .map(|v| {
            // `STREAMSxGAP_MS`, comma-separated, e.g. `1000x100,100x20`.
            v.split(',')
                .filter_map(|c| {
                    let (n, gap) = c.trim().split_once('x').unwrap_or((c.trim(), "20"));
                    Some((n.parse().ok()?, 100, gap.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(1, 300, 10), (100, 100, 20), (1000, 100, 100)]);
    for (streams, tokens, gap_ms) in configs {
        let server = LlmServer::start().await;
        for _ in 0..streams {
            server.fake.push(Reply::Timestamps {
                tokens,
                gap: Duration::from_millis(gap_ms),
            });
        }
        let app = spawn_app_with(|s| {
            use_provider(s, "openai", &server.url);
            s.database.max_connections = 16;
        })
        .await;
        let mut clients = Vec::new();
        for i in 0..streams {
            let user = format!("lat{i}");
            let (ws, _) = app.connect(&user, Tier::Enterprise).await;
            clients.push((user, ws));
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, (user, mut ws)) in clients.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                // Questions arrive over half a second, not all in the same millisecond.
                tokio::time::sleep(Duration::from_micros(500_000 * i as u64 / streams as u64)).await;
                let (_, message_id) = ask_ok(&mut ws, json!({"text": "tokens"})).await;
                let channel = format!("advisor:#{user}");
                let mut latencies_us = Vec::new();
                loop {
                    let v = ws.json().await;
                    let data = &v["push"]["pub"]["data"];
                    if v["push"]["channel"] != channel.as_str() || data["message_id"] != message_id.as_str() {
                        continue;
                    }
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros();
                    match data["type"].as_str().unwrap() {
                        "delta" => {
                            for stamp in data["text"].as_str().unwrap().split_whitespace() {
                                let sent: u128 = stamp.parse().unwrap();
                                latencies_us.push(now.saturating_sub(sent) as u64);
                            }
                        }
                        "done" => return latencies_us,
                        "error" => panic!("answer failed: {data}"),
                        _ => {}
                    }
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed();
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
        println!(
            "advisor token latency: {streams} concurrent streams x {tokens} tokens ({gap_ms} ms apart): {} tokens in {:.1} s, added latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            all.len(),
            elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(1.0),
        );
        assert_eq!(all.len(), streams * tokens);
    }
}
