//! The drain against a backend of known capacity: how much of it the drain
//! uses when it has a backlog to itself.
//!
//! A backend of `slots` write slots taking `service` each can do exactly
//! `slots / service` writes a second (slots keep time on a virtual clock, as
//! the flash sale's database does, so the host's timer granularity costs no
//! throughput: only a slot left idle does). Behind it, the README's stack:
//! `SpillLayer` over the adaptive shedder over the `Gradient` limit, every
//! number a default. The store is filled with four seconds' worth of jobs
//! and the drain started; the figure is jobs done per second from its start
//! to an empty store, as a share of the capacity.
//!
//! Two backends: an ideal one (a write takes `service` however many wait)
//! and the flash sale's, which slows down by half a service time per 100 %
//! oversubscription, as a database under lock contention does, so the
//! limit must sit at the slot count, not above it.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --features spill --bench drain
//! SPILL_STORE=postgres DATABASE_URL=postgres://... cargo bench -p tower-spillway-benches --features spill --bench drain
//! ```

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::post};
use http::{Method, Request, StatusCode};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_spillway::{
    limit::{AdaptiveLimitLayer, Gradient},
    shed::{Adaptive, PriorityShedLayer},
    spill::{DeferrableRoutes, Mode, SpillHandle},
};

#[path = "spill_store.rs"]
mod spill_store;

// The flash sale's database: `slots` slots taking `service` a write, on a
// virtual clock; contended, it slows down when oversubscribed.
#[allow(dead_code)]
#[path = "../examples/flash_sale/backend.rs"]
mod backend;

use backend::Database as Backend;

/// The README's stack over `backend`, spilling every `POST /likes`.
fn app(backend: Arc<Backend>, store: &mut spill_store::Store) -> (Router, SpillHandle) {
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit.handle())
        .http()
        .build();
    let spill = store
        .layer()
        .deferrable(DeferrableRoutes::new().route(Some(Method::POST), "/likes"))
        // Always: the fill below stores every request; replays pass through.
        .mode(Mode::Always)
        .build()
        .expect("valid settings");
    let handle = spill.handle();
    let router = Router::new()
        .route(
            "/likes",
            post(move || {
                let backend = Arc::clone(&backend);
                async move {
                    backend.write().await;
                    "ok"
                }
            }),
        )
        .layer(limit)
        .layer(shed)
        .layer(spill);
    (router, handle)
}

fn request(n: u64) -> Request<axum::body::Body> {
    Request::post("/likes")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(format!("{{\"like\":{n}}}")))
        .expect("a valid request")
}

/// Stores `jobs` requests through the layer, 256 callers at a time.
async fn fill(app: &Router, jobs: u64) {
    const CALLERS: u64 = 256;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut n = c;
                while n < jobs {
                    let res = app.clone().oneshot(request(n)).await.expect("infallible");
                    assert_eq!(res.status(), StatusCode::ACCEPTED, "job {n} not stored");
                    n += CALLERS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a caller");
    }
}

/// What a drain did with the store to itself.
struct Drained {
    /// Jobs done per second, from the drain's start to an empty store.
    whole: f64,
    /// The same, from the first quarter of the jobs done to the last: the
    /// pace once the limit has found the backend.
    steady: f64,
    /// The mean of the requests the backend held (writing or waiting for a
    /// slot).
    held: f64,
}

async fn drain_rate(backend: Arc<Backend>, mut store: spill_store::Store) -> Drained {
    let jobs = (backend.capacity_rps() * 4.0) as u64;
    let (app, handle) = app(Arc::clone(&backend), &mut store);
    fill(&app, jobs).await;
    let stats = handle.store_stats().await.expect("the store answers");
    assert_eq!(stats.queued_total(), jobs);
    let start = Instant::now();
    let drain = handle.drain(app).spawn();
    let (mut held, mut samples) = (0, 0);
    let (mut quarter, mut three_quarters) = (None, None);
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        held += backend.busy();
        samples += 1;
        let stats = handle.store_stats().await.expect("the store answers");
        let left = stats.queued_total() + stats.running;
        if left <= jobs * 3 / 4 {
            quarter.get_or_insert((Instant::now(), left));
        }
        if left <= jobs / 4 {
            three_quarters.get_or_insert((Instant::now(), left));
        }
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the drain stalled"
        );
    }
    let whole = jobs as f64 / start.elapsed().as_secs_f64();
    drain.abort();
    let ((t1, left1), (t3, left3)) = (quarter.expect("passed"), three_quarters.expect("passed"));
    Drained {
        whole,
        steady: (left1 - left3) as f64 / (t3 - t1).as_secs_f64(),
        held: held as f64 / f64::from(samples),
    }
}

fn main() {
    let rt = spill_store::runtime();
    let kind = spill_store::Kind::from_env();
    println!("store: {}", kind.describe());
    println!(
        "| backend | capacity | drained, whole run | steady (middle half) | held by the backend (mean) |\n|---|---:|---:|---:|---:|"
    );
    for (slots, service_ms, contended) in [
        (16, 10, false),
        (16, 10, true),
        (64, 20, false),
        (64, 20, true),
        (4, 5, false),
    ] {
        let service = Duration::from_millis(service_ms);
        let backend = if contended {
            Backend::new(slots, service)
        } else {
            Backend::uncontended(slots, service)
        };
        let capacity = backend.capacity_rps();
        let store = rt.block_on(kind.fresh("drain"));
        let d = rt.block_on(drain_rate(backend, store));
        println!(
            "| {slots} slots × {service_ms} ms{} | {capacity:.0}/s | {:.0}/s ({:.1} %) | {:.0}/s ({:.1} %) | {:.1} |",
            if contended { ", contended" } else { "" },
            d.whole,
            100.0 * d.whole / capacity,
            d.steady,
            100.0 * d.steady / capacity,
            d.held,
        );
    }
}
