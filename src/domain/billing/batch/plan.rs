//! Applying a batch in memory: each admission and settlement, in arrival order, against
//! the facts read under the locks as changed by the jobs before it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::facts::{Facts, WindowKey};
use super::{Job, Outcome};
use crate::domain::auth::api_keys::{check_owner, KeyOwner, KeyRefusal};
use crate::domain::billing::allowance::{self, key_scope, package_scope, user_scope, Terms, Window};
use crate::domain::billing::rules::{self, AdmissionFacts, Cap, Preference};
use crate::domain::billing::{AdmissionRequest, Hold, Policy, Settlement, UsageRecord};
use crate::foundation::clock::windows::{Span, WindowKind};
use crate::foundation::clock::{date_key, from_micros, to_micros, BusinessCalendar};
use crate::foundation::error::{Error, Result};
use crate::foundation::money::Money;

/// A hold to insert.
pub(super) struct NewHold {
    pub user_id: i64,
    pub api_key_id: i64,
    pub amount: i64,
    pub created_at: i64,
    pub request_id: String,
    /// Settled in the same batch: the hold was applied in memory and is not written.
    pub netted: bool,
}

/// A usage row to insert, with its settled split.
pub(super) struct NewUsage {
    pub hold: Hold,
    pub record: UsageRecord,
    pub package_cost: i64,
    pub balance_cost: i64,
    pub created_at: DateTime<Utc>,
}

/// A ledger row to insert.
pub(super) struct NewEntry {
    pub user_id: i64,
    pub amount: i64,
    pub balance_after: i64,
    pub package_amount: i64,
    pub user_package_id: Option<i64>,
    pub business_date: String,
    pub reference: String,
    pub note: String,
    pub created_at: i64,
}

/// Accumulated changes to one `daily_usage` row.
#[derive(Default)]
pub(super) struct DayChange {
    pub package: i64,
    pub balance: i64,
    pub requests: i64,
    pub user_package_id: Option<i64>,
    pub updated_at: i64,
}

/// Accumulated changes to one user row.
#[derive(Default)]
pub(super) struct UserChange {
    pub balance: i64,
    pub held: i64,
    pub updated_at: Option<i64>,
}

/// Accumulated use of one window (a new 5-hour block is written with zero use).
#[derive(Default)]
pub(super) struct WindowChange {
    pub starts_at: i64,
    pub used: i64,
    pub updated_at: i64,
}

/// The batch's effect, built job by job in memory.
pub(super) struct Plan {
    pub facts: Facts,
    calendar: BusinessCalendar,
    pub holds: Vec<NewHold>,
    pub usage: Vec<NewUsage>,
    pub entries: Vec<NewEntry>,
    pub days: BTreeMap<(i64, String), DayChange>,
    pub users: BTreeMap<i64, UserChange>,
    /// Key id → (spent added, last used at).
    pub keys: BTreeMap<i64, (i64, i64)>,
    pub windows: BTreeMap<WindowKey, WindowChange>,
    /// Forced admissions of the batch by request id: (index in `holds`, the hold), for
    /// settling them in the same batch without writing their hold.
    admitted: HashMap<String, (usize, Hold)>,
    /// Per user, holds this instance took outside the batch and has not written yet
    /// (see [`super::run`]): an admission that waits counts them as held.
    pub elsewhere: HashMap<i64, Money>,
}

/// What a user's packages can pay for one request at an instant.
struct PackagesNow {
    ids: Vec<i64>,
    room: Option<Money>,
    /// When the first package has room again for this hold (`package_only` refusals).
    next_room: Option<DateTime<Utc>>,
    blocks: Vec<(String, i64)>,
}

impl Plan {
    pub fn new(facts: Facts, calendar: BusinessCalendar) -> Plan {
        Plan {
            facts,
            calendar,
            holds: Vec::new(),
            usage: Vec::new(),
            entries: Vec::new(),
            days: BTreeMap::new(),
            users: BTreeMap::new(),
            keys: BTreeMap::new(),
            windows: BTreeMap::new(),
            admitted: HashMap::new(),
            elsewhere: HashMap::new(),
        }
    }

