//! The embedded store: one SQLite file in WAL mode with full durability.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    codec::{self, DONE, FAILED, QUEUED, RUNNING},
    job::{Enqueued, Finish, Job, JobId, JobStatus, NewJob},
    store::{Bounds, SpillStore, StoreError, StoreFuture, StoreStats},
};

/// Spilled requests in one SQLite file, in WAL mode with
/// `synchronous = FULL`: a job is on disk (fsynced) before its `202`, and
/// survives the process being killed or the machine losing power.
///
/// One connection serves every operation, each on tokio's blocking pool, so
/// the runtime never waits on the disk; the layer's group commits make that
/// connection write many jobs per transaction. Leases are rows marked
/// running until a wall-clock instant, so a job whose process died is
/// replayed by the next process that opens the file. For many instances
/// sharing one queue, use a store on a shared database.
#[derive(Clone)]
pub struct SqliteStore {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

struct State {
    conn: Connection,
    /// Counts and bytes by state, kept exact beside the table (recounted at
    /// open) so bound checks and `stats` need no scan.
    tally: Tally,
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    queued: [u64; 4],
    running: u64,
    bytes: u64,
    done: u64,
    failed: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spill_jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tag INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    priority INTEGER NOT NULL,
    state INTEGER NOT NULL,
    method TEXT NOT NULL,
    uri TEXT NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    bytes INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before_ms INTEGER NOT NULL DEFAULT 0,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    finished_ms INTEGER,
    result_status INTEGER,
    result_body BLOB,
    error TEXT
);
CREATE INDEX IF NOT EXISTS spill_jobs_next ON spill_jobs (state, priority DESC, seq);
";

fn db(err: rusqlite::Error) -> StoreError {
    StoreError::new(err)
}

impl SqliteStore {
    /// Opens (or creates) the store in the file at `path`. Jobs left
    /// running by a process that died are replayed once their lease ends.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::with(Connection::open(path).map_err(db)?)
    }

    /// A store in memory: nothing survives the process. For tests and
    /// trials.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::with(Connection::open_in_memory().map_err(db)?)
    }

    fn with(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let tally = recount(&conn)?;
        Ok(Self {
            state: Arc::new(Mutex::new(State { conn, tally })),
        })
    }

    /// Runs `op` on the connection, on the blocking pool.
    fn run<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> Result<T, StoreError> + Send + 'static,
    {
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || op(&mut crate::sync::lock(&state)))
                .await
                .map_err(StoreError::new)?
        })
    }
}

fn recount(conn: &Connection) -> Result<Tally, StoreError> {
    let mut tally = Tally::default();
    let mut stmt = conn
        .prepare("SELECT state, priority, COUNT(*), COALESCE(SUM(bytes), 0) FROM spill_jobs GROUP BY state, priority")
        .map_err(db)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .map_err(db)?;
    for row in rows {
        let (state, priority, n, bytes) = row.map_err(db)?;
        let n = codec::count(n);
        match state {
            QUEUED => tally.queued[codec::priority(priority)?.index()] += n,
            RUNNING => tally.running += n,
            DONE => tally.done += n,
            FAILED => tally.failed += n,
            _ => return Err(StoreError::new(format!("a job in unknown state {state}"))),
        }
        if state == QUEUED || state == RUNNING {
            tally.bytes += codec::count(bytes);
        }
    }
    Ok(tally)
}

impl Tally {
    fn waiting(&self) -> u64 {
        self.queued.iter().sum::<u64>() + self.running
    }
}

