//! Batch throughput against `tower::buffer::Buffer` and a per-item baseline,
//! and single-flight with 1 and 64 identical concurrent callers, in one run.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench batch
//! ```
//!
//! Each iteration pushes `ITEMS` items through the service from `ITEMS`
//! concurrent callers on a current-thread runtime. The inner service costs
//! `call_cost` per call (a round trip, a commit) plus nothing per item, so the
//! per-item baseline and `Buffer` pay it per item and `Batch` per batch; the
//! zero-cost rows measure the plumbing alone.
//!
//! `batch_vs_buffer`: the plumbing alone (a free inner call) at 1, 4, 16,
//! 64, 256 and 1000 concurrent callers, `batch/N` against `buffer/N`. Each
//! iteration sends `ITEMS` requests in all, shared evenly among the callers;
//! each caller awaits its calls one after the other (so with 1 caller the
//! requests are sequential, and with 1000 each caller sends one). The
//! throughput is per request.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench batch -- batch_vs_buffer
//! ```

use std::{convert::Infallible, hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use tokio::{runtime::Runtime, time::Instant};
use tower::{Service, ServiceExt, buffer::Buffer, service_fn};
use tower_spillway::{
    batch::{Batch, BatchConfig},
    coalesce::CoalesceLayer,
};

const ITEMS: usize = 1000;

/// Burns `cost` of CPU, like a syscall or a commit would.
fn spin(cost: Duration) {
    if cost.is_zero() {
        return;
    }
    let start = Instant::now();
    while start.elapsed() < cost {
        std::hint::spin_loop();
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn batch_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("batch_throughput");
    group.throughput(Throughput::Elements(ITEMS as u64));
    for cost_us in [0u64, 2] {
        let cost = Duration::from_micros(cost_us);
        let label = format!("{cost_us}us_per_call");

        // Per item, no middleware: one inner call per item.
        let per_item = service_fn(move |item: u64| async move {
            spin(cost);
            Ok::<_, Infallible>(item)
        });
        group.bench_function(BenchmarkId::new("per_item", &label), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut svc = per_item;
                    for i in 0..ITEMS as u64 {
                        black_box(svc.ready().await.unwrap().call(i).await.unwrap());
                    }
                })
            })
        });

        // tower's Buffer: a worker in front of the per-item service.
        let buffer = rt.block_on(async { Buffer::new(per_item, ITEMS) });
        group.bench_function(BenchmarkId::new("tower_buffer", &label), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let calls = (0..ITEMS as u64).map(|i| buffer.clone().oneshot(i));
                    black_box(join_all(calls).await);
                })
            })
        });

        // Batch: one inner call per batch of up to 100 items.
        let inner = service_fn(move |items: Vec<u64>| async move {
            spin(cost);
            Ok::<_, Infallible>(
                items
                    .into_iter()
                    .map(Ok::<u64, Infallible>)
                    .collect::<Vec<_>>(),
            )
        });
        let config = BatchConfig::builder()
            .max_items(100)
            .queue_capacity(ITEMS)
            .build()
            .unwrap();
        let batch = rt.block_on(async { Batch::new(inner, config) });
        group.bench_function(BenchmarkId::new("batch_100", &label), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let calls = (0..ITEMS as u64).map(|i| batch.clone().oneshot(i));
                    black_box(join_all(calls).await);
                })
            })
        });
    }
    group.finish();
}

fn coalescing(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("coalesce");
    let cost = Duration::from_micros(20);
    // The work runs in its own task, as a remote call would run elsewhere:
    // the call stays in flight until every caller of the round has arrived.
    let inner = service_fn(move |key: u64| async move {
        tokio::spawn(async move { spin(cost) }).await.unwrap();
        Ok::<_, Infallible>(key)
    });
    let shared = CoalesceLayer::new(tower_spillway::key::key_fn(|k: &u64| Some(*k)));

    for callers in [1usize, 64] {
        group.throughput(Throughput::Elements(callers as u64));
        group.bench_function(BenchmarkId::new("direct", callers), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let calls = (0..callers).map(|_| inner.oneshot(7));
                    black_box(join_all(calls).await);
                })
            })
        });
        let svc = tower::Layer::layer(&shared, inner);
        group.bench_function(BenchmarkId::new("coalesced", callers), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let calls = (0..callers).map(|_| svc.clone().oneshot(7));
                    black_box(join_all(calls).await);
                })
            })
        });
    }
    group.finish();
}

/// `ITEMS` requests from `callers` concurrent callers, each awaiting its
/// calls in turn.
async fn callers<S>(svc: &S, callers: usize)
where
    S: Service<u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let calls = (0..callers).map(|c| {
        // The first `ITEMS % callers` callers send one more.
        let n = ITEMS / callers + usize::from(c < ITEMS % callers);
        let mut svc = svc.clone();
        async move {
            for i in 0..n as u64 {
                black_box(svc.ready().await.unwrap().call(i).await.unwrap());
            }
        }
    });
    join_all(calls).await;
}

fn batch_vs_buffer(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("batch_vs_buffer");
    group.throughput(Throughput::Elements(ITEMS as u64));
    let per_item = service_fn(|item: u64| async move { Ok::<_, Infallible>(item) });
    let buffer = rt.block_on(async { Buffer::new(per_item, ITEMS) });
    let inner = service_fn(|items: Vec<u64>| async move {
        Ok::<_, Infallible>(
            items
                .into_iter()
                .map(Ok::<u64, Infallible>)
                .collect::<Vec<_>>(),
        )
    });
    let config = BatchConfig::builder()
        .max_items(100)
        .queue_capacity(ITEMS)
        .build()
        .unwrap();
    let batch = rt.block_on(async { Batch::new(inner, config) });
    for n in [1usize, 4, 16, 64, 256, 1000] {
        group.bench_function(BenchmarkId::new("batch", n), |b| {
            b.iter(|| rt.block_on(callers(&batch, n)))
        });
        group.bench_function(BenchmarkId::new("buffer", n), |b| {
            b.iter(|| rt.block_on(callers(&buffer, n)))
        });
    }
    group.finish();
}

criterion_group!(benches, batch_throughput, batch_vs_buffer, coalescing);
criterion_main!(benches);
