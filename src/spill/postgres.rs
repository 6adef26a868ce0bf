//! The fleet spill store: one PostgreSQL table that many instances share.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls, Row};

use super::{
    codec::{self, DONE, FAILED, QUEUED, RUNNING},
    job::{Enqueued, Finish, Job, JobId, JobStatus, NewJob},
    store::{Bounds, SpillStore, StoreError, StoreFuture, StoreStats},
};

/// How many connections each store keeps.
const POOL: usize = 4;

/// The advisory lock key every instance takes to create the table, and to
/// check the bounds and insert ("spillway" in ASCII, truncated).
const LOCK_KEY: i64 = 0x7370_696c_6c77_6179;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spill_jobs (
    seq BIGSERIAL PRIMARY KEY,
    tag BIGINT NOT NULL,
    idempotency_key TEXT UNIQUE,
    priority BIGINT NOT NULL,
    state BIGINT NOT NULL,
    method TEXT NOT NULL,
    uri TEXT NOT NULL,
    headers BYTEA NOT NULL,
    body BYTEA NOT NULL,
    bytes BIGINT NOT NULL,
    enqueued_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    not_before_ms BIGINT NOT NULL DEFAULT 0,
    lease_until_ms BIGINT,
    finished_ms BIGINT,
    result_status BIGINT,
    result_body BYTEA,
    error TEXT
);
CREATE INDEX IF NOT EXISTS spill_jobs_ready ON spill_jobs (state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS spill_jobs_live ON spill_jobs (state, enqueued_ms)
    INCLUDE (bytes) WHERE state IN (0, 1);
CREATE TABLE IF NOT EXISTS spill_tally (
    id INT PRIMARY KEY CHECK (id = 1),
    jobs BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
INSERT INTO spill_tally VALUES (1, 0, 0) ON CONFLICT (id) DO NOTHING;
";

/// Counts the queued and running jobs again into the tally; run at connect,
/// so rows changed by hand are counted right from the next start.
const RECOUNT: &str = "
UPDATE spill_tally SET (jobs, bytes) = (
    SELECT COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT FROM spill_jobs WHERE state IN (0, 1)
) WHERE id = 1;
";

/// The fleet [`SpillStore`]: one PostgreSQL table that many instances share
/// as one queue.
///
/// # What it promises
///
/// - **Durability** is the server's: [`enqueue`](SpillStore::enqueue)
///   returns once its transaction is committed, and a batch of jobs is one
///   transaction (one WAL flush).
/// - **Leases** are taken with `FOR UPDATE SKIP LOCKED`, so instances leasing
///   at once never get the same job and never wait on each other; a job
///   whose lease ended (its instance died) is queued again by the next lease
///   on any instance. Only the attempt holding the lease can
///   [`finish`](SpillStore::finish) it.
/// - **Bounds are fleet-wide.** A one-row tally counts the queued and
///   running jobs of every instance; each enqueue locks it, so two instances
///   cannot both take the last place, and a finish lowers it in the same
///   transaction that ends the job. It is counted again from the table at
///   each [`connect`](Self::connect).
///
/// # Differences from the SQLite store (`SqliteStore`)
///
/// The SQLite store keeps its figures in memory and serves one process;
/// this one keeps them in the database, so every instance sees the others'
/// jobs, at the cost of a locked row for the bounds and a query for
/// [`stats`](SpillStore::stats). Its
/// operations are async on the runtime (no blocking pool); it keeps a few
/// connections and reconnects one that broke on its next use.
///
/// Times are wall-clock milliseconds since the UNIX epoch, read on each
/// instance: keep the fleet's clocks in sync to well within a lease.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Arc<Pool>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

struct Pool {
    url: String,
    slots: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
}

fn db(err: tokio_postgres::Error) -> StoreError {
    StoreError::new(err)
}

impl Pool {
    /// A connection of its own for one operation, connecting again if the
    /// one in its slot broke.
    async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = Some(connect(&self.url).await?);
        }
        Ok(slot)
    }
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let handle = tokio::runtime::Handle::try_current().map_err(StoreError::new)?;
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(db)?;
    // The connection ends (and the client reports `is_closed`) when the
    // server goes away; the pool then connects again.
    handle.spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The client in a slot [`Pool::client`] filled.
fn conn<'a>(slot: &'a mut MutexGuard<'_, Option<Client>>) -> Result<&'a mut Client, StoreError> {
    slot.as_mut()
        .ok_or_else(|| StoreError::new("no PostgreSQL connection"))
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host/db`,
    /// without TLS) and creates the table if it is missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut client = connect(url).await?;
        let tx = client.transaction().await.map_err(db)?;
        // Instances starting together would race on `CREATE ... IF NOT
        // EXISTS` (it is not atomic in PostgreSQL).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(db)?;
        tx.batch_execute(SCHEMA).await.map_err(db)?;
        tx.batch_execute(RECOUNT).await.map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut slots = vec![Mutex::new(Some(client))];
        slots.extend((1..POOL).map(|_| Mutex::new(None)));
        Ok(Self {
            pool: Arc::new(Pool {
                url: url.to_owned(),
                slots,
                next: AtomicUsize::new(0),
            }),
        })
    }

    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        bounds: Bounds,
    ) -> Result<Vec<Enqueued>, StoreError> {
        let now = codec::wall_ms();
        let mut slot = self.pool.client().await?;
        let client = conn(&mut slot)?;
        let tx = client.transaction().await.map_err(db)?;
        // Bounds are the fleet's: enqueues from every instance lock the
        // tally row in turn, so its counts stay true until this commit;
        // finishes lower it under the same lock, and leases leave it be.
        // The lock, the oldest queued job (from the index) and the keys
        // already stored are sent together: the connection pipelines them,
        // and the server runs them in order.
        let keys: Vec<&str> = jobs
            .iter()
            .filter_map(|job| job.idempotency_key.as_deref())
            .collect();
        let (tally, oldest, known) = futures_util::future::try_join3(
            tx.query_one(
                "SELECT jobs, bytes FROM spill_tally WHERE id = 1 FOR UPDATE",
                &[],
            ),
            tx.query_opt(
                "SELECT enqueued_ms FROM spill_jobs WHERE state = 0 \
                 ORDER BY enqueued_ms LIMIT 1",
                &[],
            ),
            tx.query(
                "SELECT seq, tag, idempotency_key FROM spill_jobs \
                 WHERE idempotency_key = ANY($1)",
                &[&keys],
            ),
        )
        .await
        .map_err(db)?;
        let mut count = codec::count(tally.try_get(0).map_err(db)?);
        let mut bytes = codec::count(tally.try_get(1).map_err(db)?);
        let oldest: Option<i64> = oldest.map(|row| row.try_get(0)).transpose().map_err(db)?;
        let too_old = oldest.is_some_and(|at| codec::elapsed(at, now) > bounds.max_age);
        let mut stored: HashMap<String, JobId> = HashMap::with_capacity(known.len());
        for row in known {
            stored.insert(row.try_get(2).map_err(db)?, id_of(&row)?);
        }
        // What becomes of each job, decided in order so the bounds hold as
        // they would one job at a time.
        let mut plans = Vec::with_capacity(jobs.len());
        let mut rows = NewRows::default();
        let mut in_batch: HashMap<&str, usize> = HashMap::new();
        for job in &jobs {
            let key = job.idempotency_key.as_deref();
            if let Some(id) = key.and_then(|k| stored.get(k)) {
                plans.push(Plan::Answer(Enqueued::Existing(*id)));
                continue;
            }
            if let Some(&row) = key.and_then(|k| in_batch.get(k)) {
                plans.push(Plan::SameAs(row));
                continue;
            }
            let weight = job.weight();
            if too_old
                || count >= bounds.max_jobs
                || bytes.saturating_add(weight) > bounds.max_bytes
            {
                plans.push(Plan::Answer(Enqueued::Full));
                continue;
            }
            count += 1;
            bytes += weight;
            let row = rows.push(job, weight);
            if let Some(k) = key {
                in_batch.insert(k, row);
            }
            plans.push(Plan::Insert(row));
        }
        // Every new job, and the tally's rise by those that went in, in one
        // statement: one round trip for the batch.
        let mut seqs: HashMap<i64, i64> = HashMap::with_capacity(rows.tags.len());
        if !rows.tags.is_empty() {
            let inserted = tx
                .query(
                    "WITH new AS ( \
                       INSERT INTO spill_jobs (tag, idempotency_key, priority, state, method, \
                       uri, headers, body, bytes, enqueued_ms) \
                       SELECT t.tag, t.key, t.priority, 0, t.method, t.uri, t.headers, t.body, \
                       t.bytes, $9 \
                       FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], \
                       $5::TEXT[], $6::BYTEA[], $7::BYTEA[], $8::BIGINT[]) \
                       AS t(tag, key, priority, method, uri, headers, body, bytes) \
                       ON CONFLICT (idempotency_key) DO NOTHING RETURNING seq, tag, bytes \
                     ), counted AS ( \
                       UPDATE spill_tally SET jobs = jobs + (SELECT COUNT(*) FROM new), \
                       bytes = bytes + (SELECT COALESCE(SUM(bytes), 0) FROM new) WHERE id = 1 \
                     ) \
                     SELECT seq, tag FROM new",
                    &[
                        &rows.tags,
                        &rows.keys,
                        &rows.priorities,
                        &rows.methods,
                        &rows.uris,
                        &rows.headers,
                        &rows.bodies,
                        &rows.weights,
                        &now,
                    ],
                )
                .await
                .map_err(db)?;
            for row in inserted {
                seqs.insert(row.try_get(1).map_err(db)?, row.try_get(0).map_err(db)?);
            }
        }
        let mut new_ids = Vec::with_capacity(rows.tags.len());
        for (i, tag) in rows.tags.iter().enumerate() {
            let id = match seqs.get(tag) {
                Some(seq) => Enqueued::New(JobId {
                    seq: *seq as u64,
                    tag: *tag as u64,
                }),
                // The key arrived meanwhile (from a writer that does not
                // take the lock): the job is that one.
                None => {
                    let row = tx
                        .query_one(
                            "SELECT seq, tag FROM spill_jobs WHERE idempotency_key = $1",
                            &[&rows.keys[i]],
                        )
                        .await
                        .map_err(db)?;
                    Enqueued::Existing(id_of(&row)?)
                }
            };
            new_ids.push(id);
        }
        let answers = plans
            .into_iter()
            .map(|plan| match plan {
                Plan::Answer(answer) => answer,
                Plan::Insert(row) => new_ids[row],
                Plan::SameAs(row) => match new_ids[row] {
                    Enqueued::New(id) | Enqueued::Existing(id) => Enqueued::Existing(id),
                    Enqueued::Full => Enqueued::Full,
                },
            })
            .collect();
        tx.commit().await.map_err(db)?;
        Ok(answers)
    }

    async fn lease(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = codec::wall_ms();
        let until = now.saturating_add(codec::ms(lease));
        let mut slot = self.pool.client().await?;
        let client = conn(&mut slot)?;
        // Leases that ended belong to drains that died: queue their jobs again.
        client
            .execute(
                "UPDATE spill_jobs SET state = 0, lease_until_ms = NULL \
                 WHERE state = 1 AND lease_until_ms <= $1",
                &[&now],
            )
            .await
            .map_err(db)?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "UPDATE spill_jobs SET state = 1, attempts = attempts + 1, lease_until_ms = $3 \
                 WHERE seq IN (SELECT seq FROM spill_jobs WHERE state = 0 AND not_before_ms <= $1 \
                 ORDER BY priority DESC, seq LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING seq, tag, priority, method, uri, headers, body, idempotency_key, \
                 attempts, enqueued_ms",
                &[&now, &max, &until],
            )
            .await
            .map_err(db)?;
        let mut jobs = rows
            .iter()
            .map(|row| job_of(row, now))
            .collect::<Result<Vec<_>, _>>()?;
        // `RETURNING` keeps no order.
        jobs.sort_by_key(|j| (std::cmp::Reverse(j.request.priority), j.id.seq));
        Ok(jobs)
    }

    /// Ends every attempt in one transaction: the updates are sent
    /// together (the connection pipelines them) and cost one commit.
    async fn finish_many(
        &self,
        endings: Vec<(JobId, u32, Finish)>,
    ) -> Result<Vec<bool>, StoreError> {
        if endings.is_empty() {
            return Ok(Vec::new());
        }
        let now = codec::wall_ms();
        let mut slot = self.pool.client().await?;
        let client = conn(&mut slot)?;
        let tx = client.transaction().await.map_err(db)?;
        let updates = endings
            .iter()
            .map(|(id, attempt, how)| finish_one(&tx, *id, *attempt, how, now));
        let ended = futures_util::future::try_join_all(updates).await?;
        // Jobs done or failed leave the bounds: the tally drops by them.
        let (jobs, bytes) = ended
            .iter()
            .filter_map(|e| e.freed)
            .fold((0i64, 0i64), |(n, b), w| (n + 1, b + w));
        if jobs > 0 {
            tx.execute(
                "UPDATE spill_tally SET jobs = jobs - $1, bytes = bytes - $2 WHERE id = 1",
                &[&jobs, &bytes],
            )
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(ended.into_iter().map(|e| e.changed).collect())
    }

    async fn status(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        let (seq, tag) = (id.seq as i64, id.tag as i64);
        let mut slot = self.pool.client().await?;
        let client = conn(&mut slot)?;
        let Some(row) = client
            .query_opt(
                "SELECT state, priority, attempts, result_status, result_body, error \
                 FROM spill_jobs WHERE seq = $1 AND tag = $2",
                &[&seq, &tag],
            )
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let state: i64 = row.try_get(0).map_err(db)?;
        let priority: i64 = row.try_get(1).map_err(db)?;
        let attempts = codec::attempts(row.try_get(2).map_err(db)?);
        Ok(Some(match state {
            QUEUED => {
                let ahead: i64 = client
                    .query_one(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM spill_jobs WHERE state = 0 \
                         AND (priority > $1 OR (priority = $1 AND seq < $2)) LIMIT $3) ahead",
                        &[&priority, &seq, &codec::AHEAD_CAP],
                    )
                    .await
                    .map_err(db)?
                    .try_get(0)
                    .map_err(db)?;
                JobStatus::Queued {
                    ahead: codec::count(ahead),
                    attempts,
                }
            }
            RUNNING => JobStatus::Running { attempts },
            DONE => {
                let status: Option<i64> = row.try_get(3).map_err(db)?;
                let body: Option<Vec<u8>> = row.try_get(4).map_err(db)?;
                JobStatus::Done {
                    status: status
                        .and_then(|s| u16::try_from(s).ok())
                        .and_then(|s| StatusCode::from_u16(s).ok())
                        .ok_or_else(|| StoreError::new("a done job without a valid status"))?,
                    body: Bytes::from(body.unwrap_or_default()),
                }
            }
            FAILED => JobStatus::Failed {
                attempts,
                reason: row
                    .try_get::<_, Option<String>>(5)
                    .map_err(db)?
                    .unwrap_or_default(),
            },
            _ => return Err(StoreError::new(format!("unknown job state {state}"))),
        }))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let now = codec::wall_ms();
        let mut slot = self.pool.client().await?;
        let client = conn(&mut slot)?;
        let rows = client
            .query(
                "SELECT state, priority, COUNT(*), COALESCE(SUM(bytes), 0)::BIGINT, \
                 MIN(enqueued_ms) FROM spill_jobs GROUP BY state, priority",
                &[],
            )
            .await
            .map_err(db)?;
        let mut stats = StoreStats::default();
        let mut oldest: Option<i64> = None;
        for row in rows {
            let state: i64 = row.try_get(0).map_err(db)?;
            let n = codec::count(row.try_get(2).map_err(db)?);
            match state {
                QUEUED => {
                    stats.queued[codec::priority(row.try_get(1).map_err(db)?)?.index()] += n;
                    let at: Option<i64> = row.try_get(4).map_err(db)?;
                    oldest = oldest.into_iter().chain(at).min();
                }
                RUNNING => stats.running += n,
                DONE => stats.done += n,
                FAILED => stats.failed += n,
                _ => return Err(StoreError::new(format!("unknown job state {state}"))),
            }
            if matches!(state, QUEUED | RUNNING) {
                stats.bytes += codec::count(row.try_get(3).map_err(db)?);
            }
        }
        stats.oldest_ms = oldest.map(|at| codec::count(now.saturating_sub(at)));
        Ok(stats)
    }

    async fn prune(&self, older_than: Duration) -> Result<u64, StoreError> {
        let cutoff = codec::wall_ms().saturating_sub(codec::ms(older_than));
        let mut slot = self.pool.client().await?;
        let client = conn(&mut slot)?;
        client
            .execute(
                "DELETE FROM spill_jobs WHERE state IN (2, 3) AND finished_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(db)
    }
}

