//! The per-request cost of rate limiting: the admit path of `RateLimit`
//! (global and keyed by peer address) against tower's `RateLimit` and
//! tower_governor, and the HTTP 429 refusal with exact `Retry-After` and
//! `RateLimit` fields against tower_governor's 429, in the same run; and the
//! pass-through cost of the client's `HonorRetryAfter`.
//!
//! `rate_admit/2 threads`: two threads share one limiter (each with its own
//! clone of the service, as a server's connections have) and check against
//! it back to back; the figure is the wall time per check per thread, every
//! check admitted (the quotas are far above what the bench reaches):
//! `spillway RateLimit global` (generic face, `u64` requests) against
//! governor's own `RateLimiter::direct(..).check()` and `no layer`; and on
//! HTTP requests, `spillway RateLimit global, HTTP face` against
//! `tower_governor global` and `no layer, HTTP request`.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench rate
//! cargo bench -p tower-spillway-benches --bench rate -- "rate_admit/2 threads"
//! ```
//!
//! The spillway layers and tower's `RateLimit` read tokio's clock, which in
//! this crate (built without tokio's `test-util`) is
//! `std::time::Instant::now()`, as in an application; tower_governor reads
//! `quanta`'s clock.

use std::{
    future::{Ready, ready},
    hint::black_box,
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{BoxError, Layer, Service, limit::RateLimitLayer as TowerRateLimitLayer};
use tower_spillway::{
    rate::{PeerIp, Quota, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, ReplayBody, Retries},
};

type Body = Full<Bytes>;

/// Answers at once with an empty 200.
#[derive(Clone, Copy)]
struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Ok(Response::new(Body::default())))
    }
}

/// Answers at once with an empty 200 in axum's body type, which
/// tower_governor's refusals need.
#[derive(Clone, Copy)]
struct AxumOk200;

impl Service<Request<Body>> for AxumOk200 {
    type Response = Response<axum::body::Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<axum::body::Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Ok(Response::new(axum::body::Body::empty())))
    }
}

fn governor_layer(
    per_nanos: u64,
    burst: u32,
) -> tower_governor::GovernorLayer<
    tower_governor::key_extractor::GlobalKeyExtractor,
    governor::middleware::NoOpMiddleware<governor::clock::QuantaInstant>,
    axum::body::Body,
> {
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .key_extractor(tower_governor::key_extractor::GlobalKeyExtractor)
        .per_nanosecond(per_nanos)
        .burst_size(burst)
        .finish()
        .unwrap();
    tower_governor::GovernorLayer::new(config)
}

/// Answers at once with an empty 200, reading nothing of the replayable body.
#[derive(Clone, Copy)]
struct ClientOk200;

impl Service<Request<ReplayBody<Body>>> for ClientOk200 {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<ReplayBody<Body>>) -> Self::Future {
        ready(Ok(Response::new(Body::default())))
    }
}

fn request() -> Request<Body> {
    let mut req = Request::new(Body::default());
    req.extensions_mut()
        .insert(SocketAddr::from(([10, 1, 2, 3], 40000)));
    req
}

fn once<S>(svc: &mut S, req: Request<Body>) -> S::Response
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("not ready: {other:?}"),
    }
    svc.call(req)
        .now_or_never()
        .expect("ready at once")
        .expect("answered")
}

