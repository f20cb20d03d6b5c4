//! The composition root: the only module that names every layer. Start-up split from serving: [`Application::build`] opens the database, migrates
//! and binds the listener (port 0 in tests); [`Application::run_until_stopped`] serves
//! until the shutdown future resolves, then waits for tracked background work.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::domain::settings::SettingsStore;
use crate::foundation::clock::SharedClock;
use crate::foundation::config::Config;
use crate::foundation::db::{self, Db};
use crate::runtime::state::{AppState, Services};

/// A built, bound, migrated application.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// This instance's claim on its SQLite file, held until it stops serving (none on
    /// PostgreSQL): a second instance on one SQLite file refuses to start.
    _sqlite_claim: Option<db::single_instance::SqliteClaim>,
}

impl Application {
    /// Opens and migrates the database and binds `config.listen`.
    pub async fn build(config: Config, clock: SharedClock) -> anyhow::Result<Application> {
        let db = open_database(&config).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (GATEWAY_LISTEN): {e}", config.listen))?;
        Self::with_listener(config, clock, db, listener).await
    }

    /// Builds on an already-open database and bound listener (tests, embedding).
    pub async fn with_listener(
        config: Config,
        clock: SharedClock,
        db: Db,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        // Before anything is replayed or served: a second instance on this SQLite file
        // stops here, saying why (foundation::db::single_instance).
        let sqlite_claim = db::single_instance::claim_sqlite_file(&config.database_url)?;
        let secrets = crate::foundation::secrets::SecretBox::new(config.secret_bytes());
        let settings = SettingsStore::load(db.clone(), secrets.clone()).await?;
        crate::domain::proxy::pricing::seed_defaults(&db, clock.now()).await?;
        let catalog = crate::domain::proxy::catalog::Catalog::load(
            db.clone(),
            secrets.clone(),
            config.codex_instructions.clone(),
        )
        .await?;
        // No total timeout: streams may run for many minutes; the first-byte timeout
        // is applied per attempt by the proxy.
        let http = reqwest::Client::builder()
            .connect_timeout(config.upstream_connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .build()?;
        let shared_limits = crate::domain::ratelimit::SharedStore::from_config(&config, &db, clock.clone())?;
        let limiter = shared_limits.as_ref().map_or("memory (this instance)", |s| s.backend_name());
        tracing::info!(limiter, "request-rate limits and login throttle counted in {limiter}");
        let billing = crate::domain::billing::writer::BillingWriter::start(db.clone(), config.calendar);
        match billing.hold_sizes().warm(&db).await {
            Ok(n) => tracing::info!(requests = n, "hold sizes learned from the usage log"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the usage log for hold sizes; holds start at the default")
            }
        }
        let default_preference = settings.get().await?.default_billing_preference;
        let journal = open_journal(&config, &db, &billing, clock.now(), default_preference).await?;
        if db.backend() == db::Backend::Postgres {
            let caches = Caches { settings: settings.clone(), catalog: catalog.clone(), billing: billing.clone() };
            crate::foundation::cluster::spawn_listener(config.database_url.clone(), caches);
        }
        let state = AppState::new(Services {
            db,
            config: Arc::new(config),
            clock,
            settings,
            tasks: TaskTracker::new(),
            login_throttle: crate::domain::auth::throttle::LoginThrottle::with_store(shared_limits.clone()),
            notify_throttle: crate::domain::auth::throttle::IpThrottle::new(
                "notify-ip",
                crate::domain::orders::notify::PER_IP_PER_MINUTE,
                crate::domain::orders::notify::PER_IP_BURST,
                shared_limits.clone(),
            ),
            secrets,
            http,
            catalog,
            limits: crate::domain::proxy::limits::ProxyLimits::new(shared_limits),
            billing,
            keys: Default::default(),
            journal,
        });
        Ok(Application { listener, state, _sqlite_claim: sqlite_claim })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| self.state.config.listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets tracked tasks finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, state, _sqlite_claim: sqlite_claim } = self;
        crate::domain::telemetry::handle();
        let jobs_stop = tokio_util::sync::CancellationToken::new();
        state.db.spawn_health_probe(jobs_stop.clone());
        if state.config.run_jobs {
            crate::runtime::jobs::spawn_scheduler(&state, jobs_stop.clone());
        }
        let router: Router = crate::surface::routes::router(state.clone());
        // Small SSE writes must leave at once: with Nagle's algorithm on, each event
        // after the first waits for the client's delayed ACK (~40 ms on Linux).
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY on a client connection");
            }
        });
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await?;
        jobs_stop.cancel();
        state.tasks.close();
        state.tasks.wait().await;
        // Settlements are done: another instance may take the SQLite file now.
        drop(sqlite_claim);
        Ok(())
    }
}

