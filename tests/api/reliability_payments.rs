//! Payment gateway faults: notify storms, forged notify floods, and a notify racing
//! reconciliation and a refund — always exactly-once fulfilment.

use std::collections::HashMap;

use codex_gateway::domain::orders::jobs;
use codex_gateway::domain::payment::epay::{self, Params};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{report, signed_notify, TestApp};
use crate::on_both_databases_with_sandbox;

on_both_databases_with_sandbox!(
    a_storm_of_one_hundred_identical_notifies_fulfils_each_order_once,
    a_flood_of_forged_notifies_fulfils_nothing,
    a_notify_racing_reconciliation_and_a_refund_ends_exactly_once,
);

async fn submit_to_sandbox(app: &TestApp, purchase: &Value) -> String {
    let params: HashMap<String, String> = serde_json::from_value(purchase["gateway"]["params"].clone()).unwrap();
    let url = purchase["gateway"]["url"].as_str().unwrap();
    let r = app.client.post(url).form(&params).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{}", r.text().await.unwrap());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    location.rsplit('/').next().unwrap().to_string()
}

struct Shop {
    admin: String,
    user: String,
    package_id: i64,
}

async fn shop(app: &TestApp) -> Shop {
    let admin = app.admin_token().await;
    app.configure_credit(&admin).await;
    let package_id = app
        .create_package(&admin, json!({"name": "月度会员", "price": "30.00", "duration_days": 30, "daily_limit": 5}))
        .await;
    let (_, user) = app.register_and_login("buyer@example.com").await;
    Shop { admin, user, package_id }
}

fn storm_size() -> usize {
    if std::env::var_os("RELIABILITY_LONG").is_some() {
        500
    } else {
        100
    }
}

async fn a_storm_of_one_hundred_identical_notifies_fulfils_each_order_once(app: TestApp) {
    let s = shop(&app).await;
    let topup = app.post("/api/user/topup", &s.user, json!({"amount": "10.00"})).await;
    assert_eq!(topup.status, StatusCode::CREATED, "{}", topup.text);
    let topup_otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let buy =
        app.post(&format!("/api/packages/{}/purchase", s.package_id), &s.user, json!({"pay_with": "credit"})).await;
    assert_eq!(buy.status, StatusCode::CREATED, "{}", buy.text);
    let package_otn = buy.body["order"]["out_trade_no"].as_str().unwrap().to_string();

    let n = storm_size();
    let a = signed_notify(&topup_otn, "G1", "10.00", &[]);
    let b = signed_notify(&package_otn, "G2", "30.00", &[]);
    let storm = futures::future::join_all((0..n).flat_map(|_| [app.send_notify(&a), app.send_notify(&b)])).await;
    let failures: Vec<_> = storm.iter().filter(|(st, body)| *st != StatusCode::OK || body != "success").collect();
    assert!(failures.is_empty(), "{} notifies not acknowledged: {:?}", failures.len(), failures.first());
    assert_eq!(app.balance(&s.user).await, "10.00");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'topup'").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM user_packages").await, 1);
    assert_eq!(app.count("SELECT COUNT(*) FROM payment_notifies WHERE outcome = 'fulfilled'").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM payment_notifies").await, 2 * n as i64, "every attempt is logged");
    let sold = app.get(&format!("/api/admin/packages/{}", s.package_id), &s.admin).await;
    assert_eq!(sold.body["sold"], 1, "{}", sold.text);
    app.assert_all_invariants().await;
    report("notify_storm", app.backend, &[("requests", 2 * n as u64), ("faults", 2 * n as u64 - 2)], 0);
}

