//! Plumbing tests: the service around the pure core, with mock inner
//! services and a paused clock.

use std::{
    convert::Infallible,
    sync::{
        Arc, Barrier,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Semaphore;
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use super::*;
use crate::{BoxError, LoadSignal, Overloaded, Priority, Reason, find_overloaded};

fn by_name(req: &&'static str) -> Priority {
    req.parse().unwrap_or_default()
}

fn ok_service()
-> impl Service<&'static str, Response = (), Error = Infallible, Future: Send> + Clone {
    service_fn(|_req: &'static str| async { Ok::<_, Infallible>(()) })
}

fn overloaded(err: &BoxError) -> Overloaded {
    *find_overloaded(err.as_ref()).expect("an Overloaded refusal")
}

#[test]
fn static_admission_is_atomic() {
    // A threshold that admits one Low request: however many threads race
    // for it, exactly one gets it.
    let thresholds = Thresholds::builder().low(1).build().unwrap();
    for _ in 0..200 {
        let layer = PriorityShedLayer::new(thresholds);
        let state = Arc::clone(&layer.shared.state);
        let barrier = Arc::new(Barrier::new(4));
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let state = Arc::clone(&state);
                    let barrier = Arc::clone(&barrier);
                    let policy = layer.shared.policy.clone();
                    s.spawn(move || {
                        barrier.wait();
                        state.admit(Priority::Low, None, None, &policy)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            results.iter().filter(|r| r.is_ok()).count()
        });
        assert_eq!(admitted, 1);
        assert_eq!(
            state.in_flight.load(Ordering::Relaxed),
            0,
            "every permit released"
        );
    }
}

#[test]
fn admission_on_an_external_signal_is_atomic() {
    // The signal does not see admissions until the inner service has them:
    // the layer's claims cover the gap.
    let thresholds = Thresholds::builder().low(3).build().unwrap();
    let layer = PriorityShedLayer::builder(thresholds)
        .signal(|| 2usize)
        .build();
    let state = Arc::clone(&layer.shared.state);
    let policy = layer.shared.policy.clone();
    let barrier = Arc::new(Barrier::new(4));
    let mut permits: Vec<Permit> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (state, barrier, policy) =
                    (Arc::clone(&state), Arc::clone(&barrier), policy.clone());
                s.spawn(move || {
                    barrier.wait();
                    state.admit(Priority::Low, None, state.signal.get(), &policy)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().ok())
            .collect()
    });
    assert_eq!(permits.len(), 1);
    // Once the inner service has it, the claim is settled.
    permits[0].settle();
    assert!(
        state
            .admit(Priority::Low, None, state.signal.get(), &policy)
            .is_ok()
    );
}

#[tokio::test]
async fn generic_face_refuses_with_overloaded() {
    let gate = Arc::new(Semaphore::new(0));
    let inner = {
        let gate = Arc::clone(&gate);
        service_fn(move |_req: &'static str| {
            let gate = Arc::clone(&gate);
            async move {
                let _ = gate.acquire().await;
                Ok::<_, Infallible>(())
            }
        })
    };
    let layer = PriorityShedLayer::builder(Thresholds::ladder(20))
        .classify(by_name)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(inner);

    // One Low request fills Low's place (ladder(20): Low below 1).
    let held = tokio::spawn(svc.clone().oneshot("low"));
    tokio::task::yield_now().await;
    while handle.snapshot().in_flight == 0 {
        tokio::task::yield_now().await;
    }

    let err = svc.clone().oneshot("low").await.unwrap_err();
    let o = overloaded(&err);
    assert_eq!(o.reason(), Reason::Shed);
    assert_eq!(o.priority(), Some(Priority::Low));
    let hint = o.retry_after().unwrap();
    assert!(
        hint >= Duration::from_secs(1) && hint <= Duration::from_secs(30),
        "{hint:?}"
    );

    // Higher tiers still pass.
    gate.add_permits(10);
    svc.clone().oneshot("default").await.unwrap();
    svc.clone().oneshot("critical").await.unwrap();
    held.await.unwrap().unwrap();

    let stats = handle.snapshot();
    assert_eq!(stats.shed.low, 1);
    assert_eq!(stats.admitted.total(), 3);
    assert_eq!(stats.in_flight, 0);
    assert!(stats.retry_after_ms >= 1000);
}

#[tokio::test]
async fn critical_is_never_shed_unless_configured() {
    let layer = PriorityShedLayer::builder(Thresholds::ladder(1))
        .classify(by_name)
        .signal(|| 1_000_000usize)
        .build();
    let svc = layer.layer(ok_service());
    for p in ["low", "default", "high"] {
        assert!(svc.clone().oneshot(p).await.is_err(), "{p}");
    }
    svc.clone().oneshot("critical").await.unwrap();

    let strict = Thresholds::builder()
        .low(1)
        .default(1)
        .high(1)
        .critical(2)
        .build()
        .unwrap();
    let svc = PriorityShedLayer::builder(strict)
        .classify(by_name)
        .signal(|| 1_000_000usize)
        .build()
        .layer(ok_service());
    assert!(svc.oneshot("critical").await.is_err());
}

