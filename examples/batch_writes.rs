//! Inserting rows one by one versus through `Batch`, into a real database.
//!
//! Every write pays a fixed cost (a statement, a commit, a round trip); a
//! batch pays it once for many rows. This example inserts N rows through a
//! `Batch` with batch sizes 1, 10, 100 and 1,000 and prints, for each, the
//! number of statements, rows per second and per-row latency.
//!
//! ```text
//! cargo run --release --example batch_writes                 # SQLite, 100,000 rows
//! cargo run --release --example batch_writes -- --rows 20000 --json out.json
//! cargo run --release --example batch_writes -- --postgres postgres://user:pw@127.0.0.1/db
//! DATABASE_URL=postgres://... cargo run --release --example batch_writes
//! ```
//!
//! SQLite writes to a file in a temporary directory (WAL journal,
//! `synchronous = NORMAL`; pass `--sync-full` to fsync every commit).
//! PostgreSQL gets one multi-row `INSERT` per batch (no TLS).
//! `--json PATH` writes `{ "backend", "rows", "runs": [ { "batch_size",
//! "rows_per_sec", "p50_ms", "p99_ms" } ] }`.

use std::{
    convert::Infallible,
    fmt::Write as _,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream::FuturesUnordered};
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_spillway::{
    BoxError,
    batch::{Batch, BatchConfig},
};

const SIZES: [usize; 4] = [1, 10, 100, 1000];

struct Args {
    rows: u64,
    postgres: Option<String>,
    json: Option<PathBuf>,
    sync_full: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rows: 100_000,
        postgres: std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()),
        json: None,
        sync_full: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rows" => {
                args.rows = it
                    .next()
                    .and_then(|v| v.replace('_', "").parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--rows needs a positive number")?;
            }
            "--postgres" => args.postgres = Some(it.next().ok_or("--postgres needs a URL")?),
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?.into()),
            "--sync-full" => args.sync_full = true,
            "-h" | "--help" => {
                println!(
                    "usage: batch_writes [--rows N] [--postgres URL] [--json PATH] [--sync-full]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// One row to insert.
#[derive(Debug, Clone)]
struct Row {
    id: i64,
    payload: String,
}

/// The per-row answer: one `Ok(())` per row of a committed batch.
type Answers = Vec<Result<(), Infallible>>;

struct Run {
    batch_size: usize,
    statements: u64,
    rows_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Drives `rows` inserts through `batch`, keeping enough calls in flight to
/// fill batches of `batch_size`, and measures each row's latency.
async fn drive(
    batch: Batch<Row, ()>,
    rows: u64,
    batch_size: usize,
) -> Result<(Duration, Vec<Duration>), BoxError> {
    let window = (batch_size * 2).max(64);
    let mut in_flight = FuturesUnordered::new();
    let mut latencies = Vec::with_capacity(rows as usize);
    let start = Instant::now();
    let mut next = 0u64;
    let mut handle = batch;
    while next < rows || !in_flight.is_empty() {
        while next < rows && in_flight.len() < window {
            let row = Row {
                id: next as i64,
                payload: format!("row {next}: {}", "x".repeat(32)),
            };
            next += 1;
            let fut = handle.ready().await?.call(row);
            let t0 = Instant::now();
            in_flight.push(async move { fut.await.map(|()| t0.elapsed()) });
        }
        if let Some(result) = in_flight.next().await {
            latencies.push(result?);
        }
    }
    Ok((start.elapsed(), latencies))
}

fn summarise(
    batch_size: usize,
    statements: u64,
    rows: u64,
    elapsed: Duration,
    mut lat: Vec<Duration>,
) -> Run {
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Run {
        batch_size,
        statements,
        rows_per_sec: rows as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn config(batch_size: usize) -> BatchConfig<Row> {
    BatchConfig::builder()
        .max_items(batch_size)
        .max_wait(Duration::from_millis(5))
        .queue_capacity((batch_size * 2).max(64))
        .build()
        .expect("valid batch configuration")
}

fn multi_row_insert(table: &str, n: usize, placeholder: impl Fn(usize) -> String) -> String {
    let mut sql = format!("INSERT INTO {table} (id, payload) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(
            sql,
            "({}, {})",
            placeholder(2 * i + 1),
            placeholder(2 * i + 2)
        );
    }
    sql
}

async fn sqlite(rows: u64, sync_full: bool) -> Result<Vec<Run>, BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "tower-spillway-batch-writes-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("rows.sqlite3");
    println!("SQLite database: {}", path.display());
    print_header();
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        if sync_full { "FULL" } else { "NORMAL" },
    )?;
    let conn = Arc::new(Mutex::new(conn));

    let mut runs = Vec::new();
    for batch_size in SIZES {
        conn.lock().unwrap().execute_batch(
            "DROP TABLE IF EXISTS rows; CREATE TABLE rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);",
        )?;
        let statements = Arc::new(AtomicU64::new(0));
        let insert = {
            let (conn, statements) = (conn.clone(), statements.clone());
            service_fn(move |batch: Vec<Row>| {
                let (conn, statements) = (conn.clone(), statements.clone());
                async move {
                    // One transaction and one multi-row INSERT per batch.
                    tokio::task::spawn_blocking(move || -> Result<Answers, BoxError> {
                        let mut conn = conn.lock().unwrap();
                        let tx = conn.transaction()?;
                        {
                            let sql = multi_row_insert("rows", batch.len(), |i| format!("?{i}"));
                            let mut stmt = tx.prepare_cached(&sql)?;
                            let params: Vec<&dyn rusqlite::ToSql> = batch
                                .iter()
                                .flat_map(|r| [&r.id as &dyn rusqlite::ToSql, &r.payload])
                                .collect();
                            stmt.execute(params.as_slice())?;
                        }
                        tx.commit()?;
                        statements.fetch_add(1, Ordering::Relaxed);
                        Ok(vec![Ok(()); batch.len()])
                    })
                    .await?
                }
            })
        };
        let batch = Batch::new(insert, config(batch_size));
        let (elapsed, latencies) = drive(batch, rows, batch_size).await?;
        let count: i64 = conn
            .lock()
            .unwrap()
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))?;
        let statements = statements.load(Ordering::Relaxed);
        runs.push(finish(
            batch_size, statements, rows, count, elapsed, latencies,
        ));
    }
    drop(conn);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(runs)
}

