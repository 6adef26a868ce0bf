//! A three-tier view counter: app servers → a regional aggregator over HTTP →
//! SQLite.
//!
//! Each view is an event `(page, 1)`. Writing one row per view is one write
//! per event; here every app server merges views in memory with an
//! `Aggregate` and posts `{page: views}` to a regional server every 100 ms;
//! the regional server merges those posts in another `Aggregate` and writes
//! to SQLite every 500 ms, one upsert per page. The example prints the events
//! in, the writes at each tier, the reduction factor, and checks that SQLite
//! holds exactly the number of views sent.
//!
//! ```text
//! cargo run --release --example view_counter
//! cargo run --release --example view_counter -- --events 5000000 --pages 2000 --apps 8 --seconds 5
//! ```

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_spillway::{
    BoxError,
    aggregate::{Aggregate, AggregateConfig},
};

type Views = HashMap<String, u64>;

struct Args {
    events: u64,
    pages: u64,
    apps: usize,
    seconds: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 1_000_000,
        pages: 500,
        apps: 4,
        seconds: 3.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| {
            it.next()
                .and_then(|v| v.replace('_', "").parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or(format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--events" => args.events = number("--events")?,
            "--pages" => args.pages = number("--pages")?,
            "--apps" => args.apps = number("--apps")? as usize,
            "--seconds" => args.seconds = number("--seconds")? as f64,
            "-h" | "--help" => {
                println!("usage: view_counter [--events N] [--pages P] [--apps A] [--seconds S]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// The bottom tier: one transaction per flush, one upsert per page.
fn sqlite_store(
    conn: Arc<Mutex<rusqlite::Connection>>,
    transactions: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
) -> impl Service<Views, Response = (), Error = BoxError, Future: Send> + Send + 'static {
    service_fn(move |views: Views| {
        let (conn, transactions, rows) = (conn.clone(), transactions.clone(), rows.clone());
        async move {
            tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
                let mut conn = conn.lock().unwrap();
                let tx = conn.transaction()?;
                {
                    let mut upsert = tx.prepare_cached(
                        "INSERT INTO page_views (page, views) VALUES (?1, ?2) \
                         ON CONFLICT (page) DO UPDATE SET views = views + excluded.views",
                    )?;
                    for (page, views) in &views {
                        upsert.execute(rusqlite::params![page, *views as i64])?;
                    }
                }
                tx.commit()?;
                transactions.fetch_add(1, Ordering::Relaxed);
                rows.fetch_add(views.len() as u64, Ordering::Relaxed);
                Ok(())
            })
            .await?
        }
    })
}

/// The regional server's handler: merge an app tier's flush.
async fn receive(
    State(regional): State<Aggregate<String, u64>>,
    Json(views): Json<Views>,
) -> StatusCode {
    match ServiceExt::<Views>::oneshot(regional, views).await {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The app tier's inner service: post the merged map to the regional server.
fn regional_client(
    url: String,
    posts: Arc<AtomicU64>,
) -> impl Service<Views, Response = (), Error = BoxError, Future: Send> + Send + 'static {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    service_fn(move |views: Views| {
        let (client, url, posts) = (client.clone(), url.clone(), posts.clone());
        async move {
            let body = serde_json::to_vec(&views)?;
            let req = http::Request::post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let res = client.request(req).await?;
            posts.fetch_add(1, Ordering::Relaxed);
            if !res.status().is_success() {
                return Err(format!("regional tier answered {}", res.status()).into());
            }
            Ok::<(), BoxError>(())
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;

    // Tier 3: SQLite in a temporary directory.
    let dir = std::env::temp_dir().join(format!(
        "tower-spillway-view-counter-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let conn = rusqlite::Connection::open(dir.join("views.sqlite3"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; DROP TABLE IF EXISTS page_views; \
         CREATE TABLE page_views (page TEXT PRIMARY KEY, views INTEGER NOT NULL);",
    )?;
    let conn = Arc::new(Mutex::new(conn));
    let (transactions, rows) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Tier 2: the regional aggregator behind an axum server on loopback.
    let regional_config = AggregateConfig::builder()
        .interval(Duration::from_millis(500))
        .max_keys(100_000)
        .build()?;
    let regional = Aggregate::new(
        sqlite_store(conn.clone(), transactions.clone(), rows.clone()),
        regional_config,
    );
    let app = Router::new()
        .route("/views", post(receive))
        .with_state(regional.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/views", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Tier 1: app servers, each with its own aggregator posting to the region.
    let posts = Arc::new(AtomicU64::new(0));
    let app_config = AggregateConfig::builder()
        .interval(Duration::from_millis(100))
        .max_keys(10_000)
        .build()?;
    let apps: Vec<Aggregate<String, u64>> = (0..args.apps)
        .map(|_| Aggregate::new(regional_client(url.clone(), posts.clone()), app_config))
        .collect();

    // The view stream: skewed towards popular pages, spread over `--seconds`
    // (3 by default) so that the intervals fire.
    let start = Instant::now();
    let per_app = args.events / args.apps as u64;
    let mut producers = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let mut app = app.clone();
        let events = if i == 0 {
            per_app + args.events % args.apps as u64
        } else {
            per_app
        };
        let pages = args.pages;
        let duration = Duration::from_secs_f64(args.seconds);
        let page_names: Vec<String> = (0..pages).map(|p| format!("/page/{p}")).collect();
        producers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(i as u64);
            for n in 0..events {
                let x = rng.f64();
                let page = ((x * x * x) * pages as f64) as usize;
                let page = page_names[page.min(page_names.len() - 1)].clone();
                ServiceExt::<(String, u64)>::ready(&mut app).await?;
                Service::<(String, u64)>::call(&mut app, (page, 1)).await?;
                if n % 1_000 == 999 {
                    // Pace the stream evenly over the run.
                    let done = (n + 1) as f64 / events as f64;
                    tokio::time::sleep_until(start + duration.mul_f64(done)).await;
                }
            }
            Ok::<(), BoxError>(())
        }));
    }
    for producer in producers {
        producer.await??;
    }
    // Flush the app tier (each waits for its last post), then the region.
    for app in &apps {
        app.shutdown().await;
    }
    regional.shutdown().await;
    let elapsed = start.elapsed();
    server.abort();

    let app_flushes: u64 = apps.iter().map(|a| a.stats().flushes).sum();
    let app_keys: u64 = apps.iter().map(|a| a.stats().keys_flushed).sum();
    let stored: i64 = conn.lock().unwrap().query_row(
        "SELECT COALESCE(SUM(views), 0) FROM page_views",
        [],
        |r| r.get(0),
    )?;

    let events = args.events;
    let row_writes = rows.load(Ordering::Relaxed);
    println!(
        "{events} views of {} pages through {} app servers in {:.2?}",
        args.pages, args.apps, elapsed
    );
    println!();
    println!("{:<34} {:>12} {:>14}", "tier", "writes", "reduction");
    println!(
        "{:<34} {:>12} {:>13}x",
        "events in (one write per view)", events, 1
    );
    println!(
        "{:<34} {:>12} {:>13.0}x",
        "app tier → region (HTTP posts)",
        posts.load(Ordering::Relaxed),
        events as f64 / app_flushes.max(1) as f64
    );
    println!("{:<34} {:>12}", "  pages in those posts", app_keys);
    println!(
        "{:<34} {:>12} {:>13.0}x",
        "region → SQLite (transactions)",
        transactions.load(Ordering::Relaxed),
        events as f64 / transactions.load(Ordering::Relaxed).max(1) as f64
    );
    println!(
        "{:<34} {:>12} {:>13.0}x",
        "  rows upserted",
        row_writes,
        events as f64 / row_writes.max(1) as f64
    );
    println!();
    println!("views in SQLite: {stored} (sent: {events})");
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    if stored as u64 != events {
        return Err(format!("lost views: stored {stored}, sent {events}").into());
    }
    Ok(())
}
