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

mod queue;
#[cfg(feature = "http")]
mod quota;
