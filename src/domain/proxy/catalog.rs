//! The in-memory catalog of enabled upstreams and prices the hot path reads, so a
//! request never queries those tables. Reloaded when an admin changes them (this
//! instance at once, via [`Catalog::invalidate`]) and at most every few seconds
//! otherwise (so other instances' changes and health updates propagate).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::RwLock;

use super::codex_models::{self, Catalogue};
use super::pricing::{self, ModelPrice};
use super::upstreams::{self, Upstream};
use crate::foundation::db::Db;
use crate::foundation::error::Result;
use crate::foundation::secrets::SecretBox;

const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// One consistent view of upstreams and prices.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Enabled upstreams only.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Enabled prices by model.
    pub prices: HashMap<String, ModelPrice>,
    /// Codex's model catalogue of these prices and its ETag, built with the snapshot so
    /// `/v1/models` and the `x-models-etag` header of every Responses answer only clone it.
    pub codex: Catalogue,
}

impl Snapshot {
    /// Upstreams to try for `model`, in order: healthy ones first when any exist
    /// (unhealthy ones are tried only when no healthy one serves the model); higher
    /// priority groups first; weighted random order within a group.
    pub fn candidates(&self, model: &str, rng: &mut impl Rng) -> Vec<Arc<Upstream>> {
        let serving: Vec<&Arc<Upstream>> = self.upstreams.iter().filter(|u| u.serves(model)).collect();
        let healthy: Vec<&Arc<Upstream>> = serving.iter().copied().filter(|u| u.healthy).collect();
        let pool = if healthy.is_empty() { serving } else { healthy };
        order(pool, rng)
    }
}

