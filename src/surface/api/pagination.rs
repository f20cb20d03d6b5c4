//! `?page=1&per_page=50` on every list route, answered as `{items, page, per_page, total}`.

use serde::{Deserialize, Serialize};

/// Largest page a client may ask for.
pub const MAX_PER_PAGE: i64 = 200;

/// Page request; both fields optional.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    pub page: i64,
    pub per_page: i64,
}

impl Default for PageQuery {
    fn default() -> Self {
        PageQuery { page: 1, per_page: 50 }
    }
}

impl PageQuery {
    /// From optional query fields (flattening into a filter struct does not work with
    /// query strings, so list routes take `page`/`per_page` as their own fields).
    pub fn new(page: Option<i64>, per_page: Option<i64>) -> Self {
        let default = PageQuery::default();
        PageQuery { page: page.unwrap_or(default.page), per_page: per_page.unwrap_or(default.per_page) }
    }

    pub fn limit(&self) -> i64 {
        self.per_page.clamp(1, MAX_PER_PAGE)
    }

    pub fn offset(&self) -> i64 {
        (self.page.max(1) - 1).saturating_mul(self.limit())
    }

    /// Wraps one page of results.
    pub fn wrap<T: Serialize>(&self, items: Vec<T>, total: i64) -> Paginated<T> {
        Paginated { items, page: self.page.max(1), per_page: self.limit(), total }
    }
}

/// A page of results.
#[derive(Debug, Serialize)]
pub struct Paginated<T: Serialize> {
    pub items: Vec<T>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_clamped() {
        let q = PageQuery { page: 0, per_page: 10_000 };
        assert_eq!(q.limit(), MAX_PER_PAGE);
        assert_eq!(q.offset(), 0);
        let q = PageQuery { page: 3, per_page: 20 };
        assert_eq!(q.offset(), 40);
    }
}
