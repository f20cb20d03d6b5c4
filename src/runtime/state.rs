//! The state every surface shares (`/api`, the pages, `/v1`, the jobs): one pointer to the
//! services built once at start. Domain modules never see it; they take the narrow parts
//! (`&Db`, the calendar, settings, the HTTP client) that a surface hands them.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::domain::settings::SettingsStore;
use crate::foundation::clock::{BusinessCalendar, SharedClock};
use crate::foundation::config::Config;
use crate::foundation::db::Db;

/// Everything a handler may need; one pointer, so a clone (several per proxied
/// request) is one atomic increment instead of one per field.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Wraps the services built once at start (by the composition root).
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Services {
    pub db: Db,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub settings: SettingsStore,
    /// Work that must finish even if the client goes away (billing, logs).
    pub tasks: TaskTracker,
    /// Login attempt budgets (brute-force protection).
    pub login_throttle: crate::domain::auth::throttle::LoginThrottle,
    /// Per-address budget of payment notifies (unauthenticated writes).
    pub notify_throttle: crate::domain::auth::throttle::IpThrottle,
    /// Seals credentials stored in the database.
    pub secrets: crate::foundation::secrets::SecretBox,
    /// The one outgoing HTTP client (upstreams, payment gateway, sandbox notifies). It has
    /// no total timeout because streams run for minutes; short calls set their own.
    pub http: reqwest::Client,
    /// Cached enabled upstreams and prices for the proxy's hot path.
    pub catalog: crate::domain::proxy::catalog::Catalog,
    /// Proxy request-rate and concurrent-stream limiters (cluster-wide when Redis or
    /// PostgreSQL back them, in memory on SQLite).
    pub limits: crate::domain::proxy::limits::ProxyLimits,
    /// Runs admissions and settlements, batched per transaction.
    pub billing: crate::domain::billing::writer::BillingWriter,
    /// Who presented keys belong to, for the proxy's hot path.
    pub keys: crate::domain::auth::api_keys::KeyCache,
    /// Every forwarded request until its charge is committed (replayed after a crash).
    pub journal: crate::domain::proxy::journal::Journal,
}

impl Services {
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn calendar(&self) -> &BusinessCalendar {
        &self.config.calendar
    }

    /// The narrow parts a domain function takes ([`crate::domain::billing::Env`]).
    pub fn env(&self) -> crate::domain::billing::Env<'_> {
        crate::domain::billing::Env {
            db: &self.db,
            clock: &*self.clock,
            calendar: &self.config.calendar,
            settings: &self.settings,
            http: &self.http,
            billing: &self.billing,
            tasks: &self.tasks,
        }
    }
}
