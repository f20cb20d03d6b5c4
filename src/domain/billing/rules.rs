//! The pure rules of billing, kept free of I/O so they can be tested exhaustively.

use crate::foundation::money::Money;

/// How one charge divides between today's package allowance and the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub package: Money,
    pub balance: Money,
}

/// Package first, then balance: as much of `cost` as today's remaining allowance
/// covers comes from the package, the rest from the balance.
pub fn split_charge(cost: Money, daily_limit: Option<Money>, used_today: Money) -> Split {
    let remaining = remaining_allowance(daily_limit, used_today);
    let package = cost.min(remaining).max(Money::ZERO);
    Split { package, balance: cost.saturating_sub(package) }
}

/// What is left of today's allowance (zero without a package, never negative).
pub fn remaining_allowance(daily_limit: Option<Money>, used_today: Money) -> Money {
    match daily_limit {
        Some(limit) => limit.saturating_sub(used_today).max(Money::ZERO),
        None => Money::ZERO,
    }
}

// `Preference` is defined with the settings (whose default it is), so `settings` needs
// nothing from `billing`; it is used here as before.
pub use crate::domain::settings::Preference;

/// How one charge divides between the packages in force (earliest-ending first) and
/// the balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSplit {
    /// What each package pays, in the order of the rooms given.
    pub packages: Vec<Money>,
    pub balance: Money,
}

impl PlanSplit {
    /// The part all packages pay together.
    pub fn package_total(&self) -> Money {
        self.packages.iter().fold(Money::ZERO, |sum, part| sum.saturating_add(*part))
    }
}

/// Splits `cost` over the packages' rooms (what the tightest window of each has left)
/// and the balance, in the user's order. A served request is never refused at
/// settlement: what neither covers comes from the balance, except under
/// `package_only`, where it is counted on the first package beyond its windows (the
/// balance is not touched; the overshoot is bounded by the request's cost over its hold).
pub fn split_plan(cost: Money, rooms: &[Money], balance: Money, preference: Preference) -> PlanSplit {
    let mut packages = vec![Money::ZERO; rooms.len()];
    let mut left = cost.max(Money::ZERO);
    let mut from_balance = Money::ZERO;
    if preference == Preference::BalanceFirst {
        from_balance = left.min(balance.max(Money::ZERO));
        left = left.saturating_sub(from_balance);
    }
    if preference != Preference::BalanceOnly {
        for (part, room) in packages.iter_mut().zip(rooms) {
            *part = left.min((*room).max(Money::ZERO));
            left = left.saturating_sub(*part);
        }
    }
    match packages.first_mut() {
        Some(first) if preference == Preference::PackageOnly => *first = first.saturating_add(left),
        _ => from_balance = from_balance.saturating_add(left),
    }
    PlanSplit { packages, balance: from_balance }
}

/// Why a request cannot be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Allowance plus balance (minus what running requests hold) does not cover the hold.
    CannotPay { has_package: bool },
    /// The per-user daily spending cap would be exceeded.
    CapReached,
    /// `package_only`, and no package has room for the hold (or none is in force).
    PackageExhausted,
    /// The user's 5-hour spending cap would be exceeded.
    BlockCapReached,
    /// The key's own daily USD cap would be exceeded.
    KeyCapReached,
    /// The key already runs as many requests as it may.
    KeyBusy,
}

impl Refusal {
    /// The short name used in metrics and on forced admissions.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::CannotPay { .. } => "cannot_pay",
            Refusal::CapReached => "cap_reached",
            Refusal::PackageExhausted => "package_exhausted",
            Refusal::BlockCapReached => "five_hour_cap_reached",
            Refusal::KeyCapReached => "key_daily_cap_reached",
            Refusal::KeyBusy => "key_concurrency_reached",
        }
    }
}

/// A spending cap and what already counts against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub limit: Money,
    /// Settled spend in the cap's window.
    pub spent: Money,
    /// Holds of running requests that count against it.
    pub held: Money,
}

