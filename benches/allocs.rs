//! Allocations per request, which criterion cannot report: a counting global
//! allocator (`alloc_count.rs`) in this binary alone, and a markdown table
//! printed once per run.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench allocs
//! ```
//!
//! Each case runs `N` requests to warm up (lazy state, first samples), then
//! `N` more counted; the figure is the count over `N`. Every case names the
//! criterion case it mirrors, built the same way (the stacks are the ones in
//! `stacks.rs`, shared with `stack.rs`), and its baseline: the same request
//! built and answered with no layer, whose allocations (building the
//! request, the extensions map) are the caller's, not the layers'. The
//! table gives the raw count and the count over the baseline.
//!
//! - admitted, HTTP face: no layers, tower's `LoadShed` + `ConcurrencyLimit`,
//!   spillway's `PriorityLayer` + `PriorityShed` + `AdaptiveLimit`
//!   (`stack/uncontended`);
//! - admitted, generic face: the same on `Priority` requests
//!   (`stack/generic/uncontended`);
//! - refused: tower's `LoadShed` and spillway's `PriorityShed` on the generic
//!   face, and `PriorityShed`'s HTTP 503 (`refusal`, in `shed.rs`);
//! - rate limiting: governor's direct check, spillway's global `RateLimit`
//!   admitting (generic and HTTP faces, `rate_admit`) and its HTTP 429
//!   (`rate_reject`), the same layers as in `rate.rs` on `stacks.rs`'s
//!   requests (`rate.rs`'s also carry a peer address);
//! - `Batch` and `Buffer` with one sequential caller and a free inner call
//!   (`batch_vs_buffer/*/1`), each request in its own `block_on`.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    hint::black_box,
    num::NonZeroU32,
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, buffer::Buffer, service_fn};
use tower_spillway::{
    Priority,
    batch::{Batch, BatchConfig},
    rate::{Quota, RateLimitLayer},
    shed::{PriorityShedLayer, Thresholds},
};

mod alloc_count;
mod stacks;

use stacks::{
    Body, Echo, Ok200, one, one_generic, spillway, spillway_generic, tower_generic, tower_stack,
};

#[global_allocator]
static COUNTING: alloc_count::Counting = alloc_count::Counting;

/// Requests counted per case (and as many before, to warm up).
const N: usize = 10_000;

/// Allocations per call of `request`, over `N` calls after `N` to warm up.
fn per_request(mut request: impl FnMut()) -> f64 {
    for _ in 0..N {
        request();
    }
    let before = alloc_count::allocations();
    for _ in 0..N {
        request();
    }
    (alloc_count::allocations() - before) as f64 / N as f64
}

/// Polls a future that must be ready at once.
fn now<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the counted services never wait"),
    }
}

/// A table row: a case and the baseline it is compared with.
struct Row {
    section: &'static str,
    case: &'static str,
    mirrors: &'static str,
    allocs: f64,
    baseline: Option<f64>,
}

struct Table(Vec<Row>);

impl Table {
    fn row(
        &mut self,
        section: &'static str,
        case: &'static str,
        mirrors: &'static str,
        allocs: f64,
        baseline: Option<f64>,
    ) {
        self.0.push(Row {
            section,
            case,
            mirrors,
            allocs,
            baseline,
        });
    }

    fn print(&self) {
        println!("Allocations per request, over N = {N} requests after {N} to warm up.\n");
        println!("| section | case | criterion case | allocations / request | over baseline |");
        println!("|---|---|---|---:|---:|");
        for r in &self.0 {
            let over = match r.baseline {
                Some(base) => format!("{:.2}", r.allocs - base),
                None => "(baseline)".to_owned(),
            };
            println!(
                "| {} | {} | `{}` | {:.2} | {} |",
                r.section, r.case, r.mirrors, r.allocs, over
            );
        }
    }
}

/// An HTTP request as `shed.rs`'s refusal case builds it: stamped `Low`.
fn low_request() -> Request<Body> {
    let mut req = Request::new(Body::new());
    req.extensions_mut().insert(Priority::Low);
    req
}

/// Answers an HTTP request with an empty 200, as `shed.rs`'s refusal case's
/// inner service does.
#[derive(Clone, Copy)]
struct Inner200;

