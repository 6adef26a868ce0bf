//! The GCRA core: governor's algorithm over tokio's clock and a bounded store.
//!
//! governor keeps each key's state as a *theoretical arrival time* (TAT)
//! relative to the moment its `RateLimiter` was built. Quotas can change at
//! runtime, which means building a new `RateLimiter`; so the store here keeps
//! TATs relative to its own fixed origin and every limiter sees the store
//! through a [`View`] that shifts them by the limiter's start. Swapping the
//! limiter keeps every key's history.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    num::NonZeroU32,
    ops::Add,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{
    Quota as GovernorQuota, RateLimiter,
    clock::{Clock, Reference},
    middleware::StateInformationMiddleware,
    nanos::Nanos,
    state::StateStore,
};
use http::HeaderValue;
use tokio::time::Instant;

use crate::ConfigError;

/// A point on tokio's clock, as governor's [`Reference`]: paused test clocks
/// drive the rate limiter too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(pub(crate) Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, rhs: Nanos) -> Self {
        // Quotas are bounded (see `MAX_REFILL`), so this never saturates in
        // practice; it must not panic either way.
        Self(
            self.0
                .checked_add(Duration::from(rhs))
                .unwrap_or(self.0 + MAX_REFILL),
        )
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// governor's [`Clock`] reading `tokio::time::Instant::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

/// The longest time a quota may take to refill a whole burst: ten years.
pub(crate) const MAX_REFILL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

fn check_refill(interval: Duration, burst: u32) -> Result<(), ConfigError> {
    if interval.as_nanos() * u128::from(burst) > MAX_REFILL.as_nanos() {
        return Err(ConfigError::new(
            "quota",
            "a whole burst must refill within ten years",
        ));
    }
    Ok(())
}

/// A rate: how many calls per period, and how many may arrive back to back.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::rate::Quota;
///
/// // 200 calls per second, in bursts of at most 20.
/// let q = Quota::per_second(200)?.burst(20)?;
/// assert_eq!(q.replenish_interval(), Duration::from_millis(5));
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    inner: GovernorQuota,
}

impl Quota {
    /// `n` calls per second, in bursts of up to `n`. `n` must be positive.
    pub fn per_second(n: u32) -> Result<Self, ConfigError> {
        Self::new(n, Duration::from_secs(1))
    }

    /// `n` calls per minute, in bursts of up to `n`. `n` must be positive.
    pub fn per_minute(n: u32) -> Result<Self, ConfigError> {
        Self::new(n, Duration::from_secs(60))
    }

    /// `n` calls every `period`, in bursts of up to `n`; one call's worth of
    /// quota comes back every `period / n`. Both must be positive, and the
    /// period at most ten years.
    pub fn new(n: u32, period: Duration) -> Result<Self, ConfigError> {
        let n =
            NonZeroU32::new(n).ok_or(ConfigError::new("quota", "must allow at least one call"))?;
        check_refill(period / n.get(), n.get())?;
        GovernorQuota::with_period(period / n.get())
            .map(|q| Self {
                inner: q.allow_burst(n),
            })
            .ok_or(ConfigError::new(
                "period",
                "must be positive and at least one nanosecond per call",
            ))
    }

    /// The most calls allowed back to back (at least 1; a whole burst must
    /// refill within ten years). The long-run rate is unchanged.
    pub fn burst(self, max_burst: u32) -> Result<Self, ConfigError> {
        let n =
            NonZeroU32::new(max_burst).ok_or(ConfigError::new("burst", "must be at least 1"))?;
        check_refill(self.replenish_interval(), max_burst)?;
        Ok(Self {
            inner: self.inner.allow_burst(n),
        })
    }

    /// The time for one call's worth of quota to come back.
    pub fn replenish_interval(&self) -> Duration {
        self.inner.replenish_interval()
    }

    /// The burst size.
    pub fn burst_size(&self) -> u32 {
        self.inner.burst_size().get()
    }

    /// The announced policy, the `RateLimit-Policy` field's parameters: the
    /// long-run rate as `q` calls per window of `w` whole seconds, the window
    /// being long enough to refill a whole burst.
    pub fn policy(&self) -> (u64, u64) {
        let interval = self.replenish_interval().as_nanos().max(1);
        let window = crate::retry_after::ceil_secs(self.inner.burst_size_replenished_in()).max(1);
        let q = u128::from(window) * 1_000_000_000 / interval;
        (u64::try_from(q).unwrap_or(u64::MAX).max(1), window)
    }
}

/// The shared state of a limiter: TATs in nanoseconds since `origin`, zero
/// meaning "no history".
#[derive(Debug)]
pub(crate) struct Store<K> {
    origin: Instant,
    kind: Kind<K>,
}

#[derive(Debug)]
enum Kind<K> {
    /// One state for every key: a global limit.
    Global(AtomicU64),
    /// One state per key, in shards of two generations each.
    Keyed {
        shards: Box<[Mutex<Shard<K>>]>,
        hasher: RandomState,
        generation: usize,
    },
}

/// Keys seen recently (`current`) and in the generation before (`previous`).
/// When `current` fills up, `previous` is dropped and `current` takes its
/// place, so the shard never holds more than two generations and idle keys
/// age out without any cleanup task. A key found in `previous` moves back to
/// `current`; a key whose TAT lies in the past carries no information (it is
/// indistinguishable from a key never seen), so losing it is exact.
#[derive(Debug)]
struct Shard<K> {
    current: HashMap<K, u64>,
    previous: HashMap<K, u64>,
}