async fn postgres(url: &str, rows: u64) -> Result<Vec<Run>, BoxError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("postgres connection: {err}");
        }
    });
    let client = Arc::new(client);
    let table = format!("batch_writes_{}", std::process::id());
    print_header();

    let mut runs = Vec::new();
    for batch_size in SIZES {
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, payload TEXT NOT NULL)"
            ))
            .await?;
        let statements = Arc::new(AtomicU64::new(0));
        let insert = {
            let (client, statements, table) = (client.clone(), statements.clone(), table.clone());
            service_fn(move |batch: Vec<Row>| {
                let (client, statements, table) =
                    (client.clone(), statements.clone(), table.clone());
                async move {
                    let sql = multi_row_insert(&table, batch.len(), |i| format!("${i}"));
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = batch
                        .iter()
                        .flat_map(|r| {
                            [
                                &r.id as &(dyn tokio_postgres::types::ToSql + Sync),
                                &r.payload,
                            ]
                        })
                        .collect();
                    client.execute(sql.as_str(), &params).await?;
                    statements.fetch_add(1, Ordering::Relaxed);
                    Ok::<Answers, BoxError>(vec![Ok(()); batch.len()])
                }
            })
        };
        let batch = Batch::new(insert, config(batch_size));
        let (elapsed, latencies) = drive(batch, rows, batch_size).await?;
        let count: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        let statements = statements.load(Ordering::Relaxed);
        runs.push(finish(
            batch_size, statements, rows, count, elapsed, latencies,
        ));
    }
    client.batch_execute(&format!("DROP TABLE {table}")).await?;
    Ok(runs)
}

fn print_header() {
    println!(
        "{:>10} {:>11} {:>12} {:>11} {:>11}",
        "batch size", "statements", "rows/s", "p50 (ms)", "p99 (ms)"
    );
}

/// A run's figures, once `count` rows in the table show that every row was
/// written exactly once; printed as its line of the table.
fn finish(
    batch_size: usize,
    statements: u64,
    rows: u64,
    count: i64,
    elapsed: Duration,
    latencies: Vec<Duration>,
) -> Run {
    assert_eq!(count as u64, rows, "every row written exactly once");
    let run = summarise(batch_size, statements, rows, elapsed, latencies);
    print_run(&run);
    run
}

fn print_run(run: &Run) {
    println!(
        "{:>10} {:>11} {:>12.0} {:>11.3} {:>11.3}",
        run.batch_size,
        run.statements,
        run.rows_per_sec,
        run.p50.as_secs_f64() * 1e3,
        run.p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let backend = if args.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!("inserting {} rows into {backend}", args.rows);
    let runs = match &args.postgres {
        Some(url) => postgres(url, args.rows).await?,
        None => sqlite(args.rows, args.sync_full).await?,
    };
    if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
        println!(
            "batches of {} write {:.1}x faster than single rows",
            last.batch_size,
            last.rows_per_sec / first.rows_per_sec
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "backend": backend,
            "rows": args.rows,
            "runs": runs.iter().map(|r| serde_json::json!({
                "batch_size": r.batch_size,
                "rows_per_sec": r.rows_per_sec,
                "p50_ms": r.p50.as_secs_f64() * 1e3,
                "p99_ms": r.p99.as_secs_f64() * 1e3,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
