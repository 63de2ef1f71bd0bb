//! Critical background tasks are watched: one that ends or panics stops the node with an error
//! (the process exits non-zero) and marks it unready, never a frozen market behind a green
//! `/readyz`.

use crate::helpers::*;

#[tokio::test]
async fn a_single_node_stops_when_any_critical_task_dies() {
    let killed = kill_each_critical_task(|s| s.ingest.simulated.enabled = true).await;
    for expected in [
        "market-runner",
        "poller:simulated",
        "webhook-outbox",
        "portfolio",
        "user-heartbeat",
        "limiter-pruning",
        "control:hub",
        "control:advisor",
    ] {
        assert!(
            killed.iter().any(|k| k == expected),
            "{expected} is watched: {killed:?}"
        );
    }
}

#[tokio::test]
async fn readiness_reports_the_critical_tasks() {
    let app = spawn_app().await;
    app.wait_ready().await;
    let v: serde_json::Value = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["checks"]["tasks"], "ok");
    assert_eq!(v["dead_tasks"], serde_json::json!([]));
}
