//! Display helpers shared by the page handlers: dates in the business zone, exact
//! money (the API's figures, never rounded), and the row shapes templates iterate over.

use crate::domain::auth::api_keys::ApiKey;
use crate::foundation::clock::{from_micros, BusinessCalendar};
use crate::foundation::money::Money;

/// An instant (storage micros) as `YYYY-MM-DD HH:MM` in the business zone.
pub fn time(calendar: &BusinessCalendar, micros: i64) -> String {
    // `format` gives RFC 3339 in the business zone; the page shows its date and minutes.
    let text = calendar.format(from_micros(micros));
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(hm)) => format!("{date} {hm}"),
        _ => text,
    }
}

/// An optional instant, or a dash.
pub fn time_or_dash(calendar: &BusinessCalendar, micros: Option<i64>) -> String {
    micros.map(|m| time(calendar, m)).unwrap_or_else(|| "—".into())
}

/// Money exactly as the API writes it: at least two decimals, more when they carry
/// value (`30.00`, `0.004025`, `-0.002075`). Pages never round an amount, so a page
/// and the JSON API always agree to the micro-dollar.
pub fn money(micros: i64) -> String {
    Money::from_micros(micros).to_string()
}

/// Money with all six decimals (`0.004025`, `0.010000`): per-request costs, so a
/// column of small amounts lines up and a sub-cent cost never reads as `0.00`.
pub fn money_6dp(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let unit = crate::foundation::money::MICROS_PER_UNIT.unsigned_abs();
    format!("{sign}{}.{:06}", abs / unit, abs % unit)
}

/// One row of the key list.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub active: bool,
    pub spent: String,
    pub limit: Option<String>,
    pub last_used: String,
    pub created: String,
}

impl KeyRow {
    pub fn new(key: &ApiKey, calendar: &BusinessCalendar) -> Self {
        KeyRow {
            id: key.id,
            name: key.name.clone(),
            prefix: key.prefix.clone(),
            active: key.status == "active",
            spent: money(key.spent),
            limit: key.spend_limit.map(money),
            last_used: time_or_dash(calendar, key.last_used_at),
            created: time(calendar, key.created_at),
        }
    }
}

/// Previous/next links and a "1–25 of 80" summary for a paginated list.
#[derive(Debug, Clone)]
pub struct Pager {
    pub summary: String,
    pub prev: Option<String>,
    pub next: Option<String>,
}

impl Pager {
    /// `base` is the list URL with its filters (ending in `?…`); `page` counts from 1.
    pub fn new(ctx: &super::Ctx, base: &str, page: i64, per_page: i64, total: i64) -> Self {
        let first = if total == 0 { 0 } else { page_offset(page, per_page).saturating_add(1) };
        let last = page.saturating_mul(per_page).min(total);
        let joiner = if base.ends_with('?') { "" } else { "&" };
        let link = |p: i64| format!("{base}{joiner}page={p}");
        if total == 0 {
            return Pager { summary: String::new(), prev: None, next: None };
        }
        Pager {
            summary: ctx
                .t("pager.summary")
                .replace("{first}", &first.to_string())
                .replace("{last}", &last.to_string())
                .replace("{total}", &total.to_string()),
            prev: (page > 1).then(|| link(page - 1)),
            next: (page.saturating_mul(per_page) < total).then(|| link(page.saturating_add(1))),
        }
    }
}

/// The highest page number a list page serves: far past any real list, and low enough
/// that `page * per_page` can never overflow (a hostile `?page=` once panicked here).
pub const MAX_PAGE: i64 = 1_000_000;

/// The page a `?page=` asks for, clamped to `1..=MAX_PAGE` (absent = 1).
pub fn page_number(raw: Option<i64>) -> i64 {
    raw.unwrap_or(1).clamp(1, MAX_PAGE)
}

/// The row offset of `page` (counted from 1); saturates instead of overflowing.
pub fn page_offset(page: i64, per_page: i64) -> i64 {
    page.max(1).saturating_sub(1).saturating_mul(per_page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_show_in_the_business_zone_and_money_exactly() {
        let calendar = BusinessCalendar::from_name("Asia/Shanghai").unwrap();
        let micros = crate::foundation::clock::to_micros("2026-01-15T16:30:00Z".parse().unwrap());
        assert_eq!(time(&calendar, micros), "2026-01-16 00:30");
        assert_eq!(money(1_234_567), "1.234567");
        assert_eq!(money(4_025), "0.004025");
        assert_eq!(money(-2_075), "-0.002075", "a debt keeps its sign");
        assert_eq!(money(30_000_000), "30.00");
        assert_eq!(money(0), "0.00");
        assert_eq!(money_6dp(4_025), "0.004025");
        assert_eq!(money_6dp(10_000), "0.010000");
        assert_eq!(money_6dp(-1_500_000), "-1.500000");
        assert_eq!(money_6dp(i64::MIN), "-9223372036854.775808");
        assert_eq!(time_or_dash(&calendar, None), "—");
    }

    #[test]
    fn hostile_page_numbers_are_clamped_and_never_overflow() {
        assert_eq!(page_number(None), 1);
        assert_eq!(page_number(Some(-5)), 1);
        assert_eq!(page_number(Some(i64::MIN)), 1);
        assert_eq!(page_number(Some(i64::MAX)), MAX_PAGE);
        assert_eq!(page_number(Some(3)), 3);
        assert_eq!(page_offset(1, 50), 0);
        assert_eq!(page_offset(3, 50), 100);
        assert_eq!(page_offset(i64::MAX, i64::MAX), i64::MAX, "saturates");
        assert_eq!(page_offset(i64::MIN, 50), 0);
        let ctx = super::super::Ctx::bare(super::super::i18n::Lang::En);
        let pager = Pager::new(&ctx, "/orders?", i64::MAX, 50, 10);
        assert!(pager.next.is_none() && pager.prev.is_some());
    }
}
