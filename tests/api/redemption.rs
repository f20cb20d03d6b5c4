use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::TestApp;
use crate::on_both_databases;

on_both_databases!(
    admins_generate_codes_and_users_redeem_each_once,
    twenty_concurrent_redemptions_of_one_code_credit_it_once,
    batch_requests_are_checked,
    package_codes_activate_the_package_once_and_queue_behind_a_current_one,
    a_batch_exports_as_csv_with_a_header_row,
);

async fn admins_generate_codes_and_users_redeem_each_once(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, user) = app.register_and_login("r@example.com").await;
    let (_, other) = app.register_and_login("o@example.com").await;
    let batch =
        app.post("/api/admin/redemption-codes", &admin, json!({"count": 3, "amount": "10.50", "note": "launch"})).await;
    assert_eq!(batch.status, StatusCode::CREATED, "{}", batch.text);
    let batch_id = batch.body["batch_id"].as_i64().unwrap();
    let codes: Vec<String> =
        batch.body["codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| c.len() == 19 && c.matches('-').count() == 3), "{codes:?}");
    assert_ne!(codes[0], codes[1]);

    // Typed sloppily: lower case, no dashes, spaces around.
    let typed = format!("  {}  ", codes[0].replace('-', "").to_lowercase());
    let redeemed = app.post("/api/user/redeem", &user, json!({"code": typed})).await;
    assert_eq!(redeemed.status, StatusCode::OK, "{}", redeemed.text);
    assert_eq!(redeemed.body["kind"], "balance");
    assert_eq!(redeemed.body["amount"], "10.50");
    assert_eq!(redeemed.body["balance"], "10.50");
    assert_eq!(redeemed.body["code"], codes[0].as_str());

    let again = app.post("/api/user/redeem", &user, json!({"code": codes[0]})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "code_used");
    let by_other = app.post("/api/user/redeem", &other, json!({"code": codes[0]})).await;
    assert_eq!(by_other.error_code(), "code_used");
    let unknown = app.post("/api/user/redeem", &other, json!({"code": "AAAA-BBBB-CCCC-DDDD"})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    let garbage = app.post("/api/user/redeem", &other, json!({"code": "x"})).await;
    assert_eq!(garbage.status, StatusCode::NOT_FOUND);
    let guest = app.post_public("/api/user/redeem", json!({"code": codes[1]})).await;
    assert_eq!(guest.status, StatusCode::UNAUTHORIZED);

    let me = app.get("/api/user/me", &user).await;
    assert_eq!(me.body["balance"], "10.50");
    let ledger = app.get(&format!("/api/admin/ledger?user_id={user_id}"), &admin).await;
    assert_eq!(ledger.body["total"], 1);
    assert_eq!(ledger.body["items"][0]["kind"], "redeem");
    assert_eq!(ledger.body["items"][0]["amount"], "10.50");

    let list = app.get(&format!("/api/admin/redemption-codes?batch={batch_id}"), &admin).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["total"], 3);
    let items = list.body["items"].as_array().unwrap();
    let used: Vec<_> = items.iter().filter(|i| !i["used_by"].is_null()).collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["code"], codes[0].as_str());
    assert_eq!(used[0]["used_by"], user_id);
    assert_eq!(used[0]["used_by_email"], "r@example.com");
    assert!(used[0]["used_at"].as_str().unwrap().starts_with("2026-01-15T12:00:00"), "{}", used[0]);
    assert_eq!(items[0]["note"], "launch");
    assert_eq!(items[0]["amount"], "10.50");
    let users_cannot_list = app.get("/api/admin/redemption-codes", &user).await;
    assert_eq!(users_cannot_list.status, StatusCode::FORBIDDEN);

    let audit = app.get("/api/admin/audit?action=redemption.", &admin).await;
    assert_eq!(audit.body["total"], 1, "{}", audit.text);
    assert_eq!(audit.body["items"][0]["after"]["count"], 3);
    assert!(!audit.text.contains(&codes[0]), "codes stay out of the audit trail");
    app.assert_money_invariants().await;
}