impl Cap {
    /// What may still be held under the cap (negative when over).
    pub fn left(&self) -> Money {
        self.limit.saturating_sub(self.spent).saturating_sub(self.held)
    }
}

/// Inputs of the admission decision, all read under the user's row lock.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionFacts {
    pub hold: Money,
    pub balance: Money,
    /// Sum of holds of requests still running.
    pub held: Money,
    /// What the packages in force can still pay (each package's tightest window,
    /// summed); `None` without a package.
    pub package_room: Option<Money>,
    pub preference: Preference,
    pub spent_today: Money,
    pub daily_cap: Option<Money>,
    /// The user's 5-hour cap, if any.
    pub block_cap: Option<Cap>,
    /// The key's daily cap, if any.
    pub key_cap: Option<Cap>,
    /// The key's running requests and the most it may run (`None` = no limit).
    pub key_running: i64,
    pub key_concurrency: Option<i64>,
}

impl AdmissionFacts {
    /// What may pay for requests under the user's preference, minus what running
    /// requests hold.
    pub fn available(&self) -> Money {
        funds_available(self.preference, self.package_room, self.balance, self.held)
    }

    /// What could still be admitted after this hold: the funds left and every cap's
    /// room, whichever is least (the hint the fast path admits on).
    pub fn headroom(&self) -> Money {
        let mut room = self.available();
        if let Some(cap) = self.daily_cap {
            room = room.min(cap.saturating_sub(self.spent_today).saturating_sub(self.held));
        }
        for cap in [self.block_cap, self.key_cap].into_iter().flatten() {
            room = room.min(cap.left());
        }
        room.saturating_sub(self.hold)
    }
}

/// What may pay for requests under `preference` (package room and/or balance) minus
/// what running requests hold: the one figure admission compares a request's hold with,
/// shared with the dashboard so the page shows what the gateway admits against.
pub fn funds_available(preference: Preference, package_room: Option<Money>, balance: Money, held: Money) -> Money {
    let room = package_room.unwrap_or(Money::ZERO);
    let funds = match preference {
        Preference::PackageFirst | Preference::BalanceFirst => room.saturating_add(balance),
        Preference::PackageOnly => room,
        Preference::BalanceOnly => balance,
    };
    funds.saturating_sub(held)
}

