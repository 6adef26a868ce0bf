//! The copyable stacks of `examples/axum_stack.rs` and
//! `examples/tonic_stack.rs`, served on loopback exactly as the examples
//! build them, driven by real hyper and tonic clients.

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use support::{HttpClient, channel, h1_client, h2_client, wait_until};
use tokio::time::Instant;
use tower_spillway::retry_after::{parse_pushback_ms, parse_retry_after};

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
mod axum_stack;

#[path = "../examples/tonic_stack/shop.rs"]
#[allow(dead_code)]
mod shop;

async fn serve_axum(config: &axum_stack::Config) -> (SocketAddr, axum_stack::Handles) {
    let (app, handles) = axum_stack::app(config);
    // As the example serves it.
    (support::serve_axum(app).await, handles)
}

/// Sends one request; the status, the headers and the body.
async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    priority: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(p) = priority {
        req = req.header("x-priority", p);
    }
    support::send(client, req.body(Empty::new()).unwrap()).await
}

/// A valid `Retry-After` as the stack sends it: delay-seconds, at least 1.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?;
    let hint = parse_retry_after(value.as_bytes(), std::time::SystemTime::now())?;
    let secs: u64 = value.to_str().ok()?.parse().ok()?;
    (secs >= 1 && hint == Duration::from_secs(secs)).then_some(hint)
}

/// Tasks posting to `path` in a loop until stopped; a refused request backs
/// off 20 ms. Counts answers by status; any other status or a transport
/// error fails the test.
struct Flood {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    bad_hint: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    fn start(client: &HttpClient, addr: SocketAddr, path: &'static str, tasks: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let bad_hint = Arc::new(AtomicU64::new(0));
        let tasks = (0..tasks)
            .map(|_| {
                let (client, stop) = (client.clone(), stop.clone());
                let (ok, refused, bad_hint) = (ok.clone(), refused.clone(), bad_hint.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let (status, headers, _) =
                            send(&client, addr, Method::POST, path, None).await;
                        match status {
                            StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                            StatusCode::SERVICE_UNAVAILABLE => {
                                if retry_after(&headers).is_none() {
                                    bad_hint.fetch_add(1, Ordering::Relaxed);
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                refused.fetch_add(1, Ordering::Relaxed)
                            }
                            other => panic!("{path}: unexpected status {other}"),
                        };
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            refused,
            bad_hint,
            tasks,
        }
    }

    /// Stops the flood: (ok, refused, refused without a valid hint).
    async fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.bad_hint.load(Ordering::Relaxed),
        )
    }
}

/// With the database saturated (every permit held, waiters queued or
/// refused), `/healthz` and `/stats` answer at once: they are neither shed
/// nor queued behind writes that take a second each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_healthz_is_never_shed_nor_queued_while_saturated() {
    let config = axum_stack::Config {
        capacity: 2,
        service: Duration::from_secs(1),
        trust_priority_header: false,
    };
    let (addr, handles) = serve_axum(&config).await;
    // Critical writes: never shed, so they keep the limiter full and its
    // queue long.
    let flood = Flood::start(&h2_client(), addr, "/payments", 40);
    let limit = handles.limit.clone();
    wait_until("the limiter is saturated and refusing", || {
        let s = limit.snapshot();
        s.in_flight >= s.limit && s.rejected_queue_full + s.rejected_queue_timeout > 0
    })
    .await;

    let client = h1_client();
    let bypassed = handles.shed.snapshot().bypassed;
    for _ in 0..5 {
        assert!(
            handles.limit.in_flight() >= handles.limit.limit(),
            "still saturated"
        );
        let start = Instant::now();
        let (status, _, body) = send(&client, addr, Method::GET, "/healthz", None).await;
        let took = start.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], br#"{"status":"ok"}"#);
        // A permit frees every 0.75 s at best: a queued probe would wait
        // for one, or be refused.
        assert!(took < Duration::from_millis(400), "/healthz took {took:?}");

        let start = Instant::now();
        let (status, _, body) = send(&client, addr, Method::GET, "/stats", None).await;
        let took = start.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert!(took < Duration::from_millis(400), "/stats took {took:?}");
        let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(stats["limit"]["in_flight"].as_u64().unwrap() >= 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        handles.shed.snapshot().bypassed - bypassed,
        10,
        "every probe and stats read went round the shedder"
    );
    let (_, refused, bad_hint) = flood.stop().await;
    assert!(refused > 0, "the flood was refused");
    assert_eq!(bad_hint, 0, "every 503 carried a valid Retry-After");
}

