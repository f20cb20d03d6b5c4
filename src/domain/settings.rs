//! Settings an admin changes at run time, stored as one JSON document in
//! `system_settings` and cached in memory for a few seconds (so other instances
//! pick changes up quickly without a query on every request).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::foundation::clock::to_micros;
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::money::Money;
use crate::foundation::secrets::SecretBox;

const SETTINGS_KEY: &str = "settings";
/// How stale a cached copy may be before it is re-read (cross-instance propagation).
const CACHE_TTL: Duration = Duration::from_secs(3);

/// All run-time settings. New fields must have defaults so old documents still load.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub registration_enabled: bool,
    pub max_keys_per_user: i64,
    /// Global per-user daily spending cap (USD); `None` = no cap.
    pub default_daily_cap: Option<Money>,
    /// Price multiplier applied to every model price (1.00 = list price).
    pub markup: Money,
    /// What buying a different package while one is active does: `queue`, `switch`
    /// or `stack` (both apply at once, the earlier-ending one paying first).
    pub package_switch_mode: String,
    /// Who pays first for users who chose nothing (`package_first` = the seed's rule).
    pub default_billing_preference: Preference,
    pub credit: CreditSettings,
    /// Output tokens the proxy assumes for the admission hold when a request sets no
    /// `max_output_tokens`/`max_completion_tokens`/`max_tokens`.
    pub hold_output_tokens: i64,
    /// The fewest output tokens a learned hold may assume (see `billing::holds`), and
    /// per-model floors that override it.
    pub hold_floor_tokens: i64,
    pub hold_floors: Vec<ModelFloor>,
    /// Upstreams tried per request before giving up (failover before the first byte).
    pub upstream_max_attempts: i64,
    /// LINUX DO Connect (OAuth2) sign-in.
    pub oauth: OAuthSettings,
    /// Proxy request rates and concurrent streams (0 = unlimited).
    pub rate_limits: RateLimitSettings,
}

/// A model's own hold floor, in output tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ModelFloor {
    pub model: String,
    pub output_tokens: i64,
}

/// Limits the proxy enforces before admitting a request (cluster-wide on PostgreSQL or
/// Redis, per instance on SQLite); 0 = unlimited.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct RateLimitSettings {
    pub key_requests_per_minute: i64,
    pub user_requests_per_minute: i64,
    /// Streams one user may run at once (0 = unlimited). It also bounds what a user can
    /// owe: each running request may cost more than its hold, so the debt is at most
    /// this many times (cost − hold), see `billing::holds`.
    pub user_max_concurrent_streams: i64,
}

/// The default per-user stream cap: a few Codex sessions with their parallel tool calls
/// fit well under it, and it turns the overspend bound into a figure out of the box
/// (32 × (cost − hold): at most 1.21 USD on gpt-5 with max_output_tokens 4,096, README
/// Billing item 5). Operators may raise it or set 0 for unlimited.
pub const DEFAULT_USER_MAX_CONCURRENT_STREAMS: i64 = 32;

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            key_requests_per_minute: 0,
            user_requests_per_minute: 0,
            user_max_concurrent_streams: DEFAULT_USER_MAX_CONCURRENT_STREAMS,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            registration_enabled: true,
            max_keys_per_user: 20,
            default_daily_cap: None,
            markup: Money::units(1),
            package_switch_mode: "queue".into(),
            default_billing_preference: Preference::PackageFirst,
            credit: CreditSettings::default(),
            hold_output_tokens: 4096,
            hold_floor_tokens: 256,
            hold_floors: Vec::new(),
            upstream_max_attempts: 3,
            oauth: OAuthSettings::default(),
            rate_limits: RateLimitSettings::default(),
        }
    }
}