/// This process's caches, as the cluster listener drops them.
struct Caches {
    settings: SettingsStore,
    catalog: crate::domain::proxy::catalog::Catalog,
    billing: crate::domain::billing::writer::BillingWriter,
}

impl crate::foundation::cluster::LocalCaches for Caches {
    fn drop(&self, topic: crate::foundation::cluster::Topic) {
        match topic {
            crate::foundation::cluster::Topic::Settings => self.settings.invalidate_local(),
            crate::foundation::cluster::Topic::Catalog => self.catalog.invalidate_local(),
            crate::foundation::cluster::Topic::User(user_id) => self.billing.forget_headroom(user_id),
        }
    }

    fn drop_all(&self) {
        self.settings.invalidate_local();
        self.catalog.invalidate_local();
        self.billing.forget_all_headroom();
    }
}

/// Charges what dead instances sharing this data directory forwarded and never
/// settled, then opens this instance's own journal segment.
async fn open_journal(
    config: &Config,
    db: &Db,
    billing: &crate::domain::billing::writer::BillingWriter,
    now: chrono::DateTime<chrono::Utc>,
    default_preference: crate::domain::billing::rules::Preference,
) -> anyhow::Result<crate::domain::proxy::journal::Journal> {
    use crate::domain::proxy::journal::Journal;
    if !config.journal {
        return Ok(Journal::disabled());
    }
    let dir = config.data_dir.join("journal");
    let recovery = crate::domain::proxy::recovery::Recovery {
        db,
        writer: billing,
        calendar: &config.calendar,
        now,
        default_preference,
    };
    let report = recovery
        .replay(&dir)
        .await
        .map_err(|e| anyhow::anyhow!("cannot replay the crash journal in {}: {e}", dir.display()))?;
    if report.segments > 0 {
        tracing::warn!(
            segments = report.segments,
            unsettled = report.unsettled,
            charged = report.charged,
            estimated = report.estimated,
            amount = %report.amount,
            released = report.released,
            "crash journal replayed: requests a stopped instance served and had not settled are charged now"
        );
    }
    // This is the SQLite file's only instance (it holds the claim) and every journal
    // was replayed: a hold still written is one no journal knows, never forwarded.
    if db.backend() == db::Backend::Sqlite {
        let (released, amount) = crate::domain::billing::release_holds_of_dead_processes(db)
            .await
            .map_err(|e| anyhow::anyhow!("cannot release the holds a stopped instance left: {e}"))?;
        if released > 0 {
            tracing::warn!(released, amount = %amount, "holds of requests never forwarded released at start");
        }
    }
    Journal::open(&dir)
        .map_err(|e| anyhow::anyhow!("cannot open the crash journal in {} (GATEWAY_DATA_DIR): {e}", dir.display()))
}

/// Connects and migrates, with the pool size the backend can take.
pub async fn open_database(config: &Config) -> anyhow::Result<Db> {
    let max_connections = std::env::var("DATABASE_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if config.database_kind() == "sqlite" { 8 } else { 16 });
    let db = Db::connect(&config.database_url, max_connections)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database (DATABASE_URL): {e}"))?;
    db::migrate(&db).await.map_err(|e| anyhow::anyhow!("database migration failed: {e}"))?;
    Ok(db)
}