#[tokio::test]
async fn bypassed_requests_are_never_shed_nor_counted() {
    let layer = PriorityShedLayer::builder(Thresholds::ladder(1))
        .classify(by_name)
        .signal(|| 1_000_000usize)
        .bypass(|req: &&'static str| *req == "health")
        .build();
    let handle = layer.handle();
    let svc = layer.layer(ok_service());
    for _ in 0..5 {
        svc.clone().oneshot("health").await.unwrap();
    }
    assert!(svc.clone().oneshot("low").await.is_err());
    let stats = handle.snapshot();
    assert_eq!(stats.bypassed, 5);
    assert_eq!(stats.admitted.total(), 0);
    assert_eq!(stats.shed.total(), 1);
}

#[tokio::test]
async fn permit_released_on_error_cancel_and_panic() {
    let layer = PriorityShedLayer::builder(Thresholds::ladder(100))
        .classify(by_name)
        .build();
    let handle = layer.handle();
    let inner = service_fn(|req: &'static str| async move {
        match req {
            "low" => Err::<(), BoxError>("boom".into()),
            "high" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            _ => panic!("inner panic"),
        }
    });
    let svc = layer.layer(inner);

    let err = svc.clone().oneshot("low").await.unwrap_err();
    assert!(find_overloaded(err.as_ref()).is_none());
    assert_eq!(handle.snapshot().in_flight, 0);

    let pending = tokio::spawn(svc.clone().oneshot("high"));
    while handle.snapshot().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    pending.abort();
    let _ = pending.await;
    assert_eq!(handle.snapshot().in_flight, 0);

    let panicked = tokio::spawn(svc.clone().oneshot("default")).await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(handle.snapshot().in_flight, 0);
    assert_eq!(handle.snapshot().admitted.total(), 3);
}

#[cfg(feature = "http")]
mod http_face {
    use bytes::Bytes;
    use http::{Request, Response, header};
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;
    use crate::http::RejectBody;

