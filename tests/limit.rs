//! The adaptive limit end to end: real axum, hyper and tonic servers on
//! loopback, a property test of permit accounting, and a multi-thread stress
//! test of the acquire/release path.

mod support;

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, routing::get};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use proptest::prelude::*;
use support::{h1_client, serve_axum};
use tokio::sync::{Notify, mpsc};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_spillway::{
    BoxError, Reason, find_overloaded,
    limit::{AdaptiveLimitBuilder, AdaptiveLimitLayer, Aimd, Fixed, HttpOutcomes, LimitHandle},
};

/// Waits (up to 5 s) until `cond` holds.
async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    support::wait_until_within(Duration::from_secs(5), what, cond).await;
}

/// One limit for every route of a `Router`, held until a streamed body ends;
/// refusals are 503 + Retry-After + problem+json over the wire.
#[tokio::test]
async fn axum_one_limit_across_routes_held_until_the_body_ends() {
    let layer = AdaptiveLimitLayer::builder(Fixed::new(1).unwrap())
        .max_queue(0)
        .http()
        .build();
    let handle = layer.handle();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(4);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let app = Router::new()
        .route(
            "/stream",
            get(move || {
                let rx = rx.lock().unwrap().take().unwrap();
                async move {
                    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|item| (item, rx))
                    });
                    axum::body::Body::from_stream(stream)
                }
            }),
        )
        .route("/other", get(|| async { "other" }))
        .layer(layer);
    let addr = serve_axum(app).await;
    let client = h1_client::<Empty<Bytes>>();

    tx.send(Ok(Bytes::from_static(b"first "))).await.unwrap();
    let streaming = client.request(support::get(addr, "/stream")).await.unwrap();
    assert_eq!(streaming.status(), 200);
    assert_eq!(
        handle.in_flight(),
        1,
        "the head arrived, the body has not ended"
    );

    // Another route, same limit: refused.
    let refused = client.request(support::get(addr, "/other")).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let body = refused.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["type"], "urn:tower-spillway:queue_full");
    assert_eq!(json["priority"], "default");

    // The body ends: the permit is released.
    tx.send(Ok(Bytes::from_static(b"last"))).await.unwrap();
    drop(tx);
    let body = streaming.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "first last");
    wait_until("the permit is released", || handle.in_flight() == 0).await;
    let ok = client.request(support::get(addr, "/other")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let snap = handle.snapshot();
    assert_eq!(snap.rejected_queue_full, 1);
    wait_until("all released", || handle.snapshot().released == 2).await;
}

/// A server whose handlers start answering 503 shrinks its own limit; 4xx
/// answers leave it alone.
#[tokio::test]
async fn axum_handler_overload_shrinks_the_limit() {
    let aimd = Aimd::builder().min_limit(1).build().unwrap();
    let layer = AdaptiveLimitLayer::builder(aimd).http().build();
    let handle = layer.handle();
    let app = Router::new()
        .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }))
        .layer(layer);
    let addr = serve_axum(app).await;
    let client = h1_client::<Empty<Bytes>>();

    let res = client
        .request(support::get(addr, "/missing"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    wait_until("released", || handle.in_flight() == 0).await;
    assert_eq!(handle.limit(), 20);
    assert_eq!(handle.snapshot().samples, 0, "a 4xx is no sample");

    for want in [18, 16, 14] {
        let res = client.request(support::get(addr, "/busy")).await.unwrap();
        assert_eq!(res.status(), 503);
        res.into_body().collect().await.unwrap();
        wait_until("the sample is taken", || handle.limit() == want).await;
    }
    assert_eq!(handle.drops(), 3);
}

/// A gRPC status that arrives in trailers at the end of the body counts.
#[tokio::test]
async fn grpc_status_in_trailers_is_a_drop() {
    let aimd = Aimd::builder().min_limit(1).build().unwrap();
    let layer = AdaptiveLimitLayer::builder(aimd)
        .outcomes(HttpOutcomes::new())
        .build();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_req: Request<()>| async {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "14".parse().unwrap());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
            res.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            Ok::<_, BoxError>(res)
        });
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(handle.limit(), 20, "the head said nothing yet");
    res.into_body().collect().await.unwrap();
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.limit(), 18);
}

mod grpc {
    use std::future::Future;

