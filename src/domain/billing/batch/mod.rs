//! One billing batch: many admissions and settlements in one transaction.
//!
//! The transaction locks every user of the batch (ascending id, so two instances'
//! batches can never deadlock), reads what the rules need with one statement per kind
//! of fact ([`facts`]), applies the jobs in arrival order to an in-memory copy of those
//! facts ([`plan`]) — so the second request of a user sees the first one's hold or
//! charge exactly as if they had run one after another — and writes the result with a
//! handful of multi-row statements ([`write`]). The semantics are those of running
//! each job alone in its own transaction; only the number of round trips and commits
//! changes.

mod facts;
mod plan;
mod write;

use chrono::{DateTime, Utc};

use super::{AdmissionRequest, Hold, Policy, Settlement, UsageRecord};
use crate::domain::auth::api_keys::KeyRefusal;
use crate::foundation::clock::BusinessCalendar;
use crate::foundation::db::{Backend, Db};
use crate::foundation::error::{Error, Result};
use facts::Facts;
use plan::Plan;

/// Work for the billing writer.
pub enum Job {
    /// `forced`: the request is already on its way upstream (admitted on this instance's
    /// headroom hint), so a hold is written even when the rules would refuse it, and the
    /// refusal is reported on the hold instead.
    Admit {
        request: AdmissionRequest,
        now: DateTime<Utc>,
        policy: Policy,
        forced: bool,
    },
    Settle {
        hold: Hold,
        record: Box<UsageRecord>,
        now: DateTime<Utc>,
    },
    /// Settles a request whose forced admission was not committed yet when it finished:
    /// when that admission is in the same batch, the two are netted in memory (no hold
    /// row is written, the charge is applied directly); otherwise nothing happens and
    /// the outcome is [`Outcome::NotNetted`] (the caller settles against the committed
    /// hold instead). Most short requests finish before their admission's batch is
    /// formed, so this saves a hold insert, a hold delete and one batch per request.
    SettleAdmitted {
        user_id: i64,
        record: Box<UsageRecord>,
        now: DateTime<Utc>,
    },
}

/// What a job came to, in the same order as the jobs.
pub enum Outcome {
    Admit(Result<std::result::Result<Hold, KeyRefusal>>),
    Settle(Result<Settlement>),
    /// A [`Job::SettleAdmitted`] whose admission was not in its batch: nothing written.
    NotNetted,
}

impl Job {
    /// The outcome of a job whose transaction failed.
    pub fn failed(&self, error: Error) -> Outcome {
        match self {
            Job::Admit { .. } => Outcome::Admit(Err(error)),
            Job::Settle { .. } | Job::SettleAdmitted { .. } => Outcome::Settle(Err(error)),
        }
    }

    /// True when a caller waits for this job before answering its client: the writer
    /// commits at once instead of lingering to gather a bigger batch.
    pub fn urgent(&self) -> bool {
        matches!(self, Job::Admit { forced: false, .. })
    }

    /// The user the job bills.
    pub(in crate::domain::billing) fn user_id(&self) -> i64 {
        match self {
            Job::Admit { request, .. } => request.user_id,
            Job::Settle { hold, .. } => hold.user_id,
            Job::SettleAdmitted { user_id, .. } => *user_id,
        }
    }

    /// The request id a forced admission of the batch can be netted by.
    fn nettable_admission(&self) -> Option<&str> {
        match self {
            Job::Admit { request, forced: true, .. } => request.request_id.as_deref(),
            _ => None,
        }
    }
}

/// Which jobs the database must see: a [`Job::SettleAdmitted`] with no forced admission
/// of its request earlier in the batch is answered [`Outcome::NotNetted`] without it.
fn needs_database(jobs: &[Job]) -> Vec<bool> {
    let mut admitted = std::collections::HashSet::new();
    jobs.iter()
        .map(|job| match job {
            Job::SettleAdmitted { record, .. } => admitted.contains(record.request_id.as_str()),
            other => {
                if let Some(id) = other.nettable_admission() {
                    admitted.insert(id);
                }
                true
            }
        })
        .collect()
}

/// Runs `jobs` in one transaction; an `Err` means nothing was written. `elsewhere`:
/// per user, the holds this instance has admitted (or is admitting) outside `jobs` and
/// not yet written — an admission that waits counts them as held, so that together
/// with them it never exceeds what the user can pay.
pub async fn run(
    db: &Db,
    calendar: &BusinessCalendar,
    jobs: &[Job],
    elsewhere: &std::collections::HashMap<i64, crate::foundation::money::Money>,
) -> Result<Vec<Outcome>> {
    if !needs_database(jobs).contains(&true) {
        return Ok(jobs.iter().map(|_| Outcome::NotNetted).collect());
    }
    let mut tx = db.begin().await?;
    let backend = db.backend();
    let facts = Facts::read(tx.conn(), backend, calendar, jobs).await?;
    let mut plan = Plan::new(facts, *calendar);
    plan.elsewhere.clone_from(elsewhere);
    let mut outcomes: Vec<Outcome> = jobs.iter().map(|job| plan.apply(job)).collect();
    let hold_ids = plan.write(tx.conn(), backend).await?;
    tx.commit().await?;
    for outcome in &mut outcomes {
        if let Outcome::Admit(Ok(Ok(hold))) = outcome {
            hold.id = hold_ids.get(&hold.request_id).copied().unwrap_or_default();
        }
    }
    Ok(outcomes)
}

/// `$first, $first+1, ...` for `n` parameters. On SQLite the same statement uses
/// anonymous `?` parameters: SQLite looks each named parameter up by a linear scan,
/// which made binding a multi-row insert quadratic (7% of the CPU in a profile).
fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    match backend {
        Backend::Sqlite => vec!["?"; n].join(", "),
        Backend::Postgres => (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", "),
    }
}

/// `($1, ..., $width), ($width+1, ...)` for `count` rows.
fn rows(backend: Backend, count: usize, width: usize) -> String {
    (0..count).map(|row| format!("({})", placeholders(backend, row * width + 1, width))).collect::<Vec<_>>().join(", ")
}

fn bind_all<'q, O, T>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    values: &'q [T],
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>
where
    &'q T: sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
    T: 'q,
{
    for value in values {
        query = query.bind(value);
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::foundation::money::Money;

    #[test]
    fn a_settlement_by_request_id_needs_the_database_only_after_its_admission() {
        let now = chrono::Utc::now();
        let admit = |id: &str, forced: bool| Job::Admit {
            request: AdmissionRequest { request_id: Some(id.into()), user_id: 1, api_key_id: 1, hold: Money::ZERO },
            now,
            policy: Policy::default(),
            forced,
        };
        let settle = |id: &str| Job::SettleAdmitted {
            user_id: 1,
            record: Box::new(UsageRecord { request_id: id.into(), ..UsageRecord::default() }),
            now,
        };
        let jobs = [settle("a"), admit("a", true), settle("a"), admit("b", false), settle("b"), settle("c")];
        assert_eq!(needs_database(&jobs), [false, true, true, true, false, false]);
        assert_eq!(needs_database(&[settle("x")]), [false]);
    }

    #[test]
    fn placeholders_number_rows_consecutively() {
        assert_eq!(placeholders(Backend::Postgres, 3, 2), "$3, $4");
        assert_eq!(rows(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(rows(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
