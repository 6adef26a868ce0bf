//! `RateLimitLayer` with its GCRA state in Redis, over a real server:
//! the script's arithmetic, four axum servers sharing one quota, a quota
//! changed on all four at once, and Redis stopped, restarted and slowed down
//! (on a server of the test's own). Ignored unless run with `REDIS_URL` set
//! (see `.ci/run` and `.ci/redis.sh`).
//!
//! The real-time figures carry the margins a loaded two-core machine needs:
//! the tests run one at a time, and a bound is a request's timeout plus
//! tens of milliseconds of scheduling, never a tighter one.

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use support::{HttpClient, h1_client, redis::RedisServer, wait_until_within};
use tokio::{sync::Mutex, task::JoinSet, time::Instant};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_spillway::key::{Global, key_fn};
use tower_spillway::rate::{
    HttpRateLimitLayer, PeerIp, Quota, RATELIMIT, RateLimitHandle, RateLimitLayer, RedisClient,
    RedisOptions, RedisStore,
};

type Bytes = bytes::Bytes;
type Shared = HttpRateLimitLayer<Global, RedisStore>;

/// The tests measure rates and latencies: one at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

fn url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL must be set for this test (see .ci/redis.sh)")
}

/// A prefix no other run, test or engineer shares.
fn prefix(test: &str) -> String {
    format!(
        "spillway-test:rate:{test}:{}:{}",
        std::process::id(),
        fastrand::u32(..)
    )
}

fn client(url: &str) -> redis::Client {
    redis::Client::open(url).unwrap()
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    client(url)
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A global limit of `quota` in Redis at `url`, under `prefix`, on the HTTP
/// face.
fn shared_limit(quota: Quota, url: &str, options: RedisOptions) -> Shared {
    limit_on(quota, client(url), options)
}

/// A global limit of `quota` on the HTTP face, in `redis`.
fn limit_on(quota: Quota, redis: impl Into<RedisClient>, options: RedisOptions) -> Shared {
    RateLimitLayer::builder(quota)
        .http()
        .redis(redis, options)
        .build()
}

type Req = Request<Empty<Bytes>>;

/// Options for the tests of exact figures: a timeout no scheduling hiccup
/// reaches, so that Redis decides every check.
fn patient(prefix: &str) -> RedisOptions {
    RedisOptions::new(prefix)
        .timeout(Duration::from_secs(1))
        .unwrap()
}

/// Waits until the limit is connected and its script loaded.
async fn connected(handle: &RateLimitHandle<impl std::hash::Hash + Eq + Clone>) {
    wait_until_within(Duration::from_secs(5), "the limit connects", || {
        handle.snapshot().redis.unwrap().connected
    })
    .await;
}

fn ok_service()
-> impl Service<Req, Response = Response<&'static str>, Error = Infallible, Future: Send> + Clone {
    service_fn(|_req: Req| async { Ok::<_, Infallible>(Response::new("ok")) })
}

// ---- the script -------------------------------------------------------------

#[tokio::test]
#[ignore = "needs REDIS_URL"]
async fn the_script_is_gcra_on_redis_time_with_keys_expiring_with_the_burst() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let prefix = prefix("script");
    // Ten a second in bursts of five: a burst period of 500 ms.
    let quota = Quota::per_second(10).unwrap().burst(5).unwrap();
    let layer = shared_limit(quota, &url, patient(&prefix));
    let handle = layer.handle();
    connected(&handle).await;
    let svc = layer.layer(ok_service());
    for _ in 0..5 {
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = svc.clone().oneshot(Request::default()).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=10;w=1");
    assert_eq!(res.headers()[RATELIMIT], "\"default\";r=0;t=1");

    // The bucket is one hash-tagged key, expiring when the burst is whole
    // again: within the burst period.
    let mut conn = connection(&url).await;
    let bucket = format!("{{{prefix}:}}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&bucket)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 500, "{ttl}");
    let snap = handle.snapshot();
    assert_eq!((snap.allowed, snap.limited), (5, 1));
    let redis = snap.redis.unwrap();
    assert_eq!((redis.redis_checks, redis.fallback_checks), (6, 0));
    assert!(!redis.fallback);

    // A tenth of a second later one more call conforms, on Redis's clock.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let res = svc.clone().oneshot(Request::default()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
#[ignore = "needs REDIS_URL"]
async fn concurrent_checks_are_batched_and_decided_one_by_one() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let quota = Quota::per_minute(60).unwrap().burst(7).unwrap();
    let layer = shared_limit(quota, &url, patient(&prefix("batch")));
    let handle = layer.handle();
    connected(&handle).await;
    let svc = layer.layer(ok_service());
    // Warm the connection so the 50 below are queued together.
    let _ = svc.clone().oneshot(Request::default()).await.unwrap();
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let svc = svc.clone();
        calls.spawn(async move { svc.oneshot(Request::default()).await.unwrap().status() });
    }
    let statuses = calls.join_all().await;
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    // Seven in the burst, one spent on the warm-up.
    assert_eq!(admitted, 6, "{statuses:?}");
    let redis = handle.snapshot().redis.unwrap();
    assert_eq!(redis.redis_checks, 51);
    assert_eq!(redis.fallback_checks, 0);
}

