//! The shared, lock-free state behind every clone of one layer: admission,
//! the adaptive window's samples, the completion rate and the retry hint.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::core::{Movement, RateMeter, SLOTS, Window, admits_at, drain_time};
use super::{
    log::Log,
    mode::{AdaptiveState, Mode, nanos},
    permit::ShedPermit,
};
use crate::{
    LoadSignal, Overloaded, Priority, Reason, RetryAfterPolicy, priority::Cohort, sync::Padded,
    sync::try_lock,
};

/// How many refusals of a tier share one measurement of the completion rate
/// (see [`State::refuse`]).
const RATE_EVERY: u64 = 16;

/// A load signal shared by the layer's clones.
pub(crate) type DynSignal = Arc<dyn LoadSignal + Send + Sync>;

/// The load signal a layer sheds on, if not its own count.
pub(crate) struct Signal(Option<DynSignal>);

impl Signal {
    pub(crate) fn get(&self) -> Option<&DynSignal> {
        self.0.as_ref()
    }
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// Counters and decisions shared by every clone of one layer.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) mode: Mode,
    /// Requests admitted by this layer and not yet finished.
    pub(crate) in_flight: Padded<AtomicUsize>,
    /// Admissions against an external signal that the signal may not show yet
    /// (from the decision until the inner service's future is first polled).
    pub(super) claims: Padded<AtomicUsize>,
    pub(crate) admitted: Padded<[AtomicU64; 4]>,
    pub(crate) shed: [AtomicU64; 4],
    pub(crate) bypassed: AtomicU64,
    rate: Mutex<RateMeter>,
    /// The last measured completion rate, as `f64` bits (`NaN`: none yet).
    rate_bits: AtomicU64,
    pub(crate) last_hint_ms: AtomicU64,
    /// The load signal, if the layer sheds on one instead of its own count.
    pub(crate) signal: Signal,
    pub(crate) log: Log,
}

impl State {
    pub(crate) fn new(mode: Mode, signal: Option<DynSignal>) -> Self {
        Self {
            mode,
            in_flight: Padded(AtomicUsize::new(0)),
            claims: Padded(AtomicUsize::new(0)),
            admitted: Default::default(),
            shed: Default::default(),
            bypassed: AtomicU64::new(0),
            rate: Mutex::new(RateMeter::new()),
            rate_bits: AtomicU64::new(f64::NAN.to_bits()),
            last_hint_ms: AtomicU64::new(0),
            signal: Signal(signal),
            log: Log::new(),
        }
    }

    /// Requests admitted so far that have finished.
    pub(crate) fn completions(&self) -> u64 {
        let admitted: u64 = self
            .admitted
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum();
        admitted.saturating_sub(self.in_flight.load(Ordering::Relaxed) as u64)
    }

    /// The measured completion rate, per second.
    pub(crate) fn rate(&self) -> Option<f64> {
        let r = f64::from_bits(self.rate_bits.load(Ordering::Relaxed));
        (!r.is_nan()).then_some(r)
    }

    /// The load the layer sheds on: the external signal, or its own count.
    pub(crate) fn load(&self, signal: Option<&DynSignal>) -> usize {
        match signal {
            Some(s) => s.load(),
            None => self.in_flight.load(Ordering::Relaxed),
        }
    }

    /// Admits a request of `priority` or refuses it with an [`Overloaded`].
    /// The static decision is inlined where the request is; the adaptive
    /// one, which may read the clock, is not. The request's `cohort` is
    /// asked for only when the decision needs one (an adaptive level that
    /// cuts through its tier): looking it up is a probe of the request's
    /// extensions.
    #[inline]
    pub(crate) fn admit(
        self: &Arc<Self>,
        priority: Priority,
        cohort: impl FnOnce() -> Option<Cohort>,
        signal: Option<&DynSignal>,
        policy: &RetryAfterPolicy,
    ) -> Result<ShedPermit, Overloaded> {
        let (claimed, start) = match &self.mode {
            Mode::Static(thresholds) => match self.claim_static(thresholds.raw(priority), signal) {
                Ok(claimed) => (claimed, 0),
                Err(load) => return Err(self.refuse(priority, load, signal, policy, None)),
            },
            Mode::Adaptive(adaptive) => (
                false,
                self.admit_adaptive(adaptive, priority, cohort, signal, policy)?,
            ),
        };
        self.admitted[priority.index()].fetch_add(1, Ordering::Relaxed);
        self.log.on_admit();
        Ok(ShedPermit::new(Arc::clone(self), claimed, start))
    }

