//! Static shedding: one load threshold per priority.

use crate::{ConfigError, Priority};

/// Static shedding: one load threshold per priority.
///
/// A request of priority `p` is admitted while the load signal reads below
/// `p`'s threshold, so as load grows the lowest tiers are refused first. A
/// tier without a threshold is never shed; by default that is
/// [`Critical`](Priority::Critical).
///
/// ```
/// use tower_spillway::{Priority, shed::Thresholds};
///
/// // Low below 5 in flight, Default below 20, High below 100, Critical always.
/// let t = Thresholds::ladder(100);
/// assert!(t.admits(Priority::Low, 4));
/// assert!(!t.admits(Priority::Low, 5));
/// assert!(t.admits(Priority::High, 99));
/// assert!(t.admits(Priority::Critical, 1_000_000));
///
/// let custom = Thresholds::builder().low(10).default(30).high(60).build()?;
/// assert_eq!(custom.limit(Priority::Default), Some(30));
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Indexed by `Priority::index()`; `None` never sheds.
    limits: [Option<usize>; 4],
}

impl Thresholds {
    /// The default shape, a ladder topped by `high`: High is shed from a load
    /// of `high`, Default from a fifth of it, Low from a twentieth (each at
    /// least 1), and Critical never.
    ///
    /// It follows the classic queue-depth ladder (Low at 5 000, Default at
    /// 20 000, High at 100 000, Critical never): the cheapest work goes long
    /// before the service is anywhere near full, so the valuable work finds
    /// room.
    pub fn ladder(high: usize) -> Self {
        let high = high.max(1);
        Self {
            limits: [
                Some((high / 20).max(1)),
                Some((high / 5).max(1)),
                Some(high),
                None,
            ],
        }
    }

    /// Thresholds chosen one by one; every tier starts with none (never shed).
    pub fn builder() -> ThresholdsBuilder {
        ThresholdsBuilder { limits: [None; 4] }
    }

    /// The load from which `priority` is shed, or `None` if it never is.
    pub const fn limit(&self, priority: Priority) -> Option<usize> {
        self.limits[priority.index()]
    }

    /// `true` when a request of `priority` is admitted at `load`.
    #[inline]
    pub const fn admits(&self, priority: Priority, load: usize) -> bool {
        match self.limits[priority.index()] {
            Some(limit) => load < limit,
            None => true,
        }
    }

    /// The limit as a number the hot path compares with (`usize::MAX`: never).
    #[inline]
    pub(crate) const fn raw(&self, priority: Priority) -> usize {
        match self.limits[priority.index()] {
            Some(limit) => limit,
            None => usize::MAX,
        }
    }
}

/// `{"low": 5, "default": 20, "high": 100, "critical": null}`.
#[cfg(feature = "serde")]
impl serde::Serialize for Thresholds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Thresholds", 4)?;
        for p in Priority::ALL {
            s.serialize_field(p.as_str(), &self.limit(p))?;
        }
        s.end()
    }
}

/// Builds [`Thresholds`]; see [`Thresholds::builder`].
#[derive(Debug, Clone)]
pub struct ThresholdsBuilder {
    limits: [Option<usize>; 4],
}

impl ThresholdsBuilder {
    /// Sheds `Low` requests from a load of `limit`.
    #[must_use]
    pub fn low(self, limit: usize) -> Self {
        self.set(Priority::Low, Some(limit))
    }

    /// Sheds `Default` requests from a load of `limit`.
    #[must_use]
    pub fn default(self, limit: usize) -> Self {
        self.set(Priority::Default, Some(limit))
    }

    /// Sheds `High` requests from a load of `limit`.
    #[must_use]
    pub fn high(self, limit: usize) -> Self {
        self.set(Priority::High, Some(limit))
    }

    /// Sheds even `Critical` requests from a load of `limit`. Without this
    /// they are never shed.
    #[must_use]
    pub fn critical(self, limit: usize) -> Self {
        self.set(Priority::Critical, Some(limit))
    }