#[tokio::test]
#[ignore = "needs REDIS_URL"]
async fn keyed_buckets_are_one_key_each_in_redis() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let prefix = prefix("keyed");
    let layer = RateLimitLayer::builder(Quota::per_minute(1).unwrap())
        .keyed(PeerIp::new())
        .http()
        .redis(client(&url), patient(&prefix))
        .build();
    connected(&layer.handle()).await;
    let svc = layer.layer(ok_service());
    let status = |ip| status_from(&svc, ip);
    assert_eq!(status([10, 0, 0, 1]).await, StatusCode::OK);
    assert_eq!(status([10, 0, 0, 2]).await, StatusCode::OK);
    assert_eq!(status([10, 0, 0, 1]).await, StatusCode::TOO_MANY_REQUESTS);
    let mut conn = connection(&url).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(format!("{{{prefix}:=10.0.0.1}}"))
        .arg(format!("{{{prefix}:=10.0.0.2}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 2);

    // 150 callers at once: one batch of more buckets than one script call
    // takes (64), each bucket decided on its own: every caller's first
    // call admitted, every second one refused.
    for round in [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        all_150_get(&svc, 1, round).await;
    }
}

/// The status `svc` answers a request from the peer `ip` with.
async fn status_from<S, B>(svc: &S, ip: [u8; 4]) -> StatusCode
where
    S: Service<Req, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    status_from_owned(svc.clone(), ip).await
}

async fn status_from_owned<S, B>(svc: S, ip: [u8; 4]) -> StatusCode
where
    S: Service<Req, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let mut req = Req::default();
    req.extensions_mut().insert(SocketAddr::from((ip, 4711)));
    svc.oneshot(req).await.unwrap().status()
}

/// 150 callers at once, from `10.<net>.0.0` to `10.<net>.0.149`: every one
/// is answered `expected`.
async fn all_150_get<S, B: Send + 'static>(svc: &S, net: u8, expected: StatusCode)
where
    S: Service<Req, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let mut calls = JoinSet::new();
    for i in 0..150u8 {
        let svc = svc.clone();
        calls.spawn(status_from_owned(svc, [10, net, 0, i]));
    }
    let statuses = calls.join_all().await;
    assert!(statuses.iter().all(|s| *s == expected), "{statuses:?}");
}

// ---- a fleet of four --------------------------------------------------------

