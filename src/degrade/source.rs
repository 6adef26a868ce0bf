//! Where a level comes from: the handles the stack already has, any
//! [`LoadSignal`], or a closure, each read as a level by the same triggers.

use std::{fmt, sync::Arc, time::Duration};

use super::LoadLevel;
use crate::{ConfigError, LoadSignal, Priority, limit::LimitHandle, shed::ShedHandle};

/// One thing a [`DegradeHandle`](super::DegradeHandle) reads its level
/// from; the level is the worst any source shows.
///
/// - a [`LimitHandle`] (`From`): `Elevated` when the limiter is nearly full
///   (in flight at 90 % of the limit, by default) or its oldest waiter has
///   waited past the elevated delay, or it refused a request for want of
///   capacity since the last reading (queue full, queue timeout, expected
///   wait; not a caller's own deadline); `Overloaded` when the wait passes
///   the overloaded delay or the limiter refuses at its door any priority
///   above `Low`;
/// - a [`ShedHandle`] (`From`): `Elevated` while the shedder sheds only
///   `Low`, `Overloaded` once it sheds anything above (its adaptive level,
///   and what it refused since the last reading, in either mode);
/// - any [`LoadSignal`] ([`signal`](Self::signal)): its queueing delay
///   against the same delays, and what it forecasts to refuse; with
///   [`signal_load`](Self::signal_load), its load against two thresholds;
/// - a closure `Fn() -> LoadLevel` ([`from_fn`](Self::from_fn)).
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use tower_spillway::degrade::{LoadLevel, Source};
///
/// let waiters = Arc::new(AtomicUsize::new(0));
/// let pool = {
///     let waiters = waiters.clone();
///     move || waiters.load(Ordering::Relaxed)
/// };
/// // Elevated from 10 waiters for a pool connection, overloaded from 50.
/// let source = Source::signal_load(pool, 10, 50)?;
/// # let _ = source;
/// let jobs = Source::from_fn(|| LoadLevel::Normal);
/// # let _ = jobs;
/// # Ok::<_, tower_spillway::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Source {
    pub(super) kind: Kind,
}

type DynSignal = Arc<dyn LoadSignal + Send + Sync>;

#[derive(Clone)]
pub(super) enum Kind {
    Limit(LimitHandle),
    Shed(ShedHandle),
    Signal {
        signal: DynSignal,
        load: Option<(usize, usize)>,
    },
    Level(Arc<dyn Fn() -> LoadLevel + Send + Sync>),
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("Source");
        match &self.kind {
            Kind::Limit(h) => d.field(h),
            Kind::Shed(h) => d.field(h),
            Kind::Signal { load: None, .. } => d.field(&"signal"),
            Kind::Signal { load: Some(at), .. } => d.field(&"signal load").field(at),
            Kind::Level(_) => d.field(&"fn"),
        };
        d.finish()
    }
}

impl From<LimitHandle> for Source {
    fn from(handle: LimitHandle) -> Self {
        Self {
            kind: Kind::Limit(handle),
        }
    }
}

impl From<ShedHandle> for Source {
    fn from(handle: ShedHandle) -> Self {
        Self {
            kind: Kind::Shed(handle),
        }
    }
}

impl Source {
    /// Reads `signal`'s [queueing delay](LoadSignal::queue_delay) against
    /// the elevated and overloaded delays, and its
    /// [forecast refusals](LoadSignal::refusing) (refusing `Low`:
    /// `Elevated`; anything above: `Overloaded`).
    pub fn signal<L>(signal: L) -> Self
    where
        L: LoadSignal + Send + Sync + 'static,
    {
        Self {
            kind: Kind::Signal {
                signal: Arc::new(signal),
                load: None,
            },
        }
    }

    /// As [`signal`](Self::signal), and also `Elevated` from a
    /// [load](LoadSignal::load) of `elevated_at`, `Overloaded` from
    /// `overloaded_at`. An `overloaded_at` below `elevated_at` is an error.
    pub fn signal_load<L>(
        signal: L,
        elevated_at: usize,
        overloaded_at: usize,
    ) -> Result<Self, ConfigError>
    where
        L: LoadSignal + Send + Sync + 'static,
    {
        if overloaded_at < elevated_at {
            return Err(ConfigError::new(
                "overloaded_at",
                "must not be below elevated_at",
            ));
        }
        Ok(Self {
            kind: Kind::Signal {
                signal: Arc::new(signal),
                load: Some((elevated_at, overloaded_at)),
            },
        })
    }

    /// Reads the level `f` returns. It is called at most once per
    /// evaluation interval, under the handle's lock: keep it quick.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn() -> LoadLevel + Send + Sync + 'static,
    {
        Self {
            kind: Kind::Level(Arc::new(f)),
        }
    }
}

