//! The Redis Streams source of a drain: a backlog another system produces,
//! consumed through a consumer group; see [`RedisStreamSource`].

mod builder;
mod connection;
mod entry;
mod reply;
mod scripts;
#[cfg(test)]
mod tests;

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use redis::Value;

use crate::Priority;

use self::connection::Connection;
use super::{
    job::{Finish, Job, JobId},
    source::{DiscardReason, Discarded, DrainSource, Ending},
    store::{StoreError, StoreFuture, StoreStats},
};

pub use builder::RedisStreamSourceBuilder;
pub use entry::StreamProducer;

/// The tiers in the order they are read: highest priority first. A tier's
/// place here is its number in the scripts (from 1).
const TIERS: [Priority; 4] = [
    Priority::Critical,
    Priority::High,
    Priority::Default,
    Priority::Low,
];

/// Entries an emergency discard skips per tier and call (a few calls a
/// second), so one script never blocks Redis for long.
const DISCARD_BATCH: usize = 10_000;
/// Entries counted at most when a group's lag is unknown.
const COUNT_CAP: usize = 10_000;

/// A [`DrainSource`] reading a Redis stream per priority through a consumer
/// group: the seed's "source queue as overflow buffer". Another system
/// produces requests onto the streams; a [`Drain`](super::Drain) replays them
/// into the application at the pace its limiter admits, and while it
/// throttles the backlog waits on Redis, not in this process.
///
/// # Producing
///
/// One stream per priority, `<name>:<priority>`: `orders:critical`,
/// `orders:high`, `orders:default`, `orders:low`. An entry is a request:
///
/// | field | |
/// |---|---|
/// | `uri` | path and query, required |
/// | `method` | optional, `POST` when absent |
/// | `header:<name>` | one header value; repeat the field for more |
/// | `body` | optional, the bytes as they are |
///
/// Other fields are ignored. [`StreamProducer`] builds the `XADD`; any
/// client can write the same entry (`XADD orders:low * uri /likes body
/// 42`). An `idempotency-key` header reaches the handler as in a spilled
/// replay, which matters here too: delivery is at least once.
///
/// # Consuming
///
/// The source reads through a consumer group (created with `MKSTREAM` at
/// the first lease if missing, from the start of the stream), highest
/// priority first: a lower tier is read only when the higher ones have
/// nothing waiting. It reads (`XREADGROUP`) only as many entries as the
/// drain has free replay slots, so when the application refuses replays
/// the drain's window shrinks to one, then stops leasing for the refusal's
/// hint, and the unread backlog stays on Redis (its group lag, in
/// [`DrainSnapshot::source`](super::DrainSnapshot::source)) instead of
/// becoming this process's memory.
///
/// - **Success** (any answer that is not a `5xx`): `XACK`, and only then.
/// - **Refused for overload**: the entry stays pending with this consumer;
///   its delivery count is put back (a refusal is not an attempt) and its
///   idle time set so that it is reclaimed when the refusal's hint ends.
/// - **Failed** (a `5xx`, an error, the lease's end): the entry stays
///   pending and is reclaimed after a backoff; Redis keeps one idle clock
///   per entry, so the backoff is at most the drain's
///   [`lease`](super::Drain::lease). Attempts are the entry's delivery
///   count; after the drain's [`max_attempts`](super::Drain::max_attempts)
///   the entry is copied to `<stream>:dead` (its fields, plus `dead:id`,
///   `dead:attempts`, `dead:reason`) and acknowledged, in one script. An
///   entry that is not a request (no `uri`, a malformed header) is
///   dead-lettered at once, with a warning logged.
/// - **Reclaim**: before reading anything new, each lease claims
///   (`XAUTOCLAIM`) the entries of its tier idle for longer than the
///   lease: those of consumers that died (a process killed between read
///   and ack), and retries whose backoff ended.
///
/// # Emergency discard
///
/// [`discard_older_than`](RedisStreamSourceBuilder::discard_older_than)
/// bounds a tier's wait: when its oldest unread entry is older than the
/// bound, the group's cursor is moved past the entries older than it
/// (`XGROUP SETID`, the seed's "discard = cursor advance"). Nothing is
/// processed half-way, since they were never read; they stay in the stream
/// until its retention trims them, so an operator can still read them. The
/// discard is counted in [`DrainSnapshot::discarded`](super::DrainSnapshot)
/// by priority and logged (`tracing`, warn), never silent. Pending entries
/// that the stream's own `MAXLEN` trimmed are counted and logged the same
/// way (reason `trimmed`).
///
/// # Redis down
///
/// Nothing panics. A lease that fails holds the drain for a backoff (250
/// ms doubling to 2 s), the connection is made again on the next try, a
/// consumer group that vanished (a Redis restarted without persistence) is
/// created again, and the drain resumes. Entries read and not acknowledged
/// when the connection broke are pending and reclaimed after the lease.
///
/// # Costs and limits
///
/// Every operation is one Lua script (one round trip, atomic): a lease
/// reclaims and reads every tier at once, the ends of concurrent replays
/// are written together. An idle drain asks about four times a second (no
/// blocking read: a script cannot block), plus its figures five times a
/// second. The scripts touch every tier's stream, so on a Redis Cluster
/// give the name a hash tag (`{orders}`) to keep them in one slot. Redis 7
/// or later (`XAUTOCLAIM`'s deleted entries, the group's lag).
///
/// # Example
///
/// ```no_run
/// # async fn run(app: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_spillway::{Priority, spill::{Drain, RedisStreamSource}};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379/")?;
/// let source = RedisStreamSource::builder(client, "orders")
///     .group("orders-drain")
///     .discard_older_than(Priority::Low, Duration::from_secs(600))
///     .build()?;
/// let drain = Drain::new(source, app).lease(Duration::from_secs(30));
/// let stats = drain.handle();
/// drain.spawn();
/// # let _ = stats.snapshot();
/// # Ok(()) }
/// ```
///
/// `REDIS_URL=redis://127.0.0.1:6379/ cargo run --release --example
/// stream_consumer -- --seconds 20` floods a stream
/// faster than a backend of known capacity and prints, once a second, the
/// backlog left on Redis, the drain's in-flight and its throughput.
pub struct RedisStreamSource {
    connection: Connection,
    name: String,
    group: String,
    consumer: String,
    /// The tiers' streams, then their dead-letter streams, in [`TIERS`]
    /// order: the scripts' KEYS.
    keys: Vec<String>,
    /// By [`Priority::index`].
    discard_after: [Option<Duration>; 4],
    dead_max_len: usize,
    scripts: scripts::Scripts,
    /// Where each tier's `XAUTOCLAIM` scan goes on, in [`TIERS`] order.
    cursors: Mutex<[String; 4]>,
    /// Pending entries found trimmed, not yet reported, by [`TIERS`] order.
    trimmed: [AtomicU64; 4],
    groups_ready: AtomicBool,
    /// The drain's lease: how idle an entry must be to be reclaimed.
    lease_ms: AtomicU64,
}

