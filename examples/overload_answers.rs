//! What a refused request looks like on the wire.
//!
//! Starts a small HTTP server on loopback whose handler has four slots. When
//! they are full it refuses anything below `Critical` with an `Overloaded`
//! error; `RetryAfterLayer` turns that into `503` + `Retry-After` +
//! problem+json (or a trailers-only gRPC status for gRPC calls). A client then
//! sends a burst of payments (Critical) and analytics events (Low) and prints
//! what came back.
//!
//! ```text
//! cargo run --release --example overload_answers
//! ```

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tokio::sync::Semaphore;
use tower::{ServiceBuilder, service_fn};
use tower_spillway::{
    BoxError, Overloaded, Priority, Reason,
    priority::{PriorityLayer, RouteTable},
    retry_after::RetryAfterLayer,
};

const SLOTS: usize = 4;
const SERVICE_TIME: Duration = Duration::from_millis(300);

/// The application: four slots; below `Critical`, no waiting for one.
async fn handle(
    slots: Arc<Semaphore>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let priority = req
        .extensions()
        .get::<Priority>()
        .copied()
        .unwrap_or_default();
    let _slot = match Arc::clone(&slots).try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) if priority < Priority::Critical => {
            // Busy: refuse, and say honestly when a slot frees up.
            return Err(Overloaded::new(Reason::Shed)
                .with_priority(priority)
                .with_retry_after(SERVICE_TIME)
                .into());
        }
        Err(_) => slots.acquire_owned().await?,
    };
    tokio::time::sleep(SERVICE_TIME).await;
    Ok(Response::new(Full::new(Bytes::from_static(b"done\n"))))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let slots = Arc::new(Semaphore::new(SLOTS));
    let handler = service_fn(move |req| handle(Arc::clone(&slots), req));
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        .layer(PriorityLayer::new(
            RouteTable::new()
                .route(Some(Method::POST), "/payments", Priority::Critical)
                .route(None, "/analytics", Priority::Low),
        ))
        .service(handler);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    println!("server on http://{addr} with {SLOTS} slots of {SERVICE_TIME:?}\n");

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut calls = Vec::new();
    for i in 0..10 {
        let (method, path) = if i % 3 == 0 {
            (Method::POST, "/payments")
        } else {
            (Method::POST, "/analytics")
        };
        let client = client.clone();
        calls.push(tokio::spawn(async move {
            let req = Request::builder()
                .method(method.clone())
                .uri(format!("http://{addr}{path}"))
                .body(Empty::new())?;
            let res = client.request(req).await?;
            let status = res.status();
            let retry_after = res
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((format!("{method} {path}"), status, retry_after, body))
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for call in calls {
        let (what, status, retry_after, body) = call.await??;
        println!("{what:<16} -> {status}");
        if let Some(secs) = retry_after {
            println!("    retry-after: {secs}");
            println!("    {}", String::from_utf8_lossy(&body));
        }
    }

    // A gRPC call refused the same way: a trailers-only response.
    let grpc = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let busy: Vec<_> = (0..SLOTS)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let req = Request::post(format!("http://{addr}/payments")).body(Empty::new())?;
                Ok::<_, BoxError>(client.request(req).await?.into_body().collect().await?)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let req = Request::post(format!("http://{addr}/analytics.Events/Record"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))?;
    let res = grpc.request(req).await?;
    println!("\ngRPC /analytics.Events/Record -> HTTP {}", res.status());
    for name in ["grpc-status", "grpc-message", "grpc-retry-pushback-ms"] {
        if let Some(v) = res.headers().get(name) {
            println!("    {name}: {}", v.to_str().unwrap_or("?"));
        }
    }
    for b in busy {
        b.await??;
    }
    Ok(())
}
