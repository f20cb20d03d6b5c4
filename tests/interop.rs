//! Interoperability: the real Codex CLI (`codex exec` with a custom provider) and the
//! `openai` Python SDK talk to the gateway, which forwards to the in-process mock
//! upstream. Each test checks the answer text and the usage row.
//!
//! When `codex` or `python3` + `openai` are missing, the tests skip with a notice —
//! unless `CI` is set, where they fail (`.ci/run` installs both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::process::Stdio;
use std::time::Duration;

use codex_gateway::domain::proxy::mock::{serve_mock, MockHandle, MockOptions};
use helpers::{spawn_app, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::json;

struct Setup {
    key: String,
    mock: MockHandle,
}

async fn setup(app: &TestApp) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockOptions::default()).await.unwrap();
    let admin = app.admin_token().await;
    let r = app
        .post("/api/admin/upstreams", &admin, json!({"name": "mock", "base_url": mock.base_url(), "api_key": "sk-up"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let (user_id, token) = app.register_and_login("interop@example.com").await;
    app.fund(&admin, user_id, "10").await;
    let key = app.post("/api/user/keys", &token, json!({"name": "interop"})).await;
    Setup { key: key.body["key"].as_str().unwrap().to_string(), mock }
}

/// Whether a tool is usable; without it, skip locally but fail in CI.
fn available(check: &mut std::process::Command, what: &str) -> bool {
    let ok = check.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{what} is required in CI (see .ci/run) but is missing");
        eprintln!("SKIPPED: {what} is not installed");
    }
    ok
}

type UsageRow = (String, String, i64, i64, i64, i64, i64, i64);

async fn usage_rows(app: &TestApp, n: usize) -> Vec<UsageRow> {
    for _ in 0..500 {
        let rows: Vec<UsageRow> = sqlx::query_as(
            "SELECT endpoint, model, streamed, input_tokens, cached_tokens, \
               output_tokens, cost, estimated FROM usage_logs ORDER BY id",
        )
        .fetch_all(app.db.pool())
        .await
        .unwrap();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} usage rows");
}

/// How the custom provider gets the key: Codex's usual `env_key`, or an auth command
/// (Codex asks such a provider for its model catalogue; it never asks an `env_key` one).
const ENV_KEY: &str = "env_key = \"CODEXGW_API_KEY\"";
const AUTH_COMMAND: &str = "auth = { command = \"printenv\", args = [\"CODEXGW_API_KEY\"] }";

/// Runs `codex exec` against the gateway with the custom provider (`provider_extra`
/// added to its table: [`ENV_KEY`] or [`AUTH_COMMAND`] and more) and `extra` lines in `[features]`. Plugins are off: their start-up
/// sync tries the network, which the test machine does not have.
async fn run_codex(app: &TestApp, key: &str, provider_extra: &str, extra: &str) -> (std::process::Output, Duration) {
    let (output, elapsed, _) = run_codex_keeping_rollout(app, key, provider_extra, extra).await;
    (output, elapsed)
}

/// [`run_codex`], also giving the JSON lines of the session rollout Codex wrote
/// (`CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`), read before the home is removed.
async fn run_codex_keeping_rollout(
    app: &TestApp,
    key: &str,
    provider_extra: &str,
    extra: &str,
) -> (std::process::Output, Duration, Vec<serde_json::Value>) {
    let home =
        helpers::TempDir(std::env::temp_dir().join(format!("cg-codex-{}-{}", std::process::id(), rand_suffix())));
    let work = home.0.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        home.0.join("config.toml"),
        format!(
            "model = \"gpt-5-codex\"\nmodel_provider = \"codexgw\"\n\n[model_providers.codexgw]\n\
             name = \"codex-gateway\"\nbase_url = \"{}/v1\"\nwire_api = \"responses\"\n{provider_extra}\n\n\
             [features]\nplugins = false\nremote_plugin = false\n{extra}\n",
            app.base
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("codex")
            .args(["exec", "--skip-git-repo-check", "--sandbox", "read-only", "say hello"])
            .current_dir(&work)
            .env("CODEX_HOME", &home.0)
            .env("CODEXGW_API_KEY", key)
            .env("RUST_LOG", std::env::var("CODEX_LOG").unwrap_or_else(|_| "codex_api=info,codex_core=info".into()))
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("codex exec finished in time")
    .unwrap();
    let elapsed = started.elapsed();
    (output, elapsed, rollout_lines(&home.0.join("sessions")))
}

/// Every JSON line of every `rollout-*.jsonl` under `dir`.
fn rollout_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rollout_lines(&path));
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("rollout-")) {
            let text = std::fs::read_to_string(&path).unwrap();
            out.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    out
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn codex_available() -> bool {
    available(std::process::Command::new("codex").arg("--version"), "the Codex CLI (npm install -g @openai/codex)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codex_cli_runs_a_turn_through_the_gateway() {
    if !codex_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let s = setup(&app).await;
    let (output, _) = run_codex(&app, &s.key, ENV_KEY, "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("codex stdout:\n{stdout}\ncodex stderr:\n{stderr}");
    assert!(output.status.success(), "codex exec failed");
    assert!(stdout.contains("Hello from the mock upstream."), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // With `env_key` Codex never asks for the model catalogue, so it warns (the warning
    // the_codex_cli_reads_the_gateway_s_model_catalogue_and_does_not_fall_back removes).
    assert!(stderr.contains("Defaulting to fallback metadata"), "stderr:\n{stderr}");
    let seen = s.mock.last().expect("codex reached the mock through the gateway");
    eprintln!("headers codex sent (as forwarded): {:?}", seen.headers);
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.headers["authorization"], "Bearer sk-up", "the user's key is replaced");
    assert_eq!(seen.headers["originator"], "codex_exec", "client headers are forwarded");
    assert!(seen.headers.keys().any(|h| h.as_str().starts_with("x-codex-")), "x-codex-* headers are forwarded");
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["stream"], true);
    let rows = usage_rows(&app, 1).await;
    let turn = rows.iter().find(|r| r.0 == "/responses").expect("a /responses usage row");
    assert_eq!((turn.1.as_str(), turn.2, turn.3, turn.4, turn.5, turn.7), ("gpt-5-codex", 1, 1000, 200, 300, 0));
    // gpt-5-codex list price: 800×1.25 + 200×0.125 + 300×10 = 4025 micro-USD.
    assert_eq!(turn.6, 4_025);
    app.assert_money_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codex_cli_speaks_websocket_to_the_gateway_without_falling_back() {
    if !codex_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let s = setup(&app).await;
    let (output, elapsed) = run_codex(&app, &s.key, &format!("{ENV_KEY}\nsupports_websockets = true"), "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("codex ({elapsed:?}) stdout:\n{stdout}\ncodex stderr:\n{stderr}");
    assert!(output.status.success(), "codex exec failed");
    assert!(stdout.contains("Hello from the mock upstream."), "stdout:\n{stdout}");
    assert!(!stderr.contains("Falling back") && !stdout.contains("Falling back"), "codex fell back to HTTPS");
    assert!(stderr.contains("successfully connected to Responses WebSocket"), "codex used the WebSocket");
    let seen = s.mock.last().expect("the bridged request reached the mock");
    assert_eq!(seen.path, "/v1/responses");
    assert!(seen.headers.get("openai-beta").is_none_or(|v| !v.to_str().unwrap_or("").contains("websockets")));
    let rows = usage_rows(&app, 1).await;
    let turns: Vec<_> = rows.iter().filter(|r| r.0 == "/responses").collect();
    assert_eq!(turns.len(), 1, "one response, one usage row: {rows:?}");
    assert_eq!((turns[0].3, turns[0].4, turns[0].5, turns[0].6), (1000, 200, 300, 4_025));
    app.assert_money_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_codex_user_is_told_when_to_come_back_within_seconds() {
    if !codex_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mock = serve_mock(listener, MockOptions::default()).await.unwrap();
    let admin = app.admin_token().await;
    app.post("/api/admin/upstreams", &admin, json!({"name": "mock", "base_url": mock.base_url(), "api_key": "sk-up"}))
        .await;
    let (user_id, token) = app.register_and_login("broke@example.com").await;
    let package = app
        .create_package(&admin, json!({"name": "Tiny", "price": 10, "duration_days": 30, "daily_limit": "0.01"}))
        .await;
    let granted =
        app.post(&format!("/api/admin/users/{user_id}/packages"), &admin, json!({"package_id": package})).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
    let key = app.post("/api/user/keys", &token, json!({"name": "cli"})).await;
    let key = key.body["key"].as_str().unwrap().to_string();
    let (output, elapsed) = run_codex(&app, &key, ENV_KEY, "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("codex ({elapsed:?}) stdout:\n{stdout}\ncodex stderr:\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(all.contains("usage limit"), "codex shows the usage limit");
    assert!(all.contains("try again at"), "codex shows when the allowance comes back");
    assert!(elapsed < Duration::from_secs(5), "codex gave up at once instead of retrying: {elapsed:?}");
    assert_eq!(mock.requests(), 0, "nothing was forwarded");
}

/// Codex records the quota windows it parsed from the gateway's `x-codex-*` headers in
/// its session rollout (`event_msg` / `token_count` / `rate_limits`, the figures `/status`
/// shows): the plan's 5-hour window and its daily window, with the used share and the
/// reset instant the gateway itself reports (`GET /api/user/quota`), and the balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_records_the_plan_windows_and_the_balance_in_its_session_log() {
    if !codex_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let s = setup(&app).await;
    let admin = app.admin_token().await;
    let user_id: i64 = sqlx::query_scalar("SELECT id FROM users WHERE email = 'interop@example.com'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    let plan = app
        .create_package(
            &admin,
            json!({"name": "Plan", "price": 10, "duration_days": 30, "daily_limit": "1", "five_hour_limit": "0.01"}),
        )
        .await;
    let granted = app.post(&format!("/api/admin/users/{user_id}/packages"), &admin, json!({"package_id": plan})).await;
    assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.text);
    // One request first, so the windows Codex is told about are partly used.
    let first = reqwest::Client::new()
        .post(app.url("/v1/responses"))
        .bearer_auth(&s.key)
        .json(&json!({"model": "gpt-5-codex", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    first.text().await.unwrap();
    usage_rows(&app, 1).await;
    let quota = reqwest::Client::new().get(app.url("/api/user/quota")).bearer_auth(&s.key).send().await.unwrap();
    let quota: serde_json::Value = quota.json().await.unwrap();

    let (output, _, rollout) = run_codex_keeping_rollout(&app, &s.key, ENV_KEY, "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("codex stdout:\n{stdout}\ncodex stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "codex exec failed");
    let limits: Vec<&serde_json::Value> = rollout
        .iter()
        .filter(|l| l["type"] == "event_msg" && l["payload"]["type"] == "token_count")
        .map(|l| &l["payload"]["rate_limits"])
        .filter(|r| !r.is_null())
        .collect();
    eprintln!("rate_limits Codex recorded: {limits:?}\ngateway quota: {quota}");
    let recorded = limits.last().expect("Codex recorded the rate limits in its rollout");
    for (slot, kind, minutes) in [("primary", "5h", 300), ("secondary", "day", 1440)] {
        let window = quota["windows"].as_array().unwrap().iter().find(|w| w["window"] == kind).unwrap();
        let resets_at = chrono::DateTime::parse_from_rfc3339(window["resets_at"].as_str().unwrap()).unwrap();
        let used = window["used"].as_str().unwrap().parse::<f64>().unwrap();
        let limit = window["limit"].as_str().unwrap().parse::<f64>().unwrap();
        let codex = &recorded[slot];
        assert_eq!(codex["window_minutes"], minutes, "{slot}: {recorded}");
        assert_eq!(codex["resets_at"], resets_at.timestamp(), "{slot}: {recorded}");
        let percent = codex["used_percent"].as_f64().unwrap();
        assert!((percent - used * 100.0 / limit).abs() < 0.1, "{slot}: codex {percent} %, gateway {used}/{limit}");
    }
    // 0.004025 of the 5-hour block's 0.01 and of the day's 1.00.
    assert_eq!(
        (recorded["primary"]["used_percent"].as_f64(), recorded["secondary"]["used_percent"].as_f64()),
        (Some(40.2), Some(0.4))
    );
    assert_eq!(recorded["limit_id"], "codex", "Codex files the headers under its own limit id");
    let credits = &recorded["credits"];
    assert_eq!(
        (credits["has_credits"].as_bool(), credits["unlimited"].as_bool()),
        (Some(true), Some(false)),
        "{recorded}"
    );
    assert_eq!(credits["balance"].as_str(), quota["balance"].as_str(), "{recorded}");
    usage_rows(&app, 2).await;
    app.assert_money_invariants().await;
}

/// Codex 0.171 asks a provider that authenticates by command for its model catalogue
/// (`GET /v1/models?client_version=0.171.0`); with the operator's agent prompt configured
/// the gateway lists every priced model, so Codex knows `gpt-5-codex`, prints no
/// fallback warning and sends that prompt as its system prompt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codex_cli_reads_the_gateway_s_model_catalogue_and_does_not_fall_back() {
    if !codex_available() {
        return;
    }
    let dir = helpers::TempDir(std::env::temp_dir().join(format!("cg-codex-prompt-{}", rand_suffix())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let prompt = dir.0.join("prompt.md");
    let text = "You are a coding agent behind codex-gateway. Answer briefly.";
    std::fs::write(&prompt, text).unwrap();
    let app =
        helpers::spawn_app_with(Backend::Sqlite, &[("GATEWAY_CODEX_INSTRUCTIONS_FILE", prompt.to_str().unwrap())])
            .await;
    let s = setup(&app).await;
    let (output, _) = run_codex(&app, &s.key, AUTH_COMMAND, "").await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("codex stdout:\n{stdout}\ncodex stderr:\n{stderr}");
    assert!(output.status.success(), "codex exec failed");
    assert!(stdout.contains("Hello from the mock upstream."), "stdout:\n{stdout}");
    let all = format!("{stdout}\n{stderr}");
    assert!(!all.contains("failed to decode models response"), "codex decoded the catalogue");
    assert!(!all.contains("Defaulting to fallback metadata"), "codex found the model's metadata");
    let sent: serde_json::Value = serde_json::from_slice(&s.mock.last().unwrap().body).unwrap();
    let system = &sent["input"][0];
    assert_eq!((system["role"].as_str(), system["content"][0]["text"].as_str()), (Some("developer"), Some(text)));
    let rows = usage_rows(&app, 1).await;
    assert_eq!(rows.iter().filter(|r| r.0 == "/responses").map(|r| r.6).collect::<Vec<_>>(), vec![4_025]);
    app.assert_money_invariants().await;
}

/// Codex compacts remotely only for the built-in OpenAI provider; pointing that provider
/// at the gateway (`openai_base_url` in config.toml, key from `codex login --with-api-key`)
/// is what a user does to get it. A low `model_auto_compact_token_limit` makes the second turn (a
/// resumed session) compact the first one's history before it samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codex_cli_compacts_remotely_through_the_gateway_and_it_is_billed() {
    if !codex_available() {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let s = setup(&app).await;
    let home = helpers::TempDir(std::env::temp_dir().join(format!("cg-codex-compact-{}", rand_suffix())));
    let work = home.0.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        home.0.join("config.toml"),
        format!(
            "model = \"gpt-5-codex\"\nmodel_provider = \"openai\"\nopenai_base_url = \"{}/v1\"\n\
             model_auto_compact_token_limit = 500\n\n[features]\nplugins = false\nremote_plugin = false\n",
            app.base
        ),
    )
    .unwrap();
    let run = |args: Vec<&'static str>| {
        tokio::process::Command::new("codex")
            .args(args)
            .current_dir(&work)
            .env("CODEX_HOME", &home.0)
            .env("OPENAI_API_KEY", &s.key)
            .env("RUST_LOG", "codex_core=info,codex_api=info")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
    };
    // The built-in provider takes its key from Codex's login, not from an env_key.
    let mut login = std::process::Command::new("codex")
        .args(["login", "--with-api-key"])
        .env("CODEX_HOME", &home.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut login.stdin.take().unwrap(), s.key.as_bytes()).unwrap();
    assert!(login.wait().unwrap().success(), "codex login --with-api-key");
    let first = run(vec!["exec", "--skip-git-repo-check", "--sandbox", "read-only", "say hello"]).await.unwrap();
    eprintln!("first:\n{}\n{}", String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&first.stderr));
    assert!(first.status.success());
    let second = run(vec!["exec", "--skip-git-repo-check", "--sandbox", "read-only", "resume", "--last", "again"])
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    eprintln!("second:\n{}\n{stderr}", String::from_utf8_lossy(&second.stdout));
    // Codex 0.171 compacts with "remote compaction v2": a Responses request whose input
    // ends with a `compaction_trigger` item (the mock answers it with one `compaction`
    // item). It is an ordinary response to the gateway: proxied and billed as one.
    assert!(!stderr.contains("Error running remote compact task"), "the compaction succeeded");
    assert!(second.status.success(), "the resumed turn succeeded");
    assert!(String::from_utf8_lossy(&second.stdout).contains("Hello from the mock upstream."));
    let rows = usage_rows(&app, 3).await;
    assert_eq!(rows.len(), 3, "turn, compaction, turn: {rows:?}");
    assert!(rows.iter().all(|r| r.0 == "/responses" && r.6 == 4_025 && r.7 == 0), "each billed exactly: {rows:?}");
    app.assert_money_invariants().await;
}

const SDK_SCRIPT: &str = r#"
import json, os, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["GW_BASE"], api_key=os.environ["GW_KEY"])
out = {}
r = client.responses.create(model="gpt-5", input="say hello")
out["responses"] = r.output_text
out["responses_usage"] = r.usage.input_tokens
text = ""
with client.responses.stream(model="gpt-5", input="say hello") as stream:
    for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
    final = stream.get_final_response()
out["responses_stream"] = text
out["responses_stream_usage"] = final.usage.output_tokens
c = client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
out["chat"] = c.choices[0].message.content
out["chat_usage"] = c.usage.prompt_tokens
text, saw_usage = "", False
for chunk in client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}], stream=True):
    if chunk.usage is not None:
        saw_usage = True
    for choice in chunk.choices:
        text += choice.delta.content or ""
out["chat_stream"] = text
out["chat_stream_saw_usage"] = saw_usage
try:
    client.chat.completions.create(model="not-priced", messages=[{"role": "user", "content": "hi"}])
    out["unknown_model"] = "accepted"
except Exception as e:
    out["unknown_model"] = type(e).__name__
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_works_through_the_gateway() {
    if !available(
        std::process::Command::new("python3").args(["-c", "import openai"]),
        "python3 with openai (pip install openai)",
    ) {
        return;
    }
    let app = spawn_app(Backend::Sqlite).await;
    let s = setup(&app).await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("python3")
            .args(["-c", SDK_SCRIPT])
            .env("GW_BASE", format!("{}/v1", app.base))
            .env("GW_KEY", &s.key)
            .env("OPENAI_MAX_RETRIES", "0")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the SDK script finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let hello = "Hello from the mock upstream.";
    assert_eq!(out["responses"], hello);
    assert_eq!(out["responses_stream"], hello);
    assert_eq!(out["chat"], hello);
    assert_eq!(out["chat_stream"], hello);
    assert_eq!(out["responses_usage"], 1000);
    assert_eq!(out["responses_stream_usage"], 300);
    assert_eq!(out["chat_usage"], 1000);
    assert_eq!(out["chat_stream_saw_usage"], false, "the usage chunk the SDK did not ask for is hidden");
    assert_eq!(out["unknown_model"], "NotFoundError");
    let rows = usage_rows(&app, 4).await;
    // Settlements commit in batches, so rows of requests that end close together may be
    // written in either order: compare them as a set.
    let mut shapes: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), r.2)).collect();
    shapes.sort_unstable();
    assert_eq!(shapes, vec![("/chat/completions", 0), ("/chat/completions", 1), ("/responses", 0), ("/responses", 1)]);
    assert!(rows.iter().all(|r| r.3 == 1000 && r.4 == 200 && r.5 == 300 && r.6 == 4_025 && r.7 == 0), "{rows:?}");
    app.assert_money_invariants().await;
}
