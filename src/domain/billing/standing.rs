//! Where a user stands (balance, own cap, today's spend, the windows of the packages in
//! force), cached per instance for the quota figures every `/v1/responses` answer
//! carries (`surface::v1::quota`).
//!
//! Why: reading them took a pooled connection and five statements per request, the
//! largest database cost left on the request path (measured in bench/ab, see the
//! README's Benchmark section). A cached standing is used only while nothing this
//! instance knows of changed it: every committed settlement of the user and every
//! notice that the user changed ([`super::user_changed`], also from other instances)
//! moves the user's generation, and an entry read under an older generation is read
//! again. What the instance is not told of (a top-up, a grant, another instance's
//! settlement) shows after at most [`MAX_AGE`]; an entry never outlives the business
//! day or the end of a window it shows. The figures are informational (admission reads
//! its own facts under the user's lock), so a miss is always safe: it reads again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};

use super::quota::PackageWindows;
use crate::foundation::clock::BusinessCalendar;
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::money::Money;

/// The longest a standing is reused, in real time and in business time.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Users cached at most; past it the cache starts over (every entry is read again).
const MAX_USERS: usize = 100_000;

/// What the quota figures of a user are made of, as read at one instant.
#[derive(Debug, Clone)]
pub struct Standing {
    pub balance: Money,
    /// The user's own daily cap (`None`: the global default applies).
    pub own_cap: Option<Money>,
    /// The daily limit of the package in force (`None`: no package, or no daily limit).
    pub package_daily_limit: Option<Money>,
    /// Today's spend from packages and from the balance.
    pub package_used: Money,
    pub balance_used: Money,
    /// The packages in force with their windows.
    pub plans: Vec<PackageWindows>,
}