    pub fn apply(&mut self, job: &Job) -> Outcome {
        match job {
            Job::Admit { request, now, policy, forced } => Outcome::Admit(self.admit(request, *now, policy, *forced)),
            Job::Settle { hold, record, now } => Outcome::Settle(self.settle(hold, record, *now)),
            Job::SettleAdmitted { record, now, .. } => match self.settle_admitted(record, *now) {
                Some(result) => Outcome::Settle(result),
                None => Outcome::NotNetted,
            },
        }
    }

    /// What was used in a window of a scope, as changed so far in the batch.
    fn used(&self, scope: &str, span: &Span) -> Money {
        let key = (scope.to_string(), span.kind.as_str(), span.period.clone());
        let read = self.facts.windows.get(&key).copied().unwrap_or(0);
        let added = self.windows.get(&key).map_or(0, |c| c.used);
        Money::from_micros(read.saturating_add(added))
    }

    /// The start of the scope's latest 5-hour block (it may have ended).
    fn block(&self, scope: &str) -> Option<DateTime<Utc>> {
        self.facts.blocks.get(scope).copied().map(from_micros)
    }

    /// The windows of a package at `at`, its 5-hour block given by `block`.
    fn windows_of(&self, terms: &Terms, at: DateTime<Utc>, block: Option<DateTime<Utc>>) -> Vec<Window> {
        let scope = package_scope(terms.id);
        terms.windows(&self.calendar, at, block, &|span| self.used(&scope, span))
    }

    fn packages_now(&self, user_id: i64, now: DateTime<Utc>, model: Option<&str>, hold: Money) -> PackagesNow {
        let at = to_micros(now);
        let mut found = PackagesNow { ids: Vec::new(), room: None, next_room: None, blocks: Vec::new() };
        let list = self.facts.packages.get(&user_id).map(Vec::as_slice).unwrap_or_default();
        for terms in list.iter().filter(|t| t.in_force(at) && t.covers(model)) {
            let scope = package_scope(terms.id);
            let windows = self.windows_of(terms, now, self.block(&scope));
            if let Some(block) = windows.iter().find(|w| w.span.kind == WindowKind::FiveHour) {
                found.blocks.push((scope, to_micros(block.span.start)));
            }
            let room = allowance::room(&windows);
            found.room = Some(found.room.unwrap_or(Money::ZERO).saturating_add(room));
            // When no window is short of the hold itself (running requests hold the
            // room), the earliest reset among the windows is when room frees for sure.
            let next = allowance::next_room_at(&windows, hold).or_else(|| windows.iter().map(|w| w.span.end).min());
            if let Some(next) = next {
                found.next_room = Some(found.next_room.map_or(next, |n: DateTime<Utc>| n.min(next)));
            }
            found.ids.push(terms.id);
        }
        found
    }

