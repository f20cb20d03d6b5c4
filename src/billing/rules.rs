//! The pure rules of billing, kept free of I/O so they can be tested exhaustively.

use crate::money::Money;

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

/// Why a request cannot be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Allowance plus balance (minus what running requests hold) does not cover the hold.
    CannotPay { has_package: bool },
    /// The per-user daily spending cap would be exceeded.
    CapReached,
}

/// Inputs of the admission decision, all read under the user's row lock.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionFacts {
    pub hold: Money,
    pub balance: Money,
    /// Sum of holds of requests still running.
    pub held: Money,
    pub daily_limit: Option<Money>,
    pub package_used_today: Money,
    pub spent_today: Money,
    pub daily_cap: Option<Money>,
}

/// Admits when allowance + balance − held covers the hold and the cap allows it.
/// Holds of running requests count against both, so N parallel requests cannot
/// together spend more than the user has plus the N holds' worst-case excess.
pub fn decide(f: &AdmissionFacts) -> Result<(), Refusal> {
    if let Some(cap) = f.daily_cap {
        let committed = f.spent_today.saturating_add(f.held).saturating_add(f.hold);
        if committed > cap {
            return Err(Refusal::CapReached);
        }
    }
    let available =
        remaining_allowance(f.daily_limit, f.package_used_today).saturating_add(f.balance).saturating_sub(f.held);
    if available < f.hold || (f.hold == Money::ZERO && !available.is_positive()) {
        return Err(Refusal::CannotPay { has_package: f.daily_limit.is_some() });
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
            daily_limit: Some(m("1")),
            package_used_today: m("0"),
            spent_today: m("0"),
            daily_cap: None,
        }
    }

    #[test]
    fn allowance_plus_balance_must_cover_the_hold() {
        assert!(decide(&facts()).is_ok());
        let used_up = AdmissionFacts { package_used_today: m("1"), ..facts() };
        assert_eq!(decide(&used_up), Err(Refusal::CannotPay { has_package: true }));
        let with_balance = AdmissionFacts { balance: m("0.10"), ..used_up };
        assert!(decide(&with_balance).is_ok());
        let no_package = AdmissionFacts { daily_limit: None, balance: m("0.05"), ..facts() };
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
        let broke = AdmissionFacts { hold: m("0"), daily_limit: None, ..facts() };
        assert!(decide(&broke).is_err());
    }
}
