//! A shedder's figures, read from its [`ShedHandle`].

use ::metrics::{Counter, Gauge, Unit};

use super::{names, reporter::Publish};
use crate::{
    Priority,
    shed::{ModeStats, ShedHandle},
};

/// A shedder's metric handles, registered once.
pub(super) struct ShedMetrics {
    handle: ShedHandle,
    /// By [`Priority::index`].
    admitted: [Counter; 4],
    /// By [`Priority::index`].
    rejected: [Counter; 4],
    bypassed: Counter,
    in_flight: Gauge,
    /// Only in adaptive mode: static thresholds have no level.
    level: Option<Gauge>,
    retry_after: Gauge,
}

impl ShedMetrics {
    pub(super) fn new(layer: &str, handle: &ShedHandle) -> Self {
        describe();
        let by_priority = |name: &'static str| {
            Priority::ALL.map(|p| {
                ::metrics::counter!(name, names::LAYER => layer.to_owned(), names::PRIORITY => p.as_str())
            })
        };
        let gauge = |name: &'static str| ::metrics::gauge!(name, names::LAYER => layer.to_owned());
        Self {
            handle: handle.clone(),
            admitted: by_priority(names::SHED_ADMITTED_TOTAL),
            rejected: by_priority(names::SHED_REJECTED_TOTAL),
            bypassed: ::metrics::counter!(names::SHED_BYPASSED_TOTAL, names::LAYER => layer.to_owned()),
            in_flight: gauge(names::SHED_IN_FLIGHT),
            level: handle.level().map(|_| gauge(names::SHED_ADMISSION_LEVEL)),
            retry_after: gauge(names::SHED_RETRY_AFTER_SECONDS),
        }
    }
}

impl Publish for ShedMetrics {
    fn publish(&self) {
        let s = self.handle.snapshot();
        for p in Priority::ALL {
            self.admitted[p.index()].absolute(s.admitted.get(p));
            self.rejected[p.index()].absolute(s.shed.get(p));
        }
        self.bypassed.absolute(s.bypassed);
        self.in_flight.set(s.in_flight as f64);
        if let (Some(gauge), ModeStats::Adaptive { level, .. }) = (&self.level, s.mode) {
            gauge.set(f64::from(level));
        }
        self.retry_after.set(s.retry_after_ms as f64 / 1000.0);
    }
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_counter!(names::SHED_ADMITTED_TOTAL, "Requests the shedder admitted.");
    describe_counter!(names::SHED_REJECTED_TOTAL, "Requests the shedder refused.");
    describe_counter!(
        names::SHED_BYPASSED_TOTAL,
        "Requests that bypassed the shedder (health checks, stats, scrapes)."
    );
    describe_gauge!(
        names::SHED_IN_FLIGHT,
        "Requests the shedder admitted that have not finished."
    );
    describe_gauge!(
        names::SHED_ADMISSION_LEVEL,
        "The adaptive admission level: how many of the 512 (priority, cohort) slots are admitted."
    );
    describe_gauge!(
        names::SHED_RETRY_AFTER_SECONDS,
        Unit::Seconds,
        "The last retry hint the shedder sent."
    );
}
