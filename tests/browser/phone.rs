//! Every user and admin page with a table at 390 px: no cell cut off or out of reach, the
//! page never wider than the screen, and the 30-day chart's labels apart and readable.

use fantoccini::Locator;
use serde_json::{json, Value};

use super::Session;

/// Run in the page: what a phone user could not read. A cell of a card table
/// (`table.cards-sm`) must sit inside the screen with its text inside the cell; any other
/// cell outside the screen must be inside a `.table-wrap` that scrolls and shows the cue.
/// SVG chart labels must not overlap each other and be at least 7 px tall on screen.
const PHONE_CHECK: &str = r#"
const width = document.documentElement.clientWidth;
const problems = [];
if (document.documentElement.scrollWidth > width + 1) {
  problems.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + width);
}
let tables = 0;
for (const table of document.querySelectorAll('table')) {
  if (table.offsetParent === null) continue;
  tables += 1;
  const name = table.id || 'a table';
  const wrap = table.closest('.table-wrap');
  const scrolls = wrap && wrap.scrollWidth > wrap.clientWidth + 1;
  if (scrolls) {
    const style = getComputedStyle(wrap);
    if (style.overflowX !== 'auto' && style.overflowX !== 'scroll') problems.push(name + ' is cut off');
    if (!style.backgroundImage.includes('gradient')) problems.push(name + ' scrolls without a cue');
  }
  for (const cell of table.querySelectorAll('td, th')) {
    if (cell.offsetParent === null) continue;
    const box = cell.getBoundingClientRect();
    if (box.width === 0) continue;
    const text = name + ': ' + cell.textContent.trim().slice(0, 40);
    if (table.classList.contains('cards-sm')) {
      if (box.right > width + 1 || box.left < -1) problems.push('card cell off the screen: ' + text);
      if (cell.scrollWidth > cell.clientWidth + 1) problems.push('card cell overflows: ' + text);
      for (const part of cell.children) {
        const inner = part.getBoundingClientRect();
        if (inner.width > 0 && inner.width < 24 && part.textContent.trim().length > 6) problems.push('squeezed: ' + text);
      }
    } else if (box.right > width + 1 && !scrolls) {
      problems.push('a cell is off the screen: ' + text);
    }
  }
}
const labels = [...document.querySelectorAll('.chart svg text')]
  .filter(t => getComputedStyle(t).display !== 'none')
  .map(t => ({ text: t.textContent, box: t.getBoundingClientRect() }));
for (const l of labels) {
  if (l.box.height < 7) problems.push('chart label too small: ' + l.text + ' ' + l.box.height.toFixed(1) + ' px');
}
for (let i = 0; i < labels.length; i++) {
  for (let j = i + 1; j < labels.length; j++) {
    const a = labels[i].box, b = labels[j].box;
    if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) {
      problems.push('chart labels overlap: ' + labels[i].text + ' / ' + labels[j].text);
    }
  }
}
return { problems: problems, tables: tables, labels: labels.length };
"#;

/// Visits each page at 390 px, asserts nothing is cut and screenshots it as `{tag}-{page}`.
pub async fn every_table_fits(s: &Session, pages: &[&str], tag: &str) {
    s.c.set_window_size(390, 844).await.unwrap();
    let mut seen = Vec::new();
    for path in pages {
        s.go(path).await;
        s.text("h1").await;
        let found: Value = s.c.execute(PHONE_CHECK, vec![]).await.unwrap();
        assert_eq!(found["problems"], json!([]), "{path} at 390 px ({tag})");
        seen.push(format!("{path}: {} tables, {} chart labels", found["tables"], found["labels"]));
        let name = path.trim_start_matches('/').replace(['/', '?', '='], "-");
        s.c.execute("window.scrollTo(0, document.body.scrollHeight / 3)", vec![]).await.unwrap();
        s.shot(&format!("{tag}-{}", if name.is_empty() { "home" } else { &name })).await;
    }
    eprintln!("{tag} at 390 px: {seen:#?}");
    s.c.set_window_size(1280, 1400).await.unwrap();
}

