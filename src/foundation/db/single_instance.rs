//! One serving instance per SQLite file.
//!
//! Several gateways on one SQLite file are not a supported setup: on SQLite the per-user
//! stream cap, the request-rate limits and the login throttle are counted in each
//! process's memory, and a change that must reach every instance at once (a user's
//! admission hint dropped after a suspension, a debit or a revoked key; the settings and
//! upstream caches) is published only on PostgreSQL (`pg_notify`). A second process
//! on the same file would double the stream cap (and with it the overspend bound of
//! README Billing, item 5) and keep serving on a hint another instance has revoked. So a
//! serving instance claims the file with an exclusive `flock` on a lock file next to it,
//! and a second one refuses to start, saying why and what to do instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The claim on a SQLite file; released when dropped (or when the process dies: the
/// kernel drops a `flock` with its last descriptor, so a killed instance never blocks
/// its restart).
#[derive(Debug)]
pub struct SqliteClaim {
    _file: File,
    path: PathBuf,
}

impl SqliteClaim {
    /// The lock file (next to the database file).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why an instance may not serve a SQLite file.
#[derive(Debug)]
pub enum ClaimError {
    /// Another live process holds the file.
    Taken { database: PathBuf, holder: Option<u32> },
    /// The lock file cannot be created or locked for another reason.
    Io { lock: PathBuf, error: std::io::Error },
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimError::Taken { database, holder } => {
                let who = holder.map_or_else(|| "another process".to_string(), |pid| format!("process {pid}"));
                write!(
                    f,
                    "another codex-gateway instance ({who}) is already serving the SQLite database {}: \
                     several instances on one SQLite file are not supported (on SQLite the per-user stream \
                     cap, rate limits and the invalidation of admission hints and caches are per process). \
                     Stop the other instance, or point every instance at one PostgreSQL database \
                     (DATABASE_URL=postgres://…)",
                    database.display()
                )
            }
            ClaimError::Io { lock, error } => {
                write!(f, "cannot lock {} to serve its SQLite database alone: {error}", lock.display())
            }
        }
    }
}

impl std::error::Error for ClaimError {}

/// Claims the SQLite file `url` names for this process; `Ok(None)` for PostgreSQL and
/// for an in-memory SQLite database (nothing another process could share).
pub fn claim_sqlite_file(url: &str) -> Result<Option<SqliteClaim>, ClaimError> {
    let Some(database) = sqlite_file(url) else {
        return Ok(None);
    };
    let mut name = database.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".instance.lock");
    let lock = database.with_file_name(name);
    let io = |error| ClaimError::Io { lock: lock.clone(), error };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(ClaimError::Taken { database, holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Who holds it, for the refusal a second instance prints (best effort).
    let _ = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| writeln!(file, "{}", std::process::id()));
    Ok(Some(SqliteClaim { _file: file, path: lock }))
}

/// The file a `sqlite:` URL names, resolved (symlinks, `./`) so two spellings of one
/// file claim one lock; `None` for other URLs and in-memory databases.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    // An in-memory database has a `file:…` name that exists nowhere on disk.
    std::fs::canonicalize(options.get_filename()).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cg-claim-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_claim_on_one_sqlite_file_is_refused_naming_the_holder_and_postgresql() {
        let dir = temp("second");
        std::fs::write(dir.join("gateway.db"), b"").unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("gateway.db").display());
        let first = claim_sqlite_file(&url).unwrap().unwrap();
        assert!(first.path().ends_with("gateway.db.instance.lock"));
        // Another spelling of the same file claims the same lock.
        let other = format!("sqlite://{}/./gateway.db", dir.display());
        let refused = claim_sqlite_file(&other).unwrap_err().to_string();
        assert!(refused.contains(&format!("process {}", std::process::id())), "{refused}");
        assert!(refused.contains("not supported") && refused.contains("PostgreSQL"), "{refused}");
        drop(first);
        // Released with the claim (and by the kernel when a process dies).
        assert!(claim_sqlite_file(&url).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn postgresql_and_in_memory_sqlite_claim_nothing() {
        assert!(claim_sqlite_file("postgres://u@127.0.0.1/db").unwrap().is_none());
        assert!(claim_sqlite_file("sqlite::memory:").unwrap().is_none());
    }
}
