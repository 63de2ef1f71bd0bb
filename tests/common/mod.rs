//! What both test binaries (`api`, `cluster`) share: the hub under test and its helpers, and the
//! local fakes of what cannot be reached here (500.farm, Vast.ai, RunPod, the LLM APIs), each
//! replaying captured payloads.

pub mod fakes;
pub mod helpers;
pub mod llm_fake;
pub mod postgres;

/// Serve `app` on a free port of 127.0.0.1 until the test ends; its `http://` base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}
