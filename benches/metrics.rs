//! What the `metrics` feature costs a request: the limiter records one
//! histogram sample (its rtt) per sampled request. The same AIMD limiter as
//! `limit/uncontended/adaptive_limit_aimd`, built with no recorder (its
//! histogram handles do nothing) and built with a Prometheus recorder (each
//! request records into it), in the same run. The figure without the feature
//! is `limit/uncontended/adaptive_limit_aimd` of `--bench limit` built
//! without it.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --features metrics --bench metrics
//! cargo bench -p tower-spillway-benches --bench limit -- limit/uncontended/adaptive_limit_aimd
//! ```

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::{Layer, Service};
use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Aimd},
};

/// A service that answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

#[inline]
fn one<S: Service<u64>>(svc: &mut S, req: u64) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn aimd_limit() -> impl Service<u64, Response = u64> {
    let aimd = Aimd::builder().max_limit(1_000).build().unwrap();
    AdaptiveLimitLayer::builder(aimd)
        .name("bench")
        .classify(Priority::Default)
        .build()
        .layer(Echo)
}

/// Requests between two upkeeps of the recorder (which drains what the
/// histograms gathered, as a scrape does); the upkeep is not timed.
const CHUNK: u64 = 100_000;

fn histograms(c: &mut Criterion) {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .unwrap()
        .build_recorder();
    let prometheus = recorder.handle();

    let mut g = c.benchmark_group("limit/metrics");
    let mut plain = aimd_limit();
    let mut recorded = metrics::with_local_recorder(&recorder, aimd_limit);
    assert!(one(&mut plain, 1) && one(&mut recorded, 1));
    g.bench_function("aimd_no_recorder", |b| {
        b.iter_custom(|iters| timed(iters, &mut plain, || {}))
    });
    g.bench_function("aimd_prometheus_histograms", |b| {
        b.iter_custom(|iters| timed(iters, &mut recorded, || prometheus.run_upkeep()))
    });
    // The recorder's own share: one record on a registered handle.
    let histogram =
        metrics::with_local_recorder(&recorder, || metrics::histogram!("spillway_bench_seconds"));
    g.bench_function("prometheus_histogram_record_alone", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let start = tokio::time::Instant::now();
                for i in 0..n {
                    histogram.record(black_box(i as f64 * 1e-9));
                }
                total += start.elapsed();
                prometheus.run_upkeep();
                left -= n;
            }
            total
        })
    });
    g.finish();
    assert!(
        prometheus
            .render()
            .contains("spillway_limit_rtt_seconds_count{layer=\"bench\"}"),
        "the limiter recorded into the recorder"
    );
}

fn timed<S: Service<u64>>(iters: u64, svc: &mut S, mut upkeep: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let start = tokio::time::Instant::now();
        for i in 0..n {
            black_box(one(svc, black_box(i)));
        }
        total += start.elapsed();
        upkeep();
        left -= n;
    }
    total
}

criterion_group!(benches, histograms);
criterion_main!(benches);