impl Service<Request<Body>> for Inner200 {
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

/// One HTTP request that arrives carrying one extension, as a peer
/// address: ready, call, poll the response, drop it.
fn one_carrying<S: Service<Request<Body>>>(svc: &mut S) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let mut req = Request::post("/orders").body(Body::new()).unwrap();
    req.extensions_mut()
        .insert(std::net::SocketAddr::from(([127, 0, 0, 1], 4000)));
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

fn admitted(t: &mut Table) {
    const HTTP: &str = "admitted, HTTP face";
    let mut bare = Ok200;
    let base = per_request(|| assert!(one(&mut bare)));
    t.row(HTTP, "no layers", "stack/uncontended/no layers", base, None);
    let mut svc = tower_stack();
    let n = per_request(|| assert!(one(&mut svc)));
    t.row(
        HTTP,
        "tower LoadShed + ConcurrencyLimit",
        "stack/uncontended/tower LoadShed + ConcurrencyLimit",
        n,
        Some(base),
    );
    let mut svc = spillway();
    let n = per_request(|| assert!(one(&mut svc)));
    t.row(
        HTTP,
        "spillway PriorityLayer + PriorityShed + AdaptiveLimit",
        "stack/uncontended/spillway PriorityLayer + PriorityShed + AdaptiveLimit",
        n,
        Some(base),
    );

    // Requests from a server usually carry extensions already (axum's
    // `ConnectInfo`, say): then the map exists, and stamping a priority is
    // one boxed value, not a map, its table and the value.
    let mut bare = Ok200;
    let base = per_request(|| assert!(one_carrying(&mut bare)));
    t.row(
        HTTP,
        "no layers, request carrying one extension",
        "-",
        base,
        None,
    );
    let mut svc = spillway();
    let n = per_request(|| assert!(one_carrying(&mut svc)));
    t.row(
        HTTP,
        "spillway stack, request carrying one extension",
        "-",
        n,
        Some(base),
    );

    const GENERIC: &str = "admitted, generic face";
    let mut bare = Echo;
    let base = per_request(|| assert!(one_generic(&mut bare)));
    t.row(
        GENERIC,
        "no layers",
        "stack/generic/uncontended/no layers",
        base,
        None,
    );
    let mut svc = tower_generic();
    let n = per_request(|| assert!(one_generic(&mut svc)));
    t.row(
        GENERIC,
        "tower LoadShed + ConcurrencyLimit",
        "stack/generic/uncontended/tower LoadShed + ConcurrencyLimit",
        n,
        Some(base),
    );
    let mut svc = spillway_generic();
    let n = per_request(|| assert!(one_generic(&mut svc)));
    t.row(
        GENERIC,
        "spillway PriorityShed + AdaptiveLimit",
        "stack/generic/uncontended/spillway PriorityShed + AdaptiveLimit",
        n,
        Some(base),
    );
}

fn refused(t: &mut Table) {
    const GENERIC: &str = "refused, generic face";
    // As in shed.rs: a clone holds the limit's one permit, so the shedder's
    // inner service is never ready and every call is refused.
    let limited = ServiceBuilder::new().concurrency_limit(1).service(Echo);
    let mut holder = limited.clone();
    assert!(
        holder
            .poll_ready(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    );
    let mut svc = tower::load_shed::LoadShed::new(limited);
    let n = per_request(|| assert!(!one_generic(&mut svc)));
    t.row(
        GENERIC,
        "tower LoadShed refusal",
        "refusal/tower LoadShed",
        n,
        Some(0.0),
    );
    drop(holder);
    let mut svc = PriorityShedLayer::builder(Thresholds::ladder(1))
        .classify(|p: &Priority| *p)
        .signal(|| 1_000usize)
        .build()
        .layer(Echo);
    let n = per_request(|| {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        assert!(now(svc.call(Priority::Low)).is_err());
    });
    t.row(
        GENERIC,
        "PriorityShed refusal (Overloaded error)",
        "refusal/PriorityShed generic",
        n,
        Some(0.0),
    );

    const HTTP: &str = "refused, HTTP face";
    let mut bare = Inner200;
    let base = per_request(|| {
        let res = now(bare.call(low_request())).unwrap();
        assert_eq!(black_box(res.status()), StatusCode::OK);
    });
    t.row(HTTP, "no layer (request stamped Low, 200)", "-", base, None);
    let mut svc = PriorityShedLayer::builder(Thresholds::ladder(1))
        .signal(|| 1_000usize)
        .http()
        .build()
        .layer(Inner200);
    let n = per_request(|| {
        let res = now(svc.call(low_request())).unwrap();
        assert_eq!(black_box(res.status()), StatusCode::SERVICE_UNAVAILABLE);
    });
    t.row(
        HTTP,
        "PriorityShed 503 + Retry-After + problem+json",
        "refusal/PriorityShed http 503",
        n,
        Some(base),
    );
}

fn rate(t: &mut Table) {
    const RATE: &str = "rate limiting";
    let direct = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(1_000_000_000).unwrap(),
    ));
    let n = per_request(|| assert!(black_box(direct.check()).is_ok()));
    t.row(
        RATE,
        "governor direct check",
        "rate_admit/2 threads/governor direct check",
        n,
        Some(0.0),
    );
    let plenty = Quota::per_second(1_000_000_000).unwrap();
    let mut svc = RateLimitLayer::new(plenty).layer(Echo);
    let n = per_request(|| assert!(one_generic(&mut svc)));
    t.row(
        RATE,
        "spillway RateLimit global, admitted (generic face)",
        "rate_admit/2 threads/spillway RateLimit global",
        n,
        Some(0.0),
    );
    let mut bare = Ok200;
    let base = per_request(|| assert!(one(&mut bare)));
    let mut svc = RateLimitLayer::builder(plenty).http().build().layer(Ok200);
    let n = per_request(|| assert!(one(&mut svc)));
    t.row(
        RATE,
        "spillway RateLimit global, admitted (HTTP face)",
        "rate_admit/spillway RateLimit global, HTTP face",
        n,
        Some(base),
    );
    let mut svc = RateLimitLayer::builder(Quota::per_minute(1).unwrap())
        .http()
        .build()
        .layer(Ok200);
    assert!(one(&mut svc), "the first request is admitted");
    let n = per_request(|| {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let req = Request::post("/orders").body(Body::new()).unwrap();
        let res = now(svc.call(req)).unwrap();
        assert_eq!(black_box(res.status()), StatusCode::TOO_MANY_REQUESTS);
    });
    t.row(
        RATE,
        "spillway 429 + Retry-After + RateLimit fields + problem+json",
        "rate_reject/spillway 429 + Retry-After + RateLimit fields + problem+json",
        n,
        Some(base),
    );
}

