//! Replaying the crash journal at start: every request a dead instance forwarded and
//! never settled is charged now, through the ordinary settlement (idempotent by request
//! id, so a request whose charge did reach the database is not charged again).
//!
//! What a replayed request is charged: its measured usage record when the proxy got
//! that far, else the documented estimate (input = request bytes / 4, output = the text
//! bytes last recorded as streamed / 4, rounded up) at the price and markup in force
//! when it was forwarded, marked `estimated`. It belongs to the day and the package in
//! force at its admission; its hold, if the admission had been written, is released by
//! the same settlement. A request the journal saw `admitting` and never `forwarded`
//! reached no upstream: its hold, if its admission committed before the process died,
//! is released uncharged (no usage row).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::journal::{take_orphans, Forwarded, Unsettled};
use super::metering::estimate_tokens;
use super::pricing::{self, ModelPrice, Usage};
use crate::domain::billing::rules::Preference;
use crate::domain::billing::{self, writer::BillingWriter, Hold, UsageRecord};
use crate::foundation::clock::{from_micros, BusinessCalendar};
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// What a replay did, for the start-up log and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Dead instances' journal segments read (and removed once settled).
    pub segments: usize,
    /// Requests found without a settlement record.
    pub unsettled: usize,
    /// Of those, charged now (the rest had reached the database already).
    pub charged: usize,
    /// Of the charged, on the estimate (no usage record had been measured).
    pub estimated: usize,
    /// The total charged now.
    pub amount: Money,
    /// Holds of requests admitted and never forwarded, released uncharged.
    pub released: usize,
}

/// What the replay needs: the database, the billing writer, the calendar, "now", and
/// the admin's default billing preference (a replayed request of a user who chose none
/// is split as it would have been at admission).
pub struct Recovery<'a> {
    pub db: &'a Db,
    pub writer: &'a BillingWriter,
    pub calendar: &'a BusinessCalendar,
    pub now: DateTime<Utc>,
    pub default_preference: Preference,
}

impl Recovery<'_> {
    /// Settles the unsettled requests of every dead instance's segment under `dir`. A
    /// segment is removed only when all of its requests settled; otherwise it stays for
    /// the next start and the error is returned.
    pub async fn replay(&self, dir: &Path) -> Result<RecoveryReport> {
        let orphans = take_orphans(dir).map_err(|e| Error::internal(format!("cannot read the journal: {e}")))?;
        self.settle_orphans(orphans).await
    }

    /// [`Recovery::replay`] from a running instance (the hold expiry job): a neighbour
    /// sharing the data directory that died and never came back is charged from what it
    /// journalled, instead of its holds being released uncharged after 6 h.
    pub async fn replay_while_running(&self, dir: &Path) -> Result<RecoveryReport> {
        let orphans = crate::domain::proxy::journal::take_orphans_while_running(dir)
            .map_err(|e| Error::internal(format!("cannot read the journal: {e}")))?;
        self.settle_orphans(orphans).await
    }

    async fn settle_orphans(&self, orphans: Vec<crate::domain::proxy::journal::Orphan>) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        // Open holds by request id (the table holds only in-flight requests: small).
        let mut written: std::collections::HashMap<String, (i64, i64)> = std::collections::HashMap::new();
        if orphans.iter().any(|o| !o.never_forwarded.is_empty()) {
            let rows: Vec<(i64, i64, String)> =
                sqlx::query_as("SELECT id, user_id, request_id FROM holds WHERE request_id IS NOT NULL")
                    .fetch_all(self.db.pool())
                    .await?;
            written = rows.into_iter().map(|(id, user_id, request_id)| (request_id, (id, user_id))).collect();
        }
        for orphan in orphans {
            report.segments += 1;
            for never in &orphan.never_forwarded {
                let Some(&(hold_id, user_id)) = written.get(&never.request_id) else { continue };
                if user_id == never.user_id && billing::release_hold(self.db, hold_id, user_id).await? {
                    report.released += 1;
                    tracing::warn!(user_id, request_id = %never.request_id,
                        "released the hold of a request a dead instance admitted and never forwarded");
                }
            }
            for unsettled in &orphan.unsettled {
                report.unsettled += 1;
                let (record, estimated) = charge_of(unsettled);
                let hold = self.hold_of(&unsettled.forwarded).await?;
                let settlement = billing::settle_with(self.writer, &hold, &record, self.now).await?;
                if settlement.applied {
                    report.charged += 1;
                    report.estimated += usize::from(estimated);
                    report.amount = report.amount.saturating_add(record.cost);
                }
            }
            let path = orphan.path().to_path_buf();
            if let Err(e) = orphan.finish() {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a replayed journal segment");
            }
        }
        Ok(report)
    }

    /// The request's hold as the billing engine would have known it: the written hold
    /// (found by request id) if the admission had committed, else none; the day and
    /// package in force at admission either way.
    async fn hold_of(&self, forwarded: &Forwarded) -> Result<Hold> {
        let written: Option<(i64, i64, i64)> =
            sqlx::query_as("SELECT id, amount, created_at FROM holds WHERE request_id = $1 AND user_id = $2")
                .bind(&forwarded.request_id)
                .bind(forwarded.user_id)
                .fetch_optional(self.db.pool())
                .await?;
        let (id, amount, admitted_at) = written.unwrap_or((0, 0, forwarded.admitted_at));
        let admitted_at = from_micros(admitted_at);
        let mut conn = self.db.pool().acquire().await?;
        let package = billing::applicable_package(&mut conn, forwarded.user_id, admitted_at).await?;
        let context = billing::admission_context(
            &mut conn,
            forwarded.user_id,
            forwarded.api_key_id,
            admitted_at,
            self.default_preference,
        )
        .await?;
        Ok(Hold {
            id,
            request_id: forwarded.request_id.clone(),
            user_id: forwarded.user_id,
            api_key_id: forwarded.api_key_id,
            amount: Money::from_micros(amount),
            admitted_at,
            business_date: self.calendar.business_date(admitted_at),
            user_package_id: package.map(|p| p.id).or(context.packages.first().copied()),
            packages: context.packages,
            blocks: context.blocks,
            preference: context.preference,
            key_capped: context.key_capped,
            headroom: Money::ZERO,
            refused: None,
        })
    }
}