const SHARDS: usize = 64;

impl<K> Store<K> {
    pub(crate) fn global() -> Self {
        Self {
            origin: Instant::now(),
            kind: Kind::Global(AtomicU64::new(0)),
        }
    }

    /// A keyed store holding at most `max_keys` keys (rounded up to a multiple
    /// of twice the shard count).
    pub(crate) fn keyed(max_keys: usize) -> Result<Self, ConfigError> {
        if max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        let shards = SHARDS.min(max_keys.div_ceil(2));
        let generation = max_keys.div_ceil(2 * shards);
        Ok(Self {
            origin: Instant::now(),
            kind: Kind::Keyed {
                shards: (0..shards)
                    .map(|_| {
                        Mutex::new(Shard {
                            current: HashMap::new(),
                            previous: HashMap::new(),
                        })
                    })
                    .collect(),
                hasher: RandomState::new(),
                generation,
            },
        })
    }

    /// How many keys the store holds (1 for a global store).
    pub(crate) fn len(&self) -> usize {
        match &self.kind {
            Kind::Global(_) => 1,
            Kind::Keyed { shards, .. } => shards
                .iter()
                .map(|s| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.current.len() + s.previous.len()
                })
                .sum(),
        }
    }

    /// How many key slots the store has allocated: what its memory follows.
    pub(crate) fn allocated(&self) -> usize {
        match &self.kind {
            Kind::Global(_) => 1,
            Kind::Keyed { shards, .. } => shards
                .iter()
                .map(|s| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.current.capacity() + s.previous.capacity()
                })
                .sum(),
        }
    }

    /// The most keys the store ever holds.
    pub(crate) fn max_keys(&self) -> usize {
        match &self.kind {
            Kind::Global(_) => 1,
            Kind::Keyed {
                shards, generation, ..
            } => shards.len().saturating_mul(*generation).saturating_mul(2),
        }
    }
}

impl<K: Hash + Eq + Clone> Store<K> {
    fn measure<T, E>(
        &self,
        key: &K,
        offset: u64,
        f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> Result<T, E> {
        // Stored TATs are since `origin`; governor's are since its `start`.
        let to_limiter = |abs: u64| (abs != 0).then(|| Nanos::from(abs.saturating_sub(offset)));
        let to_store = |rel: Nanos| rel.as_u64().saturating_add(offset).max(1);
        match &self.kind {
            Kind::Global(tat) => {
                let mut prev = tat.load(Ordering::Acquire);
                loop {
                    let (out, next) = f(to_limiter(prev))?;
                    match tat.compare_exchange_weak(
                        prev,
                        to_store(next),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(out),
                        Err(actual) => prev = actual,
                    }
                }
            }
            Kind::Keyed {
                shards,
                hasher,
                generation,
            } => {
                let hash = hasher.hash_one(key);
                // The high bits pick the shard; the map rehashes with its own state.
                let index = (hash >> 32) as usize % shards.len();
                let mut shard = shards[index].lock().unwrap_or_else(|e| e.into_inner());
                let shard = &mut *shard;
                let (prev, promoted) = match shard.current.get(key) {
                    Some(v) => (*v, false),
                    None => match shard.previous.remove(key) {
                        Some(v) => (v, true),
                        None => (0, false),
                    },
                };
                let stored = match f(to_limiter(prev)) {
                    Ok((out, next)) => {
                        shard.current.insert(key.clone(), to_store(next));
                        Ok(out)
                    }
                    Err(e) => {
                        if promoted {
                            shard.current.insert(key.clone(), prev);
                        }
                        Err(e)
                    }
                };
                if shard.current.len() >= *generation {
                    std::mem::swap(&mut shard.current, &mut shard.previous);
                    shard.current.clear();
                }
                stored
            }
        }
    }
}

/// A store as one limiter sees it: TATs shifted by the limiter's start.
#[derive(Debug)]
pub(crate) struct View<K> {
    store: Arc<Store<K>>,
    offset: u64,
}

impl<K: Hash + Eq + Clone> StateStore for View<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.store.measure(key, self.offset, f)
    }
}

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
    let t = crate::retry_after::ceil_secs(reset);
    let t = if remaining == 0 { t.max(1) } else { t };
    HeaderValue::try_from(format!("\"default\";r={remaining};t={t}"))
        .unwrap_or(HeaderValue::from_static("\"default\""))
}

/// A GCRA limiter whose quota can change at runtime without losing state.
#[derive(Debug)]
pub(crate) struct Limiter<K: Hash + Eq + Clone> {
    store: Arc<Store<K>>,
    current: RwLock<Current<K>>,
    allowed: AtomicU64,
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
            current: RwLock::new(current),
            allowed: AtomicU64::new(0),
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
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.governor.check_key(key) {
            Ok(snapshot) => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
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
        self.current.read().unwrap_or_else(|e| e.into_inner()).quota
    }

    /// Replaces the quota; each key's history carries over.
    pub(crate) fn set_quota(&self, quota: Quota) {
        let current = Current::new(&self.store, quota);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = current;
    }

    /// Requests allowed and refused so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.limited.load(Ordering::Relaxed),
        )
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
