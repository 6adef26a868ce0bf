//! Plumbing tests with a paused clock: admission, the queue, permits.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

use super::*;
use crate::{BoxError, LoadSignal, Priority, Reason, find_overloaded};

/// A request: its priority, a name, and the channel that finishes it.
struct Job {
    priority: Priority,
    name: &'static str,
    done: oneshot::Receiver<Result<(), &'static str>>,
}

type Started = Arc<Mutex<Vec<&'static str>>>;

#[derive(Clone)]
struct Backend {
    started: Started,
}

impl Service<Job> for Backend {
    type Response = &'static str;
    type Error = &'static str;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, &'static str>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: Job) -> Self::Future {
        self.started.lock().unwrap().push(job.name);
        Box::pin(async move {
            match job.done.await {
                Ok(Ok(())) => Ok(job.name),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("finisher dropped"),
            }
        })
    }
}

fn by_priority(job: &Job) -> Priority {
    job.priority
}

type Svc = AdaptiveLimit<Backend, crate::AsError, ByResult, fn(&Job) -> Priority>;

fn setup(layer: AdaptiveLimitBuilder) -> (Svc, LimitHandle, Started) {
    let started = Started::default();
    let layer = layer.classify(by_priority as fn(&Job) -> Priority).build();
    let handle = layer.handle();
    let svc = tower::Layer::layer(
        &layer,
        Backend {
            started: started.clone(),
        },
    );
    (svc, handle, started)
}

type Call = tokio::task::JoinHandle<Result<&'static str, BoxError>>;

/// Sends a job; returns its finisher and the spawned call.
async fn send(
    svc: &mut Svc,
    priority: Priority,
    name: &'static str,
) -> (oneshot::Sender<Result<(), &'static str>>, Call) {
    let (tx, rx) = oneshot::channel();
    let fut = svc.ready().await.unwrap().call(Job {
        priority,
        name,
        done: rx,
    });
    let call = tokio::spawn(fut);
    settle().await;
    (tx, call)
}

async fn settle() {
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
}

fn fixed(n: usize) -> AdaptiveLimitBuilder {
    AdaptiveLimitLayer::builder(Fixed::new(n).unwrap())
}

