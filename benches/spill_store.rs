//! Which spill store a bench runs on: SQLite (a file in the temporary
//! directory, the default) or PostgreSQL (`SPILL_STORE=postgres` and
//! `DATABASE_URL`; its `spill_jobs` table and tally are emptied before each
//! case).

use tower_spillway::spill::{
    DeferrableRoutes, PostgresStore, SpillLayer, SpillLayerBuilder, SqliteStore,
};

/// The benches' runtime: one thread, timers, and sockets for PostgreSQL.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .expect("a runtime")
}

pub enum Kind {
    Sqlite,
    Postgres(String),
}

/// A fresh, empty store; a SQLite store's directory is removed when this is
/// dropped, so it must outlive the layer.
pub struct Store {
    builder: Option<SpillLayerBuilder<DeferrableRoutes>>,
    _dir: Option<TempDir>,
}

impl Store {
    /// The layer's builder over this store (once).
    pub fn layer(&mut self) -> SpillLayerBuilder<DeferrableRoutes> {
        self.builder.take().expect("one layer per store")
    }
}

impl Kind {
    pub fn from_env() -> Self {
        match std::env::var("SPILL_STORE").as_deref() {
            Ok("postgres") => {
                let url =
                    std::env::var("DATABASE_URL").expect("SPILL_STORE=postgres needs DATABASE_URL");
                Kind::Postgres(url)
            }
            Ok("sqlite") | Err(_) => Kind::Sqlite,
            Ok(other) => panic!("SPILL_STORE={other}: sqlite or postgres"),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Kind::Sqlite => {
                "SQLite, a file in the temporary directory (WAL, synchronous = FULL)".into()
            }
            Kind::Postgres(url) => {
                let host = url.rsplit('@').next().unwrap_or(url);
                format!("PostgreSQL at {host}")
            }
        }
    }

    pub async fn fresh(&self, name: &str) -> Store {
        match self {
            Kind::Sqlite => {
                let dir = TempDir::new(name);
                let store = SqliteStore::open(dir.0.join("spill.db")).expect("the store opens");
                Store {
                    builder: Some(SpillLayer::builder(store)),
                    _dir: Some(dir),
                }
            }
            Kind::Postgres(url) => {
                let store = PostgresStore::connect(url)
                    .await
                    .expect("PostgreSQL answers");
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("PostgreSQL answers");
                let connection = tokio::spawn(connection);
                client
                    .batch_execute(
                        "TRUNCATE spill_jobs; UPDATE spill_tally SET jobs = 0, bytes = 0",
                    )
                    .await
                    .expect("the table empties");
                drop(client);
                let _ = connection.await;
                Store {
                    builder: Some(SpillLayer::builder(store)),
                    _dir: None,
                }
            }
        }
    }
}

/// A directory under the system's temporary one, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spillway-bench-{name}-{}-{}",
            std::process::id(),
            next_case()
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A number that differs between the cases of one run.
fn next_case() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
