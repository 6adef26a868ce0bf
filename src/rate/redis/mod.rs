//! A rate limit whose GCRA state lives in Redis, shared by every instance of
//! a fleet: see [`RateLimitBuilder::redis`](super::RateLimitBuilder::redis)
//! and the [module docs](super#shared-quotas-in-redis).

mod conn;
mod name;
mod script;
mod service;
mod shared;
mod store;
mod worker;

use std::time::Duration;

use crate::ConfigError;

pub use conn::RedisClient;
pub use name::RedisKey;
pub use service::SharedResponseFuture;
pub use shared::RedisSnapshot;
pub use store::RedisStore;

/// What a Redis-backed limit does with a check Redis does not answer within
/// the [timeout](RedisOptions::timeout), or while it is out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Fallback {
    /// A local GCRA with this instance's share of the quota: the quota's
    /// rate and burst divided by the number of instances, as counted in
    /// Redis or as set with [`instances`](RedisOptions::instances).
    /// The fleet as a whole stays near its quota while every instance is
    /// cut off, and a caller's history in Redis is not lost.
    #[default]
    LocalShare,
    /// Admit every request: an outage of Redis never refuses a caller.
    Allow,
    /// Refuse every request (`429`, `Retry-After` of the probe interval
    /// rounded up): no request ever passes unaccounted.
    Refuse,
}

/// How a limit talks to Redis; see
/// [`RateLimitBuilder::redis`](super::RateLimitBuilder::redis).
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::rate::{Fallback, RedisOptions};
///
/// let options = RedisOptions::new("api:checkout")
///     .timeout(Duration::from_millis(5))?
///     .instances(4)?
///     .fallback(Fallback::LocalShare);
/// # let _ = options;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) fallback: Fallback,
    /// Set by the user; `None`: counted in Redis.
    pub(crate) instances: Option<u32>,
    pub(crate) probe_interval: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::new("spillway:rate")
    }
}

impl RedisOptions {
    /// Options for the limit named `prefix`: every instance built with the
    /// same prefix (on the same Redis) shares its buckets. A bucket is the
    /// Redis key `{<prefix>:<key name>}`, the fleet's quota
    /// `{<prefix>}:quota`.
    ///
    /// The defaults: a 5 ms timeout, [`Fallback::LocalShare`] over the
    /// instances counted in Redis, a probe every 100 ms while in fallback.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            timeout: Duration::from_millis(5),
            fallback: Fallback::LocalShare,
            instances: None,
            probe_interval: Duration::from_millis(100),
        }
    }

    /// The longest a request waits for Redis's answer before the fallback
    /// decides (more than zero; 5 ms unless set). Three timeouts in a row
    /// put the whole limit in fallback until a probe finds Redis answering
    /// within this time again.
    pub fn timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be more than zero"));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// What decides while Redis is slow or out of reach
    /// ([`Fallback::LocalShare`] unless set).
    #[must_use]
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// How many instances share the quota (at least 1): under
    /// [`Fallback::LocalShare`] each admits its share, the quota divided by
    /// this.
    ///
    /// Unless set, the instances count each other: every instance announces
    /// itself in Redis about once a second (under `{<prefix>}:instances`)
    /// and counts those heard from in the last 5 s, so the share follows a
    /// fleet that scales; when Redis goes away, the share is that of the
    /// last count. Until the first count an instance takes the whole quota.
    /// Set it where the fleet's size is known and fixed, or where instances
    /// come and go faster than the count follows.
    pub fn instances(mut self, instances: u32) -> Result<Self, ConfigError> {
        if instances == 0 {
            return Err(ConfigError::new("instances", "must be at least 1"));
        }
        self.instances = Some(instances);
        Ok(self)
    }

    /// How often a limit in fallback tries Redis again (more than zero;
    /// 100 ms unless set).
    pub fn probe_interval(mut self, every: Duration) -> Result<Self, ConfigError> {
        if every.is_zero() {
            return Err(ConfigError::new("probe_interval", "must be more than zero"));
        }
        self.probe_interval = every;
        Ok(self)
    }
}

#[cfg(test)]
mod tests;
