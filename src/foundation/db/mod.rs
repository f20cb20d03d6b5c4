//! Database access with one code path for SQLite and PostgreSQL.
//!
//! Queries go through sqlx's `Any` driver with `$1`-style placeholders, which both
//! backends accept. Portable SQL only: `CASE` instead of `GREATEST`/`MAX(a, b)`,
//! `CAST(SUM(x) AS BIGINT)` so PostgreSQL does not answer NUMERIC, flags as BIGINT 0/1
//! (the Any driver cannot decode SQLite booleans), instants as BIGINT micro-seconds.
//!
//! SQLite allows one writer at a time; [`Db::begin`] serialises write transactions
//! in-process so concurrent requests queue instead of failing with `SQLITE_BUSY`.

pub mod health;
mod migrations;
pub mod single_instance;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Connection, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use migrations::{migrate, migrate_up_to, MIGRATIONS};

/// The longest a query waits for a pooled connection. It bounds what a request that was
/// already waiting when the database went away waits for its 503 (later ones are refused
/// at once by the health probe); a pool busier than this is overloaded, and shedding
/// is the right answer then too.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Which backend a URL points at; only migrations and pool set-up care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Pool plus what is needed to write safely on either backend.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    sqlite_writer: Arc<Mutex<()>>,
    health: Arc<health::Health>,
    /// Kept for the health probe's own connection; never logged (it may carry a password).
    url: Arc<str>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish()
    }
}

/// A write transaction; on SQLite it also holds the process-wide writer slot.
pub struct Tx {
    inner: Transaction<'static, Any>,
    _writer: Option<OwnedMutexGuard<()>>,
}

impl Tx {
    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }
}

impl Db {
    /// Opens a pool for `url` (`sqlite://...` or `postgres://...`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        let options: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // sqlx pings an idle connection before handing it out. On SQLite that ping is a
            // round trip to the connection's worker thread (two thread hand-offs per
            // checkout, measured ~2.5% of the process under billed load) and buys nothing:
            // a SQLite connection is a file handle in this process and cannot go stale.
            // On PostgreSQL it is what finds the connections a server restart or an outage
            // broke (tests/pg_restart.rs, `health`), so it stays on there.
            .test_before_acquire(backend == Backend::Postgres)
            // A commit that fails for want of disk space (SQLITE_FULL) leaves sqlx
            // counting a transaction SQLite already rolled back; the connection would
            // then refuse every later BEGIN (`InvalidSavePointStatement`, a 500) even
            // after space came back. Such a connection is closed instead of reused.
            .before_acquire(|conn, _meta| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        // Measured under billed load: the hot pages (the user row, today's
                        // usage row, index roots) are rewritten by every batch, and
                        // checkpointing every 1,000 WAL pages spent ~16% of the process in
                        // pwrite/fsync/pread. Checkpoint less often (each copies a hot page
                        // once however often it changed), keep the WAL file bounded, and
                        // read through a larger cache and mmap instead of pread.
                        conn.execute("PRAGMA wal_autocheckpoint = 8192").await?;
                        conn.execute("PRAGMA journal_size_limit = 67108864").await?;
                        conn.execute("PRAGMA cache_size = -32768").await?;
                        conn.execute("PRAGMA mmap_size = 268435456").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Db { pool, backend, sqlite_writer: Arc::new(Mutex::new(())), health: Arc::default(), url: Arc::from(url) })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Fails at once while the health probe finds the database down, so a request is
    /// refused in microseconds instead of after the pool's acquire timeout.
    pub fn available(&self) -> Result<(), sqlx::Error> {
        if self.health.is_down() {
            return Err(sqlx::Error::PoolTimedOut);
        }
        Ok(())
    }

    /// A pooled connection, refused at once while the database is known to be down.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Any>, sqlx::Error> {
        self.available()?;
        self.pool.acquire().await
    }

    /// Watches PostgreSQL until `stop` (see [`health`]); SQLite needs no watching. Not a
    /// tracked task: it is no work that must finish, and waiting for the tracked tasks
    /// (settlements) must not wait for it.
    pub fn spawn_health_probe(&self, stop: tokio_util::sync::CancellationToken) {
        if self.backend == Backend::Postgres {
            tokio::spawn(health::probe(self.health.clone(), self.url.to_string(), stop));
        }
    }

    /// Starts a transaction for writes (see the module doc for SQLite).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        self.available()?;
        let (writer, inner) = match self.backend {
            // IMMEDIATE takes the write lock up front (waiting under busy_timeout), so a
            // transaction that reads before it writes cannot fail to upgrade its lock
            // when a statement outside `begin()` wrote in between.
            Backend::Sqlite => {
                let writer = self.sqlite_writer.clone().lock_owned().await;
                (Some(writer), self.pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres => (None, self.pool.begin().await?),
        };
        Ok(Tx { inner, _writer: writer })
    }

    /// Cheap round trip for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// True when the error is a unique-constraint violation (both backends), so callers
/// can answer 409 instead of 500.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || db.code().as_deref() == Some("23505")
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}
