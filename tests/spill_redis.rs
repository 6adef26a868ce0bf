//! `RedisStreamSource` over a real Redis server: entries produced onto
//! streams are drained through a real axum app behind the crate's adaptive
//! limit. Ignored unless run with `REDIS_URL` set (see `.ci/run` and
//! `.ci/redis.sh`); every test uses streams of its own, so tests (and other
//! users of the same server) do not collide.

mod support;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Bytes,
    http::{Request, StatusCode},
    response::IntoResponse,
    routing::post,
};
use http_body_util::Full;
use redis::{Value, aio::MultiplexedConnection};
use support::{h1_client, send, serve_axum, wait_until, wait_until_within};
use tokio::sync::Semaphore;
use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Fixed},
    spill::{Drain, DrainHandle, RedisStreamSource, Replay, StreamProducer},
};

fn url() -> String {
    std::env::var("REDIS_URL").expect("REDIS_URL must be set for this test (see .ci/redis.sh)")
}

/// A stream name no other test (or run) uses.
fn unique(test: &str) -> String {
    format!("spillway-test:{test}:{:016x}", fastrand::u64(..))
}

async fn connect(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to REDIS_URL")
}

/// What the handler saw: each replay's path, body and attempt.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<(String, Bytes, u32)>>,
}

impl Seen {
    fn bodies(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .map(|c| String::from_utf8_lossy(&c.1).into_owned())
            .collect()
    }

    fn count(&self, path: &str) -> usize {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.0 == path).count()
    }
}

/// The application: `/fail` answers 500, `/hold` waits until `gate` has a
/// permit, anything else 200; all behind an adaptive limit of fixed size
/// `limit` and no queue, so a request past the limit is refused at once.
fn app(limit: usize, seen: &Arc<Seen>, gate: &Arc<Semaphore>) -> Router {
    let handler = {
        let (seen, gate) = (Arc::clone(seen), Arc::clone(gate));
        move |replay: Option<Extension<Replay>>, req: Request<axum::body::Body>| {
            let (seen, gate) = (Arc::clone(&seen), Arc::clone(&gate));
            async move {
                let path = req.uri().path().to_owned();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                if path == "/hold" {
                    let _permit = gate.acquire().await.unwrap();
                    return (StatusCode::OK, "held").into_response();
                }
                let attempt = replay.map_or(0, |r| r.attempt);
                seen.calls
                    .lock()
                    .unwrap()
                    .push((path.clone(), body, attempt));
                if path == "/fail" {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response();
                }
                (StatusCode::OK, "ok").into_response()
            }
        }
    };
    let limit = AdaptiveLimitLayer::builder(Fixed::new(limit).unwrap())
        .max_queue(0)
        .http()
        .build();
    Router::new().route("/{*path}", post(handler)).layer(limit)
}

fn entry(path: &str, body: &str) -> Request<Bytes> {
    Request::post(path)
        .header("content-type", "text/plain")
        .body(Bytes::from(body.to_owned()))
        .unwrap()
}

async fn produce(
    conn: &mut MultiplexedConnection,
    producer: &StreamProducer,
    priority: Priority,
    path: &str,
    body: &str,
) {
    let _: String = producer
        .xadd(priority, &entry(path, body))
        .query_async(conn)
        .await
        .unwrap();
}

/// `XINFO GROUPS` of `stream` for `group`: (unread, pending), from Redis
/// itself rather than the source's own figures.
async fn group_counts(conn: &mut MultiplexedConnection, stream: &str, group: &str) -> (i64, i64) {
    find_group(conn, stream, group)
        .await
        .unwrap_or_else(|| panic!("no group {group} on {stream}"))
}

