//! `advisor.ask` and `advisor.cancel`, and the generation tasks behind them.
//!
//! `advisor.ask` checks the tier's daily quotas, stores the question and an empty `streaming`
//! answer, replies `{conversation_id, message_id}` at once, and spawns the generation: it publishes
//! `start`, one `delta` per piece of text as the provider streams it, then `done` or `error`, on the
//! user's `advisor:#<uid>` channel through the bus (so a client that reconnects mid-answer recovers
//! the rest from the channel's history), and stores how the answer ended with its usage.
//!
//! A failed request is retried with backoff only while no token has been published: after that a
//! retry would repeat text the client already shows.
//!
//! Answers in progress are known to the node that runs them. `advisor.cancel` on another node (the
//! client reconnected elsewhere) finds the answer still `streaming` in the shared database and
//! announces the cancellation to every node; the one generating it aborts it.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::context::{self, MarketContext};
use super::{ChatMessage, ChatRequest, LlmProvider, ProviderError, StreamEvent};
use crate::backoff::Backoff;
use crate::bus::Bus;
use crate::bus::control::Control;
use crate::bus::users::UserState;
use crate::channels;
use crate::clock::unix_now_ms;
use crate::config::Settings;
use crate::hub::{RpcContext, RpcHandler};
use crate::market::Market;
use crate::portfolio::Portfolio;
use crate::protocol::{ProtoError, Raw};
use crate::store::Store;
use crate::store::advisor::{MessageRole, MessageStatus, NewConversation, NewMessage, Outcome, utc_day};
use crate::tasks::Tasks;
use crate::telemetry::Metrics;

/// Most models one question may name in `models`.
const MAX_REQUESTED_MODELS: usize = 10;

/// An answer being generated on this node.
struct Active {
    user: String,
    cancel: CancellationToken,
}

pub struct Advisor {
    /// Where answers are published (`advisor:#<uid>`).
    bus: Arc<dyn Bus>,
    /// Where cancellations of answers generated on other nodes are announced.
    users: Arc<dyn UserState>,
    store: Store,
    market: Market,
    settings: Arc<Settings>,
    provider: Arc<dyn LlmProvider>,
    /// The users' own machines, for questions about them.
    portfolio: Arc<Portfolio>,
    metrics: Arc<Metrics>,
    /// Answers in progress on this node, by message id.
    active: DashMap<String, Active>,
    /// Generation tasks; shutdown waits for them.
    tasks: Tasks,
    shutdown: CancellationToken,
}

#[derive(Deserialize)]
struct AskRequest {
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    models: Vec<String>,
}

#[derive(Deserialize)]
struct CancelRequest {
    #[serde(default)]
    message_id: String,
}

/// One answer to generate.
struct Job {
    user: String,
    channel: String,
    conversation_id: String,
    message_id: String,
    request: ChatRequest,
    cancel: CancellationToken,
}

/// What a generation has produced so far.
#[derive(Default)]
struct Progress {
    text: String,
    /// Deltas published.
    index: u64,
    input_tokens: u64,
    output_tokens: u64,
}

enum End {
    Done(String),
    Failed(ProviderError),
    Cancelled,
    Shutdown,
}

/// How an answer ended, as it is stored and published.
struct Ending {
    status: MessageStatus,
    stop_reason: Option<String>,
    /// The `error` publication's code and message.
    error: Option<(&'static str, String)>,
}

impl Ending {
    /// The `done` or `error` publication that closes the answer.
    fn payload(&self, message_id: &str, progress: &Progress) -> Value {
        let usage = json!({"input_tokens": progress.input_tokens, "output_tokens": progress.output_tokens});
        match (&self.stop_reason, &self.error) {
            (_, Some((code, message))) => json!({
                "type": "error", "message_id": message_id, "code": code, "message": message, "usage": usage,
            }),
            (stop, None) => json!({
                "type": "done", "message_id": message_id, "usage": usage, "stop_reason": stop,
            }),
        }
    }
}

fn bad_request(message: &str) -> ProtoError {
    ProtoError::bad_request().with_message(message)
}

fn raw(value: Value) -> Result<Option<Raw>, ProtoError> {
    RawValue::from_string(value.to_string())
        .map(Some)
        .map_err(|_| ProtoError::internal())
}

fn internal(e: impl std::fmt::Display) -> ProtoError {
    tracing::error!(error = %e, "advisor: database error");
    ProtoError::internal()
}

/// What the advisor works with, built by `startup`.
pub struct AdvisorParts {
    pub bus: Arc<dyn Bus>,
    pub users: Arc<dyn UserState>,
    pub store: Store,
    pub market: Market,
    pub settings: Arc<Settings>,
    pub provider: Arc<dyn LlmProvider>,
    /// The users' own machines, told to the model when a question is about them.
    pub portfolio: Arc<Portfolio>,
    /// Time to first token and failed requests, by provider.
    pub metrics: Arc<Metrics>,
}

impl Advisor {
    /// Generation tasks run on `tasks` (shutdown waits for them, and ends them).
    pub fn new(parts: AdvisorParts, tasks: &Tasks) -> Arc<Self> {
        Arc::new(Self {
            bus: parts.bus,
            users: parts.users,
            store: parts.store,
            market: parts.market,
            settings: parts.settings,
            provider: parts.provider,
            portfolio: parts.portfolio,
            metrics: parts.metrics,
            active: DashMap::new(),
            tasks: tasks.clone(),
            shutdown: tasks.stop_token().clone(),
        })
    }

