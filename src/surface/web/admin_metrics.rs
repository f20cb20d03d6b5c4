//! `/admin/metrics`: the `/metrics` figures at a glance. Counters and latencies are
//! this instance's (metrics live in each process); holds, usage and upstream health
//! come from the database and hold for the whole cluster.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::ctx::{AdminPage, Ctx};
use super::ops_figures::{self, ClusterFigures, Sample};
use super::{error_page_for, render, view};
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/metrics", get(metrics_page))
}

/// One counter row: up to two label values, the count, and an id for tests and links.
pub struct CountRow {
    pub a: String,
    pub b: String,
    pub count: i64,
    pub id: String,
}

/// Upstream latency of one model, in milliseconds ("—" without observations).
pub struct LatencyRow {
    pub model: String,
    pub first_byte_p50: String,
    pub first_byte_p95: String,
    pub total_p50: String,
    pub total_p95: String,
}

#[derive(Template)]
#[template(path = "admin_metrics.html")]
struct MetricsPage<'a> {
    ctx: &'a Ctx,
    recorder: bool,
    limiter: &'static str,
    cluster: ClusterFigures,
    held: String,
    billed_today: String,
    routes: Vec<CountRow>,
    models: Vec<CountRow>,
    billed: Vec<(String, String)>,
    admissions: Vec<CountRow>,
    latency: Vec<LatencyRow>,
    notifies: Vec<CountRow>,
    jobs: Vec<CountRow>,
    limiter_checks: Vec<CountRow>,
}

fn rows(samples: &[Sample], name: &str, by: &[&str], prefix: &str) -> Vec<CountRow> {
    ops_figures::sum_by(samples, name, by)
        .into_iter()
        .map(|(labels, value)| {
            let id = format!("{prefix}-{}", labels.join("-"));
            let mut labels = labels.into_iter();
            CountRow {
                a: labels.next().unwrap_or_default(),
                b: labels.next().unwrap_or_default(),
                count: value as i64,
                id,
            }
        })
        .collect()
}

/// Billed sums keep every decimal (one request often costs less than a cent).
fn exact_money(micros: f64) -> String {
    crate::foundation::money::Money::from_micros(micros as i64).to_string()
}

/// Request-rate checks, then stream-slot checks (backend shown as `redis (streams)`).
fn limiter_rows(samples: &[Sample]) -> Vec<CountRow> {
    let mut all = rows(samples, "gateway_rate_limit_checks_total", &["backend", "outcome"], "limiter");
    let streams = rows(samples, "gateway_stream_slot_checks_total", &["backend", "outcome"], "streams");
    all.extend(streams.into_iter().map(|r| CountRow { a: format!("{} (streams)", r.a), ..r }));
    all
}

fn millis(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "—".to_string(), |s| format!("{:.0} ms", s * 1000.0))
}

fn latency_rows(samples: &[Sample]) -> Vec<LatencyRow> {
    let mut models: Vec<&str> = samples
        .iter()
        .filter(|s| s.name.starts_with("gateway_upstream_") && s.name.ends_with("_seconds_bucket"))
        .map(|s| s.label("model"))
        .collect();
    models.sort_unstable();
    models.dedup();
    let q = |name: &str, model: &str, p: f64| millis(ops_figures::quantile(samples, name, ("model", model), p));
    models
        .into_iter()
        .map(|m| LatencyRow {
            model: m.to_string(),
            first_byte_p50: q("gateway_upstream_first_byte_seconds", m, 0.5),
            first_byte_p95: q("gateway_upstream_first_byte_seconds", m, 0.95),
            total_p50: q("gateway_upstream_total_seconds", m, 0.5),
            total_p95: q("gateway_upstream_total_seconds", m, 0.95),
        })
        .collect()
}

async fn metrics_page(State(state): State<AppState>, AdminPage(signed): AdminPage) -> Response {
    let ctx = &signed.ctx;
    let cluster = match ops_figures::cluster_figures(&state).await {
        Ok(c) => c,
        Err(e) => return error_page_for(ctx, &e),
    };
    let handle = crate::domain::telemetry::handle();
    let samples = handle.map(|h| ops_figures::parse(&h.render())).unwrap_or_default();
    let billed = ops_figures::sum_by(&samples, "gateway_billed_micros_total", &["source"])
        .into_iter()
        .map(|(source, micros)| (source.concat(), exact_money(micros)))
        .collect();
    let page = MetricsPage {
        ctx,
        recorder: handle.is_some(),
        limiter: state.limits.backend_name(),
        held: view::money(cluster.held_micros),
        billed_today: view::money(cluster.billed_today_micros),
        cluster,
        routes: rows(&samples, "gateway_http_requests_total", &["route", "status"], "route"),
        models: rows(&samples, "gateway_proxy_requests_total", &["model", "status"], "model"),
        billed,
        admissions: rows(&samples, "gateway_billing_admissions_total", &["outcome"], "admission"),
        latency: latency_rows(&samples),
        notifies: rows(&samples, "gateway_payment_notifies_total", &["outcome"], "notify"),
        jobs: rows(&samples, "gateway_job_runs_total", &["job", "outcome"], "job"),
        limiter_checks: limiter_rows(&samples),
    };
    render(ctx, StatusCode::OK, &page)
}
