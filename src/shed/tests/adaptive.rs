//! The adaptive level against simulated servers and signals.

use super::*;

/// A simulated server that serves `capacity` requests at a time, each for
/// `service`, queueing the rest in FIFO order: latency inflates when it is
/// overloaded.
fn simulated_server(
    capacity: usize,
    service: Duration,
) -> impl Service<Priority, Response = (), Error = Infallible, Future: Send> + Clone {
    let slots = Arc::new(Semaphore::new(capacity));
    service_fn(move |_p: Priority| {
        let slots = Arc::clone(&slots);
        async move {
            let _slot = slots.acquire().await;
            tokio::time::sleep(service).await;
            Ok::<_, Infallible>(())
        }
    })
}

/// Offers `batch` requests every `every` for `duration`, with the mix 5 %
/// Critical, 15 % High, 30 % Default, 50 % Low. Returns (offered, shed) by
/// priority.
async fn offer<S>(
    svc: &S,
    batch: usize,
    every: Duration,
    duration: Duration,
) -> ([u64; 4], [u64; 4])
where
    S: Service<Priority, Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let offered = Arc::new([0, 0, 0, 0].map(AtomicU64::new));
    let shed = Arc::new([0, 0, 0, 0].map(AtomicU64::new));
    let mut n = 0usize;
    let end = tokio::time::Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    while tokio::time::Instant::now() < end {
        for _ in 0..batch {
            let p = match n % 20 {
                0 => Priority::Critical,
                1..=3 => Priority::High,
                4..=9 => Priority::Default,
                _ => Priority::Low,
            };
            n += 1;
            let (svc, offered, shed) = (svc.clone(), Arc::clone(&offered), Arc::clone(&shed));
            tasks.spawn(async move {
                offered[p.index()].fetch_add(1, Ordering::Relaxed);
                if svc.oneshot(p).await.is_err() {
                    shed[p.index()].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep(every).await;
    }
    while tasks.join_next().await.is_some() {}
    let read = |a: &[AtomicU64; 4]| [0, 1, 2, 3].map(|i| a[i].load(Ordering::Relaxed));
    (read(&offered), read(&shed))
}

#[tokio::test(start_paused = true)]
async fn adaptive_level_settles_under_overload_and_recovers() {
    // Capacity 800 requests/s (8 at a time, 10 ms each); offered 2 000/s, of
    // which Critical and High are 400/s and Default 600/s.
    let layer = PriorityShedLayer::builder(Adaptive::default())
        .classify(|p: &Priority| *p)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(simulated_server(8, Duration::from_millis(10)));

    let sample = |n: usize| {
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut levels = Vec::new();
            for _ in 0..n {
                tokio::time::sleep(Duration::from_millis(100)).await;
                levels.push(handle.level().unwrap());
            }
            levels
        })
    };
    let sampler = sample(60);
    let ms = Duration::from_millis(1);
    let (offered, shed) = offer(&svc, 2, ms, Duration::from_secs(6)).await;
    let levels = sampler.await.unwrap();

    let fraction = |p: Priority| shed[p.index()] as f64 / offered[p.index()] as f64;
    assert_eq!(shed[Priority::Critical.index()], 0, "{shed:?}");
    assert!(fraction(Priority::Low) > 0.9, "{shed:?} of {offered:?}");
    assert!(fraction(Priority::Low) >= fraction(Priority::Default));
    assert!(fraction(Priority::Default) >= fraction(Priority::High));
    assert!(fraction(Priority::High) < 0.1, "{shed:?} of {offered:?}");
    // Settled: over the last four seconds the level stays inside the
    // Default tier, partially shedding it (High and Critical whole, Low
    // shed), instead of flapping between tiers.
    let tail = &levels[20..];
    assert!(
        tail.iter().all(|l| (256..384).contains(l)),
        "levels {levels:?}"
    );

    // Load drops to 250/s: the level climbs back to the top, slowly.
    let sampler = sample(120);
    let (_, shed_after) = offer(&svc, 1, 4 * ms, Duration::from_secs(12)).await;
    let levels = sampler.await.unwrap();
    assert!(levels[5] < 512, "not at once: {levels:?}");
    assert_eq!(*levels.last().unwrap(), 512, "recovered: {levels:?}");
    assert!(shed_after.iter().sum::<u64>() < offered.iter().sum::<u64>() / 10);
}

#[tokio::test(start_paused = true)]
async fn adaptive_steers_on_queue_delay_when_the_signal_has_one() {
    struct Queue(Arc<AtomicU64>);
    impl LoadSignal for Queue {
        fn load(&self) -> usize {
            0
        }
        fn queue_delay(&self) -> Option<Duration> {
            Some(Duration::from_millis(self.0.load(Ordering::Relaxed)))
        }
    }
    let delay = Arc::new(AtomicU64::new(100));
    let layer = PriorityShedLayer::builder(Adaptive::default())
        .classify(|p: &Priority| *p)
        .signal(Queue(Arc::clone(&delay)))
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_p: Priority| async { Ok::<_, Infallible>(()) }));
    let ms = Duration::from_millis(1);
    offer(&svc, 1, ms, Duration::from_secs(2)).await;
    assert_eq!(handle.level(), Some(128), "fell to Critical only");
    delay.store(1, Ordering::Relaxed);
    offer(&svc, 1, ms, Duration::from_secs(2)).await;
    let level = handle.level().unwrap();
    assert!(level > 128 + 40, "rising slowly: {level}");
    assert!(level < 512, "but not at once: {level}");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_signal_does_not_freeze_the_adaptive_level() {
    /// A queue delay, and a panic the first time it is read after `panic`
    /// is set.
    struct Flaky {
        delay: Arc<AtomicU64>,
        panic: Arc<std::sync::atomic::AtomicBool>,
    }
    impl LoadSignal for Flaky {
        fn load(&self) -> usize {
            0
        }
        fn queue_delay(&self) -> Option<Duration> {
            assert!(!self.panic.swap(false, Ordering::Relaxed), "a signal's bug");
            Some(Duration::from_millis(self.delay.load(Ordering::Relaxed)))
        }
    }
    let delay = Arc::new(AtomicU64::new(100));
    let panic = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let layer = PriorityShedLayer::builder(Adaptive::default())
        .classify(|p: &Priority| *p)
        .signal(Flaky {
            delay: Arc::clone(&delay),
            panic: Arc::clone(&panic),
        })
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_p: Priority| async { Ok::<_, Infallible>(()) }));
    let ms = Duration::from_millis(1);
    offer(&svc, 1, ms, Duration::from_secs(2)).await;
    assert_eq!(handle.level(), Some(128), "fell to Critical only");
    // The queue empties; the next window's reading panics (in the request
    // that closes it, with the controller locked) ...
    delay.store(1, Ordering::Relaxed);
    panic.store(true, Ordering::Relaxed);
    offer(&svc, 1, ms, Duration::from_secs(2)).await;
    assert!(!panic.load(Ordering::Relaxed), "the signal panicked");
    // ... and the windows after it still move the level.
    let level = handle.level().unwrap();
    assert!(level > 128 + 40, "rising: {level}");
    let _ = handle.snapshot();
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn stamped_cohorts_are_shed_consistently() {
    use crate::priority::Cohort;

    // A signal with a queue 100 ms deep: over the 20 ms target.
    struct Deep;
    impl LoadSignal for Deep {
        fn load(&self) -> usize {
            0
        }
        fn queue_delay(&self) -> Option<Duration> {
            Some(Duration::from_millis(100))
        }
    }
    let layer = PriorityShedLayer::builder(Adaptive::default())
        .signal(Deep)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(
        |_req: http::Request<http_body_util::Empty<bytes::Bytes>>| async {
            Ok::<_, Infallible>(())
        },
    ));
    let request = |p: Priority, cohort: u8| {
        let mut req = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        req.extensions_mut().insert(p);
        req.extensions_mut().insert(Cohort::new(cohort).unwrap());
        req
    };
    // One window over target: the level falls from 512 to 416, so Low
    // cohorts 96..=127 stay admitted and 0..=95 are shed.
    svc.clone()
        .oneshot(request(Priority::Low, 0))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(101)).await;
    let _ = svc.clone().oneshot(request(Priority::High, 0)).await;
    assert_eq!(handle.level(), Some(416));
    for _ in 0..20 {
        assert!(
            svc.clone()
                .oneshot(request(Priority::Low, 95))
                .await
                .is_err()
        );
        svc.clone()
            .oneshot(request(Priority::Low, 96))
            .await
            .unwrap();
        svc.clone()
            .oneshot(request(Priority::Default, 0))
            .await
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_the_backlog_over_the_completion_rate() {
    let load = Arc::new(AtomicU64::new(5_000));
    let signal = {
        let load = Arc::clone(&load);
        move || load.load(Ordering::Relaxed) as usize
    };
    let svc = PriorityShedLayer::builder(Thresholds::ladder(100))
        .classify(by_name)
        .signal(signal)
        .build()
        .layer(ok_service());
    let hint = |err: BoxError| overloaded(&err).retry_after().unwrap();

    // Before any rate is measured: the 1 s floor, jittered up to 20 % and
    // rounded to whole seconds at random (so 1 s, sometimes 2 s).
    let first = hint(svc.clone().oneshot("low").await.unwrap_err());
    assert!(
        first == Duration::from_secs(1) || first == Duration::from_secs(2),
        "{first:?}"
    );

    // 500 completions in half a second: 1 000/s. A backlog of 5 000 drains
    // in 5 s.
    for _ in 0..500 {
        svc.clone().oneshot("critical").await.unwrap();
    }
    tokio::time::advance(Duration::from_millis(500)).await;
    // The rate is measured on a tier's first refusal and every sixteenth
    // after it: Low's second refusal still has no rate (the floor again) ...
    let stale = hint(svc.clone().oneshot("low").await.unwrap_err());
    assert!(stale <= Duration::from_secs(2), "{stale:?}");
    // ... and Default's first measures it.
    let h = hint(svc.clone().oneshot("default").await.unwrap_err());
    assert!(
        h >= Duration::from_secs(5) && h <= Duration::from_secs(6),
        "{h:?}"
    );
    // Low's seventeenth refusal measures it again: the same.
    for _ in 2..16 {
        let _ = svc.clone().oneshot("low").await;
    }
    let h = hint(svc.clone().oneshot("low").await.unwrap_err());
    assert!(
        h >= Duration::from_secs(5) && h <= Duration::from_secs(6),
        "{h:?}"
    );

    // A deeper backlog, a longer hint; and never past the 30 s cap.
    load.store(20_000, Ordering::Relaxed);
    let h = hint(svc.clone().oneshot("default").await.unwrap_err());
    assert!(
        h >= Duration::from_secs(20) && h <= Duration::from_secs(24),
        "{h:?}"
    );
    load.store(10_000_000, Ordering::Relaxed);
    let h = hint(svc.clone().oneshot("high").await.unwrap_err());
    assert_eq!(h, Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn an_idle_service_recovers_by_the_windows_it_sat_idle() {
    let delay = Arc::new(AtomicU64::new(100));
    struct Queue(Arc<AtomicU64>);
    impl LoadSignal for Queue {
        fn load(&self) -> usize {
            0
        }
        fn queue_delay(&self) -> Option<Duration> {
            Some(Duration::from_millis(self.0.load(Ordering::Relaxed)))
        }
    }
    let layer = PriorityShedLayer::builder(Adaptive::default())
        .classify(|p: &Priority| *p)
        .signal(Queue(Arc::clone(&delay)))
        .build();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_p: Priority| async { Ok::<_, Infallible>(()) }));
    for _ in 0..40 {
        let _ = svc.clone().oneshot(Priority::Critical).await;
        tokio::time::advance(Duration::from_millis(101)).await;
    }
    assert_eq!(handle.level(), Some(128));
    // The queue empties and nobody calls for a minute: the first caller
    // finds the level back at the top.
    delay.store(0, Ordering::Relaxed);
    tokio::time::advance(Duration::from_secs(60)).await;
    svc.clone().oneshot(Priority::Low).await.unwrap();
    assert_eq!(handle.level(), Some(512));
}

/// A signal that forecasts its own refusals: adaptive mode refuses exactly
/// the priorities it names, at once, and stops the moment it names none.
#[tokio::test(start_paused = true)]
async fn adaptive_follows_a_signal_that_forecasts_its_refusals() {
    use std::sync::atomic::AtomicUsize;

    /// `refusing`: 0 none, else the index + 1 of the highest refused.
    struct Forecast(Arc<AtomicUsize>);
    impl LoadSignal for Forecast {
        fn load(&self) -> usize {
            1_000_000
        }
        fn queue_delay(&self) -> Option<Duration> {
            Some(Duration::from_secs(10))
        }
        fn forecasts_refusals(&self) -> bool {
            true
        }
        fn refusing(&self) -> Option<Priority> {
            match self.0.load(Ordering::Relaxed) {
                0 => None,
                n => Some(Priority::ALL[n - 1]),
            }
        }
    }
    let refusing = Arc::new(AtomicUsize::new(Priority::Default.index() + 1));
    let svc = PriorityShedLayer::builder(Adaptive::default())
        .classify(by_name)
        .signal(Forecast(Arc::clone(&refusing)))
        .build()
        .layer(ok_service());
    // However long the queue delay, only what the signal refuses is shed:
    // Low and Default, not High.
    for _ in 0..3 {
        for p in ["low", "default"] {
            let err = svc.clone().oneshot(p).await.unwrap_err();
            assert_eq!(overloaded(&err).reason(), Reason::Shed, "{p}");
        }
        svc.clone().oneshot("high").await.unwrap();
        svc.clone().oneshot("critical").await.unwrap();
        tokio::time::advance(Duration::from_millis(150)).await;
    }
    // Critical is left to the limiter even if the signal names it.
    refusing.store(Priority::Critical.index() + 1, Ordering::Relaxed);
    svc.clone().oneshot("critical").await.unwrap();
    assert!(svc.clone().oneshot("high").await.is_err());
    // The overload ends: everything is admitted at once, no window to wait.
    refusing.store(0, Ordering::Relaxed);
    for p in ["low", "default", "high", "critical"] {
        svc.clone().oneshot(p).await.unwrap();
    }
}
