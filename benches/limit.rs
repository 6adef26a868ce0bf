//! Overhead of `AdaptiveLimit` against tower's `ConcurrencyLimit`, in the
//! same run: one request through a service that answers at once, so the
//! figures are the layers' own cost. Uncontended (one thread) and with two
//! threads sharing one limit; plus the HTTP refusal path (503 + Retry-After).
//! And `Aimd::default()` against the AIMD limiters of tower-acc and
//! tower-resilience (`tower-resilience-adaptive`), with the same bounds.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench limit
//! ```

use std::{
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, limit::ConcurrencyLimit};
use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Aimd, Fixed},
};

/// A service that answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<u64, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// One request: ready, call, and poll the response to completion.
#[inline]
fn one<S>(svc: &mut S, req: u64) -> bool
where
    S: Service<u64>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn tower_limit() -> ConcurrencyLimit<Echo> {
    ConcurrencyLimit::new(Echo, 1_000)
}

fn fixed_limit() -> impl Service<u64, Response = u64> + Clone + Send {
    AdaptiveLimitLayer::builder(Fixed::new(1_000).unwrap())
        .classify(Priority::Default)
        .build()
        .layer(Echo)
}

fn aimd_limit() -> impl Service<u64, Response = u64> + Clone + Send {
    let aimd = Aimd::builder().max_limit(1_000).build().unwrap();
    AdaptiveLimitLayer::builder(aimd)
        .classify(Priority::Default)
        .build()
        .layer(Echo)
}

/// Ours with every number a default: min 20, initial 20, max 200, backoff
/// 0.9, timeout 5 s.
fn aimd_default() -> impl Service<u64, Response = u64> + Clone + Send {
    AdaptiveLimitLayer::builder(Aimd::default())
        .classify(Priority::Default)
        .build()
        .layer(Echo)
}

/// tower-acc's AIMD, whose defaults are the same as ours (Netflix's).
fn tower_acc_aimd() -> impl Service<u64, Response = u64> + Clone + Send {
    tower_acc::ConcurrencyLimitLayer::new(tower_acc::Aimd::default()).layer(Echo)
}

/// tower-resilience's AIMD, set to our defaults' bounds (its own defaults
/// are initial 10, min 1, max 100, decrease 0.5, latency threshold 100 ms).
fn tower_resilience_aimd() -> impl Service<u64, Response = u64> + Clone + Send {
    let aimd = tower_resilience_adaptive::Aimd::builder()
        .initial_limit(20)
        .min_limit(20)
        .max_limit(200)
        .decrease_factor(0.9)
        .latency_threshold(Duration::from_secs(5))
        .build()
        .unwrap();
    tower_resilience_adaptive::AdaptiveLimiterLayer::new(aimd).layer(Echo)
}

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit/uncontended");
    let mut t = tower_limit();
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter(|| black_box(one(&mut t, black_box(1))))
    });
    let mut f = fixed_limit();
    g.bench_function("adaptive_limit_fixed", |b| {
        b.iter(|| black_box(one(&mut f, black_box(1))))
    });
    let mut a = aimd_limit();
    g.bench_function("adaptive_limit_aimd", |b| {
        b.iter(|| black_box(one(&mut a, black_box(1))))
    });
    // The floor of any layer that times requests: it reads the clock twice.
    g.bench_function("clock_read", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.finish();
}

/// Two threads, each with its own clone of one shared limit; the figure is
/// the wall time per request per thread.
fn two_threads<S>(svc: &S, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send,
{
    let start = tokio::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            let mut svc = svc.clone();
            s.spawn(move || {
                for i in 0..iters {
                    black_box(one(&mut svc, i));
                }
            });
        }
    });
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit/2_threads");
    let t = tower_limit();
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| two_threads(&t, iters))
    });
    let f = fixed_limit();
    g.bench_function("adaptive_limit_fixed", |b| {
        b.iter_custom(|iters| two_threads(&f, iters))
    });
    let a = aimd_limit();
    g.bench_function("adaptive_limit_aimd", |b| {
        b.iter_custom(|iters| two_threads(&a, iters))
    });
    g.finish();
}

/// `Aimd::default()` against the peers' AIMD limiters, uncontended and with
/// two threads sharing one limit.
fn aimd_peers(c: &mut Criterion) {
    let mut ours = aimd_default();
    let mut acc = tower_acc_aimd();
    let mut resilience = tower_resilience_aimd();
    // Each admits at once, so the rows time admission, not a refusal.
    assert!(one(&mut ours, 1) && one(&mut acc, 1) && one(&mut resilience, 1));

    let mut g = c.benchmark_group("limit/aimd_peers/uncontended");
    g.bench_function("adaptive_limit_aimd_default", |b| {
        b.iter(|| black_box(one(&mut ours, black_box(1))))
    });
    g.bench_function("tower_acc_aimd", |b| {
        b.iter(|| black_box(one(&mut acc, black_box(1))))
    });
    g.bench_function("tower_resilience_aimd", |b| {
        b.iter(|| black_box(one(&mut resilience, black_box(1))))
    });
    g.finish();

    let mut g = c.benchmark_group("limit/aimd_peers/2_threads");
    let ours = aimd_default();
    g.bench_function("adaptive_limit_aimd_default", |b| {
        b.iter_custom(|iters| two_threads(&ours, iters))
    });
    let acc = tower_acc_aimd();
    g.bench_function("tower_acc_aimd", |b| {
        b.iter_custom(|iters| two_threads(&acc, iters))
    });
    let resilience = tower_resilience_aimd();
    g.bench_function("tower_resilience_aimd", |b| {
        b.iter_custom(|iters| two_threads(&resilience, iters))
    });
    g.finish();
}

/// The HTTP face refusing at the limit: 503, Retry-After, problem+json.
fn http_refusal(c: &mut Criterion) {
    use http::{Request, Response};
    use http_body_util::Empty;
    use tower::ServiceExt;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = AdaptiveLimitLayer::builder(Fixed::new(1).unwrap())
        .max_queue(0)
        .http()
        .build();
    let (hold_tx, hold_rx) = tokio::sync::oneshot::channel::<()>();
    let hold_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(hold_rx)));
    let svc = layer.layer(tower::service_fn(
        move |_req: Request<Empty<bytes::Bytes>>| {
            let hold = hold_rx.lock().unwrap().take();
            async move {
                if let Some(hold) = hold {
                    let _ = hold.await;
                }
                Ok::<_, std::convert::Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
            }
        },
    ));
    // The first request holds the only permit for the whole bench.
    let holder = rt.spawn(svc.clone().oneshot(Request::new(Empty::new())));
    rt.block_on(tokio::task::yield_now());
    let mut svc = svc;
    c.bench_function("limit/http_refusal_503", |b| {
        b.iter(|| {
            let mut cx = Context::from_waker(Waker::noop());
            let _ = svc.poll_ready(&mut cx);
            let fut = pin!(svc.call(Request::new(Empty::new())));
            match fut.poll(&mut cx) {
                Poll::Ready(Ok(res)) => black_box(res.status()),
                _ => unreachable!("refused at once"),
            }
        })
    });
    drop(hold_tx);
    let _ = rt.block_on(holder);
}

criterion_group!(benches, uncontended, contended, aimd_peers, http_refusal);
criterion_main!(benches);