    fn admit(
        &mut self,
        request: &AdmissionRequest,
        now: DateTime<Utc>,
        policy: &Policy,
        forced: bool,
    ) -> Result<std::result::Result<Hold, KeyRefusal>> {
        let user = self.facts.users.get(&request.user_id).ok_or(Error::NotFound("user"))?;
        let key = self.facts.keys.get(&request.api_key_id).filter(|k| k.user_id == request.user_id);
        // The key is re-checked here, under the user's lock, so a revocation, suspension
        // or spend limit takes effect on every instance at once whatever the key cache holds.
        let owner = key.map(|k| KeyOwner {
            key_id: request.api_key_id,
            user_id: request.user_id,
            key_status: k.status.clone(),
            spend_limit: k.spend_limit,
            spent: k.spent,
            expires_at: k.expires_at,
            user_status: user.status.clone(),
            role: user.role.clone(),
        });
        let mut refused = None;
        if let Err(refusal) = check_owner(owner, now) {
            metrics::counter!("gateway_billing_admissions_total", "outcome" => "key_refused").increment(1);
            if !forced {
                return Ok(Err(refusal));
            }
            refused = Some(refusal.code());
        }
        let today = self.calendar.business_date(now);
        let preference = Preference::stored_or(user.preference.as_deref(), policy.default_preference);
        let mut packages = self.packages_now(request.user_id, now, policy.model.as_deref(), request.hold);
        let (package_used, balance_used) = self.day(request.user_id, today);
        let block_cap = user.five_hour_cap.map(|limit| {
            let scope = user_scope(request.user_id);
            let span = self.calendar.five_hour_block(self.block(&scope), now);
            packages.blocks.push((scope.clone(), to_micros(span.start)));
            (
                Cap {
                    limit: Money::from_micros(limit),
                    spent: self.used(&scope, &span),
                    held: Money::from_micros(user.held),
                },
                span.end,
            )
        });
        let key_cap = key.and_then(|k| k.daily_cap.map(|limit| (limit, k.running_held))).map(|(limit, held)| Cap {
            limit: Money::from_micros(limit),
            spent: self.used(&key_scope(request.api_key_id), &self.calendar.day_span(now)),
            held: Money::from_micros(held),
        });
        let facts = AdmissionFacts {
            hold: request.hold,
            balance: Money::from_micros(user.balance),
            held: Money::from_micros(user.held),
            package_room: packages.room,
            preference,
            spent_today: Money::from_micros(package_used.saturating_add(balance_used)),
            daily_cap: user.daily_cap.map(Money::from_micros).or(policy.default_cap),
            block_cap: block_cap.map(|(cap, _)| cap),
            key_cap,
            key_running: key.map_or(0, |k| k.running),
            key_concurrency: key.and_then(|k| k.max_concurrency),
        };
        let key_capped = key.is_some_and(|k| k.capped());
        // A waiting admission also counts the holds this instance has admitted on its
        // hint and not written yet: otherwise the two together could pass the funds.
        let decided = match self.elsewhere.get(&request.user_id) {
            Some(pending) if !forced => AdmissionFacts { held: facts.held.saturating_add(*pending), ..facts },
            _ => facts,
        };
        if let Err(refusal) = rules::decide(&decided) {
            metrics::counter!("gateway_billing_admissions_total", "outcome" => refusal.reason()).increment(1);
            if !forced {
                let resets = super::super::Resets {
                    packages: packages.next_room,
                    block: block_cap.map(|(_, end)| end),
                    hold: request.hold,
                    available: decided.available(),
                };
                return Err(super::super::refusal_error(refusal, &self.calendar, now, resets));
            }
            refused = refused.or(Some(refusal.reason()));
        }
        let headroom = facts.headroom();
        let at = to_micros(now);
        for (scope, start) in &packages.blocks {
            if self.facts.blocks.get(scope) != Some(start) {
                // A new 5-hour block starts with this request: written now, so the
                // next admission on any instance counts in the same block.
                self.facts.blocks.insert(scope.clone(), *start);
                let change = self.windows.entry((scope.clone(), "5h", start.to_string())).or_default();
                change.starts_at = *start;
                change.updated_at = at;
            }
        }
        let amount = request.hold.micros();
        if let Some(user) = self.facts.users.get_mut(&request.user_id) {
            user.held = user.held.saturating_add(amount);
        }
        if let Some(key) = self.facts.keys.get_mut(&request.api_key_id) {
            key.running += 1;
            key.running_held = key.running_held.saturating_add(amount);
        }
        self.users.entry(request.user_id).or_default().held += amount;
        let request_id = request.request_id.clone().unwrap_or_else(crate::domain::telemetry::new_request_id);
        self.holds.push(NewHold {
            user_id: request.user_id,
            api_key_id: request.api_key_id,
            amount,
            created_at: at,
            request_id: request_id.clone(),
            netted: false,
        });
        metrics::counter!("gateway_billing_admissions_total", "outcome" => "admitted").increment(1);
        metrics::counter!("gateway_billing_held_micros_total").increment(amount.unsigned_abs());
        let hold = Hold {
            id: 0,
            request_id,
            user_id: request.user_id,
            api_key_id: request.api_key_id,
            amount: request.hold,
            admitted_at: now,
            business_date: today,
            user_package_id: packages.ids.first().copied(),
            packages: packages.ids,
            blocks: packages.blocks,
            preference,
            key_capped,
            headroom,
            refused,
        };
        if forced {
            self.admitted.insert(hold.request_id.clone(), (self.holds.len() - 1, hold.clone()));
        }
        Ok(Ok(hold))
    }

