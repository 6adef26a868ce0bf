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
/// # The same cohorts on every instance
///
/// A fleet behind a load balancer sheds the same callers on every instance
/// only if every instance puts a caller in the same cohort. The cohort is a
/// function of the caller's key, a seed and the number of the current
/// period, and nothing else:
///
/// - the seed is fixed ([`Cohorts::seed`] sets another): not drawn per
///   process, which would give each instance cohorts of its own;
/// - periods are counted from the Unix epoch on the wall clock, read once
///   when the `Cohorts` is made: instances started at different times
///   rotate at the same moments (within their clocks' skew) and agree on
///   which period it is;
/// - the key must hash the same in every process. Strings, integers and
///   [`IpAddr`](std::net::IpAddr) (what `PeerIp` yields) do.
///   [`KeyDigest`](crate::rate::KeyDigest), the key of `HeaderKey` and
///   `ApiKey`, is keyed by a secret drawn per process: across processes,
///   key cohorts by the header's value itself through `key_fn` (or an
///   account id looked up from it).
///
/// The fixed default seed is public, so a caller who can choose its key can
/// search for one that lands in a cohort shed last. Where callers choose
/// their keys, give the fleet a secret seed of its own, the same on every
/// instance.
#[derive(Debug, Clone)]
pub struct Cohorts<K> {
    key: K,
    period: Duration,
    seed: u64,
    /// When this value was made, and the wall clock's time since the Unix
    /// epoch at that moment: periods are counted from the epoch.
    start: Instant,
    wall_at_start: Duration,
}

/// The seed of [`Cohorts::new`]: any fixed number does, as long as every
/// instance uses the same one.
const DEFAULT_SEED: u64 = 0x7370_696c_6c77_6179; // "spillway"

impl<K> Cohorts<K> {
    /// Cohorts from `key`, rotating every minute, with the default seed.
    pub fn new(key: K) -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            key,
            period: Duration::from_secs(60),
            seed: DEFAULT_SEED,
            start: Instant::now(),
            wall_at_start: wall,
        }
    }

    /// How long a caller keeps its cohort. `Duration::ZERO` keeps it forever.
    #[must_use]
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// The secret the assignment is keyed by, instead of the fixed default.
    /// Every instance of a fleet must be given the same one.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The cohort of a caller key at `now`.
    pub fn cohort_at(&self, key: u64, now: Instant) -> Cohort {
        let epoch = if self.period.is_zero() {
            0
        } else {
            let wall = self.wall_at_start + now.saturating_duration_since(self.start);
            (wall.as_nanos() / self.period.as_nanos()) as u64
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
        let mut cohorts = Cohorts::new(key_fn(|k: &u64| Some(*k))).period(Duration::from_secs(10));
        // Made on a period's boundary of the wall clock, so the paused
        // clock's advances below land where the test says.
        cohorts.wall_at_start = Duration::from_secs(1_700_000_000);
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
    fn instances_made_apart_agree_on_every_cohort() {
        // Two instances, made some time apart as a fleet's are: the seed is
        // not drawn per instance and the periods are counted on the wall
        // clock, so each caller is in the same cohort on both.
        fn caller(k: &u64) -> Option<u64> {
            Some(*k)
        }
        let a = Cohorts::new(key_fn(caller));
        std::thread::sleep(Duration::from_millis(30));
        let b = Cohorts::new(key_fn(caller));
        let now = Instant::now();
        let differ = (0..10_000u64)
            .filter(|k| a.cohort_at(*k, now) != b.cohort_at(*k, now))
            .count();
        assert_eq!(differ, 0, "{differ} of 10 000 callers differ");
        let cohort = |c: &Cohorts<_>| (0..64u64).map(|k| c.cohort(&k)).collect::<Vec<_>>();
        assert_eq!(cohort(&a), cohort(&b));
    }

    #[test]
    fn periods_are_counted_from_the_unix_epoch() {
        // Instances made 25 s apart (by their wall clocks) with a 60 s
        // period: they rotate at the same moment, the minute's turn, and
        // agree on the period before and after it.
        let period = Duration::from_secs(60);
        let made = |wall: u64| {
            let mut c = Cohorts::new(key_fn(|k: &u64| Some(*k))).period(period);
            c.wall_at_start = Duration::from_secs(wall);
            c
        };
        let (a, b) = (made(1_700_000_010), made(1_700_000_035));
        // `b` was made 25 s after `a`: the same moment is 25 s later in
        // `a`'s run than in `b`'s.
        let at = |c: &Cohorts<_>, since_start: u64| {
            (0..256u64)
                .map(|k| c.cohort_at(k, c.start + Duration::from_secs(since_start)))
                .collect::<Vec<_>>()
        };
        // 1_700_000_039: both in the same period; 1_700_000_041: both in
        // the next (the minute turns at 1_700_000_040).
        assert_eq!(at(&a, 29), at(&b, 4));
        assert_eq!(at(&a, 31), at(&b, 6));
        assert_ne!(at(&a, 29), at(&a, 31), "the period turned");
    }

    #[test]
    fn a_seed_of_its_own_moves_the_cohorts() {
        let default = Cohorts::new(key_fn(|k: &u64| Some(*k))).period(Duration::ZERO);
        let seeded = default.clone().seed(0x1234_5678);
        let moved = (0..256u64)
            .filter(|k| default.cohort(k) != seeded.cohort(k))
            .count();
        assert!(moved > 200, "only {moved} of 256 callers moved");
    }

    #[test]
    fn unknown_caller_has_no_cohort() {
        let cohorts = Cohorts::new(key_fn(|_: &u64| None::<u64>));
        assert_eq!(cohorts.cohort(&1), None);
    }
}
