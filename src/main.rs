//! The `codex-gateway` command: serve (default), migrate, admin create, version.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use codex_gateway::app::{open_database, Application};
use codex_gateway::domain::auth::users;
use codex_gateway::domain::auth::Role;
use codex_gateway::foundation::clock::SystemClock;
use codex_gateway::foundation::config::Config;
use codex_gateway::foundation::error;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: the proxy allocates many small short-lived
/// buffers per request, and glibc's malloc/free took ~12% of the CPU at saturation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "codex-gateway", version, about = "OpenAI-compatible API gateway with packages and billing")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage admin accounts.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Print the version.
    Version,
    /// Exit 0 when the local server answers /readyz (for container health checks).
    Healthcheck,
    /// Run a fake OpenAI upstream (SSE, usage, fault modes) for tests and benchmarks.
    MockUpstream(MockArgs),
}

#[derive(clap::Args)]
struct MockArgs {
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// Pause between streamed events, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Pause before answering at all, in milliseconds.
    #[arg(long, default_value_t = 0)]
    initial_delay_ms: u64,
    /// Prefix each streamed event with `: mock-sent-us=<unix micros>` (benchmark buffering check).
    #[arg(long)]
    stamp: bool,
    /// Number of text deltas per answer.
    #[arg(long, default_value_t = 4)]
    chunks: usize,
    /// Answer length in bytes (0 = the short default text).
    #[arg(long, default_value_t = 0)]
    response_bytes: usize,
    /// Fault for every request: fail-500, fail-429, fail-400, die, no-usage (per request: header x-mock-fault).
    #[arg(long)]
    fault: Option<String>,
}

#[derive(Subcommand)]
enum AdminAction {
    /// Create an admin account (fails clearly if the email exists).
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "GATEWAY_ADMIN_PASSWORD")]
        password: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Version) = cli.command {
        println!("codex-gateway {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if let Some(Command::MockUpstream(args)) = cli.command {
        init_tracing(false);
        return match run_mock(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.json_logs);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate => {
                let db = open_database(&config).await?;
                println!("database is up to date ({})", config.database_kind());
                db.close().await;
                Ok(())
            }
            Command::Admin { action: AdminAction::Create { email, password } } => {
                create_admin(&config, &email, &password).await
            }
            Command::Version | Command::MockUpstream(_) => Ok(()),
            Command::Healthcheck => healthcheck(&config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    if json {
        tracing_subscriber::fmt().with_env_filter(filter).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let first_admin = std::env::var("GATEWAY_ADMIN_EMAIL").ok().zip(std::env::var("GATEWAY_ADMIN_PASSWORD").ok());
    let app = Application::build(config, Arc::new(SystemClock)).await?;
    let state = app.state().clone();
    if let Some((email, password)) = first_admin {
        if !users::admin_exists(&state.db).await? {
            users::create(&state.db, &email, &password, Role::Admin, state.now()).await?;
            tracing::info!(%email, "created the first admin account from GATEWAY_ADMIN_EMAIL");
        }
    }
    let url = state.config.public_url.clone();
    if !users::admin_exists(&state.db).await? {
        tracing::warn!("no admin account yet: open {url}/setup to create one (or run `codex-gateway admin create`)");
    }
    tracing::info!(listen = %app.local_addr(), database = state.config.database_kind(), timezone = state.calendar().zone_name(), "codex-gateway is serving at {url}");
    app.run_until_stopped(shutdown_signal()).await
}

fn run_mock(args: MockArgs) -> anyhow::Result<()> {
    use codex_gateway::domain::proxy::mock::{serve_mock, Fault, MockOptions};
    let fault = match args.fault.as_deref() {
        None | Some("none") => None,
        Some(text) => Some(Fault::parse(text).ok_or_else(|| anyhow::anyhow!("unknown fault `{text}`"))?),
    };
    let options = MockOptions {
        delay: std::time::Duration::from_millis(args.delay_ms),
        initial_delay: std::time::Duration::from_millis(args.initial_delay_ms),
        stamp: args.stamp,
        chunks: args.chunks,
        response_bytes: args.response_bytes,
        fault,
        ..MockOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let handle = serve_mock(listener, options).await?;
        println!("mock upstream serving at {}", handle.base_url());
        shutdown_signal().await;
        drop(handle);
        Ok(())
    })
}

async fn create_admin(config: &Config, email: &str, password: &str) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    match users::create(&db, email, password, Role::Admin, chrono::Utc::now()).await {
        Ok(user) => {
            println!("created admin {} (id {})", user.email, user.id);
            Ok(())
        }
        Err(error::Error::Conflict { message, .. }) => anyhow::bail!("{message}; nothing was changed"),
        Err(e) => anyhow::bail!("{e}"),
    }
}

async fn healthcheck(config: &Config) -> anyhow::Result<()> {
    let mut addr = config.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build()?;
    let response = client.get(format!("http://{addr}/readyz")).send().await?;
    anyhow::ensure!(response.status().is_success(), "not ready: {}", response.status());
    println!("ready");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutting down: finishing in-flight requests and billing");
}
