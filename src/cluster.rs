//! Cache invalidation across instances that share one PostgreSQL.
//!
//! Settings and the upstream/price catalog are cached per process. When an admin
//! changes them on one instance, that instance publishes the change with
//! `pg_notify`, and every instance's listener drops the cached copy at once instead
//! of serving it until it expires. If the listening connection drops, notifications
//! may have been missed, so a reconnect drops every cache. On SQLite there is one
//! process, whose own writes already refresh its caches, so nothing is published.
//!
//! API keys need no invalidation: the key cache only maps a key to its owner, and
//! billing admission re-checks the key and the user under the user's row lock.

use sqlx::postgres::PgListener;

use crate::db::{Backend, Db};
use crate::proxy::catalog::Catalog;
use crate::settings::SettingsStore;

/// The PostgreSQL notification channel.
const CHANNEL: &str = "codex_gateway_invalidate";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Settings,
    Catalog,
}

impl Topic {
    fn name(self) -> &'static str {
        match self {
            Topic::Settings => "settings",
            Topic::Catalog => "catalog",
        }
    }
}

/// Tells the other instances that `topic` changed (best effort: their caches also expire).
pub async fn publish(db: &Db, topic: Topic) {
    if db.backend() != Backend::Postgres {
        return;
    }
    let sent = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(topic.name()).execute(db.pool()).await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, topic = topic.name(), "cannot notify other instances of a change");
    }
}

/// [`publish`] from synchronous code (spawned; needs a runtime, skipped without one).
pub fn publish_later(db: &Db, topic: Topic) {
    if db.backend() != Backend::Postgres || tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let db = db.clone();
    tokio::spawn(async move { publish(&db, topic).await });
}

/// Listens for other instances' changes and drops the matching local caches.
pub fn spawn_listener(database_url: String, settings: SettingsStore, catalog: Catalog) {
    tokio::spawn(async move {
        loop {
            match listen(&database_url, &settings, &catalog).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                    settings.invalidate_local();
                    catalog.invalidate_local();
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

async fn listen(database_url: &str, settings: &SettingsStore, catalog: &Catalog) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    loop {
        // `None`: the connection dropped and is re-established on the next call;
        // anything sent meanwhile is lost, so every cache is dropped.
        match listener.try_recv().await? {
            Some(notification) => match notification.payload() {
                "settings" => settings.invalidate_local(),
                "catalog" => catalog.invalidate_local(),
                other => tracing::debug!(payload = other, "unknown invalidation"),
            },
            None => {
                settings.invalidate_local();
                catalog.invalidate_local();
            }
        }
    }
}
