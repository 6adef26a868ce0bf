//! Durations and counts at their extremes, as a user might write them to
//! mean "never" or "unbounded": each is accepted by its builder (or refused
//! there with a `ConfigError`) and none panics or misbehaves on the request
//! path.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use http::HeaderName;
use tower::{Layer, ServiceExt, service_fn};
use tower_spillway::{
    BoxError, LoadSignal, RetryAfterPolicy,
    limit::{AdaptiveLimitLayer, Aimd, Fixed, LatencyTarget},
    priority::Priority,
    rate::{HeaderKey, Quota, RateLimitLayer},
    shed::{Adaptive, PriorityShedLayer},
};

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn a_queue_timeout_of_duration_max_means_wait_as_long_as_it_takes() {
    let layer = AdaptiveLimitLayer::builder(Fixed::new(1).unwrap())
        .classify(|_: &u64| Priority::Default)
        .queue_timeout(Duration::MAX)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    }));
    let first = tokio::spawn(svc.clone().oneshot(100));
    tokio::task::yield_now().await;
    // The second waits for the first, 100 ms, and is served: it is neither
    // refused at once (a deadline that overflowed to "now") nor a panic.
    let second = svc.clone().oneshot(1).await;
    assert_eq!(second.unwrap(), 1);
    assert_eq!(first.await.unwrap().unwrap(), 100);
    let s = handle.snapshot();
    assert_eq!((s.in_flight, s.queued, s.rejected_queue_timeout), (0, 0, 0));
}

#[test]
fn a_retry_after_cap_of_duration_max_still_gives_a_delay() {
    let policy = RetryAfterPolicy::new().cap(Duration::MAX).unwrap();
    for hint in [Duration::MAX, Duration::from_secs(u64::MAX / 2), 1500 * MS] {
        let delay = policy.delay(Some(hint));
        assert!(delay >= hint.min(Duration::from_secs(u64::MAX)), "{hint:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_window_of_duration_max_closes_on_its_request_count() {
    /// A queue delay far over the shedder's target.
    struct Slow(Arc<AtomicU64>);
    impl LoadSignal for Slow {
        fn load(&self) -> usize {
            0
        }
        fn queue_delay(&self) -> Option<Duration> {
            Some(Duration::from_millis(self.0.load(Ordering::Relaxed)))
        }
    }
    let layer = PriorityShedLayer::builder(
        Adaptive::builder()
            .window(10, Duration::MAX)
            .baseline_period(Duration::MAX)
            .build()
            .unwrap(),
    )
    .classify(|p: &Priority| *p)
    .signal(Slow(Arc::new(AtomicU64::new(500))))
    .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_p: Priority| async { Ok::<_, Infallible>(()) }));
    for _ in 0..200 {
        let _ = svc.clone().oneshot(Priority::Critical).await;
        tokio::time::advance(MS).await;
    }
    // Windows of ten requests closed and cut the level (holding each cut
    // for at most ten windows' time, which saturates rather than panics).
    assert!(handle.level().unwrap() < 512);
}

#[tokio::test(start_paused = true)]
async fn a_huge_latency_multiple_never_counts_a_sample_slow() {
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(4)
        .latency_target(LatencyTarget::MinRttMultiple {
            multiple: 1e300,
            floor: MS,
            window: 10,
        })
        .build()
        .unwrap();
    let layer = AdaptiveLimitLayer::builder(aimd)
        .classify(|_: &u64| Priority::Default)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(())
    }));
    for ms in [1, 1, 5, 50, 500, 1] {
        svc.clone().oneshot(ms).await.unwrap();
    }
    let s = handle.snapshot();
    assert_eq!((s.samples, s.drops, s.in_flight), (6, 0, 0));
}

#[tokio::test]
async fn max_keys_of_usize_max_is_a_bound_like_any_other() {
    let quota = Quota::per_second(100).unwrap();
    let layer = RateLimitLayer::builder(quota)
        .keyed(HeaderKey::new(HeaderName::from_static("x-key")))
        .max_keys(usize::MAX)
        .unwrap()
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_r: http::Request<()>| async {
        Ok::<_, Infallible>(())
    }));
    let req = http::Request::builder()
        .header("x-key", "a")
        .body(())
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let s = handle.snapshot();
    assert_eq!(s.keys, 1);
    assert!(s.max_keys >= 1 << 20, "{}", s.max_keys);
}
