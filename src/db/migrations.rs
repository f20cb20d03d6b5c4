//! Versioned schema migrations, applied in order at start-up and by `codex-gateway migrate`.
//!
//! Each migration is portable SQL with one placeholder, `{{ID}}`, for the auto-increment
//! primary key. Applied versions are recorded in `schema_migrations`; on PostgreSQL an
//! advisory lock makes several instances starting together apply each migration once.
//! Migrations only add (tables, nullable columns, indexes), so old instances keep
//! serving while a new one migrates.

use sqlx::{Connection, Executor, Row};

use super::{Backend, Db};

/// One schema step.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Never edit a released one; append a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial data model", sql: include_str!("migrations/0001_initial.sql") },
    Migration { version: 3, name: "packages and payments", sql: include_str!("migrations/0003_packages_payments.sql") },
    Migration { version: 5, name: "community features", sql: include_str!("migrations/0005_community.sql") },
    Migration { version: 7, name: "shared rate limits", sql: include_str!("migrations/0007_rate_limits.sql") },
    Migration { version: 8, name: "batched billing", sql: include_str!("migrations/0008_batched_billing.sql") },
    // Numbered after its issue so parallel branches cannot take the same version.
    Migration { version: 19, name: "plan windows", sql: include_str!("migrations/0019_plan_windows.sql") },
];

/// Arbitrary constant naming our advisory lock.
const MIGRATION_LOCK_ID: i64 = 7_406_211_901;

/// Applies pending migrations; returns how many were applied.
pub async fn migrate(db: &Db) -> Result<usize, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    if db.backend() == Backend::Postgres {
        conn.execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK_ID)).await?;
    }
    let result = apply_pending(db.backend(), &mut conn).await;
    if db.backend() == Backend::Postgres {
        conn.execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK_ID)).await?;
    }
    result
}

async fn apply_pending(backend: Backend, conn: &mut sqlx::AnyConnection) -> Result<usize, sqlx::Error> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()?;
    let id_type = match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    };
    let mut count = 0;
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        let mut tx = conn.begin().await?;
        for statement in split_statements(&migration.sql.replace("{{ID}}", id_type)) {
            tx.execute(statement.as_str()).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(chrono::Utc::now().timestamp_micros())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// Splits a migration file on `;` at line ends, dropping `--` comment lines.
fn split_statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            statements.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_and_comments_dropped() {
        let parts = split_statements("-- hi\nCREATE TABLE a (x BIGINT);\n\nCREATE INDEX b ON a (x);\n");
        assert_eq!(parts, vec!["CREATE TABLE a (x BIGINT)", "CREATE INDEX b ON a (x)"]);
    }

    #[test]
    fn versions_are_strictly_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
