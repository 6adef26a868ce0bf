//! The overload stack on a tonic server, and a tonic client that adapts to
//! it, in one process for a few seconds.
//!
//! The server (`tonic_stack/shop.rs`, no `protoc` needed) has four methods
//! over the simulated database of `flash_sale/backend.rs`: `Pay` Critical,
//! `PlaceOrder` High, `Like` Default, `Track` Low. It is protected by
//! `PriorityLayer` (`GrpcMethods`), adaptive `PriorityShedLayer` (the gRPC
//! health service bypasses it), a rate limit per API key and an AIMD
//! `AdaptiveLimitLayer`; refusals are trailers-only `UNAVAILABLE` or
//! `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`.
//!
//! Two callers drive it, each through its own client stack
//! (`HonorRetryAfterLayer` over an AIMD `AdaptiveLimitLayer` over one shared
//! `Channel`), each with its own API key and each far faster than the
//! database: `checkout` (Pay, PlaceOrder) and `activity` (Like, Track). The
//! run prints what each caller saw: calls that succeeded, refusals by status,
//! and the cooldowns its client waited out. Expect `activity` to take nearly
//! all the refusals and the long cooldowns while `checkout` keeps flowing up
//! to its quota; a refusal pauses the whole client that received it, for as
//! long as the server asked.
//!
//! ```text
//! cargo run --release --example tonic_stack -- [--secs 4] [--capacity 8] [--service-ms 20] [--tasks 64] [--quota 100]
//! ```

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::transport::{Endpoint, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[path = "flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "common/mod.rs"]
mod common;
#[path = "tonic_stack/shop.rs"]
mod shop;

use shop::Method;

struct Args {
    secs: u64,
    tasks: usize,
    config: shop::Config,
}

fn args() -> Args {
    let mut args = Args {
        secs: 4,
        tasks: 64,
        config: shop::Config {
            capacity: 8,
            service: Duration::from_millis(20),
            quota_per_key: 300,
        },
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .filter(|&v| v > 0)
            .unwrap_or_else(|| usage(&format!("{flag} needs a positive number")));
        match flag.as_str() {
            "--secs" => args.secs = value.min(60),
            "--tasks" => args.tasks = value as usize,
            "--capacity" => args.config.capacity = value as usize,
            "--service-ms" => args.config.service = Duration::from_millis(value),
            "--quota" => args.config.quota_per_key = value.try_into().unwrap_or(u32::MAX),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    args
}

fn usage(error: &str) -> ! {
    eprintln!("error: {error}");
    eprintln!(
        "usage: tonic_stack [--secs S] [--tasks N] [--capacity C] [--service-ms M] [--quota Q]"
    );
    std::process::exit(2)
}

/// What one caller saw.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    unavailable: AtomicU64,
    exhausted: AtomicU64,
    /// Refused by the caller's own limiter, never sent.
    local: AtomicU64,
    other: AtomicU64,
}

impl Seen {
    fn record(&self, result: &Result<tonic::Response<shop::WriteReply>, tonic::Status>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(s) if tower_spillway::is_overloaded(s) => &self.local,
            Err(s) if s.code() == tonic::Code::Unavailable => &self.unavailable,
            Err(s) if s.code() == tonic::Code::ResourceExhausted => &self.exhausted,
            Err(_) => &self.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The layers' transitions, not every request (with the `tracing`
    // feature).
    common::init_tracing();

    let args = args();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    let (server, handles) = shop::serve(incoming, &args.config).await;
    let server = tokio::spawn(server);
    let capacity = args.config.capacity as f64 / args.config.service.as_secs_f64();
    println!(
        "server on {addr}: database {} slots x {} ms = {capacity:.0} writes/s; {} calls/s per API key",
        args.config.capacity,
        args.config.service.as_millis(),
        args.config.quota_per_key,
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let callers = [
        (
            "checkout",
            &[Method::Pay, Method::PlaceOrder, Method::PlaceOrder][..],
        ),
        (
            "activity",
            &[Method::Like, Method::Track, Method::Track][..],
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let mut report = Vec::new();
    let mut tasks = Vec::new();
    for (key, mix) in callers {
        let (client, cooldowns, limit) = shop::client(channel.clone(), args.tasks);
        let seen = Arc::new(Seen::default());
        for task in 0..args.tasks {
            let (mut client, seen) = (client.clone(), Arc::clone(&seen));
            tasks.push(tokio::spawn(async move {
                let mut n = task;
                while Instant::now() < deadline {
                    let method = mix[n % mix.len()];
                    n += 1;
                    let mut req = tonic::Request::new(shop::WriteRequest {
                        item: "sku-1".into(),
                        quantity: 1,
                    });
                    req.metadata_mut().insert("x-api-key", key.parse().unwrap());
                    // Bounded: a call never outlives the demo by much.
                    req.set_timeout(Duration::from_secs(2));
                    let result = client.call(method, req).await;
                    seen.record(&result);
                }
            }));
        }
        report.push((key, seen, cooldowns, limit));
    }

    // Meanwhile, health checks still answer: they bypass the shedder and sit
    // outside the limiter.
    let mut health = HealthClient::new(channel.clone());
    let mut health_ok = 0;
    let mut health_worst = Duration::ZERO;
    while Instant::now() < deadline {
        let start = Instant::now();
        let res = health
            .check(HealthCheckRequest {
                service: "shop.v1.Shop".into(),
            })
            .await;
        health_worst = health_worst.max(start.elapsed());
        health_ok += u32::from(res.is_ok());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for t in tasks {
        t.await?;
    }

    println!(
        "\n{:<9} {:>7} {:>12} {:>19} {:>13} {:>9} {:>12} {:>12}",
        "caller",
        "ok",
        "UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
        "client-side",
        "cooldowns",
        "longest ms",
        "client limit"
    );
    for (key, seen, cooldowns, limit) in &report {
        let c = cooldowns.snapshot();
        println!(
            "{:<9} {:>7} {:>12} {:>19} {:>13} {:>9} {:>12} {:>12}",
            key,
            seen.ok.load(Ordering::Relaxed),
            seen.unavailable.load(Ordering::Relaxed),
            seen.exhausted.load(Ordering::Relaxed),
            seen.local.load(Ordering::Relaxed),
            c.cooldowns,
            c.max_cooldown_ms,
            limit.limit(),
        );
        let other = seen.other.load(Ordering::Relaxed);
        if other > 0 {
            println!("{key}: {other} calls failed otherwise (deadline exceeded, transport)");
        }
    }
    let shed = handles.shed.snapshot();
    let limit = handles.limit.snapshot();
    println!(
        "\nserver: shed critical {} high {} default {} low {}; limit {} (queue full {}, queue timeout {}); rate-limited {}",
        shed.shed.critical,
        shed.shed.high,
        shed.shed.default,
        shed.shed.low,
        limit.limit,
        limit.rejected_queue_full,
        limit.rejected_queue_timeout,
        handles.rate.snapshot().limited,
    );
    println!(
        "health checks: {health_ok} answered SERVING, slowest {:.0} ms",
        health_worst.as_secs_f64() * 1e3
    );
    server.abort();
    Ok(())
}
