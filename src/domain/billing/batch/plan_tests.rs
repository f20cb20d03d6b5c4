use chrono::{DateTime, TimeZone, Utc};

use super::super::facts::{Facts, KeyFacts, UserFacts};
use super::*;
use crate::domain::billing::allowance::Limits;

fn m(units: &str) -> Money {
    Money::parse(units).unwrap()
}

fn calendar() -> BusinessCalendar {
    BusinessCalendar::from_name("Asia/Shanghai").unwrap()
}

fn limits(daily: &str) -> Limits {
    Limits { daily: Some(m(daily).micros()), ..Limits::default() }
}

/// A batch over user 1 (balance `balance`) with key 10, at 2026-01-01 12:00 UTC.
fn plan(balance: &str, package_limit: Option<&str>) -> (Plan, DateTime<Utc>) {
    plan_with(balance, package_limit.map(limits).into_iter().collect())
}

/// As [`plan`], with packages 7, 8, ... (earliest-ending first) of these limits.
fn plan_with(balance: &str, packages: Vec<Limits>) -> (Plan, DateTime<Utc>) {
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let mut facts = Facts::default();
    let user = UserFacts {
        balance: m(balance).micros(),
        held: 0,
        daily_cap: None,
        status: "active".into(),
        role: "user".into(),
        preference: None,
        five_hour_cap: None,
    };
    facts.users.insert(1, user);
    let key = KeyFacts {
        user_id: 1,
        status: "active".into(),
        spend_limit: None,
        spent: 0,
        expires_at: None,
        daily_cap: None,
        max_concurrency: None,
        running: 0,
        running_held: 0,
    };
    facts.keys.insert(10, key);
    for (i, limits) in packages.into_iter().enumerate() {
        let terms = Terms {
            id: 7 + i as i64,
            starts_at: to_micros(now) - 1,
            ends_at: to_micros(now) + 30 * 86_400_000_000 + i as i64,
            limits,
            models: None,
        };
        facts.terms.insert(terms.id, terms.clone());
        facts.packages.entry(1).or_default().push(terms);
    }
    (Plan::new(facts, calendar()), now)
}

fn admit(plan: &mut Plan, now: DateTime<Utc>, hold: &str) -> Result<std::result::Result<Hold, KeyRefusal>> {
    let request = AdmissionRequest { request_id: None, user_id: 1, api_key_id: 10, hold: m(hold) };
    plan.admit(&request, now, &Policy::default(), false)
}

fn usage(id: &str, cost: &str) -> UsageRecord {
    UsageRecord { request_id: id.into(), model: "gpt-5".into(), cost: m(cost), ..UsageRecord::default() }
}

#[test]
fn a_later_admission_in_the_same_batch_sees_the_earlier_hold() {
    let (mut plan, now) = plan("1.00", None);
    assert!(admit(&mut plan, now, "0.60").unwrap().is_ok());
    let refused = admit(&mut plan, now, "0.60").unwrap_err();
    assert_eq!(refused.code(), "insufficient_balance");
    assert!(admit(&mut plan, now, "0.40").unwrap().is_ok());
    assert_eq!(plan.holds.len(), 2);
    assert_eq!(plan.users[&1].held, m("1.00").micros());
}

#[test]
fn a_forced_admission_holds_what_the_rules_refuse_and_says_why() {
    let (mut plan, now) = plan("1.00", None);
    if let Some(key) = plan.facts.keys.get_mut(&10) {
        key.status = "revoked".into();
    }
    let request = AdmissionRequest { request_id: None, user_id: 1, api_key_id: 10, hold: m("3.00") };
    assert!(plan.admit(&request, now, &Policy::default(), false).unwrap().is_err(), "refused when not forced");
    let hold = plan.admit(&request, now, &Policy::default(), true).unwrap().unwrap();
    assert_eq!(hold.refused, Some("api_key_revoked"));
    assert!(hold.headroom.is_negative(), "the hint it would leave is below zero: {:?}", hold.headroom);
    assert_eq!(plan.holds.len(), 1, "the request was already forwarded: it is held and will be charged");
    assert_eq!(plan.users[&1].held, m("3.00").micros());
    if let Some(key) = plan.facts.keys.get_mut(&10) {
        key.status = "active".into();
    }
    let poor = plan.admit(&request, now, &Policy::default(), true).unwrap().unwrap();
    assert_eq!(poor.refused, Some("cannot_pay"));
}

