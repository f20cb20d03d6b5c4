//! What a domain operation that reads and writes the database "now" is handed by its
//! caller (a surface, a job): the database, the clock and calendar, the run-time settings,
//! the outgoing HTTP client (the payment gateway), the billing writer and the task tracker.
//! A small struct of borrows instead of the application state, so a domain function's
//! dependencies are in its signature and the domain never names `runtime::state`.

use chrono::{DateTime, Utc};
use tokio_util::task::TaskTracker;

use super::writer::BillingWriter;
use crate::domain::settings::SettingsStore;
use crate::foundation::clock::{BusinessCalendar, Clock};
use crate::foundation::db::Db;

/// The narrow parts of the running service a domain function uses; cheap to copy.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub db: &'a Db,
    /// Real or fake (tests); read through [`Env::now`].
    pub clock: &'a dyn Clock,
    /// The business day and every window.
    pub calendar: &'a BusinessCalendar,
    pub settings: &'a SettingsStore,
    /// The one outgoing HTTP client (payment gateway queries and refunds).
    pub http: &'a reqwest::Client,
    /// Runs admissions and settlements, batched per transaction; holds the headroom hints.
    pub billing: &'a BillingWriter,
    /// Work that must finish even if the caller goes away; closed at shutdown.
    pub tasks: &'a TaskTracker,
}

impl<'a> Env<'a> {
    /// The current instant of the clock (the fake one in tests).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The business calendar (the one place that decides what "today" is).
    pub fn calendar(&self) -> &'a BusinessCalendar {
        self.calendar
    }
}
