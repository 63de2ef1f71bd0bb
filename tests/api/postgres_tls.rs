//! TLS to PostgreSQL (`sslmode` in `database.url`), against a private server that takes TLS
//! connections only, with a certificate signed by a CA of the test.

use gpuscout_hub::config::DatabaseSettings;
use gpuscout_hub::store::Store;
use secrecy::SecretString;

use crate::common::postgres::PrivatePostgres;
use crate::helpers::spawn_app_with;

async fn connect(url: &str) -> Result<Store, String> {
    let settings = DatabaseSettings {
        url: SecretString::from(url.to_owned()),
        max_connections: 2,
    };
    Store::connect(&settings).await.map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn the_store_reaches_postgres_over_tls_and_verifies_its_certificate() {
    let Some((pg, certs)) = PrivatePostgres::start_with_tls() else {
        return;
    };
    let base = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
    // The server rejects plain connections, so every connection that works below used TLS.
    let plain = connect(&format!("{base}?sslmode=disable")).await;
    assert!(plain.is_err(), "a plain connection was accepted");

    let ca = certs.ca.display();
    let localhost = format!("postgres://postgres@localhost:{}/postgres", pg.port);
    for url in [
        format!("{base}?sslmode=require"),
        format!("{base}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        format!("{localhost}?sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let store = connect(&url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        store.migrate().await.unwrap_or_else(|e| panic!("{url}: migrate: {e}"));
        store.ping().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    }

    // A certificate the given CA did not sign is refused, and so is one without sslrootcert
    // (the built-in public roots did not sign the test's CA).
    let other = certs.other_ca.display();
    for url in [
        format!("{base}?sslmode=verify-full&sslrootcert={other}"),
        format!("{base}?sslmode=verify-full"),
    ] {
        let refused = connect(&url).await;
        assert!(refused.is_err(), "{url}: an unverified certificate was accepted");
    }

    // A whole hub on it: ready, and its REST reads answer from the database.
    let url = format!("{base}?sslmode=verify-full&sslrootcert={ca}");
    let mut app = spawn_app_with(|s| s.database.url = SecretString::from(url)).await;
    let ready = reqwest::get(app.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap_or_default());
    app.stop().await.expect("the hub stops");
}
