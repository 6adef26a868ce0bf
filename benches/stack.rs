//! The whole protective stack, per request, against tower's nearest
//! built-ins in the same run.
//!
//! - `spillway`: `PriorityLayer` (route table) → `PriorityShed` (adaptive,
//!   steering on the limiter's queue) → `AdaptiveLimit` (AIMD), HTTP faces,
//!   the stack `examples/flash_sale` and `examples/axum_stack` use;
//! - `tower`: `LoadShed` → `ConcurrencyLimit`, the built-ins' equivalent
//!   (priority-blind, fixed limit, no `Retry-After`).
//!
//! The inner service answers at once, so the figures are the layers' own
//! cost: admitting a request and releasing it when its (empty) body ends.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench stack
//! ```

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response};
use http_body_util::Empty;
use tower::{Service, ServiceBuilder};

use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Gradient},
    priority::{PriorityLayer, RouteTable},
    shed::{Adaptive, PriorityShedLayer},
};

type Body = Empty<Bytes>;

/// Answers at once with an empty 200.
#[derive(Clone, Copy)]
struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Ok(Response::new(Body::new())))
    }
}

/// One request: ready, call, poll the response, drop it (its empty body has
/// ended, which releases any permit it holds).
fn one<S>(svc: &mut S) -> bool
where
    S: Service<Request<Body>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let req = Request::post("/orders").body(Body::new()).unwrap();
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn spillway() -> impl Service<Request<Body>> + Clone + Send {
    let routes = RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/orders", Priority::High)
        .route(None, "/likes", Priority::Default)
        .route(None, "/analytics", Priority::Low);
    // The README's stack, with the defaults: an uncontended request is
    // admitted at once, so the cost measured is admitting and releasing.
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit.handle())
        .http()
        .build();
    ServiceBuilder::new()
        .layer(PriorityLayer::new(routes))
        .layer(shed)
        .layer(limit)
        .service(Ok200)
}

fn tower_stack() -> impl Service<Request<Body>> + Clone + Send {
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1_000)
        .service(Ok200)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stack/uncontended");
    let mut t = tower_stack();
    g.bench_function("tower LoadShed + ConcurrencyLimit", |b| {
        b.iter(|| black_box(one(&mut t)))
    });
    let mut s = spillway();
    g.bench_function(
        "spillway PriorityLayer + PriorityShed + AdaptiveLimit",
        |b| b.iter(|| black_box(one(&mut s))),
    );
    let mut bare = Ok200;
    g.bench_function("no layers", |b| b.iter(|| black_box(one(&mut bare))));
    g.finish();

    // Two threads sharing one stack (each with its own clone, as a server's
    // connections have).
    let mut g = c.benchmark_group("stack/2 threads");
    // Criterion's custom timing is wall-clock time, so this one place reads
    // std's clock; the layers themselves read tokio's.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
    fn contended<S>(b: &mut criterion::Bencher<'_>, make: impl Fn() -> S)
    where
        S: Service<Request<Body>> + Clone + Send + 'static,
    {
        let svc = make();
        b.iter_custom(|iters| {
            let mut other = svc.clone();
            let mut mine = svc.clone();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = std::sync::Arc::clone(&stop);
            let helper = std::thread::spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    black_box(one(&mut other));
                }
            });
            let start = std::time::Instant::now();
            for _ in 0..iters {
                black_box(one(&mut mine));
            }
            let elapsed = start.elapsed();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            helper.join().unwrap();
            elapsed
        })
    }
    g.bench_function("tower LoadShed + ConcurrencyLimit", |b| {
        contended(b, tower_stack)
    });
    g.bench_function(
        "spillway PriorityLayer + PriorityShed + AdaptiveLimit",
        |b| contended(b, spillway),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