impl std::fmt::Debug for RedisStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamSource")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("discard_after", &self.discard_after)
            .finish_non_exhaustive()
    }
}

impl RedisStreamSource {
    /// A producer for this source's streams.
    pub fn producer(&self) -> StreamProducer {
        StreamProducer::new(self.name.clone())
    }

    /// This consumer's name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStreamSource {
    /// Runs a script invocation, with what a failure teaches: a broken
    /// connection is made again, a vanished group created again.
    async fn run(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let mut conn = self.connection.get().await?;
        match invocation.invoke_async::<Value>(&mut conn).await {
            Ok(value) => Ok(value),
            Err(err) => {
                if err.code() == Some("NOGROUP") {
                    self.groups_ready.store(false, Relaxed);
                }
                self.connection.failed(&err).await;
                Err(StoreError::new(err))
            }
        }
    }

    /// Creates the group on every tier's stream (and the stream) if missing.
    async fn ensure_groups(&self) -> Result<(), StoreError> {
        if self.groups_ready.load(Relaxed) {
            return Ok(());
        }
        let mut conn = self.connection.get().await?;
        for stream in &self.keys[..TIERS.len()] {
            let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match created {
                Ok(_) => {}
                Err(err) if err.code() == Some("BUSYGROUP") => {}
                Err(err) => {
                    self.connection.failed(&err).await;
                    return Err(StoreError::new(err));
                }
            }
        }
        self.groups_ready.store(true, Relaxed);
        Ok(())
    }