/// What ending one attempt did.
struct Ended {
    /// The attempt held the job, and the job moved.
    changed: bool,
    /// The job's weight, when it left the live jobs (done or failed).
    freed: Option<i64>,
}

/// Ends attempt `attempt` of job `id` as `how` says, within `tx`.
async fn finish_one(
    tx: &tokio_postgres::Transaction<'_>,
    id: JobId,
    attempt: u32,
    how: &Finish,
    now: i64,
) -> Result<Ended, StoreError> {
    const GUARD: &str = "WHERE seq = $1 AND tag = $2 AND state = 1 AND attempts = $3";
    let (seq, tag, attempt) = (id.seq as i64, id.tag as i64, i64::from(attempt));
    let ended = match how {
        Finish::Done { status, body } => {
            let sql = format!(
                "UPDATE spill_jobs SET state = 2, result_status = $4, result_body = $5, \
                 finished_ms = $6, body = '', lease_until_ms = NULL {GUARD} RETURNING bytes"
            );
            let status = i64::from(status.as_u16());
            let row = tx
                .query_opt(&sql, &[&seq, &tag, &attempt, &status, &&body[..], &now])
                .await
                .map_err(db)?;
            left_live(row)?
        }
        Finish::Retry { after, counted } => {
            let sql = format!(
                "UPDATE spill_jobs SET state = 0, not_before_ms = $4, \
                 attempts = attempts - $5, lease_until_ms = NULL {GUARD}"
            );
            let not_before = now.saturating_add(codec::ms(*after));
            let back = i64::from(!counted);
            let changed = tx
                .execute(&sql, &[&seq, &tag, &attempt, &not_before, &back])
                .await
                .map_err(db)?;
            Ended {
                changed: changed > 0,
                freed: None,
            }
        }
        Finish::Failed { reason } => {
            let sql = format!(
                "UPDATE spill_jobs SET state = 3, error = $4, finished_ms = $5, body = '', \
                 lease_until_ms = NULL {GUARD} RETURNING bytes"
            );
            let row = tx
                .query_opt(&sql, &[&seq, &tag, &attempt, reason, &now])
                .await
                .map_err(db)?;
            left_live(row)?
        }
    };
    Ok(ended)
}

