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
use crate::foundation::clock::BusinessCalendar;
use crate::foundation::db::Db;
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// The most jobs committed together (bounded so one transaction stays short).
const MAX_BATCH: usize = 1024;

/// Jobs queued beyond this make callers wait (back-pressure instead of memory growth).
const QUEUE: usize = 16_384;

/// Handle to the instance's billing writer.
#[derive(Clone)]
pub struct BillingWriter {
    /// Jobs a caller waits on before answering a client (committed at once).
    urgent: mpsc::Sender<Queued>,
    /// Jobs nobody waits on: they gather without waking the writer for each.
    lazy: mpsc::Sender<Queued>,
    hints: Hints,
    /// What this instance learned of each model's output, for sizing holds.
    sizes: super::holds::HoldSizes,
    /// The users' standings for the quota figures, told of every settlement committed here.
    standings: super::standing::StandingCache,
}

type Queued = (Job, oneshot::Sender<Outcome>);

/// Users remembered at most (idle entries are dropped when full; they are only hints).
const HEADROOM_USERS: usize = 100_000;

/// What this instance knows of each user's headroom: the figure its last committed
/// admission of the user left (allowance left + balance − every hold in the database),
/// minus the holds it has since taken on that figure and not yet committed. Both are
/// kept by the writer as it commits, so a backlog cannot make the hint overstate.
#[derive(Clone, Default)]
struct Hints(Arc<RwLock<HashMap<i64, Room>>>);

#[derive(Clone, Default)]
struct Room {
    /// `None` once dropped (a change the instance was told of): admit before forwarding.
    committed: Option<Money>,
    /// Holds taken from `committed` whose admission is not committed yet.
    pending: Money,
    /// Keys of the user with a cap of their own (daily USD, concurrency): the hint says
    /// nothing about them, so their requests are always admitted before forwarding.
    capped_keys: Vec<i64>,
}

impl Room {
    /// What requests may still be admitted on: `None` when nothing is known.
    fn available(&self) -> Option<Money> {
        self.committed.map(|c| c.saturating_sub(self.pending))
    }

    /// A hold taken on the hint is no longer pending (committed, or never sent).
    fn release(&mut self, hold: Money) {
        self.pending = self.pending.saturating_sub(hold).max(Money::ZERO);
    }
}

impl Hints {
    fn update(&self, user_id: i64, change: impl FnOnce(&mut Room)) {
        let Ok(mut map) = self.0.write() else { return };
        if map.len() >= HEADROOM_USERS && !map.contains_key(&user_id) {
            map.retain(|_, room| room.pending.is_positive());
        }
        let room = map.entry(user_id).or_default();
        change(room);
        if room.committed.is_none() && !room.pending.is_positive() && room.capped_keys.is_empty() {
            map.remove(&user_id);
        }
    }

    /// A waiting admission is on its way to the writer: until it commits its hold
    /// counts against the hint like one taken on it (so the hint cannot admit what the
    /// waiting one is about to take).
    fn reserve(&self, user_id: i64, hold: Money) {
        self.update(user_id, |room| room.pending = room.pending.saturating_add(hold));
    }

    /// Per user with a waiting admission among `jobs`: the holds this instance has
    /// taken and not committed that are not in `jobs` (admitted on the hint, or waiting
    /// for a later batch). Taken after the batch is formed, so every job of it is pending.
    fn elsewhere(&self, jobs: &[Job]) -> HashMap<i64, Money> {
        let Ok(map) = self.0.read() else { return HashMap::new() };
        let mut out: HashMap<i64, Money> = HashMap::new();
        for job in jobs {
            if let Job::Admit { request, forced: false, .. } = job {
                if let Some(room) = map.get(&request.user_id) {
                    out.entry(request.user_id).or_insert(room.pending);
                }
            }
        }
        for job in jobs {
            if let Job::Admit { request, .. } = job {
                if let Some(pending) = out.get_mut(&request.user_id) {
                    *pending = pending.saturating_sub(request.hold);
                }
            }
        }
        out.retain(|_, pending| pending.is_positive());
        out
    }

    /// A settlement that charged more than its hold lowered the user's headroom by the
    /// difference: the hint follows at once instead of at the next admission's commit.
    fn settled(&self, job: &Job, outcome: &Outcome) {
        let (Job::Settle { hold, .. }, Outcome::Settle(Ok(done))) = (job, outcome) else { return };
        let over = done.package.saturating_add(done.balance).saturating_sub(hold.amount);
        if !done.applied || !over.is_positive() {
            return;
        }
        self.update(hold.user_id, |room| room.committed = room.committed.map(|c| c.saturating_sub(over)));
    }

