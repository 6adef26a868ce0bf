//! End-to-end tests of `PriorityShedLayer` over real loopback servers: axum
//! over HTTP/2 with hyper's client, and tonic with its health service.
#![cfg(feature = "http")]

mod support;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{MethodRouter, get},
};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::{HttpClient, channel, h1_client, h2_client, health_request, serve_tonic};
use tokio::sync::Semaphore;
use tower_spillway::{
    Priority,
    priority::{HeaderPriority, PriorityLayer},
    shed::{PriorityShedLayer, Thresholds},
};

/// Serves `app` over HTTP/1 and HTTP/2 on a loopback port, allowing many
/// concurrent streams per connection.
async fn serve(app: Router) -> SocketAddr {
    support::serve_hyper(app, |builder| {
        builder.http2().max_concurrent_streams(10_000);
    })
    .await
}

/// Whole seconds of a valid `Retry-After`, or `None`.
fn retry_after_secs(res: &http::Response<hyper::body::Incoming>) -> Option<u64> {
    support::retry_after_secs(res.headers())
}

/// A handler that serves `slots` requests at a time, 20 ms each.
fn work(slots: usize) -> MethodRouter {
    let slots = Arc::new(Semaphore::new(slots));
    get(move || {
        let slots = Arc::clone(&slots);
        async move {
            let _slot = slots.acquire().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            "done"
        }
    })
}