/// The record to settle an unsettled request with, and whether it is an estimate.
fn charge_of(unsettled: &Unsettled) -> (UsageRecord, bool) {
    if let Some(record) = &unsettled.measured {
        return (record.clone(), false);
    }
    let f = &unsettled.forwarded;
    let usage = Usage {
        input: estimate_tokens(f.request_bytes),
        cached: 0,
        output: estimate_tokens(unsettled.text_bytes),
        reasoning: 0,
    };
    let price = ModelPrice {
        model: f.model.clone(),
        input: Money::from_micros(f.price_input),
        cached_input: Money::from_micros(f.price_cached),
        output: Money::from_micros(f.price_output),
        cache_write: None,
        enabled: true,
    };
    let record = UsageRecord {
        request_id: f.request_id.clone(),
        endpoint: f.endpoint.clone(),
        model: f.model.clone(),
        upstream_id: f.upstream_id,
        status_code: 502,
        streamed: f.streamed,
        input_tokens: usage.input,
        output_tokens: usage.output,
        cost: pricing::cost(&price, &usage, Money::from_micros(f.markup)),
        estimated: true,
        error: Some("the gateway stopped before the request ended; charged on the estimate".into()),
        ..UsageRecord::default()
    };
    (record, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsettled(measured: Option<UsageRecord>) -> Unsettled {
        Unsettled {
            forwarded: Forwarded {
                request_id: "req_x".into(),
                user_id: 1,
                api_key_id: 2,
                admitted_at: 0,
                endpoint: "/responses".into(),
                model: "gpt-5".into(),
                upstream_id: Some(4),
                streamed: true,
                request_bytes: 4_001,
                price_input: 1_250_000,
                price_cached: 125_000,
                price_output: 10_000_000,
                markup: 1_000_000,
            },
            text_bytes: 1_199,
            measured,
        }
    }

    #[test]
    fn an_unmeasured_request_is_charged_on_the_documented_estimate() {
        let (record, estimated) = charge_of(&unsettled(None));
        assert!(estimated && record.estimated);
        // ceil(4001 / 4) = 1001 input, ceil(1199 / 4) = 300 output:
        // 1001 × 1.25 + 300 × 10.00 = 4251.25 micro-USD per 1M → 0.004252 USD (rounded up).
        assert_eq!((record.input_tokens, record.output_tokens), (1_001, 300));
        assert_eq!(record.cost, Money::from_micros(4_252));
        assert_eq!(record.upstream_id, Some(4));
    }

    #[test]
    fn a_measured_request_is_charged_as_measured() {
        let measured = UsageRecord { request_id: "req_x".into(), cost: Money::from_micros(77), ..Default::default() };
        let (record, estimated) = charge_of(&unsettled(Some(measured.clone())));
        assert!(!estimated);
        assert_eq!(record, measured);
    }
}
