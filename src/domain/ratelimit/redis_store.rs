//! GCRA buckets in Redis: one Lua script per hit (atomic on the server), keys expire
//! by themselves once the bucket has refilled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Gcra, Verdict};

/// Bounds connecting and each command, so a dead server costs little per request.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
/// After a failed connect, requests skip Redis (fail open) for this long.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(2);

/// Key prefix, so the gateway can share a Redis with other programs.
const PREFIX: &str = "cg:rl:";

/// GCRA on one key. ARGV: now, interval, span (micros). Returns {1, 0} when allowed,
/// {0, wait micros} when refused. `%.0f` keeps every digit of a 16-digit TAT
/// (tostring would round it to 14 significant digits).
const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > span then
  return {0, next_tat - now - span}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {1, 0}
";

/// A lazily connected, self-reconnecting Redis connection; cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    script: Arc<redis::Script>,
    state: Arc<tokio::sync::Mutex<Connection>>,
}

enum Connection {
    Idle,
    Up(ConnectionManager),
    /// The last connect failed; don't retry before this instant.
    Down(Instant),
}

impl RedisStore {
    /// Parses the URL; connects on first use (a Redis that is down at start-up must
    /// not keep the gateway from starting: limits fail open until it is back).
    pub fn open(url: &str) -> anyhow::Result<RedisStore> {
        let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
        Ok(RedisStore {
            client,
            script: Arc::new(redis::Script::new(SCRIPT)),
            state: Arc::new(tokio::sync::Mutex::new(Connection::Idle)),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut state = self.state.lock().await;
        match &*state {
            Connection::Up(conn) => return Ok(conn.clone()),
            Connection::Down(until) if Instant::now() < *until => {
                return Err("not connected (retrying shortly)".into());
            }
            _ => {}
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        // Marked down first: if the caller gives up (times out) mid-connect, the next
        // requests skip Redis instead of each waiting for a connect of their own.
        *state = Connection::Down(Instant::now() + RECONNECT_BACKOFF);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(conn)) => {
                *state = Connection::Up(conn.clone());
                Ok(conn)
            }
            Ok(Err(e)) => Err(format!("cannot connect: {e}")),
            Err(_) => Err(format!("cannot connect within {} ms", CONNECT_TIMEOUT.as_millis())),
        }
    }

    /// Spends one hit of `rule` in `bucket` at `now` (micros).
    pub(super) async fn hit(&self, bucket: &str, rule: Gcra, now: i64) -> Result<Verdict, String> {
        let mut invocation = self.script.key(format!("{PREFIX}{bucket}"));
        invocation.arg(now).arg(rule.interval_micros).arg(rule.span_micros());
        let (allowed, wait): (i64, i64) =
            self.run(|mut conn| async move { invocation.invoke_async(&mut conn).await }).await?;
        Ok(if allowed == 1 {
            Verdict::Allowed
        } else {
            Verdict::Refused { retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)) }
        })
    }

    /// Runs one command (or script) on the connection within [`RESPONSE_TIMEOUT`];
    /// a failure trips the circuit (see [`Self::trip`]).
    pub(super) async fn run<T, F, Fut>(&self, command: F) -> Result<T, String>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(RESPONSE_TIMEOUT, command(conn)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.trip(e.to_string()).await),
            Err(_) => Err(self.trip(format!("no answer within {} ms", RESPONSE_TIMEOUT.as_millis())).await),
        }
    }

    /// After a failed command, skips Redis for [`RECONNECT_BACKOFF`] (then reconnects
    /// afresh), so a dead server costs one slow request per backoff, not one per request.
    async fn trip(&self, error: String) -> String {
        *self.state.lock().await = Connection::Down(Instant::now() + RECONNECT_BACKOFF);
        error
    }

    /// Answers PING (health checks, the admin page).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
