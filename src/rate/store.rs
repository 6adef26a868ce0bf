//! The limiter's state, kept apart from governor's `RateLimiter`.
//!
//! governor keeps each key's state as a *theoretical arrival time* (TAT)
//! relative to the moment its `RateLimiter` was built. Quotas can change at
//! runtime, which means building a new `RateLimiter`; so the store here keeps
//! TATs relative to its own fixed origin and every limiter sees the store
//! through a [`View`] that shifts them by the limiter's start. Swapping the
//! limiter keeps every key's history. Keyed state is bounded: two
//! generations per shard, no cleanup task.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, RandomState},
    num::NonZeroUsize,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use governor::{nanos::Nanos, state::StateStore};
use tokio::time::Instant;

/// The shared state of a limiter: TATs in nanoseconds since `origin`, zero
/// meaning "no history".
#[derive(Debug)]
pub(crate) struct Store<K> {
    pub(super) origin: Instant,
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
    pub(crate) fn keyed(max_keys: NonZeroUsize) -> Self {
        let max_keys = max_keys.get();
        let shards = SHARDS.min(max_keys.div_ceil(2));
        let generation = max_keys.div_ceil(2 * shards);
        Self {
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
        }
    }

    /// How many keys the store holds (1 for a global store).
    pub(crate) fn len(&self) -> usize {
        self.sum_generations(HashMap::len)
    }

    /// How many key slots the store has allocated: what its memory follows.
    pub(crate) fn allocated(&self) -> usize {
        self.sum_generations(HashMap::capacity)
    }

    /// `measure` summed over both generations of every shard (1 for a global
    /// store).
    fn sum_generations(&self, measure: impl Fn(&HashMap<K, u64>) -> usize) -> usize {
        match &self.kind {
            Kind::Global(_) => 1,
            Kind::Keyed { shards, .. } => shards
                .iter()
                .map(|s| {
                    let s = s.lock().unwrap_or_else(|e| e.into_inner());
                    measure(&s.current) + measure(&s.previous)
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
    pub(super) store: Arc<Store<K>>,
    pub(super) offset: u64,
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
