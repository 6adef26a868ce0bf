//! Per-request overhead of `PriorityShed` against tower's nearest built-in,
//! `LoadShed` over `ConcurrencyLimit`, in the same run: uncontended, and with
//! two threads sharing one layer.
//!
//! Run with `cargo bench -p tower-spillway-benches --bench shed`.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use tower::{Service, ServiceBuilder};
use tower_layer::Layer;
use tower_spillway::{
    Priority,
    shed::{Adaptive, PriorityShedLayer, Thresholds},
};

/// The inner service: answers at once, so only the layer is measured.
#[derive(Clone, Copy)]
struct Echo;

impl Service<Priority> for Echo {
    type Response = Priority;
    type Error = Infallible;
    type Future = Ready<Result<Priority, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Priority) -> Self::Future {
        ready(Ok(req))
    }
}

/// Polls a future that must be ready at once.
fn now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the benchmarked services never wait"),
    }
}

/// One request through `svc`, as a server does it: ready, call, then poll
/// the response future where it lies.
fn one<S: Service<Priority>>(svc: &mut S, p: Priority) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => return false,
    }
    let fut = pin!(svc.call(p));
    match fut.poll(&mut cx) {
        Poll::Ready(out) => out.is_ok(),
        Poll::Pending => unreachable!("the benchmarked services never wait"),
    }
}

const MIX: [Priority; 20] = {
    use Priority::*;
    [
        Critical, High, High, High, Default, Default, Default, Default, Default, Default, Low, Low,
        Low, Low, Low, Low, Low, Low, Low, Low,
    ]
};

fn run<S>(c: &mut Criterion, group: &str, make: impl Fn() -> S)
where
    S: Service<Priority> + Clone + Send + 'static,
{
    let mut g = c.benchmark_group(group);
    g.bench_function("uncontended", |b| {
        let mut svc = make();
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(one(&mut svc, MIX[i % MIX.len()]))
        });
    });
    g.bench_function("2 threads", |b| {
        let svc = make();
        b.iter_custom(|iters| {
            let start = tokio::time::Instant::now();
            std::thread::scope(|s| {
                for t in 0..2 {
                    let mut svc = svc.clone();
                    s.spawn(move || {
                        for i in 0..iters as usize {
                            black_box(one(&mut svc, MIX[(i + t) % MIX.len()]));
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    // Limits far above what one request at a time reaches: the admit path.
    run(c, "tower LoadShed+ConcurrencyLimit", || {
        ServiceBuilder::new()
            .load_shed()
            .concurrency_limit(10_000)
            .service(Echo)
    });
    run(c, "PriorityShed static", || {
        PriorityShedLayer::builder(Thresholds::ladder(10_000))
            .classify(|p: &Priority| *p)
            .build()
            .layer(Echo)
    });
    run(c, "PriorityShed adaptive", || {
        PriorityShedLayer::builder(Adaptive::default())
            .classify(|p: &Priority| *p)
            .build()
            .layer(Echo)
    });

    // The refusal path: everything but Critical is shed.
    let mut g = c.benchmark_group("refusal");
    g.bench_function("tower LoadShed", |b| {
        // A clone holds the limit's one permit, so the shedder's inner
        // service is never ready and every call is refused.
        let limited = ServiceBuilder::new().concurrency_limit(1).service(Echo);
        let mut holder = limited.clone();
        let mut cx = Context::from_waker(Waker::noop());
        assert!(holder.poll_ready(&mut cx).is_ready());
        let mut svc = tower::load_shed::LoadShed::new(limited);
        assert!(!one(&mut svc, Priority::Low), "LoadShed must refuse");
        b.iter(|| black_box(one(&mut svc, Priority::Low)));
        drop(holder);
    });
    g.bench_function("PriorityShed generic", |b| {
        let mut svc = PriorityShedLayer::builder(Thresholds::ladder(1))
            .classify(|p: &Priority| *p)
            .signal(|| 1_000usize)
            .build()
            .layer(Echo);
        b.iter(|| black_box(one(&mut svc, Priority::Low)));
    });
    g.bench_function("PriorityShed http 503", |b| {
        let inner = tower::service_fn(
            |_req: http::Request<http_body_util::Empty<bytes::Bytes>>| async {
                Ok::<_, Infallible>(http::Response::new(
                    http_body_util::Empty::<bytes::Bytes>::new(),
                ))
            },
        );
        let mut svc = PriorityShedLayer::builder(Thresholds::ladder(1))
            .signal(|| 1_000usize)
            .http()
            .build()
            .layer(inner);
        b.iter(|| {
            let mut req = http::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
            req.extensions_mut().insert(Priority::Low);
            let res = now(svc.call(req)).unwrap();
            black_box(res.status())
        });
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
