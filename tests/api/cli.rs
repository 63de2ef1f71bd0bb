//! The `gpuscout` binary as an operator runs it: `--version`, `check-config`, and configuration
//! errors that name the whole key.

use std::process::{Command, Output};

/// Run the binary with `args` and only the `GPUSCOUT__…` variables given (the test's own
/// environment could hold any).
fn gpuscout(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gpuscout"));
    for (key, _) in std::env::vars() {
        if key.starts_with("GPUSCOUT__") || key == "GPUSCOUT_CONFIG_DIR" {
            command.env_remove(key);
        }
    }
    // No config directory: the embedded defaults and `vars` alone.
    command.env("GPUSCOUT_CONFIG_DIR", "/nonexistent");
    command.args(args).envs(vars.iter().copied());
    command.output().expect("the gpuscout binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_names_the_commit() {
    let out = gpuscout(&["--version"], &[]);
    assert!(out.status.success());
    let line = text(&out.stdout);
    let expected = format!("gpuscout {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&expected), "{line}");
    let commit = line.trim().trim_start_matches(&expected).trim_end_matches(')');
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{line}"
    );
}

#[test]
fn check_config_prints_the_effective_settings_with_secrets_masked() {
    let secret = "an-hmac-secret-that-nobody-should-ever-see-0123";
    let out = gpuscout(
        &["check-config"],
        &[
            ("GPUSCOUT__SERVER__LISTEN", "127.0.0.1:9123"),
            ("GPUSCOUT__AUTH__HMAC_SECRET", secret),
            ("GPUSCOUT__API__KEY", "server-api-key-value"),
            (
                "GPUSCOUT__DATABASE__URL",
                "postgres://hub:db-password@db.internal:5432/gpuscout?sslmode=require",
            ),
            ("GPUSCOUT__BUS__REDIS_URL", "redis://:redis-password@127.0.0.1:6379"),
            ("GPUSCOUT__SERVER__CORS_ORIGINS", "https://a.example,https://b.example"),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for hidden in [secret, "server-api-key-value", "db-password", "redis-password"] {
        assert!(!stdout.contains(hidden), "{hidden} is printed:\n{stdout}");
    }
    for shown in [
        "listen = \"127.0.0.1:9123\"",
        "hmac_secret = \"********\"",
        "url = \"postgres://hub:********@db.internal:5432/gpuscout?sslmode=require\"",
        "redis_url = \"redis://:********@127.0.0.1:6379\"",
        "cors_origins = [\"https://a.example\", \"https://b.example\"]",
        "[tiers.enterprise]",
        // A default the file does not spell out is shown as the hub runs with it.
        "environment = \"development\"",
    ] {
        assert!(stdout.contains(shown), "missing {shown}:\n{stdout}");
    }
}

#[test]
fn check_config_refuses_what_serve_refuses() {
    // Production with the development secret: serve refuses to start, and so does the check.
    let out = gpuscout(&["check-config"], &[("GPUSCOUT__ENVIRONMENT", "production")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("auth.hmac_secret"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_configuration_error_names_the_whole_key() {
    let out = gpuscout(&["check-config"], &[("GPUSCOUT__SERVER__LISTN", "127.0.0.1:1")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`server.listn`"), "{stderr}");
    assert!(stderr.contains("GPUSCOUT__SERVER__LISTN"), "{stderr}");
    assert!(stderr.contains("`listen`"), "the expected keys are listed: {stderr}");

    let out = gpuscout(&["check-config"], &[("GPUSCOUT__TIERS__GOLD__API_KEYS", "1")]);
    assert!(text(&out.stderr).contains("`tiers.gold`"), "{}", text(&out.stderr));

    let out = gpuscout(&["check-config"], &[("GPUSCOUT__SERVER__PING_INTERVAL_S", "often")]);
    assert!(
        text(&out.stderr).contains("server.ping_interval_s"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn logs_have_no_colour_codes_when_not_on_a_terminal() {
    // `migrate` logs through the same subscriber as `serve`; its stderr here is a pipe.
    let dir = std::env::temp_dir().join(format!("gpuscout-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let url = format!("sqlite://{}/cli.db", dir.display());
    let out = gpuscout(
        &["migrate"],
        &[("GPUSCOUT__DATABASE__URL", &url), ("RUST_LOG", "debug")],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(!stderr.is_empty(), "migrate logged nothing at debug level");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape codes in piped logs:\n{stderr}");
}

#[test]
fn sigterm_stops_the_hub_when_its_log_reader_is_gone() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpuscout"))
        .env("GPUSCOUT_CONFIG_DIR", "/nonexistent")
        .env("GPUSCOUT__SERVER__LISTEN", "127.0.0.1:0")
        .env(
            "GPUSCOUT__DATABASE__URL",
            format!("sqlite://{}/hub.db", dir.path().display()),
        )
        .env("GPUSCOUT__INGEST__SIMULATED__ENABLED", "false")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the hub starts");
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            log.read_line(&mut line).expect("a log line") > 0,
            "the hub exited before listening"
        );
    }
    // The log's reader goes away (a pager quit, a collector died): writes now fail.
    drop(log);
    // SAFETY: kill sends a signal to the child's pid, which is still ours to wait for.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status = status.expect("the hub ignored SIGTERM once its log could not be written");
    assert!(status.success(), "{status}");
}
