//! Checkpoints of the store's write-ahead log, on a thread of their own.
//!
//! SQLite checkpoints automatically: the commit that takes the log past
//! 1,000 pages copies it into the database file and syncs that file before
//! it returns. The spills waiting on that commit wait for the copy too, a
//! few milliseconds every few thousand jobs, which is the tail of the time
//! to the `202`. So the store's connection never checkpoints; this thread
//! does, on its own connection, without blocking the writer (a passive
//! checkpoint copies what no reader still needs and lets commits go on).

use std::{
    path::Path,
    sync::{Arc, Weak},
    time::Duration,
};

use rusqlite::Connection;

use crate::spill::StoreError;

/// How often the thread checkpoints.
const EVERY: Duration = Duration::from_millis(100);
/// Past this many pages in the log (64 MiB), the next checkpoint waits for
/// the writer and starts the log over. A passive one never does: under a
/// steady stream of commits the log never stands still long enough to be
/// copied whole, so without this it would grow without bound.
const RESTART_AT: i64 = 16 * 1024;

/// Alive while the store is: the thread stops when it can no longer upgrade
/// its `Weak` to this.
pub(super) struct Checkpointer {
    _alive: Arc<()>,
}

impl Checkpointer {
    /// Turns off `conn`'s own checkpoints and starts the thread on a second
    /// connection to `path`.
    pub(super) fn start(conn: &Connection, path: &Path) -> Result<Self, StoreError> {
        let own = Connection::open(path).map_err(StoreError::new)?;
        own.busy_timeout(Duration::from_secs(5))
            .map_err(StoreError::new)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(StoreError::new)?;
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("spillway-sqlite-checkpoint".into())
            .spawn(move || run(&own, &watch, &path))
            .map_err(StoreError::new)?;
        Ok(Self { _alive: alive })
    }
}

fn run(conn: &Connection, alive: &Weak<()>, _path: &Path) {
    let mut restart = false;
    while alive.strong_count() > 0 {
        std::thread::sleep(EVERY);
        let mode = if restart { "RESTART" } else { "PASSIVE" };
        // (busy, pages in the log, pages copied); an error (the file went
        // away, the disk is full) is tried again on the next round.
        let pages = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
            row.get::<_, i64>(1)
        });
        restart = match pages {
            Ok(pages) => pages >= RESTART_AT,
            Err(_err) => {
                #[cfg(feature = "tracing")]
                tracing::warn!(
                    path = %_path.display(),
                    error = %_err,
                    "spill: a SQLite checkpoint failed; trying again"
                );
                false
            }
        };
    }
}
