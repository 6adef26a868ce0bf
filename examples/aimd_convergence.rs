//! How fast an AIMD limit finds a backend's capacity, and follows it when it
//! changes.
//!
//! An in-process loopback HTTP backend (axum on 127.0.0.1) can serve
//! `capacity` requests at once in 10 ms each; beyond that it slows down
//! (10 ms × in-flight / capacity) and answers `503`. Its capacity changes
//! from 40 to 10 to 80. A client, 150 workers calling in a closed loop
//! through an `AdaptiveLimit` (AIMD: min 1, initial 20, max 200, backoff
//! 0.9, growth [`Growth::PerLimit`], decrease at most once per round trip)
//! with `HttpOutcomes` classification, must discover each capacity on its
//! own. `--netflix` runs Netflix's exact semantics instead (+1 per success,
//! ×0.9 per drop): against a backend that answers overload at once it
//! overshoots, collapses on bursts of drops and does not settle, which is
//! why the two options exist.
//!
//! The limit is sampled every 10 ms and printed every 500 ms.
//!
//! **Settle time** is measured per phase as the time from the capacity
//! change until the limit's 250 ms moving average (the mean of the last 25
//! samples) enters ±25 % of the capacity *and stays there until the end of
//! the phase*. `settle_ms` is `null` when the moving average is outside the
//! band at the end of the phase. `mean_limit` is the mean of all samples in
//! the phase, `p99_latency_ms` the 99th percentile of what callers saw
//! (queueing included), `drop_rate` the share of calls that ended in a
//! backend `503` or a refusal by the limiter.
//!
//! ```text
//! cargo run --release --example aimd_convergence -- [--json PATH] [--phase-secs N] [--netflix]
//! ```
//!
//! The default run takes 3 phases of 8 s.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_spillway::limit::{AdaptiveLimitLayer, Aimd, Growth, HttpOutcomes};

const PHASES: [usize; 3] = [40, 10, 80];
const WORKERS: usize = 150;
const BASE: Duration = Duration::from_millis(10);
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
const WINDOW: usize = 25;

