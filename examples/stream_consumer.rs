//! A backlog that waits on Redis while the consumer throttles: the seed's
//! "source queue as overflow buffer".
//!
//! A producer floods Redis streams (`High` and `Low` tiers) at `--rate`
//! entries a second for the first half of the run; a backend takes at most
//! `--capacity` requests at once, `--service-ms` each, so it sustains
//! `capacity / service` a second, less than the flood. A `Drain` over a
//! `RedisStreamSource` replays the entries into the backend through an
//! adaptive limit (`Gradient`). Once a second the example prints the
//! backlog left on Redis (`on_redis`: unread and pending, from the consumer
//! group; `high` and `low` unread), the consumer's in-flight (`drain_inf`,
//! the replays it holds, at most its window; `app_inf`, those the limit has
//! let in) and its throughput: the backlog grows on Redis, not in the
//! consumer, whose in-flight stays bounded, and drains once the flood ends,
//! High before Low.
//!
//! ```text
//! eval "$(.ci/redis.sh)"      # or any Redis 7; REDIS_URL is the default
//! cargo run --release --example stream_consumer -- \
//!     [--redis-url redis://127.0.0.1:6379/] [--seconds 20] [--rate 2000] [--capacity 8] [--service-ms 10]
//! ```
//!
//! The streams are named `stream-consumer-<pid>:<tier>` and deleted at the end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, http::Request, routing::post};
use tokio::{sync::Semaphore, time::Instant};
use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Gradient},
    spill::{Drain, RedisStreamSource, StreamProducer},
};

struct Args {
    redis_url: String,
    seconds: u64,
    rate: u64,
    capacity: usize,
    service: Duration,
}

fn args() -> Result<Args, String> {
    const USAGE: &str = "usage: stream_consumer [--redis-url URL] [--seconds N] [--rate N] \
                         [--capacity N] [--service-ms N]";
    let mut args = Args {
        redis_url: std::env::var("REDIS_URL").unwrap_or_default(),
        seconds: 20,
        rate: 2000,
        capacity: 8,
        service: Duration::from_millis(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let number = |v: String| v.parse::<u64>().ok().filter(|n| *n > 0);
        match flag.as_str() {
            "--redis-url" => args.redis_url = value()?,
            "--seconds" => args.seconds = number(value()?).ok_or("--seconds: a positive number")?,
            "--rate" => args.rate = number(value()?).ok_or("--rate: a positive number")?,
            "--capacity" => {
                args.capacity = number(value()?).ok_or("--capacity: a positive number")? as usize;
            }
            "--service-ms" => {
                let ms = number(value()?).ok_or("--service-ms: a positive number")?;
                args.service = Duration::from_millis(ms);
            }
            _ => return Err(USAGE.to_owned()),
        }
    }
    if args.redis_url.is_empty() {
        return Err(format!("set REDIS_URL or pass --redis-url\n{USAGE}"));
    }
    Ok(args)
}

/// The backend: `capacity` requests at once, `service` each; the rest wait
/// for a slot, which is what makes its latency climb under overload.
fn backend(capacity: usize, service: Duration, done: Arc<AtomicU64>) -> Router {
    let slots = Arc::new(Semaphore::new(capacity));
    let handler = move |_req: Request<axum::body::Body>| {
        let (slots, done) = (Arc::clone(&slots), Arc::clone(&done));
        async move {
            let _slot = slots.acquire().await;
            tokio::time::sleep(service).await;
            done.fetch_add(1, Relaxed);
            "stored"
        }
    };
    Router::new().route("/{*path}", post(handler))
}

/// Floods the streams at `rate` a second (a quarter High, the rest Low),
/// pipelining each 10 ms's worth, until `until`.
async fn produce(
    mut conn: redis::aio::MultiplexedConnection,
    producer: StreamProducer,
    rate: u64,
    until: Instant,
    produced: Arc<AtomicU64>,
) -> redis::RedisResult<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate / 100).max(1);
    let mut n = 0_u64;
    while Instant::now() < until {
        tick.tick().await;
        let mut pipe = redis::pipe();
        for _ in 0..per_tick {
            let (priority, path) = if n % 4 == 0 {
                (Priority::High, "/orders")
            } else {
                (Priority::Low, "/analytics")
            };
            let body = Bytes::from(format!("{{\"n\":{n}}}"));
            let req = Request::post(path)
                .header("content-type", "application/json")
                .body(body)
                .expect("a valid request");
            pipe.add_command(producer.xadd(priority, &req)).ignore();
            n += 1;
        }
        pipe.query_async::<()>(&mut conn).await?;
        produced.fetch_add(per_tick, Relaxed);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let client = redis::Client::open(args.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let name = format!("stream-consumer-{}", std::process::id());
    let source = RedisStreamSource::builder(client, name.clone())
        .group("stream-consumer")
        .build()?;
    let producer = source.producer();

    let done = Arc::new(AtomicU64::new(0));
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .queue_timeout(Duration::from_millis(200))
        .http()
        .build();
    let limit_handle = limit.handle();
    let app = backend(args.capacity, args.service, Arc::clone(&done)).layer(limit);
    let drain = Drain::new(source, app).lease(Duration::from_secs(10));
    let stats = drain.handle();
    let drain = drain.spawn();

    let capacity = args.capacity as f64 / args.service.as_secs_f64();
    println!(
        "flooding {name}:{{high,low}} at {} entries/s for {} s; the backend's nominal capacity is {capacity:.0}/s",
        args.rate,
        args.seconds.div_ceil(2)
    );
    let start = Instant::now();
    let produced = Arc::new(AtomicU64::new(0));
    let flood = tokio::spawn(produce(
        conn.clone(),
        producer.clone(),
        args.rate,
        start + Duration::from_secs(args.seconds.div_ceil(2)),
        Arc::clone(&produced),
    ));

    println!(
        "{:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10}",
        "t_s",
        "produced",
        "on_redis",
        "high",
        "low",
        "pending",
        "drain_inf",
        "app_inf",
        "replayed/s"
    );
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    for t in 1..=args.seconds {
        tick.tick().await;
        let source = stats.source_stats().await?;
        let snapshot = stats.snapshot();
        let replayed = snapshot.replayed;
        println!(
            "{t:>4} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10}",
            produced.load(Relaxed),
            source.queued_total() + source.running,
            source.queued[Priority::High.index()],
            source.queued[Priority::Low.index()],
            source.running,
            snapshot.in_flight,
            limit_handle.in_flight(),
            replayed - last,
        );
        last = replayed;
    }
    drain.abort();
    flood.abort();
    let snapshot = stats.snapshot();
    println!(
        "replayed {} of {} in {} s ({:.0}/s; nominal capacity {capacity:.0}/s, less the timer's granularity), {} deferred by the limit",
        snapshot.replayed,
        produced.load(Relaxed),
        args.seconds,
        snapshot.replayed as f64 / start.elapsed().as_secs_f64(),
        snapshot.deferred,
    );
    for p in [Priority::High, Priority::Low] {
        let stream = producer.stream(p);
        let _: () = redis::cmd("DEL")
            .arg(&stream)
            .arg(format!("{stream}:dead"))
            .query_async(&mut conn)
            .await?;
    }
    // The tiers nothing was produced to were made empty by the group.
    for p in [Priority::Critical, Priority::Default] {
        let _: () = redis::cmd("DEL")
            .arg(producer.stream(p))
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}
