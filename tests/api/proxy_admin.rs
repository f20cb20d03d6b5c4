//! Admin management of upstreams and prices, and what the proxy makes of it.

use codex_gateway::domain::proxy::mock::MockOptions;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::proxy::{setup, usage_rows, v1};

on_both_databases!(
    admins_manage_upstreams_without_ever_seeing_the_credential,
    admins_manage_prices_and_the_model_list_follows,
    an_upstream_model_map_renames_the_model_only_upstream,
);

async fn an_upstream_model_map_renames_the_model_only_upstream(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let id = app.get("/api/admin/upstreams", &s.admin).await.body["items"][0]["id"].as_i64().unwrap();
    let path = format!("/api/admin/upstreams/{id}");
    let r = app.put(&path, &s.admin, json!({"model_map": {"gpt-5": "vendor-gpt-5-2025"}})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["model_map"]["gpt-5"], "vendor-gpt-5-2025");
    let resp = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap();
    let sent: Value = serde_json::from_slice(&s.mock.last().unwrap().body).unwrap();
    assert_eq!((sent["model"].clone(), sent["input"].clone()), (json!("vendor-gpt-5-2025"), json!("hi")));
    let row = usage_rows(&app, 1).await.remove(0);
    assert_eq!((row.model.as_str(), row.cost), ("gpt-5", 4_025), "billed under the client's model");
    let cleared = app.put(&path, &s.admin, json!({"model_map": null})).await;
    assert_eq!(cleared.body["model_map"], Value::Null);
    app.assert_money_invariants().await;
}

async fn admins_manage_upstreams_without_ever_seeing_the_credential(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let list = app.get("/api/admin/upstreams", &s.admin).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.text.contains("sk-upstream-secret-1234"), "{}", list.text);
    let item = &list.body["items"][0];
    assert_eq!(item["api_key_set"], true);
    assert_eq!(item["api_key_hint"], "sk-…1234");
    assert_eq!(item["base_url"], s.mock.base_url(), "the trailing slash is dropped");
    let id = item["id"].as_i64().unwrap();
    let path = format!("/api/admin/upstreams/{id}");
    let bad = app.put(&path, &s.admin, json!({"base_url": "ftp://x"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["error"]["field"], "base_url");
    let updated = app.put(&path, &s.admin, json!({"models": ["gpt-5-mini"], "weight": 5})).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!((updated.body["weight"].clone(), updated.body["models"].clone()), (json!(5), json!(["gpt-5-mini"])));
    // gpt-5 now has no upstream: refused without forwarding.
    let resp = v1(&app, "/v1/responses", &s.key).json(&json!({"model": "gpt-5", "input": "hi"})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let dup = app
        .post("/api/admin/upstreams", &s.admin, json!({"name": "primary", "base_url": "http://x/v1", "api_key": "k"}))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let user = app.get("/api/admin/upstreams", &s.user_token).await;
    assert_eq!(user.status, StatusCode::FORBIDDEN);
    assert_eq!(app.delete(&path, &s.admin).await.status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &s.admin).await.status, StatusCode::NOT_FOUND);
    let audit: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_logs WHERE action LIKE 'upstream.%'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(audit, 3);
    let leaked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_logs WHERE after_value LIKE '%secret%' OR before_value LIKE '%secret%'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(leaked, 0);
}

async fn admins_manage_prices_and_the_model_list_follows(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("10")).await;
    let prices = app.get("/api/admin/prices", &s.admin).await;
    let codex = prices.body["items"].as_array().unwrap().iter().find(|p| p["model"] == "gpt-5-codex").unwrap().clone();
    assert_eq!(
        (codex["input"].clone(), codex["cached_input"].clone(), codex["output"].clone()),
        (json!("1.25"), json!("0.125"), json!("10.00"))
    );
    let created = app
        .post(
            "/api/admin/prices",
            &s.admin,
            json!({"model": "house-model", "input": "0.5", "cached_input": 0.05, "output": 2}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(
        app.post("/api/admin/prices", &s.admin, json!({"model": "house-model", "input": 1, "output": 1})).await.status,
        StatusCode::CONFLICT
    );
    let negative = app.put("/api/admin/prices/house-model", &s.admin, json!({"output": "-1"})).await;
    assert_eq!(negative.status, StatusCode::UNPROCESSABLE_ENTITY);
    let models = app.client.get(app.url("/v1/models")).bearer_auth(&s.key).send().await.unwrap();
    let models: Value = models.json().await.unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"house-model") && ids.contains(&"gpt-5"), "{ids:?}");
    let one = app.client.get(app.url("/v1/models/house-model")).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(one.json::<Value>().await.unwrap()["id"], "house-model");
    let none = app.client.get(app.url("/v1/models/nope")).bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);

    // Repricing applies to the next request: 800×0.5 + 200×0.05 + 300×2 = 1010 micro-USD.
    let r =
        v1(&app, "/v1/responses", &s.key).json(&json!({"model": "house-model", "input": "hi"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap();
    assert_eq!(usage_rows(&app, 1).await[0].cost, 1_010);

    assert_eq!(app.delete("/api/admin/prices/house-model", &s.admin).await.status, StatusCode::NO_CONTENT);
    let dotted = app.put("/api/admin/prices/gpt-5.1-codex", &s.admin, json!({"output": "12.5"})).await;
    assert_eq!((dotted.status, dotted.body["output"].clone()), (StatusCode::OK, json!("12.50")));
    let gone =
        v1(&app, "/v1/responses", &s.key).json(&json!({"model": "house-model", "input": "hi"})).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    app.assert_money_invariants().await;
}