fn batching(t: &mut Table) {
    const BATCH: &str = "one sequential caller";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let per_item = service_fn(|item: u64| async move { Ok::<_, Infallible>(item) });
    let mut bare = per_item;
    let base = per_request(|| {
        rt.block_on(async {
            black_box(bare.ready().await.unwrap().call(7).await.unwrap());
        })
    });
    t.row(
        BATCH,
        "no middleware (block_on per request)",
        "-",
        base,
        None,
    );
    let mut buffer = rt.block_on(async { Buffer::new(per_item, 1000) });
    let n = per_request(|| {
        rt.block_on(async {
            black_box(buffer.ready().await.unwrap().call(7).await.unwrap());
        })
    });
    t.row(
        BATCH,
        "tower Buffer",
        "batch_vs_buffer/buffer/1",
        n,
        Some(base),
    );
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
        .queue_capacity(1000)
        .build()
        .unwrap();
    let mut batch = rt.block_on(async { Batch::new(inner, config) });
    let n = per_request(|| {
        rt.block_on(async {
            black_box(batch.ready().await.unwrap().call(7).await.unwrap());
        })
    });
    t.row(BATCH, "Batch", "batch_vs_buffer/batch/1", n, Some(base));
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); there is nothing to
    // filter, so the table is printed whatever the arguments.
    let mut t = Table(Vec::new());
    admitted(&mut t);
    refused(&mut t);
    rate(&mut t);
    batching(&mut t);
    t.print();
}
