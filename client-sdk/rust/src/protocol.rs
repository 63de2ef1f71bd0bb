//! Wire types of the client protocol: the JSON form of the Centrifugo client protocol v2.
//!
//! Owns commands, replies, pushes, error codes and close codes, and the frame codec (several JSON
//! objects per WebSocket text frame, joined by `\n`). Knows nothing about sockets or the bus.
//! The hub and this crate's client use these same types, each in its own direction: the hub
//! decodes [`Command`]s and encodes [`Reply`]s, the client the reverse.
//!
//! Fields that carry application data (`data`) are raw JSON (`RawValue`), never re-encoded: the hub
//! forwards what publishers wrote, and serialises every publication exactly once.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Raw JSON carried through unchanged.
pub type Raw = Box<RawValue>;

/// One command from a client. Exactly one of the request fields is set; an object with none of
/// them and no `id` is a pong (`{}`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Command {
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<ChannelRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<ChannelRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<ChannelRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<SendRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshRequest>,
}

/// What a decoded command asks for.
#[derive(Debug)]
pub enum Method<'a> {
    Pong,
    Connect(&'a ConnectRequest),
    Subscribe(&'a SubscribeRequest),
    Unsubscribe(&'a UnsubscribeRequest),
    Publish(&'a PublishRequest),
    Presence,
    PresenceStats(&'a ChannelRequest),
    History,
    Ping,
    Send,
    Rpc(&'a RpcRequest),
    Refresh(&'a RefreshRequest),
    SubRefresh(&'a SubRefreshRequest),
}

impl Command {
    /// The single request this command carries; `None` when it carries several or an unknown one.
    pub fn method(&self) -> Option<Method<'_>> {
        let candidates = [
            self.connect.as_ref().map(Method::Connect),
            self.subscribe.as_ref().map(Method::Subscribe),
            self.unsubscribe.as_ref().map(Method::Unsubscribe),
            self.publish.as_ref().map(Method::Publish),
            self.presence.as_ref().map(|_| Method::Presence),
            self.presence_stats.as_ref().map(Method::PresenceStats),
            self.history.as_ref().map(|_| Method::History),
            self.ping.as_ref().map(|_| Method::Ping),
            self.send.as_ref().map(|_| Method::Send),
            self.rpc.as_ref().map(Method::Rpc),
            self.refresh.as_ref().map(Method::Refresh),
            self.sub_refresh.as_ref().map(Method::SubRefresh),
        ];
        let mut present = candidates.into_iter().flatten();
        match (present.next(), present.next(), self.id) {
            (None, _, 0) => Some(Method::Pong),
            (Some(m), None, _) => Some(m),
            _ => None,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    pub subs: std::collections::HashMap<String, SubscribeRecovery>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// Recovery position sent for a server-side subscription in `connect.subs`.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeRecovery {
    #[serde(skip_serializing_if = "is_false")]
    pub recover: bool,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeRequest {
    pub channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(skip_serializing_if = "is_false")]
    pub recover: bool,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
    /// Map-subscription type of newer protocol revisions; only the default (0) is served.
    #[serde(rename = "type", skip_serializing_if = "is_zero_i32")]
    pub kind: i32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribeRequest {
    pub channel: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishRequest {
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelRequest {
    pub channel: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SendRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcRequest {
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshRequest {
    pub token: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshRequest {
    pub channel: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// Result of `connect`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectResult {
    pub client: String,
    pub version: String,
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub pong: bool,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub subs: std::collections::BTreeMap<String, SubscribeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

/// Result of `subscribe` (and of a server-side subscription inside `connect`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeResult {
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
    /// Echo of the request's `type` (map subscriptions); omitted for plain subscriptions.
    #[serde(rename = "type", skip_serializing_if = "is_zero_i32")]
    pub kind: i32,
}

/// A publication: inside a subscribe result (recovered) or a `pub` push.
#[derive(Debug, Serialize, Deserialize)]
pub struct Publication {
    pub data: Raw,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RefreshResult {
    pub client: String,
    pub version: String,
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubRefreshResult {
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Raw>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceStatsResult {
    pub num_clients: u32,
    pub num_users: u32,
}

/// An empty object: the `unsubscribe` result, a `ping` command.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub struct Empty {}

/// Something the server sends on its own: a publication, a server-side unsubscribe, a message.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Push {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[serde(rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publication: Option<Publication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribePush>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessagePush>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct UnsubscribePush {
    pub code: u32,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessagePush {
    pub data: Raw,
}

/// One JSON object of a server frame: a reply to the command with the same `id` (exactly one
/// result or `error`), or a `push` (no `id`). A server ping is the empty object `{}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Reply {
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtoError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Empty>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsResult>,
}

impl Reply {
    /// Whether this is the empty object: a server ping, or a client's pong.
    pub fn is_ping(&self) -> bool {
        self.id == 0 && self.push.is_none() && self.error.is_none()
    }
}

/// The result a server reply carries: how the hub names what it sends back.
#[derive(Debug)]
pub enum ReplyBody<'a> {
    Error(&'a ProtoError),
    Connect(ConnectResult),
    Subscribe(SubscribeResult),
    Unsubscribe(Empty),
    Rpc(RpcResult),
    Refresh(RefreshResult),
    SubRefresh(SubRefreshResult),
    PresenceStats(PresenceStatsResult),
}

impl ReplyBody<'_> {
    /// The reply to command `id` carrying this result.
    pub fn into_reply(self, id: u32) -> Reply {
        let mut reply = Reply {
            id,
            ..Default::default()
        };
        match self {
            ReplyBody::Error(e) => reply.error = Some(e.clone()),
            ReplyBody::Connect(r) => reply.connect = Some(r),
            ReplyBody::Subscribe(r) => reply.subscribe = Some(r),
            ReplyBody::Unsubscribe(r) => reply.unsubscribe = Some(r),
            ReplyBody::Rpc(r) => reply.rpc = Some(r),
            ReplyBody::Refresh(r) => reply.refresh = Some(r),
            ReplyBody::SubRefresh(r) => reply.sub_refresh = Some(r),
            ReplyBody::PresenceStats(r) => reply.presence_stats = Some(r),
        }
        reply
    }
}

/// A protocol error, sent as `{"id":N,"error":{...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    pub code: u32,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

impl ProtoError {
    fn new(code: u32, message: &str, temporary: bool) -> Self {
        Self {
            code,
            message: message.to_owned(),
            temporary,
        }
    }
    pub fn internal() -> Self {
        Self::new(100, "internal server error", true)
    }
    pub fn unauthorized() -> Self {
        Self::new(101, "unauthorized", false)
    }
    pub fn unknown_channel() -> Self {
        Self::new(102, "unknown channel", false)
    }
    pub fn permission_denied() -> Self {
        Self::new(103, "permission denied", false)
    }
    pub fn method_not_found() -> Self {
        Self::new(104, "method not found", false)
    }
    pub fn already_subscribed() -> Self {
        Self::new(105, "already subscribed", false)
    }
    pub fn limit_exceeded() -> Self {
        Self::new(106, "limit exceeded", false)
    }
    pub fn bad_request() -> Self {
        Self::new(107, "bad request", false)
    }
    pub fn not_available() -> Self {
        Self::new(108, "not available", false)
    }
    pub fn token_expired() -> Self {
        Self::new(109, "token expired", false)
    }
    pub fn too_many_requests() -> Self {
        Self::new(111, "too many requests", true)
    }
    pub fn unrecoverable_position() -> Self {
        Self::new(112, "unrecoverable position", false)
    }
    /// Same code, a more precise message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

/// A disconnect: a WebSocket close frame with one of the protocol's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("disconnect {code}: {reason}")]
pub struct Disconnect {
    pub code: u16,
    pub reason: &'static str,
}

impl Disconnect {
    pub const SHUTDOWN: Self = Self::new(3001, "shutdown");
    pub const SERVER_ERROR: Self = Self::new(3004, "internal server error");
    pub const EXPIRED: Self = Self::new(3005, "connection expired");
    pub const SLOW: Self = Self::new(3008, "slow");
    pub const WRITE_ERROR: Self = Self::new(3009, "write error");
    pub const INSUFFICIENT_STATE: Self = Self::new(3010, "insufficient state");
    pub const NO_PONG: Self = Self::new(3012, "no pong");
    pub const TOO_MANY_REQUESTS: Self = Self::new(3013, "too many requests");
    pub const INVALID_TOKEN: Self = Self::new(3500, "invalid token");
    pub const TOKEN_REVOKED: Self = Self::new(3500, "token revoked");
    pub const BAD_REQUEST: Self = Self::new(3501, "bad request");
    pub const FORCE_DISCONNECT: Self = Self::new(3503, "force disconnect");
    pub const CONNECTION_LIMIT: Self = Self::new(3504, "connection limit");
    pub const CHANNEL_LIMIT: Self = Self::new(3505, "channel limit");
    /// WebSocket 1009: a frame over the configured size limit.
    pub const MESSAGE_TOO_BIG: Self = Self::new(1009, "message too big");

    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }

    /// Whether a well-behaved client reconnects after this disconnect.
    pub fn reconnect(&self) -> bool {
        (3000..3500).contains(&self.code)
    }
}

/// Split a text frame into its JSON objects (`\n`-separated); blank lines are skipped.
pub fn split_frame(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
}

/// Decode one command. Malformed JSON is a protocol violation (the caller closes with 3501).
pub fn decode_command(line: &str) -> Result<Command, serde_json::Error> {
    serde_json::from_str(line)
}

/// Decode one object of a server frame (a reply, a push, or `{}`, a ping).
pub fn decode_reply(line: &str) -> Result<Reply, serde_json::Error> {
    serde_json::from_str(line)
}

/// Serialise a command to one line of JSON.
pub fn encode_command(command: &Command) -> String {
    // Serialising our own types cannot fail: no maps with non-string keys, no custom serialisers.
    serde_json::to_string(command).unwrap_or_else(|_| "{}".to_owned())
}

/// Serialise a reply to one line of JSON.
pub fn encode_reply(id: u32, body: ReplyBody<'_>) -> Vec<u8> {
    // Serialising our own types cannot fail: no maps with non-string keys, no custom serialisers.
    serde_json::to_vec(&body.into_reply(id)).unwrap_or_else(|_| b"{}".to_vec())
}

/// Serialise an error reply.
pub fn encode_error(id: u32, error: &ProtoError) -> Vec<u8> {
    encode_reply(id, ReplyBody::Error(error))
}

/// The `pub` push for a publication, built once per publication and shared by every subscriber.
pub fn encode_publication_push(channel: &str, offset: u64, data: &str) -> Vec<u8> {
    let mut out = String::with_capacity(channel.len() + data.len() + 64);
    out.push_str(r#"{"push":{"channel":"#);
    push_json_string(&mut out, channel);
    out.push_str(r#","pub":{"data":"#);
    out.push_str(data);
    if offset > 0 {
        let _ = write!(out, r#","offset":{offset}"#);
    }
    out.push_str("}}}");
    out.into_bytes()
}

/// The `unsubscribe` push telling a client the server removed a subscription.
pub fn encode_unsubscribe_push(channel: &str, code: u32, reason: &str) -> Vec<u8> {
    let mut out = String::with_capacity(channel.len() + reason.len() + 64);
    out.push_str(r#"{"push":{"channel":"#);
    push_json_string(&mut out, channel);
    let _ = write!(out, r#","unsubscribe":{{"code":{code},"reason":"#);
    push_json_string(&mut out, reason);
    out.push_str("}}}");
    out.into_bytes()
}

/// The `message` push (asynchronous message to one connection).
pub fn encode_message_push(data: &str) -> Vec<u8> {
    format!(r#"{{"push":{{"message":{{"data":{data}}}}}}}"#).into_bytes()
}

/// A server ping (and the shape of a client pong).
pub const PING: &[u8] = b"{}";

fn push_json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON requires (including control characters).
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// Compact a JSON document so it contains no raw newline (clients split frames on `\n`).
pub fn compact_json(raw: &RawValue) -> Result<Raw, serde_json::Error> {
    let text = raw.get();
    if !text.contains('\n') && !text.contains('\r') {
        return Ok(raw.to_owned());
    }
    let value: serde_json::Value = serde_json::from_str(text)?;
    RawValue::from_string(serde_json::to_string(&value)?)
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_is_pong_and_id_without_method_is_invalid() {
        let pong = decode_command("{}").unwrap();
        assert!(matches!(pong.method(), Some(Method::Pong)));
        let bad = decode_command(r#"{"id":3}"#).unwrap();
        assert!(bad.method().is_none());
        let two = decode_command(r#"{"id":3,"rpc":{"method":"x"},"refresh":{}}"#).unwrap();
        assert!(two.method().is_none());
    }

    #[test]
    fn frames_split_on_newlines_in_order() {
        let frame = "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\r\n\n";
        let parts: Vec<_> = split_frame(frame).collect();
        assert_eq!(parts.len(), 2);
        assert!(parts[1].contains("\"id\":2"));
    }

    #[test]
    fn publication_push_embeds_raw_json_and_escapes_channel() {
        let push = encode_publication_push("a\"b", 7, r#"{"x":1}"#);
        let v: serde_json::Value = serde_json::from_slice(&push).unwrap();
        assert_eq!(v["push"]["channel"], "a\"b");
        assert_eq!(v["push"]["pub"]["data"]["x"], 1);
        assert_eq!(v["push"]["pub"]["offset"], 7);
    }

    #[test]
    fn hand_written_pushes_decode_as_the_typed_push() {
        let line = encode_publication_push("gpu:rtx-4090", 12, r#"{"seq":3}"#);
        let reply = decode_reply(std::str::from_utf8(&line).unwrap()).unwrap();
        let push = reply.push.expect("a push");
        assert_eq!(push.channel, "gpu:rtx-4090");
        let publication = push.publication.expect("a pub");
        assert_eq!((publication.offset, publication.data.get()), (12, r#"{"seq":3}"#));
        let typed = Reply {
            push: Some(Push {
                channel: "gpu:rtx-4090".into(),
                publication: Some(Publication {
                    data: RawValue::from_string(r#"{"seq":3}"#.into()).unwrap(),
                    offset: 12,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(serde_json::to_vec(&typed).unwrap(), line);

        let unsub = encode_unsubscribe_push("alerts:#7", 2500, "resubscribe");
        let push = decode_reply(std::str::from_utf8(&unsub).unwrap())
            .unwrap()
            .push
            .unwrap();
        let u = push.unsubscribe.unwrap();
        assert_eq!(
            (push.channel.as_str(), u.code, u.reason.as_str()),
            ("alerts:#7", 2500, "resubscribe")
        );
        let message = encode_message_push(r#"{"a":1}"#);
        let push = decode_reply(std::str::from_utf8(&message).unwrap())
            .unwrap()
            .push
            .unwrap();
        assert_eq!(push.message.unwrap().data.get(), r#"{"a":1}"#);
        assert!(decode_reply("{}").unwrap().is_ping());
    }

    #[test]
    fn commands_round_trip_compactly() {
        let command = Command {
            id: 2,
            subscribe: Some(SubscribeRequest {
                channel: "market:summary".into(),
                recover: true,
                offset: 9,
                epoch: "e1".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let line = encode_command(&command);
        assert_eq!(
            line,
            r#"{"id":2,"subscribe":{"channel":"market:summary","recover":true,"offset":9,"epoch":"e1"}}"#
        );
        let back = decode_command(&line).unwrap();
        let Some(Method::Subscribe(req)) = back.method() else {
            panic!("not a subscribe")
        };
        assert_eq!((req.offset, req.epoch.as_str()), (9, "e1"));
        assert_eq!(encode_command(&Command::default()), "{}");
    }

    #[test]
    fn replies_round_trip() {
        let bytes = encode_reply(
            3,
            ReplyBody::Subscribe(SubscribeResult {
                recoverable: true,
                epoch: "ab".into(),
                offset: 5,
                publications: vec![Publication {
                    data: RawValue::from_string("[1]".into()).unwrap(),
                    offset: 5,
                }],
                ..Default::default()
            }),
        );
        let reply = decode_reply(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(reply.id, 3);
        assert!(!reply.is_ping());
        let sub = reply.subscribe.unwrap();
        assert_eq!((sub.epoch.as_str(), sub.offset, sub.publications.len()), ("ab", 5, 1));
    }

    #[test]
    fn error_reply_shape() {
        let bytes = encode_error(4, &ProtoError::permission_denied());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], 4);
        assert_eq!(v["error"]["code"], 103);
        assert_eq!(v["error"]["message"], "permission denied");
        let tmp = encode_error(5, &ProtoError::too_many_requests());
        let v: serde_json::Value = serde_json::from_slice(&tmp).unwrap();
        assert_eq!(v["error"]["temporary"], true);
    }

    #[test]
    fn compact_removes_newlines() {
        let raw = RawValue::from_string("{\n  \"a\": [1,\n 2]\n}".into()).unwrap();
        assert_eq!(compact_json(&raw).unwrap().get(), r#"{"a":[1,2]}"#);
    }
}