    async fn lease_entries(&self, max: usize, lease: Duration) -> Result<Vec<Job>, StoreError> {
        self.lease_ms.store(ms(lease), Relaxed);
        self.ensure_groups().await?;
        let cursors = crate::sync::lock(&self.cursors).clone();
        let mut invocation = self.scripts.lease.prepare_invoke();
        for stream in &self.keys[..TIERS.len()] {
            invocation.key(stream);
        }
        invocation
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(max)
            .arg(ms(lease));
        for cursor in &cursors {
            invocation.arg(cursor);
        }
        let [now, entries, cursors, trimmed] = reply::tuple(self.run(&invocation).await?)?;
        let now = reply::int(&now)?;
        let cursors = reply::array(cursors)?;
        if cursors.len() == TIERS.len() {
            let mut kept = crate::sync::lock(&self.cursors);
            for (kept, cursor) in kept.iter_mut().zip(&cursors) {
                *kept = reply::text(cursor)?;
            }
        }
        for (tier, gone) in reply::array(trimmed)?.iter().enumerate().take(TIERS.len()) {
            self.trimmed[tier].fetch_add(reply::count(gone)?, Relaxed);
        }
        let mut jobs = Vec::new();
        let mut malformed = Vec::new();
        for entry in reply::array(entries)? {
            let [tier, id, deliveries, fields] = reply::tuple(entry)?;
            let tier = usize::try_from(reply::int(&tier)?)
                .ok()
                .and_then(|t| t.checked_sub(1))
                .filter(|t| *t < TIERS.len())
                .ok_or_else(|| StoreError::new("the lease script named no tier"))?;
            let priority = TIERS[tier];
            let id = entry_id(&reply::text(&id)?)?;
            let attempt = u32::try_from(reply::int(&deliveries)?).unwrap_or(u32::MAX);
            let fields = reply::array(fields)?;
            let pairs = fields
                .chunks_exact(2)
                .map(|kv| Ok((reply::bytes(&kv[0])?, reply::bytes(&kv[1])?)))
                .collect::<Result<Vec<_>, StoreError>>()?;
            match entry::parse(pairs, priority) {
                Ok(request) => jobs.push(Job {
                    id,
                    request,
                    attempt,
                    waited: Duration::from_millis(
                        u64::try_from(now).unwrap_or(0).saturating_sub(id.seq),
                    ),
                }),
                Err(why) => {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(
                        stream = %self.keys[tier],
                        id = %entry_text(id),
                        reason = %why,
                        "stream entry is not a request; dead-lettered"
                    );
                    malformed.push(Ending {
                        id,
                        priority,
                        attempt,
                        how: Finish::Failed {
                            reason: format!("not a request: {why}"),
                        },
                    });
                }
            }
        }
        if !malformed.is_empty() {
            self.finish_endings(malformed).await?;
        }
        Ok(jobs)
    }