    /// `advisor.ask` and `advisor.cancel`, for the hub's RPC table.
    pub fn rpc_handlers(self: &Arc<Self>) -> [(&'static str, Arc<dyn RpcHandler>); 2] {
        [
            ("advisor.ask", Arc::new(AskHandler(self.clone()))),
            ("advisor.cancel", Arc::new(CancelHandler(self.clone()))),
        ]
    }

    /// Abort answers of this node that some node was asked to cancel, until shutdown (a
    /// critical task: `startup` runs it).
    pub fn follow_cancellations(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let advisor = Arc::downgrade(self);
        self.users
            .control()
            .follow("advisor", self.shutdown.clone(), move |message| {
                if let Control::CancelAnswer { message_id } = message
                    && let Some(cancel) = advisor
                        .upgrade()
                        .and_then(|a| a.active.get(&message_id).map(|e| e.cancel.clone()))
                {
                    cancel.cancel();
                }
            })
    }

    pub fn provider(&self) -> &dyn LlmProvider {
        self.provider.as_ref()
    }

    /// Answers being generated on this node.
    pub fn active_answers(&self) -> usize {
        self.active.len()
    }

    async fn ask(self: &Arc<Self>, ctx: &RpcContext, data: Option<&RawValue>) -> Result<Option<Raw>, ProtoError> {
        let req = self.parse_ask(data)?;
        let text = req.text.trim();
        let now = unix_now_ms() as i64;
        let conversation = self.own_conversation(ctx, req.conversation_id.as_deref()).await?;
        let day = utc_day(now);
        self.take_quota(ctx, day).await?;

        match self.start(ctx, conversation, text, &req.models, now).await {
            Ok((conversation_id, message_id)) => {
                raw(json!({"conversation_id": conversation_id, "message_id": message_id}))
            }
            Err(e) => {
                let _ = self.store.return_advisor_message(&ctx.user, day).await;
                Err(e)
            }
        }
    }

    /// Parse `advisor.ask`'s data and check its question (non-empty once trimmed, not too long)
    /// and its model names.
    fn parse_ask(&self, data: Option<&RawValue>) -> Result<AskRequest, ProtoError> {
        let data = data.ok_or_else(|| bad_request("data {text} required"))?;
        let req: AskRequest =
            serde_json::from_str(data.get()).map_err(|e| bad_request(&format!("invalid data: {e}")))?;
        let text = req.text.trim();
        if text.is_empty() {
            return Err(bad_request("text required"));
        }
        let max_chars = self.settings.advisor.max_question_chars;
        if text.chars().count() > max_chars {
            return Err(bad_request(&format!("text longer than {max_chars} characters")));
        }
        if req.models.len() > MAX_REQUESTED_MODELS || req.models.iter().any(|m| m.len() > 64) {
            return Err(bad_request("models: at most 10 names of at most 64 characters"));
        }
        Ok(req)
    }

    /// The conversation a question continues: `None` for a new one, the id when it exists and
    /// belongs to the caller.
    async fn own_conversation(&self, ctx: &RpcContext, id: Option<&str>) -> Result<Option<String>, ProtoError> {
        let Some(id) = id.filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let found = self.store.conversation(id).await.map_err(internal)?;
        match found {
            Some(c) if c.user_id == ctx.user => Ok(Some(c.id)),
            // Someone else's conversation looks like one that does not exist.
            _ => Err(bad_request("unknown conversation_id")),
        }
    }

    /// Check the tier's daily quotas for `day`: tokens used today, then take one more message
    /// (atomically, so concurrent questions cannot both take the last one).
    async fn take_quota(&self, ctx: &RpcContext, day: i64) -> Result<(), ProtoError> {
        let tier = self.settings.tier(ctx.tier);
        if tier.advisor_messages_per_day == 0 {
            return Err(ProtoError::limit_exceeded().with_message("the advisor is not included in your tier"));
        }
        let usage = self.store.advisor_usage(&ctx.user, day).await.map_err(internal)?;
        if (usage.input_tokens + usage.output_tokens) as u64 >= tier.advisor_tokens_per_day {
            return Err(ProtoError::limit_exceeded().with_message(format!(
                "advisor token limit reached: {} tokens per day for your tier; it resets at 00:00 UTC",
                tier.advisor_tokens_per_day
            )));
        }
        let taken = self
            .store
            .take_advisor_message(&ctx.user, day, tier.advisor_messages_per_day.into())
            .await
            .map_err(internal)?;
        if !taken {
            return Err(ProtoError::limit_exceeded().with_message(format!(
                "advisor message limit reached: {} questions per day for your tier; it resets at 00:00 UTC",
                tier.advisor_messages_per_day
            )));
        }
        Ok(())
    }

    /// Store the question, build its request and spawn the generation.
    async fn start(
        self: &Arc<Self>,
        ctx: &RpcContext,
        conversation: Option<String>,
        text: &str,
        models: &[String],
        now: i64,
    ) -> Result<(String, String), ProtoError> {
        let title: String = text.chars().take(80).collect();
        let (conversation_id, new, history) = match conversation {
            Some(id) => {
                let history = self.history(&id).await?;
                (id, None, history)
            }
            None => {
                let new = NewConversation {
                    user_id: &ctx.user,
                    title: &title,
                };
                (uuid::Uuid::new_v4().to_string(), Some(new), Vec::new())
            }
        };
        let message_id = self.store_question(&conversation_id, new, text, now).await?;
        let mut request = self.request(ctx, history, text, models, now);
        if context::about_own_machines(text) {
            self.add_machines(&ctx.user, &mut request, now).await;
        }
        self.spawn_generation(ctx, &conversation_id, &message_id, request);
        Ok((conversation_id, message_id))
    }

    /// The conversation's recent messages the model is shown again: the questions, and the
    /// answers that completed (a cancelled or failed one would mislead it).
    async fn history(&self, conversation_id: &str) -> Result<Vec<ChatMessage>, ProtoError> {
        let earlier = self
            .store
            .recent_messages(conversation_id, self.settings.advisor.history_messages.into())
            .await
            .map_err(internal)?;
        Ok(earlier
            .into_iter()
            .filter(|m| m.status == MessageStatus::Complete || m.role == MessageRole::User)
            .map(|m| ChatMessage {
                role: m.role.into(),
                content: m.content,
            })
            .collect())
    }

    /// Store the question and its empty `streaming` answer (creating the conversation when `new`
    /// is given), returning the answer's message id.
    async fn store_question(
        &self,
        conversation_id: &str,
        new: Option<NewConversation<'_>>,
        text: &str,
        now: i64,
    ) -> Result<String, ProtoError> {
        let question_id = uuid::Uuid::new_v4().to_string();
        let message_id = uuid::Uuid::new_v4().to_string();
        self.store
            .append_messages(
                conversation_id,
                new,
                &[
                    NewMessage {
                        id: &question_id,
                        role: MessageRole::User,
                        content: text,
                        status: MessageStatus::Complete,
                        provider: None,
                        model: None,
                    },
                    NewMessage {
                        id: &message_id,
                        role: MessageRole::Assistant,
                        content: "",
                        status: MessageStatus::Streaming,
                        provider: Some(self.provider.name()),
                        model: Some(self.provider.model()),
                    },
                ],
                now,
            )
            .await
            .map_err(internal)?;
        Ok(message_id)
    }

    /// The provider request for a question: the market context, the history and the tier's
    /// answer length.
    fn request(
        &self,
        ctx: &RpcContext,
        history: Vec<ChatMessage>,
        text: &str,
        models: &[String],
        now: i64,
    ) -> ChatRequest {
        let market = {
            let state = self.market.read();
            MarketContext::build(state.aggregates(), state.label(), now, models, text)
        };
        ChatRequest {
            system: context::system_prompt(&market),
            messages: context::conversation(history, text),
            max_tokens: self.settings.tier(ctx.tier).advisor_max_tokens,
            market,
        }
    }

    /// Tell the model of the user's machines (as `portfolio:#<uid>` has them).
    async fn add_machines(&self, user: &str, request: &mut ChatRequest, now: i64) {
        let snapshot = self.portfolio.current(user).await;
        let machines: Vec<context::OwnMachine> = snapshot["items"]
            .as_object()
            .into_iter()
            .flat_map(|items| items.values())
            .map(|item| context::OwnMachine::from_item(item, now))
            .collect();
        if machines.is_empty() {
            return;
        }
        request.market.machines = machines;
        request.system = context::system_prompt(&request.market);
    }

    /// Register the answer as active on this node (so it can be cancelled) and spawn its
    /// generation.
    fn spawn_generation(
        self: &Arc<Self>,
        ctx: &RpcContext,
        conversation_id: &str,
        message_id: &str,
        request: ChatRequest,
    ) {
        let cancel = CancellationToken::new();
        self.active.insert(
            message_id.to_owned(),
            Active {
                user: ctx.user.clone(),
                cancel: cancel.clone(),
            },
        );
        let job = Job {
            user: ctx.user.clone(),
            channel: channels::advisor(&ctx.user),
            conversation_id: conversation_id.to_owned(),
            message_id: message_id.to_owned(),
            request,
            cancel,
        };
        let advisor = self.clone();
        self.tasks.spawn(async move { advisor.generate(job).await });
    }

    async fn cancel(&self, ctx: &RpcContext, data: Option<&RawValue>) -> Result<Option<Raw>, ProtoError> {
        let data = data.ok_or_else(|| bad_request("data {message_id} required"))?;
        let req: CancelRequest =
            serde_json::from_str(data.get()).map_err(|e| bad_request(&format!("invalid data: {e}")))?;
        if req.message_id.is_empty() {
            return Err(bad_request("message_id required"));
        }
        if let Some(active) = self.active.get(&req.message_id) {
            if active.user != ctx.user {
                return Err(ProtoError::permission_denied().with_message("not your answer"));
            }
            active.cancel.cancel();
            return raw(json!({"cancelled": true}));
        }
        match self.store.message_owner(&req.message_id).await.map_err(internal)? {
            Some(owner) if owner == ctx.user => {
                let streaming = self
                    .store
                    .message(&req.message_id)
                    .await
                    .map_err(internal)?
                    .is_some_and(|m| m.status == MessageStatus::Streaming);
                if !streaming {
                    return raw(json!({"cancelled": false}));
                }
                // Generated by another node: ask every node.
                self.users.cancel_answer(&req.message_id).await.map_err(|e| {
                    tracing::warn!(error = %e, "advisor: announcing a cancellation failed");
                    ProtoError::internal().with_message("bus unavailable, retry")
                })?;
                raw(json!({"cancelled": true}))
            }
            Some(_) => Err(ProtoError::permission_denied().with_message("not your answer")),
            None => Err(bad_request("unknown message_id")),
        }
    }

    /// Generate one answer: publish it as it streams, then store how it ended.
    async fn generate(self: Arc<Self>, job: Job) {
        self.publish(
            &job.channel,
            json!({"type": "start", "message_id": job.message_id, "conversation_id": job.conversation_id}),
        )
        .await;
        let mut progress = Progress::default();
        let end = tokio::select! {
            biased;
            _ = job.cancel.cancelled() => End::Cancelled,
            _ = self.shutdown.cancelled() => End::Shutdown,
            end = self.stream_answer(&job, &mut progress) => end,
        };
        // The provider's stream (and its connection) is dropped by now.
        let ending = self.ending(&end);
        let payload = ending.payload(&job.message_id, &progress);
        if let End::Failed(e) = &end {
            tracing::warn!(provider = self.provider.name(), message_id = %job.message_id, error = %e, "advisor answer failed");
        }
        // Stored and counted before `done` / `error` is published: a client that sees the end
        // finds the answer stored, its usage counted, and nothing left to cancel.
        self.store_answer(&job, &progress, &ending).await;
        self.active.remove(&job.message_id);
        self.publish(&job.channel, payload).await;
    }

    /// How `end` is stored and published: its status, stop reason and error.
    fn ending(&self, end: &End) -> Ending {
        let (status, stop_reason, error) = match end {
            End::Done(stop) => (MessageStatus::Complete, Some(stop.clone()), None),
            End::Cancelled => (MessageStatus::Cancelled, Some("cancelled".to_owned()), None),
            End::Failed(e) => (
                MessageStatus::Failed,
                None,
                Some((e.code(), format!("{}: {e}", self.provider.name()))),
            ),
            End::Shutdown => (
                MessageStatus::Failed,
                None,
                Some(("shutdown", "the hub is shutting down".to_owned())),
            ),
        };
        Ending {
            status,
            stop_reason,
            error,
        }
    }

    /// Store the answer as it ended, with its usage counted for the user's day.
    async fn store_answer(&self, job: &Job, progress: &Progress, ending: &Ending) {
        let outcome = Outcome {
            status: ending.status,
            content: &progress.text,
            input_tokens: progress.input_tokens as i64,
            output_tokens: progress.output_tokens as i64,
            stop_reason: ending.stop_reason.as_deref(),
            error: ending.error.as_ref().map(|(_, m)| m.as_str()),
        };
        let day = utc_day(unix_now_ms() as i64);
        if let Err(e) = self
            .store
            .finish_answer(&job.message_id, &outcome, &job.user, day)
            .await
        {
            tracing::error!(error = %e, "advisor: storing an answer and its usage failed");
        }
    }

    /// Stream the answer, retrying a failure with backoff while nothing was published.
    async fn stream_answer(&self, job: &Job, progress: &mut Progress) -> End {
        let settings = &self.settings.advisor;
        let backoff = Backoff::from_millis(settings.backoff_initial_ms, settings.backoff_max_ms);
        let mut attempt = 0;
        loop {
            match self.attempt(job, progress).await {
                Ok(stop_reason) => return End::Done(stop_reason),
                Err(e) if progress.index == 0 && e.retryable() && attempt < settings.max_retries => {
                    self.metrics.count_advisor_error(self.provider.name());
                    let wait = e
                        .retry_after()
                        .unwrap_or_else(|| backoff.wait(attempt))
                        .min(backoff.max);
                    attempt += 1;
                    tracing::info!(provider = self.provider.name(), attempt, error = %e, wait_ms = wait.as_millis() as u64, "advisor: retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    self.metrics.count_advisor_error(self.provider.name());
                    return End::Failed(e);
                }
            }
        }
    }

    async fn attempt(&self, job: &Job, progress: &mut Progress) -> Result<String, ProviderError> {
        let asked = std::time::Instant::now();
        let mut stream = self.provider.stream(&job.request).await?;
        while let Some(event) = stream.next().await {
            match event? {
                StreamEvent::Delta(text) => {
                    if progress.index == 0 {
                        self.metrics
                            .observe_advisor_first_token(self.provider.name(), asked.elapsed());
                    }
                    self.publish(
                        &job.channel,
                        json!({"type": "delta", "message_id": job.message_id, "index": progress.index, "text": text}),
                    )
                    .await;
                    progress.index += 1;
                    progress.text.push_str(&text);
                }
                StreamEvent::Usage {
                    input_tokens,
                    output_tokens,
                } => {
                    progress.input_tokens = input_tokens;
                    progress.output_tokens = output_tokens;
                }
                StreamEvent::Done { stop_reason } => return Ok(stop_reason),
            }
        }
        Err(ProviderError::EndedEarly)
    }

    async fn publish(&self, channel: &str, payload: Value) {
        let Ok(data) = RawValue::from_string(payload.to_string()) else {
            return;
        };
        if let Err(e) = self.bus.publish_json(channel, &data).await {
            tracing::warn!(channel, error = %e, "advisor publish failed");
        }
    }
}

struct AskHandler(Arc<Advisor>);

#[async_trait]
impl RpcHandler for AskHandler {
    async fn call(&self, ctx: &RpcContext, data: Option<&RawValue>) -> Result<Option<Raw>, ProtoError> {
        self.0.ask(ctx, data).await
    }
}

struct CancelHandler(Arc<Advisor>);

#[async_trait]
impl RpcHandler for CancelHandler {
    async fn call(&self, ctx: &RpcContext, data: Option<&RawValue>) -> Result<Option<Raw>, ProtoError> {
        self.0.cancel(ctx, data).await
    }
}
