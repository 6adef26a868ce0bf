//! The stack itself: copy `app` (with `routes` and `operational`) into your service.
//!
//! Shared by `examples/axum_stack.rs` and `tests/stacks.rs`, so the tests run
//! exactly what the example serves.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    body::Body,
    body::Bytes,
    extract::State,
    http::{Method, Request, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tower_spillway::{
    Priority,
    deadline::{Deadline, DeadlineLayer},
    degrade::{DegradeHandle, DegradeLayer, Fallback, LoadLevel},
    limit::{AdaptiveLimitLayer, Gradient, LimitHandle},
    priority::{HeaderPriority, PriorityLayer, RouteTable},
    shed::{Adaptive, Bypass, HealthChecks, PriorityShedLayer, ShedHandle},
};

use crate::backend::Database;

/// What the command line sets.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database's write slots.
    pub capacity: usize,
    /// The database's time per write.
    pub service: Duration,
    /// Let callers set their priority with `x-priority` (raise it too).
    pub trust_priority_header: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: 20,
            service: Duration::from_millis(20),
            trust_priority_header: false,
        }
    }
}

/// The handles a `/stats` endpoint, a metrics exporter or a test reads.
#[derive(Debug, Clone)]
pub struct Handles {
    pub limit: LimitHandle,
    pub shed: ShedHandle,
    pub level: DegradeHandle,
    pub db: Arc<Database>,
}

impl Handles {
    /// The figures `/stats` serves.
    pub fn stats(&self) -> Value {
        json!({
            "limit": self.limit.snapshot(),
            "shed": self.shed.snapshot(),
            "load": self.level.snapshot(),
            "database": { "slots": self.db.slot_count(), "busy": self.db.busy() },
        })
    }
}

/// Which route is worth what. Everything else is `Default`.
pub fn routes() -> RouteTable {
    RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/orders", Priority::High)
        .route(None, "/likes", Priority::Default)
        .route(None, "/analytics", Priority::Low)
        .route(None, "/recommendations", Priority::Low)
}

/// The longest a caller may take to send its request body (less if its
/// deadline is sooner).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body: axum's default limit.
const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Requests no overload layer may refuse or delay: health checks (the
/// load balancer must not think a busy instance is dead), `/stats`, the
/// `/dashboard` that draws it and `/metrics` (they are needed most when the
/// service is busiest).
pub fn operational(req: &Request<Body>) -> bool {
    HealthChecks.bypass(req) || matches!(req.uri().path(), "/stats" | "/dashboard" | "/metrics")
}

/// The whole application: the protected routes and the operational ones.
pub fn app(config: &Config) -> (Router, Handles) {
    let db = Database::new(config.capacity, config.service);

    // The adaptive limit, every number a default: it finds the database's
    // capacity from latency; at the limit requests wait by priority, and
    // what could not be served in time (or before the caller's deadline) is
    // refused at once.
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        // The `layer` label of its metrics (`/metrics` in `metrics.rs`).
        .name("db")
        .http()
        .build();
    let limit_handle = limit.handle();

    // The shedder refuses, before the limiter's lock, the priorities the
    // limiter forecasts it would refuse, with a `Retry-After` of how long
    // the backlog takes to drain.
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit_handle.clone())
        .bypass(operational)
        .http()
        .build();
    let shed_handle = shed.handle();

    // A client may always lower its own priority with `x-priority`; raising
    // it needs an operator who trusts every caller.
    let classify = HeaderPriority::with_base(routes()).trusted(config.trust_priority_header);

    // The load level, from what the limiter and the shedder see. Every
    // request carries it (`Extension<LoadLevel>`); while it is elevated or
    // worse, `/recommendations` answers `[]` without a database call.
    let level = DegradeHandle::builder(limit_handle.clone())
        .source(shed_handle.clone())
        .build()
        .expect("the default level settings are valid");
    let degrade = DegradeLayer::builder(level.clone())
        .fallback(
            Method::GET,
            "/recommendations",
            LoadLevel::Elevated,
            Fallback::json("[]"),
        )
        .build()
        .expect("the fallbacks are valid");

    let handles = Handles {
        limit: limit_handle,
        shed: shed_handle,
        level,
        db: Arc::clone(&db),
    };

    // The limiter wraps only the routes that use the database, and only
    // once their body has arrived ...
    let protected = Router::new()
        .route("/payments", post(write))
        .route("/orders", post(write))
        .route("/likes", post(write))
        .route("/analytics", post(write))
        .route("/recommendations", get(recommendations))
        .with_state(db)
        .layer(limit)
        .layer(middleware::from_fn(read_body));
    // ... so health checks and stats never wait for a permit; the shedder
    // lets them through by `operational`.
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/stats", get(stats))
        .route("/dashboard", get(dashboard))
        .with_state(handles.clone())
        .merge(protected)
        // The last layer is the outermost: classify first, then stamp the
        // load level (a fallback answer costs no permit), then shed.
        .layer(shed)
        .layer(degrade)
        .layer(PriorityLayer::new(classify))
        // A caller may say how long it will wait; off unless named.
        .layer(DeadlineLayer::new().header("x-request-timeout"));
    (app, handles)
}

/// Reads the request body (up to 2 MB, within [`BODY_TIMEOUT`]) before the
/// limiter: a permit stands for a database write, not for the caller's
/// upload. Were the body read under the permit, a caller that stalls its
/// body (slowloris) would hold the permit as long as it liked, and as many
/// such callers as the limit (10 to start with) would have every write
/// refused. Answers `413` past the size, `408` past the time.
async fn read_body(req: Request<Body>, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let within = parts
        .extensions
        .get::<Deadline>()
        .map_or(BODY_TIMEOUT, |d| d.remaining().min(BODY_TIMEOUT));
    match tokio::time::timeout(within, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            if too_large {
                StatusCode::PAYLOAD_TOO_LARGE.into_response()
            } else {
                StatusCode::BAD_REQUEST.into_response()
            }
        }
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

/// One database write; the answer says what the request was worth. The
/// request body (any, up to 2 MB) has been read by [`read_body`].
async fn write(
    State(db): State<Arc<Database>>,
    priority: Option<Extension<Priority>>,
    body: Bytes,
) -> Json<Value> {
    db.write().await;
    let priority = priority.map_or(Priority::Default, |Extension(p)| p);
    Json(json!({ "ok": true, "priority": priority.as_str(), "received_bytes": body.len() }))
}

/// Recommendations cost a database call; while the load level is elevated,
/// the `DegradeLayer` answers `[]` and this handler is not called.
async fn recommendations(State(db): State<Arc<Database>>) -> Json<Value> {
    db.write().await;
    Json(json!(["gift cards", "wool socks", "green tea"]))
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn stats(State(handles): State<Handles>) -> Json<Value> {
    Json(handles.stats())
}

/// The live page: one HTML file with its CSS and script inline, no external
/// assets, built into the binary. It polls `/stats` and draws the last five
/// minutes.
pub const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}
