//! The handle's tests: the level through its hysteresis and its lazy
//! evaluation, on a paused clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::*;

#[cfg(feature = "http")]
mod layer;
#[cfg(feature = "tracing")]
mod logs;

/// A source the test turns, counting its reads.
#[derive(Clone, Default)]
pub(super) struct Dial {
    level: Arc<AtomicU8>,
    reads: Arc<AtomicUsize>,
}

impl Dial {
    pub(super) fn set(&self, level: LoadLevel) {
        self.level.store(level as u8, Ordering::Relaxed);
    }

    pub(super) fn source(&self) -> Source {
        let dial = self.clone();
        Source::from_fn(move || {
            dial.reads.fetch_add(1, Ordering::Relaxed);
            LoadLevel::from_index(dial.level.load(Ordering::Relaxed))
        })
    }

    fn reads(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }
}

pub(super) async fn advance(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

/// Polls `handle` every `step` ms until its level is `want`; the time that
/// took, in ms (at most `within`).
async fn poll_until(handle: &DegradeHandle, want: LoadLevel, step: u64, within: u64) -> u64 {
    let mut waited = 0;
    while handle.level() != want {
        assert!(
            waited < within,
            "still {:?} after {waited} ms",
            handle.level()
        );
        advance(step).await;
        waited += step;
    }
    waited
}

#[tokio::test(start_paused = true)]
async fn rises_at_once_and_falls_after_the_hold_with_only_the_handle_polled() {
    let dial = Dial::default();
    let handle = DegradeHandle::new(dial.source());
    assert_eq!(handle.level(), LoadLevel::Normal);

    dial.set(LoadLevel::Elevated);
    // The next evaluation, at most one interval later, raises it.
    assert_eq!(poll_until(&handle, LoadLevel::Elevated, 10, 50).await, 50);
    let snap = handle.snapshot();
    assert_eq!(snap.level, LoadLevel::Elevated);
    assert_eq!(snap.cause, Some("source"));

    // Load falls; nothing but this loop reads the handle. The last elevated
    // reading was just now: the level holds for two seconds, then falls.
    dial.set(LoadLevel::Normal);
    let waited = poll_until(&handle, LoadLevel::Normal, 100, 3_000).await;
    assert!((2_000..=2_100).contains(&waited), "fell after {waited} ms");
    let snap = handle.snapshot();
    assert_eq!(snap.reading, LoadLevel::Normal);
    assert_eq!(snap.cause, None);
    assert_eq!(snap.transitions, 2);
}

#[tokio::test(start_paused = true)]
async fn the_sources_are_read_at_most_once_per_interval() {
    let dial = Dial::default();
    let handle = DegradeHandle::new(dial.source());
    for _ in 0..1_000 {
        handle.level();
    }
    assert_eq!(dial.reads(), 1);
    advance(49).await;
    handle.level();
    assert_eq!(dial.reads(), 1);
    advance(1).await;
    handle.level();
    assert_eq!(dial.reads(), 2);
    // A clone is the same handle.
    handle.clone().level();
    assert_eq!(dial.reads(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_flickering_source_does_not_flap() {
    let dial = Dial::default();
    let handle = DegradeHandle::new(dial.source());
    for i in 0..100 {
        dial.set(if i % 2 == 0 {
            LoadLevel::Elevated
        } else {
            LoadLevel::Normal
        });
        advance(60).await;
        assert_eq!(handle.level(), LoadLevel::Elevated, "at step {i}");
    }
    assert_eq!(handle.snapshot().transitions, 1);
    dial.set(LoadLevel::Normal);
    poll_until(&handle, LoadLevel::Normal, 50, 2_200).await;
    assert_eq!(handle.snapshot().transitions, 2);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_spell_does_not_hold_a_stale_level() {
    let dial = Dial::default();
    let handle = DegradeHandle::new(dial.source());
    dial.set(LoadLevel::Overloaded);
    assert_eq!(handle.level(), LoadLevel::Overloaded);
    dial.set(LoadLevel::Normal);
    // Nobody read the level for ten seconds: the first read finds the
    // service calm, and nothing at a higher level was seen for the hold.
    advance(10_000).await;
    assert_eq!(handle.level(), LoadLevel::Normal);
}

#[tokio::test(start_paused = true)]
async fn steps_down_through_what_was_still_seen() {
    let dial = Dial::default();
    let handle = DegradeHandle::new(dial.source());
    dial.set(LoadLevel::Overloaded);
    assert_eq!(handle.level(), LoadLevel::Overloaded);
    dial.set(LoadLevel::Elevated);
    let waited = poll_until(&handle, LoadLevel::Elevated, 50, 2_100).await;
    assert!((2_000..=2_050).contains(&waited), "{waited}");
    dial.set(LoadLevel::Normal);
    let waited = poll_until(&handle, LoadLevel::Normal, 50, 2_100).await;
    assert!((1_950..=2_050).contains(&waited), "{waited}");
}

#[tokio::test(start_paused = true)]
async fn a_dwell_delays_the_rise() {
    let dial = Dial::default();
    let handle = DegradeHandle::builder(dial.source())
        .raise_after(Duration::from_millis(200))
        .hold(Duration::from_millis(500))
        .build()
        .unwrap();
    dial.set(LoadLevel::Elevated);
    handle.level();
    let waited = poll_until(&handle, LoadLevel::Elevated, 50, 300).await;
    assert_eq!(waited, 200);
    dial.set(LoadLevel::Normal);
    let waited = poll_until(&handle, LoadLevel::Normal, 50, 600).await;
    assert_eq!(waited, 500);
}

#[tokio::test(start_paused = true)]
async fn the_worst_source_wins() {
    let (a, b) = (Dial::default(), Dial::default());
    let handle = DegradeHandle::builder(a.source())
        .source(b.source())
        .build()
        .unwrap();
    a.set(LoadLevel::Elevated);
    assert_eq!(handle.level(), LoadLevel::Elevated);
    b.set(LoadLevel::Overloaded);
    advance(50).await;
    assert_eq!(handle.level(), LoadLevel::Overloaded);
    a.set(LoadLevel::Normal);
    advance(5_000).await;
    assert_eq!(handle.level(), LoadLevel::Overloaded, "b still overloaded");
}

#[tokio::test(start_paused = true)]
async fn a_saturated_limiter_elevates_and_a_drained_one_recovers() {
    use tower::{Service, ServiceExt};

    use crate::limit::{AdaptiveLimitLayer, Fixed};

    let limit = AdaptiveLimitLayer::new(Fixed::new(2).unwrap());
    let handle = DegradeHandle::new(limit.handle());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut svc = tower_layer::Layer::layer(&limit, {
        let gate = Arc::clone(&gate);
        tower::service_fn(move |_: http::Request<()>| {
            let gate = Arc::clone(&gate);
            async move {
                let _ = gate.acquire().await.unwrap();
                Ok::<_, std::convert::Infallible>(())
            }
        })
    });
    let mut held = Vec::new();
    for _ in 0..2 {
        let fut = svc.ready().await.unwrap().call(http::Request::new(()));
        held.push(tokio::spawn(fut));
    }
    tokio::task::yield_now().await;
    assert_eq!(limit.handle().in_flight(), 2);
    assert_eq!(handle.level(), LoadLevel::Elevated);
    assert_eq!(handle.snapshot().cause, Some("limit saturated"));

    gate.add_permits(2);
    for h in held {
        h.await.unwrap().unwrap();
    }
    assert_eq!(limit.handle().in_flight(), 0);
    let waited = poll_until(&handle, LoadLevel::Normal, 100, 2_200).await;
    assert!(waited >= 2_000, "{waited}");
}

#[test]
fn bad_settings_are_refused_when_built() {
    let dial = Dial::default();
    let build = |b: LevelBuilder| b.build().map(|_| ()).unwrap_err().field();
    let b = || DegradeHandle::builder(dial.source());
    assert_eq!(build(b().saturation(0.0)), "saturation");
    assert_eq!(build(b().saturation(1.5)), "saturation");
    assert_eq!(build(b().saturation(f64::NAN)), "saturation");
    let ms = Duration::from_millis;
    assert_eq!(build(b().queue_delay(ms(0), ms(10))), "queue_delay");
    assert_eq!(build(b().queue_delay(ms(50), ms(10))), "queue_delay");
    assert_eq!(build(b().interval(Duration::ZERO)), "interval");
    assert!(b().saturation(1.0).hold(Duration::ZERO).build().is_ok());
    let signal = || 0usize;
    assert_eq!(
        Source::signal_load(signal, 10, 5).unwrap_err().field(),
        "overloaded_at"
    );
    assert!(Source::signal_load(signal, 5, 5).is_ok());
}