/// A done or failed update's answer: the job's weight if it moved.
fn left_live(row: Option<Row>) -> Result<Ended, StoreError> {
    let freed = row
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()
        .map_err(db)?;
    Ok(Ended {
        changed: freed.is_some(),
        freed,
    })
}

/// What an enqueue does with one job of its batch.
enum Plan {
    /// Answered without a row: a stored key, or the store is full.
    Answer(Enqueued),
    /// Row `n` of the batch's insert.
    Insert(usize),
    /// The same key as row `n`, earlier in the batch: that job.
    SameAs(usize),
}

/// The columns of a batch's new rows, as the arrays `UNNEST` takes.
#[derive(Default)]
struct NewRows {
    tags: Vec<i64>,
    keys: Vec<Option<String>>,
    priorities: Vec<i64>,
    methods: Vec<String>,
    uris: Vec<String>,
    headers: Vec<Vec<u8>>,
    bodies: Vec<Vec<u8>>,
    weights: Vec<i64>,
}

impl NewRows {
    /// Adds `job`'s row and returns its index. Tags are random; one that
    /// repeats within the batch is drawn again, so a returned row's tag
    /// names one job.
    fn push(&mut self, job: &NewJob, weight: u64) -> usize {
        let mut tag = fastrand::i64(..);
        while self.tags.contains(&tag) {
            tag = fastrand::i64(..);
        }
        self.tags.push(tag);
        self.keys.push(job.idempotency_key.clone());
        self.priorities.push(codec::priority_index(job.priority));
        self.methods.push(job.method.as_str().to_owned());
        self.uris.push(job.uri.to_string());
        self.headers.push(codec::encode_headers(&job.headers));
        self.bodies.push(job.body.to_vec());
        self.weights.push(codec::weight(weight));
        self.tags.len() - 1
    }
}