    /// Sets (or, with `None`, removes) the threshold of any tier.
    #[must_use]
    pub fn set(mut self, priority: Priority, limit: Option<usize>) -> Self {
        self.limits[priority.index()] = limit;
        self
    }

    /// Checks that every threshold is at least 1 and that no tier is admitted
    /// at a load where a more valuable one is shed.
    pub fn build(self) -> Result<Thresholds, ConfigError> {
        if self.limits.iter().flatten().any(|&l| l == 0) {
            return Err(ConfigError::new(
                "thresholds",
                "a threshold must be at least 1",
            ));
        }
        let as_raw = |l: Option<usize>| l.unwrap_or(usize::MAX);
        if self
            .limits
            .windows(2)
            .any(|pair| as_raw(pair[0]) > as_raw(pair[1]))
        {
            return Err(ConfigError::new(
                "thresholds",
                "a lower priority must not have a higher threshold than a higher one",
            ));
        }
        Ok(Thresholds {
            limits: self.limits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_vectors() {
        // (high, [low, default, high])
        for (high, expect) in [
            (100, [5, 20, 100]),
            (100_000, [5_000, 20_000, 100_000]),
            (10, [1, 2, 10]),
            (0, [1, 1, 1]),
        ] {
            let t = Thresholds::ladder(high);
            let got =
                [Priority::Low, Priority::Default, Priority::High].map(|p| t.limit(p).unwrap());
            assert_eq!(got, expect, "ladder({high})");
            assert_eq!(t.limit(Priority::Critical), None);
        }
    }

    #[test]
    fn threshold_decisions() {
        let t = Thresholds::ladder(100);
        // (priority, load, admitted)
        let vectors = [
            (Priority::Low, 0, true),
            (Priority::Low, 4, true),
            (Priority::Low, 5, false),
            (Priority::Default, 5, true),
            (Priority::Default, 19, true),
            (Priority::Default, 20, false),
            (Priority::High, 99, true),
            (Priority::High, 100, false),
            (Priority::Critical, 1 << 40, true),
        ];
        for (p, load, admitted) in vectors {
            assert_eq!(t.admits(p, load), admitted, "{p} at {load}");
            assert_eq!(load < t.raw(p), admitted);
        }
    }

    #[test]
    fn lower_tiers_always_go_first() {
        let t = Thresholds::ladder(1_000);
        for load in 0..1_200 {
            let admitted: Vec<bool> = Priority::ALL.iter().map(|&p| t.admits(p, load)).collect();
            // Admission is monotone in priority: once a tier is admitted, so is
            // every higher one.
            assert!(
                admitted.windows(2).all(|w| !w[0] || w[1]),
                "{load}: {admitted:?}"
            );
        }
    }

    #[test]
    fn builder_validates() {
        assert!(Thresholds::builder().low(0).build().is_err());
        assert!(Thresholds::builder().low(50).default(20).build().is_err());
        // A lower tier without a limit while a higher one has one is inverted.
        assert!(Thresholds::builder().high(10).build().is_err());
        let t = Thresholds::builder()
            .low(1)
            .default(2)
            .high(3)
            .critical(4)
            .build()
            .unwrap();
        assert!(!t.admits(Priority::Critical, 4));
        let never = Thresholds::builder().build().unwrap();
        assert!(never.admits(Priority::Low, usize::MAX - 1));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #[test]
            fn valid_thresholds_never_admit_a_lower_tier_alone(
                limits in proptest::collection::vec(proptest::option::of(1usize..1_000), 4),
                load in 0usize..1_200,
            ) {
                let mut b = Thresholds::builder();
                for (p, l) in Priority::ALL.iter().zip(&limits) {
                    b = b.set(*p, *l);
                }
                if let Ok(t) = b.build() {
                    let admitted: Vec<bool> = Priority::ALL.iter().map(|&p| t.admits(p, load)).collect();
                    prop_assert!(admitted.windows(2).all(|w| !w[0] || w[1]), "{:?}", admitted);
                }
            }
        }
    }
}
