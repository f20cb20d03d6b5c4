//! Whether the database answers, so a request during an outage is refused at once.
//!
//! Without this, every request that needs PostgreSQL while it is down waits the pool's
//! acquire timeout (10 s) before its 503, and holds a client connection meanwhile.
//! A probe on its own connection (never a pooled one: a busy pool is not an outage)
//! pings twice a second; after a failed ping and a failed reconnect the database is
//! marked down and [`super::Db::available`] fails at once, until a ping succeeds again.
//! SQLite is a file in this process: it has no outage to detect.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tokio_util::sync::CancellationToken;

/// How often the probe pings, and how long one ping or reconnect may take: together
/// the longest a request waits for its 503 once the outage began.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The probe's verdict, shared by every clone of the pool.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Records a probe result; answers whether the state changed (logged once).
    pub fn record(&self, answered: bool) -> bool {
        self.down.swap(!answered, Ordering::AcqRel) == answered
    }
}

/// Runs the probe until `stop`; a no-op on SQLite.
pub async fn probe(health: Arc<Health>, url: String, stop: CancellationToken) {
    let mut conn: Option<AnyConnection> = None;
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let answered = ping(&mut conn, &url).await || {
            conn = None;
            ping(&mut conn, &url).await
        };
        if health.record(answered) {
            if answered {
                tracing::warn!("the database answers again; requests are served from it");
            } else {
                tracing::error!("the database does not answer; requests that need it are refused at once (503)");
            }
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

/// One ping on the probe's connection, opening it first if needed.
async fn ping(conn: &mut Option<AnyConnection>, url: &str) -> bool {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(AnyConnection::connect(url).await?);
        }
        match conn.as_mut() {
            Some(c) => c.ping().await,
            None => Ok(()),
        }
    };
    matches!(tokio::time::timeout(PROBE_TIMEOUT, attempt).await, Ok(Ok(())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_marks_down_and_a_good_one_up_each_change_reported_once() {
        let health = Health::default();
        assert!(!health.is_down());
        assert!(!health.record(true), "up and staying up is no change");
        assert!(health.record(false));
        assert!(health.is_down());
        assert!(!health.record(false), "still down: reported once");
        assert!(health.record(true));
        assert!(!health.is_down());
    }

    #[tokio::test]
    async fn a_probe_of_an_unreachable_server_marks_it_down_within_a_round() {
        // A port nothing listens on: the connect is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let url = format!("postgres://nobody@127.0.0.1:{}/none", port.unwrap_or(9));
        sqlx::any::install_default_drivers();
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(probe(health.clone(), url, stop.clone()));
        for _ in 0..100 {
            if health.is_down() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(health.is_down());
        stop.cancel();
        let _ = task.await;
    }
}
