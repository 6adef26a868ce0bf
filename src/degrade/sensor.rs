//! The shared state behind every [`DegradeHandle`]: the level as one
//! atomic, and the readers and hysteresis behind a lock that is taken at
//! most once per evaluation interval.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU8, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{
    LoadLevel,
    hysteresis::Hysteresis,
    log::Log,
    source::{Reader, Reading, Triggers},
};
use crate::sync::try_lock;

#[derive(Debug)]
pub(super) struct Sensor {
    level: AtomicU8,
    epoch: Instant,
    /// When the next evaluation is due, in nanoseconds since `epoch`.
    next_ns: AtomicU64,
    interval_ns: u64,
    triggers: Triggers,
    detector: Mutex<Detector>,
    /// Requests the layers on this sensor answered from a fallback.
    pub(super) fallbacks: AtomicU64,
    log: Log,
}

#[derive(Debug)]
pub(super) struct Detector {
    readers: Vec<Reader>,
    pub(super) hysteresis: Hysteresis,
    pub(super) last: Reading,
    /// What raised the level to where it is (empty at `Normal`).
    pub(super) raised_by: &'static str,
    pub(super) transitions: u64,
}

impl Sensor {
    pub(super) fn new(
        readers: Vec<Reader>,
        triggers: Triggers,
        interval: Duration,
        hold: Duration,
        raise_after: Duration,
    ) -> Self {
        let epoch = Instant::now();
        Self {
            level: AtomicU8::new(LoadLevel::Normal as u8),
            epoch,
            next_ns: AtomicU64::new(0),
            interval_ns: nanos(interval).max(1),
            triggers,
            detector: Mutex::new(Detector {
                readers,
                hysteresis: Hysteresis::new(hold, raise_after, epoch),
                last: Reading::CALM,
                raised_by: "",
                transitions: 0,
            }),
            fallbacks: AtomicU64::new(0),
            log: Log::new(),
        }
    }

    /// The level now: the stored one, after an evaluation if one is due.
    #[inline]
    pub(super) fn level(&self) -> LoadLevel {
        let now = Instant::now();
        let at = nanos(now.saturating_duration_since(self.epoch));
        if at >= self.next_ns.load(Relaxed) {
            self.evaluate(now, at);
        }
        self.stored()
    }

    /// The level last evaluated.
    #[inline]
    pub(super) fn stored(&self) -> LoadLevel {
        LoadLevel::from_index(self.level.load(Relaxed))
    }

    /// Reads every source and moves the level. One evaluator at a time; the
    /// others go on with the stored level. A lock poisoned by a panicking
    /// source is taken all the same: refusing it would freeze the level.
    #[cold]
    fn evaluate(&self, now: Instant, at: u64) {
        let Some(mut detector) = try_lock(&self.detector) else {
            return;
        };
        if at < self.next_ns.load(Relaxed) {
            return; // another caller evaluated meanwhile
        }
        // Due again one interval from now, even if a source panics below.
        self.next_ns
            .store(at.saturating_add(self.interval_ns), Relaxed);
        let detector = &mut *detector;
        let reading = detector.readers.iter_mut().fold(Reading::CALM, |worst, r| {
            worst.worst(r.read(&self.triggers))
        });
        detector.last = reading;
        if let Some(change) = detector.hysteresis.observe(reading.level, now) {
            detector.transitions += 1;
            if change.to > change.from {
                detector.raised_by = reading.because;
            } else if change.to == LoadLevel::Normal {
                detector.raised_by = "";
            }
            self.level.store(change.to as u8, Relaxed);
            self.log
                .on_change(change.from, change.to, reading.because, change.lasted);
        }
    }

    /// The detector's figures, evaluated first if due.
    pub(super) fn with_detector<T>(&self, f: impl FnOnce(&Detector) -> T) -> T {
        let _ = self.level();
        f(&crate::sync::lock(&self.detector))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
