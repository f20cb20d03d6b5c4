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

use crate::foundation::db::{Backend, Db};

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

/// The caches of this process that other instances' changes make stale. The composition
/// root (`app`) implements it over the settings store, the catalog and the billing writer,
/// so this module needs none of them.
pub trait LocalCaches: Send + Sync + 'static {
    /// Drops what `topic` names.
    fn drop(&self, topic: Topic);
    /// Drops everything (notifications may have been missed).
    fn drop_all(&self);
}

/// Listens for other instances' changes and drops the matching local caches.
pub fn spawn_listener(database_url: String, caches: impl LocalCaches) {
    tokio::spawn(async move {
        loop {
            match listen(&database_url, &caches).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cache invalidation listener failed; reconnecting");
                    caches.drop_all();
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// The topic a notification's payload names.
fn parse_topic(payload: &str) -> Option<Topic> {
    match payload {
        "settings" => Some(Topic::Settings),
        "catalog" => Some(Topic::Catalog),
        other => other.strip_prefix("user:").and_then(|id| id.parse::<i64>().ok()).map(Topic::User),
    }
}

async fn listen(database_url: &str, caches: &impl LocalCaches) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(database_url).await?;
    listener.listen(CHANNEL).await?;
    loop {
        // `None`: the connection dropped and is re-established on the next call;
        // anything sent meanwhile is lost, so every cache is dropped.
        match listener.try_recv().await? {
            Some(notification) => match parse_topic(notification.payload()) {
                Some(topic) => caches.drop(topic),
                None => tracing::debug!(payload = notification.payload(), "unknown invalidation"),
            },
            None => caches.drop_all(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_reads_back_from_its_name() {
        for topic in [Topic::Settings, Topic::Catalog, Topic::User(42)] {
            assert_eq!(parse_topic(&topic.name()), Some(topic));
        }
        assert_eq!(parse_topic("user:x"), None);
        assert_eq!(parse_topic("prices"), None);
    }
}
