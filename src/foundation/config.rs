//! Start-up configuration: environment variables over an optional TOML file over defaults.
//!
//! Only what must be known before the database is open lives here (where to listen,
//! which database, the secret, the business zone). Everything an admin may change at
//! run time lives in `system_settings` (see [`crate::domain::settings`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::foundation::clock::BusinessCalendar;

/// A setting that is missing or invalid, named so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration error in {name}: {message}")]
pub struct ConfigError {
    pub name: String,
    pub message: String,
}

impl ConfigError {
    fn new(name: &str, message: impl Into<String>) -> Self {
        Self { name: name.to_string(), message: message.into() }
    }
}

/// Everything the process needs before it can open the database.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub listen: SocketAddr,
    /// Base URL users reach the site at (used for payment callbacks and snippets).
    pub public_url: String,
    pub calendar: BusinessCalendar,
    /// Signs CSRF tokens and encrypts stored credentials.
    pub secret: SecretString,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub upstream_connect_timeout: Duration,
    pub upstream_first_byte_timeout: Duration,
    /// Longest silence allowed between two chunks of an upstream answer; a stream that
    /// stalls longer is cut and settled on what was measured (never hangs a hold).
    pub upstream_idle_timeout: Duration,
    pub json_logs: bool,
    /// Mounts the built-in Credit payment simulator (never on by accident: logged loudly).
    pub pay_sandbox: bool,
    /// Runs background jobs (expiry, reconciliation, health probes) in this process.
    pub run_jobs: bool,
    /// Keeps the crash journal under `data_dir/journal` (see `proxy::journal`): off only
    /// to measure what it costs.
    pub journal: bool,
    /// When set, `/metrics` requires `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
    /// `REDIS_URL`: when set, request-rate limits and the login throttle are counted in
    /// Redis so every instance shares them (otherwise in PostgreSQL, or in memory on SQLite).
    pub redis_url: Option<SecretString>,
    /// `GATEWAY_TRUSTED_PROXIES`: peers (CIDRs) whose `X-Forwarded-For`/`X-Real-IP` name
    /// the client (see [`crate::foundation::client_ip`]). Default none: the peer is the client.
    pub trusted_proxies: Vec<crate::foundation::client_ip::Cidr>,
    /// `GATEWAY_CODEX_INSTRUCTIONS_FILE`: the agent prompt the Codex catalogue
    /// (`GET /v1/models?client_version=…`) gives each model as `base_instructions`.
    /// Codex uses that text as its whole system prompt, so without it the catalogue
    /// lists no model and Codex keeps its own built-in prompt (see `proxy::codex_models`).
    pub codex_instructions: Option<std::sync::Arc<str>>,
}

/// Keys of the optional TOML file; each mirrors an environment variable.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    listen: Option<String>,
    public_url: Option<String>,
    timezone: Option<String>,
    secret: Option<String>,
    data_dir: Option<String>,
    max_body_bytes: Option<usize>,
    upstream_connect_timeout_secs: Option<u64>,
    upstream_first_byte_timeout_secs: Option<u64>,
    upstream_idle_timeout_secs: Option<u64>,
    log_format: Option<String>,
    pay_sandbox: Option<bool>,
    run_jobs: Option<bool>,
    journal: Option<bool>,
    metrics_token: Option<String>,
    redis_url: Option<String>,
    trusted_proxies: Option<String>,
    codex_instructions_file: Option<String>,
}

/// Default request body limit: Codex prompts with long histories are large.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