async fn twenty_concurrent_redemptions_of_one_code_credit_it_once(app: TestApp) {
    let admin = app.admin_token().await;
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(app.register_and_login(&format!("racer{i}@example.com")).await.1);
    }
    let batch = app.post("/api/admin/redemption-codes", &admin, json!({"count": 1, "amount": "7"})).await;
    let code = batch.body["codes"][0].as_str().unwrap().to_string();
    let attempts = (0..20).map(|i| {
        let request = app
            .client
            .post(app.url("/api/user/redeem"))
            .bearer_auth(&tokens[i % tokens.len()])
            .json(&json!({ "code": code }));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let lost = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((won, lost), (1, 19), "{statuses:?}");
    let credited: i64 = sqlx::query_scalar("SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM users")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(credited, 7_000_000);
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_entries WHERE kind = 'redeem'")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(entries, 1);
    app.assert_money_invariants().await;
}

async fn batch_requests_are_checked(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("u@example.com").await;
    let path = "/api/admin/redemption-codes";
    for (body, field) in [
        (json!({"count": 0, "amount": "1"}), "count"),
        (json!({"count": 1001, "amount": "1"}), "count"),
        (json!({"count": 1}), "amount"),
        (json!({"count": 1, "amount": "0"}), "amount"),
        (json!({"count": 1, "amount": "1", "package_id": 1}), "amount"),
        (json!({"count": 1, "package_id": 999}), "package_id"),
    ] {
        let r = app.post(path, &admin, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["field"], field, "{body}");
    }
    let by_user = app.post(path, &user, json!({"count": 1, "amount": "1"})).await;
    assert_eq!(by_user.status, StatusCode::FORBIDDEN);
    let none: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM redemption_codes").fetch_one(app.db.pool()).await.unwrap();
    assert_eq!(none, 0, "refused batches leave nothing behind");
    let bad_format = app.get("/api/admin/redemption-codes?format=xml", &admin).await;
    assert_eq!(bad_format.status, StatusCode::UNPROCESSABLE_ENTITY);

    let started = std::time::Instant::now();
    let largest = app.post(path, &admin, json!({"count": 1000, "amount": "0.01"})).await;
    assert_eq!(largest.status, StatusCode::CREATED, "{}", largest.text);
    eprintln!("a 1000-code batch took {:?} on {:?}", started.elapsed(), app.backend);
    let distinct: std::collections::HashSet<&str> =
        largest.body["codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(distinct.len(), 1000);
}

async fn a_batch_exports_as_csv_with_a_header_row(app: TestApp) {
    let admin = app.admin_token().await;
    let (_, user) = app.register_and_login("c@example.com").await;
    let first =
        app.post("/api/admin/redemption-codes", &admin, json!({"count": 2, "amount": "5", "note": "a, \"b\""})).await;
    let batch_id = first.body["batch_id"].as_i64().unwrap();
    app.post("/api/admin/redemption-codes", &admin, json!({"count": 4, "amount": "1"})).await;
    let code = first.body["codes"][1].as_str().unwrap();
    app.post("/api/user/redeem", &user, json!({"code": code})).await;

    let csv = app.get(&format!("/api/admin/redemption-codes?batch={batch_id}&format=csv"), &admin).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(csv.headers["content-disposition"].to_str().unwrap().contains(&format!("batch-{batch_id}.csv")));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 3, "{}", csv.text);
    assert_eq!(lines[0], "code,batch_id,amount,package_id,note,used_by,used_by_email,used_at,created_at");
    assert!(lines[1].starts_with(first.body["codes"][0].as_str().unwrap()));
    assert!(lines[1].contains("\"a, \"\"b\"\"\""), "{}", lines[1]);
    assert!(lines[2].starts_with(code) && lines[2].contains("c@example.com"), "{}", lines[2]);
    let all = app.get("/api/admin/redemption-codes?format=csv", &admin).await;
    assert_eq!(all.text.lines().count(), 7);
    let exports = app.get("/api/admin/audit?action=redemption.export", &admin).await;
    assert_eq!(exports.body["total"], 2, "exports are on the audit trail");
    assert_eq!(exports.body["items"][1]["target"], format!("redemption_batch:{batch_id}"));
    assert_eq!(exports.body["items"][1]["after"]["rows"], 2);
}

async fn package_codes_activate_the_package_once_and_queue_behind_a_current_one(app: TestApp) {
    let admin = app.admin_token().await;
    let (user_id, user) = app.register_and_login("p@example.com").await;
    let plan = json!({"name": "Monthly", "price": "30", "duration_days": 30, "daily_limit": "5"});
    let monthly = app.create_package(&admin, plan).await;
    let private = app
        .create_package(&admin, json!({"name": "Private", "price": "99", "duration_days": 7, "daily_limit": "50"}))
        .await;
    let disabled = app.delete(&format!("/api/admin/packages/{private}"), &admin).await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text);

    let batch = app.post("/api/admin/redemption-codes", &admin, json!({"count": 2, "package_id": monthly})).await;
    assert_eq!(batch.status, StatusCode::CREATED, "{}", batch.text);
    let codes = batch.body["codes"].as_array().unwrap().clone();
    let private_batch =
        app.post("/api/admin/redemption-codes", &admin, json!({"count": 1, "package_id": private})).await;
    assert_eq!(private_batch.status, StatusCode::CREATED, "codes may grant a package that is not on sale");

    // Ten concurrent attempts on the first code: one activation.
    let attempts = (0..10).map(|_| {
        let request = app.client.post(app.url("/api/user/redeem")).bearer_auth(&user).json(&json!({"code": codes[0]}));
        async move { request.send().await.unwrap().status() }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    let mine = app.get("/api/user/packages", &user).await;
    let items = mine.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", mine.text);
    assert_eq!(items[0]["source"], "redeem");
    assert_eq!(items[0]["status"], "active");
    assert_eq!(items[0]["paid_amount"], "0.00");

    let second = app.post("/api/user/redeem", &user, json!({"code": codes[1]})).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["kind"], "package");
    assert_eq!(second.body["package_id"], monthly);
    assert_eq!(second.body["package_name"], "Monthly");
    assert_eq!(second.body["effect"], "extended");
    let queued = app.post("/api/user/redeem", &user, json!({"code": private_batch.body["codes"][0]})).await;
    assert_eq!(queued.body["effect"], "queued", "a free code never replaces the current package");

    let ledger = app.get(&format!("/api/admin/ledger?user_id={user_id}"), &admin).await;
    assert_eq!(ledger.body["total"], 3);
    assert!(ledger.body["items"].as_array().unwrap().iter().all(|e| e["kind"] == "redeem" && e["amount"] == "0.00"));
    assert_eq!(app.get("/api/user/me", &user).await.body["balance"], "0.00");
    let listed = app.get(&format!("/api/admin/redemption-codes?batch={}", batch.body["batch_id"]), &admin).await;
    assert!(listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["used_by"] == user_id && c["package_id"] == monthly));
    app.assert_money_invariants().await;
}