    use crate::support::{channel, health_request, serve_tonic};
    use tonic::transport::Server;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A server that answers `RESOURCE_EXHAUSTED` (trailers-only) when more
    /// than `quota` calls are in flight; each call takes 20 ms.
    #[derive(Clone)]
    struct Quota<S> {
        inner: S,
        quota: Arc<AtomicUsize>,
        in_flight: Arc<AtomicUsize>,
    }

    impl<S, B> Service<Request<B>> for Quota<S>
    where
        S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
        S::Future: Send,
        B: Send + 'static,
    {
        type Response = Response<tonic::body::Body>;
        type Error = S::Error;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, req: Request<B>) -> Self::Future {
            let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let in_flight = self.in_flight.clone();
            if n > self.quota.load(Ordering::SeqCst) {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let res = tonic::Status::resource_exhausted("over quota").into_http();
                return Box::pin(async move { Ok(res) });
            }
            let fut = self.inner.call(req);
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let res = fut.await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                res
            })
        }
    }

    /// A tonic client behind the limit shrinks it when the server answers
    /// `RESOURCE_EXHAUSTED` over its quota, and grows it back once the quota
    /// is lifted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tonic_client_shrinks_on_resource_exhausted_and_recovers() {
        let quota = Arc::new(AtomicUsize::new(4));
        let (_reporter, health) = tonic_health::server::health_reporter();
        let q = quota.clone();
        let addr = serve_tonic(|incoming| {
            Server::builder()
                .layer(tower::layer::layer_fn(move |inner| Quota {
                    inner,
                    quota: q.clone(),
                    in_flight: Arc::new(AtomicUsize::new(0)),
                }))
                .add_service(health)
                .serve_with_incoming(incoming)
        })
        .await;

        let channel = channel(addr).await;
        let aimd = Aimd::builder()
            .min_limit(1)
            .initial_limit(20)
            .build()
            .unwrap();
        let layer = AdaptiveLimitLayer::builder(aimd)
            .max_queue(100)
            .queue_timeout(Duration::from_secs(5))
            .outcomes(HttpOutcomes::new())
            .build();
        let handle: LimitHandle = layer.handle();
        let limited = ServiceBuilder::new().layer(layer).service(channel);

        let exhausted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let mut client = HealthClient::new(limited.clone());
            let exhausted = exhausted.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let call = client.check(health_request());
                    tokio::select! {
                        res = call => {
                            if let Err(status) = res {
                                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                                exhausted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        () = stop.notified() => return,
                    }
                }
            }));
        }

        // Over quota: the limit comes down to near the quota.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let low = handle.limit();
        assert!(exhausted.load(Ordering::Relaxed) > 0);
        assert!(
            low <= 10,
            "limit {low} should shrink towards the quota of 4"
        );
        assert!(handle.drops() > 0);

        // The quota is lifted: the limit grows back.
        quota.store(1000, Ordering::SeqCst);
        wait_until("the limit grows back", || handle.limit() >= 30).await;

        for _ in 0..tasks.len() {
            stop.notify_waiters();
        }
        for t in tasks {
            stop.notify_waiters();
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        wait_until("every permit is released", || handle.in_flight() == 0).await;
    }
    /// A tonic server with the HTTP face: an open `watch` stream holds its
    /// permit until the stream ends; the call refused meanwhile reaches the
    /// client as `UNAVAILABLE` with a pushback, not `UNKNOWN`.
    #[tokio::test]
    async fn tonic_server_refuses_with_unavailable_while_a_stream_holds_the_permit() {
        let layer = AdaptiveLimitLayer::builder(Fixed::new(1).unwrap())
            .max_queue(0)
            .http()
            .build();
        let handle = layer.handle();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let addr = serve_tonic(|incoming| {
            Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(incoming)
        })
        .await;
        let mut client = HealthClient::new(channel(addr).await);

        let mut stream = client.watch(health_request()).await.unwrap().into_inner();
        assert!(stream.message().await.unwrap().is_some());
        assert_eq!(handle.in_flight(), 1, "the stream holds the permit");

        let refused = client.check(health_request()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.metadata().get("grpc-retry-pushback-ms").is_some());

        drop(stream);
        wait_until("the stream's permit is released", || {
            handle.in_flight() == 0
        })
        .await;
        client.check(health_request()).await.unwrap();
    }
}