fn bench(c: &mut Criterion) {
    // tower's `RateLimit` creates a tokio `Sleep`; give it a runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let plenty = Quota::per_second(1_000_000_000).unwrap();

    let mut g = c.benchmark_group("rate_admit");
    let mut bare = Ok200;
    g.bench_function("no layer", |b| b.iter(|| once(&mut bare, request())));
    let mut tower = TowerRateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(Ok200);
    g.bench_function("tower RateLimit", |b| {
        b.iter(|| once(&mut tower, request()))
    });
    let mut governor = governor_layer(1, u32::MAX).layer(AxumOk200);
    g.bench_function("tower_governor global", |b| {
        b.iter(|| once(&mut governor, request()))
    });
    let mut global = RateLimitLayer::new(plenty).layer(Ok200);
    g.bench_function("spillway RateLimit global", |b| {
        b.iter(|| once(&mut global, request()))
    });
    let mut global_http = RateLimitLayer::builder(plenty).http().build().layer(Ok200);
    g.bench_function("spillway RateLimit global, HTTP face", |b| {
        b.iter(|| once(&mut global_http, request()))
    });
    let mut keyed = RateLimitLayer::builder(plenty)
        .keyed(PeerIp::new())
        .http()
        .build()
        .layer(Ok200);
    g.bench_function("spillway RateLimit keyed by peer IP, HTTP face", |b| {
        b.iter(|| once(&mut keyed, request()))
    });
    g.finish();

    let mut g = c.benchmark_group("rate_reject");
    let mut refusing = RateLimitLayer::builder(Quota::per_minute(1).unwrap())
        .http()
        .build()
        .layer(Ok200);
    once(&mut refusing, request());
    g.bench_function(
        "spillway 429 + Retry-After + RateLimit fields + problem+json",
        |b| {
            b.iter(|| {
                let res = once(&mut refusing, request());
                assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
                res
            })
        },
    );
    let mut governor = governor_layer(60_000_000_000, 1).layer(AxumOk200);
    once(&mut governor, request());
    g.bench_function("tower_governor 429", |b| {
        b.iter(|| {
            let res = once(&mut governor, request());
            assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
            res
        })
    });
    let mut grpc = RateLimitLayer::builder(Quota::per_minute(1).unwrap())
        .http()
        .build()
        .layer(Ok200);
    once(&mut grpc, request());
    g.bench_function("spillway gRPC RESOURCE_EXHAUSTED trailers-only", |b| {
        b.iter(|| {
            let mut req = request();
            req.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            once(&mut grpc, req)
        })
    });
    g.finish();
}

fn client(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("honour_pass_through");
    let mut bare = Ok200;
    g.bench_function("no layer", |b| b.iter(|| once(&mut bare, request())));
    let mut honour = HonorRetryAfterLayer::new().layer(ClientOk200);
    g.bench_function("HonorRetryAfter, cooldown only", |b| {
        b.iter(|| once(&mut honour, request()))
    });
    let mut retrying = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build()
        .layer(ClientOk200);
    g.bench_function("HonorRetryAfter, retries (body recorded)", |b| {
        b.iter(|| once(&mut retrying, request()))
    });
    g.finish();
}

/// Answers `u64` requests at once, for the generic face.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// One `u64` request that must be admitted.
fn once_u64<S>(svc: &mut S, req: u64) -> S::Response
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("not ready: {other:?}"),
    }
    svc.call(req)
        .now_or_never()
        .expect("ready at once")
        .expect("admitted")
}

/// Two threads, each with its own clone of `shared`, each running `each`
/// `iters` times; the wall time, so per check per thread. Criterion's custom
/// timing is wall-clock time, so this one place reads std's clock; the
/// layers themselves read tokio's.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
fn two_threads<T, F>(iters: u64, shared: &T, each: F) -> Duration
where
    T: Clone + Send,
    F: Fn(&mut T, u64) + Sync,
{
    let each = &each;
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let mut mine = shared.clone();
            s.spawn(move || {
                for i in 0..iters {
                    each(&mut mine, i);
                }
            });
        }
    });
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let plenty = Quota::per_second(1_000_000_000).unwrap();
    let mut g = c.benchmark_group("rate_admit/2 threads");

    let direct = governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(1_000_000_000).unwrap(),
    ));
    g.bench_function("governor direct check", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &&direct, |lim, _| {
                assert!(black_box(lim.check()).is_ok());
            })
        })
    });
    let global = RateLimitLayer::new(plenty).layer(Echo);
    g.bench_function("spillway RateLimit global", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &global, |svc, i| {
                black_box(once_u64(svc, i));
            })
        })
    });
    g.bench_function("no layer", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &Echo, |svc, i| {
                black_box(once_u64(svc, i));
            })
        })
    });

    // On HTTP requests (global: no peer address to read).
    let plain = || Request::new(Body::default());
    let governor = governor_layer(1, u32::MAX).layer(AxumOk200);
    g.bench_function("tower_governor global", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &governor, |svc, _| {
                assert_eq!(once(svc, plain()).status(), StatusCode::OK);
            })
        })
    });
    let global_http = RateLimitLayer::builder(plenty).http().build().layer(Ok200);
    g.bench_function("spillway RateLimit global, HTTP face", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &global_http, |svc, _| {
                assert_eq!(once(svc, plain()).status(), StatusCode::OK);
            })
        })
    });
    g.bench_function("no layer, HTTP request", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &Ok200, |svc, _| {
                assert_eq!(once(svc, plain()).status(), StatusCode::OK);
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, contended, client);
criterion_main!(benches);