impl Config {
    /// Reads the process environment (and `GATEWAY_CONFIG` if set).
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Builds the configuration from a variable map (tests pass their own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let file = match get("GATEWAY_CONFIG") {
            Some(path) => read_file_config(&path)?,
            None => FileConfig::default(),
        };

        let data_dir = PathBuf::from(get("GATEWAY_DATA_DIR").or(file.data_dir).unwrap_or_else(|| "./data".into()));
        let database_url = match get("DATABASE_URL").or(file.database_url) {
            Some(url) => url,
            None => {
                std::fs::create_dir_all(&data_dir).map_err(|e| {
                    ConfigError::new("GATEWAY_DATA_DIR", format!("cannot create {}: {e}", data_dir.display()))
                })?;
                format!("sqlite://{}?mode=rwc", data_dir.join("gateway.db").display())
            }
        };
        if !(database_url.starts_with("sqlite:") || database_url.starts_with("postgres")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "must start with sqlite:// or postgres:// (e.g. sqlite://data/gateway.db?mode=rwc)",
            ));
        }

        let listen_text = get("GATEWAY_LISTEN").or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::new("GATEWAY_LISTEN", format!("`{listen_text}` is not host:port")))?;

        let public_url = get("GATEWAY_PUBLIC_URL")
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{listen}"))
            .trim_end_matches('/')
            .to_string();
        url::Url::parse(&public_url)
            .map_err(|e| ConfigError::new("GATEWAY_PUBLIC_URL", format!("`{public_url}`: {e}")))?;

        let zone = get("GATEWAY_TIMEZONE").or(file.timezone).unwrap_or_else(|| "Asia/Shanghai".into());
        let calendar = BusinessCalendar::from_name(&zone).map_err(|m| ConfigError::new("GATEWAY_TIMEZONE", m))?;

        let secret = match get("GATEWAY_SECRET").or(file.secret) {
            Some(s) if s.len() < 16 => {
                return Err(ConfigError::new("GATEWAY_SECRET", "must be at least 16 characters"));
            }
            Some(s) => SecretString::from(s),
            None => load_or_create_secret(&data_dir)?,
        };

        let max_body_bytes = match get("GATEWAY_MAX_BODY_BYTES") {
            Some(v) => parse_number("GATEWAY_MAX_BODY_BYTES", &v)?,
            None => file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
        };
        let connect_secs = match get("GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS") {
            Some(v) => parse_number("GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS", &v)?,
            None => file.upstream_connect_timeout_secs.unwrap_or(10),
        };
        let first_byte_secs = match get("GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS") {
            Some(v) => parse_number("GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS", &v)?,
            None => file.upstream_first_byte_timeout_secs.unwrap_or(300),
        };
        let idle_secs = match get("GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS") {
            Some(v) => parse_number("GATEWAY_UPSTREAM_IDLE_TIMEOUT_SECS", &v)?,
            None => file.upstream_idle_timeout_secs.unwrap_or(300),
        };
        let log_format = get("GATEWAY_LOG_FORMAT").or(file.log_format).unwrap_or_else(|| "text".into());
        let json_logs = match log_format.as_str() {
            "text" => false,
            "json" => true,
            other => return Err(ConfigError::new("GATEWAY_LOG_FORMAT", format!("`{other}`: use text or json"))),
        };
        let pay_sandbox = match get("GATEWAY_PAY_SANDBOX") {
            Some(v) => parse_bool("GATEWAY_PAY_SANDBOX", &v)?,
            None => file.pay_sandbox.unwrap_or(false),
        };
        let run_jobs = match get("GATEWAY_RUN_JOBS") {
            Some(v) => parse_bool("GATEWAY_RUN_JOBS", &v)?,
            None => file.run_jobs.unwrap_or(true),
        };
        let journal = match get("GATEWAY_JOURNAL") {
            Some(v) => parse_bool("GATEWAY_JOURNAL", &v)?,
            None => file.journal.unwrap_or(true),
        };

        let metrics_token = get("GATEWAY_METRICS_TOKEN").or(file.metrics_token);
        let redis_url = match get("REDIS_URL").or(file.redis_url) {
            Some(url) if url.starts_with("redis://") => Some(SecretString::from(url)),
            Some(_) => {
                return Err(ConfigError::new("REDIS_URL", "must start with redis:// (e.g. redis://127.0.0.1:6379/0)"));
            }
            None => None,
        };
        let trusted_proxies = match get("GATEWAY_TRUSTED_PROXIES").or(file.trusted_proxies) {
            Some(list) => crate::foundation::client_ip::Cidr::parse_list(&list)
                .map_err(|message| ConfigError::new("GATEWAY_TRUSTED_PROXIES", message))?,
            None => Vec::new(),
        };

        let codex_instructions = match get("GATEWAY_CODEX_INSTRUCTIONS_FILE").or(file.codex_instructions_file) {
            Some(path) => Some(read_instructions(&path)?),
            None => None,
        };

        Ok(Config {
            database_url,
            listen,
            public_url,
            calendar,
            secret,
            data_dir,
            max_body_bytes,
            upstream_connect_timeout: Duration::from_secs(connect_secs),
            upstream_first_byte_timeout: Duration::from_secs(first_byte_secs),
            upstream_idle_timeout: Duration::from_secs(idle_secs.max(1)),
            json_logs,
            pay_sandbox,
            run_jobs,
            journal,
            metrics_token,
            redis_url,
            trusted_proxies,
            codex_instructions,
        })
    }

    /// The database kind, for log lines.
    pub fn database_kind(&self) -> &'static str {
        if self.database_url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        }
    }

    /// Secret bytes for HMAC/encryption keys.
    pub fn secret_bytes(&self) -> &[u8] {
        self.secret.expose_secret().as_bytes()
    }
}

