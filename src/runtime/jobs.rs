//! Background jobs: package expiry marking, payment reconciliation, hold release,
//! upstream health probes.
//!
//! Each job is a plain async function over [`AppState`] that tests call directly
//! ([`run_once`]). The scheduler runs each on its own interval, but only after taking
//! a lease row in `job_leases`, so with several instances on one PostgreSQL database a
//! job runs once cluster-wide per interval (on SQLite there is one instance anyway).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::foundation::clock::to_micros;
use crate::foundation::error::Result;
use crate::runtime::state::AppState;

/// A named periodic task.
pub struct Job {
    pub name: &'static str,
    pub every: Duration,
    pub run: fn(AppState) -> BoxFuture<'static, Result<String>>,
}

/// Every job the gateway runs, with its interval.
pub fn all_jobs() -> Vec<Job> {
    vec![
        Job {
            name: "release_expired_holds",
            every: Duration::from_secs(300),
            run: |state| {
                Box::pin(async move {
                    // A dead neighbour's journal first: what it measured is charged, so
                    // only holds no journal here knows of are left to release uncharged.
                    let replayed = replay_dead_journals(&state).await?;
                    let released = crate::domain::billing::release_expired_holds(state.env()).await?;
                    Ok(match replayed {
                        Some(r) if r.segments > 0 => format!(
                            "replayed {} dead journal segments ({} requests charged, {} on the estimate, {} USD; {} holds of requests never forwarded released); released {released} holds",
                            r.segments, r.charged, r.estimated, r.amount, r.released
                        ),
                        _ => format!("released {released} holds"),
                    })
                })
            },
        },
        Job {
            name: "mark_expired_packages",
            every: Duration::from_secs(3600),
            run: |state| {
                Box::pin(async move {
                    let changed = crate::domain::packages::held::mark_expired(&state.db, state.now()).await?;
                    Ok(format!("updated {changed} package rows"))
                })
            },
        },
        Job {
            name: "expire_orders",
            every: Duration::from_secs(60),
            run: |state| {
                Box::pin(async move {
                    let expired = crate::domain::orders::jobs::expire_once(state.env()).await?;
                    Ok(format!("expired {expired} orders"))
                })
            },
        },
        Job {
            name: "reconcile_orders",
            every: Duration::from_secs(120),
            run: |state| {
                Box::pin(async move {
                    let report = crate::domain::orders::jobs::reconcile_once(state.env()).await?;
                    let refunds = crate::domain::orders::refund::reconcile_refunds_once(state.env()).await?;
                    Ok(format!(
                        "checked {}, fulfilled {}, unpaid {}, errors {}; unconfirmed refunds: checked {}, refunded {}, restored {}, errors {}",
                        report.checked, report.fulfilled, report.unpaid, report.errors,
                        refunds.checked, refunds.refunded, refunds.restored, refunds.errors
                    ))
                })
            },
        },
        Job {
            name: "prune_payment_notifies",
            every: Duration::from_secs(3600),
            run: |state| {
                Box::pin(async move {
                    let pruned = crate::domain::orders::notify::prune_once(state.env()).await?;
                    Ok(format!("pruned {pruned} raw notifies"))
                })
            },
        },
        Job {
            name: "probe_upstreams",
            every: Duration::from_secs(30),
            run: |state| {
                Box::pin(async move {
                    let recovered = probe_upstreams(&state).await?;
                    Ok(format!("{recovered} upstreams recovered"))
                })
            },
        },
    ]
}

/// Probes the unhealthy upstreams once (`domain::proxy::upstreams::probe_unhealthy_once`
/// with the parts of the state it uses); returns how many recovered.
pub async fn probe_upstreams(state: &AppState) -> Result<usize> {
    crate::domain::proxy::upstreams::probe_unhealthy_once(
        &state.db,
        &state.secrets,
        &state.http,
        &state.catalog,
        state.config.upstream_first_byte_timeout,
        &state.clock,
    )
    .await
}

/// Runs one job by name now, ignoring leases (tests, the admin "run now" button).
pub async fn run_once(state: &AppState, name: &str) -> Result<String> {
    let job =
        all_jobs().into_iter().find(|j| j.name == name).ok_or(crate::foundation::error::Error::NotFound("job"))?;
    (job.run)(state.clone()).await
}

/// Takes or renews the lease for `name` until `until`; true when this holder has it.
pub async fn acquire_lease(state: &AppState, name: &str, holder: &str, until: DateTime<Utc>) -> Result<bool> {
    let now = to_micros(state.now());
    let result = sqlx::query(
        "INSERT INTO job_leases (name, holder, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE job_leases.expires_at <= $4 OR job_leases.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(to_micros(until))
    .bind(now)
    .execute(state.db.pool())
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Starts the scheduler as tracked tasks; they stop when `shutdown` is cancelled.
pub fn spawn_scheduler(state: &AppState, shutdown: tokio_util::sync::CancellationToken) {
    spawn_local_housekeeping(state, shutdown.clone());
    let holder = format!("{}-{}", hostname(), crate::domain::auth::random_token(8));
    for job in all_jobs() {
        let state = state.clone();
        let holder = holder.clone();
        let shutdown = shutdown.clone();
        state.tasks.clone().spawn(async move {
            let mut ticker = tokio::time::interval(job.every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let lease_until = state.now() + chrono::Duration::from_std(job.every).unwrap_or_default();
                match acquire_lease(&state, job.name, &holder, lease_until).await {
                    Ok(true) => match (job.run)(state.clone()).await {
                        Ok(summary) => {
                            metrics::counter!("gateway_job_runs_total", "job" => job.name, "outcome" => "ok")
                                .increment(1);
                            tracing::debug!(job = job.name, %summary, "job ran");
                        }
                        Err(e) => {
                            metrics::counter!("gateway_job_runs_total", "job" => job.name, "outcome" => "error")
                                .increment(1);
                            tracing::warn!(job = job.name, error = %e, "job failed");
                        }
                    },
                    Ok(false) => tracing::trace!(job = job.name, "another instance holds the lease"),
                    Err(e) => tracing::warn!(job = job.name, error = %e, "cannot take the job lease"),
                }
            }
        });
    }
}

/// Per-instance upkeep that needs no lease (in-memory limiter tables).
fn spawn_local_housekeeping(state: &AppState, shutdown: tokio_util::sync::CancellationToken) {
    let state = state.clone();
    state.tasks.clone().spawn(async move {
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => state.login_throttle.shrink(),
            }
        }
    });
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "gateway".into())
}

/// Replays the journal segments of dead instances sharing this data directory (see
/// [`crate::domain::proxy::recovery::Recovery::replay_while_running`]); `None` when
/// the journal is off.
async fn replay_dead_journals(state: &AppState) -> Result<Option<crate::domain::proxy::recovery::RecoveryReport>> {
    if !state.config.journal {
        return Ok(None);
    }
    let settings = state.settings.get().await?;
    let recovery = crate::domain::proxy::recovery::Recovery {
        db: &state.db,
        writer: &state.billing,
        calendar: state.calendar(),
        now: state.now(),
        default_preference: settings.default_billing_preference,
    };
    let report = recovery.replay_while_running(&state.config.data_dir.join("journal")).await?;
    if report.segments > 0 {
        tracing::warn!(
            segments = report.segments,
            charged = report.charged,
            estimated = report.estimated,
            amount = %report.amount,
            released = report.released,
            "dead instance's crash journal replayed by a running instance: its requests are charged"
        );
    }
    Ok(Some(report))
}
