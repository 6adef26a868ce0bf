//! `SpillLayer` over a real axum server and a real SQLite file: deferrable
//! writes the stack refuses are answered `202`, stored, and replayed through
//! the same stack once it admits them again. One ignored test does the same
//! over a real PostgreSQL (`DATABASE_URL`, see `.ci/postgres.sh`).

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Extension, Router,
    body::Bytes,
    http::{HeaderMap, Method, Request, StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use http_body_util::Full;
use serde_json::Value;
use support::{HttpClient, TempDir, h1_client, send, serve_axum, wait_until, wait_until_within};
use tower_spillway::{
    http::RejectBody,
    priority::{Priority, PriorityLayer, RouteTable},
    shed::{PriorityShedLayer, Thresholds},
    spill::{
        Bounds, DeferrableRoutes, Mode, PostgresStore, Replay, SpillHandle, SpillLayer, SpillStore,
        SqliteStore,
    },
};

/// What the handlers saw: each call's path, body, idempotency key, and
/// whether it was a replay.
/// One handler call: path, body, idempotency key, replayed.
type Call = (String, Bytes, Option<String>, bool);

#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<Call>>,
    fail_likes: std::sync::atomic::AtomicBool,
}

impl Seen {
    fn count(&self, path: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == path)
            .count()
    }
}

/// The application: `/likes` and `/analytics` deferrable, `/orders` not,
/// `/payments` Critical; a shedder whose load is `gate` refuses everything
/// below Critical while it is high.
struct App {
    addr: SocketAddr,
    spill: SpillHandle,
    seen: Arc<Seen>,
    gate: Arc<AtomicUsize>,
    router: Router,
}

const OPEN: usize = 0;
const SHUT: usize = 1_000_000;

fn app(
    store: impl SpillStore,
    mode: Mode,
    configure: impl FnOnce(
        tower_spillway::spill::SpillLayerBuilder<DeferrableRoutes>,
    ) -> tower_spillway::spill::SpillLayerBuilder<DeferrableRoutes>,
) -> (Router, SpillHandle, Arc<Seen>, Arc<AtomicUsize>) {
    let seen = Arc::new(Seen::default());
    let gate = Arc::new(AtomicUsize::new(SHUT));
    let handler = {
        let seen = Arc::clone(&seen);
        move |replay: Option<Extension<Replay>>, req: Request<axum::body::Body>| {
            let seen = Arc::clone(&seen);
            async move {
                let path = req.uri().path().to_owned();
                let key = req
                    .headers()
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap();
                let fail = path == "/likes" && seen.fail_likes.load(Ordering::Relaxed);
                seen.calls.lock().unwrap().push((
                    path.clone(),
                    body.clone(),
                    key,
                    replay.is_some(),
                ));
                if fail {
                    return (StatusCode::INTERNAL_SERVER_ERROR, "broken").into_response();
                }
                (
                    StatusCode::CREATED,
                    format!("stored {} bytes at {path}", body.len()),
                )
                    .into_response()
            }
        }
    };
    let shed = PriorityShedLayer::builder(Thresholds::ladder(100))
        .signal({
            let gate = Arc::clone(&gate);
            move || gate.load(Ordering::Relaxed)
        })
        .http()
        .build();
    let deferrable = DeferrableRoutes::new()
        .route(Some(Method::POST), "/likes")
        .route(Some(Method::POST), "/analytics");
    let spill = configure(SpillLayer::builder(store).deferrable(deferrable).mode(mode))
        .build()
        .unwrap();
    let handle = spill.handle();
    let routes = RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/orders", Priority::High)
        .route(None, "/likes", Priority::Default)
        .route(None, "/analytics", Priority::Low);
    let router = Router::new()
        .route("/payments", post(handler.clone()))
        .route("/orders", post(handler.clone()))
        .route("/likes", post(handler.clone()))
        .route("/analytics", post(handler))
        .layer(shed)
        .layer(spill)
        .layer(PriorityLayer::new(routes));
    (router, handle, seen, gate)
}

async fn start(
    dir: &TempDir,
    mode: Mode,
    configure: impl FnOnce(
        tower_spillway::spill::SpillLayerBuilder<DeferrableRoutes>,
    ) -> tower_spillway::spill::SpillLayerBuilder<DeferrableRoutes>,
) -> App {
    let store = SqliteStore::open(dir.path().join("spill.db")).unwrap();
    start_on(store, mode, configure).await
}