#[test]
fn settlements_in_one_batch_split_across_the_allowance_in_order_and_once() {
    let (mut plan, now) = plan("5.00", Some("1.00"));
    let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
    plan.facts.released.insert(hold.id);
    let first = plan.settle(&hold, &usage("a", "0.70"), now).unwrap();
    let second = plan.settle(&hold, &usage("b", "0.70"), now).unwrap();
    let again = plan.settle(&hold, &usage("a", "0.70"), now).unwrap();
    assert_eq!((first.package, first.balance), (m("0.70"), m("0")));
    assert_eq!((second.package, second.balance, second.balance_after), (m("0.30"), m("0.40"), m("4.60")));
    assert!(!again.applied && again.balance_after == m("4.60"));
    // The hold was released once; the user's row changes by the balance part only.
    assert_eq!(plan.users[&1].balance, -m("0.40").micros());
    assert_eq!(plan.users[&1].held, 0);
    assert_eq!(plan.entries.iter().map(|e| e.amount).sum::<i64>(), -m("0.40").micros());
    assert_eq!(plan.keys[&10].0, m("1.40").micros());
    let day = &plan.days[&(1, "2026-01-01".to_string())];
    assert_eq!((day.package, day.balance, day.requests), (m("1.00").micros(), m("0.40").micros(), 2));
}

#[test]
fn a_duplicate_settlement_still_gives_back_the_hold_the_batch_deleted() {
    let (mut plan, now) = plan("5.00", None);
    let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
    plan.facts.settled.insert("done".into());
    plan.facts.released.insert(hold.id);
    let again = plan.settle(&hold, &usage("done", "0.70"), now).unwrap();
    assert!(!again.applied && again.balance_after == m("5.00"));
    assert_eq!(plan.users[&1].held, 0, "admitted 0.10, released 0.10");
    assert_eq!(plan.users[&1].balance, 0);
    assert!(plan.usage.is_empty() && plan.entries.is_empty());
}

#[test]
fn a_key_over_its_limit_after_an_earlier_charge_of_the_batch_is_refused() {
    let (mut plan, now) = plan("5.00", None);
    if let Some(key) = plan.facts.keys.get_mut(&10) {
        key.spend_limit = Some(m("0.50").micros());
    }
    let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
    plan.settle(&hold, &usage("a", "0.50"), now).unwrap();
    assert_eq!(admit(&mut plan, now, "0.10").unwrap().unwrap_err(), KeyRefusal::SpendLimitReached);
    if let Some(user) = plan.facts.users.get_mut(&1) {
        user.status = "suspended".into();
    }
    if let Some(key) = plan.facts.keys.get_mut(&10) {
        key.spend_limit = None;
    }
    assert_eq!(admit(&mut plan, now, "0.10").unwrap().unwrap_err(), KeyRefusal::UserSuspended);
}

fn used(plan: &Plan, scope: &str, kind: &str) -> i64 {
    plan.windows.iter().filter(|((s, k, _), _)| s == scope && *k == kind).map(|(_, c)| c.used).sum()
}

#[test]
fn every_window_of_the_package_counts_and_the_tightest_one_splits() {
    let five = Limits { five_hour: Some(m("0.50").micros()), weekly: Some(m("3").micros()), ..limits("1") };
    let (mut plan, now) = plan_with("5.00", vec![five]);
    let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
    assert_eq!(hold.blocks, vec![("p:7".to_string(), to_micros(now))], "the first request starts the block");
    assert_eq!(hold.headroom, m("5.40"), "0.50 of the block + 5.00 balance − the hold");
    plan.facts.released.insert(hold.id);
    let s = plan.settle(&hold, &usage("a", "0.70"), now).unwrap();
    assert_eq!((s.package, s.balance), (m("0.50"), m("0.20")), "the block is the tightest window");
    for kind in ["5h", "day", "week"] {
        assert_eq!(used(&plan, "p:7", kind), m("0.50").micros(), "{kind}");
    }
    assert_eq!(used(&plan, "p:7", "month"), 0, "no monthly limit: not tracked");
    // 4:59:59 later the block is still spent; 5:00:00 later a new one starts.
    let late = now + chrono::Duration::seconds(5 * 3600 - 1);
    let next = admit(&mut plan, late, "0.10").unwrap().unwrap();
    assert_eq!(next.blocks[0].1, to_micros(now));
    assert_eq!(next.headroom, m("4.70"), "only the balance is left");
    let fresh = admit(&mut plan, now + chrono::Duration::hours(5), "0.10").unwrap().unwrap();
    assert_eq!(fresh.blocks[0].1, to_micros(now + chrono::Duration::hours(5)));
}

