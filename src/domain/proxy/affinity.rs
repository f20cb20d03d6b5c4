//! Session affinity: the turns of one conversation go to the same upstream, so its
//! prompt cache still holds their common prefix (cached input is billed at a tenth of
//! the price: affinity is money for the user and capacity for the operator).
//!
//! The key is what Codex sends on every turn of a session — the `session_id` /
//! `session-id` header, else the body's `prompt_cache_key`, else `x-codex-turn-state`.
//! Among the candidates of the highest priority group, the one with the highest
//! weighted rendezvous score for the key goes first ("highest random weight" hashing:
//! adding or removing an upstream moves only the sessions that score highest on it).
//! The rest of the order is kept, so failover before the first byte is unchanged, and
//! an unhealthy upstream is not a candidate at all (the catalog leaves it out).

use std::sync::Arc;

use axum::http::HeaderMap;

use super::upstreams::Upstream;

/// Headers that name a conversation, in the order they are looked at.
const SESSION_HEADERS: &[&str] = &["session_id", "session-id"];

/// The conversation key of a request, if it has one.
pub fn key<'a>(headers: &'a HeaderMap, prompt_cache_key: Option<&'a str>) -> Option<&'a str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    SESSION_HEADERS
        .iter()
        .find_map(|name| header(name))
        .or(prompt_cache_key.map(str::trim).filter(|k| !k.is_empty()))
        .or_else(|| header("x-codex-turn-state"))
}

/// Puts the preferred upstream for `key` first among the highest-priority candidates;
/// without a key the order is left as it is (weighted random).
pub fn prefer(mut candidates: Vec<Arc<Upstream>>, key: Option<&str>) -> Vec<Arc<Upstream>> {
    let Some(key) = key else { return candidates };
    let Some(top) = candidates.iter().map(|u| u.priority).max() else { return candidates };
    let group_len = candidates.iter().take_while(|u| u.priority == top).count();
    let best = candidates[..group_len].iter().enumerate().map(|(i, u)| (i, score(key, u.id, u.weight))).fold(
        None,
        |best: Option<(usize, f64)>, (i, s)| match best {
            Some((_, b)) if b >= s => best,
            _ => Some((i, s)),
        },
    );
    if let Some((index, _)) = best {
        let chosen = candidates.remove(index);
        candidates.insert(0, chosen);
    }
    candidates
}

/// Weighted rendezvous score: `-weight / ln(h)` with `h` the key's hash with the
/// upstream's id mapped into (0, 1). A weight-2 upstream wins twice as many keys.
fn score(key: &str, upstream_id: i64, weight: i64) -> f64 {
    let h = hash(key, upstream_id);
    // 53 bits give an exact f64 in (0, 1); never 0 or 1, so the logarithm is finite and < 0.
    let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -(weight.max(1) as f64) / unit.ln()
}

/// FNV-1a over the key and the id, then a SplitMix64 finaliser: stable across
/// instances and versions (the std hasher is not guaranteed to be).
fn hash(key: &str, upstream_id: i64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes().iter().chain(&upstream_id.to_le_bytes()) {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(id: i64, priority: i64, weight: i64) -> Arc<Upstream> {
        Arc::new(Upstream { priority, weight, ..Upstream::for_tests(id, "", "") })
    }

    fn first(candidates: Vec<Arc<Upstream>>, key: &str) -> i64 {
        prefer(candidates, Some(key))[0].id
    }

    #[test]
    fn a_key_always_picks_the_same_upstream_whatever_the_incoming_order() {
        let (a, b, c) = (upstream(1, 0, 1), upstream(2, 0, 1), upstream(3, 0, 1));
        for n in 0..50 {
            let key = format!("session-{n}");
            let one = first(vec![a.clone(), b.clone(), c.clone()], &key);
            let two = first(vec![c.clone(), a.clone(), b.clone()], &key);
            assert_eq!(one, two, "{key}");
        }
    }

    #[test]
    fn only_the_highest_priority_group_is_considered_and_the_rest_stays_for_failover() {
        let out = prefer(vec![upstream(1, 5, 1), upstream(2, 5, 1), upstream(3, 0, 100)], Some("k"));
        assert_ne!(out[0].id, 3);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].id, 3, "lower priority stays last");
        let unkeyed = prefer(vec![upstream(2, 5, 1), upstream(1, 5, 1)], None);
        assert_eq!(unkeyed[0].id, 2, "no key: order untouched");
    }

    #[test]
    fn adding_an_upstream_moves_only_the_sessions_it_wins_and_weights_count() {
        let before = vec![upstream(1, 0, 1), upstream(2, 0, 1)];
        let mut after = before.clone();
        after.push(upstream(3, 0, 1));
        let (mut moved, mut to_new) = (0, 0);
        for n in 0..3000 {
            let key = format!("s{n}");
            let (x, y) = (first(before.clone(), &key), first(after.clone(), &key));
            if x != y {
                moved += 1;
                to_new += usize::from(y == 3);
            }
        }
        assert_eq!(moved, to_new, "every moved session moved to the new upstream");
        assert!((800..1200).contains(&moved), "about a third moved: {moved}");
        let weighted = vec![upstream(1, 0, 1), upstream(2, 0, 3)];
        let heavy = (0..4000).filter(|n| first(weighted.clone(), &format!("w{n}")) == 2).count();
        assert!((2800..3200).contains(&heavy), "weight 3 wins about three quarters: {heavy}");
    }

    #[test]
    fn the_key_comes_from_the_session_header_then_the_cache_key_then_the_turn_state() {
        let mut h = HeaderMap::new();
        h.insert("x-codex-turn-state", "ts".parse().unwrap());
        assert_eq!(key(&h, None), Some("ts"));
        assert_eq!(key(&h, Some("pck")), Some("pck"));
        h.insert("session-id", "s2".parse().unwrap());
        assert_eq!(key(&h, Some("pck")), Some("s2"));
        h.insert("session_id", "s1".parse().unwrap());
        assert_eq!(key(&h, Some("pck")), Some("s1"));
        assert_eq!(key(&HeaderMap::new(), Some("  ")), None);
    }
}
