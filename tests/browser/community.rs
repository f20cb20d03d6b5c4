//! The community part of the browser flow: the admin creates a coupon, a code batch and
//! an announcement on the web; the user redeems a code on /account; at the end the admin
//! finds the coupon use, the redeemed code and every action on /admin/audit.

use super::Session;

pub async fn admin_creates_a_coupon_codes_and_an_announcement(s: &Session) {
    s.click("#admin-nav a[href='/admin/coupons']").await;
    s.wait_path("/admin/coupons").await;
    s.fill("#code", "welcome10").await;
    s.fill("#value", "200").await;
    s.fill("#max_uses", "100").await;
    s.fill("#max_uses_per_user", "1").await;
    s.click("#create-coupon").await;
    assert!(!s.text("#value-error").await.is_empty(), "200 % off is refused next to the field");
    s.shot("06e-admin-coupon-error").await;
    s.fill("#value", "10").await;
    s.click("#create-coupon").await;
    let table = s.wait_text("#coupons-table", "WELCOME10").await;
    assert!(table.contains("WELCOME10") && table.contains("10%") && table.contains("0 / 100"), "{table}");
    s.shot("06f-admin-coupons").await;

    s.click("#admin-nav a[href='/admin/codes']").await;
    s.wait_path("/admin/codes").await;
    s.fill("#amount", "5").await;
    s.fill("#count", "3").await;
    s.fill("#note", "browser flow").await;
    s.click("#generate-codes").await;
    let codes = s.text("#new-codes").await;
    let lines: Vec<&str> = codes.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "the new codes are shown: {codes}");
    *s.code.lock().unwrap() = lines[0].to_string();
    assert!(s.text("#batches-table").await.contains("browser flow"));
    s.shot("06g-admin-codes").await;

    s.click("#admin-nav a[href='/admin/announcements']").await;
    s.wait_path("/admin/announcements").await;
    s.fill("#title", "Welcome aboard").await;
    s.fill("#body", "New here? Use **WELCOME10** for 10% off your first package.").await;
    s.click("#create-announcement").await;
    s.wait_text("#announcements-table", "Welcome aboard").await;
    s.shot("06h-admin-announcements").await;
    s.click("#logout").await;
    s.wait_path("/login").await;
}

pub async fn user_redeems_a_code_on_the_account_page(s: &Session) {
    s.go("/dashboard").await;
    assert!(s.text(".announcement").await.contains("WELCOME10"), "the dashboard shows the announcement");
    s.click("a[href='/account']").await;
    s.wait_path("/account").await;
    s.fill("#code", "NOT-A-REAL-CODE").await;
    s.click("#redeem").await;
    assert!(!s.text("#code-error").await.is_empty(), "an unknown code is refused next to the field");
    let code = s.code.lock().unwrap().clone();
    s.fill("#code", &code.to_lowercase()).await;
    s.click("#redeem").await;
    s.text("#redeemed").await;
    assert!(s.text("table.kv").await.contains("5.00 USD"), "the balance moved at once");
    s.shot("09b-account-redeemed").await;
    s.go("/dashboard").await;
    assert_eq!(s.text("#balance").await, "5.00");
}

/// The admin finds the coupon use, the redeemed code and every community action on the trail.
pub async fn admin_sees_the_community_trail(s: &Session) {
    s.go("/admin/coupons").await;
    assert!(s.text("#coupons-table").await.contains("1 / 100"), "the paid order used the coupon once");
    s.go("/admin/codes").await;
    let batches = s.text("#batches-table").await;
    assert!(batches.contains("browser flow"));
    s.shot("20-admin-codes-used").await;
    s.go("/admin/audit").await;
    let trail = s.text("#audit-table").await;
    for action in ["settings.update", "package.create", "coupon.create", "redemption.generate", "announcement.create"] {
        assert!(trail.contains(action), "{action} is on the audit trail");
    }
    assert!(trail.contains("boss@example.com") && trail.contains("code: WELCOME10"));
    s.shot("21-admin-audit").await;
    s.fill("#action", "coupon.").await;
    s.click("#audit-filter button").await;
    for _ in 0..50 {
        if s.c.current_url().await.unwrap().query().is_some_and(|q| q.contains("action=coupon")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let only = s.wait_text("#audit-table", "coupon.create").await;
    assert!(only.contains("coupon.create") && !only.contains("redemption.generate"), "{only}");
    // The admin pages in Chinese and at phone width.
    s.click("#lang-switch").await;
    s.wait_path("/admin/audit").await;
    assert_eq!(s.text("h1").await, "审计日志");
    s.shot("22-admin-audit-zh").await;
    s.go("/admin/coupons").await;
    s.shot("23-admin-coupons-zh").await;
    s.c.set_window_size(390, 844).await.unwrap();
    s.go("/admin/codes").await;
    s.shot("24-phone-admin-codes-zh").await;
    s.go("/admin/coupons").await;
    s.shot("25-phone-admin-coupons-zh").await;
    s.go("/admin/audit").await;
    s.shot("26-phone-admin-audit-zh").await;
    s.c.set_window_size(1280, 1400).await.unwrap();
    s.click("#lang-switch").await;
}