/// The Codex agent prompt file: read once at start, and never empty (an empty prompt
/// would leave Codex with no system prompt at all).
fn read_instructions(path: &str) -> Result<std::sync::Arc<str>, ConfigError> {
    let name = "GATEWAY_CODEX_INSTRUCTIONS_FILE";
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(name, format!("cannot read {path}: {e}")))?;
    if text.trim().is_empty() {
        return Err(ConfigError::new(name, format!("{path} is empty")));
    }
    Ok(text.into())
}

fn read_file_config(path: &str) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("GATEWAY_CONFIG", format!("cannot read {path}: {e}")))?;
    toml::from_str(&text).map_err(|e| ConfigError::new("GATEWAY_CONFIG", format!("{path}: {e}")))
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::new(name, format!("`{value}` is not a non-negative integer")))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(name, format!("`{value}` is not true/false"))),
    }
}

/// Keeps a generated secret in the data dir so sessions survive restarts.
fn load_or_create_secret(data_dir: &Path) -> Result<SecretString, ConfigError> {
    let path = data_dir.join("secret");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if existing.len() >= 16 {
            return Ok(SecretString::from(existing));
        }
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ConfigError::new("GATEWAY_SECRET", format!("cannot create {}: {e}", data_dir.display())))?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    write_private(&path, &secret)
        .map_err(|e| ConfigError::new("GATEWAY_SECRET", format!("cannot write {}: {e}", path.display())))?;
    Ok(SecretString::from(secret))
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_put_sqlite_and_the_secret_under_the_data_dir() {
        let dir = std::env::temp_dir().join(format!("cg-config-{}", std::process::id()));
        let config = Config::from_vars(&vars(&[("GATEWAY_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert!(config.database_url.starts_with("sqlite://"));
        assert!(config.database_url.contains("gateway.db"));
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.calendar.zone_name(), "Asia/Shanghai");
        let again = Config::from_vars(&vars(&[("GATEWAY_DATA_DIR", dir.to_str().unwrap())])).unwrap();
        assert_eq!(config.secret.expose_secret(), again.secret.expose_secret());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn invalid_settings_name_themselves() {
        let err = Config::from_vars(&vars(&[("GATEWAY_LISTEN", "nope"), ("GATEWAY_SECRET", "0123456789abcdef")]))
            .unwrap_err();
        assert_eq!(err.name, "GATEWAY_LISTEN");
        let err =
            Config::from_vars(&vars(&[("GATEWAY_TIMEZONE", "Nowhere/City"), ("GATEWAY_SECRET", "0123456789abcdef")]))
                .unwrap_err();
        assert_eq!(err.name, "GATEWAY_TIMEZONE");
        let err = Config::from_vars(&vars(&[("DATABASE_URL", "mysql://x"), ("GATEWAY_SECRET", "0123456789abcdef")]))
            .unwrap_err();
        assert_eq!(err.name, "DATABASE_URL");
        let err = Config::from_vars(&vars(&[("GATEWAY_SECRET", "short")])).unwrap_err();
        assert_eq!(err.name, "GATEWAY_SECRET");
        let err = Config::from_vars(&vars(&[("REDIS_URL", "localhost:6379"), ("GATEWAY_SECRET", "0123456789abcdef")]))
            .unwrap_err();
        assert_eq!(err.name, "REDIS_URL");
    }

    #[test]
    fn redis_is_optional_and_kept_secret_in_debug_output() {
        let base = [("GATEWAY_SECRET", "0123456789abcdef"), ("DATABASE_URL", "sqlite://unused.db")];
        assert!(Config::from_vars(&vars(&base)).unwrap().redis_url.is_none());
        let config =
            Config::from_vars(&vars(&[base[0], base[1], ("REDIS_URL", "redis://:hunter2@cache:6379/0")])).unwrap();
        assert_eq!(config.redis_url.as_ref().unwrap().expose_secret(), "redis://:hunter2@cache:6379/0");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
