//! Alerts that leave the hub: Web Push to a local fake push service that checks the VAPID token
//! and decrypts the payload with the subscription's private key, and e-mail through a real SMTP
//! server (aiosmtpd) on loopback; on SQLite and PostgreSQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use gpuscout_hub::alerts::{vapid, webpush};
use gpuscout_hub::tier::Tier;
use p256::ecdsa::signature::Verifier;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::alerts::{Market, median_4090, next_alert, price_rule, request};
use crate::helpers::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

type Pushes = Arc<Mutex<Vec<(String, HeaderMap, Vec<u8>)>>>;

/// A push service on loopback: `POST /push/{name}` answers with the statuses queued for `name`
/// in turn (then 201), recording every request.
async fn push_service(statuses: HashMap<&str, Vec<u16>>) -> (String, Pushes) {
    let seen: Pushes = Arc::default();
    let queues: HashMap<String, Vec<u16>> = statuses.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    let queues = Arc::new(Mutex::new(queues));
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/push/{name}",
        axum::routing::post(
            move |axum::extract::Path(name): axum::extract::Path<String>,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                let (record, queues) = (record.clone(), queues.clone());
                async move {
                    let status = {
                        let mut q = queues.lock().unwrap();
                        let queue = q.entry(name.clone()).or_default();
                        if queue.is_empty() { 201 } else { queue.remove(0) }
                    };
                    record.lock().unwrap().push((name, headers, body.to_vec()));
                    StatusCode::from_u16(status).unwrap()
                }
            },
        ),
    );
    (crate::common::serve(app).await, seen)
}

fn pushes_to(seen: &Pushes, name: &str) -> Vec<(HeaderMap, Vec<u8>)> {
    let seen = seen.lock().unwrap();
    seen.iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, h, b)| (h.clone(), b.clone()))
        .collect()
}

/// Check the VAPID `Authorization` as a push service does: `vapid t=<JWT>, k=<key>`, the key the
/// hub's, the ES256 signature valid, `aud` the service's origin, `exp` within 24 hours.
fn check_vapid(headers: &HeaderMap, public_key: &str, origin: &str) {
    let auth = headers["authorization"].to_str().unwrap();
    let rest = auth.strip_prefix("vapid t=").expect("a vapid authorization");
    let (jwt, key) = rest.split_once(", k=").unwrap();
    assert_eq!(key, public_key);
    let parts: Vec<&str> = jwt.split('.').collect();
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["aud"], origin);
    assert_eq!(claims["sub"], "mailto:ops@example.com");
    let now = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap())
    .as_secs() as i64;
    let exp = claims["exp"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}");
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(&B64.decode(key).unwrap()).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&B64.decode(parts[2]).unwrap()).unwrap();
    verifying
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the VAPID signature verifies");
}

