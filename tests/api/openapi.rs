//! The OpenAPI document: served, OpenAPI 3.1, with both ways to authenticate, and in step with
//! the router: every documented operation exists (an unauthenticated call gets the documented
//! JSON 401, not the router's 404 or 405), and the routes the dashboard and SDKs use are in it.
//! (tests/openapi/run.sh checks the answers against the document with schemathesis.)

use axum::http::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[tokio::test]
async fn the_document_describes_the_routes_the_hub_serves() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["api_key"]["bearerFormat"], "gsk_…");

    let paths = doc["paths"].as_object().unwrap();
    for route in [
        "/api/v1/keys",
        "/api/v1/token",
        "/api/v1/market/snapshot",
        "/api/v1/market/history",
        "/api/v1/alerts/rules/{id}",
        "/api/v1/alerts/events",
        "/api/v1/me/email",
        "/api/v1/push/subscriptions",
        "/api/v1/portfolio",
        "/api/v1/portfolio/machines/{id}/price",
        "/api/v1/conversations/{id}/messages",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
    let mut checked = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if op
                .get("security")
                .is_none_or(|s| s.as_array().is_none_or(Vec::is_empty))
            {
                continue;
            }
            assert!(
                op["responses"]["401"]["content"]["application/json"].is_object(),
                "{method} {path} documents its 401"
            );
            let url = app.url(&path.replace("{id}", "x"));
            let resp = app
                .http
                .request(method.to_uppercase().parse().unwrap(), url)
                .send()
                .await
                .unwrap();
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} authenticated operations");
}
