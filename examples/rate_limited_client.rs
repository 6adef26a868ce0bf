//! A rate-limited gRPC server and a client that adapts to it.
//!
//! The server (tonic's health service) is limited to `--quota` calls per
//! second (default 200) by `RateLimitLayer`. The client calls it as fast as it
//! can from `--tasks` tasks (default 32) for `--secs` seconds (default 10),
//! through a stack that paces its calls, adapts its concurrency (AIMD), honours the server's
//! `grpc-retry-pushback-ms` with a shared cooldown, and retries refused calls
//! within a budget.
//!
//! ```text
//! cargo run --release --example rate_limited_client -- --json target/rate.json
//! ```
//!
//! Prints, and with `--json PATH` writes: `quota_rps`, `achieved_rps`,
//! `calls`, `ok`, `rejected`, `retries`, `max_cooldown_ms`. The target is
//! `achieved_rps >= 0.9 * quota_rps` and `rejected <= 5 %` of calls; the
//! process exits non-zero when it is missed. `--pace 0` turns client-side
//! pacing off, to watch the cooldown and the budget work alone.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tower::ServiceBuilder;
use tower_spillway::{
    limit::{AdaptiveLimitLayer, Aimd, HttpOutcomes},
    rate::{PaceLayer, Quota, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, ReplayBody, Retries},
};

struct Args {
    quota: u32,
    secs: u64,
    tasks: usize,
    pace: u32,
    json: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        quota: 200,
        secs: 10,
        tasks: 32,
        pace: u32::MAX,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--quota" => args.quota = value.parse().expect("--quota N"),
            "--secs" => args.secs = value.parse().expect("--secs N"),
            "--tasks" => args.tasks = value.parse().expect("--tasks N"),
            "--pace" => args.pace = value.parse().expect("--pace N (0: off)"),
            "--json" => args.json = Some(value),
            _ => panic!("unknown flag {flag}"),
        }
    }
    if args.pace == u32::MAX {
        args.pace = args.quota;
    }
    args
}

async fn serve(quota: Quota) -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        Server::builder()
            .layer(RateLimitLayer::builder(quota).http().build())
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

#[tokio::main]
async fn main() {
    let args = args();
    let addr = serve(Quota::per_second(args.quota).expect("--quota must be positive")).await;
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    // The client stack, outermost first. gRPC calls are POSTs: allow their
    // retry explicitly (the server refused them before running them).
    let honour = HonorRetryAfterLayer::builder()
        .retries(Retries::new().allow_non_idempotent(true))
        .build();
    let stats = honour.handle();
    let pace = (args.pace > 0).then(|| PaceLayer::new(Quota::per_second(args.pace).unwrap()));
    let stack = ServiceBuilder::new()
        .layer(honour)
        // Fewer calls in flight when the server pushes back or slows down.
        .layer(
            AdaptiveLimitLayer::builder(
                Aimd::builder()
                    .min_limit(1)
                    .initial_limit(args.tasks)
                    .max_limit(args.tasks.max(1) * 4)
                    .build()
                    .expect("a valid AIMD configuration"),
            )
            .outcomes(HttpOutcomes::new())
            // Every task may wait: a closed-loop client has nothing better to do.
            .max_queue(args.tasks)
            .queue_timeout(Duration::from_secs(30))
            .build(),
        )
        .option_layer(pace)
        .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
            req.map(tonic::body::Body::new)
        })
        .service(channel);
    let client = HealthClient::new(stack);

    let calls = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    let mut tasks = Vec::new();
    for _ in 0..args.tasks {
        let mut client = client.clone();
        let (calls, ok, rejected) = (calls.clone(), ok.clone(), rejected.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let req = HealthCheckRequest {
                    service: String::new(),
                };
                calls.fetch_add(1, Ordering::Relaxed);
                match client.check(req).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    // Refused by the client's own limiter: counted as rejected too.
                    Err(s) if tower_spillway::is_overloaded(&s) => {
                        rejected.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(s) => panic!("unexpected status {s:?}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let snap = stats.snapshot();
    let calls = calls.load(Ordering::Relaxed);
    let ok = ok.load(Ordering::Relaxed);
    let rejected = rejected.load(Ordering::Relaxed);
    let report = serde_json::json!({
        "quota_rps": args.quota,
        "achieved_rps": ok as f64 / elapsed,
        "calls": calls,
        "ok": ok,
        "rejected": rejected,
        "retries": snap.retries,
        "max_cooldown_ms": snap.max_cooldown_ms,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if let Some(path) = args.json {
        std::fs::write(&path, report.to_string()).expect("write --json");
    }
    let achieved = ok as f64 / elapsed;
    let met = achieved >= 0.9 * f64::from(args.quota) && rejected * 20 <= calls;
    println!(
        "target (achieved >= 0.9 x quota, rejected <= 5 %): {}",
        if met { "met" } else { "MISSED" }
    );
    if !met {
        std::process::exit(1);
    }
}
