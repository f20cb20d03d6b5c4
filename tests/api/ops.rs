use chrono::Duration;
use codex_gateway::runtime::jobs;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    metrics_are_scraped_in_prometheus_format,
    a_job_lease_is_held_by_one_instance_until_it_expires,
    jobs_can_be_run_once_by_name,
    requests_carry_a_request_id,
    stored_merchant_keys_are_encrypted_at_rest,
    password_guessing_is_throttled,
    billing_and_proxy_figures_are_exported_as_metrics,
);

async fn metrics_are_scraped_in_prometheus_format(app: TestApp) {
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("gateway_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/healthz\""));
}

async fn a_job_lease_is_held_by_one_instance_until_it_expires(app: TestApp) {
    let until = app.state.now() + Duration::minutes(5);
    assert!(jobs::acquire_lease(&app.state, "probe", "instance-a", until).await.unwrap());
    assert!(!jobs::acquire_lease(&app.state, "probe", "instance-b", until).await.unwrap());
    assert!(jobs::acquire_lease(&app.state, "probe", "instance-a", until).await.unwrap(), "the holder renews");
    app.clock.advance(Duration::minutes(5));
    let later = app.state.now() + Duration::minutes(5);
    assert!(jobs::acquire_lease(&app.state, "probe", "instance-b", later).await.unwrap(), "an expired lease moves on");
    assert!(!jobs::acquire_lease(&app.state, "probe", "instance-a", later).await.unwrap());
}

async fn jobs_can_be_run_once_by_name(app: TestApp) {
    let summary = jobs::run_once(&app.state, "release_expired_holds").await.unwrap();
    assert_eq!(summary, "released 0 holds");
    for job in jobs::all_jobs() {
        let summary = jobs::run_once(&app.state, job.name).await;
        assert!(summary.is_ok(), "{} failed on an empty install: {summary:?}", job.name);
    }
    assert!(jobs::run_once(&app.state, "nope").await.is_err());
}

async fn requests_carry_a_request_id(app: TestApp) {
    let fresh = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(fresh.headers()["x-request-id"].to_str().unwrap().starts_with("req_"));
    let kept = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "abc-123");
}

async fn stored_merchant_keys_are_encrypted_at_rest(app: TestApp) {
    let admin = app.admin_token().await;
    let r = app.put("/api/admin/settings", &admin, json!({"credit": {"pid": "1001", "key": "PLAINTEXT-KEY-42"}})).await;
    assert_eq!(r.status, StatusCode::OK);
    let stored: String = sqlx::query_scalar("SELECT value FROM system_settings WHERE key = 'settings'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert!(!stored.contains("PLAINTEXT-KEY-42"), "{stored}");
    assert!(stored.contains("enc:v1:"));
    let settings = app.state.settings.get().await.unwrap();
    assert_eq!(settings.credit.key, "PLAINTEXT-KEY-42");

    let up = app
        .post(
            "/api/admin/upstreams",
            &admin,
            json!({"name": "main", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-upstream-PLAIN-77"}),
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text);
    assert!(!up.text.contains("sk-upstream-PLAIN-77"));
    let stored: String = sqlx::query_scalar("SELECT api_key FROM upstreams").fetch_one(app.db.pool()).await.unwrap();
    assert!(stored.starts_with("enc:v1:") && !stored.contains("PLAIN-77"), "{stored}");
    let catalog = app.state.catalog.get().await;
    use secrecy::ExposeSecret;
    assert_eq!(catalog.upstreams[0].api_key.expose_secret(), "sk-upstream-PLAIN-77");
}

async fn password_guessing_is_throttled(app: TestApp) {
    app.register_and_login("victim@example.com").await;
    let mut last = None;
    for _ in 0..12 {
        last = Some(
            app.post_public("/api/auth/login", json!({"email": "victim@example.com", "password": "guess-guess"})).await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.error_code(), "rate_limited");
    assert!(last.headers.get("retry-after").is_some());
}

async fn billing_and_proxy_figures_are_exported_as_metrics(app: TestApp) {
    use codex_gateway::domain::proxy::mock::MockOptions;
    let s = crate::proxy::setup(&app, MockOptions::default(), Some("1.00")).await;
    let r = crate::proxy::v1(&app, "/v1/responses", &s.key)
        .json(&json!({"model": "gpt-5", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = r.bytes().await;
    app.state.tasks.close();
    app.state.tasks.wait().await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "gateway_proxy_requests_total{model=\"gpt-5\",status=\"200\"}",
        "gateway_billed_micros_total{model=\"gpt-5\",source=\"balance\"}",
        "gateway_billing_admissions_total{outcome=\"admitted\"}",
        "gateway_upstream_first_byte_seconds",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}