    /// Settles a forced admission of this batch against its hold in memory: the hold
    /// row is not written, its amount is given back as the deletion of a written hold
    /// would, and the charge is exactly the one [`Plan::settle`] makes. `None` when the
    /// request's admission is not in the batch (or was settled in it already).
    fn settle_admitted(&mut self, record: &UsageRecord, now: DateTime<Utc>) -> Option<Result<Settlement>> {
        let (index, hold) = self.admitted.remove(&record.request_id)?;
        if let Some(code) = hold.refused {
            tracing::warn!(request_id = %hold.request_id, user_id = hold.user_id, refusal = code,
                "a request forwarded on a stale headroom hint would have been refused; it is charged as served");
        }
        let result = self.charge(&hold, record, now, hold.amount.micros());
        if result.is_ok() {
            if let Some(new) = self.holds.get_mut(index) {
                new.netted = true;
            }
            metrics::counter!("gateway_billing_netted_total").increment(1);
        }
        Some(result)
    }

    /// Today's (package, balance) usage of a user as changed so far in the batch.
    fn day(&self, user_id: i64, date: chrono::NaiveDate) -> (i64, i64) {
        let key = (user_id, date_key(date));
        let (package, balance) = self.facts.days.get(&key).copied().unwrap_or((0, 0));
        match self.days.get(&key) {
            Some(change) => (package + change.package, balance + change.balance),
            None => (package, balance),
        }
    }

    /// Adds `amount` to a window of a scope.
    fn count(&mut self, scope: String, span: &Span, amount: i64, at: i64) {
        let change = self.windows.entry((scope, span.kind.as_str(), span.period.clone())).or_default();
        change.starts_at = to_micros(span.start);
        change.used = change.used.saturating_add(amount);
        change.updated_at = at;
    }

    fn settle(&mut self, hold: &Hold, record: &UsageRecord, now: DateTime<Utc>) -> Result<Settlement> {
        if !self.facts.users.contains_key(&hold.user_id) {
            return Err(Error::NotFound("user"));
        }
        // The batch deleted this hold if it was still there: give its amount back even
        // when the request turns out to be settled already.
        let release = if self.facts.released.remove(&hold.id) { hold.amount.micros() } else { 0 };
        self.charge(hold, record, now, release)
    }