/// Priority groups high to low; within a group, weighted sampling without replacement.
fn order(mut pool: Vec<&Arc<Upstream>>, rng: &mut impl Rng) -> Vec<Arc<Upstream>> {
    pool.sort_by_key(|u| std::cmp::Reverse(u.priority));
    let mut ordered = Vec::with_capacity(pool.len());
    let mut start = 0;
    while start < pool.len() {
        let priority = pool[start].priority;
        let end = pool[start..].iter().position(|u| u.priority != priority).map_or(pool.len(), |i| start + i);
        let mut group: Vec<&Arc<Upstream>> = pool[start..end].to_vec();
        while !group.is_empty() {
            let total: i64 = group.iter().map(|u| u.weight.max(1)).sum();
            let mut pick = rng.gen_range(0..total);
            let index = group
                .iter()
                .position(|u| {
                    let w = u.weight.max(1);
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            ordered.push(group.remove(index).clone());
        }
        start = end;
    }
    ordered
}

/// Shared, cached catalog (cheap to clone).
#[derive(Clone)]
pub struct Catalog {
    db: Db,
    secrets: SecretBox,
    /// The operator's Codex agent prompt (the catalogue's `base_instructions`).
    instructions: Option<Arc<str>>,
    cache: Arc<RwLock<(Arc<Snapshot>, Instant)>>,
    stale: Arc<AtomicBool>,
}

impl Catalog {
    /// Loads the catalog once at start-up (`instructions`: the Codex agent prompt the
    /// catalogue carries, [`crate::foundation::config::Config::codex_instructions`]).
    pub async fn load(db: Db, secrets: SecretBox, instructions: Option<Arc<str>>) -> Result<Self> {
        let snapshot = read(&db, &secrets, instructions.as_deref()).await?;
        Ok(Catalog {
            db,
            secrets,
            instructions,
            cache: Arc::new(RwLock::new((Arc::new(snapshot), Instant::now()))),
            stale: Arc::default(),
        })
    }

    /// The current snapshot, reloaded when invalidated or older than a few seconds.
    /// If the reload fails, the previous snapshot keeps serving.
    pub async fn get(&self) -> Arc<Snapshot> {
        {
            let guard = self.cache.read().await;
            if guard.1.elapsed() < REFRESH_EVERY && !self.stale.load(Ordering::Acquire) {
                return guard.0.clone();
            }
        }
        let mut guard = self.cache.write().await;
        if guard.1.elapsed() < REFRESH_EVERY && !self.stale.load(Ordering::Acquire) {
            return guard.0.clone();
        }
        self.stale.store(false, Ordering::Release);
        match read(&self.db, &self.secrets, self.instructions.as_deref()).await {
            Ok(fresh) => *guard = (Arc::new(fresh), Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload upstreams and prices; serving the previous copy");
                guard.1 = Instant::now();
            }
        }
        guard.0.clone()
    }

    /// Makes the next [`Catalog::get`] reload, here and on every other instance
    /// (after admin writes and health changes).
    pub fn invalidate(&self) {
        self.invalidate_local();
        crate::foundation::cluster::publish_later(&self.db, crate::foundation::cluster::Topic::Catalog);
    }

    /// Makes this process's next [`Catalog::get`] reload (another instance changed it).
    pub fn invalidate_local(&self) {
        self.stale.store(true, Ordering::Release);
    }
}

async fn read(db: &Db, secrets: &SecretBox, instructions: Option<&str>) -> Result<Snapshot> {
    // During an outage the previous copy serves without waiting for the pool.
    db.available()?;
    let upstreams = upstreams::list(db, secrets).await?.into_iter().filter(|u| u.enabled).map(Arc::new).collect();
    let prices: HashMap<String, ModelPrice> =
        pricing::list(db).await?.into_iter().filter(|p| p.enabled).map(|p| (p.model.clone(), p)).collect();
    let mut names: Vec<&str> = prices.keys().map(String::as_str).collect();
    names.sort_unstable();
    let codex = codex_models::catalogue(&names, instructions);
    Ok(Snapshot { upstreams, prices, codex })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use secrecy::SecretString;

    fn upstream(id: i64, priority: i64, weight: i64, healthy: bool, models: Option<&[&str]>) -> Arc<Upstream> {
        Arc::new(Upstream {
            id,
            name: format!("u{id}"),
            base_url: "http://x/v1".into(),
            api_key: SecretString::from("k"),
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            model_map: None,
            priority,
            weight,
            enabled: true,
            healthy,
            consecutive_failures: 0,
            last_error: None,
            last_checked_at: None,
            created_at: 0,
            updated_at: 0,
        })
    }

    fn ids(list: &[Arc<Upstream>]) -> Vec<i64> {
        list.iter().map(|u| u.id).collect()
    }

    #[test]
    fn higher_priority_groups_come_first_and_models_filter() {
        let snapshot = Snapshot {
            upstreams: vec![
                upstream(1, 0, 1, true, None),
                upstream(2, 10, 1, true, Some(&["gpt-5"])),
                upstream(3, 5, 1, true, Some(&["other"])),
            ],
            prices: HashMap::new(),
            codex: Catalogue::default(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(ids(&snapshot.candidates("gpt-5", &mut rng)), vec![2, 1]);
        assert_eq!(ids(&snapshot.candidates("other", &mut rng)), vec![3, 1]);
    }

    #[test]
    fn unhealthy_upstreams_are_skipped_unless_none_is_healthy() {
        let mut snapshot = Snapshot {
            upstreams: vec![upstream(1, 10, 1, false, None), upstream(2, 0, 1, true, None)],
            prices: HashMap::new(),
            codex: Catalogue::default(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(ids(&snapshot.candidates("m", &mut rng)), vec![2]);
        snapshot.upstreams = vec![upstream(1, 10, 1, false, None), upstream(2, 0, 1, false, None)];
        assert_eq!(ids(&snapshot.candidates("m", &mut rng)), vec![1, 2]);
    }

    #[test]
    fn weights_share_the_first_pick_within_a_group() {
        let snapshot = Snapshot {
            upstreams: vec![upstream(1, 0, 3, true, None), upstream(2, 0, 1, true, None)],
            prices: HashMap::new(),
            codex: Catalogue::default(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let firsts = (0..4000).filter(|_| snapshot.candidates("m", &mut rng)[0].id == 1).count();
        // Expected 3000 of 4000; allow sampling noise.
        assert!((2800..3200).contains(&firsts), "{firsts}");
        assert_eq!(snapshot.candidates("m", &mut rng).len(), 2);
    }
}
