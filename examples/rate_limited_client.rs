//! A rate-limited gRPC server and clients that adapt to it without being
//! told its quota.
//!
//! The server (tonic's health service) limits each API key (`x-api-key`) to
//! `--quota` calls per second (default 200) with `RateLimitLayer`. Each
//! client calls it as fast as it can from `--tasks` tasks (default 32) for
//! `--secs` seconds (default 10), with one API key for all, through a stack
//! that paces its calls, adapts its concurrency (AIMD), honours the server's
//! `grpc-retry-pushback-ms` with a shared cooldown, and retries refused calls
//! within a budget. The pace is learned from the server's answers
//! (`LearnPaceLayer`: refusals and the `RateLimit-Policy` field) unless
//! `--pace N` gives it (`--pace 0`: no pacing, to watch the cooldown and the
//! budget work alone).
//!
//! ```text
//! cargo run --release --example rate_limited_client -- --json target/rate.json
//! cargo run --release --example rate_limited_client -- --clients 4 --secs 20
//! ```
//!
//! With `--clients N` (N > 1) the process serves and starts N client
//! processes of its own binary, which share the one key's quota. Prints, and
//! with `--json PATH` writes: `quota_rps`, `achieved_rps`, `calls`, `ok`,
//! `rejected`, `retries`, and per client its `achieved_rps`, its share of
//! what the clients got after the first `--settle` seconds (default 5: the
//! first client to call takes the server's burst, and the shares take a few
//! seconds to even out) and, in the JSON file only, `trace_ms_pace_ok`: every
//! 250 ms, the milliseconds since it started, its learned pace and the calls
//! answered so far, to see how the clients' paces move against each other.
//! The targets: `achieved_rps >= 0.9 * quota_rps`, `rejected <= 5 %` of
//! calls, and with several clients each settled share within ±20 % of a fair
//! one; the process exits non-zero when one is missed.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::transport::{Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tower::ServiceBuilder;
use tower_spillway::{
    limit::{AdaptiveLimitLayer, Aimd, HttpOutcomes},
    rate::{ApiKey, LearnPaceLayer, PaceLayer, Quota, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, ReplayBody, Retries},
};

/// How the client paces itself.
#[derive(Clone, Copy)]
enum Pacing {
    /// Learned from the server's answers.
    Learn,
    /// At a quota it is told.
    Known(u32),
    /// Not at all.
    Off,
}

