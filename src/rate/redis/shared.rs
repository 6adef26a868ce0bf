//! What the services, the handle and the worker of one Redis-backed limit
//! share: the fleet's quota, whether the limit is in fallback, and the
//! counts.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::sync::Notify;

use super::{Fallback, RedisOptions};
use crate::{
    rate::{Quota, gcra::policy_field},
    sync::{StripedCounter, lock},
};

/// Timed-out checks in a row that put the limit in fallback: one check late
/// on a loaded machine is a hiccup, three in a row a slow Redis.
const TIMEOUTS_TO_FALLBACK: u32 = 3;

/// The quota the fleet shares, with its `RateLimit-Policy` field.
#[derive(Debug)]
pub(crate) struct FleetQuota {
    pub(crate) quota: Quota,
    pub(crate) policy: HeaderValue,
}

impl FleetQuota {
    fn new(quota: Quota) -> Self {
        Self {
            quota,
            policy: policy_field(&quota),
        }
    }
}

/// Why the limit stopped asking Redis.
#[derive(Debug, Clone, Copy)]
pub(super) enum Cause {
    /// Checks took longer than the timeout.
    Timeout,
    /// Redis answered with an error, or could not be reached.
    Error,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) prefix: String,
    pub(super) timeout: Duration,
    pub(super) probe_interval: Duration,
    pub(super) fallback_policy: Fallback,
    /// How many instances the fallback divides the quota among: as set, or
    /// as last counted in Redis.
    instances: AtomicU32,
    /// Whether `instances` follows the count in Redis.
    counts_instances: bool,
    /// This instance's name in the count, drawn at random.
    pub(super) id: String,
    fleet: ArcSwap<FleetQuota>,
    /// A quota set through the handle that Redis has not confirmed yet.
    pending: Mutex<Option<Quota>>,
    /// Wakes the worker while no check comes: to publish a pending quota,
    /// or to start probing.
    pub(super) wake: Notify,
    fallback: AtomicBool,
    /// A probe passed (connected, script loaded) and no command failed since.
    connected: AtomicBool,
    timeouts_in_a_row: AtomicU32,
    allowed: StripedCounter,
    limited: AtomicU64,
    redis_checks: StripedCounter,
    fallback_checks: AtomicU64,
    fallback_entries: AtomicU64,
    timeouts: AtomicU64,
    redis_errors: AtomicU64,
}

impl Shared {
    pub(super) fn new(quota: Quota, options: &RedisOptions) -> Self {
        Self {
            prefix: options.prefix.clone(),
            timeout: options.timeout,
            probe_interval: options.probe_interval,
            fallback_policy: options.fallback,
            instances: AtomicU32::new(options.instances.unwrap_or(1)),
            counts_instances: options.instances.is_none(),
            id: format!("{:016x}", fastrand::u64(..)),
            fleet: ArcSwap::from_pointee(FleetQuota::new(quota)),
            pending: Mutex::new(None),
            wake: Notify::new(),
            fallback: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            timeouts_in_a_row: AtomicU32::new(0),
            allowed: StripedCounter::default(),
            limited: AtomicU64::new(0),
            redis_checks: StripedCounter::default(),
            fallback_checks: AtomicU64::new(0),
            fallback_entries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            redis_errors: AtomicU64::new(0),
        }
    }

    pub(crate) fn fleet(&self) -> arc_swap::Guard<Arc<FleetQuota>> {
        self.fleet.load()
    }

    /// The quota this instance falls back to: its share of the fleet's.
    pub(crate) fn share(&self, quota: &Quota) -> Quota {
        quota.share(self.instances.load(Ordering::Relaxed))
    }

    /// Redis counted `instances` instances (this one among them): the
    /// share follows unless the count was set. Returns whether it changed.
    pub(super) fn counted(&self, instances: u32) -> bool {
        if !self.counts_instances {
            return false;
        }
        let instances = instances.max(1);
        let changed = self.instances.swap(instances, Ordering::Relaxed) != instances;
        #[cfg(feature = "tracing")]
        if changed {
            tracing::info!(
                prefix = %self.prefix,
                instances,
                "shared rate limit: the fleet's count of instances changed"
            );
        }
        changed
    }

    /// A quota set here: in force at once on this instance, and published
    /// to Redis by the worker (retried until Redis confirms it).
    pub(crate) fn publish(&self, quota: Quota) {
        self.fleet.store(Arc::new(FleetQuota::new(quota)));
        *lock(&self.pending) = Some(quota);
        self.wake.notify_one();
    }

    pub(super) fn pending(&self) -> Option<Quota> {
        *lock(&self.pending)
    }

    /// Redis holds `written`: it is no longer pending unless another quota
    /// was set since.
    pub(super) fn confirm(&self, written: Quota) {
        let mut pending = lock(&self.pending);
        if *pending == Some(written) {
            *pending = None;
        }
    }