/// A hyper client behind the limit: the remote's 429s shrink it, and so
/// does a slowdown past the latency target; it grows back when the remote
/// is fast and willing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_client_shrinks_on_429_and_on_slowdown_and_grows_back() {
    // 0: fast and willing, 1: quota exceeded (429), 2: slow (60 ms).
    let mode = Arc::new(AtomicUsize::new(0));
    let m = mode.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let mode = m.load(Ordering::SeqCst);
            async move {
                match mode {
                    1 => StatusCode::TOO_MANY_REQUESTS,
                    2 => {
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        StatusCode::OK
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        StatusCode::OK
                    }
                }
            }
        }),
    );
    let addr = serve_axum(app).await;
    let aimd = Aimd::builder()
        .min_limit(2)
        .initial_limit(20)
        .latency_target(tower_spillway::limit::LatencyTarget::fixed(
            Duration::from_millis(30),
        ))
        .build()
        .unwrap();
    let layer = AdaptiveLimitLayer::builder(aimd)
        .outcomes(HttpOutcomes::new())
        .max_queue(64)
        .queue_timeout(Duration::from_secs(5))
        .build();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(h1_client::<Empty<Bytes>>());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..30 {
        let (svc, stop) = (svc.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match svc.clone().oneshot(support::get(addr, "/")).await {
                    Ok(res) => drop(res.into_body().collect().await),
                    // A refusal comes at once: let the others run.
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        }));
    }

    wait_until("growth while the remote is fast", || handle.limit() >= 28).await;
    mode.store(1, Ordering::SeqCst);
    wait_until("429s shrink the limit", || handle.limit() <= 5).await;
    mode.store(0, Ordering::SeqCst);
    wait_until("recovery after the 429s", || handle.limit() >= 28).await;
    mode.store(2, Ordering::SeqCst);
    wait_until("a slowdown shrinks the limit", || handle.limit() <= 5).await;
    mode.store(0, Ordering::SeqCst);
    wait_until("recovery after the slowdown", || handle.limit() >= 28).await;

    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
}

// ---------------------------------------------------------------------------
// Property: every admitted request releases its permit exactly once.

#[derive(Debug, Clone, Copy)]
enum Kind {
    Success,
    Overloaded503,
    GrpcTrailers,
    InnerError,
    PanicInCall,
    PanicInFuture,
    CallerCancels,
    BodyDroppedHalfRead,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Success),
        Just(Kind::Overloaded503),
        Just(Kind::GrpcTrailers),
        Just(Kind::InnerError),
        Just(Kind::PanicInCall),
        Just(Kind::PanicInFuture),
        Just(Kind::CallerCancels),
        Just(Kind::BodyDroppedHalfRead),
    ]
}

type TestBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

