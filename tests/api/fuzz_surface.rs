//! Issue 16's fuzz pass over the whole surface: every `/api` route that reads a body or a
//! query, and every page form and list page, gets hostile input as anonymous, user and
//! admin: wrong JSON types, huge, negative and overflowing numbers, 10k-character and
//! control-character strings, nulls, missing and unknown fields, non-JSON, the wrong
//! content type, an empty body, and hostile path segments and query strings.
//!
//! Held when: no answer is a 5xx (so no panic reached the catch-panic layer); `/api`
//! answers `{"error":{"code","message"}}` with a snake_case code; pages answer a readable
//! HTML page; a refused request leaves the ledger as it was; the money invariants hold.
//! The bodies are a fixed hostile set plus proptest-generated values from a fixed seed,
//! so a failure reproduces.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::header::{CONTENT_TYPE, COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::helpers::{report, TestApp};
use crate::on_both_databases;

on_both_databases!(hostile_bodies_forms_and_queries_never_get_a_5xx_or_move_money);

/// Who sends a request.
#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    User,
    Admin,
}

/// One JSON route with a body and the fields its handler reads.
struct ApiRoute {
    method: Method,
    path: String,
    fields: &'static [&'static str],
}

/// One page form and the fields its handler reads.
struct PageForm {
    path: String,
    fields: &'static [&'static str],
}

/// Hostile scalar values, for JSON fields.
fn hostile_json_values() -> Vec<Value> {
    let long = "x".repeat(10_000);
    vec![
        Value::Null,
        json!(true),
        json!(-1),
        json!(0),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(-1e308),
        json!(0.1),
        json!("99999999999999999999999.999999"),
        json!("-9223372036854.775808"),
        json!("9223372036854.775807"),
        json!("1e5"),
        json!("NaN"),
        json!("-0.0000001"),
        json!(""),
        json!(long),
        json!("\u{0}\u{7}\u{1b}[31m\u{202e}中文\u{1F600}\r\n\t\\\"'<script>"),
        json!([]),
        json!([1, "a", null]),
        json!({}),
        json!({"nested": {"deeper": [1e308]}}),
    ]
}

/// Hostile strings, for form fields, path segments and query values.
fn hostile_strings() -> Vec<String> {
    vec![
        String::new(),
        "-1".into(),
        "0".into(),
        "9223372036854775807".into(),
        "-9223372036854775808".into(),
        "99999999999999999999999".into(),
        "99999999999999999999999.999999".into(),
        "1e308".into(),
        "NaN".into(),
        "-0.0000001".into(),
        "x".repeat(10_000),
        "\u{0}\u{7}\u{1b}[31m\u{202e}中文\u{1F600}\r\n\t\\\"'<script>".into(),
        "on".into(),
        "%zz".into(),
    ]
}

/// A proptest strategy for arbitrary JSON values, bounded in size.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON has no NaN/inf", |f| f.is_finite()).prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        "[-0-9.eE]{0,30}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::hash_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// `n` values of `strategy` from a fixed seed.
fn generate<S: Strategy>(strategy: S, n: usize, seed: u8) -> Vec<S::Value> {
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    (0..n).map(|_| strategy.new_tree(&mut runner).expect("a value").current()).collect()
}

/// A body as sent: the bytes and their content type (None = no header).
struct RawBody {
    content_type: Option<&'static str>,
    bytes: Vec<u8>,
}

fn json_body(v: &Value) -> RawBody {
    RawBody { content_type: Some("application/json"), bytes: serde_json::to_vec(v).expect("json") }
}

