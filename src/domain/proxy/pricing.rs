//! Model prices and the cost formula.
//!
//! Prices are USD per 1M tokens, stored as [`Money`] micro-USD per 1M tokens. A
//! request's cost is computed once, in integer arithmetic, and rounded once:
//!
//! ```text
//! cost_micros = ceil((uncached_input × input + cached × cached_input + output × output_price)
//!                    × markup_micros / (1_000_000 tokens × 1_000_000 markup scale))
//! ```
//!
//! i.e. rounded UP to the micro-dollar, so a request is never billed less than it
//! cost. Cached tokens are billed at the cached price only (`uncached_input = input −
//! cached`); reasoning tokens are already part of the output tokens and are not
//! counted again. `cache_write` is stored for providers that report cache writes;
//! the OpenAI APIs do not, so it takes no part in the formula.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::foundation::clock::to_micros;
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// One priced model (a row of `model_prices`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelPrice {
    pub model: String,
    /// USD per 1M uncached input tokens.
    pub input: Money,
    pub cached_input: Money,
    pub output: Money,
    pub cache_write: Option<Money>,
    pub enabled: bool,
}

/// Token counts of one request as the upstream reported them (or as estimated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub input: i64,
    pub cached: i64,
    /// All output tokens, reasoning ones included.
    pub output: i64,
    pub reasoning: i64,
}

const TOKENS_PER_PRICE_UNIT: i128 = 1_000_000;
const MARKUP_SCALE: i128 = 1_000_000;

/// The charge for `usage` at `price` with the global `markup` (1.00 = list price),
/// rounded up to the micro-dollar once at the end.
pub fn cost(price: &ModelPrice, usage: &Usage, markup: Money) -> Money {
    let input = i128::from(usage.input.max(0));
    let cached = i128::from(usage.cached.max(0)).min(input);
    let output = i128::from(usage.output.max(0));
    let list = (input - cached) * i128::from(price.input.micros().max(0))
        + cached * i128::from(price.cached_input.micros().max(0))
        + output * i128::from(price.output.micros().max(0));
    let numerator = list * i128::from(markup.micros().max(0));
    let denominator = TOKENS_PER_PRICE_UNIT * MARKUP_SCALE;
    let micros = (numerator + denominator - 1) / denominator;
    Money::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// List prices (USD per 1M tokens) of the Codex / GPT-5 family as published by OpenAI
/// in November 2025, seeded so a new install can serve at once. Admins edit them via
/// `/api/admin/prices`; they are only inserted when the table is empty.
pub const DEFAULT_PRICES: &[(&str, &str, &str, &str)] = &[
    ("gpt-5", "1.25", "0.125", "10.00"),
    ("gpt-5-codex", "1.25", "0.125", "10.00"),
    ("gpt-5-mini", "0.25", "0.025", "2.00"),
    ("gpt-5-nano", "0.05", "0.005", "0.40"),
    ("gpt-5.1", "1.25", "0.125", "10.00"),
    ("gpt-5.1-codex", "1.25", "0.125", "10.00"),
    ("gpt-5.1-codex-mini", "0.25", "0.025", "2.00"),
    ("gpt-4.1", "2.00", "0.50", "8.00"),
    ("gpt-4.1-mini", "0.40", "0.10", "1.60"),
    ("gpt-4o", "2.50", "1.25", "10.00"),
    ("gpt-4o-mini", "0.15", "0.075", "0.60"),
    ("o4-mini", "1.10", "0.275", "4.40"),
];

/// Inserts [`DEFAULT_PRICES`] when no model is priced yet (first start).
pub async fn seed_defaults(db: &Db, now: DateTime<Utc>) -> Result<usize> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM model_prices").fetch_one(db.pool()).await?;
    if count > 0 {
        return Ok(0);
    }
    let mut inserted = 0;
    for (model, input, cached, output) in DEFAULT_PRICES {
        let parse = |text: &str| Money::parse(text).map_err(|e| Error::internal(e.to_string()));
        let price = ModelPrice {
            model: (*model).to_string(),
            input: parse(input)?,
            cached_input: parse(cached)?,
            output: parse(output)?,
            cache_write: None,
            enabled: true,
        };
        let r = sqlx::query(
            "INSERT INTO model_prices (model, input, cached_input, output, cache_write, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, 1, $5, $5) ON CONFLICT (model) DO NOTHING",
        )
        .bind(&price.model)
        .bind(price.input.micros())
        .bind(price.cached_input.micros())
        .bind(price.output.micros())
        .bind(to_micros(now))
        .execute(db.pool())
        .await?;
        inserted += r.rows_affected() as usize;
    }
    Ok(inserted)
}

