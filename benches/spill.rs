//! Spilling on the embedded store with full durability: how many requests a
//! second a `SpillLayer` in `Always` mode can answer `202` (each after its
//! job is committed and fsynced), and how long a caller waits for its `202`
//! at a steady 5,000 requests a second.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --features spill --bench spill
//! SPILL_STORE=postgres DATABASE_URL=postgres://... cargo bench -p tower-spillway-benches --features spill --bench spill
//! ```
//!
//! The store is a SQLite file in the system's temporary directory (WAL,
//! `synchronous = FULL`) or, with `SPILL_STORE=postgres`, the `spill_jobs`
//! table of the database at `DATABASE_URL`; the figures are the disk's as
//! much as the code's.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_spillway::spill::{DeferrableRoutes, Mode};

#[path = "spill_store.rs"]
mod spill_store;

const RUN: Duration = Duration::from_secs(3);

fn request(n: u64) -> Request<Full<Bytes>> {
    Request::post("/likes")
        .header("content-type", "application/json")
        .header("idempotency-key", format!("like-{n}"))
        .body(Full::new(Bytes::from_static(br#"{"item":42,"user":1234}"#)))
        .expect("a valid request")
}

fn service(
    store: &mut spill_store::Store,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<tower_spillway::http::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let layer = store
        .layer()
        .deferrable(DeferrableRoutes::new().route(Some(Method::POST), "/likes"))
        .mode(Mode::Always)
        .build()
        .expect("valid settings");
    layer.layer(service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
    }))
}

/// As many callers as it takes to keep the store busy, for [`RUN`].
async fn peak(mut store: spill_store::Store, callers: u64) -> f64 {
    let svc = service(&mut store);
    let accepted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (svc, accepted) = (svc.clone(), Arc::clone(&accepted));
            tokio::spawn(async move {
                let mut n = c << 32;
                while start.elapsed() < RUN {
                    let res = svc.clone().oneshot(request(n)).await.expect("infallible");
                    if res.status() == StatusCode::ACCEPTED {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a caller");
    }
    accepted.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Open-loop arrivals at `rate` for [`RUN`]: the time each caller waited
/// for its `202`, sorted.
async fn steady(mut store: spill_store::Store, rate: f64) -> Vec<Duration> {
    let svc = service(&mut store);
    let gap = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        let due = start + gap * n as u32;
        tokio::time::sleep_until(due).await;
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let res = svc.oneshot(request(n)).await.expect("infallible");
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            sent.elapsed()
        }));
        n += 1;
    }
    let mut waits = Vec::with_capacity(tasks.len());
    for t in tasks {
        waits.push(t.await.expect("a caller"));
    }
    waits.sort();
    waits
}

fn main() {
    let rt = spill_store::runtime();
    let kind = spill_store::Kind::from_env();
    println!("store: {}", kind.describe());
    println!("| case | figure |\n|---|---:|");
    for callers in [64, 512] {
        let store = rt.block_on(kind.fresh("peak"));
        let rate = rt.block_on(peak(store, callers));
        println!("| peak, {callers} concurrent callers | {rate:.0} spilled requests/s |");
    }
    let store = rt.block_on(kind.fresh("steady"));
    let waits = rt.block_on(steady(store, 5000.0));
    let at = |q: f64| waits[((waits.len() as f64 * q) as usize).min(waits.len() - 1)];
    println!(
        "| 5,000 requests/s for {} s: time to the 202, p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        RUN.as_secs(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        waits[waits.len() - 1].as_secs_f64() * 1e3,
    );
}