fn id_of(row: &Row) -> Result<JobId, StoreError> {
    let seq: i64 = row.try_get(0).map_err(db)?;
    let tag: i64 = row.try_get(1).map_err(db)?;
    Ok(JobId {
        seq: seq as u64,
        tag: tag as u64,
    })
}

fn job_of(row: &Row, now: i64) -> Result<Job, StoreError> {
    let headers: Vec<u8> = row.try_get(5).map_err(db)?;
    let body: Vec<u8> = row.try_get(6).map_err(db)?;
    let method: String = row.try_get(3).map_err(db)?;
    let enqueued: i64 = row.try_get(9).map_err(db)?;
    Ok(Job {
        id: id_of(row)?,
        request: NewJob {
            priority: codec::priority(row.try_get(2).map_err(db)?)?,
            method: codec::method(&method)?,
            uri: codec::uri(row.try_get(4).map_err(db)?)?,
            headers: codec::decode_headers(&headers)?,
            body: Bytes::from(body),
            idempotency_key: row.try_get(7).map_err(db)?,
        },
        attempt: codec::attempts(row.try_get(8).map_err(db)?),
        waited: codec::elapsed(enqueued, now),
    })
}

impl SpillStore for PostgresStore {
    fn enqueue(&self, jobs: Vec<NewJob>, bounds: Bounds) -> StoreFuture<'_, Vec<Enqueued>> {
        Box::pin(self.enqueue(jobs, bounds))
    }

    fn lease(&self, max: usize, lease: Duration) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(self.lease(max, lease))
    }

    fn finish(&self, id: JobId, attempt: u32, how: Finish) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let changed = self.finish_many(vec![(id, attempt, how)]).await?;
            Ok(changed.first().copied().unwrap_or(false))
        })
    }

    fn finish_many(&self, endings: Vec<(JobId, u32, Finish)>) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(PostgresStore::finish_many(self, endings))
    }

    fn status(&self, id: JobId) -> StoreFuture<'_, Option<JobStatus>> {
        Box::pin(self.status(id))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.stats())
    }

    fn prune(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        Box::pin(PostgresStore::prune(self, older_than))
    }
}
