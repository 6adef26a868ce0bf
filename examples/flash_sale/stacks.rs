//! The four ways of serving the shop.

use std::{net::SocketAddr, sync::Arc};

use axum::{error_handling::HandleErrorLayer, http::StatusCode};
use http::Method;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    service::TowerToHyperService,
};
use tower::{BoxError, ServiceBuilder};
use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Gradient},
    priority::{PriorityLayer, RouteTable},
    shed::{Adaptive, PriorityShedLayer},
    spill::{DeferrableRoutes, SpillHandle, SpillLayer, SqliteStore},
};

use crate::backend::{Database, app};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Unprotected,
    Tower,
    Spillway,
    /// The crate's stack with `SpillLayer` over it: the deferrable tiers
    /// (`/likes`, `/analytics`) the stack would refuse are stored and
    /// answered `202`, then replayed through the same stack.
    SpillwaySpill,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Unprotected,
        Scenario::Tower,
        Scenario::Spillway,
        Scenario::SpillwaySpill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Unprotected => "unprotected",
            Scenario::Tower => "tower",
            Scenario::Spillway => "spillway",
            Scenario::SpillwaySpill => "spillway+spill",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::Unprotected => "the app alone",
            Scenario::Tower => "LoadShed over ConcurrencyLimit(slots), HandleErrorLayer -> 503",
            Scenario::Spillway => {
                "PriorityLayer(routes) -> PriorityShed(adaptive) -> AdaptiveLimit(AIMD, priority queue)"
            }
            Scenario::SpillwaySpill => {
                "PriorityLayer(routes) -> SpillLayer(/likes, /analytics; SQLite) -> the spillway stack, and its drain"
            }
        }
    }
}

/// A running server.
pub struct Served {
    pub addr: SocketAddr,
    /// Reads the stack's adaptive concurrency limit, if it has one.
    pub limit: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
    /// The stack's own figures, if it has any.
    pub stats: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The spill layer's handle, if the stack spills.
    pub spill: Option<SpillHandle>,
    accept: tokio::task::JoinHandle<()>,
    /// The drain and the store's directory, if the stack spills.
    drain: Option<(tokio::task::JoinHandle<()>, StoreDir)>,
}

impl Served {
    pub fn shutdown(self) {
        self.accept.abort();
        if let Some((drain, _dir)) = self.drain {
            // The directory goes with `_dir`, after the drain has stopped.
            drain.abort();
        }
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
            let (app, limit, stats) = spillway(app(db), None);
            let mut served = spawn(app, Some(limit)).await?;
            served.stats = Some(stats);
            Ok(served)
        }
        Scenario::SpillwaySpill => {
            let dir = StoreDir::new()?;
            let store = SqliteStore::open(dir.0.join("spill.db")).map_err(std::io::Error::other)?;
            let spill = SpillLayer::builder(store)
                .deferrable(
                    DeferrableRoutes::new()
                        .route(None, "/likes")
                        .route(None, "/analytics"),
                )
                .build()
                .map_err(std::io::Error::other)?;
            let handle = spill.handle();
            let (app, limit, stats) = spillway(app(db), Some(spill));
            // The drain replays into the whole app, the spill layer included,
            // so replays queue behind live traffic in the same limiter.
            let drain = handle.drain(app.clone()).spawn();
            let mut served = spawn(app, Some(limit)).await?;
            served.stats = Some(stats);
            served.spill = Some(handle);
            served.drain = Some((drain, dir));
            Ok(served)
        }
    }
}

/// This crate's stack, as the README shows it: the route table, and every
/// other number a default.
#[allow(clippy::type_complexity)]
/// With `spill`, the spill layer sits between the route table and the
/// shedder, so it sees each request's priority and every refusal below.
fn spillway(
    app: axum::Router,
    spill: Option<SpillLayer>,
) -> (
    axum::Router,
    Arc<dyn Fn() -> usize + Send + Sync>,
    Arc<dyn Fn() -> String + Send + Sync>,
) {
    let routes = RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/orders", Priority::High)
        .route(None, "/likes", Priority::Default)
        .route(None, "/analytics", Priority::Low);
    // The limit finds the database's capacity from latency; at the limit,
    // requests wait by priority, and what could not be served in time is
    // refused at once.
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let handle = limit.handle();
    // The shedder refuses, before the limiter's lock, the tiers the limiter
    // forecasts it would refuse anyway.
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(handle.clone())
        .http()
        .build();
    let shed_handle = shed.handle();
    let app = app.layer(limit).layer(shed);
    let app = match spill {
        Some(spill) => app.layer(spill),
        None => app,
    };
    let app = app.layer(PriorityLayer::new(routes));
    let stats = {
        let handle = handle.clone();
        Arc::new(move || format!("{:?}\n{:?}", handle.snapshot(), shed_handle.snapshot()))
    };
    (app, Arc::new(move || handle.limit()), stats)
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
        stats: None,
        spill: None,
        accept,
        drain: None,
    })
}

/// The spill store's directory, removed when the run ends.
struct StoreDir(std::path::PathBuf);

impl StoreDir {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "flash-sale-spill-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