/// The LINUX DO Credit / EasyPay merchant settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CreditSettings {
    pub enabled: bool,
    pub gateway_url: String,
    pub pid: String,
    /// Merchant secret; never returned by the API (reads show `key_set`).
    pub key: String,
    pub pay_type: String,
    /// Empty = derived from the public URL.
    pub notify_url: String,
    pub return_url: String,
    pub order_ttl_minutes: i64,
    /// `linuxdo` (refund via `api.php`) or `classic` (`api.php?act=refund`).
    pub flavour: String,
    pub topup_enabled: bool,
    pub topup_min: Money,
    pub topup_max: Money,
    /// USD of balance credited per 1.00 paid.
    pub topup_rate: Money,
    /// How far back reconciliation asks the gateway about unpaid orders.
    pub reconcile_window_minutes: i64,
}

impl Default for CreditSettings {
    fn default() -> Self {
        CreditSettings {
            enabled: false,
            gateway_url: "https://credit.linux.do/epay".into(),
            pid: String::new(),
            key: String::new(),
            pay_type: "epay".into(),
            notify_url: String::new(),
            return_url: String::new(),
            order_ttl_minutes: 15,
            flavour: "linuxdo".into(),
            topup_enabled: true,
            topup_min: Money::units(1),
            topup_max: Money::units(1000),
            topup_rate: Money::units(1),
            reconcile_window_minutes: 24 * 60,
        }
    }
}

impl CreditSettings {
    /// Payments are offered only when switched on and every merchant field is set.
    pub fn is_usable(&self) -> bool {
        self.enabled && !self.gateway_url.is_empty() && !self.pid.is_empty() && !self.key.is_empty()
    }

    pub fn notify_url_or_default(&self, public_url: &str) -> String {
        if self.notify_url.is_empty() {
            format!("{public_url}/api/payment/credit/notify")
        } else {
            self.notify_url.clone()
        }
    }

    pub fn return_url_or_default(&self, public_url: &str) -> String {
        if self.return_url.is_empty() {
            format!("{public_url}/packages")
        } else {
            self.return_url.clone()
        }
    }
}

/// LINUX DO Connect (OAuth2 authorization code + PKCE) sign-in; the endpoints default to
/// LINUX DO and may point at any compatible provider. Password registration stays
/// governed by `registration_enabled`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuthSettings {
    pub enabled: bool,
    pub client_id: String,
    /// Never returned by the API (reads show `client_secret_set`).
    pub client_secret: String,
    pub authorize_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    /// Whether a first LINUX DO sign-in may create an account.
    pub allow_oauth_registration: bool,
    /// Lowest LINUX DO trust level (0-4) allowed to sign in; 0 = everyone.
    pub min_trust_level: i64,
    /// Turns password sign-in and registration off for everyone but admins.
    pub linuxdo_only: bool,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        OAuthSettings {
            enabled: false,
            client_id: String::new(),
            client_secret: String::new(),
            authorize_url: "https://connect.linux.do/oauth2/authorize".into(),
            token_url: "https://connect.linux.do/oauth2/token".into(),
            userinfo_url: "https://connect.linux.do/api/user".into(),
            allow_oauth_registration: true,
            min_trust_level: 0,
            linuxdo_only: false,
        }
    }
}

impl OAuthSettings {
    /// Sign-in is offered only when switched on and the client is configured.
    pub fn is_usable(&self) -> bool {
        self.enabled && !self.client_id.is_empty() && !self.client_secret.is_empty()
    }
}

/// Cached settings shared by all handlers of one process.
#[derive(Clone)]
pub struct SettingsStore {
    db: Db,
    secrets: SecretBox,
    cache: Arc<RwLock<(Arc<Settings>, Instant)>>,
    /// Set when another instance changed the settings (see [`crate::foundation::cluster`]).
    stale: Arc<std::sync::atomic::AtomicBool>,
}

impl Settings {
    /// Applies `f` to every credential field (sealing before storage, opening after).
    fn map_secrets(mut self, f: impl Fn(&str) -> String) -> Settings {
        self.credit.key = f(&self.credit.key);
        self.oauth.client_secret = f(&self.oauth.client_secret);
        self
    }
}

