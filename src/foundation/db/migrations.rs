//! Versioned schema migrations, applied in order at start-up and by `codex-gateway migrate`.
//!
//! Each migration is portable SQL with one placeholder, `{{ID}}`, for the auto-increment
//! primary key. Applied versions are recorded in `schema_migrations`; on PostgreSQL an
//! advisory lock makes several instances starting together apply each migration once.
//! Migrations only add (tables, nullable columns, indexes) or relax (a NOT NULL made
//! optional), so old instances keep serving while a new one migrates, with one limit: a
//! relaxed column is read as required by older binaries, so once a row leaves it NULL
//! (migration 20: a package without a daily limit) every instance must run the new one.
//!
//! Relaxing a column is the one step the backends cannot share: PostgreSQL runs
//! `ALTER COLUMN .. DROP NOT NULL`, while SQLite cannot alter a column and rebuilds
//! the table instead ([`relax_sqlite_table`], SQLite's documented procedure, from the
//! table's own stored definition, so columns added by any migration are kept).

use sqlx::{Connection, Executor, Row};

use super::{Backend, Db};

/// One schema step.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
    /// Columns (table, column) whose NOT NULL is dropped after `sql` runs.
    pub relax: &'static [(&'static str, &'static str)],
}

/// Every migration, oldest first. Never edit a released one; append a new one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "initial data model", sql: include_str!("migrations/0001_initial.sql"), relax: &[] },
    Migration {
        version: 3,
        name: "packages and payments",
        sql: include_str!("migrations/0003_packages_payments.sql"),
        relax: &[],
    },
    Migration {
        version: 5,
        name: "community features",
        sql: include_str!("migrations/0005_community.sql"),
        relax: &[],
    },
    Migration {
        version: 7,
        name: "shared rate limits",
        sql: include_str!("migrations/0007_rate_limits.sql"),
        relax: &[],
    },
    Migration {
        version: 8,
        name: "batched billing",
        sql: include_str!("migrations/0008_batched_billing.sql"),
        relax: &[],
    },
    // Numbered after its issue so parallel branches cannot take the same version.
    Migration { version: 19, name: "plan windows", sql: include_str!("migrations/0019_plan_windows.sql"), relax: &[] },
    // Issue 19 still: a plan may have no daily window (the API contract's `daily_limit: null`).
    Migration {
        version: 20,
        name: "optional daily limit",
        sql: include_str!("migrations/0020_optional_daily_limit.sql"),
        relax: &[("packages", "daily_limit"), ("user_packages", "daily_limit")],
    },
];

/// Arbitrary constant naming our advisory lock.
const MIGRATION_LOCK_ID: i64 = 7_406_211_901;

/// Applies pending migrations; returns how many were applied.
pub async fn migrate(db: &Db) -> Result<usize, sqlx::Error> {
    migrate_up_to(db, i64::MAX).await
}

/// Applies the pending migrations up to `version` included: a database as an older
/// release left it (the tests of a migration's handling of existing rows use it).
pub async fn migrate_up_to(db: &Db, version: i64) -> Result<usize, sqlx::Error> {
    let mut conn = db.pool().acquire().await?;
    if db.backend() == Backend::Postgres {
        conn.execute(sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK_ID)).await?;
    }
    let result = apply_pending(db.backend(), &mut conn, version).await;
    if db.backend() == Backend::Postgres {
        conn.execute(sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK_ID)).await?;
    }
    result
}

async fn apply_pending(backend: Backend, conn: &mut sqlx::AnyConnection, up_to: i64) -> Result<usize, sqlx::Error> {
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
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version) && m.version <= up_to) {
        let rebuilds = backend == Backend::Sqlite && !migration.relax.is_empty();
        if rebuilds {
            // A rebuild drops and renames tables other tables refer to; SQLite's
            // procedure turns foreign keys off around it (only possible outside a
            // transaction) and checks them before committing.
            conn.execute("PRAGMA foreign_keys = OFF").await?;
        }
        let applied = apply_one(backend, conn, migration, id_type).await;
        if rebuilds {
            conn.execute("PRAGMA foreign_keys = ON").await?;
        }
        applied?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
        count += 1;
    }
    Ok(count)
}

