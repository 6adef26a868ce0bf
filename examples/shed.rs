//! Priority load shedding on an axum service, under a spike.
//!
//! The service can serve 50 requests at a time. A spike of 2 000 requests
//! arrives (5 % checkout, 15 % cart, 30 % browse, 50 % analytics): the
//! shedder keeps every checkout, refuses analytics first, tells refused
//! callers when to come back, and serves its figures at `/stats`.
//!
//! ```text
//! cargo run --example shed
//! ```

use std::{sync::Arc, time::Duration};

use axum::{Json, Router, routing::get};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::Semaphore;
use tower_spillway::{
    Priority,
    priority::{PriorityLayer, RouteTable},
    shed::{HealthChecks, PriorityShedLayer, Thresholds},
};

#[tokio::main]
async fn main() {
    // The shedder: Low from 5 in flight, Default from 20, High from 100,
    // Critical never. Health checks pass untouched.
    let shed = PriorityShedLayer::builder(Thresholds::ladder(100))
        .bypass(HealthChecks)
        .http()
        .build();
    let stats = shed.handle();

    // The work: 50 at a time, 20 ms each.
    let capacity = Arc::new(Semaphore::new(50));
    let work = move || {
        let capacity = Arc::clone(&capacity);
        async move {
            let _slot = capacity.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            "ok"
        }
    };

    let routes = RouteTable::new()
        .route(Some(Method::GET), "/checkout", Priority::Critical)
        .route(None, "/cart", Priority::High)
        .route(None, "/analytics", Priority::Low);
    let app = Router::new()
        .route("/checkout", get(work.clone()))
        .route("/cart", get(work.clone()))
        .route("/browse", get(work.clone()))
        .route("/analytics", get(work))
        .route("/healthz", get(|| async { "alive" }))
        .layer(shed)
        .layer(PriorityLayer::new(routes))
        // Outside the shedder: reading the figures is never shed.
        .route("/stats", get(move || async move { Json(stats.snapshot()) }));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    println!("serving on http://{addr}");

    // The spike, over 20 connections' worth of concurrency at a time.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let paths = ["/checkout", "/cart", "/cart", "/cart"]
        .into_iter()
        .chain(["/browse"; 6])
        .chain(["/analytics"; 10])
        .collect::<Vec<_>>();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let path = paths[i % paths.len()];
        let client = client.clone();
        tasks.spawn(async move {
            let req = Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap();
            let res = client.request(req).await.unwrap();
            let retry_after = res
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            (path, res.status(), retry_after)
        });
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let mut table: Vec<(&str, u32, u32)> = ["/checkout", "/cart", "/browse", "/analytics"]
        .iter()
        .map(|p| (*p, 0, 0))
        .collect();
    let mut hints = std::collections::BTreeMap::<String, u32>::new();
    while let Some(done) = tasks.join_next().await {
        let (path, status, retry_after) = done.unwrap();
        let row = table.iter_mut().find(|r| r.0 == path).unwrap();
        if status == StatusCode::OK {
            row.1 += 1;
        } else {
            row.2 += 1;
            *hints.entry(retry_after.unwrap_or_default()).or_default() += 1;
        }
    }
    println!("{:<12} {:>6} {:>6}", "route", "served", "shed");
    for (path, ok, shed) in &table {
        println!("{path:<12} {ok:>6} {shed:>6}");
    }
    println!("Retry-After values sent (seconds: count): {hints:?}");

    let req = Request::get(format!("http://{addr}/stats"))
        .body(Empty::new())
        .unwrap();
    let body = client.request(req).await.unwrap().into_body();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    println!("/stats: {}", String::from_utf8_lossy(&bytes));
}