    /// Charges a request once and gives back `release` (its hold, when the batch
    /// deleted it or never wrote it).
    fn charge(&mut self, hold: &Hold, record: &UsageRecord, now: DateTime<Utc>, release: i64) -> Result<Settlement> {
        let Some(balance) = self.facts.users.get(&hold.user_id).map(|u| u.balance) else {
            return Err(Error::NotFound("user"));
        };
        if release > 0 {
            if let Some(key) = self.facts.keys.get_mut(&hold.api_key_id) {
                key.running = (key.running - 1).max(0);
                key.running_held = (key.running_held - release).max(0);
            }
        }
        if !self.facts.settled.insert(record.request_id.clone()) {
            // Already settled (a retry after an ambiguous commit): no charge.
            let balance = self.release_only(hold.user_id, release);
            return Ok(Settlement {
                package: Money::ZERO,
                balance: Money::ZERO,
                balance_after: Money::from_micros(balance),
                applied: false,
            });
        }
        // The packages and windows in force when the request was admitted pay for it.
        let block_of = |scope: &str| hold.blocks.iter().find(|(s, _)| s == scope).map(|(_, start)| from_micros(*start));
        let paying: Vec<(i64, Vec<Window>)> = hold
            .packages
            .iter()
            .filter_map(|id| self.facts.terms.get(id))
            .filter(|t| t.covers(Some(&record.model)))
            .map(|t| (t.id, self.windows_of(t, hold.admitted_at, block_of(&package_scope(t.id)))))
            .collect();
        let rooms: Vec<Money> = paying.iter().map(|(_, w)| allowance::room(w)).collect();
        let split = rules::split_plan(record.cost, &rooms, Money::from_micros(balance), hold.preference);
        let package_part = split.package_total();
        let date = date_key(hold.business_date);
        let at = to_micros(now);
        let mut first_payer = None;
        for ((id, windows), part) in paying.iter().zip(&split.packages) {
            if part.is_positive() {
                first_payer = first_payer.or(Some(*id));
                for window in windows {
                    self.count(package_scope(*id), &window.span, part.micros(), at);
                }
            }
        }
        let user_block = block_of(&user_scope(hold.user_id));
        if let Some(start) = user_block {
            let span = self.calendar.five_hour_block(Some(start), hold.admitted_at);
            self.count(user_scope(hold.user_id), &span, record.cost.micros(), at);
        }
        // A key's day counts while it has a cap, also one set after this admission
        // (see `caps::update_key`).
        let key_has_day_cap = self.facts.keys.get(&hold.api_key_id).is_some_and(|k| k.daily_cap.is_some());
        if hold.key_capped || key_has_day_cap {
            let span = self.calendar.day_span(hold.admitted_at);
            self.count(key_scope(hold.api_key_id), &span, record.cost.micros(), at);
        }

        let day = self.days.entry((hold.user_id, date.clone())).or_default();
        day.package += package_part.micros();
        day.balance += split.balance.micros();
        day.requests += 1;
        day.user_package_id = first_payer.or(hold.user_package_id).or(day.user_package_id);
        day.updated_at = at;

        let balance_after = match self.facts.users.get_mut(&hold.user_id) {
            Some(user) => {
                user.balance = user.balance.saturating_sub(split.balance.micros());
                user.held = (user.held - release).max(0);
                user.balance
            }
            None => return Err(Error::NotFound("user")),
        };
        let change = self.users.entry(hold.user_id).or_default();
        change.balance -= split.balance.micros();
        change.held -= release;
        change.updated_at = Some(at);

        if record.cost.is_positive() {
            self.entries.push(NewEntry {
                user_id: hold.user_id,
                amount: -split.balance.micros(),
                balance_after,
                package_amount: package_part.micros(),
                user_package_id: first_payer,
                business_date: date,
                reference: format!("usage:{}", record.request_id),
                note: record.model.clone(),
                created_at: at,
            });
            let key = self.keys.entry(hold.api_key_id).or_insert((0, at));
            key.0 += record.cost.micros();
            key.1 = at;
            if let Some(k) = self.facts.keys.get_mut(&hold.api_key_id) {
                k.spent += record.cost.micros();
            }
        }
        self.usage.push(NewUsage {
            hold: hold.clone(),
            record: record.clone(),
            package_cost: package_part.micros(),
            balance_cost: split.balance.micros(),
            created_at: now,
        });
        Ok(Settlement {
            package: package_part,
            balance: split.balance,
            balance_after: Money::from_micros(balance_after),
            applied: true,
        })
    }

    /// Gives a released hold back to the user's available funds; returns the balance.
    fn release_only(&mut self, user_id: i64, release: i64) -> i64 {
        if release > 0 {
            self.users.entry(user_id).or_default().held -= release;
        }
        match self.facts.users.get_mut(&user_id) {
            Some(user) => {
                user.held = (user.held - release).max(0);
                user.balance
            }
            None => 0,
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