/// Admits when the funds the preference allows (allowance of every window + balance −
/// held) cover the hold and every cap allows it. Holds of running requests count
/// against both, so N parallel requests cannot together spend more than the user has
/// plus the N holds' worst-case excess.
pub fn decide(f: &AdmissionFacts) -> Result<(), Refusal> {
    if let Some(cap) = f.daily_cap {
        let committed = f.spent_today.saturating_add(f.held).saturating_add(f.hold);
        if committed > cap {
            return Err(Refusal::CapReached);
        }
    }
    if f.block_cap.is_some_and(|cap| cap.left() < f.hold) {
        return Err(Refusal::BlockCapReached);
    }
    if f.key_cap.is_some_and(|cap| cap.left() < f.hold) {
        return Err(Refusal::KeyCapReached);
    }
    if f.key_concurrency.is_some_and(|max| f.key_running >= max) {
        return Err(Refusal::KeyBusy);
    }
    let available = f.available();
    if available < f.hold || (f.hold == Money::ZERO && !available.is_positive()) {
        return Err(match f.preference {
            Preference::PackageOnly => Refusal::PackageExhausted,
            Preference::BalanceOnly => Refusal::CannotPay { has_package: false },
            _ => Refusal::CannotPay { has_package: f.package_room.is_some() },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(units: &str) -> Money {
        Money::parse(units).unwrap()
    }

    #[test]
    fn the_whole_cost_comes_from_the_package_while_it_lasts() {
        assert_eq!(split_charge(m("1"), Some(m("5")), m("3")), Split { package: m("1"), balance: m("0") });
    }

    #[test]
    fn a_charge_splits_exactly_at_the_allowance() {
        assert_eq!(split_charge(m("1"), Some(m("5")), m("4.5")), Split { package: m("0.5"), balance: m("0.5") });
        assert_eq!(split_charge(m("0.5"), Some(m("5")), m("4.5")), Split { package: m("0.5"), balance: m("0") });
        assert_eq!(
            split_charge(m("0.000001"), Some(m("5")), m("5")),
            Split { package: m("0"), balance: m("0.000001") }
        );
    }

    #[test]
    fn without_a_package_the_balance_pays() {
        assert_eq!(split_charge(m("2"), None, m("0")), Split { package: m("0"), balance: m("2") });
    }

    #[test]
    fn overused_allowance_never_goes_negative() {
        assert_eq!(split_charge(m("1"), Some(m("5")), m("7")), Split { package: m("0"), balance: m("1") });
        assert_eq!(remaining_allowance(Some(m("5")), m("7")), Money::ZERO);
    }

    fn facts() -> AdmissionFacts {
        AdmissionFacts {
            hold: m("0.10"),
            balance: m("0"),
            held: m("0"),
            package_room: Some(m("1")),
            preference: Preference::PackageFirst,
            spent_today: m("0"),
            daily_cap: None,
            block_cap: None,
            key_cap: None,
            key_running: 0,
            key_concurrency: None,
        }
    }

    #[test]
    fn allowance_plus_balance_must_cover_the_hold() {
        assert!(decide(&facts()).is_ok());
        let used_up = AdmissionFacts { package_room: Some(m("0")), ..facts() };
        assert_eq!(decide(&used_up), Err(Refusal::CannotPay { has_package: true }));
        let with_balance = AdmissionFacts { balance: m("0.10"), ..used_up };
        assert!(decide(&with_balance).is_ok());
        let no_package = AdmissionFacts { package_room: None, balance: m("0.05"), ..facts() };
        assert_eq!(decide(&no_package), Err(Refusal::CannotPay { has_package: false }));
    }

    #[test]
    fn running_requests_hold_their_share() {
        let busy = AdmissionFacts { held: m("0.95"), ..facts() };
        assert_eq!(decide(&busy), Err(Refusal::CannotPay { has_package: true }));
        let room = AdmissionFacts { held: m("0.90"), ..facts() };
        assert!(decide(&room).is_ok());
    }

    #[test]
    fn the_daily_cap_counts_spend_and_holds() {
        let capped = AdmissionFacts { daily_cap: Some(m("1")), spent_today: m("0.95"), balance: m("10"), ..facts() };
        assert_eq!(decide(&capped), Err(Refusal::CapReached));
        let fits = AdmissionFacts { spent_today: m("0.90"), ..capped };
        assert!(decide(&fits).is_ok());
    }

    #[test]
    fn a_zero_hold_still_needs_something_to_pay_with() {
        let broke = AdmissionFacts { hold: m("0"), package_room: None, ..facts() };
        assert!(decide(&broke).is_err());
    }

    #[test]
    fn the_preference_orders_who_pays() {
        let rooms = [m("1"), m("2")];
        let split = |cost: &str, balance: &str, p| split_plan(m(cost), &rooms, m(balance), p);
        let pf = split("2.5", "10", Preference::PackageFirst);
        assert_eq!((pf.packages.clone(), pf.balance), (vec![m("1"), m("1.5")], m("0")));
        assert_eq!(split("4", "10", Preference::PackageFirst).balance, m("1"));
        let bf = split("2.5", "1", Preference::BalanceFirst);
        assert_eq!((bf.packages.clone(), bf.balance), (vec![m("1"), m("0.5")], m("1")));
        assert_eq!(split("2.5", "-1", Preference::BalanceFirst).balance, m("0"));
        let po = split("4", "10", Preference::PackageOnly);
        assert_eq!((po.packages.clone(), po.balance), (vec![m("2"), m("2")], m("0")), "overshoot on the first");
        let bo = split("4", "1", Preference::BalanceOnly);
        assert_eq!((bo.packages.clone(), bo.balance), (vec![m("0"), m("0")], m("4")));
        assert_eq!(split_plan(m("1"), &[], m("0"), Preference::PackageOnly).balance, m("1"));
        assert_eq!(pf.package_total(), m("2.5"));
    }

    #[test]
    fn the_seed_split_is_package_first_over_one_room() {
        for (cost, used) in [("1", "3"), ("1", "4.5"), ("0.000001", "5"), ("1", "7")] {
            let seed = split_charge(m(cost), Some(m("5")), m(used));
            let plan =
                split_plan(m(cost), &[remaining_allowance(Some(m("5")), m(used))], m("0"), Preference::PackageFirst);
            assert_eq!((plan.packages[0], plan.balance), (seed.package, seed.balance));
        }
    }

    #[test]
    fn package_only_refuses_without_room_and_balance_only_ignores_the_package() {
        let only = AdmissionFacts { preference: Preference::PackageOnly, balance: m("100"), ..facts() };
        assert!(decide(&only).is_ok());
        let empty = AdmissionFacts { package_room: Some(m("0.05")), ..only };
        assert_eq!(decide(&empty), Err(Refusal::PackageExhausted));
        let none = AdmissionFacts { package_room: None, ..only };
        assert_eq!(decide(&none), Err(Refusal::PackageExhausted));
        let wallet = AdmissionFacts { preference: Preference::BalanceOnly, ..facts() };
        assert_eq!(decide(&wallet), Err(Refusal::CannotPay { has_package: false }));
        assert!(decide(&AdmissionFacts { balance: m("0.10"), ..wallet }).is_ok());
    }

    #[test]
    fn caps_of_the_block_and_the_key_and_the_key_concurrency_refuse() {
        let cap = |spent: &str| Some(Cap { limit: m("1"), spent: m(spent), held: m("0") });
        let block = AdmissionFacts { block_cap: cap("0.95"), balance: m("5"), ..facts() };
        assert_eq!(decide(&block), Err(Refusal::BlockCapReached));
        assert!(decide(&AdmissionFacts { block_cap: cap("0.90"), ..block }).is_ok());
        let key = AdmissionFacts { key_cap: cap("0.91"), ..facts() };
        assert_eq!(decide(&key), Err(Refusal::KeyCapReached));
        let busy = AdmissionFacts { key_running: 2, key_concurrency: Some(2), ..facts() };
        assert_eq!(decide(&busy), Err(Refusal::KeyBusy));
        assert!(decide(&AdmissionFacts { key_running: 1, ..busy }).is_ok());
    }

    #[test]
    fn the_hint_never_exceeds_any_window_or_cap() {
        // Whatever the facts, a request admitted on the hint (hold ≤ headroom) is one
        // the rules admit, and the hint is never more than the tightest window, cap or funds leave.
        let rooms = ["0", "0.3", "1", "7"];
        for room in rooms {
            for balance in ["0", "0.5", "3"] {
                for p in Preference::ALL {
                    for block in [None, Some("0.2"), Some("0.8")] {
                        let f = AdmissionFacts {
                            package_room: Some(m(room)),
                            balance: m(balance),
                            held: m("0.1"),
                            preference: p,
                            block_cap: block.map(|s| Cap { limit: m("1"), spent: m(s), held: m("0.1") }),
                            daily_cap: Some(m("5")),
                            ..facts()
                        };
                        let hint = f.headroom();
                        assert!(hint <= f.available().saturating_sub(f.hold));
                        if let Some(cap) = f.block_cap {
                            assert!(hint <= cap.left().saturating_sub(f.hold));
                        }
                        if hint.is_positive() {
                            let next = AdmissionFacts { hold: hint, held: f.held.saturating_add(f.hold), ..f };
                            let next = AdmissionFacts {
                                block_cap: next.block_cap.map(|c| Cap { held: c.held.saturating_add(f.hold), ..c }),
                                ..next
                            };
                            assert!(decide(&next).is_ok(), "hint {hint:?} for {f:?}");
                        }
                    }
                }
            }
        }
    }
}