impl SettingsStore {
    pub async fn load(db: Db, secrets: SecretBox) -> Result<Self> {
        let settings = read(&db, &secrets).await?;
        let cache = Arc::new(RwLock::new((Arc::new(settings), Instant::now())));
        Ok(SettingsStore { db, secrets, cache, stale: Arc::default() })
    }

    /// Current settings (re-read when the cached copy is older than a few seconds).
    pub async fn get(&self) -> Result<Arc<Settings>> {
        {
            let guard = self.cache.read().await;
            let fresh = guard.1.elapsed() < CACHE_TTL && !self.stale.load(std::sync::atomic::Ordering::Acquire);
            // During an outage the last settings read serve on: the proxy keeps serving
            // users it has headroom hints for, and nothing can change them meanwhile.
            if fresh || self.db.available().is_err() {
                return Ok(guard.0.clone());
            }
        }
        self.stale.store(false, std::sync::atomic::Ordering::Release);
        let fresh = Arc::new(read(&self.db, &self.secrets).await?);
        *self.cache.write().await = (fresh.clone(), Instant::now());
        Ok(fresh)
    }

    /// Makes the next [`SettingsStore::get`] re-read (another instance saved).
    pub fn invalidate_local(&self) {
        self.stale.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Stores new settings, refreshes this process's cache at once and tells the
    /// other instances to drop theirs.
    pub async fn save(&self, settings: Settings, now: DateTime<Utc>) -> Result<Arc<Settings>> {
        let sealed = settings.clone().map_secrets(|s| self.secrets.seal(s));
        let json =
            serde_json::to_string(&sealed).map_err(|e| crate::foundation::error::Error::internal(e.to_string()))?;
        sqlx::query(
            "INSERT INTO system_settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(SETTINGS_KEY)
        .bind(json)
        .bind(to_micros(now))
        .execute(self.db.pool())
        .await?;
        let settings = Arc::new(settings);
        *self.cache.write().await = (settings.clone(), Instant::now());
        crate::foundation::cluster::publish(&self.db, crate::foundation::cluster::Topic::Settings).await;
        Ok(settings)
    }
}

async fn read(db: &Db, secrets: &SecretBox) -> Result<Settings> {
    let value: Option<String> = sqlx::query_scalar("SELECT value FROM system_settings WHERE key = $1")
        .bind(SETTINGS_KEY)
        .fetch_optional(db.pool())
        .await?;
    let stored = match value {
        Some(json) => serde_json::from_str(&json).unwrap_or_else(|e| {
            tracing::error!(error = %e, "stored settings are unreadable; using defaults");
            Settings::default()
        }),
        None => Settings::default(),
    };
    Ok(stored.map_secrets(|s| {
        secrets.open(s).unwrap_or_else(|| {
            tracing::error!("a stored credential cannot be decrypted (GATEWAY_SECRET changed?); treating it as unset");
            String::new()
        })
    }))
}
/// Who pays first: the user's choice (`users.billing_preference`), else the admin default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// The seed's rule: the package while its windows have room, then the balance.
    #[default]
    PackageFirst,
    /// The balance while it lasts, then the package.
    BalanceFirst,
    /// Only the package; refused (with the earliest reset) when it has no room.
    PackageOnly,
    /// Only the balance; packages are kept for later.
    BalanceOnly,
}

impl Preference {
    pub const ALL: [Preference; 4] =
        [Preference::PackageFirst, Preference::BalanceFirst, Preference::PackageOnly, Preference::BalanceOnly];

    /// The name in the API and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Preference::PackageFirst => "package_first",
            Preference::BalanceFirst => "balance_first",
            Preference::PackageOnly => "package_only",
            Preference::BalanceOnly => "balance_only",
        }
    }

    /// Parses [`Preference::as_str`].
    pub fn parse(name: &str) -> Option<Preference> {
        Preference::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// A stored value; absent or unknown means the admin default.
    pub fn stored_or(value: Option<&str>, default: Preference) -> Preference {
        value.and_then(Preference::parse).unwrap_or(default)
    }
}
