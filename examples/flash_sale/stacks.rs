//! The three ways of serving the shop.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{error_handling::HandleErrorLayer, http::StatusCode};
use http::Method;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tower::{BoxError, ServiceBuilder};
use tower_spillway::{
    Priority,
    priority::{PriorityLayer, RouteTable},
    shed::{Adaptive, PriorityShedLayer},
};

use crate::backend::{Database, app};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Unprotected,
    Tower,
    Spillway,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::Unprotected, Scenario::Tower, Scenario::Spillway];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Unprotected => "unprotected",
            Scenario::Tower => "tower",
            Scenario::Spillway => "spillway",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Unprotected => "the app alone",
            Scenario::Tower => "LoadShed over ConcurrencyLimit(slots), HandleErrorLayer -> 503",
            Scenario::Spillway => {
                "PriorityLayer(routes) -> PriorityShed(adaptive) -> AdaptiveLimit(AIMD, priority queue)"
            }
        }
    }
}

/// A running server.
pub struct Served {
    pub addr: SocketAddr,
    /// Reads the stack's adaptive concurrency limit, if it has one.
    pub limit: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Served {
    pub fn shutdown(self) {
        self.accept.abort();
    }
}

pub async fn serve(scenario: Scenario, db: Arc<Database>) -> std::io::Result<Served> {
    // The tower stack is sized to the database exactly: the best a static
    // limit can do, and generous to it.
    let slots = db.slot_count();
    match scenario {
        Scenario::Unprotected => spawn(app(db), None).await,
        Scenario::Tower => {
            let svc = ServiceBuilder::new()
                // axum's usual way of answering a tower layer's errors.
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .load_shed()
                .concurrency_limit(slots)
                .service(app(db));
            spawn(svc, None).await
        }
        Scenario::Spillway => {
            let (app, limit) = spillway(app(db));
            spawn(app, Some(limit)).await
        }
    }
}

/// This crate's stack, as `examples/axum_stack.rs` builds it.
fn spillway(app: axum::Router) -> (axum::Router, Arc<dyn Fn() -> usize + Send + Sync>) {
    let routes = RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/orders", Priority::High)
        .route(None, "/likes", Priority::Default)
        .route(None, "/analytics", Priority::Low);
    let limit = crate::protect::adaptive_limit(20, 1.25);
    let handle = limit.handle();
    // The shedder steers on the limiter's queue: when requests wait longer
    // than the target, it refuses the lowest (priority, cohort) slots first.
    // A 100 ms target lets a useful backlog of the best waiters (about 40
    // here) stand in the limiter's priority queue, so the database never
    // idles while the shedder turns the bulk of the spike away. (With the
    // default 20 ms the shedder sometimes cut so deep that the database
    // idled: 90 % goodput instead of 98 %.)
    let adaptive = Adaptive::builder()
        .target(Duration::from_millis(100))
        .build()
        .expect("a valid adaptive configuration");
    let shed = PriorityShedLayer::adaptive(adaptive)
        .signal(handle.clone())
        .http();
    let app = app
        .layer(limit)
        .layer(shed)
        .layer(PriorityLayer::new(routes));
    (app, Arc::new(move || handle.limit()))
}

async fn spawn<S>(
    svc: S,
    limit: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
) -> std::io::Result<Served>
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<axum::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // No hidden limit in the transport: every request reaches the stack.
                builder.http2().max_concurrent_streams(100_000);
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(Served {
        addr,
        limit,
        accept,
    })
}
