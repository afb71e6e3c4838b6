//! The hub's clock, passed in so tests can move time (STYLE 4: the clock is an argument).
//!
//! Everything that stamps or judges time — the applier's `_kho_*_at` columns, the freshness
//! evaluator, the API's `evaluated_at` — asks a [`Clock`]. Production uses [`SystemClock`]; tests
//! use [`ManualClock`] to walk a dataset through a month in milliseconds.

use std::sync::Mutex;

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;

    /// Now as RFC 3339 UTC with milliseconds, the format of every `_kho_*_at` column.
    fn now_rfc3339(&self) -> String {
        format!("{:.3}", self.now())
    }
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock { now: Mutex::new(start) }
    }

    pub fn set(&self, t: Timestamp) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn advance(&self, by: SignedDuration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(by).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