/// What the sources showed at one moment: the worst level, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reading {
    pub(super) level: LoadLevel,
    /// What showed it (empty for `Normal`).
    pub(super) because: &'static str,
}

impl Reading {
    pub(super) const CALM: Self = Self {
        level: LoadLevel::Normal,
        because: "",
    };

    fn new(level: LoadLevel, because: &'static str) -> Self {
        Self { level, because }
    }

    /// The worse of two readings; the first on a tie.
    pub(super) fn worst(self, other: Self) -> Self {
        if other.level > self.level {
            other
        } else {
            self
        }
    }
}

/// The numbers that turn a source's figures into a level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Triggers {
    /// In flight over limit from which a limiter is nearly full.
    pub(super) saturation: f64,
    pub(super) elevated_delay: Duration,
    pub(super) overloaded_delay: Duration,
}

impl Default for Triggers {
    fn default() -> Self {
        Self {
            saturation: 0.9,
            elevated_delay: Duration::from_millis(20),
            overloaded_delay: Duration::from_millis(100),
        }
    }
}

impl Triggers {
    fn delay(&self, delay: Option<Duration>) -> Reading {
        match delay {
            Some(d) if d >= self.overloaded_delay => {
                Reading::new(LoadLevel::Overloaded, "queue delay")
            }
            Some(d) if d >= self.elevated_delay => Reading::new(LoadLevel::Elevated, "queue delay"),
            _ => Reading::CALM,
        }
    }

    fn refusing(refusing: Option<Priority>, because: &'static str) -> Reading {
        match refusing {
            None => Reading::CALM,
            Some(Priority::Low) => Reading::new(LoadLevel::Elevated, because),
            Some(_) => Reading::new(LoadLevel::Overloaded, because),
        }
    }

    /// A limiter's figures; `refused` counts capacity refusals since the
    /// last reading.
    pub(super) fn limit(
        &self,
        in_flight: usize,
        limit: usize,
        oldest_wait: Option<Duration>,
        refusing: Option<Priority>,
        refused: u64,
    ) -> Reading {
        let full = limit > 0 && in_flight as f64 >= self.saturation * limit as f64;
        let mut reading = Reading::CALM;
        if full {
            reading = Reading::new(LoadLevel::Elevated, "limit saturated");
        }
        if refused > 0 {
            reading = reading.worst(Reading::new(LoadLevel::Elevated, "limiter refused"));
        }
        reading
            .worst(self.delay(oldest_wait))
            .worst(Self::refusing(refusing, "limiter refusing"))
    }

    /// A shedder's figures: the highest priority its adaptive level sheds,
    /// and how many of each priority it shed since the last reading.
    pub(super) fn shed(level_sheds: Option<Priority>, shed: [u64; 4]) -> Reading {
        let counted = Priority::ALL
            .into_iter()
            .rev()
            .find(|p| shed[p.index()] > 0);
        let highest = level_sheds.max(counted);
        match highest {
            None => Reading::CALM,
            Some(Priority::Low) => Reading::new(LoadLevel::Elevated, "shedding low"),
            Some(_) => Reading::new(LoadLevel::Overloaded, "shedding above low"),
        }
    }

    /// A load signal's figures.
    pub(super) fn signal(
        &self,
        delay: Option<Duration>,
        refusing: Option<Priority>,
        load: Option<(usize, (usize, usize))>,
    ) -> Reading {
        let by_load = match load {
            Some((load, (_, overloaded))) if load >= overloaded => {
                Reading::new(LoadLevel::Overloaded, "signal load")
            }
            Some((load, (elevated, _))) if load >= elevated => {
                Reading::new(LoadLevel::Elevated, "signal load")
            }
            _ => Reading::CALM,
        };
        self.delay(delay)
            .worst(Self::refusing(refusing, "signal refusing"))
            .worst(by_load)
    }
}

/// A source with what it remembers between readings: the refusal counts
/// it last saw, so a reading counts only what happened since.
pub(super) struct Reader {
    source: Source,
    seen: [u64; 4],
}

impl Reader {
    pub(super) fn new(source: Source) -> Self {
        let seen = Self::counts(&source.kind);
        Self { source, seen }
    }

    fn counts(kind: &Kind) -> [u64; 4] {
        match kind {
            Kind::Limit(h) => [h.refused_for_capacity(), 0, 0, 0],
            Kind::Shed(h) => h.shed_counts(),
            Kind::Signal { .. } | Kind::Level(_) => [0; 4],
        }
    }

    /// What happened since the last reading, per counter.
    fn since(&mut self) -> [u64; 4] {
        let now = Self::counts(&self.source.kind);
        let since = std::array::from_fn(|i| now[i].wrapping_sub(self.seen[i]));
        self.seen = now;
        since
    }

