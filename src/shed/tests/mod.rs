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
                        state.admit(Priority::Low, || None, None, &policy)
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
    let mut permits: Vec<ShedPermit> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (state, barrier, policy) =
                    (Arc::clone(&state), Arc::clone(&barrier), policy.clone());
                s.spawn(move || {
                    barrier.wait();
                    state.admit(Priority::Low, || None, state.signal.get(), &policy)
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
            .admit(Priority::Low, || None, state.signal.get(), &policy)
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

mod adaptive;
#[cfg(feature = "http")]
mod http_face;
#[cfg(feature = "tracing")]
mod logs;
