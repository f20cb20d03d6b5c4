//! `/admin/audit`: the trail of admin actions (who, what, which object, what changed,
//! when, from where), newest first, filtered by action prefix and actor email.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::Value;

use super::ctx::{AdminPage, Ctx};
use super::view::{self, Pager};
use super::{error_page_for, render};
use crate::domain::audit::{self, AuditFilter, AuditRow};
use crate::foundation::error::Error;
use crate::runtime::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/audit", get(audit_page))
}

const PER_PAGE: i64 = 50;
/// Longest value shown inline in a change line; the full JSON is one click away.
const MAX_VALUE_CHARS: usize = 80;
/// Fields that change on every write or repeat another field, and say nothing.
const NOISE: &[&str] = &["updated_at", "created_at", "id", "body_html"];
/// Change lines shown per entry; the rest is counted and one click away.
const MAX_LINES: usize = 5;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AuditQuery {
    action: String,
    actor: String,
    page: Option<i64>,
}

/// An audit row as the page shows it.
pub struct EntryRow {
    pub time: String,
    pub actor: String,
    pub actor_id: Option<i64>,
    pub action: String,
    pub target: String,
    /// `field: before → after` lines (or `field: value` for a create or delete).
    pub changes: Vec<String>,
    pub before: String,
    pub after: String,
    pub ip: String,
}

fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Null => "∅".into(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX_VALUE_CHARS {
        let cut: String = text.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// What changed between the before and after snapshots, one line per field, at most
/// [`MAX_LINES`] of them plus a `+N` line.
pub fn changes(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let mut lines = all_changes(before, after);
    if lines.len() > MAX_LINES {
        let more = lines.len() - (MAX_LINES - 1);
        lines.truncate(MAX_LINES - 1);
        lines.push(format!("+{more} …"));
    }
    lines
}

fn all_changes(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let (mut old, mut new) = (Vec::new(), Vec::new());
            flatten("", b, &mut old);
            flatten("", a, &mut new);
            let mut seen = std::collections::HashSet::new();
            let keys: Vec<String> =
                old.iter().chain(new.iter()).map(|(k, _)| k.clone()).filter(|k| seen.insert(k.clone())).collect();
            let find = |list: &[(String, Value)], k: &str| {
                list.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or(Value::Null)
            };
            keys.iter()
                .filter_map(|k| {
                    let (o, n) = (find(&old, k), find(&new, k));
                    (o != n).then(|| format!("{k}: {} → {}", short(&o), short(&n)))
                })
                .collect()
        }
        (None, Some(Value::Object(one))) | (Some(Value::Object(one)), None) => one
            .iter()
            .filter(|(k, v)| !v.is_null() && !NOISE.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}: {}", short(v)))
            .collect(),
        (b, a) => {
            let b = b.map(short).unwrap_or_default();
            let a = a.map(short).unwrap_or_default();
            match (b.is_empty(), a.is_empty()) {
                (true, true) => Vec::new(),
                (true, false) => vec![a],
                (false, true) => vec![b],
                (false, false) => vec![format!("{b} → {a}")],
            }
        }
    }
}

/// Nested objects as dotted keys (`credit.enabled`), skipping [`NOISE`] fields.
fn flatten(prefix: &str, object: &serde_json::Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (key, value) in object {
        if NOISE.contains(&key.as_str()) {
            continue;
        }
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            Value::Object(inner) => flatten(&path, inner, out),
            other => out.push((path, other.clone())),
        }
    }
}

impl EntryRow {
    fn new(row: &AuditRow, state: &AppState) -> Self {
        let v = row.view(state.calendar());
        let pretty = |value: &Option<Value>| {
            value.as_ref().and_then(|v| serde_json::to_string_pretty(v).ok()).unwrap_or_default()
        };
        EntryRow {
            time: view::time(state.calendar(), row.created_at),
            actor: v.actor_email.clone().unwrap_or_else(|| "—".into()),
            actor_id: v.actor_id,
            action: v.action.clone(),
            target: v.target.clone().unwrap_or_default(),
            changes: changes(v.before.as_ref(), v.after.as_ref()),
            before: pretty(&v.before),
            after: pretty(&v.after),
            ip: v.ip.clone().unwrap_or_else(|| "—".into()),
        }
    }
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage<'a> {
    ctx: &'a Ctx,
    query: &'a AuditQuery,
    rows: Vec<EntryRow>,
    pager: Pager,
    /// Action prefixes offered as suggestions in the filter.
    actions: &'static [&'static str],
}

const ACTIONS: &[&str] =
    &["user.", "price.", "package.", "order.", "coupon.", "redemption.", "announcement.", "settings.", "upstream."];

async fn audit_page(
    State(state): State<AppState>,
    AdminPage(signed): AdminPage,
    Query(query): Query<AuditQuery>,
) -> Response {
    let ctx = &signed.ctx;
    let page = view::page_number(query.page);
    let loaded = async {
        let mut filter = AuditFilter {
            action_prefix: Some(query.action.trim().to_string()).filter(|a| !a.is_empty()),
            ..Default::default()
        };
        if !query.actor.trim().is_empty() {
            // An unknown email matches nobody rather than everybody.
            let found = crate::domain::auth::users::find_by_email(&state.db, query.actor.trim()).await?;
            filter.actor_id = Some(found.map(|u| u.id).unwrap_or(-1));
        }
        audit::list(&state.db, &filter, PER_PAGE, view::page_offset(page, PER_PAGE)).await
    }
    .await;
    let (rows, total) = match loaded {
        Ok(v) => v,
        Err::<_, Error>(e) => return error_page_for(ctx, &e),
    };
    let base = serde_urlencoded::to_string([("action", query.action.as_str()), ("actor", query.actor.as_str())])
        .unwrap_or_default();
    let pager = Pager::new(ctx, &format!("/admin/audit?{base}"), page, PER_PAGE, total);
    let rows = rows.iter().map(|r| EntryRow::new(r, &state)).collect();
    render(ctx, StatusCode::OK, &AuditPage { ctx, query: &query, rows, pager, actions: ACTIONS })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_list_only_what_differs() {
        let before = json!({"enabled": true, "code": "A", "updated_at": "x"});
        let after = json!({"enabled": false, "code": "A", "updated_at": "y"});
        assert_eq!(changes(Some(&before), Some(&after)), vec!["enabled: true → false"]);
        let before = json!({"credit": {"enabled": false, "pid": "1"}, "markup": "1.00"});
        let after = json!({"credit": {"enabled": true, "pid": "1"}, "markup": "1.00"});
        assert_eq!(changes(Some(&before), Some(&after)), vec!["credit.enabled: false → true"]);
        let created = json!({"id": 1, "code": "SPRING", "max_uses": null, "created_at": "t"});
        assert_eq!(changes(None, Some(&created)), vec!["code: SPRING"]);
        assert_eq!(changes(None, None), Vec::<String>::new());
        let long = json!({"body": "x".repeat(200)});
        assert!(changes(None, Some(&long))[0].ends_with('…'));
        let wide = json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7});
        assert_eq!(changes(None, Some(&wide)), vec!["a: 1", "b: 2", "c: 3", "d: 4", "+3 …"]);
    }
}