    #[tokio::test]
    async fn refusal_is_503_with_retry_after_and_body_holds_the_permit() {
        let layer = PriorityShedLayer::builder(Thresholds::builder().low(1).build().unwrap())
            .http()
            .build();
        let handle = layer.handle();
        type Frames = Vec<Result<http_body::Frame<Bytes>, Infallible>>;
        let inner = service_fn(|_req: Request<http_body_util::Empty<bytes::Bytes>>| async {
            let frames: Frames = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"a"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"b"))),
            ];
            Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
                frames,
            ))))
        });
        let svc = layer.layer(inner);
        let low = || {
            let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
            req.extensions_mut().insert(Priority::Low);
            req
        };

        let res = svc.clone().oneshot(low()).await.unwrap();
        assert_eq!(res.status(), 200);
        // The head has arrived but the body has not ended: still in flight.
        assert_eq!(handle.snapshot().in_flight, 1);
        let refused = svc.clone().oneshot(low()).await.unwrap();
        assert_eq!(refused.status(), 503);
        let secs: u64 = refused.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=30).contains(&secs));
        assert_eq!(
            refused
                .extensions()
                .get::<Overloaded>()
                .map(Overloaded::priority),
            Some(Some(Priority::Low))
        );

        // Dropped half-read: released.
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(handle.snapshot().in_flight, 0);

        // Read to the end: released.
        let res = svc.clone().oneshot(low()).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ab");
        assert_eq!(handle.snapshot().in_flight, 0);
    }

    #[tokio::test]
    async fn grpc_refusal_is_trailers_only_unavailable() {
        let layer = PriorityShedLayer::builder(Thresholds::ladder(1))
            .signal(|| 100usize)
            .http()
            .build();
        let svc = layer.layer(service_fn(
            |_req: Request<http_body_util::Empty<bytes::Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            },
        ));
        let req = Request::builder()
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "14");
        let ms: u64 = res.headers()["grpc-retry-pushback-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1000..=30_000).contains(&ms), "{ms}");
    }

    #[tokio::test]
    async fn custom_rejection_and_health_checks() {
        let make = |o: &Overloaded, _: &crate::http::RequestInfo| {
            let mut res = Response::new(RejectBody::new(o.reason().as_str()));
            *res.status_mut() = http::StatusCode::IM_A_TEAPOT;
            res
        };
        let svc = PriorityShedLayer::builder(Thresholds::ladder(1))
            .signal(|| 100usize)
            .bypass(HealthChecks)
            .rejection(make)
            .build()
            .layer(service_fn(
                |_req: Request<http_body_util::Empty<bytes::Bytes>>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                },
            ));
        let res = svc
            .clone()
            .oneshot(
                Request::get("/x")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 418);
        let res = svc
            .oneshot(
                Request::get("/readyz")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

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

#[cfg(feature = "tracing")]
mod logs {
    use std::sync::Mutex;

    use tracing::{Event, Level, Metadata, Subscriber, span};

    use super::*;

    /// Records every event's level and message.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(Level, String)>>>);

    struct Message<'a>(&'a mut String);

    impl tracing::field::Visit for Message<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                *self.0 = format!("{value:?}");
            }
        }
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut message = String::new();
            event.record(&mut Message(&mut message));
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message));
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_and_summaries_not_requests() {
        let recorder = Recorder::default();
        let _guard = tracing::subscriber::set_default(recorder.clone());
        let load = Arc::new(AtomicU64::new(1_000));
        let signal = {
            let load = Arc::clone(&load);
            move || load.load(Ordering::Relaxed) as usize
        };
        let svc = PriorityShedLayer::builder(Thresholds::ladder(100))
            .classify(by_name)
            .signal(signal)
            .build()
            .layer(ok_service());
        for _ in 0..1_000 {
            assert!(svc.clone().oneshot("low").await.is_err());
        }
        let events = std::mem::take(&mut *recorder.0.lock().unwrap());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, Level::WARN);
        assert_eq!(events[0].1, "shedding started");

        // Ten seconds on, the next refusal brings a summary.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(svc.clone().oneshot("low").await.is_err());
        let events = std::mem::take(&mut *recorder.0.lock().unwrap());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].1, "shed 1001 requests in the last 10 s");

        // Load gone: a quiet period later, the tier is reported recovered.
        load.store(0, Ordering::Relaxed);
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..5_000 {
            svc.clone().oneshot("low").await.unwrap();
        }
        let events = std::mem::take(&mut *recorder.0.lock().unwrap());
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].1, "shedding stopped");
    }
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn snapshot_serialises_to_json() {
    let layer = PriorityShedLayer::builder(Thresholds::ladder(100))
        .classify(by_name)
        .signal(|| 50usize)
        .build();
    let handle = layer.handle();
    let svc = layer.layer(ok_service());
    assert!(svc.clone().oneshot("low").await.is_err());
    svc.oneshot("high").await.unwrap();
    let json = serde_json::to_value(handle.snapshot()).unwrap();
    assert_eq!(json["mode"]["kind"], "static");
    assert_eq!(json["mode"]["thresholds"]["low"], 5);
    assert_eq!(
        json["mode"]["thresholds"]["critical"],
        serde_json::Value::Null
    );
    assert_eq!(json["load"], 50);
    assert_eq!(json["shed"]["low"], 1);
    assert_eq!(json["admitted"]["high"], 1);

    let adaptive = PriorityShedLayer::new(Adaptive::default()).handle();
    let json = serde_json::to_value(adaptive.snapshot()).unwrap();
    assert_eq!(json["mode"]["kind"], "adaptive");
    assert_eq!(json["mode"]["level"], 512);
    assert_eq!(json["mode"]["target_ms"], 20);
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

#[tokio::test]
async fn claims_cover_requests_until_the_inner_future_is_polled() {
    // The signal counts a request only once the inner service's future has
    // been polled, as a limiter that enqueues on first poll does.
    let seen = Arc::new(AtomicU64::new(0));
    let signal = {
        let seen = Arc::clone(&seen);
        move || seen.load(Ordering::Relaxed) as usize
    };
    let inner = {
        let seen = Arc::clone(&seen);
        service_fn(move |_req: &'static str| {
            let seen = Arc::clone(&seen);
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(())
            }
        })
    };
    let mut svc = PriorityShedLayer::builder(Thresholds::builder().low(2).build().unwrap())
        .classify(by_name)
        .signal(signal)
        .build()
        .layer(inner);
    fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(f).poll(&mut cx)
    }
    let call = |svc: &mut PriorityShed<_, _, _, _>| Box::pin(svc.call("low"));

    svc.ready().await.unwrap();
    let mut first = call(&mut svc);
    svc.ready().await.unwrap();
    let second = call(&mut svc);
    // Two admitted, neither visible to the signal yet: the third is shed.
    svc.ready().await.unwrap();
    let mut third = call(&mut svc);
    assert!(matches!(
        poll_once(&mut third),
        std::task::Poll::Ready(Err(_))
    ));
    // The first is polled: the signal counts it, its claim is settled, and
    // the total is still two.
    assert!(poll_once(&mut first).is_pending());
    assert_eq!(seen.load(Ordering::Relaxed), 1);
    svc.ready().await.unwrap();
    let mut fourth = call(&mut svc);
    assert!(matches!(
        poll_once(&mut fourth),
        std::task::Poll::Ready(Err(_))
    ));
    // The second is dropped unpolled: its claim goes with it.
    drop(second);
    svc.ready().await.unwrap();
    let mut fifth = call(&mut svc);
    assert!(poll_once(&mut fifth).is_pending());
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