/// Four axum servers, each with its own layer (its own connection to
/// Redis) on a runtime and thread of its own, as four processes would be:
/// sharing the quota under one prefix.
struct Fleet {
    addrs: Vec<SocketAddr>,
    handles: Vec<RateLimitHandle<()>>,
    /// Dropped with the fleet: each server shuts down.
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// The fleet's timeout. These tests measure the sharing, not the fallback
/// (the tests on a server of their own do): on a two-core machine busy with
/// other builds, a debug build's check now and then waits for a core longer
/// than the default 5 ms (three in a row put an instance in fallback), and
/// an instance in fallback admits its share on top of what the shared
/// bucket admits the others.
const FLEET_TIMEOUT: Duration = Duration::from_millis(50);

fn fleet(quota: Quota, redis: impl Into<RedisClient>, prefix: &str) -> Fleet {
    let redis = redis.into();
    let mut fleet = Fleet {
        addrs: Vec::new(),
        handles: Vec::new(),
        _stop: Vec::new(),
    };
    for _ in 0..4 {
        let options = RedisOptions::new(prefix)
            .instances(4)
            .unwrap()
            .timeout(FLEET_TIMEOUT)
            .unwrap();
        let redis = redis.clone();
        let (started, on_start) = std::sync::mpsc::channel();
        let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let layer = limit_on(quota, redis, options);
                let handle = layer.handle();
                let app = Router::new()
                    .route("/", get(|| async { "ok" }))
                    .layer(layer);
                let (listener, addr) = support::loopback().await;
                started.send((addr, handle)).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = on_stop.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let (addr, handle) = on_start.recv().unwrap();
        fleet.addrs.push(addr);
        fleet.handles.push(handle);
        fleet._stop.push(stop);
    }
    fleet
}

/// What a run of offered load saw.
#[derive(Debug, Default)]
struct Tally {
    /// Requests sent within the measured window that were admitted.
    admitted: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
}

/// Offers `rates[i]` requests per second to `addrs[i]` for `warmup +
/// window`, each request sent at its own time (open loop: a task per
/// request), and counts the answers to those sent within the window.
async fn offer(addrs: &[SocketAddr], rates: &[u32], warmup: Duration, window: Duration) -> Tally {
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let mut senders = JoinSet::new();
    for (&addr, &rate) in addrs.iter().zip(rates) {
        let tally = Arc::clone(&tally);
        senders.spawn(async move {
            let client: HttpClient = h1_client();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut calls = JoinSet::new();
            while start.elapsed() < warmup + window {
                ticks.tick().await;
                let counted = start.elapsed() >= warmup && start.elapsed() < warmup + window;
                let (client, tally) = (client.clone(), Arc::clone(&tally));
                calls.spawn(async move {
                    let status = match client.request(support::get(addr, "/")).await {
                        Ok(res) => res.status(),
                        Err(_) => StatusCode::BAD_GATEWAY,
                    };
                    if counted {
                        let counter = match status {
                            StatusCode::OK => &tally.admitted,
                            StatusCode::TOO_MANY_REQUESTS => &tally.refused,
                            _ => &tally.other,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            calls.join_all().await;
        });
    }
    senders.join_all().await;
    Arc::try_unwrap(tally).unwrap()
}

/// Uneven load, so that the instances' local shares alone (125/s each)
/// would admit 125 + 125 + 125 + 50 = 425/s, not 500: only a shared bucket
/// meets the quota.
const OFFERED: [u32; 4] = [1_400, 400, 150, 50];

fn print_snapshots(fleet: &Fleet) {
    for h in &fleet.handles {
        println!("{:?}", h.snapshot());
    }
}

/// Redis decided most checks: the figures are the shared bucket's. (The
/// uneven load already fails the ± 5 % without it: local shares alone
/// admit 425/s. A machine busy with other work can still put an instance in
/// fallback now and then, which the rate's margin absorbs.)
fn assert_shared(fleet: &Fleet) {
    let (redis, fallback) = fleet.handles.iter().fold((0, 0), |(r, f), h| {
        let s = h.snapshot().redis.unwrap();
        (r + s.redis_checks, f + s.fallback_checks)
    });
    assert!(
        fallback < redis,
        "Redis decided {redis} checks, the fallback {fallback}"
    );
}

/// Four instances on `redis` under 2,000 req/s offered admit 500 ± 5 % a
/// second in total.
async fn four_share_500_per_second(redis: RedisClient, prefix: &str) {
    let quota = Quota::per_second(500).unwrap().burst(50).unwrap();
    let fleet = fleet(quota, redis, prefix);
    for h in &fleet.handles {
        connected(h).await;
    }
    // A warm-up spends the burst; then 4 s at 2,000 req/s offered.
    let window = Duration::from_secs(4);
    let tally = offer(&fleet.addrs, &OFFERED, Duration::from_secs(1), window).await;
    let admitted = tally.admitted.load(Ordering::Relaxed) as f64;
    let per_sec = admitted / window.as_secs_f64();
    println!("{tally:?}: {per_sec:.1} admitted per second");
    print_snapshots(&fleet);
    assert_eq!(tally.other.load(Ordering::Relaxed), 0);
    assert!(
        (475.0..=525.0).contains(&per_sec),
        "{per_sec:.1}/s admitted, not 500 ± 5 %"
    );
    assert_shared(&fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_URL"]
async fn four_instances_share_one_quota_of_500_per_second() {
    let _serial = SERIAL.lock().await;
    four_share_500_per_second(client(&url()).into(), &prefix("fleet")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_URL"]
async fn a_quota_changed_on_one_instance_is_in_force_on_all_four() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let quota = Quota::per_second(500).unwrap().burst(50).unwrap();
    let prefix = prefix("change");
    let fleet = fleet(quota, client(&url), &prefix);
    for h in &fleet.handles {
        connected(h).await;
    }
    // Traffic on every instance, then the change on the first.
    let _ = offer(
        &fleet.addrs,
        &[100; 4],
        Duration::ZERO,
        Duration::from_millis(300),
    )
    .await;
    let lower = Quota::per_second(200).unwrap().burst(20).unwrap();
    fleet.handles[0].set_quota(lower);
    // Each instance reads the fleet's quota with its next batch.
    let load = tokio::spawn({
        let addrs = fleet.addrs.clone();
        async move { offer(&addrs, &[50; 4], Duration::ZERO, Duration::from_secs(1)).await }
    });
    wait_until_within(Duration::from_secs(1), "all four see the new quota", || {
        fleet.handles.iter().all(|h| h.quota() == lower)
    })
    .await;
    load.await.unwrap();
    // And it holds: 200/s in total under 2,000 offered.
    let window = Duration::from_secs(3);
    let tally = offer(&fleet.addrs, &OFFERED, Duration::from_millis(500), window).await;
    let per_sec = tally.admitted.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
    println!("{tally:?}: {per_sec:.1} admitted per second");
    print_snapshots(&fleet);
    assert!(
        (190.0..=210.0).contains(&per_sec),
        "{per_sec:.1}/s admitted, not 200 ± 5 %"
    );
    assert_shared(&fleet);
    // The snapshot announces the fleet's quota, not an instance's share.
    let snap = fleet.handles[3].snapshot();
    assert_eq!((snap.rate_per_sec, snap.burst), (200.0, 20));
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{{{prefix}}}:quota"))
        .query_async(&mut connection(&url).await)
        .await
        .unwrap();
}

// ---- Redis stopped, restarted, slowed down (a server of our own) ------------

/// Calls `svc` `rate` times a second for `length`, each call on its own
/// task, and returns each call's status and how long it took.
async fn call_at<S, B>(svc: &S, rate: u32, length: Duration) -> Vec<(StatusCode, Duration)>
where
    S: Service<Req, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
{
    let start = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut calls = JoinSet::new();
    while start.elapsed() < length {
        ticks.tick().await;
        let svc = svc.clone();
        calls.spawn(async move {
            let sent = Instant::now();
            let status = svc.oneshot(Request::default()).await.unwrap().status();
            (status, sent.elapsed())
        });
    }
    calls.join_all().await
}

fn slowest(calls: &[(StatusCode, Duration)]) -> Duration {
    calls.iter().map(|c| c.1).max().unwrap_or_default()
}

/// The margin over the timeout a loaded two-core machine needs: the timer's
/// millisecond grain, and a task waiting for a core.
const MARGIN: Duration = Duration::from_millis(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_URL (and redis-server on PATH)"]
async fn redis_stopped_and_restarted_falls_back_at_once_and_shares_again_after() {
    let _serial = SERIAL.lock().await;
    let mut server = RedisServer::start();
    let prefix = prefix("restart");
    let quota = Quota::per_second(200).unwrap().burst(20).unwrap();
    let options = RedisOptions::new(&prefix).instances(2).unwrap();
    let timeout = Duration::from_millis(5);
    let layers = [
        shared_limit(quota, &server.url(), options.clone()),
        shared_limit(quota, &server.url(), options),
    ];
    let handles: Vec<_> = layers.iter().map(|l| l.handle()).collect();
    let svcs: Vec<_> = layers.iter().map(|l| l.layer(ok_service())).collect();
    let both = |rate, length| {
        let (a, b) = (svcs[0].clone(), svcs[1].clone());
        async move {
            let (a, b) = tokio::join!(call_at(&a, rate, length), call_at(&b, rate, length));
            [a, b].concat()
        }
    };

    for h in &handles {
        connected(h).await;
    }
    let before = both(300, Duration::from_millis(500)).await;
    assert!(
        slowest(&before) < timeout + MARGIN,
        "{:?}",
        slowest(&before)
    );
    let entries = |h: &RateLimitHandle<()>| h.snapshot().redis.unwrap().fallback_entries;
    let entries_before: Vec<u64> = handles.iter().map(entries).collect();

    server.stop();
    let during = both(300, Duration::from_secs(1)).await;
    // Every request answered, none waiting for the dead server longer than
    // the timeout, and the limit kept: each instance admits its share,
    // 100/s (a burst of 10), here over one second.
    assert!(
        slowest(&during) < timeout + MARGIN,
        "a request waited {:?} with Redis down",
        slowest(&during)
    );
    let admitted = during.iter().filter(|c| c.0 == StatusCode::OK).count();
    assert!((180..=260).contains(&admitted), "{admitted} admitted");
    for (h, was) in handles.iter().zip(entries_before) {
        let redis = h.snapshot().redis.unwrap();
        assert!(redis.fallback && !redis.connected, "{redis:?}");
        assert!(
            redis.fallback_entries > was && redis.redis_errors >= 1,
            "{redis:?}"
        );
    }

    server.restart();
    let decided = |h: &RateLimitHandle<()>| h.snapshot().redis.unwrap().redis_checks;
    let redis_before: Vec<u64> = handles.iter().map(decided).collect();
    let load = tokio::spawn(both(100, Duration::from_secs(2)));
    wait_until_within(
        Duration::from_secs(2),
        "both instances leave fallback",
        || {
            handles.iter().all(|h| {
                let redis = h.snapshot().redis.unwrap();
                redis.connected && !redis.fallback
            })
        },
    )
    .await;
    let after = load.await.unwrap();
    assert!(slowest(&after) < timeout + MARGIN, "{:?}", slowest(&after));
    // Redis decides again, in the new server's bucket.
    for (h, was) in handles.iter().zip(redis_before) {
        assert!(decided(h) > was, "no check went to Redis after the restart");
    }
    assert_eq!(
        server.command(&format!("EXISTS {{{prefix}:}}")).as_deref(),
        Some(":1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_URL (and redis-server on PATH)"]
async fn a_slow_redis_never_adds_more_than_the_timeout() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start();
    let timeout = Duration::from_millis(5);
    let layer = shared_limit(
        Quota::per_second(10_000).unwrap(),
        &server.url(),
        RedisOptions::new(prefix("slow")).timeout(timeout).unwrap(),
    );
    let handle = layer.handle();
    connected(&handle).await;
    let svc = layer.layer(ok_service());
    let _ = call_at(&svc, 200, Duration::from_millis(200)).await;
    // Redis busy for a second and a half of two seconds of calls.
    let sleeping = server.sleep_in_background(1.5);
    let calls = call_at(&svc, 200, Duration::from_secs(2)).await;
    sleeping.join().unwrap();
    assert!(
        slowest(&calls) < timeout + MARGIN,
        "a request waited {:?} for a busy Redis",
        slowest(&calls)
    );
    assert!(calls.iter().all(|c| c.0 == StatusCode::OK));
    let redis = handle.snapshot().redis.unwrap();
    assert!(redis.timeouts >= 3, "{redis:?}");
    assert!(redis.fallback_entries >= 1, "{redis:?}");
    wait_until_within(Duration::from_secs(2), "the limit leaves fallback", || {
        !handle.snapshot().redis.unwrap().fallback
    })
    .await;
    let was = handle.snapshot().redis.unwrap().redis_checks;
    let _ = call_at(&svc, 100, Duration::from_millis(200)).await;
    assert!(handle.snapshot().redis.unwrap().redis_checks > was);
}

#[tokio::test]
#[ignore = "needs REDIS_URL (and redis-server on PATH)"]
async fn a_flushed_script_is_loaded_again_without_leaving_redis() {
    let _serial = SERIAL.lock().await;
    let server = RedisServer::start();
    let layer = shared_limit(
        Quota::per_second(100).unwrap(),
        &server.url(),
        patient(&prefix("noscript")),
    );
    let handle = layer.handle();
    connected(&handle).await;
    let svc = layer.layer(ok_service());
    let _ = svc.clone().oneshot(Request::default()).await.unwrap();
    assert_eq!(server.command("SCRIPT FLUSH").as_deref(), Some("+OK"));
    for _ in 0..3 {
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let redis = handle.snapshot().redis.unwrap();
    assert_eq!(redis.redis_checks, 4, "{redis:?}");
    assert_eq!((redis.fallback_checks, redis.redis_errors), (0, 0));
}

#[tokio::test]
#[ignore = "needs REDIS_URL (and redis-server on PATH)"]
async fn the_fallback_share_counts_what_redis_admitted_here() {
    let _serial = SERIAL.lock().await;
    let mut server = RedisServer::start();
    // A share of 25 (a quarter of the burst of 100).
    let layer = shared_limit(
        Quota::per_second(100).unwrap(),
        &server.url(),
        patient(&prefix("charged")).instances(4).unwrap(),
    );
    let handle = layer.handle();
    connected(&handle).await;
    let svc = layer.layer(ok_service());
    for _ in 0..40 {
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // This instance took 40 of the fleet's 100, more than its share: cut
    // off from Redis, it has nothing left to admit on its own.
    server.stop();
    let mut admitted = 0;
    for _ in 0..10 {
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        admitted += usize::from(res.status() == StatusCode::OK);
    }
    let redis = handle.snapshot().redis.unwrap();
    assert_eq!(redis.fallback_checks, 10, "{redis:?}");
    assert!(admitted <= 1, "{admitted} admitted on top of the 40");
}

/// Left to its default, the fallback's share divides the quota by the
/// instances Redis counted: four count four, three count three once the
/// fourth is gone, and cut off from Redis each admits its third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_URL (and redis-server on PATH)"]
async fn instances_count_each_other_and_share_the_quota_by_the_count() {
    let _serial = SERIAL.lock().await;
    let mut server = RedisServer::start();
    let quota = Quota::per_second(90).unwrap();
    let prefix = prefix("count");
    let mut layers: Vec<Shared> = (0..4)
        .map(|_| shared_limit(quota, &server.url(), patient(&prefix)))
        .collect();
    let counts = |layers: &[Shared]| -> Vec<u32> {
        layers
            .iter()
            .map(|l| l.handle().snapshot().redis.unwrap().instances)
            .collect()
    };
    // Each announces itself about once a second.
    wait_until_within(Duration::from_secs(4), "all four count four", || {
        counts(&layers) == [4; 4]
    })
    .await;
    assert_eq!(
        server
            .command(&format!("ZCARD {{{prefix}}}:instances"))
            .as_deref(),
        Some(":4")
    );
    // One leaves: the others forget it once it has been silent for 5 s.
    drop(layers.pop());
    wait_until_within(
        Duration::from_secs(8),
        "the other three count three",
        || counts(&layers) == [3; 3],
    )
    .await;
    // Cut off from Redis, an instance admits a third of the burst of 90
    // (back to back, a few ms: at most one more drips in).
    server.stop();
    let svc = layers[0].layer(ok_service());
    let mut admitted = 0;
    for _ in 0..40 {
        let res = svc.clone().oneshot(Request::default()).await.unwrap();
        admitted += usize::from(res.status() == StatusCode::OK);
    }
    let redis = layers[0].handle().snapshot().redis.unwrap();
    assert!(redis.fallback, "{redis:?}");
    assert!((30..=31).contains(&admitted), "{admitted} admitted");
}

/// An instance told how many share the quota keeps that figure, whatever
/// Redis counts.
#[tokio::test]
#[ignore = "needs REDIS_URL"]
async fn a_set_count_of_instances_is_kept() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let prefix = prefix("set-count");
    let counted = shared_limit(Quota::per_second(90).unwrap(), &url, patient(&prefix));
    let set = shared_limit(
        Quota::per_second(90).unwrap(),
        &url,
        patient(&prefix).instances(10).unwrap(),
    );
    wait_until_within(
        Duration::from_secs(4),
        "the counting one counts two",
        || counted.handle().snapshot().redis.unwrap().instances == 2,
    )
    .await;
    assert_eq!(set.handle().snapshot().redis.unwrap().instances, 10);
}

#[tokio::test]
#[ignore = "needs REDIS_URL"]
async fn a_bucket_holding_something_else_fails_alone() {
    let _serial = SERIAL.lock().await;
    let url = url();
    let prefix = prefix("wrongtype");
    let layer = RateLimitLayer::builder(Quota::per_second(10).unwrap())
        .keyed(key_fn(|req: &Req| req.headers().contains_key("x-a")))
        .http()
        .redis(client(&url), patient(&prefix))
        .build();
    let handle = layer.handle();
    connected(&handle).await;
    let mut conn = connection(&url).await;
    // Someone wrote a hash where the bucket of `true` lives.
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{{{prefix}:true}}"))
        .arg("f")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let svc = layer.layer(ok_service());
    let req = |a: bool| {
        let mut req = Req::default();
        if a {
            req.headers_mut()
                .insert("x-a", http::HeaderValue::from_static("1"));
        }
        req
    };
    let res = svc.clone().oneshot(req(true)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let redis = handle.snapshot().redis.unwrap();
    assert_eq!(
        (redis.fallback_checks, redis.redis_errors),
        (1, 1),
        "{redis:?}"
    );
    assert!(
        !redis.fallback,
        "one broken key does not take the limit off Redis"
    );
    let res = svc.clone().oneshot(req(false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(handle.snapshot().redis.unwrap().redis_checks, 1);
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{{{prefix}:true}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
}

// ---- a Redis Cluster ---------------------------------------------------------

/// The nodes of a Redis Cluster (`REDIS_CLUSTER_URLS`, space-separated; see
/// `.ci/redis.sh cluster`).
fn cluster_urls() -> Vec<String> {
    std::env::var("REDIS_CLUSTER_URLS")
        .expect("REDIS_CLUSTER_URLS must be set for this test (see .ci/redis.sh)")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn cluster() -> redis::cluster::ClusterClient {
    redis::cluster::ClusterClient::new(cluster_urls()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_CLUSTER_URLS"]
async fn four_instances_share_one_quota_of_500_per_second_on_a_cluster() {
    let _serial = SERIAL.lock().await;
    four_share_500_per_second(cluster().into(), &prefix("cluster-fleet")).await;
}

/// A keyed limit's batches carry buckets of many hash slots: each slot's
/// go to its own node (one script call may only touch one slot's keys),
/// so every check is decided by Redis, and the buckets spread over the
/// nodes. A script that went missing on the nodes is loaded again where it
/// is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs REDIS_CLUSTER_URLS"]
async fn keyed_buckets_on_a_cluster_are_decided_by_the_node_of_their_slot() {
    let _serial = SERIAL.lock().await;
    let prefix = prefix("cluster-keyed");
    let layer = RateLimitLayer::builder(Quota::per_minute(1).unwrap())
        .keyed(PeerIp::new())
        .http()
        .redis(cluster(), patient(&prefix))
        .build();
    let handle = layer.handle();
    connected(&handle).await;
    let svc = layer.layer(ok_service());
    // 150 callers at once: every first call admitted.
    all_150_get(&svc, 2, StatusCode::OK).await;
    // Every node forgets its scripts; the second calls are still decided
    // by Redis, each node loading the script again.
    let mut per_node = Vec::new();
    for url in cluster_urls() {
        let mut conn = connection(&url).await;
        let () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{{{prefix}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        per_node.push(keys.len());
    }
    all_150_get(&svc, 2, StatusCode::TOO_MANY_REQUESTS).await;
    let redis = handle.snapshot().redis.unwrap();
    println!("buckets per node {per_node:?}; {redis:?}");
    assert_eq!(per_node.iter().sum::<usize>(), 150);
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    assert_eq!(
        (
            redis.redis_checks,
            redis.fallback_checks,
            redis.redis_errors
        ),
        (300, 0, 0)
    );
    assert_eq!(redis.fallback_entries, 0);
}