struct Args {
    quota: u32,
    secs: u64,
    settle: u64,
    tasks: usize,
    pace: Pacing,
    clients: usize,
    /// A client process: call the server at this address.
    connect: Option<SocketAddr>,
    json: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        quota: 200,
        secs: 10,
        settle: 5,
        tasks: 32,
        pace: Pacing::Learn,
        clients: 1,
        connect: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--quota" => args.quota = value.parse().expect("--quota N"),
            "--secs" => args.secs = value.parse().expect("--secs N"),
            "--settle" => args.settle = value.parse().expect("--settle SECONDS"),
            "--tasks" => args.tasks = value.parse().expect("--tasks N"),
            "--clients" => args.clients = value.parse().expect("--clients N"),
            "--connect" => args.connect = Some(value.parse().expect("--connect ADDR")),
            "--pace" => {
                args.pace = match value.as_str() {
                    "learn" => Pacing::Learn,
                    "0" => Pacing::Off,
                    n => Pacing::Known(n.parse().expect("--pace learn|N|0")),
                }
            }
            "--json" => args.json = Some(value),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(args.clients >= 1, "--clients must be at least 1");
    assert!(
        args.settle < args.secs,
        "--settle must be shorter than --secs"
    );
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
            .layer(RateLimitLayer::builder(quota).keyed(ApiKey).http().build())
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
    let mut report = match args.connect {
        Some(addr) => client(&args, addr).await,
        None => {
            let quota = Quota::per_second(args.quota).expect("--quota must be positive");
            let addr = serve(quota).await;
            if args.clients == 1 {
                let mut report = client(&args, addr).await;
                report["settled_share_of_fair"] = json!(1.0);
                let alone = report.clone();
                // The trace is the client's, under `clients` as with several.
                if let Some(r) = report.as_object_mut() {
                    r.remove("trace_ms_pace_ok");
                }
                report["clients"] = json!([alone]);
                report
            } else {
                fleet(&args, addr).await
            }
        }
    };
    if args.connect.is_none() {
        report["quota_rps"] = json!(args.quota);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_string()).expect("write --json");
    }
    if args.connect.is_some() {
        return;
    }
    // The traces go to the JSON file only: too long to read on a terminal.
    let mut printed = report.clone();
    for c in printed["clients"].as_array_mut().into_iter().flatten() {
        if let Some(c) = c.as_object_mut() {
            c.remove("trace_ms_pace_ok");
        }
    }
    println!("{}", serde_json::to_string_pretty(&printed).unwrap());
    let achieved = report["achieved_rps"].as_f64().unwrap_or(0.0);
    let (calls, rejected) = (number(&report["calls"]), number(&report["rejected"]));
    let fair = report["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|c| (c["settled_share_of_fair"].as_f64().unwrap_or(0.0) - 1.0).abs() <= 0.2);
    let met = achieved >= 0.9 * f64::from(args.quota) && rejected * 20.0 <= calls && fair;
    println!(
        "target (achieved >= 0.9 x quota, rejected <= 5 %, each client within 20 % of a fair share once settled): {}",
        if met { "met" } else { "MISSED" }
    );
    if !met {
        std::process::exit(1);
    }
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// Starts the client processes, waits for them, and adds up their reports.
async fn fleet(args: &Args, addr: SocketAddr) -> Value {
    let dir = std::env::temp_dir();
    let mut children = Vec::new();
    for i in 0..args.clients {
        let path = dir.join(format!("rate-client-{}-{i}.json", std::process::id()));
        let pace = match args.pace {
            Pacing::Learn => "learn".to_owned(),
            Pacing::Known(n) => n.to_string(),
            Pacing::Off => "0".to_owned(),
        };
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--connect", &addr.to_string(), "--pace", &pace])
            .args(["--secs", &args.secs.to_string()])
            .args(["--settle", &args.settle.to_string()])
            .args(["--tasks", &args.tasks.to_string()])
            .args(["--json", path.to_str().unwrap()])
            .spawn()
            .expect("start a client process");
        children.push((child, path));
    }
    let mut reports = Vec::new();
    for (mut child, path) in children {
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .expect("a client process");
        assert!(status.success(), "a client process failed: {status}");
        let text = std::fs::read_to_string(&path).expect("a client's report");
        let _ = std::fs::remove_file(&path);
        reports.push(serde_json::from_str::<Value>(&text).expect("a client's JSON"));
    }
    let sum =
        |reports: &[Value], field: &str| reports.iter().map(|r| number(&r[field])).sum::<f64>();
    let fair = sum(&reports, "settled_ok") / reports.len() as f64;
    for r in &mut reports {
        r["settled_share_of_fair"] = json!(number(&r["settled_ok"]) / fair.max(1.0));
    }
    let sum = |field: &str| sum(&reports, field);
    json!({
        "achieved_rps": sum("achieved_rps"),
        "calls": sum("calls"),
        "ok": sum("ok"),
        "rejected": sum("rejected"),
        "retries": sum("retries"),
        "clients": reports,
    })
}

/// One client: its stack, its callers, its report.
async fn client(args: &Args, addr: SocketAddr) -> Value {
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
    let (learn, pace) = match args.pace {
        Pacing::Learn => (Some(LearnPaceLayer::new()), None),
        Pacing::Known(n) => (None, Some(PaceLayer::new(Quota::per_second(n).unwrap()))),
        Pacing::Off => (None, None),
    };
    let learned = learn.as_ref().map(LearnPaceLayer::handle);
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
        .option_layer(learn)
        .option_layer(pace)
        .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
            let mut req = req.map(tonic::body::Body::new);
            // Every client of this example shares one key, and its quota.
            req.headers_mut()
                .insert("x-api-key", http::HeaderValue::from_static("shop-key"));
            req
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
    // The learned pace and the calls answered, every 250 ms: how the
    // clients' paces move against each other.
    let trace = {
        let (learned, ok) = (learned.clone(), ok.clone());
        tokio::spawn(async move {
            let mut points = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            while Instant::now() < deadline {
                tick.tick().await;
                let rate = learned.as_ref().and_then(|h| h.snapshot().rate);
                points.push(json!([
                    start.elapsed().as_millis() as u64,
                    rate.map(|r| (r * 10.0).round() / 10.0),
                    ok.load(Ordering::Relaxed),
                ]));
            }
            points
        })
    };
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let ok_at_settle = ok.load(Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let trace = trace.await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let snap = stats.snapshot();
    let ok = ok.load(Ordering::Relaxed);
    json!({
        "achieved_rps": ok as f64 / elapsed,
        "calls": calls.load(Ordering::Relaxed),
        "ok": ok,
        "settled_ok": ok - ok_at_settle,
        "rejected": rejected.load(Ordering::Relaxed),
        "retries": snap.retries,
        "max_cooldown_ms": snap.max_cooldown_ms,
        "learned_rps": learned.and_then(|h| h.snapshot().rate),
        "trace_ms_pace_ok": trace,
    })
}
