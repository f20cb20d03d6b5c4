//! Issue 20, the package status a buyer looks for (items 4, 5 and 8) in the browser: a
//! purchase the balance cannot pay says how much is missing and links to top-up; a
//! top-up through the cashier comes back without the gateway's signed query and says
//! what was credited; "Renew" on the held package says until when it is extended; a
//! second package says it is queued (not "active"); and the dashboard lists the queued
//! package with its start, the days left and the countdown to the reset with the zone
//! named — every date equal to /api/user/packages.

use fantoccini::Locator;
use serde_json::json;

use super::Session;

/// Waits until the browser left the cashier and is back on `path`; returns the query.
async fn back_on(s: &Session, path: &str) -> String {
    s.wait_path(path).await;
    s.c.current_url().await.unwrap().query().unwrap_or_default().to_string()
}

/// "2026-02-14T12:00:00+08:00" (the API, in the business zone) as the pages write it.
fn local_minutes(rfc3339: &str) -> String {
    rfc3339.get(..16).unwrap_or(rfc3339).replacen('T', " ", 1)
}

async fn buyer_token(s: &Session) -> String {
    s.app.login("dev@example.com", "a good password").await
}

async fn held_packages(s: &Session, token: &str) -> Vec<serde_json::Value> {
    let packages = s.app.get("/api/user/packages", token).await.body;
    packages.as_array().or_else(|| packages["items"].as_array()).cloned().unwrap_or_default()
}

async fn through_the_cashier(s: &Session) {
    for _ in 0..50 {
        if s.path().await.starts_with("/sandbox/epay/cashier/") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.click("#sandbox-pay").await;
}

/// Before the first purchase: the balance (5.00 from the redeemed code) is short of Starter (9.90).
pub async fn a_balance_too_low_says_what_is_missing(s: &Session) {
    s.go("/packages").await;
    s.click(".package-card .buy-balance").await;
    let said = s.wait_text("#shortfall", "short").await;
    assert!(said.contains("4.90 USD short of this package (balance 5.00 USD)"), "{said}");
    let link = s.c.find(Locator::Css("#shortfall #shortfall-topup")).await.unwrap();
    assert!(link.attr("href").await.unwrap().unwrap_or_default().ends_with("/account#amount"), "a way to top up");
    s.shot("10a0-packages-shortfall").await;
}

/// After the package bought through the cashier is active and used (signed in as the buyer).
pub async fn orders_say_what_they_did_and_the_dashboard_lists_the_queue(s: &Session) {
    // A top-up of 5.00 through the sandbox cashier.
    s.go("/account").await;
    s.fill("#amount", "5.00").await;
    s.click("#topup").await;
    through_the_cashier(s).await;
    let query = back_on(s, "/packages").await;
    assert!(query.starts_with("out_trade_no=") && !query.contains("sign"), "no signature in the address: {query}");
    let said = s.wait_text("#order-outcome", "credited").await;
    assert_eq!(said, "Payment received: 5.00 USD credited to your balance, which is now 10.00 USD.");
    s.shot("10h-topup-credited").await;

    // "Renew" on the held Starter, paid at the cashier: it is extended, and said so.
    s.click("#my-packages form.renew button").await;
    through_the_cashier(s).await;
    let query = back_on(s, "/packages").await;
    assert!(!query.contains("sign"), "{query}");
    let said = s.wait_text("#order-outcome", "Starter").await;
    let token = buyer_token(s).await;
    let held = held_packages(s, &token).await;
    let active = held.iter().find(|p| p["status"] == "active").expect("the active package in the API");
    let ends = local_minutes(active["ends_at"].as_str().unwrap());
    assert_eq!(said, format!("Payment received: Starter is extended and now runs until {ends}."));
    s.shot("10i-packages-renewed").await;

    // Another package bought from the balance while Starter runs: queued behind it, said so.
    // The operator of the flow (a second admin would widen the admin tables checked later).
    let admin = s.app.login("boss@example.com", "correct horse battery").await;
    let body = json!({"name": "Weekly", "price": "3.00", "duration_days": 7, "daily_limit": "1", "sort_order": 9});
    s.app.create_package(&admin, body).await;
    s.go("/packages").await;
    s.click(".package-card:last-child .buy-balance").await;
    let said = s.wait_text("#order-outcome", "Weekly").await;
    let held = held_packages(s, &token).await;
    let queued = held.iter().find(|p| p["status"] == "queued").expect("a queued package in the API");
    let starts = local_minutes(queued["starts_at"].as_str().unwrap());
    assert_eq!(starts, ends, "queued behind Starter");
    let until = local_minutes(queued["ends_at"].as_str().unwrap());
    assert_eq!(
        said,
        format!("Payment received: Weekly is queued behind your current package; it starts {starts} and runs until {until}.")
    );
    assert!(!said.contains("is active"), "not \"your package is active\"");
    s.shot("10k-packages-queued").await;

    s.go("/dashboard").await;
    let queue = s.text("#queued-packages").await;
    assert!(queue.contains("Weekly · 7 days · 1.00 USD/day"), "{queue}");
    assert_eq!(s.text("#queued-packages .queued-start").await, starts, "the start the API gives");
    assert!(s.text("#days-left").await.ends_with("days left"));
    let reset = s.text("#next-reset").await;
    assert!(reset.contains(&format!("({})", s.app.state.calendar().zone_name())), "the zone is named: {reset}");
    assert!(s.text("#countdown").await.starts_with("in "), "a countdown");
    s.shot("10j-dashboard-queued").await;
}
