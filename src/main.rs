//! The `gpuscout` binary: `serve` (default), `token`, `migrate`, `vapid-keys`, `check-config`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use gpuscout_hub::auth::TokenVerifier;
use gpuscout_hub::config::Settings;
use gpuscout_hub::startup::{Application, shutdown_signal};
use gpuscout_hub::store::Store;
use gpuscout_hub::telemetry;
use gpuscout_hub::tier::Tier;

#[derive(Parser)]
#[command(name = "gpuscout", version = gpuscout_hub::LONG_VERSION, about = "GPUScout Hub: real-time GPU rental market data")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Print a connection token signed with the configured HS256 secret.
    Token {
        /// User id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// free, individual, professional or enterprise.
        #[arg(long, default_value = "free")]
        tier: Tier,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print a new VAPID key pair for Web Push (`push.vapid_public_key`, `push.vapid_private_key`).
    VapidKeys,
    /// Print the effective configuration (secrets masked); exit non-zero on anything `serve`
    /// would refuse.
    CheckConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gpuscout: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        println!(
            "# gpuscout {}: the effective configuration, secrets masked\n",
            gpuscout_hub::LONG_VERSION
        );
        print!("{}", settings.effective_toml());
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gpuscout: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpuscout: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init_tracing(&settings.log);
            let app = Application::build(settings).await?;
            let stop = app.shutdown_token();
            tokio::spawn(async move {
                shutdown_signal().await;
                // Stop first: nothing, not even a log line, may keep the signal from stopping.
                stop.cancel();
                tracing::info!("shutdown signal received");
            });
            app.run_until_stopped().await
        }
        Command::Token { user, tier, ttl } => {
            let verifier = TokenVerifier::new(&settings.auth)?;
            println!("{}", verifier.mint(&user, tier, ttl)?);
            Ok(())
        }
        Command::VapidKeys => {
            let (public, private) = gpuscout_hub::alerts::vapid::new_key_pair();
            println!("GPUSCOUT__PUSH__VAPID_PUBLIC_KEY={public}");
            println!("GPUSCOUT__PUSH__VAPID_PRIVATE_KEY={private}");
            Ok(())
        }
        Command::CheckConfig => unreachable!("answered before the runtime starts"),
        Command::Migrate => {
            telemetry::init_tracing(&settings.log);
            let store = Store::connect(&settings.database)
                .await
                .context("connecting to the database")?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
    }
}
