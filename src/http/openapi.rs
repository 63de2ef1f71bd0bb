//! The OpenAPI 3.1 document of `/api/v1`, built from the handlers' `#[utoipa::path]`
//! annotations and the types they take and answer, so it cannot describe a route the router
//! does not serve: [`api_router`] registers each route through the same annotation that
//! documents it. Served at `GET /api/v1/openapi.json`.
//!
//! Every operation behind a token also answers the errors any authenticated request can meet
//! (401, 403 for a key without the route's scope, 429 over the tier's limit, 503 when the
//! database cannot answer); [`CommonErrors`] adds them in one place rather than on each route.

use std::sync::Arc;

use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, advisor, alerts, email, keys, limits, market, portfolio, push, server_api};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GPUScout Hub API",
        description = "REST API of the GPUScout hub: the market's snapshot and history, alert rules and \
            fired alerts, alert delivery (e-mail, browser push), a host's own machines, advisor \
            conversations, and API keys. Live data flows over the WebSocket (`/connection/websocket`, \
            the JSON form of the Centrifugo client protocol), described in docs/protocol.md.",
        license(name = "MIT", identifier = "MIT"),
    ),
    components(schemas(super::bodies::ErrorBody)),
    tags(
        (name = "keys", description = "API keys and the token exchange"),
        (name = "market", description = "The market's snapshot and history"),
        (name = "alerts", description = "Alert rules and fired alerts"),
        (name = "delivery", description = "Where alerts go: e-mail and browser push"),
        (name = "portfolio", description = "A host's own machines"),
        (name = "advisor", description = "Advisor conversations"),
        (name = "development", description = "Development login (auth.dev_mode only)"),
    )
)]
struct ApiDoc;

/// The two ways to authenticate: a connection token (JWT) or an API key, both as
/// `Authorization: Bearer`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut jwt = Http::new(HttpAuthScheme::Bearer);
        jwt.bearer_format = Some("JWT".into());
        jwt.description = Some("A connection token: from your identity provider, or `POST /api/v1/token`.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(jwt));
        let mut key = Http::new(HttpAuthScheme::Bearer);
        key.bearer_format = Some("gsk_…".into());
        key.description = Some("An API key (`gsk_` and 43 base62 characters), limited to its scopes.".into());
        components.add_security_scheme("api_key", SecurityScheme::Http(key));
    }
}

/// The error answers every authenticated operation can give, and 429 for every operation.
struct CommonErrors;

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build(),
    )
}

fn add_errors(op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut common = vec![(
        "429",
        "Over the rate limit: `Retry-After` and `RateLimit-*` headers say when to retry",
    )];
    if secured {
        common.extend([
            ("401", "No token or key, or one that is invalid, expired or revoked"),
            ("403", "An API key without this route's scope, or a limit of the tier"),
            ("503", "The database cannot answer now; retry"),
        ]);
    }
    for (status, description) in common {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
}

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut Document) {
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_errors(op);
            }
        }
    }
}

/// Every `/api/v1` route with its documentation, and the document itself.
pub fn api_router(state: &AppState) -> axum::Router<AppState> {
    let open = OpenApiRouter::new()
        .routes(routes!(keys::exchange))
        .routes(routes!(email::confirm))
        .routes(routes!(email::unsubscribe))
        .routes(routes!(push::vapid_public_key))
        .routes(routes!(server_api::dev_token))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limits::per_ip));
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(market::snapshot))
        .routes(routes!(market::history))
        .routes(routes!(alerts::create_rule, alerts::list_rules))
        .routes(routes!(alerts::get_rule, alerts::update_rule, alerts::delete_rule))
        .routes(routes!(alerts::test_rule))
        .routes(routes!(alerts::list_events))
        .routes(routes!(alerts::ack_event))
        .routes(routes!(email::set, email::get, email::delete))
        .routes(routes!(push::subscribe, push::list))
        .routes(routes!(push::unsubscribe))
        .routes(routes!(portfolio::get_portfolio))
        .routes(routes!(portfolio::link_account, portfolio::list_accounts))
        .routes(routes!(portfolio::unlink_account))
        .routes(routes!(portfolio::add_machine))
        .routes(routes!(portfolio::update_machine, portfolio::delete_machine))
        .routes(routes!(portfolio::apply_price))
        .routes(routes!(portfolio::changes))
        .routes(routes!(advisor::conversations))
        .routes(routes!(advisor::messages))
        .merge(open)
        .split_for_parts();
    let mut doc = doc;
    // Over the routes, which the document has only now.
    SecuritySchemes.modify(&mut doc);
    CommonErrors.modify(&mut doc);
    let json: Arc<str> = doc.to_json().unwrap_or_default().into();
    router.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let json = json.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    json.to_string(),
                )
                    .into_response()
            }
        }),
    )
}