async fn start_on(
    store: impl SpillStore,
    mode: Mode,
    configure: impl FnOnce(
        tower_spillway::spill::SpillLayerBuilder<DeferrableRoutes>,
    ) -> tower_spillway::spill::SpillLayerBuilder<DeferrableRoutes>,
) -> App {
    let (router, spill, seen, gate) = app(store, mode, configure);
    let addr = serve_axum(router.clone()).await;
    App {
        addr,
        spill,
        seen,
        gate,
        router,
    }
}

fn post_req(addr: SocketAddr, path: &str, body: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://{addr}{path}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::AUTHORIZATION, "Bearer not-stored");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::default())
        .unwrap()
}

async fn json(
    client: &HttpClient<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, Value) {
    let (status, _, body) = send(client, get_req(addr, path)).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn location(headers: &HeaderMap) -> String {
    headers[header::LOCATION].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deferrable_writes_are_accepted_stored_and_replayed_once_the_stack_admits_them() {
    let dir = TempDir::new("overflow");
    let app = start(&dir, Mode::Overflow, |b| b).await;
    spilled_then_replayed(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn on_postgres_refused_deferrable_writes_are_accepted_stored_and_replayed() {
    let (store, _alone) = postgres_store().await;
    let app = start_on(store, Mode::Overflow, |b| b).await;
    spilled_then_replayed(app).await;
}

/// The PostgreSQL tests share one table: one at a time.
static POSTGRES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh PostgreSQL store, its table emptied, and the table to itself
/// while the guard lives.
async fn postgres_store() -> (PostgresStore, tokio::sync::MutexGuard<'static, ()>) {
    let alone = POSTGRES.lock().await;
    let url = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must be set for this test (see .ci/postgres.sh)");
    let store = PostgresStore::connect(&url).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("DELETE FROM spill_jobs; UPDATE spill_tally SET jobs = 0, bytes = 0")
        .await
        .unwrap();
    (store, alone)
}

/// Thousands of jobs drained from PostgreSQL on one thread: the drain
/// reads the store's figures while its next lease is under way, each on a
/// connection of the pool. (A lease polled only by the drain's own loop
/// once held its connection while that loop waited for the same one, and
/// the drain stopped for good.)
#[tokio::test(flavor = "current_thread")]
#[ignore = "needs a PostgreSQL server: set DATABASE_URL (see .ci/postgres.sh)"]
async fn on_postgres_a_large_backlog_drains_to_the_end_on_one_thread() {
    const JOBS: usize = 3_000;
    let (store, _alone) = postgres_store().await;
    let (router, spill, seen, gate) = app(store, Mode::Always, |b| b);
    gate.store(OPEN, Ordering::Relaxed);
    let fill: Vec<_> = (0..JOBS)
        .map(|i| {
            let req = Request::post("/likes")
                .body(axum::body::Body::from(format!("like {i}")))
                .unwrap();
            tower::ServiceExt::oneshot(router.clone(), req)
        })
        .collect();
    for res in futures_util::future::join_all(fill).await {
        assert_eq!(res.unwrap().status(), StatusCode::ACCEPTED);
    }
    let drain = spill.drain(router.clone()).spawn();
    wait_until_within(Duration::from_secs(60), "the backlog is drained", || {
        seen.count("/likes") == JOBS
    })
    .await;
    wait_until_within(Duration::from_secs(30), "every end is recorded", || {
        spill.snapshot().replayed == JOBS as u64
    })
    .await;
    drain.abort();
}

/// While the stack refuses, deferrable writes are answered `202` and
/// stored; the drain replays each once the stack opens, and the status URLs
/// then say done, with the handler's answer.
async fn spilled_then_replayed(app: App) {
    let client = h1_client();

    // While the stack refuses all but Critical: deferrable writes get 202,
    // the others the shedder's 503, payments are served.
    let mut locations = Vec::new();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/likes" } else { "/analytics" };
        let (status, headers, body) = send(
            &client,
            post_req(app.addr, path, &format!("like {i}"), None),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let retry: u64 = headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["status"], "queued");
        assert_eq!(answer["location"], location(&headers));
        locations.push(location(&headers));
    }
    let (status, headers, _) = send(&client, post_req(app.addr, "/orders", "order", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _, _) = send(&client, post_req(app.addr, "/payments", "pay", None)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.seen.count("/likes") + app.seen.count("/analytics"), 0);
    assert_eq!(app.spill.snapshot().spilled, 20);

    let (status, first) = json(&client, app.addr, &locations[0]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["status"], "queued");

    // The drain replays through the same stack: refused while it is shut
    // (and not counted as attempts), served once it opens.
    let drain = app.spill.drain(app.router.clone()).spawn();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.seen.count("/likes") + app.seen.count("/analytics"), 0);
    assert!(
        app.spill.snapshot().deferred > 0,
        "{:?}",
        app.spill.snapshot()
    );
    app.gate.store(OPEN, Ordering::Relaxed);
    wait_until_within(
        Duration::from_secs(20),
        "every spilled write is replayed",
        || app.seen.count("/likes") + app.seen.count("/analytics") == 20,
    )
    .await;

    // Each body reached its handler exactly once, as a replay, without the
    // headers the layer does not keep.
    let calls = app.seen.calls.lock().unwrap().clone();
    let mut bodies: Vec<_> = calls
        .iter()
        .filter(|c| c.0 != "/payments")
        .map(|c| {
            assert!(c.3, "{c:?} was not a replay");
            String::from_utf8(c.1.to_vec()).unwrap()
        })
        .collect();
    bodies.sort();
    let mut expected: Vec<_> = (0..20).map(|i| format!("like {i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected);

    wait_until_within(
        Duration::from_secs(10),
        "every job is recorded done",
        || app.spill.snapshot().replayed == 20,
    )
    .await;
    for location in &locations {
        let (status, job) = json(&client, app.addr, location).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(job["status"], "done", "{job}");
        assert_eq!(job["result"]["status"], 201);
        assert!(
            job["result"]["body"]
                .as_str()
                .unwrap()
                .starts_with("stored ")
        );
    }
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferrable_writes_the_stack_admits_are_served_at_once_and_not_stored() {
    let dir = TempDir::new("admitted");
    let app = start(&dir, Mode::Overflow, |b| b).await;
    app.gate.store(OPEN, Ordering::Relaxed);
    let client = h1_client();
    let (status, _, body) = send(&client, post_req(app.addr, "/likes", "now", None)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body, "stored 3 bytes at /likes");
    assert_eq!(app.seen.count("/likes"), 1);
    assert_eq!(app.spill.snapshot().spilled, 0);
    assert_eq!(app.spill.store_stats().await.unwrap().queued_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_always_mode_every_deferrable_write_is_stored_and_only_its_replay_is_served() {
    let dir = TempDir::new("always");
    let app = start(&dir, Mode::Always, |b| b).await;
    app.gate.store(OPEN, Ordering::Relaxed);
    let client = h1_client();
    let (status, headers, _) = send(&client, post_req(app.addr, "/likes", "later", None)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.seen.count("/likes"), 0);
    let (status, _, _) = send(&client, post_req(app.addr, "/orders", "now", None)).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "non-deferrable routes are served"
    );
    let drain = app.spill.drain(app.router.clone()).spawn();
    wait_until("the write is replayed", || app.seen.count("/likes") == 1).await;
    wait_until("the job is recorded", || app.spill.snapshot().replayed == 1).await;
    let (_, job) = json(&client, app.addr, &location(&headers)).await;
    assert_eq!(job["status"], "done");
    assert_eq!(job["result"]["body"], "stored 5 bytes at /likes");
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_go_highest_priority_first_and_oldest_first_within_a_priority() {
    let dir = TempDir::new("order");
    let app = start(&dir, Mode::Always, |b| b).await;
    app.gate.store(OPEN, Ordering::Relaxed);
    let client = h1_client();
    for (path, body) in [
        ("/analytics", "a0"),
        ("/likes", "l0"),
        ("/analytics", "a1"),
        ("/likes", "l1"),
    ] {
        let (status, _, _) = send(&client, post_req(app.addr, path, body, None)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let drain = app.spill.drain(app.router.clone()).max_in_flight(1).spawn();
    wait_until("every job is replayed", || {
        app.spill.snapshot().replayed == 4
    })
    .await;
    let bodies: Vec<_> = app
        .seen
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.1.clone())
        .collect();
    assert_eq!(bodies, ["l0", "l1", "a0", "a1"]);
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_idempotency_key_returns_the_first_job_and_is_replayed_once() {
    let dir = TempDir::new("idempotency");
    let app = start(&dir, Mode::Overflow, |b| b).await;
    let client = h1_client();
    let (s1, h1, _) = send(
        &client,
        post_req(app.addr, "/likes", "once", Some("like-7")),
    )
    .await;
    let (s2, h2, b2) = send(
        &client,
        post_req(app.addr, "/likes", "once", Some("like-7")),
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(location(&h1), location(&h2));
    assert_eq!(
        serde_json::from_slice::<Value>(&b2).unwrap()["repeat"],
        true
    );
    let (s3, h3, _) = send(
        &client,
        post_req(app.addr, "/likes", "other", Some("like-8")),
    )
    .await;
    assert_eq!(s3, StatusCode::ACCEPTED);
    assert_ne!(location(&h1), location(&h3));
    let (bad, _, _) = send(
        &client,
        post_req(app.addr, "/likes", "x", Some("has space")),
    )
    .await;
    assert_eq!(bad, StatusCode::BAD_REQUEST);

    app.gate.store(OPEN, Ordering::Relaxed);
    let drain = app.spill.drain(app.router.clone()).spawn();
    wait_until("both jobs are replayed", || {
        app.spill.snapshot().replayed == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let keys: Vec<_> = app
        .seen
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.2.clone())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys.contains(&Some("like-7".to_owned())),
        "the key is kept for the handler: {keys:?}"
    );
    let snap = app.spill.snapshot();
    assert_eq!((snap.spilled, snap.repeated), (2, 1));
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_invalid_requests_are_refused_before_anything_is_stored() {
    let dir = TempDir::new("refused");
    let app = start(&dir, Mode::Always, |b| {
        b.max_body(16).validate(|_, body| {
            if body.starts_with(b"{") {
                None
            } else {
                let mut res = http::Response::new(RejectBody::new("expected a JSON object"));
                *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                Some(res)
            }
        })
    })
    .await;
    let client = h1_client();
    let (status, _, _) = send(
        &client,
        post_req(app.addr, "/likes", "{\"a\":\"0123456789\"}", None),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _, body) = send(&client, post_req(app.addr, "/likes", "garbage", None)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, "expected a JSON object");
    let (status, _, _) = send(&client, post_req(app.addr, "/likes", "{}", None)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let stats = app.spill.store_stats().await.unwrap();
    assert_eq!(stats.queued_total(), 1);
    let snap = app.spill.snapshot();
    assert_eq!((snap.too_large, snap.invalid, snap.spilled), (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_leaves_the_stacks_own_503() {
    let dir = TempDir::new("full");
    let bounds = Bounds {
        max_jobs: 3,
        ..Bounds::default()
    };
    let app = start(&dir, Mode::Overflow, |b| b.bounds(bounds)).await;
    let client = h1_client();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let (status, headers, _) =
            send(&client, post_req(app.addr, "/likes", &format!("{i}"), None)).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(headers.contains_key(header::RETRY_AFTER));
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 503, 503]);
    assert_eq!(app.spill.snapshot().full, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_replays_back_off_and_are_dead_lettered_after_the_last_attempt() {
    let dir = TempDir::new("dead");
    let app = start(&dir, Mode::Always, |b| b).await;
    app.gate.store(OPEN, Ordering::Relaxed);
    app.seen.fail_likes.store(true, Ordering::Relaxed);
    let client = h1_client();
    let (_, headers, _) = send(&client, post_req(app.addr, "/likes", "doomed", None)).await;
    let drain = app.spill.drain(app.router.clone()).max_attempts(2).spawn();
    wait_until_within(Duration::from_secs(15), "the job is dead-lettered", || {
        app.spill.snapshot().dead_lettered == 1
    })
    .await;
    // Two attempts, a backoff of at least a second between them.
    assert_eq!(app.seen.count("/likes"), 2);
    assert_eq!(app.spill.snapshot().retried, 1);
    let (_, job) = json(&client, app.addr, &location(&headers)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 2);
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_job_ids_are_404() {
    let dir = TempDir::new("unknown");
    let app = start(&dir, Mode::Always, |b| b).await;
    let client = h1_client();
    let (_, headers, _) = send(&client, post_req(app.addr, "/likes", "x", None)).await;
    let real = location(&headers);
    let forged = format!(
        "{}{}",
        &real[..real.len() - 1],
        if real.ends_with('0') { '1' } else { '0' }
    );
    for path in [
        "/jobs/1-0000000000000000",
        "/jobs/nope",
        "/jobs/",
        forged.as_str(),
    ] {
        let (status, _) = json(&client, app.addr, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = json(&client, app.addr, &real).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn bad_settings_are_refused_at_build() {
    let dir = TempDir::new("config");
    let store = || SqliteStore::open(dir.path().join("spill.db")).unwrap();
    for prefix in ["", "/", "jobs", "/jobs/"] {
        assert!(
            SpillLayer::builder(store()).prefix(prefix).build().is_err(),
            "{prefix:?}"
        );
    }
    assert!(SpillLayer::builder(store()).max_body(0).build().is_err());
    let zero = Bounds {
        max_jobs: 0,
        ..Bounds::default()
    };
    assert!(SpillLayer::builder(store()).bounds(zero).build().is_err());
    assert!(SpillLayer::builder(store()).build().is_ok());
}