/// When the oldest queued job was stored. Within a priority the queue's
/// head (its least `seq`) is its oldest job, so four index seeks find it;
/// `MIN(enqueued_ms)` over every queued row would scan the whole backlog.
fn oldest_queued_ms(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let mut head = conn
        .prepare_cached(
            "SELECT enqueued_ms FROM spill_jobs WHERE state = ?1 AND priority = ?2 ORDER BY seq LIMIT 1",
        )
        .map_err(db)?;
    let mut oldest: Option<i64> = None;
    for priority in crate::Priority::ALL {
        let at = head
            .query_row(params![QUEUED, codec::priority_index(priority)], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(db)?;
        oldest = match (oldest, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(oldest)
}

fn enqueue(
    state: &mut State,
    jobs: Vec<NewJob>,
    bounds: Bounds,
) -> Result<Vec<Enqueued>, StoreError> {
    let now = codec::wall_ms();
    let mut tally = state.tally;
    let tx = state.conn.transaction().map_err(db)?;
    let too_old =
        oldest_queued_ms(&tx)?.is_some_and(|oldest| codec::elapsed(oldest, now) > bounds.max_age);
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        if let Some(key) = &job.idempotency_key {
            let existing = tx
                .query_row(
                    "SELECT seq, tag FROM spill_jobs WHERE idempotency_key = ?1",
                    [key],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()
                .map_err(db)?;
            if let Some((seq, tag)) = existing {
                answers.push(Enqueued::Existing(id_of(seq, tag)));
                continue;
            }
        }
        let weight = job.weight();
        let full = too_old
            || tally.waiting() >= bounds.max_jobs
            || tally.bytes.saturating_add(weight) > bounds.max_bytes;
        if full {
            answers.push(Enqueued::Full);
            continue;
        }
        let tag = fastrand::u64(..);
        tx.execute(
            "INSERT INTO spill_jobs (tag, idempotency_key, priority, state, method, uri, headers, body, bytes, enqueued_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                tag as i64,
                job.idempotency_key,
                codec::priority_index(job.priority),
                QUEUED,
                job.method.as_str(),
                job.uri.to_string(),
                codec::encode_headers(&job.headers),
                &job.body[..],
                codec::weight(weight),
                now,
            ],
        )
        .map_err(db)?;
        let seq = tx.last_insert_rowid();
        tally.queued[job.priority.index()] += 1;
        tally.bytes += weight;
        answers.push(Enqueued::New(id_of(seq, tag as i64)));
    }
    tx.commit().map_err(db)?;
    state.tally = tally;
    Ok(answers)
}

fn id_of(seq: i64, tag: i64) -> JobId {
    JobId {
        seq: codec::count(seq),
        tag: tag as u64,
    }
}

/// Queues again the running jobs whose lease has ended.
fn reclaim(tx: &Transaction<'_>, tally: &mut Tally, now: i64) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare("UPDATE spill_jobs SET state = ?1 WHERE state = ?2 AND lease_until_ms <= ?3 RETURNING priority")
        .map_err(db)?;
    let rows = stmt
        .query_map(params![QUEUED, RUNNING, now], |r| r.get::<_, i64>(0))
        .map_err(db)?;
    for priority in rows {
        let priority = codec::priority(priority.map_err(db)?)?;
        tally.running = tally.running.saturating_sub(1);
        tally.queued[priority.index()] += 1;
    }
    Ok(())
}

fn lease(state: &mut State, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
    let now = codec::wall_ms();
    let mut tally = state.tally;
    let tx = state.conn.transaction().map_err(db)?;
    reclaim(&tx, &mut tally, now)?;
    let mut jobs = Vec::new();
    {
        let mut stmt = tx
            .prepare(
                "UPDATE spill_jobs SET state = ?1, attempts = attempts + 1, lease_until_ms = ?2
                 WHERE seq IN (SELECT seq FROM spill_jobs WHERE state = ?3 AND not_before_ms <= ?4
                               ORDER BY priority DESC, seq LIMIT ?5)
                 RETURNING seq, tag, priority, method, uri, headers, body, enqueued_ms, attempts, idempotency_key",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(
                params![
                    RUNNING,
                    now.saturating_add(codec::ms(lease)),
                    QUEUED,
                    now,
                    max as i64
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Vec<u8>>(5)?,
                        r.get::<_, Vec<u8>>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, i64>(8)?,
                        r.get::<_, Option<String>>(9)?,
                    ))
                },
            )
            .map_err(db)?;
        for row in rows {
            let (seq, tag, priority, method, uri, headers, body, enqueued_ms, attempts, key) =
                row.map_err(db)?;
            let priority = codec::priority(priority)?;
            tally.queued[priority.index()] = tally.queued[priority.index()].saturating_sub(1);
            tally.running += 1;
            jobs.push(Job {
                id: id_of(seq, tag),
                request: NewJob {
                    priority,
                    method: codec::method(&method)?,
                    uri: codec::uri(uri)?,
                    headers: codec::decode_headers(&headers)?,
                    body: body.into(),
                    idempotency_key: key,
                },
                attempt: codec::attempts(attempts),
                waited: codec::elapsed(enqueued_ms, now),
            });
        }
    }
    // RETURNING gives rows in no promised order: replay in the store's.
    jobs.sort_by_key(|j| (std::cmp::Reverse(j.request.priority), j.id.seq));
    tx.commit().map_err(db)?;
    state.tally = tally;
    Ok(jobs)
}

fn finish_many(
    state: &mut State,
    endings: Vec<(JobId, u32, Finish)>,
) -> Result<Vec<bool>, StoreError> {
    let now = codec::wall_ms();
    let mut tally = state.tally;
    let tx = state.conn.transaction().map_err(db)?;
    let mut answers = Vec::with_capacity(endings.len());
    for (id, attempt, how) in endings {
        answers.push(finish(&tx, &mut tally, now, id, attempt, how)?);
    }
    tx.commit().map_err(db)?;
    state.tally = tally;
    Ok(answers)
}

