//! The level's hysteresis: a pure state machine fed readings and the time,
//! with no clock of its own, no atomics and no Tower types.
//!
//! A reading is the level the sources show at one moment. The level rises
//! to a reading once readings at or above it have lasted `raise_after` (at
//! once by default), and falls only when no reading at or above it has been
//! seen for `hold`: to the highest level still seen within the hold, or to
//! the reading. A level that flickers between readings therefore holds, and
//! each change is one transition, never a flap.
//!
//! The hold counts from the last reading at a level, not from the first one
//! below it: readings come when requests or handle reads come, and after a
//! quiet minute the first reading that finds the service calm lowers the
//! level at once, instead of holding a stale one for another `hold`.

use std::time::Duration;

use tokio::time::Instant;

use super::LoadLevel;

/// The two levels above `Normal`, highest first.
const RAISED: [LoadLevel; 2] = [LoadLevel::Overloaded, LoadLevel::Elevated];

/// A change of level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) from: LoadLevel,
    pub(super) to: LoadLevel,
    /// How long the level it left had lasted.
    pub(super) lasted: Duration,
}

#[derive(Debug, Clone)]
pub(super) struct Hysteresis {
    hold: Duration,
    raise_after: Duration,
    level: LoadLevel,
    changed: Instant,
    /// The last reading at or above each level.
    seen: [Option<Instant>; 3],
    /// The start of the unbroken run of readings at or above each level.
    run: [Option<Instant>; 3],
}

impl Hysteresis {
    pub(super) fn new(hold: Duration, raise_after: Duration, now: Instant) -> Self {
        Self {
            hold,
            raise_after,
            level: LoadLevel::Normal,
            changed: now,
            seen: [None; 3],
            run: [None; 3],
        }
    }

    pub(super) fn level(&self) -> LoadLevel {
        self.level
    }

    /// When the level last changed (or the machine was made).
    pub(super) fn changed(&self) -> Instant {
        self.changed
    }

    /// Takes the reading at `now`; the change it makes, if any.
    pub(super) fn observe(&mut self, reading: LoadLevel, now: Instant) -> Option<Change> {
        for level in RAISED {
            let i = level.index();
            if reading >= level {
                self.seen[i] = Some(now);
                self.run[i].get_or_insert(now);
            } else {
                self.run[i] = None;
            }
        }
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let raised = RAISED.into_iter().find(|&l| {
            l > self.level && since(self.run[l.index()]).is_some_and(|d| d >= self.raise_after)
        });
        let next = raised.unwrap_or_else(|| {
            let held = RAISED
                .into_iter()
                .find(|&l| {
                    l <= self.level && since(self.seen[l.index()]).is_some_and(|d| d < self.hold)
                })
                .unwrap_or(LoadLevel::Normal);
            held.max(reading.min(self.level))
        });
        if next == self.level {
            return None;
        }
        let change = Change {
            from: self.level,
            to: next,
            lasted: now.saturating_duration_since(self.changed),
        };
        self.level = next;
        self.changed = now;
        Some(change)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use LoadLevel::{Elevated, Normal, Overloaded};

    const HOLD: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `(at ms, reading)` pairs; the level after each.
    fn run(raise_after: Duration, readings: &[(u64, LoadLevel)]) -> Vec<LoadLevel> {
        let start = Instant::now();
        let mut h = Hysteresis::new(HOLD, raise_after, start);
        readings
            .iter()
            .map(|&(at, reading)| {
                h.observe(reading, start + ms(at));
                h.level()
            })
            .collect()
    }

    #[test]
    fn rises_at_once() {
        assert_eq!(
            run(
                Duration::ZERO,
                &[(0, Normal), (50, Elevated), (100, Overloaded)]
            ),
            [Normal, Elevated, Overloaded]
        );
        assert_eq!(run(Duration::ZERO, &[(0, Overloaded)]), [Overloaded]);
    }

    #[test]
    fn falls_only_after_the_hold() {
        assert_eq!(
            run(
                Duration::ZERO,
                &[
                    (0, Elevated),
                    (500, Normal),
                    (1000, Normal),
                    (1999, Normal),
                    (2000, Normal),
                    (2050, Normal),
                ]
            ),
            [Elevated, Elevated, Elevated, Elevated, Normal, Normal]
        );
    }

    #[test]
    fn a_flickering_reading_does_not_flap() {
        let start = Instant::now();
        let mut h = Hysteresis::new(HOLD, Duration::ZERO, start);
        let mut changes = Vec::new();
        for i in 0..100u64 {
            let reading = if i % 2 == 0 { Elevated } else { Normal };
            changes.extend(h.observe(reading, start + ms(i * 100)));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].to, Elevated);
        // The last elevated reading was at 9.8 s: down two seconds later.
        assert_eq!(h.observe(Normal, start + ms(11_700)), None);
        let down = h.observe(Normal, start + ms(11_800)).unwrap();
        assert_eq!((down.from, down.to), (Elevated, Normal));
        assert_eq!(down.lasted, ms(11_800));
    }