#[derive(Clone, Default)]
struct Backend {
    capacity: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handler(State(b): State<Backend>) -> StatusCode {
    let n = b.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(b.in_flight.clone());
    let capacity = b.capacity.load(Ordering::SeqCst).max(1);
    if n <= capacity {
        tokio::time::sleep(BASE).await;
        StatusCode::OK
    } else {
        tokio::time::sleep(BASE.mul_f64(n as f64 / capacity as f64)).await;
        StatusCode::SERVICE_UNAVAILABLE
    }
}

#[derive(Default)]
struct PhaseStats {
    latencies: Vec<Duration>,
    calls: u64,
    drops: u64,
}

struct Args {
    per_sample: bool,
    json: Option<String>,
    phase: Duration,
}

fn args() -> Args {
    let mut json = None;
    let mut per_sample = false;
    let mut phase = Duration::from_secs(8);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = it.next(),
            "--netflix" => per_sample = true,
            "--phase-secs" => {
                let secs: f64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(8.0);
                phase = Duration::from_secs_f64(secs.max(1.0));
            }
            other => {
                eprintln!(
                    "unknown argument {other}; usage: [--json PATH] [--phase-secs N] [--netflix]"
                );
                std::process::exit(2);
            }
        }
    }
    Args {
        per_sample,
        json,
        phase,
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let growth = if args.per_sample {
        Growth::PerSample
    } else {
        Growth::PerLimit
    };
    let backend = Backend::default();
    backend.capacity.store(PHASES[0], Ordering::SeqCst);
    let app = Router::new()
        .route("/", get(handler))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(WORKERS)
        .build::<_, Empty<Bytes>>(connector);
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(20)
        .max_limit(200)
        .growth(growth)
        .decrease_once_per_rtt(!args.per_sample)
        .build()
        .unwrap();
    let layer = AdaptiveLimitLayer::builder(aimd)
        .outcomes(HttpOutcomes::new())
        .max_queue(WORKERS)
        .queue_timeout(Duration::from_secs(2))
        .build();
    let handle = layer.handle();
    let svc = ServiceBuilder::new().layer(layer).service(client);

    let phase_idx = Arc::new(AtomicUsize::new(0));
    let stats: Arc<Vec<Mutex<PhaseStats>>> =
        Arc::new(PHASES.iter().map(|_| Mutex::default()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    for _ in 0..WORKERS {
        let (svc, stats, stop, phase_idx, uri) = (
            svc.clone(),
            stats.clone(),
            stop.clone(),
            phase_idx.clone(),
            uri.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let dropped = match svc.clone().oneshot(req).await {
                    Ok(res) => {
                        let status = res.status();
                        let _ = res.into_body().collect().await;
                        status == StatusCode::SERVICE_UNAVAILABLE
                    }
                    Err(_) => true,
                };
                let mut s = stats[phase_idx.load(Ordering::Relaxed)].lock().unwrap();
                s.calls += 1;
                s.drops += u64::from(dropped);
                s.latencies.push(start.elapsed());
            }
        });
    }

    let mut results = Vec::new();
    let t0 = Instant::now();
    println!("phase capacity   time   limit  in_flight  queued");
    for (i, &capacity) in PHASES.iter().enumerate() {
        backend.capacity.store(capacity, Ordering::SeqCst);
        phase_idx.store(i, Ordering::Relaxed);
        let start = Instant::now();
        let mut samples: Vec<(Duration, usize)> = Vec::new();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        while start.elapsed() < args.phase {
            tick.tick().await;
            let limit = handle.limit();
            samples.push((start.elapsed(), limit));
            if samples.len() % 50 == 0 {
                println!(
                    "{i:>5} {capacity:>8} {:>6.2}s {limit:>6} {:>10} {:>7}",
                    t0.elapsed().as_secs_f64(),
                    handle.in_flight(),
                    handle.queued()
                );
            }
        }
        let settle = settle_time(&samples, capacity);
        let mean = samples.iter().map(|s| s.1 as f64).sum::<f64>() / samples.len() as f64;
        let s = stats[i].lock().unwrap();
        let mut lat = s.latencies.clone();
        lat.sort_unstable();
        let p99 = lat
            .get((lat.len() as f64 * 0.99) as usize)
            .or(lat.last())
            .copied()
            .unwrap_or_default();
        let drop_rate = if s.calls == 0 {
            0.0
        } else {
            s.drops as f64 / s.calls as f64
        };
        results.push(serde_json::json!({
            "capacity": capacity,
            "mean_limit": (mean * 10.0).round() / 10.0,
            "p99_latency_ms": (p99.as_secs_f64() * 10_000.0).round() / 10.0,
            "drop_rate": (drop_rate * 10_000.0).round() / 10_000.0,
            "settle_ms": settle.map(|d| d.as_millis() as u64),
            "calls": s.calls,
        }));
    }
    stop.store(true, Ordering::Relaxed);

    println!();
    println!(
        "capacity  mean_limit  p99_ms  drop_rate  settle_ms  (target: within ±25 % in 5000 ms)"
    );
    for r in &results {
        let settle = r["settle_ms"].as_u64();
        let verdict = match settle {
            Some(ms) if ms <= 5000 => "met".to_owned(),
            Some(ms) => format!("missed by {} ms", ms - 5000),
            None => "missed: not settled at the end of the phase".to_owned(),
        };
        println!(
            "{:>8}  {:>10}  {:>6}  {:>9}  {:>9}  {verdict}",
            r["capacity"],
            r["mean_limit"],
            r["p99_latency_ms"],
            r["drop_rate"],
            settle.map_or("-".to_owned(), |s| s.to_string()),
        );
    }
    if let Some(path) = args.json {
        let doc = serde_json::json!({ "phases": results });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        println!("wrote {path}");
    }
}

/// From the phase start to the moment the 250 ms moving average of the
/// limit enters ±25 % of `capacity` for good; `None` if it is outside the
/// band at the end.
fn settle_time(samples: &[(Duration, usize)], capacity: usize) -> Option<Duration> {
    let (lo, hi) = (capacity as f64 * 0.75, capacity as f64 * 1.25);
    let mut settled_at = None;
    for i in 0..samples.len() {
        let from = i.saturating_sub(WINDOW - 1);
        let window = &samples[from..=i];
        let avg = window.iter().map(|s| s.1 as f64).sum::<f64>() / window.len() as f64;
        let inside = (lo..=hi).contains(&avg);
        match (inside, settled_at) {
            (true, None) => settled_at = Some(samples[i].0),
            (false, Some(_)) => settled_at = None,
            _ => {}
        }
    }
    settled_at
}
