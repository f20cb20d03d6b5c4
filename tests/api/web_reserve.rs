//! Issue 20 item 6: a request refused for its reserve (the worst-case hold) names the
//! figure it was admitted against, and the dashboard shows that same figure, its parts
//! (package room, balance, running holds) and what to do — on both databases.

use codex_gateway::domain::billing::{self, AdmissionRequest};
use codex_gateway::domain::proxy::mock::MockOptions;
use codex_gateway::foundation::money::Money;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;
use crate::proxy::{setup, v1};
use crate::web_money::{page, page_zh};

on_both_databases!(
    the_dashboard_shows_the_figure_a_refusal_names,
    a_model_restricted_package_shows_per_model_the_figure_admission_uses,
);

/// The text of the element with `id` in `html` (up to its first child tag or end).
fn text_of<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\">");
    let start = html.find(&open).map(|i| i + open.len()).unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[start..];
    rest[..rest.find('<').unwrap_or(rest.len())].trim()
}

/// The amount in `text` between `before` and the next " USD".
fn amount_after<'a>(text: &'a str, before: &str) -> &'a str {
    let start = text.find(before).map(|i| i + before.len()).unwrap_or_else(|| panic!("{before:?} not in {text}"));
    let rest = &text[start..];
    &rest[..rest.find(" USD").unwrap_or(rest.len())]
}

async fn the_dashboard_shows_the_figure_a_refusal_names(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("0.05")).await;
    // A request still running holds 0.02 of the 0.05.
    let running = AdmissionRequest {
        request_id: None,
        user_id: s.user_id,
        api_key_id: s.key_id,
        hold: Money::parse("0.02").unwrap(),
    };
    let _hold = billing::admit(app.state.env(), &running).await.unwrap();
    let r = page(&app, "/dashboard", &s.user_token).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(text_of(&r.text, "admits"), "0.03", "balance 0.05 − 0.02 held");
    let parts = text_of(&r.text, "admits-parts");
    assert!(parts.contains("balance 0.05") && parts.contains("0.02 held"), "{parts}");
    let help = text_of(&r.text, "admits-help");
    assert!(help.contains("max_output_tokens") && help.contains("top up"), "says what to do: {help}");

    // Nothing learned yet: a request reserves 4,096 output tokens (about 0.04 USD) > 0.03.
    let body = json!({"model": "gpt-5", "stream": true, "input": "hi"});
    let refused = v1(&app, "/v1/responses", &s.key).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let text = refused.text().await.unwrap();
    assert_eq!(amount_after(&text, "the balance leaves "), text_of(&r.text, "admits"), "the same figure: {text}");
    let reserve = Money::parse(amount_after(&text, "it reserves ")).unwrap();
    assert!(reserve > Money::parse("0.03").unwrap(), "refused because the reserve is more than the figure: {text}");

    // In Chinese the same figure and the same advice.
    let zh = page_zh(&app, "/dashboard", &s.user_token).await;
    assert_eq!(text_of(&zh, "admits"), "0.03");
    assert!(text_of(&zh, "admits-help").contains("max_output_tokens"), "{zh}");
    assert!(text_of(&zh, "admits-parts").contains("进行中请求预留 0.02"));
}

/// The figure of the dashboard line for `models` ("*" = any other model).
fn line_figure(html: &str, models: &str) -> Money {
    let open = format!("data-models=\"{models}\"");
    let row = &html[html.find(&open).unwrap_or_else(|| panic!("no line for {models}: {html}"))..];
    let open = "class=\"admits-figure\">";
    let start = row.find(open).map(|i| i + open.len()).unwrap_or_else(|| panic!("no figure for {models}"));
    let figure = row[start..row[start..].find('<').map_or(row.len(), |e| start + e)].trim();
    Money::parse(figure).unwrap_or_else(|e| panic!("{figure:?}: {e}"))
}