/// The hostile bodies for a JSON route with `fields`; `full` = the whole set, else a sample.
fn api_bodies(fields: &[&str], full: bool, seed: u8) -> Vec<RawBody> {
    let mut bodies = vec![
        RawBody { content_type: None, bytes: Vec::new() },
        RawBody { content_type: Some("application/json"), bytes: Vec::new() },
        RawBody { content_type: Some("application/json"), bytes: b"not json".to_vec() },
        RawBody { content_type: Some("application/json"), bytes: b"{\"a\":".to_vec() },
        RawBody { content_type: Some("application/json"), bytes: vec![0xff, 0xfe, b'{', 0x00] },
        RawBody { content_type: Some("text/plain"), bytes: b"{}".to_vec() },
        RawBody { content_type: Some("application/x-www-form-urlencoded"), bytes: b"amount=1&name=x".to_vec() },
        json_body(&json!({"definitely_unknown_field": 1})),
    ];
    if !full {
        return bodies;
    }
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    bodies.push(RawBody { content_type: Some("application/json"), bytes: deep.into_bytes() });
    for top in [json!(null), json!([]), json!(1), json!("s")] {
        bodies.push(json_body(&top));
    }
    // Every field gets the same hostile value, one body per value.
    for value in hostile_json_values() {
        let obj: Map<String, Value> = fields.iter().map(|f| (f.to_string(), value.clone())).collect();
        bodies.push(json_body(&Value::Object(obj)));
    }
    // Each field alone with a wrong type, the others missing.
    for f in fields {
        bodies.push(json_body(&json!({ *f: {"wrong": "type"} })));
    }
    // Random values for the known fields, plus one unknown field now and then.
    let values = generate(proptest::collection::vec(any_json(), fields.len() + 1), 6, seed);
    for (i, vals) in values.into_iter().enumerate() {
        let mut obj: Map<String, Value> =
            fields.iter().zip(vals.iter()).map(|(f, v)| (f.to_string(), v.clone())).collect();
        if i % 3 == 0 {
            obj.insert("extra_field".into(), vals.last().cloned().unwrap_or(Value::Null));
        }
        bodies.push(json_body(&Value::Object(obj)));
    }
    for v in generate(any_json(), 3, seed.wrapping_add(100)) {
        bodies.push(json_body(&v));
    }
    bodies
}

/// The hostile field sets for a form with `fields` (the CSRF field is added by the sender).
fn form_bodies(fields: &[&str], full: bool, seed: u8) -> Vec<Vec<(String, String)>> {
    let mut bodies: Vec<Vec<(String, String)>> =
        vec![Vec::new(), vec![("definitely_unknown_field".into(), "1".into())]];
    if !full {
        return bodies;
    }
    for value in hostile_strings() {
        bodies.push(fields.iter().map(|f| (f.to_string(), value.clone())).collect());
    }
    // Every field twice, with different values.
    bodies.push(fields.iter().flat_map(|f| [(f.to_string(), "1".into()), (f.to_string(), "-1".into())]).collect());
    let strings = proptest::collection::vec("\\PC{0,30}|[-0-9.eE]{0,25}", fields.len());
    for vals in generate(strings, 4, seed) {
        bodies.push(fields.iter().map(|f| f.to_string()).zip(vals).collect());
    }
    bodies
}

/// The query strings thrown at list pages and list endpoints.
fn hostile_queries(params: &[&str]) -> Vec<String> {
    let mut out = vec!["page=%zz".to_string(), "page=1&page=2".to_string()];
    for value in hostile_strings().into_iter().filter(|v| v.len() < 100) {
        let q = params.iter().map(|p| format!("{p}={}", urlencode(&value))).collect::<Vec<_>>().join("&");
        out.push(q);
    }
    out
}

fn urlencode(s: &str) -> String {
    // "%zz" stays raw on purpose: it is an invalid escape.
    if s == "%zz" {
        return s.to_string();
    }
    serde_urlencoded::to_string([("v", s)]).expect("encode").trim_start_matches("v=").to_string()
}

/// Which shape a refusal must have on a path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    /// `{"error":{"code","message"}}`.
    Api,
    /// A readable HTML page (also the OAuth callback, which a browser follows).
    Page,
    /// The EasyPay notify: its protocol's plain `success`/`fail`.
    EpayText,
}

fn surface_of(path: &str) -> Surface {
    if path.starts_with("/api/payment/credit/notify") {
        Surface::EpayText
    } else if path.starts_with("/api/auth/oauth/") || !path.starts_with("/api") {
        Surface::Page
    } else {
        Surface::Api
    }
}

