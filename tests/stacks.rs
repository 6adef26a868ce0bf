//! The copyable stacks of `examples/axum_stack.rs` and
//! `examples/tonic_stack.rs`, served on loopback exactly as the examples
//! build them, driven by real hyper and tonic clients.

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
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;
use tower_spillway::retry_after::parse_retry_after;

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
mod axum_stack;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn serve_axum(config: &axum_stack::Config) -> (SocketAddr, axum_stack::Handles) {
    let (app, handles) = axum_stack::app(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // As the example serves it.
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, handles)
}

fn h1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
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
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A valid `Retry-After` as the stack sends it: delay-seconds, at least 1.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?;
    let hint = parse_retry_after(value.as_bytes(), std::time::SystemTime::now())?;
    let secs: u64 = value.to_str().ok()?.parse().ok()?;
    (secs >= 1 && hint == Duration::from_secs(secs)).then_some(hint)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    let flood = Flood::start(&h2_client(), addr, "/likes", 40);
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