    /// Records a committed (or failed) admission: its hold is no longer pending (taken
    /// on the hint or waiting, both counted), and the hint becomes what the database said.
    fn admitted(&self, job: &Job, outcome: &Outcome) {
        self.settled(job, outcome);
        let Job::Admit { request, .. } = job else { return };
        let Outcome::Admit(result) = outcome else { return };
        let after = match result {
            Ok(Ok(hold)) if hold.refused.is_none() => Some(hold.headroom),
            _ => None,
        };
        let capped = matches!(result, Ok(Ok(hold)) if hold.key_capped);
        self.update(request.user_id, |room| {
            room.release(request.hold);
            room.committed = after;
            if capped && !room.capped_keys.contains(&request.api_key_id) {
                room.capped_keys.push(request.api_key_id);
            }
        });
    }
}

impl BillingWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(db: Db, calendar: BusinessCalendar) -> BillingWriter {
        let (urgent, urgent_jobs) = mpsc::channel(QUEUE);
        let (lazy, lazy_jobs) = mpsc::channel(QUEUE);
        let hints = Hints::default();
        let standings = super::standing::StandingCache::default();
        let written = Written { hints: hints.clone(), standings: standings.clone() };
        tokio::spawn(run(db, calendar, urgent_jobs, lazy_jobs, written));
        BillingWriter { urgent, lazy, hints, sizes: super::holds::HoldSizes::default(), standings }
    }

    /// The users' standings (quota figures), kept fresh by this writer's commits.
    pub fn standings(&self) -> &super::standing::StandingCache {
        &self.standings
    }

    /// The recent output tokens per model this instance settled (see [`super::holds`]).
    pub fn hold_sizes(&self) -> &super::holds::HoldSizes {
        &self.sizes
    }

    /// When this user's headroom, as this instance knows it, is at least `needed`, takes
    /// `hold` from it at once (so that requests admitted on the hint before their commits
    /// cannot together exceed it) and says the request may go upstream now.
    pub fn take_headroom(&self, user_id: i64, key_id: i64, needed: Money, hold: Money) -> bool {
        let Ok(mut map) = self.hints.0.write() else { return false };
        match map.get_mut(&user_id) {
            Some(room)
                if room.available().is_some_and(|room| room >= needed) && !room.capped_keys.contains(&key_id) =>
            {
                room.pending = room.pending.saturating_add(hold);
                true
            }
            _ => false,
        }
    }

    /// Gives back a hold taken by [`BillingWriter::take_headroom`] whose admission never
    /// reached the writer, and drops the hint (the writer is in trouble).
    pub(super) fn untake_headroom(&self, user_id: i64, hold: Money) {
        self.hints.update(user_id, |room| {
            room.release(hold);
            room.committed = None;
        });
    }

    /// Drops the user's hint, so their next request is admitted before it is forwarded:
    /// called by every change that may make the user poorer or a key unusable (and by
    /// other instances' notifications of such changes).
    pub fn forget_headroom(&self, user_id: i64) {
        self.hints.update(user_id, |room| room.committed = None);
        self.standings.changed(user_id);
    }

    /// Drops every hint (the invalidation listener may have missed notifications).
    pub fn forget_all_headroom(&self) {
        self.standings.changed_all();
        if let Ok(mut map) = self.hints.0.write() {
            map.retain(|_, room| room.pending.is_positive());
            for room in map.values_mut() {
                room.committed = None;
            }
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
        let queue = if job.urgent() { &self.urgent } else { &self.lazy };
        // A waiting admission counts as pending from now until the writer records it
        // (one taken on the hint already does, from `take_headroom`).
        let waiting = match &job {
            Job::Admit { request, forced: false, .. } => Some((request.user_id, request.hold)),
            _ => None,
        };
        if let Some((user_id, hold)) = waiting {
            self.hints.reserve(user_id, hold);
        }
        if queue.send((job, reply)).await.is_err() {
            if let Some((user_id, hold)) = waiting {
                self.hints.update(user_id, |room| room.release(hold));
            }
            return Err(Error::Unavailable("the billing writer stopped".into()));
        }
        Ok(answer)
    }
}

/// How long the writer waits for more jobs when nobody is waiting on the ones it has
/// (settlements, forced admissions): fewer, bigger transactions at moderate rates, at
/// no cost to any client's latency.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