/// Sends a request to `/work` at priority `p`.
async fn send_work(
    client: &HttpClient,
    addr: SocketAddr,
    p: Priority,
) -> http::Response<hyper::body::Incoming> {
    let req = Request::get(format!("http://{addr}/work"))
        .header("x-priority", p.as_str())
        .body(Empty::new())
        .unwrap();
    client.request(req).await.expect("a response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_spike_keeps_critical_and_sheds_low_first() {
    let shed = PriorityShedLayer::builder(Thresholds::ladder(100))
        .http()
        .build();
    let stats = shed.handle();
    let app = Router::new()
        // 50 requests at a time, 20 ms each.
        .route("/work", work(50))
        .layer(shed)
        .layer(PriorityLayer::new(HeaderPriority::new().trusted(true)));
    let addr = serve(app).await;
    let client = h2_client();

    // 2 000 requests, 5 % Critical, 15 % High, 30 % Default, 50 % Low, in a
    // fixed shuffled order, sent in waves of 100 every 10 ms without waiting
    // for answers: the server is offered 10 requests/ms and can finish 2.5.
    let mut order: Vec<Priority> = [
        (Priority::Critical, 100),
        (Priority::High, 300),
        (Priority::Default, 600),
        (Priority::Low, 1000),
    ]
    .iter()
    .flat_map(|&(p, n)| std::iter::repeat_n(p, n))
    .collect();
    fastrand::Rng::with_seed(7).shuffle(&mut order);

    let mut tasks = tokio::task::JoinSet::new();
    for wave in order.chunks(100) {
        for &p in wave {
            let client = client.clone();
            tasks.spawn(async move {
                let res = send_work(&client, addr, p).await;
                let status = res.status();
                let hint = retry_after_secs(&res);
                let body = res.into_body().collect().await.unwrap().to_bytes();
                (p, status, hint, body)
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut ok = [0u32; 4];
    let mut refused = [0u32; 4];
    while let Some(done) = tasks.join_next().await {
        let (p, status, hint, body) = done.unwrap();
        match status {
            StatusCode::OK => {
                assert_eq!(body, "done");
                ok[p.index()] += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let secs = hint.expect("every refusal carries a Retry-After");
                assert!((1..=30).contains(&secs), "Retry-After {secs}");
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["priority"], p.as_str());
                refused[p.index()] += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }

    let total = |p: Priority| ok[p.index()] + refused[p.index()];
    let shed = |p: Priority| f64::from(refused[p.index()]) / f64::from(total(p));
    let summary = format!("ok {ok:?} refused {refused:?} (low, default, high, critical)");
    eprintln!("{summary}");
    assert_eq!(Priority::ALL.map(total), [1000, 600, 300, 100]);
    assert!(
        f64::from(ok[Priority::Critical.index()]) >= 0.99 * 100.0,
        "{summary}"
    );
    assert!(shed(Priority::Low) >= shed(Priority::Default), "{summary}");
    assert!(shed(Priority::Default) >= shed(Priority::High), "{summary}");
    assert!(
        shed(Priority::High) >= shed(Priority::Critical),
        "{summary}"
    );
    assert!(shed(Priority::Low) > 0.5, "the spike was shed: {summary}");

    let snapshot = stats.snapshot();
    assert_eq!(snapshot.in_flight, 0, "every permit released");
    assert_eq!(
        snapshot.shed.total(),
        u64::from(refused.iter().sum::<u32>())
    );
    assert_eq!(snapshot.admitted.total(), u64::from(ok.iter().sum::<u32>()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_layer_on_a_router_is_one_shared_state() {
    // Two places for non-critical work, across every route of the router.
    let limits = Thresholds::builder()
        .low(2)
        .default(2)
        .high(2)
        .build()
        .unwrap();
    let shed = PriorityShedLayer::builder(limits).http().build();
    let stats = shed.handle();
    let gate = Arc::new(Semaphore::new(0));
    let held = {
        let gate = Arc::clone(&gate);
        move || {
            let gate = Arc::clone(&gate);
            async move {
                let _ = gate.acquire().await.unwrap();
                "released"
            }
        }
    };
    let app = Router::new()
        .route("/a", get(held.clone()))
        .route("/b", get(held))
        .route("/c", get(|| async { "c" }))
        .layer(shed);
    let addr = serve(app).await;
    let client = h1_client::<Empty<Bytes>>();
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let req = Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap();
            client.request(req).await.unwrap()
        }
    };

    let a = tokio::spawn(get("/a"));
    let b = tokio::spawn(get("/b"));
    while stats.snapshot().in_flight < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // /c has never been called, but the routes share one count.
    let res = get("/c").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after_secs(&res).is_some());

    gate.add_permits(2);
    assert_eq!(a.await.unwrap().status(), StatusCode::OK);
    assert_eq!(b.await.unwrap().status(), StatusCode::OK);
    // Released when the bodies ended: /c passes again.
    while stats.snapshot().in_flight > 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let res = get("/c").await;
    assert_eq!(res.status(), StatusCode::OK);
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.admitted.total(), snapshot.shed.total()), (3, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_shed_call_is_unavailable_with_pushback() {
    use tonic_health::pb::health_client::HealthClient;

    // A saturated load signal: every non-critical call is shed.
    let shed = PriorityShedLayer::builder(Thresholds::ladder(10))
        .signal(|| 1_000usize)
        .http()
        .build();
    let stats = shed.handle();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let addr = serve_tonic(|incoming| {
        tonic::transport::Server::builder()
            .layer(shed)
            .add_service(health)
            .serve_with_incoming(incoming)
    })
    .await;

    let mut client = HealthClient::new(channel(addr).await);
    let status = client.check(health_request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let pushback = support::pushback_ms(&status).expect("pushback");
    assert!((1_000..=30_000).contains(&pushback), "{pushback}");
    assert_eq!(stats.snapshot().shed.default, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_critical_call_passes_under_the_same_load() {
    use tonic_health::pb::health_client::HealthClient;

    let shed = PriorityShedLayer::builder(Thresholds::ladder(10))
        .signal(|| 1_000usize)
        .http()
        .build();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let addr = serve_tonic(|incoming| {
        tonic::transport::Server::builder()
            .layer(PriorityLayer::new(Priority::Critical))
            .layer(shed)
            .add_service(health)
            .serve_with_incoming(incoming)
    })
    .await;
    let res = HealthClient::new(channel(addr).await)
        .check(health_request())
        .await
        .unwrap();
    assert_eq!(
        res.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_adaptive_sheds_by_priority_under_sustained_overload() {
    let shed = PriorityShedLayer::builder(tower_spillway::shed::Adaptive::default())
        .http()
        .build();
    let stats = shed.handle();
    let app = Router::new()
        // 10 at a time, 20 ms each: 500 requests/s. Offered: 2 000/s for 1.5 s.
        .route("/work", work(10))
        .layer(shed)
        .layer(PriorityLayer::new(HeaderPriority::new().trusted(true)));
    let addr = serve(app).await;
    let client = h2_client();

    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = fastrand::Rng::with_seed(11);
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        for _ in 0..20 {
            let p = match rng.u32(0..20) {
                0 => Priority::Critical,
                1..=3 => Priority::High,
                4..=9 => Priority::Default,
                _ => Priority::Low,
            };
            let client = client.clone();
            tasks.spawn(async move {
                let res = send_work(&client, addr, p).await;
                let hint = retry_after_secs(&res);
                let status = res.status();
                let _ = res.into_body().collect().await;
                (p, status, hint)
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ok = [0u32; 4];
    let mut refused = [0u32; 4];
    while let Some(done) = tasks.join_next().await {
        let (p, status, hint) = done.unwrap();
        if status == StatusCode::OK {
            ok[p.index()] += 1;
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(hint.is_some_and(|s| (1..=30).contains(&s)), "{hint:?}");
            refused[p.index()] += 1;
        }
    }
    let shed = |p: Priority| {
        f64::from(refused[p.index()]) / f64::from(ok[p.index()] + refused[p.index()]).max(1.0)
    };
    let summary = format!("ok {ok:?} refused {refused:?} (low, default, high, critical)");
    eprintln!("{summary}");
    assert_eq!(refused[Priority::Critical.index()], 0, "{summary}");
    assert!(shed(Priority::Low) > 0.3, "{summary}");
    assert!(shed(Priority::Low) >= shed(Priority::Default), "{summary}");
    assert!(shed(Priority::Default) >= shed(Priority::High), "{summary}");
    let snapshot = stats.snapshot();
    assert!(
        matches!(
            snapshot.mode,
            tower_spillway::shed::ModeStats::Adaptive { .. }
        ),
        "{snapshot:?}"
    );
    assert_eq!(snapshot.in_flight, 0, "every permit released");
}
