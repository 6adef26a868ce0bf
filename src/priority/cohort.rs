use std::{
    hash::{Hash, Hasher},
    time::Duration,
};

use tokio::time::Instant;

use crate::key::KeyExtractor;

/// A slice of callers within a priority tier, `0..=127`.
///
/// Adaptive shedding refuses part of a tier by cohort rather than at random, so
/// the same callers are refused consistently (their next request is refused
/// too, instead of every caller seeing a random fraction of failures), and
/// which callers those are rotates every [`Cohorts`] period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Cohort(u8);

impl Cohort {
    /// The number of cohorts.
    pub const COUNT: usize = 128;

    /// The cohort numbered `n`, if `n <= 127`.
    pub const fn new(n: u8) -> Option<Cohort> {
        if n < Self::COUNT as u8 {
            Some(Cohort(n))
        } else {
            None
        }
    }

    /// The cohort's number, `0..=127`.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// splitmix64's finaliser: a bijective mix whose output bits each depend on
/// every input bit.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A caller's key as the number its cohort is drawn from: FNV-1a over the
/// key's hashed bytes, a fast, allocation-free digest. Its weakness to chosen
/// collisions does not matter here: what keeps a caller from choosing its
/// cohort is the seed mixed in after.
fn digest<T: Hash>(key: &T) -> u64 {
    let mut hasher = Fnv1a(0xcbf2_9ce4_8422_2325);
    key.hash(&mut hasher);
    hasher.finish()
}

struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Assigns callers to [`Cohort`]s that stay stable for a period, then rotate.
///
/// A caller is what a [`KeyExtractor`] with an optional key names: a
/// [`HeaderKey`](crate::rate::HeaderKey), an [`ApiKey`](crate::rate::ApiKey),
/// a [`PeerIp`](crate::rate::PeerIp), or any closure through
/// [`key_fn`](crate::key::key_fn) returning `Option<_>`.
///
/// The assignment is keyed by a per-process random seed, so a caller cannot
/// choose its cohort by choosing its key.
#[derive(Debug, Clone)]
pub struct Cohorts<K> {
    key: K,
    period: Duration,
    seed: u64,
    start: Instant,
}

impl<K> Cohorts<K> {
    /// Cohorts from `key`, rotating every minute.
    pub fn new(key: K) -> Self {
        Self {
            key,
            period: Duration::from_secs(60),
            seed: fastrand::u64(..),
            start: Instant::now(),
        }
    }

    /// How long a caller keeps its cohort. `Duration::ZERO` keeps it forever.
    #[must_use]
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The cohort of a caller key at `now`.
    pub fn cohort_at(&self, key: u64, now: Instant) -> Cohort {
        let epoch = if self.period.is_zero() {
            0
        } else {
            (now.saturating_duration_since(self.start).as_nanos() / self.period.as_nanos()) as u64
        };
        let mixed = mix64(key ^ self.seed ^ mix64(epoch));
        Cohort((mixed % Cohort::COUNT as u64) as u8)
    }

    /// The cohort of `req`'s caller now, or `None` when the caller is
    /// unknown (its key is `None`).
    pub fn cohort<Req, T>(&self, req: &Req) -> Option<Cohort>
    where
        K: KeyExtractor<Req, Key = Option<T>>,
        T: Hash,
    {
        let key = digest(self.key.key(req).as_ref()?);
        let now = if self.period.is_zero() {
            self.start
        } else {
            Instant::now()
        };
        Some(self.cohort_at(key, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::key_fn;

    #[test]
    fn cohort_range() {
        assert_eq!(Cohort::new(127).map(Cohort::get), Some(127));
        assert_eq!(Cohort::new(128), None);
    }

    #[tokio::test(start_paused = true)]
    async fn stable_within_a_period_and_rotates_after() {
        let cohorts = Cohorts::new(key_fn(|k: &u64| Some(*k))).period(Duration::from_secs(10));
        let before: Vec<_> = (0..64u64).map(|k| cohorts.cohort(&k).unwrap()).collect();
        tokio::time::advance(Duration::from_secs(9)).await;
        let same: Vec<_> = (0..64u64).map(|k| cohorts.cohort(&k).unwrap()).collect();
        assert_eq!(before, same);
        tokio::time::advance(Duration::from_secs(2)).await;
        let after: Vec<_> = (0..64u64).map(|k| cohorts.cohort(&k).unwrap()).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(moved > 32, "only {moved} of 64 callers changed cohort");
    }

    #[test]
    fn spreads_callers_over_all_cohorts() {
        let cohorts = Cohorts::new(key_fn(|k: &u64| Some(*k))).period(Duration::ZERO);
        let mut seen = [0u32; Cohort::COUNT];
        for k in 0..12_800u64 {
            seen[usize::from(cohorts.cohort(&k).unwrap().get())] += 1;
        }
        // 100 expected per cohort; a fair mix stays well inside [50, 160].
        assert!(seen.iter().all(|&n| (50..160).contains(&n)), "{seen:?}");
    }

    #[test]
    fn unknown_caller_has_no_cohort() {
        let cohorts = Cohorts::new(key_fn(|_: &u64| None::<u64>));
        assert_eq!(cohorts.cohort(&1), None);
    }
}