type PriceRow = (String, i64, i64, i64, Option<i64>, i64);

fn from_row((model, input, cached_input, output, cache_write, enabled): PriceRow) -> ModelPrice {
    ModelPrice {
        model,
        input: Money::from_micros(input),
        cached_input: Money::from_micros(cached_input),
        output: Money::from_micros(output),
        cache_write: cache_write.map(Money::from_micros),
        enabled: enabled != 0,
    }
}

/// Flags are 0/1 integers: the Any driver cannot decode SQLite's BOOLEAN.
const PRICE_COLUMNS: &str = "model, input, cached_input, output, cache_write, enabled";

/// Every price, by model name.
pub async fn list(db: &Db) -> Result<Vec<ModelPrice>> {
    let rows: Vec<PriceRow> = sqlx::query_as(&format!("SELECT {PRICE_COLUMNS} FROM model_prices ORDER BY model"))
        .fetch_all(db.pool())
        .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

pub async fn find(db: &Db, model: &str) -> Result<Option<ModelPrice>> {
    let row: Option<PriceRow> = sqlx::query_as(&format!("SELECT {PRICE_COLUMNS} FROM model_prices WHERE model = $1"))
        .bind(model)
        .fetch_optional(db.pool())
        .await?;
    Ok(row.map(from_row))
}

/// Checks a price before it is stored (model names are what clients send): the first problem.
pub fn validate(price: &ModelPrice) -> Result<()> {
    problems(price).into_iter().next().map_or(Ok(()), Err)
}

/// Every rule a price breaks, one error per field, so a form can show them all at once.
pub fn problems(price: &ModelPrice) -> Vec<Error> {
    let mut found = Vec::new();
    let model = price.model.trim();
    if model.is_empty() || model.len() > 128 || model.contains(char::is_whitespace) {
        found.push(Error::validation("model", "must be 1 to 128 characters without spaces"));
    }
    for (field, value) in [("input", price.input), ("cached_input", price.cached_input), ("output", price.output)] {
        if value.is_negative() {
            found.push(Error::validation(field, "must not be negative"));
        }
    }
    if price.cache_write.is_some_and(Money::is_negative) {
        found.push(Error::validation("cache_write", "must not be negative"));
    }
    found
}

/// Creates a price (409 when the model is already priced).
pub async fn create(db: &Db, price: &ModelPrice, now: DateTime<Utc>) -> Result<()> {
    validate(price)?;
    let result = sqlx::query(
        "INSERT INTO model_prices (model, input, cached_input, output, cache_write, enabled, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(price.model.trim())
    .bind(price.input.micros())
    .bind(price.cached_input.micros())
    .bind(price.output.micros())
    .bind(price.cache_write.map(Money::micros))
    .bind(i64::from(price.enabled))
    .bind(to_micros(now))
    .execute(db.pool())
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if crate::foundation::db::is_unique_violation(&e) => {
            Err(Error::conflict("price_exists", format!("model {} already has a price", price.model.trim())))
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces a model's price (404 when it has none).
pub async fn update(db: &Db, price: &ModelPrice, now: DateTime<Utc>) -> Result<()> {
    validate(price)?;
    let result = sqlx::query(
        "UPDATE model_prices SET input = $1, cached_input = $2, output = $3, cache_write = $4, enabled = $5, \
           updated_at = $6 WHERE model = $7",
    )
    .bind(price.input.micros())
    .bind(price.cached_input.micros())
    .bind(price.output.micros())
    .bind(price.cache_write.map(Money::micros))
    .bind(i64::from(price.enabled))
    .bind(to_micros(now))
    .bind(&price.model)
    .execute(db.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(Error::NotFound("price"));
    }
    Ok(())
}

/// Removes a price: the model is refused from then on.
pub async fn delete(db: &Db, model: &str) -> Result<()> {
    let result = sqlx::query("DELETE FROM model_prices WHERE model = $1").bind(model).execute(db.pool()).await?;
    if result.rows_affected() == 0 {
        return Err(Error::NotFound("price"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: &str, cached: &str, output: &str) -> ModelPrice {
        ModelPrice {
            model: "m".into(),
            input: Money::parse(input).unwrap(),
            cached_input: Money::parse(cached).unwrap(),
            output: Money::parse(output).unwrap(),
            cache_write: None,
            enabled: true,
        }
    }

    #[test]
    fn cost_bills_cached_tokens_once_at_the_cached_price() {
        // gpt-5: 1000 input of which 200 cached, 300 output (100 of them reasoning).
        // 800×1.25 + 200×0.125 + 300×10 = 1000 + 25 + 3000 = 4025 USD per 1M → 0.004025.
        let usage = Usage { input: 1000, cached: 200, output: 300, reasoning: 100 };
        assert_eq!(cost(&price("1.25", "0.125", "10"), &usage, Money::units(1)).micros(), 4_025);
    }

    #[test]
    fn markup_multiplies_before_the_single_rounding() {
        let usage = Usage { input: 1000, cached: 200, output: 300, reasoning: 0 };
        // 4025 × 1.5 = 6037.5 → rounded up once to 6038.
        assert_eq!(cost(&price("1.25", "0.125", "10"), &usage, Money::parse("1.5").unwrap()).micros(), 6_038);
    }

    #[test]
    fn a_fraction_of_a_micro_dollar_rounds_up() {
        // 1 token at 0.05 USD per 1M = 0.00000005 USD → 1 micro-dollar.
        let one = Usage { input: 1, ..Usage::default() };
        assert_eq!(cost(&price("0.05", "0", "0"), &one, Money::units(1)).micros(), 1);
        // 20 tokens at 0.05 = exactly 1 micro-dollar: no extra rounding.
        let twenty = Usage { input: 20, ..Usage::default() };
        assert_eq!(cost(&price("0.05", "0", "0"), &twenty, Money::units(1)).micros(), 1);
        let twenty_one = Usage { input: 21, ..Usage::default() };
        assert_eq!(cost(&price("0.05", "0", "0"), &twenty_one, Money::units(1)).micros(), 2);
        assert_eq!(cost(&price("1", "1", "1"), &Usage::default(), Money::units(1)), Money::ZERO);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let usage = Usage { input: i64::MAX / 2, cached: 0, output: 1_000_000_000, reasoning: 0 };
        let c = cost(&price("1000", "1000", "1000"), &usage, Money::units(10));
        assert!(c.is_positive());
        // 1M output tokens at 10 USD per 1M with markup 1 = exactly 10 USD.
        let m = Usage { output: 1_000_000, ..Usage::default() };
        assert_eq!(cost(&price("0", "0", "10"), &m, Money::units(1)), Money::units(10));
    }

    #[test]
    fn cached_beyond_input_is_clamped_and_prices_are_validated() {
        let usage = Usage { input: 10, cached: 50, output: 0, reasoning: 0 };
        // Only 10 cached tokens can exist: 10 × 1 USD per 1M = 10 micro-dollars.
        assert_eq!(cost(&price("100", "1", "0"), &usage, Money::units(1)).micros(), 10);
        assert!(validate(&price("-1", "0", "0")).is_err());
        assert!(validate(&ModelPrice { model: "has space".into(), ..price("1", "1", "1") }).is_err());
        assert!(validate(&price("1", "0.1", "2")).is_ok());
    }
}