    /// The adaptive decision: on success the request is counted in flight
    /// and its latency sample's start is returned (0: no sample).
    #[inline(never)]
    fn admit_adaptive(
        &self,
        adaptive: &AdaptiveState,
        priority: Priority,
        cohort: impl FnOnce() -> Option<Cohort>,
        signal: Option<&DynSignal>,
        policy: &RetryAfterPolicy,
    ) -> Result<u64, Overloaded> {
        if signal.is_some_and(|s| s.forecasts_refusals()) {
            // The signal forecasts its own refusals (an adaptive limiter's
            // handle): refuse exactly what it would refuse, now, and nothing
            // it would still serve. Critical is left to the limiter, which
            // serves it first.
            if priority < Priority::Critical
                && signal
                    .and_then(|s| s.refusing())
                    .is_some_and(|refusing| priority <= refusing)
            {
                return Err(self.refuse(priority, usize::MAX, signal, policy, None));
            }
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(0);
        }
        let now = Instant::now();
        let level = self.maybe_close_window(adaptive, now, signal);
        if !admits_level(level, priority, cohort) {
            return Err(self.refuse(priority, usize::MAX, signal, policy, Some(now)));
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(adaptive.since_epoch(now).saturating_add(1))
    }

    /// The atomic half of a static decision. With the layer's own count, a
    /// compare-and-swap on it, so two requests can never both take the last
    /// place under a threshold. With an external signal, the same on the
    /// count of admissions the signal may not show yet. `Ok(true)` when a
    /// claim was taken (to settle once the inner service has the request);
    /// `Err(load)` when refused.
    #[inline]
    fn claim_static(&self, limit: usize, signal: Option<&DynSignal>) -> Result<bool, usize> {
        if limit == usize::MAX {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            return Ok(false);
        }
        match signal {
            None => {
                let mut current = self.in_flight.load(Ordering::Acquire);
                loop {
                    if current >= limit {
                        return Err(current);
                    }
                    match self.in_flight.compare_exchange_weak(
                        current,
                        current + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(false),
                        Err(now) => current = now,
                    }
                }
            }
            Some(signal) => {
                let mut claims = self.claims.load(Ordering::Acquire);
                loop {
                    let load = signal.load().saturating_add(claims);
                    if load >= limit {
                        return Err(load);
                    }
                    match self.claims.compare_exchange_weak(
                        claims,
                        claims + 1,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break,
                        Err(now) => claims = now,
                    }
                }
                self.in_flight.fetch_add(1, Ordering::AcqRel);
                Ok(true)
            }
        }
    }

    /// Counts a refusal and computes its retry hint: how long the backlog
    /// takes to drain at the measured completion rate, in `[1 s, cap]`,
    /// jittered upwards by `policy`.
    ///
    /// The backlog is read on every refusal; the completion rate, which needs
    /// the clock and the meter's lock, is measured again on each tier's
    /// first refusal and every [`RATE_EVERY`]th after it (and whenever the
    /// caller has read the clock anyway). A refusal is then a counter, a
    /// load and a jitter, not a clock read: refusing must stay cheaper than
    /// serving.
    #[cold]
    fn refuse(
        &self,
        priority: Priority,
        load: usize,
        signal: Option<&DynSignal>,
        policy: &RetryAfterPolicy,
        now: Option<Instant>,
    ) -> Overloaded {
        let before = self.shed[priority.index()].fetch_add(1, Ordering::Relaxed);
        let backlog = if load == usize::MAX {
            self.load(signal)
        } else {
            load
        };
        let measure = now.is_some() || before % RATE_EVERY == 0;
        let now = if measure {
            let now = now.unwrap_or_else(Instant::now);
            if let Some(mut meter) = try_lock(&self.rate) {
                if let Some(r) = meter.observe(now, self.completions()) {
                    self.rate_bits.store(r.to_bits(), Ordering::Relaxed);
                }
            }
            Some(now)
        } else {
            None
        };
        let hint = drain_time(backlog, self.rate(), policy.max_delay());
        let delay = policy.delay(Some(hint)).max(Duration::from_secs(1));
        self.last_hint_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
        self.log
            .on_shed(priority, backlog, &self.in_flight, delay, now);
        Overloaded::new(Reason::Shed)
            .with_priority(priority)
            .with_retry_after(delay)
    }

    /// Closes the adaptive window if its time is up and
    /// returns the admission level to decide with.
    #[inline]
    fn maybe_close_window(
        &self,
        adaptive: &AdaptiveState,
        now: Instant,
        signal: Option<&DynSignal>,
    ) -> u32 {
        // Windows full of samples are closed by the completion that fills
        // them; arrivals only look at the time, on a line written once per
        // window, not at the sample count every completion writes.
        let at = adaptive.since_epoch(now);
        if at >= adaptive.deadline_ns.load(Ordering::Relaxed) {
            self.close_window(adaptive, now, at, signal);
        }
        adaptive.level.load(Ordering::Relaxed)
    }

    #[cold]
    fn close_window(
        &self,
        adaptive: &AdaptiveState,
        now: Instant,
        at: u64,
        signal: Option<&DynSignal>,
    ) {
        // One closer at a time; the others decide with the current level. A
        // lock poisoned by a panic (in a user's `LoadSignal`, say) is taken
        // all the same: refusing it would freeze the level for good.
        let Some(mut controller) = try_lock(&adaptive.controller) else {
            return;
        };
        let deadline = adaptive.deadline_ns.load(Ordering::Relaxed);
        if at < deadline
            && adaptive.samples.count.load(Ordering::Relaxed) < adaptive.config.window_requests()
        {
            return; // another thread closed it meanwhile
        }
        let window_ns = nanos(adaptive.config.window_time()).max(1);
        adaptive.samples.count.store(0, Ordering::Relaxed);
        let min_ns = adaptive.samples.min_ns.swap(u64::MAX, Ordering::Relaxed);
        let window = Window {
            min_latency: (min_ns != u64::MAX).then(|| Duration::from_nanos(min_ns)),
            queue_delay: signal.and_then(|s| s.queue_delay()),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        };
        let mut movement = controller.on_window(&window, now);
        // Windows that passed with no arrival at all (nobody closed them)
        // found an idle service, if nothing is running or queued now: it
        // recovers as many windows' worth.
        let idle = (at.saturating_sub(deadline) / window_ns).min(u64::from(SLOTS));
        if idle > 0
            && window.in_flight == 0
            && window
                .queue_delay
                .is_none_or(|d| d <= adaptive.config.target())
        {
            let quiet = Window {
                min_latency: None,
                ..window
            };
            for _ in 0..idle {
                movement = match (movement, controller.on_window(&quiet, now)) {
                    (Movement::Up { from, .. }, Movement::Up { to, .. }) => {
                        Movement::Up { from, to }
                    }
                    (_, m) => m,
                };
            }
        }
        adaptive.level.store(controller.level(), Ordering::Relaxed);
        adaptive
            .deadline_ns
            .store(at.saturating_add(window_ns), Ordering::Relaxed);
        self.log.on_window(movement, controller.last_delay(), now);
    }

    /// Records a completed request's latency in the adaptive window.
    /// `start` is the admission time in nanoseconds since the window
    /// epoch, plus one.
    pub(super) fn sample(&self, start: u64) {
        if let Mode::Adaptive(adaptive) = &self.mode {
            let now = Instant::now();
            let end = adaptive.since_epoch(now);
            let latency = end.saturating_sub(start - 1);
            // Most samples are not the fastest: read before writing.
            if latency < adaptive.samples.min_ns.load(Ordering::Relaxed) {
                adaptive
                    .samples
                    .min_ns
                    .fetch_min(latency, Ordering::Relaxed);
            }
            let count = adaptive.samples.count.fetch_add(1, Ordering::Relaxed) + 1;
            if count >= adaptive.config.window_requests() {
                self.close_window(adaptive, now, end, self.signal.get());
            }
        }
    }
}

/// Whether the adaptive `level` admits `(priority, cohort)`. Without a
/// cohort, a tier the level cuts through gets one at random, so it is shed in
/// proportion.
#[inline]
fn admits_level(level: u32, priority: Priority, cohort: impl FnOnce() -> Option<Cohort>) -> bool {
    let (Some(bottom), Some(top)) = (Cohort::new(0), Cohort::new(127)) else {
        return true;
    };
    if admits_at(level, priority, bottom) {
        return true;
    }
    if !admits_at(level, priority, top) {
        return false;
    }
    let cohort = cohort()
        .or_else(|| Cohort::new(fastrand::u8(..Cohort::COUNT as u8)))
        .unwrap_or(top);
    admits_at(level, priority, cohort)
}