    /// The quota Redis holds, read back: another instance may have set it.
    /// Ignored while a quota set here is on its way, which it would undo.
    /// Returns whether it changed the quota in force.
    pub(super) fn adopt(&self, quota: Quota) -> bool {
        let pending = lock(&self.pending);
        if pending.is_some() || self.fleet.load().quota == quota {
            return false;
        }
        self.fleet.store(Arc::new(FleetQuota::new(quota)));
        drop(pending);
        #[cfg(feature = "tracing")]
        tracing::info!(
            prefix = %self.prefix,
            rate_per_sec = 1.0 / quota.replenish_interval().as_secs_f64(),
            burst = quota.burst_size(),
            "shared rate limit: the fleet's quota changed"
        );
        true
    }

    pub(crate) fn in_fallback(&self) -> bool {
        self.fallback.load(Ordering::Acquire)
    }

    /// Stops asking Redis until a probe finds it well again.
    pub(super) fn enter_fallback(&self, cause: Cause) {
        if self.fallback.swap(true, Ordering::AcqRel) {
            return;
        }
        self.fallback_entries.fetch_add(1, Ordering::Relaxed);
        // The worker may be waiting for checks, which stop coming now: wake
        // it to probe.
        self.wake.notify_one();
        #[cfg(feature = "tracing")]
        tracing::warn!(
            prefix = %self.prefix,
            cause = match cause {
                Cause::Timeout => "timeout",
                Cause::Error => "error",
            },
            timeout_ms = self.timeout.as_secs_f64() * 1e3,
            fallback = ?self.fallback_policy,
            "shared rate limit: Redis out of reach, deciding locally"
        );
        #[cfg(not(feature = "tracing"))]
        let _ = cause;
    }

    /// A probe found Redis answering within the timeout.
    pub(super) fn leave_fallback(&self) {
        self.connected.store(true, Ordering::Release);
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
        if self.fallback.swap(false, Ordering::AcqRel) {
            #[cfg(feature = "tracing")]
            tracing::info!(
                prefix = %self.prefix,
                fallback_checks = self.fallback_checks.load(Ordering::Relaxed),
                "shared rate limit: Redis back, limiting with the fleet again"
            );
        }
    }

    /// A check found no answer within the timeout.
    pub(crate) fn timed_out(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        if self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= TIMEOUTS_TO_FALLBACK {
            self.enter_fallback(Cause::Timeout);
        }
    }

    /// Redis answered a batch in time.
    pub(super) fn answered(&self) {
        self.timeouts_in_a_row.store(0, Ordering::Relaxed);
    }

    /// A command failed or the connection broke.
    pub(super) fn failed(&self, error: &redis::RedisError) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        self.connected.store(false, Ordering::Release);
        #[cfg(feature = "tracing")]
        if !self.in_fallback() {
            tracing::debug!(prefix = %self.prefix, %error, "shared rate limit: Redis error");
        }
        #[cfg(not(feature = "tracing"))]
        let _ = error;
        self.enter_fallback(Cause::Error);
    }

    /// A script call failed on its keys' data: counted (and logged at
    /// debug), without putting the limit in fallback.
    pub(super) fn script_failed(&self, error: &redis::RedisError) {
        self.redis_errors.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "tracing")]
        tracing::debug!(prefix = %self.prefix, %error, "shared rate limit: the script failed");
        #[cfg(not(feature = "tracing"))]
        let _ = error;
    }

    /// Counts a decision; `by_redis` tells which side made it.
    pub(crate) fn count(&self, allowed: bool, by_redis: bool) {
        if allowed {
            self.allowed.add(1);
        } else {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        if by_redis {
            self.redis_checks.add(1);
        } else {
            self.fallback_checks.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.allowed.sum(), self.limited.load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self) -> RedisSnapshot {
        RedisSnapshot {
            fallback: self.in_fallback(),
            connected: self.connected.load(Ordering::Acquire),
            redis_checks: self.redis_checks.sum(),
            fallback_checks: self.fallback_checks.load(Ordering::Relaxed),
            fallback_entries: self.fallback_entries.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            redis_errors: self.redis_errors.load(Ordering::Relaxed),
            instances: self.instances.load(Ordering::Relaxed),
        }
    }
}

/// A Redis-backed limit's health, in its
/// [`RateLimitSnapshot`](crate::rate::RateLimitSnapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RedisSnapshot {
    /// Whether checks are decided locally now, by the
    /// [`Fallback`] policy, because Redis is slow or out of reach.
    pub fallback: bool,
    /// Whether the limit has a connection on which the script is loaded:
    /// `false` until the first connection is made (building the layer
    /// connects in the background when a runtime is running, or else with
    /// the first request), and after a command fails until a probe passes.
    pub connected: bool,
    /// Checks Redis decided.
    pub redis_checks: u64,
    /// Checks the fallback policy decided.
    pub fallback_checks: u64,
    /// How many times the limit entered fallback.
    pub fallback_entries: u64,
    /// Checks Redis did not answer within the timeout.
    pub timeouts: u64,
    /// Commands that failed: errors from Redis, broken or refused
    /// connections.
    pub redis_errors: u64,
    /// How many instances the fallback's share divides the quota among:
    /// [`RedisOptions::instances`](super::RedisOptions::instances) if set,
    /// else as last counted in Redis (1 until then).
    pub instances: u32,
}
