//! A load level's figures, read from its [`DegradeHandle`].

use ::metrics::{Counter, Gauge};

use super::{names, reporter::Publish};
use crate::degrade::DegradeHandle;

/// A load level's metric handles, registered once.
pub(super) struct DegradeMetrics {
    handle: DegradeHandle,
    level: Gauge,
    transitions: Counter,
    fallbacks: Counter,
}

impl DegradeMetrics {
    pub(super) fn new(layer: &str, handle: &DegradeHandle) -> Self {
        describe();
        Self {
            handle: handle.clone(),
            level: ::metrics::gauge!(names::DEGRADE_LOAD_LEVEL, names::LAYER => layer.to_owned()),
            transitions: ::metrics::counter!(
                names::DEGRADE_TRANSITIONS_TOTAL,
                names::LAYER => layer.to_owned(),
            ),
            fallbacks: ::metrics::counter!(
                names::DEGRADE_FALLBACKS_TOTAL,
                names::LAYER => layer.to_owned(),
            ),
        }
    }
}

impl Publish for DegradeMetrics {
    fn publish(&self) {
        // The snapshot evaluates the level first when an interval has
        // passed, so a level with no requests through it still falls.
        let s = self.handle.snapshot();
        self.level.set(s.level.index() as f64);
        self.transitions.absolute(s.transitions);
        self.fallbacks.absolute(s.fallbacks);
    }
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        names::DEGRADE_LOAD_LEVEL,
        "The load level: 0 normal, 1 elevated, 2 overloaded."
    );
    describe_counter!(
        names::DEGRADE_TRANSITIONS_TOTAL,
        "Changes of the load level."
    );
    describe_counter!(
        names::DEGRADE_FALLBACKS_TOTAL,
        "Requests answered from a fallback."
    );
}