    async fn finish_endings(&self, endings: Vec<Ending>) -> Result<Vec<bool>, StoreError> {
        if endings.is_empty() {
            return Ok(Vec::new());
        }
        let n = endings.len();
        let mut invocation = self.scripts.finish.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.lease_ms.load(Relaxed))
            .arg(self.dead_max_len);
        for ending in endings {
            let tier = tier_of(ending.priority) + 1;
            invocation
                .arg(tier)
                .arg(entry_text(ending.id))
                .arg(ending.attempt);
            match ending.how {
                Finish::Done { .. } => invocation.arg("done").arg(0).arg(""),
                Finish::Retry { after, counted } => invocation
                    .arg("retry")
                    .arg(ms(after))
                    .arg(if counted { "counted" } else { "uncounted" }),
                Finish::Failed { reason } => invocation.arg("dead").arg(0).arg(reason),
            };
        }
        let answers = reply::array(self.run(&invocation).await?)?;
        if answers.len() != n {
            return Err(StoreError::new("the finish script answered a wrong count"));
        }
        answers
            .iter()
            .map(|held| Ok(reply::int(held)? == 1))
            .collect()
    }

    async fn read_stats(&self) -> Result<StoreStats, StoreError> {
        let mut invocation = self.scripts.stats.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        invocation.arg(&self.group).arg(COUNT_CAP);
        let [_now, tiers] = reply::tuple(self.run(&invocation).await?)?;
        let mut stats = StoreStats::default();
        for (tier, figures) in reply::array(tiers)?.into_iter().enumerate() {
            let Some(priority) = TIERS.get(tier) else {
                break;
            };
            let [unread, pending, oldest, dead] = reply::tuple(figures)?;
            stats.queued[priority.index()] = reply::count(&unread)?;
            stats.running += reply::count(&pending)?;
            stats.failed += reply::count(&dead)?;
            if let Ok(age) = u64::try_from(reply::int(&oldest)?) {
                stats.oldest_ms = Some(stats.oldest_ms.map_or(age, |o: u64| o.max(age)));
            }
        }
        Ok(stats)
    }

    async fn discard_old(&self) -> Result<Vec<Discarded>, StoreError> {
        if self.discard_after.iter().any(Option::is_some) {
            // A discard before the first read must see the group, or the
            // read would take what the discard should have skipped.
            self.ensure_groups().await?;
        }
        let mut discarded = Vec::new();
        for (tier, priority) in TIERS.iter().enumerate() {
            let gone = self.trimmed[tier].swap(0, Relaxed);
            if gone > 0 {
                discarded.push(Discarded {
                    priority: *priority,
                    jobs: gone,
                    oldest: Duration::ZERO,
                    why: DiscardReason::Trimmed,
                });
            }
            let Some(bound) = self.discard_after[priority.index()] else {
                continue;
            };
            let mut invocation = self.scripts.discard.prepare_invoke();
            invocation
                .key(&self.keys[tier])
                .arg(&self.group)
                .arg(ms(bound))
                .arg(DISCARD_BATCH);
            let [jobs, oldest] = reply::tuple(self.run(&invocation).await?)?;
            let jobs = reply::count(&jobs)?;
            if jobs > 0 {
                discarded.push(Discarded {
                    priority: *priority,
                    jobs,
                    oldest: Duration::from_millis(reply::count(&oldest)?),
                    why: DiscardReason::TooOld,
                });
            }
        }
        Ok(discarded)
    }
}

fn tier_of(priority: Priority) -> usize {
    TIERS.iter().position(|p| *p == priority).unwrap_or(0)
}

/// A stream entry id, `<ms>-<seq>`, as a [`JobId`]: the milliseconds as its
/// `seq`, the sequence as its `tag`.
fn entry_id(text: &str) -> Result<JobId, StoreError> {
    let malformed = || StoreError::new(format!("not a stream entry id: {text:?}"));
    let (ms, seq) = text.split_once('-').ok_or_else(malformed)?;
    Ok(JobId {
        seq: ms.parse().map_err(|_| malformed())?,
        tag: seq.parse().map_err(|_| malformed())?,
    })
}

/// The inverse of [`entry_id`].
fn entry_text(id: JobId) -> String {
    format!("{}-{}", id.seq, id.tag)
}

impl DrainSource for RedisStreamSource {
    fn lease(&self, max: usize, lease: Duration) -> StoreFuture<'_, Vec<Job>> {
        Box::pin(self.lease_entries(max, lease))
    }

    fn finish_many(&self, endings: Vec<Ending>) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(self.finish_endings(endings))
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.read_stats())
    }

    /// Only what can start now: the rest of the backlog stays on Redis.
    fn lease_size(&self, free: usize, _window: usize) -> usize {
        free
    }

    fn discard(&self) -> StoreFuture<'_, Vec<Discarded>> {
        Box::pin(self.discard_old())
    }
}