/// The user's pages with a table (or the chart).
pub const USER_PAGES: [&str; 6] = ["/dashboard", "/keys", "/usage", "/ledger", "/orders", "/packages"];

/// Clicks the copy button of the codes just generated and proves the copy happened under
/// the CSP (static/app.js only): the button takes its copied state, and the clipboard,
/// read back with the permission granted, holds the codes.
pub async fn the_copy_button_copies(s: &Session, button: &str, source: &str) {
    s.c.issue_cmd(GrantClipboard).await.unwrap();
    s.click(button).await;
    let mut state = None;
    for _ in 0..50 {
        let element = s.c.find(Locator::Css(button)).await.unwrap();
        state = element.attr("data-state").await.unwrap();
        if state.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(state.as_deref(), Some("copied"), "the copy button reports its copy");
    let expected = s.text(source).await;
    let read =
        s.c.execute_async(
            "const done = arguments[arguments.length - 1]; \
             navigator.clipboard.readText().then(done, e => done('unreadable: ' + e));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(read.as_str().map(str::trim), Some(expected.trim()), "the clipboard holds what the button copied");
}

/// WebDriver "Set Permission" (chromedriver): lets the page read the clipboard back.
#[derive(Debug)]
struct GrantClipboard;

impl fantoccini::wd::WebDriverCompatibleCommand for GrantClipboard {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/permissions", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _url: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({"descriptor": {"name": "clipboard-read"}, "state": "granted"});
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

/// Run in the page at desktop width: the page never scrolls sideways and no table's
/// `.table-wrap` needs a scrollbar (issue 20: /admin/orders did at 1280 px). Names the
/// widest cells of a table that does not fit, so a failure says what to fix.
const DESKTOP_CHECK: &str = r#"
const width = document.documentElement.clientWidth;
const problems = [];
// No tolerance: one pixel too wide is a scrollbar (the admin bar was 1266 > 1265).
if (document.documentElement.scrollWidth > width) {
  const wide = [...document.body.querySelectorAll('*')].filter(el => el.getBoundingClientRect().right > width)
    .slice(0, 4).map(el => el.tagName.toLowerCase() + '.' + el.className + ' ' + Math.round(el.getBoundingClientRect().right));
  problems.push('the page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + width + ' (' + wide.join(', ') + ')');
}
for (const wrap of document.querySelectorAll('.table-wrap')) {
  if (wrap.offsetParent === null || wrap.scrollWidth <= wrap.clientWidth + 1) continue;
  const table = wrap.querySelector('table');
  const cells = [...wrap.querySelectorAll('td, th')]
    .map(c => ({ w: Math.round(c.getBoundingClientRect().width), t: c.textContent.trim().slice(0, 30) }))
    .sort((a, b) => b.w - a.w).slice(0, 4).map(c => c.w + 'px ' + c.t);
  problems.push(((table && table.id) || 'a table') + ' scrolls: ' + wrap.scrollWidth + ' > ' + wrap.clientWidth + ' (' + cells.join(' | ') + ')');
}
return problems;
"#;

/// Visits each page at 1280 px and asserts every table fits without a scrollbar.
pub async fn every_table_fits_the_desktop(s: &Session, pages: &[&str], tag: &str) {
    s.c.set_window_size(1280, 1400).await.unwrap();
    let mut problems = Vec::new();
    for path in pages {
        s.go(path).await;
        s.text("h1").await;
        let found: Value = s.c.execute(DESKTOP_CHECK, vec![]).await.unwrap();
        if found != json!([]) {
            problems.push(format!("{path}: {found}"));
            let name = path.trim_start_matches('/').replace(['/', '?', '='], "-");
            s.shot(&format!("{tag}-{name}")).await;
        }
    }
    assert!(problems.is_empty(), "at 1280 px ({tag}): {problems:#?}");
}
