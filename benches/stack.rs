//! The whole protective stack, per request, against tower's nearest
//! built-ins in the same run.
//!
//! - `stack/uncontended` and `stack/2 threads`, the HTTP face:
//!   - `spillway`: `PriorityLayer` (route table) → `PriorityShed` (adaptive,
//!     steering on the limiter's queue) → `AdaptiveLimit` (Gradient), HTTP
//!     faces, the stack `examples/flash_sale` and `examples/axum_stack` use;
//!   - `tower`: `LoadShed` → `ConcurrencyLimit`, the built-ins' equivalent
//!     (priority-blind, fixed limit, no `Retry-After`);
//!   - `no layers` (uncontended only): the baseline, building the request
//!     and answering it.
//! - `stack/generic/uncontended`, the generic face: the same decisions on
//!   requests of type `Priority`, classified by a function where the HTTP
//!   face has a route table: `PriorityShed` (adaptive, steering on the
//!   limiter's queue) → `AdaptiveLimit` (Gradient), against tower's
//!   `LoadShed` → `ConcurrencyLimit` and `no layers` on the same request
//!   type.
//!
//! The inner service answers at once, so the figures are the layers' own
//! cost: admitting a request and releasing it when its (empty) body ends.
//! The stacks are defined in `stacks.rs`, which `allocs.rs` shares to count
//! their allocations.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench stack
//! cargo bench -p tower-spillway-benches --bench stack -- stack/generic
//! ```

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::Service;

mod stacks;

use stacks::{
    Body, Echo, Ok200, one, one_generic, spillway, spillway_generic, tower_generic, tower_stack,
};

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

    // The generic face: the request is a `Priority`, classified by a
    // function; no route table, no response body.
    let mut g = c.benchmark_group("stack/generic/uncontended");
    let mut t = tower_generic();
    g.bench_function("tower LoadShed + ConcurrencyLimit", |b| {
        b.iter(|| black_box(one_generic(&mut t)))
    });
    let mut s = spillway_generic();
    g.bench_function("spillway PriorityShed + AdaptiveLimit", |b| {
        b.iter(|| black_box(one_generic(&mut s)))
    });
    let mut bare = Echo;
    g.bench_function("no layers", |b| {
        b.iter(|| black_box(one_generic(&mut bare)))
    });
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
