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
//! billing admission re-checks the key and the user under the user's row lock. What
//! must be dropped is a user's headroom hint (requests admitted on it are forwarded
//! before their admission commits): a change that makes a user poorer or a key
//! unusable publishes `user:<id>`, and every instance drops that user's hint.

use sqlx::postgres::PgListener;

use crate::billing::writer::BillingWriter;
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
    /// A user's money, status or keys (their headroom hint is dropped).
    User(i64),
}

impl Topic {
    fn name(self) -> String {
        match self {
            Topic::Settings => "settings".into(),
            Topic::Catalog => "catalog".into(),
            Topic::User(id) => format!("user:{id}"),
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
        tracing::warn!(error = %e, topic = %topic.name(), "cannot notify other instances of a change");
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
pub fn spawn_listener(database_url: String, settings: SettingsStore, catalog: Catalog, billing: BillingWriter) {
    tokio::spawn(async move {
        loop {
            match listen(&database_url, &settings, &catalog, &billing).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                    settings.invalidate_local();
                    catalog.invalidate_local();
                    billing.forget_all_headroom();
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

async fn listen(
    database_url: &str,
    settings: &SettingsStore,
    catalog: &Catalog,
    billing: &BillingWriter,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    loop {
        // `None`: the connection dropped and is re-established on the next call;
        // anything sent meanwhile is lost, so every cache is dropped.
        match listener.try_recv().await? {
            Some(notification) => match notification.payload() {
                "settings" => settings.invalidate_local(),
                "catalog" => catalog.invalidate_local(),
                other => match other.strip_prefix("user:").and_then(|id| id.parse::<i64>().ok()) {
                    Some(user_id) => billing.forget_headroom(user_id),
                    None => tracing::debug!(payload = other, "unknown invalidation"),
                },
            },
            None => {
                settings.invalidate_local();
                catalog.invalidate_local();
                billing.forget_all_headroom();
            }
        }
    }
}