/// One chat request to `model`: its status and the error message, if any (a refusal is
/// checked to be one for money: the 429 `usage_limit_reached` Codex shows, with the
/// gateway's own code `insufficient_*`).
async fn ask(app: &TestApp, key: &str, model: &str) -> (StatusCode, String) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2000});
    let r = v1(app, "/v1/chat/completions", key).json(&body).send().await.unwrap();
    let status = r.status();
    let text: serde_json::Value = r.json().await.unwrap();
    if status != StatusCode::OK {
        assert_eq!(text["error"]["type"], "usage_limit_reached", "{text}");
        let code = text["error"]["code"].as_str().unwrap_or_default();
        assert!(code.starts_with("insufficient_"), "{text}");
    }
    (status, text["error"]["message"].as_str().unwrap_or_default().to_string())
}

/// A package paying only for gpt-5-codex counts for gpt-5-codex requests and not for
/// gpt-5: the page shows one figure per line, and a request whose reserve equals its
/// line's figure passes while one micro-dollar less funding refuses it (HTTP 429
/// `usage_limit_reached`, as every /v1 refusal for money) with a message that names
/// the reserve and the same figure.
async fn a_model_restricted_package_shows_per_model_the_figure_admission_uses(app: TestApp) {
    let s = setup(&app, MockOptions::default(), Some("0.01")).await;
    let body = json!({"name": "Codex only", "price": "1", "duration_days": 30, "daily_limit": "0.005",
                      "models": ["gpt-5-codex"], "sort_order": 1});
    let package = app.create_package(&s.admin, body).await;
    let granted =
        app.post(&format!("/api/admin/users/{}/packages", s.user_id), &s.admin, json!({"package_id": package})).await;
    assert!(granted.status.is_success(), "{}", granted.text);

    let r = page(&app, "/dashboard", &s.user_token).await;
    assert!(!r.text.contains("id=\"admits\""), "no single figure when a package is restricted: {}", r.text);
    let m = |v: &str| Money::parse(v).unwrap();
    assert_eq!(line_figure(&r.text, "gpt-5-codex"), m("0.015"), "package 0.005 + balance 0.01");
    assert_eq!(line_figure(&r.text, "*"), m("0.01"), "the balance only");

    // gpt-5 is not paid by the package: its reserve (more than 0.01) is refused against the balance alone.
    let (status, text) = ask(&app, &s.key, "gpt-5").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(m(amount_after(&text, "the balance leaves ")), line_figure(&r.text, "*"), "{text}");

    // gpt-5-codex: refused against 0.015, the figure of its line; the message names the reserve.
    let (status, text) = ask(&app, &s.key, "gpt-5-codex").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(m(amount_after(&text, "USD for its worst case and ")), m("0.015"), "{text}");
    let reserve = m(amount_after(&text, "it reserves "));
    assert!(reserve > m("0.015"), "{text}");

    // Funded to one micro-dollar short of the reserve: the page says so and the request is refused.
    let short = reserve.saturating_sub(m("0.015")).saturating_sub(Money::from_micros(1));
    app.fund(&s.admin, s.user_id, &short.to_string()).await;
    let r = page(&app, "/dashboard", &s.user_token).await;
    assert_eq!(line_figure(&r.text, "gpt-5-codex"), reserve.saturating_sub(Money::from_micros(1)));
    let (status, text) = ask(&app, &s.key, "gpt-5-codex").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(m(amount_after(&text, "it reserves ")), reserve, "the same reserve: {text}");
    assert_eq!(m(amount_after(&text, "USD for its worst case and ")), line_figure(&r.text, "gpt-5-codex"), "{text}");

    // One micro-dollar more: the page figure is the reserve and the request passes.
    app.fund(&s.admin, s.user_id, "0.000001").await;
    let r = page(&app, "/dashboard", &s.user_token).await;
    assert_eq!(line_figure(&r.text, "gpt-5-codex"), reserve);
    let (status, text) = ask(&app, &s.key, "gpt-5-codex").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    app.wait_until_settled().await;
    app.assert_money_invariants().await;

    // In Chinese the same lines.
    let zh = page_zh(&app, "/dashboard", &s.user_token).await;
    assert!(zh.contains("其他模型") && zh.contains("按模型"), "{zh}");
}
