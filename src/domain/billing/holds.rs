//! How much to hold for a request: what the model's requests really produce, not a
//! fixed worst case. The seed held 4,096 output tokens (about 0.04 USD on gpt-5) when
//! a request named no `max_output_tokens`, about ten times a typical request, so a user
//! with a few cents left was refused while money was left.
//!
//! The hold is the 95th percentile of the output tokens of the model's last
//! [`SAMPLES`] settled requests (kept in memory, warmed from `usage_logs` at start and
//! updated by every settlement of this instance), never below the model's floor
//! (a setting) and otherwise never above the request's own `max_output_tokens` (the
//! floor wins: see [`output_tokens`]). Until a model
//! has [`MIN_SAMPLES`] requests the configured default (`hold_output_tokens`) applies.
//!
//! The price: a request may cost more than its hold. What a user can owe is then
//! bounded by Σ(cost − hold) over their requests running at once (see
//! [`super::rules::decide`]), which the per-user concurrency cap keeps a figure.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::foundation::db::Db;
use crate::foundation::error::Result;

/// Settled requests remembered per model.
pub const SAMPLES: usize = 512;

/// Requests of a model needed before its hold is learned rather than the default.
pub const MIN_SAMPLES: usize = 32;

/// The percentile of the output tokens that is held.
pub const PERCENTILE: usize = 95;

/// What decides a request's output-token hold besides what was learned.
#[derive(Debug, Clone, Copy)]
pub struct HoldRule {
    /// `hold_output_tokens`: used until the model has enough samples.
    pub default_tokens: i64,
    /// The model's floor (`hold_floor_tokens`, or its per-model override).
    pub floor: i64,
    /// The request's own `max_output_tokens`, if it named one.
    pub max_output_tokens: Option<i64>,
}

/// The output tokens to hold: the learned percentile (or the default), lowered to the
/// request's `max_output_tokens` if it names fewer, but never below the model's floor
/// (never less than one). The floor wins over the client's figure on purpose: the
/// client chooses `max_output_tokens`, and an upstream that produces more than it asked
/// for (or counts reasoning apart) would otherwise leave cost − hold unbounded by
/// anything the operator sets; with the floor it is at most output − floor per request.
pub fn output_tokens(rule: HoldRule, learned: Option<i64>) -> i64 {
    let tokens = learned.unwrap_or(rule.default_tokens);
    match rule.max_output_tokens {
        Some(max) => tokens.min(max),
        None => tokens,
    }
    .max(rule.floor)
    .max(1)
}

/// The model's floor: its own entry in the per-model settings, else the general one.
pub fn floor_for(model: &str, general: i64, by_model: &[crate::domain::settings::ModelFloor]) -> i64 {
    by_model.iter().find(|f| f.model == model).map_or(general, |f| f.output_tokens).max(0)
}

/// The `percent`-th percentile of `values` (nearest rank), `None` when empty.
pub fn percentile(values: &[i64], percent: usize) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (percent.min(100) * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The recent output tokens of each model on this instance.
#[derive(Clone, Default)]
pub struct HoldSizes(Arc<Mutex<HashMap<String, VecDeque<i64>>>>);

impl HoldSizes {
    /// Records a settled request's output tokens.
    pub fn observe(&self, model: &str, output_tokens: i64) {
        let Ok(mut map) = self.0.lock() else { return };
        let samples = map.entry(model.to_string()).or_default();
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(output_tokens.max(0));
    }

    /// The learned hold of a model: the percentile of its recent output tokens, once
    /// it has [`MIN_SAMPLES`] of them.
    pub fn learned(&self, model: &str) -> Option<i64> {
        let map = self.0.lock().ok()?;
        let samples = map.get(model).filter(|s| s.len() >= MIN_SAMPLES)?;
        let values: Vec<i64> = samples.iter().copied().collect();
        percentile(&values, PERCENTILE)
    }

    /// Reads the latest measured requests of every model from `usage_logs` (answered,
    /// not estimated), so a restarted instance does not fall back to the default.
    pub async fn warm(&self, db: &Db) -> Result<usize> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT model, output_tokens FROM usage_logs WHERE status_code = 200 AND estimated = 0 \
             ORDER BY id DESC LIMIT 20000",
        )
        .fetch_all(db.pool())
        .await?;
        let count = rows.len();
        for (model, tokens) in rows.into_iter().rev() {
            self.observe(&model, tokens);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_is_the_nearest_rank() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 95), Some(95));
        assert_eq!(percentile(&values, 100), Some(100));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[], 95), None);
        assert_eq!(percentile(&[5, 1, 3], 50), Some(3));
    }

    #[test]
    fn the_hold_is_learned_floored_and_bounded_by_the_request() {
        let rule = HoldRule { default_tokens: 4096, floor: 256, max_output_tokens: None };
        assert_eq!(output_tokens(rule, None), 4096, "not learned yet: the default");
        assert_eq!(output_tokens(rule, Some(400)), 400);
        assert_eq!(output_tokens(rule, Some(40)), 256, "never below the floor");
        assert_eq!(output_tokens(rule, Some(9000)), 9000, "long answers are held in full");
        let bounded = HoldRule { max_output_tokens: Some(300), ..rule };
        assert_eq!(output_tokens(bounded, Some(400)), 300, "never above max_output_tokens");
        assert_eq!(output_tokens(bounded, None), 300);
        let tiny = HoldRule { max_output_tokens: Some(16), ..rule };
        assert_eq!(output_tokens(tiny, Some(400)), 256, "a tiny max_output_tokens stops at the floor");
        let unfloored = HoldRule { floor: 0, max_output_tokens: Some(0), ..rule };
        assert_eq!(output_tokens(unfloored, None), 1);
        let floors = [crate::domain::settings::ModelFloor { model: "gpt-5".into(), output_tokens: 1024 }];
        assert_eq!(floor_for("gpt-5", 256, &floors), 1024);
        assert_eq!(floor_for("o3", 256, &floors), 256);
    }

    #[test]
    fn sizes_learn_after_enough_samples_and_forget_the_oldest() {
        let sizes = HoldSizes::default();
        for _ in 0..MIN_SAMPLES - 1 {
            sizes.observe("gpt-5", 300);
        }
        assert_eq!(sizes.learned("gpt-5"), None);
        sizes.observe("gpt-5", 300);
        assert_eq!(sizes.learned("gpt-5"), Some(300));
        for _ in 0..SAMPLES {
            sizes.observe("gpt-5", 50);
        }
        assert_eq!(sizes.learned("gpt-5"), Some(50), "only the last {SAMPLES} count");
        assert_eq!(sizes.learned("o3"), None);
    }
}