/// Runs one migration and records it, in one transaction.
async fn apply_one(
    backend: Backend,
    conn: &mut sqlx::AnyConnection,
    migration: &Migration,
    id_type: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = conn.begin().await?;
    for statement in split_statements(&migration.sql.replace("{{ID}}", id_type)) {
        tx.execute(statement.as_str()).await?;
    }
    match backend {
        Backend::Postgres => {
            for (table, column) in migration.relax {
                tx.execute(format!("ALTER TABLE {table} ALTER COLUMN {column} DROP NOT NULL").as_str()).await?;
            }
        }
        Backend::Sqlite => {
            let mut tables: Vec<&str> = migration.relax.iter().map(|(t, _)| *t).collect();
            tables.dedup();
            for table in tables {
                let columns: Vec<&str> = migration.relax.iter().filter(|(t, _)| *t == table).map(|(_, c)| *c).collect();
                relax_sqlite_table(&mut tx, table, &columns).await?;
            }
            let broken: Vec<sqlx::any::AnyRow> = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *tx).await?;
            if !broken.is_empty() {
                return Err(sqlx::Error::Protocol(format!(
                    "migration {} would leave {} rows with a dangling foreign key",
                    migration.version,
                    broken.len()
                )));
            }
        }
    }
    sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
        .bind(migration.version)
        .bind(migration.name)
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Rebuilds a SQLite table with the NOT NULL of `columns` dropped, keeping its rows,
/// indexes and AUTOINCREMENT counter: create the new table from the stored definition,
/// copy, drop the old one, rename, recreate the indexes. The caller has turned
/// foreign keys off (see [`apply_pending`]).
async fn relax_sqlite_table(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    columns: &[&str],
) -> Result<(), sqlx::Error> {
    let create: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1")
        .bind(table)
        .fetch_one(&mut **tx)
        .await?;
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = $1 AND sql IS NOT NULL")
            .bind(table)
            .fetch_all(&mut **tx)
            .await?;
    let sequence: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = $1")
        .bind(table)
        .fetch_optional(&mut **tx)
        .await?;
    let rebuilt = format!("{table}_rebuilt");
    let definition = relaxed_definition(&create, &rebuilt, columns)
        .ok_or_else(|| sqlx::Error::Protocol(format!("cannot read the definition of {table}: {create}")))?;
    tx.execute(definition.as_str()).await?;
    tx.execute(format!("INSERT INTO {rebuilt} SELECT * FROM {table}").as_str()).await?;
    tx.execute(format!("DROP TABLE {table}").as_str()).await?;
    tx.execute(format!("ALTER TABLE {rebuilt} RENAME TO {table}").as_str()).await?;
    for index in indexes {
        tx.execute(index.as_str()).await?;
    }
    if let Some(seq) = sequence {
        sqlx::query("DELETE FROM sqlite_sequence WHERE name = $1").bind(table).execute(&mut **tx).await?;
        sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ($1, $2)")
            .bind(table)
            .bind(seq)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A stored `CREATE TABLE` statement renamed to `new_name`, with `NOT NULL` removed
/// from the definitions of `columns`; `None` when it cannot be read.
fn relaxed_definition(create: &str, new_name: &str, columns: &[&str]) -> Option<String> {
    let open = create.find('(')?;
    let close = create.rfind(')')?;
    let body = create.get(open + 1..close)?;
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in body.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    let mut found = 0;
    let relaxed: Vec<String> = parts
        .into_iter()
        .map(|part| {
            let name = part.split_whitespace().next().unwrap_or("").trim_matches(|c| c == '"' || c == '`');
            if columns.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                found += 1;
                remove_not_null(part)
            } else {
                part.to_string()
            }
        })
        .collect();
    (found == columns.len()).then(|| format!("CREATE TABLE {new_name} ({})", relaxed.join(",")))
}

/// A column definition without its `NOT NULL` (any case and spacing).
fn remove_not_null(definition: &str) -> String {
    let words: Vec<&str> = definition.split_whitespace().collect();
    let mut kept = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if words[i].eq_ignore_ascii_case("NOT") && words.get(i + 1).is_some_and(|w| w.eq_ignore_ascii_case("NULL")) {
            i += 2;
            continue;
        }
        kept.push(words[i]);
        i += 1;
    }
    format!(" {}", kept.join(" "))
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
    fn a_relaxed_definition_keeps_every_other_column_and_constraint() {
        let create =
            "CREATE TABLE packages (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    name TEXT NOT NULL,\n    \
                      daily_limit BIGINT NOT NULL,\n    price NUMERIC(10, 2) not null DEFAULT 0\n, models TEXT)";
        let relaxed = relaxed_definition(create, "packages_rebuilt", &["daily_limit"]).unwrap();
        assert_eq!(
            relaxed,
            "CREATE TABLE packages_rebuilt (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,\n    name TEXT NOT NULL, \
             daily_limit BIGINT,\n    price NUMERIC(10, 2) not null DEFAULT 0\n, models TEXT)"
        );
        assert_eq!(relaxed_definition(create, "x", &["missing"]), None, "an unknown column is an error");
        assert_eq!(remove_not_null(" a BIGINT not  NULL DEFAULT 1"), " a BIGINT DEFAULT 1");
    }

    #[test]
    fn versions_are_strictly_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
