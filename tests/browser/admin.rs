//! The operator's tools in the browser flow: editing an upstream and testing its
//! connection, ending a user's package, copying new redemption codes, and every admin
//! page on a 390 px phone with no table cell out of reach.

use fantoccini::Locator;
use serde_json::Value;

use super::Session;

/// Run in the page: what is out of reach at this width. A cell outside the screen is
/// fine only inside a `.table-wrap` that scrolls sideways and shows the scroll cue.
const REACH_CHECK: &str = r#"
const width = document.documentElement.clientWidth;
const problems = [];
if (document.documentElement.scrollWidth > width + 1) {
  problems.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + width);
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.table-wrap')) continue;
    const box = el.getBoundingClientRect();
    if (box.right > width + 1 && box.width > 0) {
      wide.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className ? '.' + el.className : '') + ' ' + Math.round(box.right));
    }
  }
  problems.push('too wide: ' + wide.slice(-6).join(', '));
}
const scrolling = [];
for (const wrap of document.querySelectorAll('.table-wrap')) {
  if (wrap.scrollWidth <= wrap.clientWidth + 1) continue;
  const style = getComputedStyle(wrap);
  const table = wrap.querySelector('table');
  const name = (table && table.id) || 'a table';
  scrolling.push(name);
  if (style.overflowX !== 'auto' && style.overflowX !== 'scroll') problems.push(name + ' is cut off');
  if (!style.backgroundImage.includes('gradient')) problems.push(name + ' scrolls without a cue');
}
for (const cell of document.querySelectorAll('td, th')) {
  if (cell.offsetParent === null || cell.closest('.table-wrap')) continue;
  const box = cell.getBoundingClientRect();
  if (box.right > width + 1) problems.push('a cell is off the screen: ' + cell.textContent.trim().slice(0, 40));
}
return { problems: problems, scrolling: scrolling };
"#;

async fn href_of(s: &Session, css: &str) -> String {
    let link = s.c.wait().for_element(Locator::Css(css)).await.unwrap();
    let href = link.attr("href").await.unwrap().unwrap();
    href.trim_start_matches(&s.app.url("")).to_string()
}

async fn source_has(s: &Session, needle: &str) -> bool {
    s.c.source().await.unwrap().contains(needle)
}

pub async fn admin_tools_on_desktop_and_phone(s: &Session) {
    // Upstream: edit form and "test connection" (a real request to the mock's /models).
    s.go("/admin/upstreams").await;
    let edit = href_of(s, "#upstreams-table td a[href^='/admin/upstreams/']").await;
    s.go(&edit).await;
    assert!(s.text("#api-key-kept").await.contains("leave blank"), "the key field says the key is kept");
    s.click("#test-connection").await;
    let outcome = s.wait_text("#check-outcome", "Connected").await;
    assert!(outcome.contains("HTTP 200") && outcome.contains("gpt-5-codex"), "{outcome}");
    assert!(!source_has(s, "sk-upstream-secret").await, "the key is never on the page");
    s.shot("30-admin-upstream-tested").await;
    s.fill("#model_map", "gpt-5-alias = gpt-5").await;
    s.click("#save-upstream").await;
    s.wait_path("/admin/upstreams").await;
    assert!(s.text("#upstreams-table").await.contains("gpt-5-alias → gpt-5"));
    s.shot("30b-admin-upstreams-mapped").await;

    // A user's page: whose packages, and ending one (htmx asks first).
    s.go("/admin/users").await;
    let link = s.c.wait().for_element(Locator::LinkText("dev@example.com")).await.unwrap();
    let user = link.attr("href").await.unwrap().unwrap();
    s.go(&user).await;
    assert_eq!(s.text("#packages-of").await, "Packages of dev@example.com", "not \"Your packages\"");
    s.shot("31-admin-user-packages").await;
    s.click("#user-packages button[id^='end-']").await;
    s.c.accept_alert().await.unwrap();
    s.wait_text("#notice", "Package ended.").await;
    assert!(s.text("#user-packages").await.contains("Ended by an admin"));
    s.shot("31b-admin-user-package-ended").await;

    // New redemption codes come with a copy button.
    s.go("/admin/codes").await;
    s.fill("#amount", "1").await;
    s.fill("#count", "2").await;
    s.click("#generate-codes").await;
    s.text("#new-codes").await;
    assert!(s.text("#copy-codes").await.contains("Copy"));
    super::phone::the_copy_button_copies(s, "#copy-codes", "#new-codes").await;
    s.shot("32-admin-codes-copy").await;

    // Every admin page on a phone: nothing out of reach, wide tables scroll with a cue.
    s.c.set_window_size(390, 844).await.unwrap();
    let pages = [
        ("/admin", "33a"),
        ("/admin/users", "33b"),
        (user.as_str(), "33c"),
        ("/admin/upstreams", "33d"),
        (edit.as_str(), "33e"),
        ("/admin/pricing", "33f"),
        ("/admin/packages", "33g"),
        ("/admin/orders", "33h"),
        ("/admin/settings", "33i"),
        ("/admin/codes", "33j"),
    ];
    let mut report = Vec::new();
    for (path, shot) in pages {
        s.go(path).await;
        s.text("h1").await;
        let found: Value = s.c.execute(REACH_CHECK, vec![]).await.unwrap();
        let problems = found["problems"].as_array().cloned().unwrap_or_default();
        assert!(problems.is_empty(), "{path} at 390 px: {problems:?}");
        report.push(format!("{path}: scrolls {}", found["scrolling"]));
        s.shot(&format!("{shot}-phone-admin{}", path.replace('/', "-"))).await;
    }
    eprintln!("admin pages at 390 px: {report:#?}");
    s.c.set_window_size(1280, 1400).await.unwrap();
    let admin_pages = [
        "/admin",
        "/admin/users",
        user.as_str(),
        "/admin/upstreams",
        "/admin/pricing",
        "/admin/packages",
        "/admin/orders",
        "/admin/usage",
        "/admin/codes",
        "/admin/coupons",
        "/admin/announcements",
        "/admin/audit",
        "/admin/metrics",
    ];
    super::phone::every_table_fits(s, &admin_pages, "42-phone-admin-en").await;
    super::phone::every_table_fits_the_desktop(s, &admin_pages, "desktop-admin-en").await;

    // The same tools in Chinese.
    s.go(&edit).await;
    s.click("#lang-switch").await;
    s.wait_text("h2", "测试连接").await;
    s.click("#test-connection").await;
    s.wait_text("#check-outcome", "连接成功").await;
    s.shot("34-admin-upstream-tested-zh").await;
    s.go(&user).await;
    assert_eq!(s.text("#packages-of").await, "dev@example.com 的套餐");
    s.shot("34b-admin-user-zh").await;
    s.go("/admin?days=30").await;
    s.shot("34c-admin-overview-top-zh").await;
    super::phone::every_table_fits(s, &admin_pages, "43-phone-admin-zh").await;
    super::phone::every_table_fits_the_desktop(s, &admin_pages, "desktop-admin-zh").await;
    s.go("/admin").await;
    s.click("#lang-switch").await;
    s.wait_text("h1", "Administration").await;
}
