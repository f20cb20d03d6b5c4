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
use crate::web_money::page;

on_both_databases!(the_dashboard_shows_the_figure_a_refusal_names,);

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
    let zh = app
        .client
        .get(app.url("/dashboard"))
        .header(reqwest::header::COOKIE, format!("cg_session={}; cg_lang=zh", s.user_token))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text_of(&zh, "admits"), "0.03");
    assert!(text_of(&zh, "admits-help").contains("max_output_tokens"), "{zh}");
    assert!(text_of(&zh, "admits-parts").contains("进行中请求预留 0.02"));
}
