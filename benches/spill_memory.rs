//! Memory while a million spilled jobs wait: a `SpillLayer` in `Always`
//! mode over `SqliteStore` takes 1,000,000 requests from 512 concurrent
//! callers, nothing drains them, and the process's resident memory is read
//! every 100,000 jobs. The jobs live in the SQLite file; what the process
//! keeps per job should be nothing.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --features spill --bench spill_memory
//! SPILL_STORE=postgres DATABASE_URL=postgres://... cargo bench -p tower-spillway-benches --features spill --bench spill_memory
//! ```
//!
//! With `SPILL_STORE=postgres` the jobs go to the `spill_jobs` table of the
//! database at `DATABASE_URL` instead.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_spillway::spill::{DeferrableRoutes, Mode};

#[path = "spill_store.rs"]
mod spill_store;

const JOBS: u64 = 1_000_000;
const CALLERS: u64 = 512;

/// Resident memory, in MiB, from `/proc/self/statm` (Linux).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(f64::NAN);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let rt = spill_store::runtime();
    let kind = spill_store::Kind::from_env();
    println!("store: {}", kind.describe());
    rt.block_on(async {
        let mut store = kind.fresh("memory").await;
        let layer = store
            .layer()
            .deferrable(DeferrableRoutes::new().route(Some(Method::POST), "/likes"))
            .mode(Mode::Always)
            .bounds(tower_spillway::spill::Bounds {
                max_jobs: 2 * JOBS,
                max_bytes: u64::MAX,
                ..Default::default()
            })
            .build()
            .expect("valid settings");
        let handle = layer.handle();
        let svc = layer.layer(service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
        let next = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        println!("| jobs waiting | resident memory |\n|---:|---:|");
        println!("| 0 | {:.1} MiB |", rss_mib());
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (svc, next) = (svc.clone(), Arc::clone(&next));
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= JOBS {
                            return;
                        }
                        let req = Request::post("/likes")
                            .header("content-type", "application/json")
                            .header("idempotency-key", format!("like-{n}"))
                            .body(Full::new(Bytes::from_static(br#"{"item":42,"user":1234}"#)))
                            .expect("a valid request");
                        let res = svc.clone().oneshot(req).await.expect("infallible");
                        assert_eq!(res.status(), StatusCode::ACCEPTED);
                        if (n + 1) % 100_000 == 0 {
                            println!("| {} | {:.1} MiB |", n + 1, rss_mib());
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a caller");
        }
        let stats = handle.store_stats().await.expect("stats");
        println!(
            "\n{} jobs queued in {:.1} s; {:.0} MiB of them",
            stats.queued_total(),
            start.elapsed().as_secs_f64(),
            stats.bytes as f64 / 1048576.0
        );
    });
}