async fn run(
    db: Db,
    calendar: BusinessCalendar,
    mut urgent: mpsc::Receiver<Queued>,
    mut lazy: mpsc::Receiver<Queued>,
    written: Written,
) {
    let hints = &written.hints;
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            queued = urgent.recv() => queued,
            queued = lazy.recv() => queued,
        };
        if let Some(queued) = first {
            let only_lazy = !queued.0.urgent();
            waiting.push(queued);
            if only_lazy {
                // Let more gather (they queue without waking this task), unless someone
                // starts waiting on an admission meanwhile.
                tokio::select! {
                    biased;
                    queued = urgent.recv() => waiting.extend(queued),
                    _ = tokio::time::sleep(LINGER) => {}
                }
            }
        }
        for queue in [&mut urgent, &mut lazy] {
            while waiting.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(queued) => waiting.push(queued),
                    Err(_) => break,
                }
            }
        }
        if waiting.is_empty() {
            // Both queues closed (every handle dropped) and drained.
            return;
        }
        // Admissions taken on the hint first: they are forwarded already, so a waiting
        // admission of the same batch must see their holds (it also counts those still
        // outside the batch, `elsewhere`). Otherwise arrival order is kept.
        waiting.sort_by_key(|(job, _)| !matches!(job, Job::Admit { forced: true, .. }));
        let (jobs, replies): (Vec<Job>, Vec<_>) = std::mem::take(&mut waiting).into_iter().unzip();
        metrics::histogram!("gateway_billing_batch_size").record(jobs.len() as f64);
        let elsewhere = hints.elsewhere(&jobs);
        written.committing(&jobs);
        match batch::run(&db, &calendar, &jobs, &elsewhere).await {
            Ok(outcomes) => {
                for ((outcome, reply), job) in outcomes.into_iter().zip(replies).zip(&jobs) {
                    written.record(job, &outcome);
                    deliver(&db, outcome, reply).await;
                }
            }
            Err(error) if jobs.len() > 1 => {
                tracing::warn!(error = %error, jobs = jobs.len(), "billing batch failed; running its jobs one by one");
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let one = std::slice::from_ref(&job);
                    let outcome = match batch::run(&db, &calendar, one, &hints.elsewhere(one)).await {
                        Ok(mut outcomes) => outcomes.pop().unwrap_or_else(|| job.failed(Error::internal("no outcome"))),
                        Err(error) => job.failed(error),
                    };
                    written.record(&job, &outcome);
                    deliver(&db, outcome, reply).await;
                }
            }
            Err(error) => {
                if let (Some(job), Some(reply)) = (jobs.first(), replies.into_iter().next()) {
                    let outcome = job.failed(error);
                    written.record(job, &outcome);
                    deliver(&db, outcome, reply).await;
                }
            }
        }
    }
}

/// What the writer tells of each job it committed (or failed).
struct Written {
    hints: Hints,
    standings: super::standing::StandingCache,
}

impl Written {
    /// Before a batch runs: a standing cached before it starts is never used once it may
    /// have committed (the writer is told of the commit only after the database, so a
    /// client that sees its settlement's row could otherwise still be shown the figures
    /// from before it). Told again in [`Written::record`], which retires any standing
    /// read while the batch ran.
    fn committing(&self, jobs: &[Job]) {
        for job in jobs {
            if matches!(job, Job::Settle { .. } | Job::SettleAdmitted { .. }) {
                self.standings.changed(job.user_id());
            }
        }
    }

    fn record(&self, job: &Job, outcome: &Outcome) {
        self.hints.admitted(job, outcome);
        if let Outcome::Settle(Ok(done)) = outcome {
            if done.applied {
                self.standings.changed(job.user_id());
            }
        }
    }
}

