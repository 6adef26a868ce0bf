//! A shop whose likes survive a spike: the overload stack with a
//! `SpillLayer` over a SQLite file.
//!
//! `POST /likes` is deferrable: while the stack would refuse it, it is
//! stored in `--spill-db` and answered `202 Accepted` with a `Location`; a
//! drain replays it through the same stack once the database has room. The
//! handler applies each like once, keyed by its `Idempotency-Key`, in a
//! ledger (`--ledger`, another SQLite file), so a like replayed twice (its
//! process died between the effect and the store's record) still counts
//! once. `POST /payments` is Critical and never stored.
//!
//! ```text
//! cargo run --release --example spill_shop -- \
//!     [--addr 127.0.0.1:3000] [--spill-db spill.db] [--ledger ledger.db] [--capacity 4] [--service-ms 20]
//!
//! curl -i -X POST -H 'idempotency-key: like-1' localhost:3000/likes
//! curl localhost:3000/jobs/<id from the Location>
//! curl localhost:3000/stats
//! ```
//!
//! Kill it at any moment (even with SIGKILL) and start it again on the same
//! files: every like answered `202` is applied once the drain catches up.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tower_spillway::{
    limit::{AdaptiveLimitLayer, Gradient, LimitHandle},
    priority::{Priority, PriorityLayer, RouteTable},
    shed::{Adaptive, PriorityShedLayer},
    spill::{DeferrableRoutes, SpillHandle, SpillLayer, SqliteStore},
};

#[path = "flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "common/mod.rs"]
mod common;

use backend::Database;

struct Args {
    addr: SocketAddr,
    spill_db: PathBuf,
    ledger: PathBuf,
    capacity: usize,
    service: std::time::Duration,
}

fn args() -> Args {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        spill_db: PathBuf::from("spill.db"),
        ledger: PathBuf::from("ledger.db"),
        capacity: 4,
        service: std::time::Duration::from_millis(20),
    };
    common::parse_flags(usage, |flag, value| match flag {
        "--addr" => {
            args.addr = value()
                .parse()
                .unwrap_or_else(|_| usage("--addr HOST:PORT"))
        }
        "--spill-db" => args.spill_db = PathBuf::from(value()),
        "--ledger" => args.ledger = PathBuf::from(value()),
        "--capacity" => args.capacity = common::capacity(value(), usage),
        "--service-ms" => args.service = common::service_ms(value(), usage),
        "-h" | "--help" => usage(""),
        other => usage(&format!("unknown flag {other}")),
    });
    args
}

fn usage(error: &str) -> ! {
    common::exit_with_usage(
        error,
        "usage: spill_shop [--addr HOST:PORT] [--spill-db PATH] [--ledger PATH] [--capacity C] [--service-ms M]",
    )
}

/// Where each like takes effect once: a table keyed by the like's
/// `Idempotency-Key`, written with full durability before the answer.
#[derive(Clone)]
struct Ledger(Arc<Mutex<rusqlite::Connection>>);

impl Ledger {
    fn open(path: &PathBuf) -> rusqlite::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS likes (key TEXT PRIMARY KEY, replayed INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS calls (n INTEGER NOT NULL);",
        )?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    /// Applies the like `key`; `false` when it had been applied already.
    async fn apply(&self, key: String, replayed: bool) -> rusqlite::Result<bool> {
        let conn = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            conn.execute("INSERT INTO calls (n) VALUES (1)", [])?;
            let added = conn.execute(
                "INSERT INTO likes (key, replayed) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                rusqlite::params![key, replayed],
            )?;
            Ok(added == 1)
        })
        .await
        .unwrap_or(Err(rusqlite::Error::InvalidQuery))
    }

    fn counts(&self) -> (i64, i64, i64) {
        let conn = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let one = |sql: &str| {
            conn.query_row(sql, [], |r| r.get::<_, i64>(0))
                .unwrap_or(-1)
        };
        (
            one("SELECT COUNT(*) FROM likes"),
            one("SELECT COUNT(*) FROM likes WHERE replayed = 1"),
            one("SELECT COUNT(*) FROM calls"),
        )
    }
}

#[derive(Clone)]
struct Shop {
    db: Arc<Database>,
    ledger: Ledger,
    spill: SpillHandle,
    limit: LimitHandle,
}

fn app(db: Arc<Database>, ledger: Ledger, store: SqliteStore) -> (Router, SpillHandle) {
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit.handle())
        .bypass(|req: &axum::http::Request<axum::body::Body>| {
            req.uri().path() == "/stats" || req.uri().path().starts_with("/jobs/")
        })
        .http()
        .build();
    let spill = SpillLayer::builder(store)
        .deferrable(DeferrableRoutes::new().route(Some(Method::POST), "/likes"))
        .build()
        .expect("the spill settings are valid");
    let handle = spill.handle();
    let shop = Shop {
        db,
        ledger,
        spill: handle.clone(),
        limit: limit.handle(),
    };
    let routes = RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/likes", Priority::Default);
    let protected = Router::new()
        .route("/payments", post(payment))
        .route("/likes", post(like))
        .with_state(shop.clone())
        .layer(limit);
    let app = Router::new()
        .route("/stats", get(stats))
        .with_state(shop)
        .merge(protected)
        .layer(shed)
        .layer(spill)
        .layer(PriorityLayer::new(routes));
    (app, handle)
}

async fn payment(State(shop): State<Shop>) -> Json<Value> {
    shop.db.write().await;
    Json(json!({ "ok": true }))
}

/// One like, applied once per `Idempotency-Key` (a like without one is its
/// own).
async fn like(
    State(shop): State<Shop>,
    replay: Option<axum::Extension<tower_spillway::spill::Replay>>,
    headers: HeaderMap,
) -> Response {
    shop.db.write().await;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("anonymous-{}", fastrand::u64(..)), str::to_owned);
    match shop.ledger.apply(key, replay.is_some()).await {
        Ok(new) => Json(json!({ "ok": true, "new": new })).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn stats(State(shop): State<Shop>) -> Json<Value> {
    let store = shop.spill.store_stats().await.ok();
    let (likes, replayed, calls) = shop.ledger.counts();
    Json(json!({
        "spill": shop.spill.snapshot(),
        "store": store,
        "limit": shop.limit.snapshot(),
        "ledger": { "likes": likes, "replayed": replayed, "calls": calls },
        "database": { "slots": shop.db.slot_count(), "busy": shop.db.busy() },
    }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    common::init_tracing();
    let args = args();
    let store = SqliteStore::open(&args.spill_db).map_err(std::io::Error::other)?;
    let ledger = Ledger::open(&args.ledger).map_err(std::io::Error::other)?;
    let db = Database::new(args.capacity, args.service);
    let (app, spill) = app(db, ledger, store);
    // The drain replays stored likes through the whole app, so the limiter
    // paces them beside live traffic.
    let _drain = spill.drain(app.clone()).spawn();
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