/// Checks one answer's status and shape; returns a description of what is wrong.
fn judge(surface: Surface, what: &str, status: StatusCode, content_type: &str, text: &str) -> Option<String> {
    if status.is_server_error() {
        return Some(format!("{what}: {status} {}", text.chars().take(300).collect::<String>()));
    }
    if !status.is_client_error() {
        return None;
    }
    if surface == Surface::EpayText {
        if text != "fail" {
            return Some(format!(
                "{what}: {status} the notify answered {:?}, not `fail`",
                text.chars().take(100).collect::<String>()
            ));
        }
    } else if surface == Surface::Api {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("");
        let stable = !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        if !stable || !body["error"]["message"].is_string() || code == "internal_error" {
            return Some(format!(
                "{what}: {status} not the API error shape: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
    } else if !content_type.starts_with("text/html") || !text.contains("</html>") {
        return Some(format!(
            "{what}: {status} not a readable page ({content_type}): {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    None
}

struct Fuzzer<'a> {
    app: &'a TestApp,
    user: String,
    admin: String,
    sent: u64,
    refused: u64,
    defects: Vec<String>,
}

impl Fuzzer<'_> {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::User => Some(&self.user),
            Who::Admin => Some(&self.admin),
        }
    }

    async fn ledger_rows(&self) -> i64 {
        self.app.count("SELECT COUNT(*) FROM ledger_entries").await
    }

    /// Sends one request and judges it; a refused request must leave the ledger alone.
    async fn send(&mut self, req: reqwest::RequestBuilder, path: &str, what: String) {
        let before = self.ledger_rows().await;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.defects.push(format!("{what}: transport error {e}"));
                return;
            }
        };
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let text = resp.text().await.unwrap_or_default();
        self.sent += 1;
        if let Some(defect) = judge(surface_of(path), &what, status, &content_type, &text) {
            self.defects.push(defect);
        }
        if status.is_client_error() || status.is_server_error() {
            self.refused += 1;
            let after = self.ledger_rows().await;
            if after != before {
                self.defects.push(format!("{what}: refused with {status} but the ledger went {before} -> {after}"));
            }
        }
    }

    async fn api(&mut self, who: Who, route: &ApiRoute, body: &RawBody) {
        let mut req = self.app.client.request(route.method.clone(), self.app.url(&route.path));
        if let Some(t) = self.token(who) {
            req = req.bearer_auth(t);
        }
        if let Some(ct) = body.content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        req = req.body(body.bytes.clone());
        let what = format!(
            "{who:?} {} {} {:?}",
            route.method,
            route.path,
            String::from_utf8_lossy(&body.bytes).chars().take(120).collect::<String>()
        );
        self.send(req, &route.path, what).await;
    }

    async fn form(&mut self, who: Who, form: &PageForm, fields: &[(String, String)], raw: Option<&[u8]>) {
        let mut req = self.app.client.post(self.app.url(&form.path));
        let mut all: Vec<(String, String)> = Vec::new();
        if let Some(t) = self.token(who) {
            req = req.header(COOKIE, format!("cg_session={t}"));
            all.push((
                "_csrf".into(),
                codex_gateway::domain::auth::extract::csrf_token(self.app.state.config.secret_bytes(), t),
            ));
        }
        all.extend_from_slice(fields);
        let what = match raw {
            Some(bytes) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(bytes.to_vec());
                format!("{who:?} POST {} raw {:?}", form.path, String::from_utf8_lossy(bytes))
            }
            None => {
                req = req.form(&all);
                let shown: Vec<_> =
                    fields.iter().map(|(k, v)| format!("{k}={}", v.chars().take(20).collect::<String>())).collect();
                format!("{who:?} POST {} {:?}", form.path, shown)
            }
        };
        self.send(req, &form.path, what).await;
    }

    async fn get(&mut self, who: Who, path: &str) {
        let mut req = self.app.client.get(self.app.url(path));
        if let Some(t) = self.token(who) {
            req = if path.starts_with("/api") {
                req.bearer_auth(t)
            } else {
                req.header(COOKIE, format!("cg_session={t}"))
            };
        }
        self.send(req, path, format!("{who:?} GET {}", path.chars().take(160).collect::<String>())).await;
    }
}