fn backend(
    req: Request<http_body_util::Empty<Bytes>>,
) -> Pin<Box<dyn std::future::Future<Output = Result<Response<TestBody>, BoxError>> + Send>> {
    // What to do travels in the request's extensions.
    let (kind, delay_ms) = *req
        .extensions()
        .get::<(Kind, u64)>()
        .expect("every test request says what to do");
    if let Kind::PanicInCall = kind {
        panic!("inner service panicked in call");
    }
    Box::pin(async move {
        let delay = match kind {
            Kind::CallerCancels => Duration::from_secs(3600),
            _ => Duration::from_millis(delay_ms),
        };
        tokio::time::sleep(delay).await;
        let mut frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ];
        let mut status = StatusCode::OK;
        match kind {
            Kind::PanicInFuture => panic!("inner future panicked"),
            Kind::InnerError => return Err("inner error".into()),
            Kind::Overloaded503 => status = StatusCode::SERVICE_UNAVAILABLE,
            Kind::GrpcTrailers => {
                let mut t = HeaderMap::new();
                t.insert("grpc-status", "8".parse().unwrap());
                frames.push(Ok(Frame::trailers(t)));
            }
            _ => {}
        }
        let mut res = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
        *res.status_mut() = status;
        Ok(res)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_admitted_request_releases_exactly_once(
        jobs in proptest::collection::vec((kind(), 0u64..30), 1..40),
        limit in 1usize..5,
        queue in 0usize..20,
    ) {
        // Keeps the panics the property test provokes out of the test output.
        support::quiet_panics("inner ");
        let rt = support::paused_runtime();
        let (handle, finished) = rt.block_on(async move {
            let layer = AdaptiveLimitLayer::builder(
                Aimd::builder().min_limit(1).initial_limit(limit).max_limit(8).build().unwrap(),
            )
            .max_queue(queue)
            .http()
            .build();
            let handle = layer.handle();
            let svc = ServiceBuilder::new()
                .layer(layer)
                .service(tower::service_fn(backend));
            let mut tasks = Vec::new();
            for (kind, delay) in jobs {
                let svc = svc.clone();
                tasks.push(tokio::spawn(async move {
                    let mut req = Request::new(http_body_util::Empty::new());
                    req.extensions_mut().insert((kind, delay));
                    let call = svc.oneshot(req);
                    let res = match kind {
                        Kind::CallerCancels => {
                            let _ = tokio::time::timeout(Duration::from_millis(50), call).await;
                            return;
                        }
                        _ => call.await,
                    };
                    let Ok(res) = res else { return };
                    let mut body = res.into_body();
                    match kind {
                        Kind::BodyDroppedHalfRead => {
                            let _ = body.frame().await;
                            drop(body);
                        }
                        _ => {
                            let _ = body.collect().await;
                        }
                    }
                }));
            }
            let mut finished = 0;
            for t in tasks {
                // Panicking tasks end in a JoinError; that is the point.
                if t.await.is_ok() {
                    finished += 1;
                }
            }
            (handle, finished)
        });
        let _ = finished;
        let snap = handle.snapshot();
        prop_assert_eq!(snap.in_flight, 0);
        prop_assert_eq!(snap.queued, 0);
        prop_assert_eq!(snap.admitted, snap.released);
        prop_assert!(snap.limit >= 1 && snap.limit <= 8);
    }
}

// ---------------------------------------------------------------------------
// The acquire/release path under contention.

struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Lock-free admission and release (a fixed limit takes no samples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_lock_free_paths_never_exceed_the_limit() {
    stress(AdaptiveLimitLayer::builder(Fixed::new(4).unwrap()), 4).await;
}

/// Sampled releases take the lock to update the algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_sampled_releases_never_exceed_the_limit() {
    let aimd = Aimd::builder()
        .min_limit(4)
        .initial_limit(4)
        .max_limit(4)
        .build()
        .unwrap();
    stress(AdaptiveLimitLayer::builder(aimd), 4).await;
}

/// With reserved shares every admission takes the lock; the reserve may
/// exceed the limit by its own size, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_reserved_shares_never_exceed_limit_plus_reserve() {
    let reserved = tower_spillway::limit::Reserved::new()
        .share(tower_spillway::Priority::Critical, 0.25)
        .unwrap();
    stress(
        AdaptiveLimitLayer::builder(Fixed::new(4).unwrap()).reserved(reserved),
        5,
    )
    .await;
}

async fn stress(layer: AdaptiveLimitBuilder, max_peak: usize) {
    let layer = layer
        .max_queue(10_000)
        .queue_timeout(Duration::from_secs(30))
        .classify(|n: &usize| tower_spillway::Priority::ALL[n % 4])
        .build();
    let handle = layer.handle();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let svc = {
        let (running, peak) = (running.clone(), peak.clone());
        ServiceBuilder::new()
            .layer(layer)
            .service(tower::service_fn(move |n: usize| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Counted down even when the caller cancels mid-call.
                    let _running = Running(running);
                    if n % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                    // A concrete error type: a closure's future returning
                    // `BoxError` trips a rustc limitation in `tokio::spawn`'s
                    // `Send` check (tower's own layers hit it too).
                    if n % 7 == 0 {
                        Err(std::io::Error::other("odd"))
                    } else {
                        Ok(())
                    }
                }
            }))
    };
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let svc = svc.clone();
        let handle2 = handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in 0..1_000usize {
                let n = t * 1_000 + i;
                let call = svc.clone().oneshot(n);
                if n % 11 == 0 {
                    // Some callers give up at once, often while queued.
                    let _ = tokio::time::timeout(Duration::from_micros(1), call).await;
                    continue;
                }
                if let Err(e) = call.await {
                    if let Some(o) = find_overloaded(e.as_ref()) {
                        assert_eq!(
                            o.reason(),
                            Reason::QueueTimeout,
                            "{o:?} {:?}",
                            handle2.snapshot()
                        );
                        refused += 1;
                    }
                }
            }
            refused
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0);
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= max_peak, "peak {peak}");
    let snap = handle.snapshot();
    assert_eq!(snap.in_flight, 0);
    assert_eq!(snap.queued, 0);
    assert_eq!(snap.admitted, snap.released);
    assert!(snap.admitted > 10_000, "{snap:?}");
}