/// Answers the caller; a hold whose caller went away meanwhile (client disconnected
/// during admission) is released at once instead of blocking money for hours.
async fn deliver(db: &Db, outcome: Outcome, reply: oneshot::Sender<Outcome>) {
    if let Err(Outcome::Admit(Ok(Ok(hold)))) = reply.send(outcome) {
        // No id: netted with its settlement in the same batch, no hold was written.
        if hold.id == 0 {
            return;
        }
        if let Err(e) = super::release_hold(db, hold.id, hold.user_id).await {
            tracing::warn!(hold = hold.id, error = %e, "cannot release the hold of an abandoned admission");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::billing::{AdmissionRequest, Hold};
    use chrono::Utc;

    fn m(units: &str) -> Money {
        Money::parse(units).unwrap()
    }

    fn admission(hold: &str, forced: bool) -> Job {
        let request = AdmissionRequest { request_id: None, user_id: 1, api_key_id: 1, hold: m(hold) };
        Job::Admit { request, now: Utc::now(), policy: crate::domain::billing::Policy::default(), forced }
    }

    fn admitted(headroom: &str, refused: Option<&'static str>) -> Outcome {
        let now = Utc::now();
        Outcome::Admit(Ok(Ok(Hold {
            id: 1,
            request_id: "r".into(),
            user_id: 1,
            api_key_id: 1,
            amount: m("1"),
            admitted_at: now,
            business_date: now.date_naive(),
            user_package_id: None,
            packages: Vec::new(),
            blocks: Vec::new(),
            preference: crate::domain::billing::rules::Preference::PackageFirst,
            key_capped: false,
            headroom: m(headroom),
            refused,
        })))
    }

    /// What this instance may still admit user 1 on (`None`: admit first).
    fn available(w: &BillingWriter) -> Option<Money> {
        w.hints.0.read().unwrap().get(&1).and_then(Room::available)
    }

    fn writer() -> BillingWriter {
        let (urgent, _) = mpsc::channel(1);
        let (lazy, _) = mpsc::channel(1);
        BillingWriter {
            urgent,
            lazy,
            hints: Hints::default(),
            sizes: Default::default(),
            standings: Default::default(),
        }
    }

    /// A waiting admission of user 1 (hold 1) enqueued and committed with `headroom`.
    fn waited(w: &BillingWriter, headroom: &str) {
        w.hints.reserve(1, m("1"));
        w.hints.admitted(&admission("1", false), &admitted(headroom, None));
    }

    #[test]
    fn holds_taken_on_the_hint_count_until_their_admission_commits() {
        let w = writer();
        assert_eq!(available(&w), None, "nothing known yet: admit first");
        waited(&w, "10");
        assert!(w.take_headroom(1, 1, m("4"), m("1")));
        assert!(w.take_headroom(1, 1, m("4"), m("1")));
        // A commit of an older admission reports 10 again (the two above are not in it
        // yet): the pending holds still count, so the hint cannot overstate.
        waited(&w, "10");
        assert_eq!(available(&w), Some(m("8")));
        // The first forced admission commits: 9 left in the database, one still pending.
        w.hints.admitted(&admission("1", true), &admitted("9", None));
        assert_eq!(available(&w), Some(m("8")));
        w.hints.admitted(&admission("1", true), &admitted("8", None));
        assert_eq!(available(&w), Some(m("8")));
    }

    #[test]
    fn a_waiting_admission_counts_the_holds_taken_on_the_hint_outside_its_batch() {
        let w = writer();
        waited(&w, "20");
        // Three forwarded on the hint, their holds not written yet; then one waits.
        for _ in 0..3 {
            assert!(w.take_headroom(1, 1, m("4"), m("1")));
        }
        w.hints.reserve(1, m("1"));
        let forced_in_batch = admission("1", true);
        let waiting = admission("1", false);
        // In a batch with one of the three: the other two are elsewhere.
        assert_eq!(w.hints.elsewhere(&[forced_in_batch, waiting]).get(&1), Some(&m("2")));
        // While the waiting one is pending, the hint cannot hand out its share.
        assert_eq!(available(&w), Some(m("16")));
        // A batch of settlements only asks for nothing.
        assert!(w.hints.elsewhere(&[admission("1", true)]).is_empty());
    }

    #[test]
    fn a_settlement_above_its_hold_lowers_the_hint_at_once() {
        let w = writer();
        waited(&w, "10");
        let Outcome::Admit(Ok(Ok(hold))) = admitted("10", None) else { unreachable!() };
        let record = Box::new(crate::domain::billing::UsageRecord::default());
        let job = Job::Settle { hold, record, now: Utc::now() };
        let done = crate::domain::billing::Settlement {
            package: Money::ZERO,
            balance: m("3"),
            balance_after: m("0"),
            applied: true,
        };
        w.hints.admitted(&job, &Outcome::Settle(Ok(done)));
        assert_eq!(available(&w), Some(m("8")), "charged 3 on a hold of 1: 2 less headroom");
    }

    #[test]
    fn a_refusal_or_a_notice_drops_the_hint_but_keeps_counting_pending_holds() {
        let w = writer();
        waited(&w, "10");
        assert!(w.take_headroom(1, 1, m("2"), m("1")));
        w.forget_headroom(1);
        assert_eq!(available(&w), None);
        waited(&w, "10");
        assert_eq!(available(&w), Some(m("9")), "the hold taken before the notice is still pending");
        w.hints.admitted(&admission("1", true), &admitted("-1", Some("cannot_pay")));
        assert_eq!(available(&w), None, "a forced admission that would have been refused drops it");
        w.untake_headroom(1, m("5"));
        assert!(w.hints.0.read().unwrap().is_empty(), "nothing pending and nothing known: forgotten");
    }
}