/// Ends one attempt inside `tx`.
fn finish(
    tx: &Transaction<'_>,
    tally: &mut Tally,
    now: i64,
    id: JobId,
    attempt: u32,
    how: Finish,
) -> Result<bool, StoreError> {
    let held = tx
        .query_row(
            "SELECT priority, bytes FROM spill_jobs WHERE seq = ?1 AND tag = ?2 AND state = ?3 AND attempts = ?4",
            params![id.seq as i64, id.tag as i64, RUNNING, attempt],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()
        .map_err(db)?;
    let Some((priority, bytes)) = held else {
        return Ok(false);
    };
    let (priority, bytes) = (codec::priority(priority)?, codec::count(bytes));
    tally.running = tally.running.saturating_sub(1);
    match how {
        Finish::Done { status, body } => {
            tx.execute(
                "UPDATE spill_jobs SET state = ?1, finished_ms = ?2, result_status = ?3, result_body = ?4,
                 body = x'', headers = x'', bytes = 0 WHERE seq = ?5",
                params![DONE, now, status.as_u16(), &body[..], id.seq as i64],
            )
            .map_err(db)?;
            tally.done += 1;
            tally.bytes = tally.bytes.saturating_sub(bytes);
        }
        Finish::Failed { reason } => {
            tx.execute(
                "UPDATE spill_jobs SET state = ?1, finished_ms = ?2, error = ?3,
                 body = x'', headers = x'', bytes = 0 WHERE seq = ?4",
                params![FAILED, now, reason, id.seq as i64],
            )
            .map_err(db)?;
            tally.failed += 1;
            tally.bytes = tally.bytes.saturating_sub(bytes);
        }
        Finish::Retry { after, counted } => {
            tx.execute(
                "UPDATE spill_jobs SET state = ?1, not_before_ms = ?2, attempts = attempts - ?3 WHERE seq = ?4",
                params![QUEUED, now.saturating_add(codec::ms(after)), i64::from(!counted), id.seq as i64],
            )
            .map_err(db)?;
            tally.queued[priority.index()] += 1;
        }
    }
    Ok(true)
}

fn status(state: &mut State, id: JobId) -> Result<Option<JobStatus>, StoreError> {
    let conn = &state.conn;
    let row = conn
        .query_row(
            "SELECT state, priority, attempts, result_status, result_body, error FROM spill_jobs WHERE seq = ?1 AND tag = ?2",
            params![id.seq as i64, id.tag as i64],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, Option<u16>>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                    r.get::<_, Option<String>>(5)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((job_state, priority, attempts, result_status, result_body, error)) = row else {
        return Ok(None);
    };
    let attempts = codec::attempts(attempts);
    Ok(Some(match job_state {
        QUEUED => {
            let ahead: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM spill_jobs WHERE state = ?1
                     AND (priority > ?2 OR (priority = ?2 AND seq < ?3)) LIMIT ?4)",
                    params![QUEUED, priority, id.seq as i64, codec::AHEAD_CAP],
                    |r| r.get(0),
                )
                .map_err(db)?;
            JobStatus::Queued {
                ahead: codec::count(ahead),
                attempts,
            }
        }
        RUNNING => JobStatus::Running { attempts },
        DONE => JobStatus::Done {
            status: http::StatusCode::from_u16(result_status.unwrap_or(0))
                .unwrap_or(http::StatusCode::OK),
            body: result_body.unwrap_or_default().into(),
        },
        FAILED => JobStatus::Failed {
            attempts,
            reason: error.unwrap_or_default(),
        },
        other => return Err(StoreError::new(format!("a job in unknown state {other}"))),
    }))
}

fn stats(state: &mut State) -> Result<StoreStats, StoreError> {
    let now = codec::wall_ms();
    let oldest = oldest_queued_ms(&state.conn)?;
    let t = state.tally;
    Ok(StoreStats {
        queued: t.queued,
        running: t.running,
        bytes: t.bytes,
        done: t.done,
        failed: t.failed,
        oldest_ms: oldest.map(|o| codec::elapsed(o, now).as_millis() as u64),
    })
}

fn prune(state: &mut State, older_than: Duration) -> Result<u64, StoreError> {
    let before = codec::wall_ms().saturating_sub(codec::ms(older_than));
    let mut tally = state.tally;
    let tx = state.conn.transaction().map_err(db)?;
    let mut removed = 0;
    for (which, count) in [(DONE, &mut tally.done), (FAILED, &mut tally.failed)] {
        let n = tx
            .execute(
                "DELETE FROM spill_jobs WHERE state = ?1 AND finished_ms < ?2",
                params![which, before],
            )
            .map_err(db)? as u64;
        *count = count.saturating_sub(n);
        removed += n;
    }
    tx.commit().map_err(db)?;
    state.tally = tally;
    Ok(removed)
}

impl SpillStore for SqliteStore {
    fn enqueue(&self, jobs: Vec<NewJob>, bounds: Bounds) -> StoreFuture<'_, Vec<Enqueued>> {
        self.run(move |s| enqueue(s, jobs, bounds))
    }

    fn lease(&self, max: usize, duration: Duration) -> StoreFuture<'_, Vec<Job>> {
        self.run(move |s| lease(s, max, duration))
    }

    fn finish(&self, id: JobId, attempt: u32, how: Finish) -> StoreFuture<'_, bool> {
        self.run(move |s| Ok(finish_many(s, vec![(id, attempt, how)])?[0]))
    }

    fn finish_many(&self, endings: Vec<(JobId, u32, Finish)>) -> StoreFuture<'_, Vec<bool>> {
        self.run(move |s| finish_many(s, endings))
    }

    fn status(&self, id: JobId) -> StoreFuture<'_, Option<JobStatus>> {
        self.run(move |s| status(s, id))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        self.run(stats)
    }

    fn prune(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        self.run(move |s| prune(s, older_than))
    }
}

#[cfg(test)]
mod tests;