/// Wait until `check` holds, for at most `secs` seconds.
async fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn web_push_reaches_the_browser(database_url: Option<String>) {
    let mut market = Market::start().await;
    let (public, private) = vapid::new_key_pair();
    let change = market.settings();
    let vapid_public = public.clone();
    let app = spawn_app_with(move |s| {
        change(s);
        s.push.vapid_public_key = vapid_public;
        s.push.vapid_private_key = private.into();
        s.push.subject = "mailto:ops@example.com".into();
        if let Some(url) = database_url {
            s.database.url = SecretString::from(url);
        }
    })
    .await;
    let token = app.token("p1", Tier::Individual);
    let median = median_4090(&app, &token).await;
    let (service, seen) = push_service(HashMap::from([("gone", vec![410]), ("busy", vec![429])])).await;
    // The browser's keys: the test holds the private half, as the browser would.
    let browser = vapid::random_secret_key();
    let auth: [u8; 16] = rand::random();
    let p256dh = B64.encode(p256::EncodedPoint::from(browser.public_key()).as_bytes());
    for name in ["good", "gone", "busy"] {
        let body = json!({"endpoint": format!("{service}/push/{name}"),
                          "keys": {"p256dh": p256dh, "auth": B64.encode(auth)}});
        let (status, v) = request(&app, "POST", "/api/v1/push/subscriptions", &token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let mut rule = price_rule(median - 0.05);
    rule["deliver"] = json!(["socket", "push"]);
    let (status, pushed) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(rule)).await;
    assert_eq!(status, StatusCode::CREATED, "{pushed}");
    assert_eq!(pushed["deliver"], json!(["socket", "push"]));
    // A rule without `deliver`: the socket only, as before.
    let mut plain = price_rule(median - 0.05);
    plain["name"] = json!("socket only");
    let (status, _) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(plain)).await;
    assert_eq!(status, StatusCode::CREATED);

    let (mut ws, _) = app.connect("p1", Tier::Individual).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    market.price_4090(median - 0.2);
    let mut on_socket = Vec::new();
    while on_socket.len() < 2 {
        let alert = next_alert(&mut ws, Duration::from_secs(5))
            .await
            .expect("both rules fire");
        on_socket.push(alert["pub"]["data"].clone());
    }
    let socket_alert = on_socket.iter().find(|a| a["rule_id"] == pushed["id"]).unwrap().clone();
    eventually(20, "every subscription is tried", || {
        pushes_to(&seen, "good").len() == 1
            && pushes_to(&seen, "gone").len() == 1
            && pushes_to(&seen, "busy").len() == 2
    })
    .await;

    let (headers, body) = pushes_to(&seen, "good").remove(0);
    check_vapid(&headers, &public, &service);
    assert_eq!(headers["content-encoding"], "aes128gcm");
    assert_eq!(headers["ttl"], "14400");
    assert_eq!(headers["urgency"], "high");
    let plain = webpush::decrypt(&body, &browser, &auth).expect("the browser's keys decrypt the push");
    let alert: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(alert, socket_alert, "the push carries the alert JSON of the socket");
    // Another browser's keys read nothing.
    assert!(webpush::decrypt(&body, &vapid::random_secret_key(), &auth).is_none());

    // 410: the subscription is gone from the hub too; 429 was retried.
    let (_, listed) = request(&app, "GET", "/api/v1/push/subscriptions", &token, None).await;
    let endpoints: Vec<&str> = listed["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(endpoints.len(), 2, "{listed}");
    assert!(!endpoints.iter().any(|e| e.ends_with("/gone")), "{listed}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pushes_to(&seen, "good").len(), 1, "the socket-only rule pushed nothing");

    // The rule's test pushes to each browser once and says how it went.
    let path = format!("/api/v1/alerts/rules/{}/test", pushed["id"].as_str().unwrap());
    let (status, tested) = request(&app, "POST", &path, &token, None).await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    let results: Vec<&str> = tested["push"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["delivered", "delivered"], "{tested}");
    assert_eq!(pushes_to(&seen, "good").len(), 2);
}

#[tokio::test]
async fn web_push_reaches_the_browser_on_sqlite() {
    web_push_reaches_the_browser(None).await;
}

#[tokio::test]
async fn web_push_reaches_the_browser_on_postgres() {
    if let Some(url) = fresh_postgres_url().await {
        web_push_reaches_the_browser(Some(url)).await;
    }
}

/// An aiosmtpd server on a free loopback port, writing each accepted mail to `dir` as JSON.
struct SmtpServer {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SETUP: Mutex<()> = Mutex::new(());

/// The Python with aiosmtpd (`tests/smtp/setup.sh` installs it on first use), or `None` on a
/// laptop where it cannot be installed (never under CI).
fn smtp_python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp");
    let python = root.join(".venv/bin/python");
    let _one = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let ok = std::process::Command::new(root.join("setup.sh"))
        .status()
        .is_ok_and(|s| s.success());
    if ok && python.exists() {
        return Some(python);
    }
    assert!(
        std::env::var("CI").is_err(),
        "tests/smtp/setup.sh could not install aiosmtpd (CI needs it)"
    );
    eprintln!("skipping: aiosmtpd is not installed (run tests/smtp/setup.sh)");
    None
}

async fn smtp_server() -> Option<SmtpServer> {
    let python = smtp_python()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/server.py");
    let child = std::process::Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .arg(dir.path())
        .arg("--refuse-first-of-each-subject")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = SmtpServer { child, dir, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the SMTP server did not start");
}

impl SmtpServer {
    /// The mails accepted so far, in order.
    fn mails(&self) -> Vec<Value> {
        (1..)
            .map(|n| self.dir.path().join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<Value> {
        eventually(10, &format!("{count} mails arrive"), || self.mails().len() >= count).await;
        self.mails()
    }
}

/// The value of `name=` in a link found in `text` after `prefix`.
fn link_token(text: &str, prefix: &str) -> String {
    let start = text.find(prefix).unwrap_or_else(|| panic!("{prefix} in {text}")) + prefix.len();
    text[start..].chars().take_while(|c| c.is_ascii_hexdigit()).collect()
}

async fn mail_alerts(database_url: Option<String>) {
    let Some(smtp) = smtp_server().await else { return };
    let mut market = Market::start().await;
    let change = market.settings();
    let (smtp_url, db_url) = (format!("smtp://127.0.0.1:{}", smtp.port), database_url.clone());
    let app = spawn_app_with(move |s| {
        change(s);
        s.email.smtp_url = SecretString::from(smtp_url);
        s.email.from = "GPUScout <alerts@gpuscout.test>".into();
        s.email.max_per_hour = 2;
        s.email.public_url = "http://hub.test".into();
        if let Some(url) = db_url {
            s.database.url = SecretString::from(url);
        }
    })
    .await;
    let token = app.token("m1", Tier::Individual);
    let median = median_4090(&app, &token).await;
    confirm_address(&app, &token, &smtp).await;

    // Four rules cross at once: two mails this hour, the other two wait for the digest.
    for n in 1..=4 {
        let mut rule = price_rule(median - 0.05);
        rule["name"] = json!(format!("rule {n}"));
        rule["deliver"] = json!(["email"]);
        let (status, v) = request(&app, "POST", "/api/v1/alerts/rules", &token, Some(rule)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    market.price_4090(median - 0.2);
    let mails = smtp.wait_for(3).await;
    for mail in &mails[1..3] {
        assert_eq!(mail["rcpt_tos"], json!(["host@example.com"]));
        assert_eq!(mail["mail_from"], "alerts@gpuscout.test");
        assert!(
            mail["headers"]["Subject"].as_str().unwrap().starts_with("GPUScout: "),
            "{mail}"
        );
        assert!(mail["text"].as_str().unwrap().contains("RTX 4090"), "{mail}");
        let html = mail["html"].as_str().unwrap();
        assert!(
            html.contains("href=\"http://hub.test/api/v1/me/email/unsubscribe?token="),
            "{html}"
        );
        assert!(
            mail["headers"]["List-Unsubscribe"]
                .as_str()
                .unwrap()
                .starts_with("<http://hub.test/")
        );
        assert_eq!(mail["headers"]["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.mails().len(), 3, "beyond max_per_hour, nothing more this hour");

    // The next hour comes (the folded deliveries are back-dated): one digest with both.
    let store = gpuscout_hub::store::Store::connect(&app.settings.database)
        .await
        .unwrap();
    let folded = sqlx::query("UPDATE webhook_deliveries SET next_attempt_at_ms = 0 WHERE format = 'digest'")
        .execute(store.pool())
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(folded, 2);
    let mails = smtp.wait_for(4).await;
    let digest = &mails[3];
    assert_eq!(digest["headers"]["Subject"], "GPUScout: 2 more alerts");
    let text = digest["text"].as_str().unwrap();
    assert_eq!(text.matches("RTX 4090").count(), 2, "{text}");
    // The server's 451 was retried (every subject's first try is refused).
    let refused: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_attempts WHERE error LIKE '%451%'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        refused >= 2,
        "the alert mail and the digest were each refused once, then sent"
    );

    // A rule's test mails the address (the server's first refusal of a new subject in words).
    let (_, rules) = request(&app, "GET", "/api/v1/alerts/rules", &token, None).await;
    let path = format!(
        "/api/v1/alerts/rules/{}/test",
        rules["rules"][0]["id"].as_str().unwrap()
    );
    let (_, tested) = request(&app, "POST", &path, &token, None).await;
    assert_eq!(tested["email"]["result"], "the mail server answered 451", "{tested}");
    let (_, tested) = request(&app, "POST", &path, &token, None).await;
    assert_eq!(tested["email"]["result"], "delivered", "{tested}");
    assert!(
        smtp.wait_for(5).await[4]["headers"]["Subject"]
            .as_str()
            .unwrap()
            .contains("Test of")
    );

    // The unsubscribe link in a mail removes the address.
    let unsubscribe = link_token(
        mails[1]["headers"]["List-Unsubscribe"].as_str().unwrap(),
        "unsubscribe?token=",
    );
    let path = format!("/api/v1/me/email/unsubscribe?token={unsubscribe}");
    let (status, v) = request(&app, "POST", &path, "", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _) = request(&app, "GET", "/api/v1/me/email", &token, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Set the address; the confirmation mail (refused once by the server, then sent) carries the
/// link; until it is followed the address is unconfirmed.
async fn confirm_address(app: &TestApp, token: &str, smtp: &SmtpServer) {
    let (status, v) = request(app, "PUT", "/api/v1/me/email", token, Some(json!({"email": "nope"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let body = json!({"email": "host@example.com"});
    let (status, v) = request(app, "PUT", "/api/v1/me/email", token, Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    let mails = smtp.wait_for(1).await;
    assert_eq!(mails[0]["rcpt_tos"], json!(["host@example.com"]));
    assert!(mails[0]["html"].as_str().unwrap().contains("Confirm it"));
    let (_, v) = request(app, "GET", "/api/v1/me/email", token, None).await;
    assert_eq!(v["confirmed"], false, "{v}");
    let (status, v) = request(app, "GET", "/api/v1/me/email/confirm?token=00", "", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "invalid_token", "{v}");
    let confirm = link_token(
        mails[0]["text"].as_str().unwrap(),
        "http://hub.test/api/v1/me/email/confirm?token=",
    );
    let path = format!("/api/v1/me/email/confirm?token={confirm}");
    let (status, v) = request(app, "GET", &path, "", None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (_, v) = request(app, "GET", "/api/v1/me/email", token, None).await;
    assert_eq!(v["confirmed"], true, "{v}");
    assert_eq!(v["email"], "host@example.com");
}

#[tokio::test]
async fn alerts_are_mailed_with_a_digest_beyond_the_hourly_limit_on_sqlite() {
    mail_alerts(None).await;
}

#[tokio::test]
async fn alerts_are_mailed_with_a_digest_beyond_the_hourly_limit_on_postgres() {
    if let Some(url) = fresh_postgres_url().await {
        mail_alerts(Some(url)).await;
    }
}
