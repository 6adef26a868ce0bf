//! A rate limit's figures, read from its [`RateLimitHandle`].

use std::hash::Hash;

use ::metrics::{Counter, Gauge};

use super::{names, reporter::Publish};
use crate::rate::RateLimitHandle;

/// A rate limit's metric handles, registered once.
pub(super) struct RateMetrics<K: Hash + Eq + Clone> {
    handle: RateLimitHandle<K>,
    admitted: Counter,
    rejected: Counter,
    keys: Gauge,
}

impl<K: Hash + Eq + Clone> RateMetrics<K> {
    pub(super) fn new(layer: &str, handle: &RateLimitHandle<K>) -> Self {
        describe();
        Self {
            handle: handle.clone(),
            admitted: ::metrics::counter!(names::RATE_ADMITTED_TOTAL, names::LAYER => layer.to_owned()),
            rejected: ::metrics::counter!(names::RATE_REJECTED_TOTAL, names::LAYER => layer.to_owned()),
            keys: ::metrics::gauge!(names::RATE_KEYS, names::LAYER => layer.to_owned()),
        }
    }
}

impl<K: Hash + Eq + Clone> Publish for RateMetrics<K>
where
    RateLimitHandle<K>: Send + Sync,
{
    fn publish(&self) {
        let s = self.handle.snapshot();
        self.admitted.absolute(s.allowed);
        self.rejected.absolute(s.limited);
        self.keys.set(s.keys as f64);
    }
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_counter!(names::RATE_ADMITTED_TOTAL, "Requests within the quota.");
    describe_counter!(
        names::RATE_REJECTED_TOTAL,
        "Requests refused over the quota."
    );
    describe_gauge!(names::RATE_KEYS, "Keys remembered (1 for a global limit).");
}
