//! Whether the database answers, so a request during an outage is refused at once.
//!
//! Without this, every request that needs PostgreSQL while it is down waits the pool's
//! acquire timeout (10 s) before its 503, and holds a client connection meanwhile.
//! A probe on its own connection (never a pooled one: a busy pool is not an outage)
//! pings twice a second; after [`ROUNDS_TO_DOWN`] rounds in a row in which both the
//! ping and a reconnect failed, the database is marked down and
//! [`super::Db::available`] fails at once, until a ping succeeds again. One slow round
//! on a busy machine is not an outage. SQLite is a file in this process: it has no
//! outage to detect.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyConnection, Connection};
use tokio_util::sync::CancellationToken;

/// How often the probe pings, and how long one ping or reconnect may take: together
/// the longest a request waits for its 503 once the outage began.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Failed rounds in a row before the database counts as down. A refused connection
/// fails a round at once, so a real outage is seen within about a second.
pub const ROUNDS_TO_DOWN: u32 = 2;

/// The probe's verdict, shared by every clone of the pool.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    failed_rounds: AtomicU32,
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Records a probe round; answers whether the verdict changed (logged once).
    pub fn record(&self, answered: bool) -> bool {
        let down = if answered {
            self.failed_rounds.store(0, Ordering::Release);
            false
        } else {
            self.failed_rounds.fetch_add(1, Ordering::AcqRel).saturating_add(1) >= ROUNDS_TO_DOWN
        };
        if !answered && !down {
            return false;
        }
        self.down.swap(down, Ordering::AcqRel) != down
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
    fn two_failed_rounds_mark_down_and_a_good_one_up_each_change_reported_once() {
        let health = Health::default();
        assert!(!health.is_down());
        assert!(!health.record(true), "up and staying up is no change");
        assert!(!health.record(false), "one slow round is not an outage");
        assert!(!health.is_down());
        assert!(!health.record(true));
        assert!(!health.record(false), "the count restarted after a good round");
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
        // Two refused rounds, half a second apart; generous for a loaded machine.
        for _ in 0..1000 {
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
