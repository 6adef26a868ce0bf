//! The GCRA core: governor's algorithm over tokio's clock and the bounded
//! [`Store`], behind a [`Limiter`] whose quota can change at runtime.

use std::{
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use governor::{RateLimiter, middleware::StateInformationMiddleware};
use http::HeaderValue;
use tokio::time::Instant;

pub(crate) use super::store::Store;
use super::{
    clock::{TokioClock, TokioInstant},
    quota::Quota,
    store::View,
};
use crate::sync::StripedCounter;

type Governor<K> = RateLimiter<K, View<K>, TokioClock, StateInformationMiddleware>;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Allowed; this many more calls could pass right now, and with
    /// `want_fields` the fields describing it.
    Allow {
        remaining: u32,
        fields: Option<(HeaderValue, HeaderValue)>,
    },
    /// Refused; the next call conforms after exactly this wait.
    Deny {
        wait: Duration,
        /// The `RateLimit-Policy` field of the quota in force.
        policy: HeaderValue,
    },
}

#[derive(Debug)]
struct Current<K: Hash + Eq + Clone> {
    quota: Quota,
    governor: Governor<K>,
    policy: HeaderValue,
}

impl<K: Hash + Eq + Clone> Current<K> {
    fn new(store: &Arc<Store<K>>, quota: Quota) -> Self {
        Self {
            quota,
            governor: build(store, quota),
            policy: policy_field(&quota),
        }
    }
}

/// `RateLimit-Policy: "default";q=200;w=1`: a structured-field list of one
/// item (draft-ietf-httpapi-ratelimit-headers).
pub(crate) fn policy_field(quota: &Quota) -> HeaderValue {
    let (q, w) = quota.policy();
    HeaderValue::try_from(format!("\"default\";q={q};w={w}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

/// `RateLimit: "default";r=0;t=1`, a structured-field list of one item
/// matching the policy: `r` calls remain now, and `t` seconds (rounded up)
/// pass until the quota is whole again — on a refusal, until the next call
/// conforms (at least 1).
pub(crate) fn current_field(remaining: u32, reset: Duration) -> HeaderValue {
    let t = crate::hint::ceil_secs(reset);
    let t = if remaining == 0 { t.max(1) } else { t };
    HeaderValue::try_from(format!("\"default\";r={remaining};t={t}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

/// A GCRA limiter whose quota can change at runtime without losing state.
///
/// A check writes one shared line, the key's TAT: the quota in force is read
/// through an [`ArcSwap`] (no lock word to bounce between cores), and
/// admissions are counted on per-thread stripes.
#[derive(Debug)]
pub(crate) struct Limiter<K: Hash + Eq + Clone> {
    store: Arc<Store<K>>,
    current: ArcSwap<Current<K>>,
    allowed: StripedCounter,
    limited: AtomicU64,
    /// When the last summary of refusals was logged (nanoseconds since the
    /// store's origin) and the refusal count then.
    #[cfg(feature = "tracing")]
    logged: (AtomicU64, AtomicU64),
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(quota: Quota, store: Store<K>) -> Self {
        let store = Arc::new(store);
        let current = Current::new(&store, quota);
        Self {
            store,
            current: ArcSwap::from_pointee(current),
            allowed: StripedCounter::default(),
            limited: AtomicU64::new(0),
            #[cfg(feature = "tracing")]
            logged: (AtomicU64::new(0), AtomicU64::new(0)),
        }
    }

    /// Under sustained refusals, one summary line per 10 s rather than one
    /// per request: logging must not become load.
    #[cfg(feature = "tracing")]
    fn summarise(&self, now: Instant, quota: &Quota) {
        const EVERY: u64 = 10_000_000_000;
        let at = u64::try_from(now.saturating_duration_since(self.store.origin).as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(EVERY);
        let last = self.logged.0.load(Ordering::Relaxed);
        if (last != 0 && at < last.saturating_add(EVERY))
            || self
                .logged
                .0
                .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let limited = self.limited.load(Ordering::Relaxed);
        let before = self.logged.1.swap(limited, Ordering::Relaxed);
        tracing::info!(
            refused = limited - before,
            rate_per_sec = 1.0 / quota.replenish_interval().as_secs_f64(),
            burst = quota.burst_size(),
            "rate limit refusing requests (count since the last summary)"
        );
    }

    /// Takes one call's worth of quota for `key`, or says how long until it can.
    pub(crate) fn check(&self, key: &K, want_fields: bool) -> Decision {
        let current = self.current.load();
        match current.governor.check_key(key) {
            Ok(snapshot) => {
                self.allowed.add(1);
                let remaining = snapshot.remaining_burst_capacity();
                let fields = want_fields.then(|| {
                    // Until the whole burst is back: one interval per spent
                    // call, an upper bound (never announces too early).
                    let spent = current.quota.burst_size().saturating_sub(remaining);
                    let reset = current.quota.replenish_interval() * spent;
                    (current.policy.clone(), current_field(remaining, reset))
                });
                Decision::Allow { remaining, fields }
            }
            Err(not_until) => {
                self.limited.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                #[cfg(feature = "tracing")]
                self.summarise(now, &current.quota);
                Decision::Deny {
                    wait: not_until.wait_time_from(TokioInstant(now)),
                    policy: current.policy.clone(),
                }
            }
        }
    }

    /// The quota in force.
    pub(crate) fn quota(&self) -> Quota {
        self.current.load().quota
    }

    /// Replaces the quota; each key's history carries over.
    pub(crate) fn set_quota(&self, quota: Quota) {
        self.current
            .store(Arc::new(Current::new(&self.store, quota)));
    }

    /// Requests allowed and refused so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.allowed.sum(), self.limited.load(Ordering::Relaxed))
    }

    pub(crate) fn store(&self) -> &Store<K> {
        &self.store
    }
}

fn build<K: Hash + Eq + Clone>(store: &Arc<Store<K>>, quota: Quota) -> Governor<K> {
    // governor reads its start from the clock as it is built; read it just
    // before, so the offset is exact on a paused clock and within
    // nanoseconds otherwise.
    let offset =
        u64::try_from(Instant::now().duration_since(store.origin).as_nanos()).unwrap_or(u64::MAX);
    let view = View {
        store: Arc::clone(store),
        offset,
    };
    RateLimiter::new(quota.inner, view, TokioClock)
}
