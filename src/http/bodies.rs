//! Answer bodies several routes share, as the OpenAPI document names them: the error body of
//! every failure, and a channel's snapshot.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{Object, ObjectBuilder, Schema, Type};

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "not_found", "message": "no such rule"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`unauthorized`, `insufficient_scope`, `not_found`,
    /// `invalid_rule`, `rate_limited`, `database`, …).
    pub code: String,
    /// What was wrong, in words.
    pub message: String,
    /// Present on unexpected failures: the id under which the hub logged the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A channel's snapshot, as the first publication of a subscription carries it (its `items` by
/// channel in docs/protocol.md); `GET /api/v1/portfolio` and the free tier's market snapshot
/// answer one.
#[derive(Serialize)]
#[serde(transparent)]
pub struct ChannelSnapshot(pub serde_json::Value);

impl utoipa::PartialSchema for ChannelSnapshot {
    fn schema() -> RefOr<Schema> {
        let int = || Object::with_type(Type::Integer);
        ObjectBuilder::new()
            .description(Some(
                "A channel snapshot: its items by key, and the feed's position (`seq`, `checksum`).",
            ))
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["snapshot"])),
            )
            .property("channel", Object::with_type(Type::String))
            .property("seq", int())
            .property("checksum", int())
            .property("ts", int())
            .property("items", Object::with_type(Type::Object))
            .required("type")
            .required("channel")
            .required("seq")
            .required("checksum")
            .required("items")
            .into()
    }
}

impl ToSchema for ChannelSnapshot {}