/// Reads a user's standing at `now` (one pooled connection, five statements).
pub async fn read(db: &Db, calendar: &BusinessCalendar, user_id: i64, now: DateTime<Utc>) -> Result<Standing> {
    let today = calendar.business_date(now);
    let mut conn = db.acquire().await?;
    let user: Option<(i64, Option<i64>)> = sqlx::query_as("SELECT balance, daily_cap FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    let (balance, own_cap) = user.unwrap_or((0, None));
    let package = super::applicable_package(&mut conn, user_id, now).await?;
    let (package_used, balance_used) = super::day_usage(&mut conn, user_id, today).await?;
    let plans = super::quota::packages_in_force(&mut conn, calendar, user_id, now).await?;
    Ok(Standing {
        balance: Money::from_micros(balance),
        own_cap: own_cap.map(Money::from_micros),
        package_daily_limit: package.and_then(|p| p.daily_limit).map(Money::from_micros),
        package_used,
        balance_used,
        plans,
    })
}

/// This instance's cached standings and the users' generations (cheap to clone).
#[derive(Clone, Default)]
pub struct StandingCache(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    /// The last generation handed out.
    next: u64,
    /// The generation of every user not in `changed` (raised when `changed` starts over).
    floor: u64,
    /// Users changed since the floor, with the generation of their last change.
    changed: HashMap<i64, u64>,
    entries: HashMap<i64, Entry>,
}

struct Entry {
    generation: u64,
    read_at: Instant,
    at: DateTime<Utc>,
    date: NaiveDate,
    /// The earliest end of a window the standing shows (it is read again from then).
    until: Option<DateTime<Utc>>,
    standing: Arc<Standing>,
}

impl Inner {
    fn generation(&self, user_id: i64) -> u64 {
        self.changed.get(&user_id).copied().unwrap_or(self.floor).max(self.floor)
    }
}

impl StandingCache {
    /// Something the user's standing is made of changed (a settlement committed, a
    /// notice): their next read goes to the database.
    pub fn changed(&self, user_id: i64) {
        let Ok(mut inner) = self.0.lock() else { return };
        if inner.changed.len() >= MAX_USERS {
            inner.changed.clear();
            inner.floor = inner.next;
        }
        inner.next += 1;
        let generation = inner.next;
        inner.changed.insert(user_id, generation);
        inner.entries.remove(&user_id);
    }

    /// Every standing is read again (notices may have been missed).
    pub fn changed_all(&self) {
        let Ok(mut inner) = self.0.lock() else { return };
        inner.next += 1;
        inner.floor = inner.next;
        inner.changed.clear();
        inner.entries.clear();
    }

    /// The user's standing at `now`: the cached one when nothing changed it since it was
    /// read (and it is recent, of the same business day and no window it shows ended),
    /// else read from the database and cached.
    pub async fn get(
        &self,
        db: &Db,
        calendar: &BusinessCalendar,
        user_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Arc<Standing>> {
        let date = calendar.business_date(now);
        let generation = {
            let Ok(inner) = self.0.lock() else { return read(db, calendar, user_id, now).await.map(Arc::new) };
            let generation = inner.generation(user_id);
            if let Some(e) = inner.entries.get(&user_id) {
                let recent = e.read_at.elapsed() < MAX_AGE
                    && now >= e.at
                    && (now - e.at).to_std().is_ok_and(|age| age < MAX_AGE);
                if e.generation == generation && recent && e.date == date && e.until.is_none_or(|t| now < t) {
                    return Ok(e.standing.clone());
                }
            }
            generation
        };
        let standing = Arc::new(read(db, calendar, user_id, now).await?);
        let until = standing.plans.iter().flat_map(|p| &p.windows).filter_map(|w| w.resets).min();
        if let Ok(mut inner) = self.0.lock() {
            // A change committed during the read leaves the entry older than the user's
            // generation: it is never used.
            if inner.entries.len() >= MAX_USERS {
                inner.entries.clear();
            }
            let entry = Entry { generation, read_at: Instant::now(), at: now, date, until, standing: standing.clone() };
            inner.entries.insert(user_id, entry);
        }
        Ok(standing)
    }

    #[cfg(test)]
    fn cached(&self, user_id: i64) -> bool {
        self.0
            .lock()
            .is_ok_and(|inner| inner.entries.get(&user_id).is_some_and(|e| e.generation == inner.generation(user_id)))
    }

    #[cfg(test)]
    fn put(&self, user_id: i64, generation: u64, now: DateTime<Utc>) {
        let standing = Arc::new(Standing {
            balance: Money::ZERO,
            own_cap: None,
            package_daily_limit: None,
            package_used: Money::ZERO,
            balance_used: Money::ZERO,
            plans: Vec::new(),
        });
        let entry =
            Entry { generation, read_at: Instant::now(), at: now, date: now.date_naive(), until: None, standing };
        if let Ok(mut inner) = self.0.lock() {
            inner.entries.insert(user_id, entry);
        }
    }

    #[cfg(test)]
    fn generation(&self, user_id: i64) -> u64 {
        self.0.lock().map(|inner| inner.generation(user_id)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_of_the_user_makes_the_cached_standing_unusable_and_others_keep_theirs() {
        let cache = StandingCache::default();
        let now = Utc::now();
        for user in [1, 2] {
            let generation = cache.generation(user);
            cache.put(user, generation, now);
        }
        assert!(cache.cached(1) && cache.cached(2));
        cache.changed(1);
        assert!(!cache.cached(1), "user 1 settled: read again");
        assert!(cache.cached(2), "user 2 did not change");
        cache.changed_all();
        assert!(!cache.cached(2));
    }

    #[test]
    fn a_standing_read_while_a_change_committed_is_never_used() {
        let cache = StandingCache::default();
        let now = Utc::now();
        // The generation is taken before the read; the change lands during it.
        let before = cache.generation(7);
        cache.changed(7);
        cache.put(7, before, now);
        assert!(!cache.cached(7));
    }

    #[test]
    fn starting_over_past_the_bound_still_moves_every_generation_forward() {
        let cache = StandingCache::default();
        let old = cache.generation(5);
        if let Ok(mut inner) = cache.0.lock() {
            for user in 0..MAX_USERS as i64 {
                inner.next += 1;
                let generation = inner.next;
                inner.changed.insert(user + 1_000_000, generation);
            }
        }
        cache.changed(9);
        assert!(cache.generation(5) > old, "users forgotten by the start-over count as changed");
        assert!(cache.generation(9) > cache.generation(5));
    }
}