    #[test]
    fn steps_down_through_what_was_still_seen() {
        assert_eq!(
            run(
                Duration::ZERO,
                &[
                    (0, Overloaded),
                    (1000, Elevated),
                    (2000, Elevated),
                    (3000, Elevated),
                    (4000, Normal),
                    (4999, Normal),
                    (5000, Normal),
                ]
            ),
            [
                Overloaded, Overloaded, Elevated, Elevated, Elevated, Elevated, Normal
            ]
        );
    }

    #[test]
    fn falls_straight_to_normal_when_nothing_was_seen() {
        assert_eq!(
            run(
                Duration::ZERO,
                &[(0, Overloaded), (100, Normal), (2000, Normal)]
            ),
            [Overloaded, Overloaded, Normal]
        );
    }

    #[test]
    fn a_reading_after_a_quiet_spell_lowers_at_once() {
        // Nobody read the level for ten seconds: the first calm reading
        // does not hold a stale level for another two.
        assert_eq!(
            run(Duration::ZERO, &[(0, Overloaded), (10_000, Normal)]),
            [Overloaded, Normal]
        );
        assert_eq!(
            run(Duration::ZERO, &[(0, Overloaded), (10_000, Elevated)]),
            [Overloaded, Elevated]
        );
    }

    #[test]
    fn a_dwell_needs_an_unbroken_run() {
        let dwell = ms(200);
        assert_eq!(
            run(dwell, &[(0, Elevated), (100, Elevated), (200, Elevated)]),
            [Normal, Normal, Elevated]
        );
        assert_eq!(
            run(
                dwell,
                &[
                    (0, Elevated),
                    (100, Normal),
                    (200, Elevated),
                    (300, Overloaded),
                    (400, Overloaded),
                    (500, Overloaded)
                ]
            ),
            [Normal, Normal, Normal, Normal, Elevated, Overloaded]
        );
    }

    #[test]
    fn without_a_hold_the_level_follows_the_reading() {
        let start = Instant::now();
        let mut h = Hysteresis::new(Duration::ZERO, Duration::ZERO, start);
        for (i, reading) in [Overloaded, Normal, Elevated, Elevated, Normal]
            .into_iter()
            .enumerate()
        {
            h.observe(reading, start + ms(i as u64));
            assert_eq!(h.level(), reading);
        }
    }

    fn level() -> impl Strategy<Value = LoadLevel> {
        prop_oneof![Just(Normal), Just(Elevated), Just(Overloaded)]
    }

    proptest! {
        /// Whatever the readings: the level is never below the reading (no
        /// dwell), it falls only when nothing at or above it was read
        /// within the hold, and it changes at most once per reading.
        #[test]
        fn holds_its_promises(steps in prop::collection::vec((1u64..1500, level()), 1..200)) {
            let start = Instant::now();
            let mut h = Hysteresis::new(HOLD, Duration::ZERO, start);
            let mut at = start;
            let mut history: Vec<(Instant, LoadLevel)> = Vec::new();
            for (gap, reading) in steps {
                at += ms(gap);
                let before = h.level();
                let change = h.observe(reading, at);
                history.push((at, reading));
                prop_assert!(h.level() >= reading);
                prop_assert_eq!(change.is_some(), h.level() != before);
                if h.level() < before {
                    let recent = history
                        .iter()
                        .filter(|(t, _)| at.saturating_duration_since(*t) < HOLD)
                        .map(|&(_, r)| r)
                        .max()
                        .unwrap_or(Normal);
                    prop_assert!(recent < before, "fell from {before:?} with {recent:?} in the hold");
                    prop_assert_eq!(h.level(), recent);
                }
            }
        }
    }
}
