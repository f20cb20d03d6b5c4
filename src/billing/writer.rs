//! The billing writer: one task per instance that runs every admission and settlement
//! of the instance, as many per transaction as are waiting (group commit).
//!
//! Why: each request needs two short write transactions that lock the user's row.
//! Run one by one, a busy user (or SQLite's single writer) serialises on them and the
//! commit, not the work, bounds throughput. Batched, one lock, one commit and a few
//! multi-row statements carry every request that arrived while the previous batch was
//! committing. Nothing is acknowledged before its batch commits: an admission's hold
//! exists and a settlement's charge is durable when the caller gets its answer.
//!
//! A batch that fails as a whole (say, a duplicate request id slipped in) is retried
//! job by job, so one bad job cannot fail the others.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot};

use super::batch::{self, Job, Outcome};
use crate::clock::BusinessCalendar;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::money::Money;

/// The most jobs committed together (bounded so one transaction stays short).
const MAX_BATCH: usize = 256;

/// Jobs queued beyond this make callers wait (back-pressure instead of memory growth).
const QUEUE: usize = 16_384;

/// Handle to the instance's billing writer.
#[derive(Clone)]
pub struct BillingWriter {
    sender: mpsc::Sender<(Job, oneshot::Sender<Outcome>)>,
    /// Each user's headroom after their last admission on this instance (a hint only).
    headroom: Arc<RwLock<HashMap<i64, Money>>>,
}

/// Users remembered at most (the map is emptied when full; it is only a hint).
const HEADROOM_USERS: usize = 100_000;

impl BillingWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(db: Db, calendar: BusinessCalendar) -> BillingWriter {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, calendar, receiver));
        BillingWriter { sender, headroom: Arc::default() }
    }

    /// True when this user's last admission left at least `needed` to spare, so a new
    /// request may go upstream while its own admission commits. Only a hint: the
    /// admission still decides before anything reaches the client.
    pub fn has_headroom(&self, user_id: i64, needed: Money) -> bool {
        self.headroom.read().ok().and_then(|map| map.get(&user_id).copied()).is_some_and(|room| room >= needed)
    }

    /// [`BillingWriter::has_headroom`], and if so takes `hold` from the hint at once so
    /// that requests admitted on it before the next commit cannot together exceed it.
    pub fn take_headroom(&self, user_id: i64, needed: Money, hold: Money) -> bool {
        let Ok(mut map) = self.headroom.write() else { return false };
        match map.get_mut(&user_id) {
            Some(room) if *room >= needed => {
                *room = room.saturating_sub(hold);
                true
            }
            _ => false,
        }
    }

    pub(super) fn remember_headroom(&self, user_id: i64, room: Money) {
        if let Ok(mut map) = self.headroom.write() {
            if map.len() >= HEADROOM_USERS {
                map.clear();
            }
            map.insert(user_id, room);
        }
    }

    /// Drops the user's hint, so their next request is admitted before it is forwarded:
    /// called by every change that may make the user poorer or a key unusable (and by
    /// other instances' notifications of such changes).
    pub fn forget_headroom(&self, user_id: i64) {
        if let Ok(mut map) = self.headroom.write() {
            map.remove(&user_id);
        }
    }

    /// Drops every hint (the invalidation listener may have missed notifications).
    pub fn forget_all_headroom(&self) {
        if let Ok(mut map) = self.headroom.write() {
            map.clear();
        }
    }

    /// Queues a job and waits for its batch to commit.
    pub(super) async fn submit(&self, job: Job) -> Result<Outcome> {
        let answer = self.enqueue(job).await?;
        answer.await.map_err(|_| Error::Unavailable("the billing writer stopped".into()))
    }

    /// Queues a job; its outcome arrives on the receiver once its batch commits.
    pub(super) async fn enqueue(&self, job: Job) -> Result<oneshot::Receiver<Outcome>> {
        let (reply, answer) = oneshot::channel();
        self.sender.send((job, reply)).await.map_err(|_| Error::Unavailable("the billing writer stopped".into()))?;
        Ok(answer)
    }
}

/// How long the writer waits for more jobs when nobody is waiting on the ones it has
/// (settlements, forced admissions): fewer, bigger transactions at moderate rates, at
/// no cost to any client's latency.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

async fn run(db: Db, calendar: BusinessCalendar, mut receiver: mpsc::Receiver<(Job, oneshot::Sender<Outcome>)>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        if !waiting.iter().any(|(job, _)| job.urgent()) {
            let deadline = tokio::time::Instant::now() + LINGER;
            while waiting.len() < MAX_BATCH {
                let seen = waiting.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut waiting, MAX_BATCH - seen)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) if waiting[seen..].iter().any(|(job, _)| job.urgent()) => break,
                    Ok(_) => {}
                }
            }
        }
        let (jobs, replies): (Vec<Job>, Vec<_>) = std::mem::take(&mut waiting).into_iter().unzip();
        metrics::histogram!("gateway_billing_batch_size").record(jobs.len() as f64);
        match batch::run(&db, &calendar, &jobs).await {
            Ok(outcomes) => {
                for (outcome, reply) in outcomes.into_iter().zip(replies) {
                    deliver(&db, outcome, reply).await;
                }
            }
            Err(error) if jobs.len() > 1 => {
                tracing::warn!(error = %error, jobs = jobs.len(), "billing batch failed; running its jobs one by one");
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let outcome = match batch::run(&db, &calendar, std::slice::from_ref(&job)).await {
                        Ok(mut outcomes) => outcomes.pop().unwrap_or_else(|| job.failed(Error::internal("no outcome"))),
                        Err(error) => job.failed(error),
                    };
                    deliver(&db, outcome, reply).await;
                }
            }
            Err(error) => {
                if let (Some(job), Some(reply)) = (jobs.first(), replies.into_iter().next()) {
                    deliver(&db, job.failed(error), reply).await;
                }
            }
        }
    }
}

/// Answers the caller; a hold whose caller went away meanwhile (client disconnected
/// during admission) is released at once instead of blocking money for hours.
async fn deliver(db: &Db, outcome: Outcome, reply: oneshot::Sender<Outcome>) {
    if let Err(Outcome::Admit(Ok(Ok(hold)))) = reply.send(outcome) {
        if let Err(e) = super::release_hold(db, hold.id, hold.user_id).await {
            tracing::warn!(hold = hold.id, error = %e, "cannot release the hold of an abandoned admission");
        }
    }
}