#[test]
fn several_packages_pay_earliest_ending_first_then_the_balance() {
    let (mut plan, now) = plan_with("5.00", vec![limits("1"), limits("2")]);
    let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
    assert_eq!(hold.packages, vec![7, 8]);
    plan.facts.released.insert(hold.id);
    let s = plan.settle(&hold, &usage("a", "3.50"), now).unwrap();
    assert_eq!((s.package, s.balance), (m("3.00"), m("0.50")));
    assert_eq!((used(&plan, "p:7", "day"), used(&plan, "p:8", "day")), (m("1").micros(), m("2").micros()));
    assert_eq!(plan.entries[0].user_package_id, Some(7));
}

#[test]
fn a_package_pays_only_for_its_models() {
    let (mut plan, now) = plan_with("5.00", vec![limits("1")]);
    if let Some(list) = plan.facts.packages.get_mut(&1) {
        list[0].models = Some(vec!["gpt-5-codex".into()]);
    }
    let policy = Policy { model: Some("gpt-5".into()), ..Policy::default() };
    let request = AdmissionRequest { request_id: None, user_id: 1, api_key_id: 10, hold: m("0.10") };
    let hold = plan.admit(&request, now, &policy, false).unwrap().unwrap();
    assert!(hold.packages.is_empty(), "the package does not cover gpt-5");
    assert_eq!(hold.headroom, m("4.90"));
}

#[test]
fn package_only_refuses_an_empty_package_and_never_touches_the_balance() {
    let (mut plan, now) = plan_with("5.00", vec![limits("1")]);
    if let Some(user) = plan.facts.users.get_mut(&1) {
        user.preference = Some("package_only".into());
    }
    let hold = admit(&mut plan, now, "0.50").unwrap().unwrap();
    plan.facts.released.insert(hold.id);
    let s = plan.settle(&hold, &usage("a", "1.20"), now).unwrap();
    assert_eq!((s.package, s.balance), (m("1.20"), m("0")), "the overshoot stays on the package");
    let refused = admit(&mut plan, now, "0.10").unwrap_err();
    assert_eq!(refused.status_code().as_u16(), 429, "{refused}");
    assert!(refused.to_string().contains("2026-01-02T00:00:00+08:00"), "{refused}");
}

#[test]
fn a_key_runs_at_most_its_concurrency_and_a_settlement_frees_a_slot() {
    let (mut plan, now) = plan("5.00", None);
    if let Some(key) = plan.facts.keys.get_mut(&10) {
        key.max_concurrency = Some(1);
    }
    let first = admit(&mut plan, now, "0.10").unwrap().unwrap();
    assert!(first.key_capped);
    let busy = admit(&mut plan, now, "0.10").unwrap_err();
    assert_eq!(busy.status_code().as_u16(), 429);
    plan.facts.released.insert(first.id);
    plan.settle(&first, &usage("a", "0.05"), now).unwrap();
    assert!(admit(&mut plan, now, "0.10").unwrap().is_ok());
}

#[test]
fn the_user_five_hour_cap_counts_every_charge_in_the_block() {
    let (mut plan, now) = plan("5.00", Some("10"));
    if let Some(user) = plan.facts.users.get_mut(&1) {
        user.five_hour_cap = Some(m("1").micros());
    }
    let hold = admit(&mut plan, now, "0.10").unwrap().unwrap();
    plan.facts.released.insert(hold.id);
    plan.settle(&hold, &usage("a", "0.95"), now).unwrap();
    assert_eq!(used(&plan, "u:1", "5h"), m("0.95").micros());
    assert!(admit(&mut plan, now, "0.10").is_err());
    assert!(admit(&mut plan, now + chrono::Duration::hours(5), "0.10").unwrap().is_ok());
}