async fn find_group(
    conn: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Option<(i64, i64)> {
    let groups: Vec<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap_or_default();
    for g in groups {
        let fields: Vec<(String, Value)> = match g {
            Value::Map(pairs) => pairs
                .into_iter()
                .map(|(k, v)| (redis::from_redis_value(k).unwrap(), v))
                .collect(),
            other => {
                let flat: Vec<Value> = redis::from_redis_value(other).unwrap();
                flat.chunks_exact(2)
                    .map(|kv| {
                        (
                            redis::from_redis_value(kv[0].clone()).unwrap(),
                            kv[1].clone(),
                        )
                    })
                    .collect()
            }
        };
        let get = |name: &str| fields.iter().find(|f| f.0 == name).map(|f| f.1.clone());
        let name: String = redis::from_redis_value(get("name").unwrap()).unwrap();
        if name == group {
            let lag: i64 = redis::from_redis_value(get("lag").unwrap()).unwrap();
            let pending: i64 = redis::from_redis_value(get("pending").unwrap()).unwrap();
            return Some((lag, pending));
        }
    }
    None
}

/// Waits until every entry of `stream` is read and acknowledged.
async fn acked(conn: &mut MultiplexedConnection, stream: &str) {
    counts_become(conn, stream, (0, 0)).await;
}

/// Waits (up to 2 s) until `stream`'s (unread, pending) are `expected`: a
/// replay is counted just before its end is written to Redis.
async fn counts_become(conn: &mut MultiplexedConnection, stream: &str, expected: (i64, i64)) {
    let mut counts = (-1, -1);
    for _ in 0..200 {
        counts = group_counts(conn, stream, "test").await;
        if counts == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{stream}: (unread, pending) stayed {counts:?}, not {expected:?}");
}

/// An entry as `XRANGE` answers it: its id and its fields.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

async fn clean_up(conn: &mut MultiplexedConnection, producer: &StreamProducer) {
    for p in Priority::ALL {
        let stream = producer.stream(p);
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&stream)
            .arg(format!("{stream}:dead"))
            .query_async(conn)
            .await;
    }
}

fn source(url: &str, name: &str) -> tower_spillway::spill::RedisStreamSourceBuilder {
    RedisStreamSource::builder(redis::Client::open(url).unwrap(), name).group("test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis server: set REDIS_URL (see .ci/redis.sh)"]
async fn entries_are_replayed_highest_priority_first_and_acknowledged() {
    let (url, name) = (url(), unique("order"));
    let mut conn = connect(&url).await;
    let producer = StreamProducer::new(name.clone());
    for (p, body) in [
        (Priority::Low, "l0"),
        (Priority::Default, "d0"),
        (Priority::Low, "l1"),
        (Priority::Critical, "c0"),
        (Priority::High, "h0"),
        (Priority::Default, "d1"),
    ] {
        produce(&mut conn, &producer, p, "/work", body).await;
    }
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let drain =
        Drain::new(source(&url, &name).build().unwrap(), app(4, &seen, &gate)).max_in_flight(1);
    let stats = drain.handle();
    let task = drain.spawn();
    wait_until("every entry is replayed", || stats.snapshot().replayed == 6).await;
    assert_eq!(seen.bodies(), ["c0", "h0", "d0", "d1", "l0", "l1"]);
    for p in Priority::ALL {
        acked(&mut conn, &producer.stream(p)).await;
    }
    task.abort();
    clean_up(&mut conn, &producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis server: set REDIS_URL (see .ci/redis.sh)"]
async fn nothing_is_read_while_the_app_refuses_and_the_backlog_stays_on_redis() {
    const ENTRIES: usize = 40;
    let (url, name) = (url(), unique("throttle"));
    let mut conn = connect(&url).await;
    let producer = StreamProducer::new(name.clone());
    let stream = producer.stream(Priority::Default);
    for i in 0..ENTRIES {
        produce(
            &mut conn,
            &producer,
            Priority::Default,
            "/work",
            &format!("e{i}"),
        )
        .await;
    }
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let router = app(1, &seen, &gate);
    let addr: SocketAddr = serve_axum(router.clone()).await;
    // A live request holds the limit's only slot: every replay is refused.
    let live = tokio::spawn(async move {
        let client = h1_client::<Full<Bytes>>();
        let req = Request::post(format!("http://{addr}/hold"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(&client, req).await.0
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drain = Drain::new(source(&url, &name).build().unwrap(), router);
    let stats = drain.handle();
    let task = drain.spawn();
    wait_until("replays are refused", || stats.snapshot().deferred >= 4).await;
    // Long enough for a drain that kept reading to read the whole backlog.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (unread, pending) = group_counts(&mut conn, &stream, "test").await;
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.replayed, 0);
    assert!(seen.bodies().is_empty(), "no replay reached the handler");
    // The drain probed with its window as it was cut, once per round trip
    // (4, then 2, then 1 entries, each refused); at the narrowest window it
    // stops leasing for the refusal's hint, and what it leases after that
    // is those same entries again, reclaimed once their hint ended.
    assert!(
        pending <= 4 + 2 + 1,
        "{pending} entries read while throttled"
    );
    assert_eq!(unread as usize, ENTRIES - pending as usize);
    assert!(snapshot.deferred <= 12, "{snapshot:?}: probes are paced");
    assert_eq!(
        snapshot.source.queued[Priority::Default.index()],
        unread as u64
    );
    assert_eq!(snapshot.source.running, pending as u64);

    gate.add_permits(1);
    assert_eq!(live.await.unwrap(), StatusCode::OK);
    wait_until_within(Duration::from_secs(20), "the backlog drains", || {
        stats.snapshot().replayed == ENTRIES as u64
    })
    .await;
    let mut bodies = seen.bodies();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), ENTRIES, "every entry replayed once");
    acked(&mut conn, &stream).await;
    task.abort();
    clean_up(&mut conn, &producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis server: set REDIS_URL (see .ci/redis.sh)"]
async fn a_failing_entry_stays_pending_is_retried_then_dead_lettered() {
    let (url, name) = (url(), unique("dead"));
    let mut conn = connect(&url).await;
    let producer = StreamProducer::new(name.clone());
    let stream = producer.stream(Priority::High);
    produce(&mut conn, &producer, Priority::High, "/fail", "f").await;
    produce(&mut conn, &producer, Priority::High, "/work", "w").await;
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    // A short lease: Redis keeps one idle clock per entry, so the backoff
    // between attempts is at most the lease.
    let drain = Drain::new(source(&url, &name).build().unwrap(), app(4, &seen, &gate))
        .lease(Duration::from_millis(400))
        .max_attempts(3);
    let stats = drain.handle();
    let task = drain.spawn();
    wait_until("the first attempts ended", || {
        let s = stats.snapshot();
        s.replayed == 1 && s.retried == 1
    })
    .await;
    // The 500 was not acknowledged: it is pending, the success is not.
    counts_become(&mut conn, &stream, (0, 1)).await;
    wait_until("the failing entry is dead-lettered", || {
        stats.snapshot().dead_lettered == 1
    })
    .await;
    assert_eq!(seen.count("/fail"), 3);
    assert_eq!(seen.count("/work"), 1);
    let attempts: Vec<u32> = {
        let calls = seen.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| c.0 == "/fail")
            .map(|c| c.2)
            .collect()
    };
    assert_eq!(attempts, [1, 2, 3]);
    acked(&mut conn, &stream).await;
    let dead: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(format!("{stream}:dead"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let field = |name: &str| {
        let f = dead[0].1.iter().find(|f| f.0 == name);
        String::from_utf8_lossy(&f.unwrap_or_else(|| panic!("no {name}")).1).into_owned()
    };
    assert_eq!(field("uri"), "/fail");
    assert_eq!(field("dead:attempts"), "3");
    assert!(
        field("dead:reason").contains("500"),
        "{}",
        field("dead:reason")
    );
    task.abort();
    clean_up(&mut conn, &producer).await;
}

/// Runs a consumer whose application never answers until it has read
/// `entries` entries of `stream`, then kills it: they stay pending with it,
/// never acknowledged.
async fn read_by_a_consumer_that_dies(
    conn: &mut MultiplexedConnection,
    url: &str,
    name: &str,
    stream: &str,
    entries: i64,
) {
    let stuck = Router::new().route("/{*path}", post(std::future::pending::<StatusCode>));
    let doomed = Drain::new(source(url, name).consumer("doomed").build().unwrap(), stuck)
        .lease(Duration::from_secs(60))
        .spawn();
    let mut held = 0;
    for _ in 0..200 {
        held = find_group(conn, stream, "test").await.map_or(0, |g| g.1);
        if held == entries {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(held, entries, "the doomed consumer read every entry");
    doomed.abort();
    let _ = doomed.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis server: set REDIS_URL (see .ci/redis.sh)"]
async fn a_second_consumer_reclaims_what_a_dead_one_held() {
    let (url, name) = (url(), unique("reclaim"));
    let mut conn = connect(&url).await;
    let producer = StreamProducer::new(name.clone());
    let stream = producer.stream(Priority::Default);
    for body in ["a", "b", "c"] {
        produce(&mut conn, &producer, Priority::Default, "/work", body).await;
    }
    read_by_a_consumer_that_dies(&mut conn, &url, &name, &stream, 3).await;

    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let heir = source(&url, &name).consumer("heir").build().unwrap();
    let drain = Drain::new(heir, app(4, &seen, &gate)).lease(Duration::from_millis(500));
    let stats = drain.handle();
    let task = drain.spawn();
    wait_until("the heir replays what the doomed consumer held", || {
        stats.snapshot().replayed == 3
    })
    .await;
    let mut bodies = seen.bodies();
    bodies.sort();
    assert_eq!(bodies, ["a", "b", "c"]);
    let attempts: Vec<u32> = seen.calls.lock().unwrap().iter().map(|c| c.2).collect();
    assert_eq!(
        attempts,
        [2, 2, 2],
        "the reclaim is each entry's second delivery"
    );
    acked(&mut conn, &stream).await;
    task.abort();
    clean_up(&mut conn, &producer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis server: set REDIS_URL (see .ci/redis.sh)"]
async fn pending_entries_the_streams_retention_trimmed_are_counted_as_discarded() {
    let (url, name) = (url(), unique("trimmed"));
    let mut conn = connect(&url).await;
    let producer = StreamProducer::new(name.clone());
    let stream = producer.stream(Priority::Default);
    for body in ["a", "b"] {
        produce(&mut conn, &producer, Priority::Default, "/work", body).await;
    }
    read_by_a_consumer_that_dies(&mut conn, &url, &name, &stream, 2).await;
    // The stream's retention removes them while they are pending.
    let _: u64 = redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    produce(&mut conn, &producer, Priority::Default, "/work", "kept").await;
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let heir = source(&url, &name).consumer("heir").build().unwrap();
    let drain = Drain::new(heir, app(4, &seen, &gate)).lease(Duration::from_millis(300));
    let stats = drain.handle();
    let task = drain.spawn();
    wait_until("the trimmed entries are counted", || {
        let s = stats.snapshot();
        s.discarded_in(Priority::Default) == 2 && s.replayed == 1
    })
    .await;
    assert_eq!(seen.bodies(), ["kept"]);
    acked(&mut conn, &stream).await;
    task.abort();
    clean_up(&mut conn, &producer).await;
}

/// Captures the drain's log lines (the drain runs on this test's thread).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "needs a Redis server: set REDIS_URL (see .ci/redis.sh)"]
async fn an_emergency_discard_skips_only_the_too_old_entries_counted_and_logged() {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let lines = lines.clone();
            move || lines.clone()
        })
        .with_ansi(false)
        .finish();
    let _log = tracing_subscriber::util::SubscriberInitExt::set_default(subscriber);

    let (url, name) = (url(), unique("discard"));
    let mut conn = connect(&url).await;
    let producer = StreamProducer::new(name.clone());
    for i in 0..5 {
        produce(
            &mut conn,
            &producer,
            Priority::Low,
            "/work",
            &format!("old{i}"),
        )
        .await;
    }
    produce(&mut conn, &producer, Priority::High, "/work", "old-high").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    for body in ["new0", "new1"] {
        produce(&mut conn, &producer, Priority::Low, "/work", body).await;
    }
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    // Low waits at most 400 ms; High has no bound, so its old entry stays.
    let source = source(&url, &name)
        .discard_older_than(Priority::Low, Duration::from_millis(400))
        .build()
        .unwrap();
    let drain = Drain::new(source, app(4, &seen, &gate));
    let stats: DrainHandle = drain.handle();
    let task = drain.spawn();
    wait_until("the fresh entries are replayed", || {
        stats.snapshot().replayed == 3
    })
    .await;
    let mut bodies = seen.bodies();
    bodies.sort();
    assert_eq!(bodies, ["new0", "new1", "old-high"]);
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.discarded_in(Priority::Low), 5);
    assert_eq!(snapshot.discarded_total(), 5);
    let low = producer.stream(Priority::Low);
    acked(&mut conn, &low).await;
    // The discarded entries are skipped, not deleted: still in the stream.
    let len: u64 = redis::cmd("XLEN")
        .arg(&low)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 7);
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let line = logged
        .lines()
        .find(|l| l.contains("drain source discarded jobs"))
        .unwrap_or_else(|| panic!("no discard logged in {logged:?}"));
    assert!(
        line.contains("WARN") && line.contains("priority=\"low\"") && line.contains("discarded=5"),
        "{line}"
    );
    task.abort();
    clean_up(&mut conn, &producer).await;
}

/// A Redis server of this test's own, on a free port, that it can stop.
struct OwnRedis {
    port: u16,
    child: Child,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (see .ci/redis.sh)");
        Self { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn ready(&self) -> MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..100 {
            if let Ok(conn) = client.get_multiplexed_async_connection().await {
                return conn;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server on PATH and REDIS_URL set (see .ci/redis.sh)"]
async fn redis_going_away_does_not_panic_and_the_drain_resumes_when_it_is_back() {
    let _ = url();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = OwnRedis::start(port);
    let mut conn = server.ready().await;
    let producer = StreamProducer::new("outage");
    produce(&mut conn, &producer, Priority::Default, "/work", "before").await;
    let (seen, gate) = (Arc::new(Seen::default()), Arc::new(Semaphore::new(0)));
    let source = source(&server.url(), "outage")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let drain = Drain::new(source, app(4, &seen, &gate)).lease(Duration::from_secs(1));
    let stats = drain.handle();
    let task = drain.spawn();
    wait_until("the first entry is replayed", || {
        stats.snapshot().replayed == 1
    })
    .await;

    server.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished(), "the drain outlives its Redis");
    assert!(stats.source_stats().await.is_err(), "Redis is down");

    // Back, empty (no persistence): the group is made again.
    let server = OwnRedis::start(port);
    let mut conn = server.ready().await;
    produce(&mut conn, &producer, Priority::Default, "/work", "after").await;
    wait_until_within(Duration::from_secs(15), "the drain resumes", || {
        stats.snapshot().replayed == 2
    })
    .await;
    assert_eq!(seen.bodies(), ["before", "after"]);
    assert!(!task.is_finished());
    task.abort();
    server.stop();
}
