//! The load level of `examples/axum_stack`, served on loopback exactly as
//! the example builds it: `GET /recommendations` answers `[]` from its
//! fallback while the database is saturated, and the full list again once
//! load has fallen and the level's hold has passed.

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
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::Empty;
use serde_json::Value;
use support::{HttpClient, h1_client, h2_client, wait_until_within};
use tokio::time::Instant;
use tower_spillway::degrade::{LoadLevel, X_DEGRADED};

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
mod axum_stack;

async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    support::send(client, req).await
}

/// `/recommendations`: its status, its `x-degraded` header, and the list.
async fn recommendations(
    client: &HttpClient,
    addr: SocketAddr,
) -> (StatusCode, Option<String>, Vec<Value>) {
    let (status, headers, body) = send(client, addr, Method::GET, "/recommendations").await;
    let degraded = headers
        .get(X_DEGRADED)
        .map(|v| v.to_str().unwrap().to_owned());
    let list = serde_json::from_slice::<Value>(&body).expect("a JSON list");
    let list = list.as_array().expect("a JSON list").clone();
    (status, degraded, list)
}

async fn stats(client: &HttpClient, addr: SocketAddr) -> Value {
    let (status, _, body) = send(client, addr, Method::GET, "/stats").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).expect("/stats is JSON")
}

/// Critical payments posted in a loop by `tasks` callers until stopped (a
/// refused one backs off 20 ms): never shed, so they keep the limiter full.
fn flood(
    addr: SocketAddr,
    tasks: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let client = h2_client();
    let handles = (0..tasks)
        .map(|_| {
            let (client, stop, ok) = (client.clone(), stop.clone(), ok.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (status, _, _) = send(&client, addr, Method::POST, "/payments").await;
                    match status {
                        StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        StatusCode::SERVICE_UNAVAILABLE => {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("/payments: unexpected status {other}"),
                    }
                }
            })
        })
        .collect();
    (stop, ok, handles)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_are_empty_while_elevated_and_full_again_once_load_falls() {
    let config = axum_stack::Config {
        capacity: 2,
        service: Duration::from_millis(100),
        trust_priority_header: false,
    };
    let (app, handles) = axum_stack::app(&config);
    let addr = support::serve_axum(app).await;
    let client = h1_client();

    // Calm: the handler answers, with a database call.
    let (status, degraded, list) = recommendations(&client, addr).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(degraded, None);
    assert!(!list.is_empty(), "the full list when calm");
    let full = list;
    assert_eq!(handles.level.level(), LoadLevel::Normal);

    // Forty callers against two database slots.
    let (stop, ok, tasks) = flood(addr, 40);
    let level = handles.level.clone();
    wait_until_within(Duration::from_secs(30), "the load level rises", || {
        level.level() >= LoadLevel::Elevated
    })
    .await;

    // Elevated or worse: the fallback answers, the handler is not called
    // (it never answers an empty list).
    for _ in 0..5 {
        let (status, degraded, list) = recommendations(&client, addr).await;
        assert_eq!(status, StatusCode::OK);
        let degraded = degraded.expect("answered by the fallback");
        assert!(
            degraded == "elevated" || degraded == "overloaded",
            "x-degraded: {degraded}"
        );
        assert!(list.is_empty(), "{list:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = &stats(&client, addr).await["load"];
    assert_ne!(load["level"], "normal", "{load}");
    assert!(load["cause"].is_string(), "{load}");
    assert!(load["fallbacks"].as_u64().unwrap() >= 5, "{load}");

    // Load falls: the callers stop, the database drains.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(ok.load(Ordering::Relaxed) > 0, "payments were served");
    support::wait_idle(
        "the stack drains",
        Duration::from_secs(30),
        &handles.limit,
        &handles.shed,
    )
    .await;

    // Only requests read the level now. Once the hold has passed, the
    // handler answers again, with the full list.
    let fell = Instant::now();
    let deadline = fell + Duration::from_secs(20);
    loop {
        let (status, degraded, list) = recommendations(&client, addr).await;
        assert_eq!(status, StatusCode::OK);
        if degraded.is_none() {
            assert_eq!(list, full, "the full list again");
            break;
        }
        assert!(list.is_empty(), "a degraded answer is the fallback's");
        assert!(
            Instant::now() < deadline,
            "still degraded 20 s after load fell"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(handles.level.level(), LoadLevel::Normal);
    let load = &stats(&client, addr).await["load"];
    assert_eq!(load["level"], "normal", "{load}");
    assert_eq!(load["cause"], Value::Null, "{load}");
    assert!(load["transitions"].as_u64().unwrap() >= 2, "{load}");
}