fn admit_forced(plan: &mut Plan, now: DateTime<Utc>, id: &str, hold: &str) -> Hold {
    let request = AdmissionRequest { request_id: Some(id.into()), user_id: 1, api_key_id: 10, hold: m(hold) };
    plan.admit(&request, now, &Policy::default(), true).unwrap().unwrap()
}

fn settle_by_id(plan: &mut Plan, now: DateTime<Utc>, record: UsageRecord) -> Outcome {
    plan.apply(&Job::SettleAdmitted { user_id: 1, record: Box::new(record), now })
}

#[test]
fn an_admission_settled_in_its_own_batch_writes_no_hold_and_charges_exactly_once() {
    let (mut plan, now) = plan("5.00", Some("1.00"));
    admit_forced(&mut plan, now, "r1", "0.50");
    admit_forced(&mut plan, now, "r2", "0.50");
    let Outcome::Settle(Ok(first)) = settle_by_id(&mut plan, now, usage("r1", "0.70")) else { panic!("not netted") };
    assert_eq!((first.package, first.balance, first.applied), (m("0.70"), m("0"), true));
    // r2 stays open at commit: its hold (and only its) is written and still counted.
    let written: Vec<&str> = plan.holds.iter().filter(|h| !h.netted).map(|h| h.request_id.as_str()).collect();
    assert_eq!(written, ["r2"]);
    assert_eq!(plan.users[&1].held, m("0.50").micros());
    assert_eq!(plan.facts.users[&1].held, m("0.50").micros());
    // One usage row and one ledger entry for r1, the package paid it all.
    assert_eq!(plan.usage.len(), 1);
    assert_eq!(plan.entries.len(), 1);
    assert_eq!(plan.entries[0].reference, "usage:r1");
    assert_eq!(plan.keys[&10].0, m("0.70").micros());
    // The second half lands too: no hold left, the balance pays what the package can't.
    let Outcome::Settle(Ok(second)) = settle_by_id(&mut plan, now, usage("r2", "0.70")) else { panic!("not netted") };
    assert_eq!((second.package, second.balance, second.balance_after), (m("0.30"), m("0.40"), m("4.60")));
    assert!(plan.holds.iter().all(|h| h.netted));
    assert_eq!((plan.users[&1].held, plan.users[&1].balance), (0, -m("0.40").micros()));
    assert_eq!(plan.facts.keys[&10].running_held, 0);
}

#[test]
fn a_settlement_by_request_id_nets_only_a_forced_admission_of_the_batch_and_only_once() {
    let (mut plan, now) = plan("5.00", None);
    assert!(matches!(settle_by_id(&mut plan, now, usage("elsewhere", "0.10")), Outcome::NotNetted));
    // A non-forced admission is answered to a caller who settles against its hold.
    let request = AdmissionRequest { request_id: Some("waited".into()), user_id: 1, api_key_id: 10, hold: m("0.10") };
    plan.admit(&request, now, &Policy::default(), false).unwrap().unwrap();
    assert!(matches!(settle_by_id(&mut plan, now, usage("waited", "0.10")), Outcome::NotNetted));
    admit_forced(&mut plan, now, "r", "0.10");
    assert!(matches!(settle_by_id(&mut plan, now, usage("r", "0.10")), Outcome::Settle(Ok(_))));
    assert!(matches!(settle_by_id(&mut plan, now, usage("r", "0.10")), Outcome::NotNetted));
    assert_eq!(plan.usage.len(), 1, "nothing was written for the misses");
    let written: Vec<&str> = plan.holds.iter().filter(|h| !h.netted).map(|h| h.request_id.as_str()).collect();
    assert_eq!(written, ["waited"]);
}

#[test]
fn a_netted_request_settled_before_charges_nothing_and_leaves_no_hold() {
    let (mut plan, now) = plan("5.00", None);
    plan.facts.settled.insert("replayed".into());
    admit_forced(&mut plan, now, "replayed", "0.10");
    let Outcome::Settle(Ok(again)) = settle_by_id(&mut plan, now, usage("replayed", "0.70")) else {
        panic!("not netted")
    };
    assert!(!again.applied && again.balance_after == m("5.00"));
    assert!(plan.holds.iter().all(|h| h.netted));
    assert_eq!((plan.users[&1].held, plan.users[&1].balance), (0, 0));
    assert!(plan.usage.is_empty() && plan.entries.is_empty());
}
