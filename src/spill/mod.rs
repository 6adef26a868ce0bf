//! Spill: deferrable writes that the stack cannot take now are stored,
//! answered `202 Accepted`, and replayed at the pace the backend sustains.
//!
//! A spillway releases the water a dam cannot hold. [`SpillLayer`] sits
//! outside the layers that refuse (the shedder and the limiter) and watches
//! their answers. A request its classifier calls [deferrable](Deferrable)
//! (a like, an analytics event) that the stack refuses for capacity is
//! stored instead and answered:
//!
//! ```text
//! HTTP/1.1 202 Accepted
//! Location: /jobs/17-9f3a0c2b7d1e4a55
//! Retry-After: 3
//!
//! {"id":"17-9f3a0c2b7d1e4a55","status":"queued","location":"/jobs/17-9f3a0c2b7d1e4a55","retry_after":3,"repeat":false}
//! ```
//!
//! The `202` is sent only once the job is committed to the store; commits
//! of concurrent spills are grouped through the crate's own
//! [`Batch`](crate::batch::Batch), so one fsync covers many. `GET
//! <prefix>/<id>` answers the job's status: queued (with how many jobs are
//! ahead), running, done (the stored answer's status and first bytes) or
//! failed. An `Idempotency-Key` header makes a repeated request return the
//! first job. A [`validate`](SpillLayerBuilder::validate) hook refuses
//! garbage before it is stored, and a body over
//! [`max_body`](SpillLayerBuilder::max_body) is refused with `413` before
//! anything is stored. When the store is at one of its [`Bounds`] (jobs,
//! bytes, the age of the oldest job) or fails, spilling stops and the
//! stack's own `503` + `Retry-After` answers: nothing is accepted that
//! cannot be kept.
//!
//! A [`Drain`] ([`SpillHandle::drain`]) replays stored jobs into the whole
//! application, highest priority first and oldest first within a priority.
//! Replays carry a [`Replay`] extension, which the `SpillLayer` lets
//! through, so they pass the same limiter and reach the same handler as live
//! requests: the adaptive limit sets the pace, and a replay the stack
//! refuses goes back to the store (not counted as an attempt) while the
//! drain halves its window. Delivery is at least once: each replay holds its
//! job under a lease, a job whose drain died is replayed when the lease
//! ends, attempts that fail (a `5xx`, an error, a timeout) back off
//! exponentially, and a job is dead-lettered after its last attempt.
//!
//! # How this differs from a job queue
//!
//! It is a layer, not a second code path. The same handler serves a live
//! request and its replay; nothing is written to a queue while the service
//! keeps up ([`Mode::Overflow`], the default); and the pace of the replays
//! is the pace the stack admits, not a worker count to tune. Handlers that
//! must apply a request once should key on its `Idempotency-Key` (kept in
//! the replay), since a replay can run twice if its process dies between
//! the handler's effect and the store's record of it.
//!
//! # Stores
//!
//! [`SpillStore`] is the trait. The embedded store (`spill-sqlite`,
//! `SqliteStore`) is SQLite in WAL mode with full durability, for one
//! process; the fleet store (`spill-postgres`, `PostgresStore`) is one
//! PostgreSQL table that many instances share as one queue, leasing with
//! `FOR UPDATE SKIP LOCKED`.
//!
//! # Sources
//!
//! A drain reads from a [`DrainSource`]: the layer's store, or a durable
//! stream another system produces, read with [`Drain::new`]. The Redis
//! Streams source (`spill-redis`, `RedisStreamSource`) consumes a stream per
//! priority through a consumer group: it reads only as many entries as the
//! drain has free replay slots, so while the application throttles the
//! backlog waits on Redis instead of in this process; it acknowledges an
//! entry only after success, reclaims what dead consumers held, moves
//! entries past their last attempt to `<stream>:dead`, and discards by
//! priority only in an emergency, counted in the [`DrainSnapshot`] and
//! logged. Its module docs say how to produce entries;
//! `cargo run --example stream_consumer` shows the backlog staying on Redis
//! while the consumer throttles.

mod answer;
#[cfg(any(feature = "spill-sqlite", feature = "spill-postgres"))]
mod codec;
mod config;
mod deferrable;
mod drain;
mod drain_handle;
mod group_commit;
mod handle;
mod job;
mod layer;
#[cfg(feature = "spill-postgres")]
mod postgres;
#[cfg(feature = "spill-redis")]
mod redis_stream;
mod service;
mod source;
#[cfg(feature = "spill-sqlite")]
mod sqlite;
mod store;
mod window;

pub use config::Mode;
pub use deferrable::{Deferrable, DeferrableRoutes};
pub use drain::Drain;
pub use drain_handle::{DrainHandle, DrainSnapshot};
pub use handle::{SpillHandle, SpillSnapshot};
pub use job::{Enqueued, Finish, Job, JobId, JobStatus, NewJob, ParseJobIdError};
pub use layer::{SpillLayer, SpillLayerBuilder};
#[cfg(feature = "spill-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "spill-postgres")))]
pub use postgres::PostgresStore;
#[cfg(feature = "spill-redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "spill-redis")))]
pub use redis_stream::{RedisStreamSource, RedisStreamSourceBuilder, StreamProducer};
pub use service::{Spill, SpillFuture};
pub use source::{DiscardReason, Discarded, DrainSource, Ending};
#[cfg(feature = "spill-sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "spill-sqlite")))]
pub use sqlite::SqliteStore;
pub use store::{Bounds, SpillStore, StoreError, StoreFuture, StoreStats};

/// Marks a request as a replay of a stored job: the [`SpillLayer`] lets it
/// through to the stack below, and a handler can tell a replay from a live
/// request (`Option<Extension<Replay>>` in axum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replay {
    /// The job replayed.
    pub id: JobId,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

/// In the extensions of a `202` the layer answered: the job stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spilled {
    /// The job's id.
    pub id: JobId,
}