fn reason(res: Result<&'static str, BoxError>) -> Reason {
    let err = res.expect_err("expected a refusal");
    find_overloaded(err.as_ref())
        .expect("an Overloaded")
        .reason()
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_by_priority_then_arrival() {
    let (mut svc, handle, started) = setup(fixed(1));
    let (first, c0) = send(&mut svc, Priority::Low, "running").await;
    let mut queued = Vec::new();
    for (p, name) in [
        (Priority::Low, "low-1"),
        (Priority::Default, "default-1"),
        (Priority::Critical, "critical-1"),
        (Priority::Low, "low-2"),
        (Priority::Critical, "critical-2"),
        (Priority::High, "high-1"),
    ] {
        queued.push(send(&mut svc, p, name).await);
    }
    assert_eq!(handle.queued(), 6);
    assert_eq!(handle.queued_by(Priority::Critical), 2);
    assert_eq!(handle.queued_by(Priority::Low), 2);
    assert_eq!(*started.lock().unwrap(), ["running"]);

    first.send(Ok(())).unwrap();
    assert_eq!(c0.await.unwrap().unwrap(), "running");
    // Finish each request as it starts: the order they start in is the
    // queue's order.
    let mut finishers = HashMap::new();
    let mut calls = Vec::new();
    for ((tx, call), name) in queued.into_iter().zip([
        "low-1",
        "default-1",
        "critical-1",
        "low-2",
        "critical-2",
        "high-1",
    ]) {
        finishers.insert(name, tx);
        calls.push(call);
    }
    for _ in 0..6 {
        settle().await;
        let last = *started.lock().unwrap().last().unwrap();
        finishers.remove(last).unwrap().send(Ok(())).unwrap();
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        *started.lock().unwrap(),
        [
            "running",
            "critical-1",
            "critical-2",
            "high-1",
            "default-1",
            "low-1",
            "low-2"
        ]
    );
    assert_eq!(handle.in_flight(), 0);
    let snap = handle.snapshot();
    assert_eq!((snap.admitted, snap.released), (7, 7));
}

#[tokio::test(start_paused = true)]
async fn full_queue_refuses_or_evicts_a_lower_priority() {
    let (mut svc, handle, started) = setup(fixed(1).max_queue(2));
    let (_run, _c0) = send(&mut svc, Priority::Default, "running").await;
    let (_a, a) = send(&mut svc, Priority::Low, "low").await;
    let (_b, _bc) = send(&mut svc, Priority::Default, "default").await;
    assert_eq!(handle.queued(), 2);

    // Same or lower priority than everything queued: refused at once.
    let (_c, c) = send(&mut svc, Priority::Low, "low-2").await;
    assert_eq!(reason(c.await.unwrap()), Reason::QueueFull);

    // Higher: the newest lowest waiter makes room.
    let (_d, _dc) = send(&mut svc, Priority::Critical, "critical").await;
    assert_eq!(reason(a.await.unwrap()), Reason::QueueFull);
    assert_eq!(handle.queued(), 2);
    assert_eq!(handle.queued_by(Priority::Critical), 1);
    assert_eq!(handle.snapshot().rejected_queue_full, 2);
    assert_eq!(*started.lock().unwrap(), ["running"]);
}

#[tokio::test(start_paused = true)]
async fn zero_queue_refuses_at_the_limit() {
    let (mut svc, _handle, _) = setup(fixed(1).max_queue(0));
    let (_run, _c0) = send(&mut svc, Priority::Critical, "running").await;
    let (_b, b) = send(&mut svc, Priority::Critical, "refused").await;
    assert_eq!(reason(b.await.unwrap()), Reason::QueueFull);
}

#[tokio::test(start_paused = true)]
async fn waiter_times_out_and_never_runs() {
    let (mut svc, handle, started) = setup(fixed(1).queue_timeout(Duration::from_millis(300)));
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_w, w) = send(&mut svc, Priority::Default, "waiter").await;
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(handle.oldest_wait(), Some(Duration::from_millis(200)));
    assert_eq!(handle.queue_delay(), Some(Duration::from_millis(200)));
    assert_eq!(handle.load(), 2);
    tokio::time::advance(Duration::from_millis(101)).await;
    settle().await;
    let refused = w.await.unwrap().unwrap_err();
    let o = find_overloaded(refused.as_ref()).unwrap();
    assert_eq!(o.reason(), Reason::QueueTimeout);
    assert_eq!(o.priority(), Some(Priority::Default));
    assert_eq!(handle.queued(), 0);
    assert_eq!(handle.oldest_wait(), None);

    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    assert_eq!(*started.lock().unwrap(), ["running"]);
    assert_eq!(handle.snapshot().rejected_queue_timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn standing_queue_shortens_the_wait_and_expired_waiters_are_refused_at_dequeue() {
    let (mut svc, handle, started) = setup(
        fixed(1)
            .queue_timeout(Duration::from_secs(1))
            .standing_queue(Duration::from_millis(100), Duration::from_millis(10)),
    );
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_old, old) = send(&mut svc, Priority::Default, "old").await;
    // The queue has held a backlog for 150 ms: it is standing.
    tokio::time::advance(Duration::from_millis(150)).await;
    let (young_tx, young) = send(&mut svc, Priority::Default, "young").await;

    // A permit frees: the old waiter is past the short timeout and is
    // refused at the head; the young one runs.
    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    settle().await;
    assert_eq!(reason(old.await.unwrap()), Reason::QueueTimeout);
    assert_eq!(*started.lock().unwrap(), ["running", "young"]);
    young_tx.send(Ok(())).unwrap();
    young.await.unwrap().unwrap();

    // A waiter arriving at a standing queue gets the short timeout itself.
    let (_run2, _c2) = send(&mut svc, Priority::Default, "running-2").await;
    let (_a, a) = send(&mut svc, Priority::Default, "a").await;
    tokio::time::advance(Duration::from_millis(120)).await;
    let (_b, b) = send(&mut svc, Priority::Default, "b").await;
    tokio::time::advance(Duration::from_millis(11)).await;
    settle().await;
    assert_eq!(reason(b.await.unwrap()), Reason::QueueTimeout);
    assert!(
        !a.is_finished(),
        "the first waiter keeps its full timeout until dequeued"
    );
    assert_eq!(handle.queued(), 1);
}

#[tokio::test(start_paused = true)]
async fn critical_waiters_keep_the_full_timeout_in_a_standing_queue() {
    let (mut svc, _handle, started) = setup(
        fixed(1)
            .queue_timeout(Duration::from_secs(1))
            .standing_queue(Duration::from_millis(100), Duration::from_millis(10)),
    );
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_low_tx, low) = send(&mut svc, Priority::Low, "low").await;
    tokio::time::advance(Duration::from_millis(150)).await;
    // The queue is standing: a Low arrival gets 10 ms, a Critical one the
    // full second.
    let (critical_tx, critical) = send(&mut svc, Priority::Critical, "critical").await;
    let (_late_tx, late) = send(&mut svc, Priority::Low, "late").await;
    tokio::time::advance(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(reason(late.await.unwrap()), Reason::QueueTimeout);
    assert!(!critical.is_finished(), "Critical still waits after 200 ms");

    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    settle().await;
    assert_eq!(*started.lock().unwrap(), ["running", "critical"]);
    critical_tx.send(Ok(())).unwrap();
    critical.await.unwrap().unwrap();
    assert_eq!(reason(low.await.unwrap()), Reason::QueueTimeout);
}

#[tokio::test(start_paused = true)]
async fn shrinking_never_cancels_running_work() {
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(4)
        .backoff_ratio(0.5)
        .build()
        .unwrap();
    let (mut svc, handle, _) = setup(AdaptiveLimitLayer::builder(aimd));
    let mut jobs = Vec::new();
    for name in ["a", "b", "c", "d"] {
        jobs.push(send(&mut svc, Priority::Default, name).await);
    }
    let (_e, e) = send(&mut svc, Priority::Default, "e").await;
    assert_eq!((handle.in_flight(), handle.queued()), (4, 1));

    let (tx, call) = jobs.remove(0);
    tx.send(Err("overloaded")).unwrap();
    assert!(call.await.unwrap().is_err());
    assert_eq!(handle.limit(), 2);
    // Three run over a limit of two: none is cancelled, the waiter waits.
    assert_eq!((handle.in_flight(), handle.queued()), (3, 1));
    for (tx, call) in jobs {
        tx.send(Ok(())).unwrap();
        assert!(call.await.unwrap().is_ok());
    }
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    assert!(!e.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_growing_limit_admits_waiters() {
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(2)
        .build()
        .unwrap();
    let (mut svc, handle, started) = setup(AdaptiveLimitLayer::builder(aimd));
    let (a, ac) = send(&mut svc, Priority::Default, "a").await;
    let (_b, _bc) = send(&mut svc, Priority::Default, "b").await;
    let (_c, _cc) = send(&mut svc, Priority::Default, "c").await;
    let (_d, _dc) = send(&mut svc, Priority::Default, "d").await;
    // a finishes with 1 in flight at admission: 1 × 2 ≥ 2, limit 3.
    a.send(Ok(())).unwrap();
    ac.await.unwrap().unwrap();
    settle().await;
    assert_eq!(handle.limit(), 3);
    assert_eq!(*started.lock().unwrap(), ["a", "b", "c", "d"]);
    assert_eq!((handle.in_flight(), handle.queued()), (3, 0));
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiters_leave_the_queue_and_granted_ones_release() {
    let (mut svc, handle, started) = setup(fixed(1));
    let (run, c0) = send(&mut svc, Priority::Default, "running").await;
    let (_w, w) = send(&mut svc, Priority::Default, "cancelled").await;
    assert_eq!(handle.queued(), 1);
    w.abort();
    settle().await;
    assert_eq!(handle.queued(), 0);

    // Granted but dropped before it could poll: the grant is released.
    let (tx, rx) = oneshot::channel::<Result<(), &'static str>>();
    let fut = svc.ready().await.unwrap().call(Job {
        priority: Priority::Default,
        name: "granted",
        done: rx,
    });
    assert_eq!(handle.queued(), 1);
    run.send(Ok(())).unwrap();
    c0.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 1, "granted to the waiting future");
    drop(fut);
    drop(tx);
    assert_eq!(handle.in_flight(), 0);
    let snap = handle.snapshot();
    assert_eq!(snap.admitted, snap.released);
    assert_eq!(*started.lock().unwrap(), ["running"]);
}

#[tokio::test(start_paused = true)]
async fn reserved_shares_admit_beyond_the_limit_only_up_to_the_reserve() {
    let reserved = Reserved::new().share(Priority::Critical, 0.25).unwrap();
    let (mut svc, handle, started) = setup(fixed(4).reserved(reserved));
    let mut keep = Vec::new();
    for name in ["l1", "l2", "l3", "l4"] {
        keep.push(send(&mut svc, Priority::Low, name).await);
    }
    // The limit is reached, but Critical's reserve (ceil(4 × 0.25) = 1) is free.
    keep.push(send(&mut svc, Priority::Critical, "c1").await);
    assert_eq!(handle.in_flight(), 5);
    let (_c2, _c2c) = send(&mut svc, Priority::Critical, "c2").await;
    let (_l5, _l5c) = send(&mut svc, Priority::Low, "l5").await;
    assert_eq!(handle.queued(), 2);

    // The reserved Critical request ends: the next Critical takes its slot
    // even though the global limit is still exceeded.
    let (tx, call) = keep.remove(4);
    tx.send(Ok(())).unwrap();
    call.await.unwrap().unwrap();
    settle().await;
    assert_eq!(started.lock().unwrap().last(), Some(&"c2"));
    assert_eq!((handle.in_flight(), handle.queued()), (5, 1));
    // Low gets a slot only once the total is below the limit.
    for _ in 0..2 {
        let (tx, call) = keep.remove(0);
        tx.send(Ok(())).unwrap();
        call.await.unwrap().unwrap();
    }
    settle().await;
    assert_eq!(started.lock().unwrap().last(), Some(&"l5"));
    assert!(
        Reserved::new()
            .share(Priority::Low, 0.7)
            .and_then(|r| r.share(Priority::High, 0.4))
            .is_err()
    );
    assert!(Reserved::new().share(Priority::Low, -0.1).is_err());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_drops_and_responses_successes() {
    let aimd = Aimd::builder().min_limit(1).build().unwrap();
    let (mut svc, handle, _) = setup(AdaptiveLimitLayer::builder(aimd));
    let (tx, c) = send(&mut svc, Priority::Default, "x").await;
    tx.send(Err("boom")).unwrap();
    let err = c.await.unwrap().unwrap_err();
    assert!(find_overloaded(err.as_ref()).is_none());
    assert_eq!(err.to_string(), "boom");
    assert_eq!(handle.limit(), 18);
    assert_eq!(handle.drops(), 1);
    let snap = handle.snapshot();
    assert_eq!((snap.samples, snap.in_flight), (1, 0));
}

#[test]
fn one_layer_is_one_limit() {
    let layer = fixed(3).build();
    let handle = layer.handle();
    let a = tower::Layer::layer(
        &layer,
        tower::service_fn(|()| async { Ok::<_, BoxError>(()) }),
    );
    let b = tower::Layer::layer(
        &layer.clone(),
        tower::service_fn(|()| async { Ok::<_, BoxError>(()) }),
    );
    assert_eq!(a.handle().limit(), 3);
    assert!(Arc::ptr_eq(&a.shared_for_tests(), &b.shared_for_tests()));
    assert_eq!(handle.limit(), 3);
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn http_face_answers_a_queue_timeout_with_503() {
    use http::{Request, Response};

    let layer = fixed(1)
        .queue_timeout(Duration::from_millis(100))
        .http()
        .build();
    let handle = layer.handle();
    let (hold, held) = oneshot::channel::<()>();
    let held = Arc::new(Mutex::new(Some(held)));
    let svc = tower::Layer::layer(
        &layer,
        tower::service_fn(move |_req: Request<http_body_util::Empty<bytes::Bytes>>| {
            let held = held.lock().unwrap().take();
            async move {
                if let Some(held) = held {
                    let _ = held.await;
                }
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            }
        }),
    );
    let first = tokio::spawn(
        svc.clone()
            .oneshot(Request::new(http_body_util::Empty::<bytes::Bytes>::new())),
    );
    settle().await;
    let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    req.extensions_mut().insert(Priority::High);
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key(http::header::RETRY_AFTER));
    let o = res.extensions().get::<crate::Overloaded>().unwrap();
    assert_eq!(
        (o.reason(), o.priority()),
        (Reason::QueueTimeout, Some(Priority::High))
    );
    assert!(res.body().is_rejected());
    drop(hold);
    first.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[cfg(feature = "serde")]
#[test]
fn snapshot_serialises() {
    let handle = fixed(7).build().handle();
    let json = serde_json::to_value(handle.snapshot()).unwrap();
    assert_eq!(json["limit"], 7);
    assert_eq!(json["queued_by_priority"]["critical"], 0);
    assert_eq!(json["oldest_wait_ms"], serde_json::Value::Null);
}