async fn hostile_bodies_forms_and_queries_never_get_a_5xx_or_move_money(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, user) = app.register_and_login("fuzz-user@example.com").await;
    let (victim, _) = app.register_and_login("fuzz-victim@example.com").await;
    app.fund(&admin, user_id, "5.00").await;
    let package = app
        .create_package(&admin, json!({"name": "Fuzz", "price": "50.00", "duration_days": 30, "daily_limit": "1.00"}))
        .await;
    let upstream = app
        .post(
            "/api/admin/upstreams",
            &admin,
            json!({"name": "fuzz-up", "base_url": "http://127.0.0.1:9", "api_key": "sk-fuzz-secret", "models": ["m"]}),
        )
        .await;
    assert_eq!(upstream.status, StatusCode::CREATED, "{}", upstream.text);
    let upstream = upstream.body["id"].as_i64().unwrap();
    let coupon = app.post("/api/admin/coupons", &admin, json!({"code": "FUZZ10", "percent_off": 10})).await;
    assert_eq!(coupon.status, StatusCode::CREATED, "{}", coupon.text);
    let coupon = coupon.body["coupon"]["id"].as_i64().unwrap();
    let ann = app.post("/api/admin/announcements", &admin, json!({"title": "t", "body": "b"})).await;
    assert_eq!(ann.status, StatusCode::CREATED, "{}", ann.text);
    let ann = ann.body["announcement"]["id"].as_i64().unwrap();
    let key = app.post("/api/user/keys", &user, json!({"name": "k"})).await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.text);
    let key = key.body["id"].as_i64().unwrap();

    let r = |method: Method, path: String, fields: &'static [&'static str]| ApiRoute { method, path, fields };
    let api_routes = vec![
        r(Method::POST, "/api/auth/register".into(), &["email", "password"]),
        r(Method::POST, "/api/auth/login".into(), &["email", "password"]),
        r(Method::POST, "/api/user/password".into(), &["old_password", "new_password"]),
        r(Method::PATCH, format!("/api/admin/users/{victim}"), &["status", "role", "daily_cap", "five_hour_cap"]),
        r(Method::POST, format!("/api/admin/users/{user_id}/balance"), &["amount", "reason"]),
        r(Method::POST, "/api/admin/announcements".into(), &["title", "body", "enabled", "starts_at", "ends_at"]),
        r(
            Method::PUT,
            format!("/api/admin/announcements/{ann}"),
            &["title", "body", "enabled", "starts_at", "ends_at"],
        ),
        r(Method::PUT, "/api/user/billing-preference".into(), &["preference"]),
        r(
            Method::POST,
            "/api/admin/coupons".into(),
            &[
                "code",
                "percent_off",
                "amount_off",
                "package_ids",
                "applies_to_topup",
                "valid_from",
                "valid_until",
                "max_uses",
                "max_uses_per_user",
                "enabled",
            ],
        ),
        r(Method::PUT, format!("/api/admin/coupons/{coupon}"), &["code", "percent_off", "amount_off", "max_uses"]),
        r(Method::POST, "/api/user/keys".into(), &["name", "spend_limit", "expires_at"]),
        r(Method::PATCH, format!("/api/user/keys/{key}"), &["name", "spend_limit", "daily_cap", "max_concurrency"]),
        r(
            Method::POST,
            "/api/admin/packages".into(),
            &[
                "name",
                "description",
                "price",
                "duration_days",
                "daily_limit",
                "sort_order",
                "enabled",
                "stock",
                "per_user_limit",
                "five_hour_limit",
                "weekly_limit",
                "monthly_limit",
                "total_limit",
                "models",
            ],
        ),
        r(
            Method::PUT,
            format!("/api/admin/packages/{package}"),
            &["name", "price", "duration_days", "daily_limit", "stock"],
        ),
        r(Method::POST, format!("/api/packages/{package}/purchase"), &["pay_with", "coupon"]),
        r(Method::POST, format!("/api/admin/users/{user_id}/packages"), &["package_id"]),
        r(Method::POST, format!("/api/admin/users/{user_id}/packages/999999/end"), &[]),
        r(Method::POST, "/api/user/topup".into(), &["amount", "coupon"]),
        r(Method::POST, "/api/admin/orders/no-such-order/check".into(), &[]),
        r(Method::POST, "/api/admin/orders/no-such-order/refund".into(), &[]),
        r(
            Method::POST,
            "/api/admin/prices".into(),
            &["model", "input", "cached_input", "output", "cache_write", "enabled"],
        ),
        r(Method::PUT, "/api/admin/prices/fuzz-model".into(), &["model", "input", "output"]),
        r(Method::POST, "/api/admin/redemption-codes".into(), &["count", "amount", "package_id", "note"]),
        r(Method::POST, "/api/user/redeem".into(), &["code"]),
        r(
            Method::PUT,
            "/api/admin/settings".into(),
            &["markup", "max_keys_per_user", "credit", "registration_enabled"],
        ),
        r(
            Method::POST,
            "/api/admin/upstreams".into(),
            &["name", "base_url", "api_key", "models", "model_map", "priority", "weight", "enabled"],
        ),
        r(
            Method::PUT,
            format!("/api/admin/upstreams/{upstream}"),
            &["name", "base_url", "api_key", "models", "weight"],
        ),
        r(Method::POST, "/api/payment/credit/notify".into(), &["pid", "trade_no", "out_trade_no", "money", "sign"]),
        // Hostile path segments.
        r(Method::PATCH, "/api/admin/users/99999999999999999999".into(), &["status"]),
        r(Method::POST, "/api/admin/users/-1/balance".into(), &["amount", "reason"]),
        r(Method::PUT, "/api/admin/packages/abc".into(), &["name"]),
        r(Method::POST, "/api/packages/9223372036854775807/purchase".into(), &["pay_with"]),
    ];

    let f = |path: String, fields: &'static [&'static str]| PageForm { path, fields };
    let forms = vec![
        f("/login".into(), &["email", "password", "next"]),
        f("/register".into(), &["email", "password", "next"]),
        f("/setup".into(), &["email", "password"]),
        f("/admin/announcements".into(), &["title", "body", "starts_on", "ends_on", "enabled"]),
        f(format!("/admin/announcements/{ann}"), &["title", "body", "starts_on", "ends_on", "enabled"]),
        f("/admin/codes".into(), &["worth", "amount", "package_id", "count", "note"]),
        f(
            "/admin/coupons".into(),
            &[
                "code",
                "kind",
                "value",
                "scope",
                "package_ids",
                "topup",
                "valid_from",
                "valid_until",
                "max_uses",
                "max_uses_per_user",
                "enabled",
            ],
        ),
        f(format!("/admin/coupons/{coupon}"), &["code", "kind", "value", "scope", "max_uses"]),
        f(format!("/admin/coupons/{coupon}/toggle"), &[]),
        f(
            "/admin/settings".into(),
            &[
                "registration_enabled",
                "max_keys_per_user",
                "default_daily_cap",
                "markup",
                "package_switch_mode",
                "credit_gateway_url",
                "credit_pid",
                "credit_order_ttl_minutes",
                "credit_topup_min",
                "credit_topup_max",
                "credit_topup_rate",
                "oauth_min_trust_level",
            ],
        ),
        f("/admin/settings/check".into(), &[]),
        f("/admin/pricing".into(), &["model", "input", "cached_input", "output"]),
        f("/admin/pricing/no-such-model/toggle".into(), &[]),
        f(
            "/admin/packages".into(),
            &[
                "name",
                "description",
                "price",
                "duration_days",
                "daily_limit",
                "sort_order",
                "stock",
                "per_user_limit",
                "enabled",
                "five_hour_limit",
                "weekly_limit",
                "monthly_limit",
                "total_limit",
                "models",
            ],
        ),
        f(format!("/admin/packages/{package}"), &["name", "price", "duration_days", "daily_limit", "stock"]),
        f("/admin/orders/no-such-order/refund".into(), &[]),
        f("/admin/orders/no-such-order/check".into(), &[]),
        f("/admin/upstreams".into(), &["name", "base_url", "api_key", "models", "model_map", "priority", "weight"]),
        f(format!("/admin/upstreams/{upstream}"), &["name", "base_url", "api_key", "models", "weight"]),
        f(format!("/admin/upstreams/{upstream}/test"), &[]),
        f(format!("/admin/users/{victim}/status"), &["status"]),
        f(format!("/admin/users/{user_id}/balance"), &["amount", "reason"]),
        f(format!("/admin/users/{victim}/caps"), &["daily_cap", "five_hour_cap"]),
        f(format!("/admin/users/{user_id}/packages"), &["package_id"]),
        f(format!("/admin/users/{user_id}/packages/99999999999999999999/end"), &[]),
        f("/dashboard/billing-preference".into(), &["preference"]),
        f(format!("/packages/{package}/buy"), &["pay_with", "coupon"]),
        f("/account/topup".into(), &["amount", "coupon"]),
        f("/keys".into(), &["name", "spend_limit"]),
        f("/keys/99999999999999999999/revoke".into(), &[]),
        f("/account/password".into(), &["old_password", "new_password", "confirm_password"]),
        f("/account/redeem".into(), &["code"]),
        f("/packages/abc/buy".into(), &["pay_with"]),
    ];

    let lists: Vec<(&str, &[&str])> = vec![
        ("/api/admin/users", &["q", "role", "status", "page", "per_page"]),
        ("/api/admin/ledger", &["user_id", "page", "per_page"]),
        ("/api/admin/audit", &["actor", "action", "date", "from", "to", "page", "per_page"]),
        ("/api/user/daily-usage", &["days"]),
        ("/api/user/ledger", &["page", "per_page"]),
        ("/api/user/usage", &["key_id", "model", "from", "to", "page", "per_page"]),
        ("/api/admin/usage", &["user_id", "key_id", "model", "from", "to", "page", "per_page"]),
        ("/api/user/orders", &["page", "per_page"]),
        ("/api/admin/orders", &["status", "kind", "user_id", "from", "until", "page", "per_page"]),
        ("/api/admin/redemption-codes", &["batch", "format", "page", "per_page"]),
        ("/api/packages/1/quote", &["coupon"]),
        ("/api/payment/credit/notify", &["pid", "trade_no", "out_trade_no", "money", "sign"]),
        ("/api/auth/oauth/linuxdo/callback", &["code", "state", "error"]),
        ("/admin/audit", &["action", "actor", "page"]),
        ("/admin/codes", &["page"]),
        ("/admin", &["days"]),
        ("/admin/users", &["q", "status", "page"]),
        ("/admin/orders", &["status", "kind", "user", "page"]),
        ("/admin/usage", &["from", "to", "model", "key", "user", "request", "page"]),
        ("/admin/usage.csv", &["from", "to", "page"]),
        ("/ledger", &["show", "page"]),
        ("/orders", &["page"]),
        ("/usage", &["from", "to", "model", "key", "request", "page"]),
        ("/usage.csv", &["from", "to", "model"]),
        ("/login", &["next", "registered"]),
        ("/lang/en", &["next"]),
        ("/packages/1/quote", &["coupon"]),
        ("/orders/no-such-order/status", &[]),
        ("/pay/no-such-order", &[]),
    ];

    let ledger_before = app.count("SELECT COUNT(*) FROM ledger_entries").await;
    let mut fz = Fuzzer { app: &app, user, admin, sent: 0, refused: 0, defects: Vec::new() };
    for (i, route) in api_routes.iter().enumerate() {
        for who in [Who::Anonymous, Who::User, Who::Admin] {
            let full = matches!(who, Who::Admin)
                || (matches!(who, Who::User)
                    && (route.path.starts_with("/api/user") || route.path.starts_with("/api/packages")))
                || (matches!(who, Who::Anonymous) && route.path.starts_with("/api/auth")
                    || route.path.contains("notify"));
            for body in api_bodies(route.fields, full, i as u8) {
                fz.api(who, route, &body).await;
            }
        }
    }
    for (i, form) in forms.iter().enumerate() {
        for who in [Who::Anonymous, Who::User, Who::Admin] {
            let guest_form = ["/login", "/register", "/setup"].contains(&form.path.as_str());
            let full = matches!(who, Who::Admin)
                || (matches!(who, Who::User) && !form.path.starts_with("/admin"))
                || guest_form;
            for fields in form_bodies(form.fields, full, i as u8) {
                fz.form(who, form, &fields, None).await;
            }
            if full {
                for raw in [&b"%zz=%zz&&&="[..], &[0xff, 0xfe, 0x00][..], &b"{\"json\":true}"[..]] {
                    fz.form(who, form, &[], Some(raw)).await;
                }
            }
        }
    }
    for (path, params) in &lists {
        for who in [Who::Anonymous, Who::User, Who::Admin] {
            fz.get(who, path).await;
            if matches!(who, Who::Anonymous) && path.starts_with("/admin") {
                continue;
            }
            for q in hostile_queries(params) {
                fz.get(who, &format!("{path}?{q}")).await;
            }
        }
    }

    let (sent, refused) = (fz.sent, fz.refused);
    let defects = std::mem::take(&mut fz.defects);
    report(
        "fuzz_surface",
        app.backend,
        &[
            ("api_routes", api_routes.len() as u64),
            ("forms", forms.len() as u64),
            ("lists", lists.len() as u64),
            ("requests", sent),
            ("refused", refused),
        ],
        defects.len(),
    );
    assert!(defects.is_empty(), "{} of {sent} hostile requests broke a rule:\n{}", defects.len(), defects.join("\n"));
    assert!(sent > 3000, "the pass sent {sent} requests");
    let ledger_after = app.count("SELECT COUNT(*) FROM ledger_entries").await;
    assert!(ledger_after >= ledger_before);
    app.assert_all_invariants().await;
}