    pub(super) fn read(&mut self, triggers: &Triggers) -> Reading {
        let since = self.since();
        match &self.source.kind {
            Kind::Limit(h) => triggers.limit(
                h.in_flight(),
                h.limit(),
                h.oldest_wait(),
                h.refusing(),
                since[0],
            ),
            Kind::Shed(h) => Triggers::shed(h.level_sheds(), since),
            Kind::Signal { signal, load } => triggers.signal(
                signal.queue_delay(),
                signal.refusing(),
                load.map(|at| (signal.load(), at)),
            ),
            Kind::Level(f) => {
                let level = f();
                if level == LoadLevel::Normal {
                    Reading::CALM
                } else {
                    Reading::new(level, "source")
                }
            }
        }
    }
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LoadLevel::{Elevated, Normal, Overloaded};

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn a_limiter_reads_by_saturation_delay_and_refusals() {
        let t = Triggers::default();
        let level = |in_flight, limit, wait, refusing, refused| {
            t.limit(in_flight, limit, wait, refusing, refused).level
        };
        assert_eq!(level(0, 20, None, None, 0), Normal);
        assert_eq!(level(17, 20, None, None, 0), Normal);
        assert_eq!(level(18, 20, None, None, 0), Elevated);
        assert_eq!(level(25, 20, None, None, 0), Elevated);
        assert_eq!(
            level(0, 0, None, None, 0),
            Normal,
            "no limit, no saturation"
        );
        assert_eq!(level(5, 20, ms(19), None, 0), Normal);
        assert_eq!(level(5, 20, ms(20), None, 0), Elevated);
        assert_eq!(level(5, 20, ms(100), None, 0), Overloaded);
        assert_eq!(level(5, 20, None, None, 3), Elevated);
        assert_eq!(level(5, 20, None, Some(Priority::Low), 0), Elevated);
        assert_eq!(level(5, 20, None, Some(Priority::Default), 0), Overloaded);
        let r = t.limit(20, 20, ms(150), None, 0);
        assert_eq!(r, Reading::new(Overloaded, "queue delay"));
    }

    #[test]
    fn a_shedder_reads_by_what_it_sheds() {
        assert_eq!(Triggers::shed(None, [0; 4]), Reading::CALM);
        assert_eq!(Triggers::shed(Some(Priority::Low), [0; 4]).level, Elevated);
        assert_eq!(Triggers::shed(None, [7, 0, 0, 0]).level, Elevated);
        assert_eq!(Triggers::shed(None, [7, 1, 0, 0]).level, Overloaded);
        assert_eq!(
            Triggers::shed(Some(Priority::High), [0; 4]).level,
            Overloaded
        );
    }

    #[test]
    fn a_signal_reads_by_delay_forecast_and_load() {
        let t = Triggers::default();
        assert_eq!(t.signal(None, None, None), Reading::CALM);
        assert_eq!(t.signal(ms(30), None, None).level, Elevated);
        assert_eq!(t.signal(None, Some(Priority::High), None).level, Overloaded);
        assert_eq!(t.signal(None, None, Some((9, (10, 50)))).level, Normal);
        assert_eq!(t.signal(None, None, Some((10, (10, 50)))).level, Elevated);
        assert_eq!(t.signal(None, None, Some((50, (10, 50)))).level, Overloaded);
    }

    #[tokio::test]
    async fn readers_count_refusals_since_their_last_reading() {
        use crate::shed::{PriorityShedLayer, Thresholds};
        use tower::{Service, ServiceExt};

        // Static thresholds: with one request in flight, Low and Default
        // are refused (the ladder of 1 admits one of each tier).
        let layer = PriorityShedLayer::new(Thresholds::ladder(1));
        let mut reader = Reader::new(layer.handle().into());
        let t = Triggers::default();
        assert_eq!(reader.read(&t), Reading::CALM);
        let mut svc = tower_layer::Layer::layer(
            &layer,
            tower::service_fn(|_: http::Request<()>| {
                std::future::pending::<Result<(), std::convert::Infallible>>()
            }),
        );
        let request = |p: Priority| {
            let mut req = http::Request::new(());
            req.extensions_mut().insert(p);
            req
        };
        let held = svc.ready().await.unwrap().call(request(Priority::Critical));
        assert!(
            svc.ready()
                .await
                .unwrap()
                .call(request(Priority::Low))
                .await
                .is_err()
        );
        assert_eq!(reader.read(&t), Reading::new(Elevated, "shedding low"));
        assert_eq!(reader.read(&t), Reading::CALM, "counted once");
        assert!(
            svc.ready()
                .await
                .unwrap()
                .call(request(Priority::Default))
                .await
                .is_err()
        );
        assert_eq!(
            reader.read(&t),
            Reading::new(Overloaded, "shedding above low")
        );
        drop(held);
    }
}
