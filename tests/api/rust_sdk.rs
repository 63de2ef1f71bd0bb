//! The Rust SDK (`gpuscout-client`) against a real hub: market books with verified checksums,
//! reconnect with recovery through a connection cut, RPC errors, server-side subscriptions, token
//! refresh by callback, refusals and close codes that forbid reconnecting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use gpuscout_client::book::Applied;
use gpuscout_client::{BookEvent, Client, Error, Event, Options, State, SubEvent, Subscription, TokenSource};
use gpuscout_hub::auth::TokenVerifier;
use gpuscout_hub::tier::Tier;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const WAIT: Duration = Duration::from_secs(10);

fn options(app: &TestApp, addr: std::net::SocketAddr, user: &str, tier: Tier) -> Options {
    let mut o = Options::new(
        format!("ws://{addr}/connection/websocket"),
        TokenSource::Static(app.token(user, tier)),
    );
    o.min_reconnect_delay = Duration::from_millis(100);
    o.max_reconnect_delay = Duration::from_millis(400);
    o
}

async fn next_event(sub: &mut Subscription) -> SubEvent {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a subscription event in time")
        .expect("client open")
}

/// The next publication's payload, skipping `Subscribed`.
async fn next_publication(sub: &mut Subscription) -> (Value, u64) {
    loop {
        match next_event(sub).await {
            SubEvent::Publication { data, offset } => return (serde_json::from_str(data.get()).unwrap(), offset),
            SubEvent::Subscribed { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A TCP proxy in front of the hub that can cut every connection and refuse new ones for a while.
struct Proxy {
    addr: std::net::SocketAddr,
    cut: Arc<Notify>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(Notify::new());
        let refusing = Arc::new(AtomicBool::new(false));
        let (cut_c, refusing_c) = (cut.clone(), refusing.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refusing_c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = cut_c.clone();
                tokio::spawn(async move {
                    let Ok(mut hub) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut hub) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Self { addr, cut, refusing }
    }

    /// Drop every open connection and refuse new ones until `resume`.
    fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn resume(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn market_book_follows_the_simulated_market_with_verified_checksums() {
    let app = spawn_app_with(|s| {
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 200;
    })
    .await;
    let client = Client::connect(options(&app, app.addr, "book", Tier::Professional));
    let mut book = client.market_book("market:summary");
    let first = tokio::time::timeout(WAIT, book.next()).await.unwrap().unwrap();
    assert!(
        matches!(first, BookEvent::Update(Applied::Snapshot { .. })),
        "{first:?}"
    );
    assert!(book.book().items().len() > 50, "the simulated market has the 88 models");
    let mut deltas = 0;
    while deltas < 3 {
        match tokio::time::timeout(WAIT, book.next()).await.unwrap().unwrap() {
            BookEvent::Update(Applied::Delta { .. }) => deltas += 1,
            BookEvent::Update(Applied::Snapshot { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A second, fresh book at the same seq holds exactly the same items.
    let check = Client::connect(options(&app, app.addr, "book2", Tier::Professional));
    let mut other = check.market_book("market:summary");
    tokio::time::timeout(WAIT, other.next()).await.unwrap().unwrap();
    while other.book().seq() != book.book().seq() {
        let (a, b) = (book.book().seq(), other.book().seq());
        if a < b {
            tokio::time::timeout(WAIT, book.next()).await.unwrap().unwrap();
        } else {
            tokio::time::timeout(WAIT, other.next()).await.unwrap().unwrap();
        }
    }
    assert_eq!(book.book().items(), other.book().items());
    assert_eq!(book.book().checksum(), other.book().checksum());
    client.close();
    check.close();
}

#[tokio::test]
async fn reconnects_through_a_cut_and_recovers_what_it_missed_once_and_in_order() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr).await;
    let client = Client::connect(options(&app, proxy.addr, "rec", Tier::Enterprise));
    let mut events = client.events();
    let mut sub = client.subscribe("gpu:rtx-4090");
    assert!(matches!(next_event(&mut sub).await, SubEvent::Subscribed { .. }));
    app.publish("gpu:rtx-4090", json!({"n": 1})).await;
    let (data, first_offset) = next_publication(&mut sub).await;
    assert_eq!(data["n"], 1);

    proxy.cut();
    loop {
        let e = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if let Event::Disconnected { reconnect, .. } = e {
            assert!(reconnect, "a transport failure reconnects");
            break;
        }
    }
    for n in 2..=6 {
        app.publish("gpu:rtx-4090", json!({"n": n})).await;
    }
    proxy.resume();
    match next_event(&mut sub).await {
        SubEvent::Subscribed {
            recovered,
            was_recovering,
            ..
        } => assert!(recovered && was_recovering, "recovered from its position"),
        other => panic!("unexpected {other:?}"),
    }
    let mut offsets = vec![first_offset];
    for n in 2..=6 {
        let (data, offset) = next_publication(&mut sub).await;
        assert_eq!(data["n"], n, "missed publications in order");
        offsets.push(offset);
    }
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "offsets {offsets:?}");
    // Live again, and nothing delivered twice.
    app.publish("gpu:rtx-4090", json!({"n": 7})).await;
    let (data, _) = next_publication(&mut sub).await;
    assert_eq!(data["n"], 7);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err()
    );
    client.close();
}

#[tokio::test]
async fn rpc_results_and_errors_and_refused_subscriptions() {
    let app = spawn_app().await;
    let client = Client::connect(options(&app, app.addr, "rpc", Tier::Free));
    client.connected().await.unwrap();
    match client.rpc("no.such.method", &json!({})).await {
        Err(Error::Protocol(e)) => assert_eq!(e.code, 104),
        other => panic!("unexpected {other:?}"),
    }
    let mut denied = client.subscribe("offers:all");
    match next_event(&mut denied).await {
        SubEvent::Error(e) => assert_eq!(e.code, 103, "free tier cannot read every offer"),
        other => panic!("unexpected {other:?}"),
    }
    // The connection is unharmed: the advisor answers over the same socket.
    let mut advisor = client.server_subscription("advisor:#rpc");
    let ask = client.rpc("advisor.ask", &json!({"text": "RTX 4090?"})).await.unwrap();
    assert!(ask["message_id"].is_string(), "{ask}");
    let mut kinds = Vec::new();
    loop {
        let (data, _) = next_publication(&mut advisor).await;
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        kinds.push(kind.clone());
        if kind == "done" || kind == "error" {
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("start"));
    assert_eq!(kinds.last().map(String::as_str), Some("done"), "{kinds:?}");
    client.close();
}

#[tokio::test]
async fn server_side_alerts_channel_is_recovered_after_a_cut() {
    let app = spawn_app().await;
    let proxy = Proxy::start(app.addr).await;
    let client = Client::connect(options(&app, proxy.addr, "al", Tier::Individual));
    let mut alerts = client.server_subscription("alerts:#al");
    client.connected().await.unwrap();
    assert!(matches!(next_event(&mut alerts).await, SubEvent::Subscribed { .. }));
    app.publish("alerts:#al", json!({"alert": 1})).await;
    assert_eq!(next_publication(&mut alerts).await.0["alert"], 1);
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.publish("alerts:#al", json!({"alert": 2})).await;
    proxy.resume();
    match next_event(&mut alerts).await {
        SubEvent::Subscribed { recovered, .. } => assert!(recovered),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(next_publication(&mut alerts).await.0["alert"], 2);
    client.close();
}

#[tokio::test]
async fn token_callback_refreshes_before_expiry_and_a_revoked_token_stays_closed() {
    let app = spawn_app().await;
    let verifier = Arc::new(TokenVerifier::new(&app.settings.auth).unwrap());
    let calls = Arc::new(AtomicU32::new(0));
    let (calls_c, verifier_c) = (calls.clone(), verifier.clone());
    let token = TokenSource::callback(move || {
        calls_c.fetch_add(1, Ordering::SeqCst);
        let t = verifier_c.mint("cb", Tier::Individual, 3).map_err(|e| e.to_string());
        async move { t }
    });
    let mut o = Options::new(format!("ws://{}/connection/websocket", app.addr), token);
    o.min_reconnect_delay = Duration::from_millis(100);
    let client = Client::connect(o);
    let id = client.connected().await.unwrap();
    // Three-second tokens: without refreshes the hub would close the connection (3005).
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert_eq!(client.state(), State::Connected { client: id }, "the same connection");
    assert!(
        calls.load(Ordering::SeqCst) >= 3,
        "refreshed: {} tokens",
        calls.load(Ordering::SeqCst)
    );
    client.close();

    // A revoked token: closed with 3500, and the client does not reconnect.
    let token = verifier.mint("rv", Tier::Individual, 600).unwrap();
    let jti = crate::helpers::jti_of(&token);
    let mut o = Options::new(
        format!("ws://{}/connection/websocket", app.addr),
        TokenSource::Static(token),
    );
    o.min_reconnect_delay = Duration::from_millis(50);
    let client = Client::connect(o);
    client.connected().await.unwrap();
    let mut events = client.events();
    let _ = app.api("revoke_token", json!({"uid": jti})).await;
    loop {
        if let Event::Disconnected { code, reconnect, .. } =
            tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap()
        {
            assert_eq!((code, reconnect), (3500, false));
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        matches!(client.state(), State::Closed { code: 3500, .. }),
        "{:?}",
        client.state()
    );
}

#[tokio::test]
async fn a_replaced_subscription_dropped_late_leaves_its_successor_alone() {
    let app = spawn_app().await;
    let client = Client::connect(options(&app, app.addr, "rep", Tier::Enterprise));
    client.connected().await.unwrap();
    let mut first = client.subscribe("gpu:h100-sxm");
    assert!(matches!(next_event(&mut first).await, SubEvent::Subscribed { .. }));
    // A second subscription on the same channel replaces the first, which is dropped after.
    let mut second = client.subscribe("gpu:h100-sxm");
    assert!(matches!(next_event(&mut second).await, SubEvent::Subscribed { .. }));
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.publish("gpu:h100-sxm", json!({"n": 1})).await;
    assert_eq!(
        next_publication(&mut second).await.0["n"],
        1,
        "the successor still receives"
    );
    client.close();
}

#[tokio::test]
async fn server_side_publications_wait_for_a_listener_that_registers_late() {
    let app = spawn_app().await;
    let client = Client::connect(options(&app, app.addr, "late", Tier::Individual));
    client.connected().await.unwrap();
    // Published while nobody listens on the client's side.
    app.publish("alerts:#late", json!({"alert": "early"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut alerts = client.server_subscription("alerts:#late");
    assert!(matches!(next_event(&mut alerts).await, SubEvent::Subscribed { .. }));
    assert_eq!(next_publication(&mut alerts).await.0["alert"], "early");
    // A listener dropped and another registered: the channel keeps flowing to the new one.
    drop(alerts);
    app.publish("alerts:#late", json!({"alert": "between"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = client.server_subscription("alerts:#late");
    assert_eq!(next_publication(&mut again).await.0["alert"], "between");
    client.close();
}

// A self-signed certificate for localhost and 127.0.0.1 (openssl req -x509, P-256, ten years; an
// end-entity certificate: CA:FALSE, serverAuth), for the TLS terminator below.
const TLS_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBvTCCAWOgAwIBAgIUUYbNsOk+bhIEfi/mFH8c94SiGEMwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI2MTIwMjE2NTIyMVoXDTM2MTEyOTE2
NTIyMVowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEQjElfcoZc2q62ribcMa9E9fgQ+kYDkihNNx5BqFMejJPZveDcppNX+0E
PvAqUaV9oJgaHYK1qHpeG1eCa4n2CqOBkjCBjzAdBgNVHQ4EFgQUhzb7cgqCe/cu
xJF3ZeAZxrQmKv0wHwYDVR0jBBgwFoAUhzb7cgqCe/cuxJF3ZeAZxrQmKv0wGgYD
VR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/
BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMAoGCCqGSM49BAMCA0gAMEUCIQC4
HpxFbHtPYOmABrArhar4quL8g6Gnqesv5TVDgUiEcwIga6ibFgbEImH7W+bFHbcZ
vbkX36x2+7HHLQXDX9t9hYQ=
-----END CERTIFICATE-----
";
const TLS_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgreXKE8KqDvuYBJLb
Z7oSYYdCS+sskgSEx8iswLj4/ZChRANCAARCMSV9yhlzarrauJtwxr0T1+BD6RgO
SKE03HkGoUx6Mk9m94Nymk1f7QQ+8CpRpX2gmBodgrWoel4bV4JrifYK
-----END PRIVATE KEY-----
";

/// A TLS terminator on loopback in front of the hub (what nginx or a load balancer does in a
/// deployment); returns its port.
async fn tls_terminator(hub: std::net::SocketAddr) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    gpuscout_client::install_crypto_provider();
    let certs = vec![CertificateDer::from_pem_slice(TLS_CERT.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(TLS_KEY.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(hub).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    port
}

fn trusting_the_test_certificate() -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(TLS_CERT.as_bytes()).unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn the_sdk_connects_over_wss_through_a_tls_terminator() {
    let app = spawn_app_with(|s| {
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 200;
    })
    .await;
    let port = tls_terminator(app.addr).await;
    let url = format!("wss://localhost:{port}/connection/websocket");
    let mut o = Options::new(url.clone(), TokenSource::Static(app.token("tls", Tier::Individual)));
    o.tls = Some(trusting_the_test_certificate());
    let client = Client::connect(o);
    let mut book = client.market_book("market:summary");
    let mut updates = 0;
    while updates < 2 {
        match tokio::time::timeout(WAIT, book.next())
            .await
            .expect("book events over wss")
        {
            Some(BookEvent::Update(_)) => updates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(book.book().is_live() && !book.book().items().is_empty());
    client.close();

    // The system's roots do not know the test certificate: no connection, and the client says why.
    let mut untrusted = Options::new(url, TokenSource::Static(app.token("tls", Tier::Individual)));
    untrusted.max_reconnect_delay = Duration::from_millis(300);
    let client = Client::connect(untrusted);
    let mut events = client.events();
    let why = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Disconnected { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .expect("a refused handshake is reported");
    assert!(why.to_lowercase().contains("certificate"), "{why}");
    assert!(!matches!(client.state(), State::Connected { .. }));
    client.close();
}

#[tokio::test]
async fn the_sdk_exchanges_an_api_key_for_its_tokens() {
    let app = spawn_app_with(|s| {
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 200;
    })
    .await;
    let user = app.token("sdkkey", Tier::Individual);
    let (status, created) = crate::alerts::request(
        &app,
        "POST",
        "/api/v1/keys",
        &user,
        Some(json!({"name": "rust", "scopes": ["subscribe", "market:read"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let url = format!("ws://{}/connection/websocket", app.addr);
    let key = created["key"].as_str().unwrap();
    let client = Client::connect(Options::new(url.clone(), TokenSource::api_key(&url, key)));
    let mut book = client.market_book("market:summary");
    match tokio::time::timeout(WAIT, book.next()).await.expect("a snapshot") {
        Some(BookEvent::Update(Applied::Snapshot { .. })) => {}
        other => panic!("unexpected {other:?}"),
    }
    // Its scopes hold: no advisor.
    let err = client.rpc("advisor.ask", &json!({"text": "hi"})).await.unwrap_err();
    assert!(matches!(err, Error::Protocol(ref e) if e.code == 103), "{err:?}");
    client.close();
    // A wrong key says why.
    let bad = Client::connect(Options::new(url.clone(), TokenSource::api_key(&url, "gsk_nope")));
    let mut events = bad.events();
    let why = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(Event::Disconnected { reason, .. }) if reason.contains("API key") => return reason,
                Ok(_) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the refusal is reported");
    assert!(why.contains("unknown or revoked API key"), "{why}");
    bad.close();
}

#[tokio::test]
async fn portfolio_book_follows_the_users_machines() {
    let app = spawn_app_with(|s| {
        s.ingest.simulated.enabled = true;
        s.ingest.simulated.poll_interval_ms = 200;
    })
    .await;
    let client = Client::connect(options(&app, app.addr, "host1", Tier::Individual));
    let mut book = client.portfolio_book("host1");
    match tokio::time::timeout(WAIT, book.next())
        .await
        .expect("the connect reply's snapshot")
    {
        Some(BookEvent::Update(Applied::Snapshot { .. })) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(book.book().items().is_empty());
    let token = app.token("host1", Tier::Individual);
    let machine = json!({"platform": "runpod", "gpu_model": "RTX 4090", "num_gpus": 2,
                         "price_per_gpu_hour_usd": 0.4, "verified": true});
    let (status, created) =
        crate::alerts::request(&app, "POST", "/api/v1/portfolio/machines", &token, Some(machine)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    while book.book().get(id).is_none_or(|m| m["position"].is_null()) {
        match tokio::time::timeout(WAIT, book.next()).await.expect("a delta") {
            Some(BookEvent::Update(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(book.book().get(id).unwrap()["model"], "rtx-4090");
    client.close();

    // What a resync does on this server-side channel: unsubscribe, subscribe again, and the
    // subscribe reply carries a fresh snapshot with the machine.
    let (mut ws, _) = app.connect("host1", Tier::Individual).await;
    let r = ws
        .request(json!({"unsubscribe": {"channel": "portfolio:#host1"}}))
        .await;
    assert!(r.get("unsubscribe").is_some(), "{r}");
    let r = ws.subscribe("portfolio:#host1").await;
    let data = &r["subscribe"]["data"];
    assert_eq!(data["type"], "snapshot", "{r}");
    assert!(data["items"].get(id).is_some(), "{r}");
}