/// `/stats` is JSON built from the layers' handles: it agrees with them and
/// with the requests sent.
#[tokio::test]
async fn axum_stats_is_json_with_the_handles_figures() {
    let config = axum_stack::Config {
        capacity: 3,
        service: Duration::from_millis(5),
        trust_priority_header: false,
    };
    let (addr, handles) = serve_axum(&config).await;
    let client = h1_client();
    for path in [
        "/payments",
        "/payments",
        "/orders",
        "/analytics",
        "/analytics",
        "/analytics",
    ] {
        let (status, headers, body) = send(&client, addr, Method::POST, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["ok"], true);
    }
    wait_until("every permit is released", || {
        handles.limit.snapshot().released == 6
    })
    .await;

    let (status, headers, body) = send(&client, addr, Method::GET, "/stats", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let stats: serde_json::Value = serde_json::from_slice(&body).expect("/stats is JSON");

    let limit = &stats["limit"];
    assert_eq!(limit["limit"].as_u64(), Some(handles.limit.limit() as u64));
    assert_eq!(limit["admitted"], 6);
    assert_eq!(limit["released"], 6);
    assert_eq!(limit["in_flight"], 0);
    assert_eq!(limit["queued"], 0);
    let shed = &stats["shed"];
    assert_eq!(shed["admitted"]["critical"], 2);
    assert_eq!(shed["admitted"]["high"], 1);
    assert_eq!(shed["admitted"]["default"], 0);
    assert_eq!(shed["admitted"]["low"], 3);
    assert_eq!(shed["shed"]["low"], 0);
    assert_eq!(shed["mode"]["kind"], "adaptive");
    assert_eq!(shed["mode"]["level"], 512, "nothing shed while calm");
    // This request itself went round the shedder.
    assert_eq!(shed["bypassed"], 1);
    assert_eq!(stats["database"]["slots"], 3);
}

/// Under a burst of Low traffic far beyond the database, every Critical
/// payment succeeds while analytics requests are refused with `503` and a
/// valid `Retry-After`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_burst_keeps_critical_and_refuses_low_with_retry_after() {
    let config = axum_stack::Config {
        capacity: 8,
        service: Duration::from_millis(100),
        trust_priority_header: false,
    };
    let (addr, handles) = serve_axum(&config).await;
    // 200 callers against 8 slots x 100 ms: 2.5x the database's capacity
    // even if every caller waited for its answer.
    let flood = Flood::start(&h2_client(), addr, "/analytics", 200);
    let limit = handles.limit.clone();
    wait_until("the limiter refuses", || {
        let s = limit.snapshot();
        s.rejected_queue_full + s.rejected_queue_timeout > 0
    })
    .await;

    let client = h1_client();
    for i in 0..10 {
        let (status, headers, body) = send(&client, addr, Method::POST, "/payments", None).await;
        assert_eq!(status, StatusCode::OK, "payment {i} refused: {headers:?}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["priority"], "critical");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, refused, bad_hint) = flood.stop().await;
    let shed = handles.shed.snapshot();
    assert!(
        refused > ok,
        "most analytics refused: {ok} ok, {refused} refused"
    );
    assert_eq!(bad_hint, 0, "every 503 carried a valid Retry-After");
    assert_eq!(shed.admitted.critical, 10);
    assert_eq!(shed.shed.critical, 0);
}

/// `x-priority` can only lower a request's priority, unless the operator
/// trusts it (`--trust-priority-header`).
#[tokio::test]
async fn axum_priority_header_is_trusted_only_when_asked() {
    for (trusted, expected) in [(false, "low"), (true, "critical")] {
        let config = axum_stack::Config {
            capacity: 2,
            service: Duration::from_millis(1),
            trust_priority_header: trusted,
        };
        let (addr, _) = serve_axum(&config).await;
        let client = h1_client();
        let (status, _, body) =
            send(&client, addr, Method::POST, "/analytics", Some("critical")).await;
        assert_eq!(status, StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["priority"], expected, "trusted: {trusted}");
        // Lowering is always allowed.
        let (_, _, body) = send(&client, addr, Method::POST, "/payments", Some("low")).await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["priority"], "low", "trusted: {trusted}");
    }
}

// ---- tonic ----------------------------------------------------------------

async fn serve_tonic(config: &shop::Config) -> (SocketAddr, shop::Handles) {
    support::serve_tonic_with(|incoming| shop::serve(incoming, config)).await
}

fn write_request(api_key: &str) -> tonic::Request<shop::WriteRequest> {
    let mut req = tonic::Request::new(shop::WriteRequest {
        item: "sku-1".into(),
        quantity: 1,
    });
    req.metadata_mut()
        .insert("x-api-key", api_key.parse().unwrap());
    req
}

/// The pushback a refusal carries, if valid.
fn pushback(status: &tonic::Status) -> Option<Duration> {
    let value = status.metadata().get("grpc-retry-pushback-ms")?;
    parse_pushback_ms(value.as_bytes())
}

async fn health_check(addr: SocketAddr) -> (Duration, tonic::Result<()>) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(addr).await);
    let start = Instant::now();
    let res = health
        .check(HealthCheckRequest {
            service: "shop.v1.Shop".into(),
        })
        .await;
    let took = start.elapsed();
    let res = res.map(|r| {
        assert_eq!(
            r.into_inner().status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
    (took, res)
}

/// Overloaded, the server refuses a call with a trailers-only `UNAVAILABLE`
/// carrying `grpc-retry-pushback-ms`; the client's honour layer then holds
/// every call back until the pushback has passed, and the next call (a
/// Critical payment) succeeds. Health checks answer at once meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_refusal_is_unavailable_with_pushback_and_the_client_waits_it_out() {
    let config = shop::Config {
        capacity: 2,
        service: Duration::from_millis(200),
        quota_per_key: 100_000,
    };
    let (addr, handles) = serve_tonic(&config).await;
    let (client, cooldowns, _) = shop::client(channel(addr).await, 32);

    // 32 callers of `Like` against a limit of 4 and 0.2 s writes.
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let (mut client, first_tx) = (client.clone(), first_tx.clone());
            tokio::spawn(async move {
                loop {
                    match client.call(shop::Method::Like, write_request("shop")).await {
                        Ok(_) => {}
                        Err(status) => {
                            let _ = first_tx.send((Instant::now(), status));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let (refused_at, status) = tokio::time::timeout(Duration::from_secs(10), first_rx.recv())
        .await
        .expect("a call is refused")
        .unwrap();

    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let wait = pushback(&status).expect("a valid grpc-retry-pushback-ms");
    assert!(
        (Duration::from_millis(1)..=Duration::from_secs(5)).contains(&wait),
        "pushback {wait:?}"
    );
    assert!(
        cooldowns.cooldown_until().is_some(),
        "the client cools down"
    );
    assert!(cooldowns.snapshot().cooldowns >= 1);

    // The server is still busy: the gRPC health service bypasses the
    // shedder and sits outside the limiter.
    assert!(handles.limit.in_flight() >= 1);
    let (took, res) = health_check(addr).await;
    res.expect("health checks are never refused");
    assert!(
        took < Duration::from_millis(400),
        "health check took {took:?}"
    );

    for task in flood {
        task.abort();
    }
    let mut client = client.clone();
    let reply = client
        .call(shop::Method::Pay, write_request("shop"))
        .await
        .expect("the payment succeeds after the cooldown")
        .into_inner();
    assert_eq!(reply.priority, "critical");
    let waited = refused_at.elapsed();
    assert!(
        waited + Duration::from_millis(100) >= wait,
        "the call went out before the pushback ({wait:?}) had passed: {waited:?}"
    );
}

/// Under a flood of Low calls from a plain client (no honour layer), every
/// Critical call succeeds while Low calls are refused as `UNAVAILABLE` with
/// a pushback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_burst_keeps_critical_and_refuses_low() {
    let config = shop::Config {
        capacity: 4,
        service: Duration::from_millis(50),
        quota_per_key: 100_000,
    };
    let (addr, handles) = serve_tonic(&config).await;
    let plain = shop::ShopClient::new(channel(addr).await);

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let (mut client, stop, refused) = (plain.clone(), stop.clone(), refused.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Err(status) = client
                        .call(shop::Method::Track, write_request("jobs"))
                        .await
                    {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                        assert!(pushback(&status).is_some(), "{status:?}");
                        refused.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    let limit = handles.limit.clone();
    wait_until("the limiter refuses", || {
        let s = limit.snapshot();
        s.rejected_queue_full + s.rejected_queue_timeout > 0
    })
    .await;

    let mut client = plain.clone();
    for i in 0..10 {
        let reply = client
            .call(shop::Method::Pay, write_request("shop"))
            .await
            .unwrap_or_else(|s| panic!("payment {i} refused: {s:?}"))
            .into_inner();
        assert_eq!(reply.priority, "critical");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    assert!(refused.load(Ordering::Relaxed) > 0);
    let shed = handles.shed.snapshot();
    assert_eq!(shed.admitted.critical, 10);
    assert_eq!(shed.shed.critical, 0);
}

/// Each API key has its own quota: over it, `RESOURCE_EXHAUSTED` with the
/// wait as pushback; another key is unaffected.
#[tokio::test]
async fn tonic_quota_per_api_key_is_resource_exhausted_with_pushback() {
    let config = shop::Config {
        capacity: 4,
        service: Duration::from_millis(1),
        quota_per_key: 2,
    };
    let (addr, handles) = serve_tonic(&config).await;
    let mut client = shop::ShopClient::new(channel(addr).await);

    client
        .call(shop::Method::Like, write_request("a"))
        .await
        .unwrap();
    let status = client
        .call(shop::Method::Like, write_request("a"))
        .await
        .expect_err("over quota");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let wait = pushback(&status).expect("a valid grpc-retry-pushback-ms");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(500),
        "{wait:?}"
    );
    client
        .call(shop::Method::Like, write_request("b"))
        .await
        .unwrap();
    assert_eq!(handles.rate.snapshot().limited, 1);
}

/// A Critical-heavy shape on the tonic stack: more payments than the
/// database can take, plus a Low flood. Payments fill the database (at the
/// limit the defaults find, near its 4 slots), the excess is refused at once
/// with `UNAVAILABLE` and pushback, and Low gets nothing while Critical waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_critical_heavy_fills_the_database_and_refuses_the_excess_fast() {
    let config = shop::Config {
        capacity: 4,
        service: Duration::from_millis(20),
        quota_per_key: 100_000,
    };
    let (addr, handles) = serve_tonic(&config).await;
    let plain = shop::ShopClient::new(channel(addr).await);
    let run = Duration::from_secs(3);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let paid = Arc::new(AtomicU64::new(0));
    let slow_refusals = Arc::new(AtomicU64::new(0));
    let refusals = Arc::new(AtomicU64::new(0));
    let tracked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // 32 payers (about 8× what 4 slots × 20 ms serve), 32 Low trackers.
    for i in 0..64 {
        let mut client = plain.clone();
        let (stop, paid, slow, refusals, tracked) = (
            stop.clone(),
            paid.clone(),
            slow_refusals.clone(),
            refusals.clone(),
            tracked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let method = if i % 2 == 0 {
                shop::Method::Pay
            } else {
                shop::Method::Track
            };
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match client.call(method, write_request("heavy")).await {
                    Ok(_) if method == shop::Method::Pay => {
                        paid.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        tracked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                        assert!(pushback(&status).is_some(), "{status:?}");
                        refusals.fetch_add(1, Ordering::Relaxed);
                        if sent.elapsed() > Duration::from_millis(50) {
                            slow.fetch_add(1, Ordering::Relaxed);
                        }
                        // A closed-loop caller that honoured nothing would
                        // spin; pause as a retrying client would.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        }));
    }
    let mut max_limit = 0;
    while start.elapsed() < run {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if start.elapsed() > Duration::from_secs(1) {
            max_limit = max_limit.max(handles.limit.limit());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let capacity = 4.0 / 0.020 * run.as_secs_f64();
    let paid = paid.load(Ordering::Relaxed) as f64;
    let refusals = refusals.load(Ordering::Relaxed);
    // Payments keep the database busy (the limit starts where the defaults
    // start, so the first second counts too, and the other tests of this
    // file share the machine meanwhile) ...
    assert!(paid >= 0.5 * capacity, "paid {paid} of {capacity}");
    // ... the limit stays near the slot count ...
    assert!(max_limit <= 8, "limit reached {max_limit} over 4 slots");
    // ... Low is all but shut out while payments wait ...
    let tracked = tracked.load(Ordering::Relaxed) as f64;
    assert!(tracked <= 0.1 * paid, "low {tracked} vs critical {paid}");
    // ... and the excess is refused at once, not after a wait.
    assert!(refusals > 100, "{refusals} refusals");
    let slow = slow_refusals.load(Ordering::Relaxed);
    assert!(
        slow * 20 <= refusals,
        "{slow} of {refusals} refusals took over 50 ms"
    );
}