async fn a_flood_of_forged_notifies_fulfils_nothing(app: TestApp) {
    let s = shop(&app).await;
    let topup = app.post("/api/user/topup", &s.user, json!({"amount": "10.00"})).await;
    let otn = topup.body["order"]["out_trade_no"].as_str().unwrap().to_string();
    let mut forged: Vec<Params> = Vec::new();
    let good = signed_notify(&otn, "G1", "10.00", &[]);
    let mut wrong_sign = good.clone();
    wrong_sign.insert("sign".into(), "0".repeat(32));
    forged.push(wrong_sign);
    let mut unsigned = good.clone();
    unsigned.remove("sign");
    forged.push(unsigned);
    let mut tampered_money = good.clone();
    tampered_money.insert("money".into(), "1000.00".into());
    forged.push(tampered_money);
    forged.push(signed_notify(&otn, "G1", "1.00", &[]));
    forged.push(signed_notify(&otn, "G1", "10.001", &[]));
    forged.push(signed_notify(&otn, "G1", "-10.00", &[]));
    forged.push(signed_notify(&otn, "G1", "10.00", &[("pid", "9999")]));
    forged.push(signed_notify(&otn, "G1", "10.00", &[("trade_status", "WAIT_BUYER_PAY")]));
    forged.push(signed_notify("NO-SUCH-ORDER", "G1", "10.00", &[]));
    forged.push(signed_notify(&format!("{otn}' OR '1'='1"), "G1", "10.00", &[]));
    forged.push(epay::signed(good.clone(), "wrong-key"));
    // One hex digit changed (and upper-cased, which alone would be a valid signature).
    let mut flipped = good.clone();
    let sign = good["sign"].clone();
    let first = if sign.starts_with('0') { "1" } else { "0" };
    flipped.insert("sign".into(), format!("{first}{}", &sign[1..]).to_uppercase());
    forged.push(flipped);
    let rounds = 10;
    let answers = futures::future::join_all((0..rounds).flat_map(|_| forged.iter().map(|p| app.send_notify(p)))).await;
    assert!(
        answers.iter().all(|(st, body)| *st != StatusCode::INTERNAL_SERVER_ERROR && body != "success"),
        "{answers:?}"
    );
    assert_eq!(app.balance(&s.user).await, "0.00");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries").await, 0);
    let order = app.get(&format!("/api/user/orders/{otn}"), &s.user).await;
    assert_eq!(order.body["status"], "pending", "{}", order.text);
    // The genuine notify still works afterwards.
    assert_eq!(app.send_notify(&good).await.1, "success");
    assert_eq!(app.balance(&s.user).await, "10.00");
    app.assert_all_invariants().await;
    let tried = (rounds * forged.len()) as u64;
    report("notify_forged_flood", app.backend, &[("requests", tried + 1), ("bad_inputs", tried)], 0);
}

async fn a_notify_racing_reconciliation_and_a_refund_ends_exactly_once(app: TestApp) {
    let s = shop(&app).await;
    let mut outcomes = Vec::new();
    let rounds = 3;
    for round in 0..rounds {
        let r = app.post("/api/user/topup", &s.user, json!({"amount": "5.00"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let otn = r.body["order"]["out_trade_no"].as_str().unwrap().to_string();
        let trade_no = submit_to_sandbox(&app, &r.body).await;
        let paid = app
            .client
            .post(app.url(&format!("/sandbox/epay/cashier/{trade_no}/pay")))
            .form(&[("notify", "no")])
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), StatusCode::SEE_OTHER);
        let params = signed_notify(&otn, &trade_no, "5.00", &[]);
        let refund_path = format!("/api/admin/orders/{otn}/refund");
        // The refund starts after a varying head start of the notifies.
        let notifies = futures::future::join_all((0..20).map(|_| app.send_notify(&params)));
        let reconciles = futures::future::join_all((0..3).map(|_| jobs::reconcile_once(app.state.env())));
        let refund = async {
            for _ in 0..round {
                tokio::task::yield_now().await;
            }
            app.post(&refund_path, &s.admin, json!({})).await
        };
        let (answers, reports, refund) = tokio::join!(notifies, reconciles, refund);
        assert!(answers.iter().all(|(_, b)| b == "success"), "{answers:?}");
        assert!(reports.iter().all(Result::is_ok), "{reports:?}");
        assert!(
            refund.status == StatusCode::OK || refund.error_code() == "not_refundable",
            "refund: {} {}",
            refund.status,
            refund.text
        );
        if refund.status != StatusCode::OK {
            // The refund lost the race (the order was not fulfilled yet): it works now.
            let again = app.post(&refund_path, &s.admin, json!({})).await;
            assert_eq!(again.status, StatusCode::OK, "{}", again.text);
        }
        let order = app.get(&format!("/api/user/orders/{otn}"), &s.user).await;
        assert_eq!(order.body["status"], "refunded", "{}", order.text);
        outcomes.push(refund.status);
    }
    assert_eq!(app.balance(&s.user).await, "0.00");
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'topup'").await, rounds);
    assert_eq!(app.count("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'refund'").await, rounds);
    app.assert_all_invariants().await;
    report(
        "notify_reconcile_refund_race",
        app.backend,
        &[("requests", rounds as u64 * 24), ("faults", rounds as u64)],
        0,
    );
}
