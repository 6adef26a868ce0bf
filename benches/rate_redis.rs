//! What a check of a Redis-backed rate limit costs, against the local GCRA
//! in the same run: the latency one check adds (p50, p99, max; one caller,
//! one check at a time, and under the load of many callers), and how many
//! checks a second one instance gets through Redis when its concurrent
//! checks are batched and pipelined.
//!
//! ```text
//! eval "$(.ci/redis.sh)"
//! cargo bench -p tower-spillway-benches --features rate-redis --bench rate_redis
//! ```
//!
//! Without `REDIS_URL` it says so and measures nothing; with
//! `REDIS_CLUSTER_URLS` (the nodes of a Redis Cluster, space-separated, as
//! `.ci/redis.sh` exports them) it measures the same limits on the cluster. The limit admits
//! every check, so the figures are the check's and not the refusal's; the
//! inner service answers at once. Redis shares the machine's cores with the
//! bench.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tower::{ServiceExt, service_fn};
use tower_layer::Layer;
use tower_spillway::{
    key::key_fn,
    rate::{Quota, RateLimitHandle, RateLimitLayer, RedisClient, RedisOptions},
};

const RUN: Duration = Duration::from_secs(3);
const SEQUENTIAL: usize = 20_000;

/// A billion a second: more than either kind reaches, so every check is
/// admitted (Redis's clock has microseconds, so there the interval is 1 µs
/// and the rate a million a second per key, still out of reach).
fn quota() -> Quota {
    Quota::new(1_000_000_000, Duration::from_secs(1)).expect("a valid quota")
}

fn ok(_: u64) -> Ready<Result<(), Infallible>> {
    ready(Ok(()))
}

/// A service of each kind: the local GCRA, Redis with one bucket (global),
/// Redis with a bucket per request's key.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Local,
    RedisGlobal,
    RedisKeyed,
    ClusterGlobal,
    ClusterKeyed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Local => "local GCRA (in process)",
            Kind::RedisGlobal => "Redis, global",
            Kind::RedisKeyed => "Redis, keyed (10,000 keys)",
            Kind::ClusterGlobal => "Redis Cluster (3 primaries), global",
            Kind::ClusterKeyed => "Redis Cluster (3 primaries), keyed (10,000 keys)",
        }
    }
}

/// Where the Redis kinds keep their buckets.
struct Servers {
    url: String,
    cluster: Option<Vec<String>>,
}

impl Servers {
    fn client(&self, kind: Kind) -> RedisClient {
        match kind {
            Kind::ClusterGlobal | Kind::ClusterKeyed => {
                let nodes = self.cluster.clone().expect("cluster kinds only with nodes");
                redis::cluster::ClusterClient::new(nodes)
                    .expect("valid REDIS_CLUSTER_URLS")
                    .into()
            }
            _ => redis::Client::open(self.url.as_str())
                .expect("a valid REDIS_URL")
                .into(),
        }
    }
}

type BoxSvc = tower::util::BoxCloneSyncService<u64, (), tower::BoxError>;

/// The service of `kind`, connected (for Redis) before it is returned.
async fn service(kind: Kind, servers: &Servers) -> BoxSvc {
    let inner = service_fn(ok);
    let prefix = format!("spillway-bench:{}:{:?}", std::process::id(), kind);
    let options = || {
        RedisOptions::new(&prefix)
            // The figures are the checks': no fallback may answer for Redis.
            .timeout(Duration::from_secs(1))
            .expect("a valid timeout")
    };
    let client = || servers.client(kind);
    match kind {
        Kind::Local => BoxSvc::new(RateLimitLayer::new(quota()).layer(inner)),
        Kind::RedisGlobal | Kind::ClusterGlobal => {
            let layer = RateLimitLayer::builder(quota())
                .redis(client(), options())
                .build();
            connected(&layer.handle()).await;
            BoxSvc::new(layer.layer(inner))
        }
        Kind::RedisKeyed | Kind::ClusterKeyed => {
            let layer = RateLimitLayer::builder(quota())
                .keyed(key_fn(|n: &u64| n % 10_000))
                .redis(client(), options())
                .build();
            connected(&layer.handle()).await;
            BoxSvc::new(layer.layer(inner))
        }
    }
}

async fn connected<K: std::hash::Hash + Eq + Clone>(handle: &RateLimitHandle<K>) {
    while !handle.snapshot().redis.is_some_and(|r| r.connected) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One caller, one check at a time: each check's time, sorted. The caller
/// is a task on the runtime, as a server's request is.
async fn one_at_a_time(svc: &BoxSvc) -> Vec<Duration> {
    let svc = svc.clone();
    let mut times = tokio::spawn(async move {
        let mut times = Vec::with_capacity(SEQUENTIAL);
        for n in 0..SEQUENTIAL as u64 {
            let start = Instant::now();
            svc.clone().oneshot(n).await.expect("admitted");
            times.push(start.elapsed());
        }
        times
    })
    .await
    .expect("the caller");
    times.sort();
    times
}

/// `callers` callers checking back to back for [`RUN`]: checks a second,
/// and each check's time, sorted.
async fn closed_loop(svc: &BoxSvc, callers: u64) -> (f64, Vec<Duration>) {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (svc, done) = (svc.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let mut times = Vec::new();
                let mut n = c;
                while start.elapsed() < RUN {
                    let sent = Instant::now();
                    svc.clone().oneshot(n).await.expect("admitted");
                    times.push(sent.elapsed());
                    n += callers;
                }
                done.fetch_add(times.len() as u64, Ordering::Relaxed);
                times
            })
        })
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.expect("a caller"));
    }
    let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    times.sort();
    (rate, times)
}

fn at(times: &[Duration], q: f64) -> f64 {
    let i = ((times.len() as f64 * q) as usize).min(times.len() - 1);
    times[i].as_secs_f64() * 1e6
}

fn main() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        println!("rate_redis: skipped, REDIS_URL is not set (see .ci/redis.sh)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let servers = Servers {
        url,
        cluster: std::env::var("REDIS_CLUSTER_URLS")
            .ok()
            .map(|urls| urls.split_whitespace().map(str::to_owned).collect()),
    };
    let mut kinds = vec![Kind::Local, Kind::RedisGlobal, Kind::RedisKeyed];
    if servers.cluster.is_some() {
        kinds.extend([Kind::ClusterGlobal, Kind::ClusterKeyed]);
    }

    println!("One caller, {SEQUENTIAL} checks one at a time (µs per check):\n");
    println!("| limit | p50 | p99 | max |\n|---|---:|---:|---:|");
    for &kind in &kinds {
        let times = rt.block_on(async {
            let svc = service(kind, &servers).await;
            one_at_a_time(&svc).await
        });
        println!(
            "| {} | {:.1} | {:.1} | {:.0} |",
            kind.name(),
            at(&times, 0.5),
            at(&times, 0.99),
            at(&times, 1.0)
        );
    }

    println!(
        "\nConcurrent callers checking back to back for {} s:\n",
        RUN.as_secs()
    );
    println!("| limit | callers | checks/s | p50 µs | p99 µs |\n|---|---:|---:|---:|---:|");
    for &kind in &kinds {
        for callers in [64, 512] {
            let (rate, times) = rt.block_on(async {
                let svc = service(kind, &servers).await;
                closed_loop(&svc, callers).await
            });
            println!(
                "| {} | {callers} | {rate:.0} | {:.1} | {:.1} |",
                kind.name(),
                at(&times, 0.5),
                at(&times, 0.99)
            );
        }
    }
}
