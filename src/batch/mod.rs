//! Batching: many single calls become few calls of an inner
//! `Service<Vec<T>>`, and every caller gets its own item's result.
//!
//! Every write has a fixed cost (a round trip, a commit, an fsync); a batch
//! pays it once for many items. [`Batch`] is a cloneable handle: `call(item)`
//! queues the item, a worker task gathers queued items into batches and sends
//! each batch to the inner service, and the caller's future resolves to its
//! own item's result.
//!
//! # The inner service's contract
//!
//! The inner service takes `Vec<T>` and answers `Vec<Result<R, E>>`: exactly
//! one result per item, in the items' order.
//!
//! - `Ok(r)` answers that item's caller with `r`; `Err(e)` fails **only** that
//!   caller (with `e` boxed). Items that cannot fail use
//!   `Result<R, Infallible>`.
//! - An error for the whole call fails every caller of that batch with a
//!   [`BatchFailed`](error::BatchFailed); a result of the wrong length fails
//!   every caller of that batch with a
//!   [`LengthMismatch`](error::LengthMismatch); a panic fails every caller of
//!   that batch with [`Panicked`](error::Panicked). The worker survives all
//!   three and keeps serving later batches.
//! - An error (or a panic) from `poll_ready` fails the batch waiting for it:
//!   its callers get a `BatchFailed` (or `Panicked`). The next batch asks the
//!   service again, so one that recovers (a pool that reconnects) serves it;
//!   batches already in flight are still answered.
//!
//! # When a batch is sent
//!
//! A batch is sent when it holds [`max_items`](BatchConfigBuilder::max_items)
//! items (or its weight reaches [`max_weight`](BatchConfigBuilder::max_weight)),
//! or its first item has waited [`max_wait`](BatchConfigBuilder::max_wait), and
//! at most [`max_in_flight`](BatchConfigBuilder::max_in_flight) batches are in
//! the inner service at once. The default [`Flush::Opportunistic`] policy also
//! sends at once when no batch is in flight, so one request at idle waits zero
//! and batches grow only when the inner service is busy;
//! [`Flush::Linger`] always waits for the window, for larger batches.
//!
//! Items wait in a queue of [`queue_capacity`](BatchConfigBuilder::queue_capacity)
//! slots. When it is full, `poll_ready` waits for room (backpressure), or,
//! with [`reject_when_full`](BatchConfigBuilder::reject_when_full), `call`
//! refuses at once with an [`Overloaded`](crate::Overloaded)
//! ([`Reason::QueueFull`](crate::Reason::QueueFull)) — or, after
//! [`Batch::http`] / [`BatchLayer::http`], when the items are HTTP requests,
//! with a `503` response and `Retry-After`. A caller that drops its
//! future before its batch is sent (while the item is queued, or gathered
//! into a batch still filling) is skipped; after, the item is still written
//! and its result discarded. If the worker stops (its runtime shuts down, or
//! the [`Worker`] from [`Batch::pair`] is dropped), every pending caller gets
//! [`Closed`](error::Closed), and so does a handle waiting in `poll_ready`
//! for room: nobody waits forever.
//!
//! With the `tracing` feature, each batch runs in a `batch` span that
//! *follows from* the span of every caller whose item it carries.
//!
//! # Example
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use tower::{ServiceExt, service_fn};
//! use tower_spillway::batch::{Batch, BatchConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // One INSERT for many rows; each row gets its own id back.
//! let insert_many = service_fn(|rows: Vec<String>| async move {
//!     let ids = (0..rows.len() as u64).map(Ok::<u64, Infallible>).collect::<Vec<_>>();
//!     Ok::<_, Infallible>(ids)
//! });
//! let config = BatchConfig::builder()
//!     .max_items(1000)
//!     .max_wait(Duration::from_millis(5))
//!     .build()
//!     .unwrap();
//! let batch = Batch::new(insert_many, config);
//!
//! let id = batch.clone().oneshot("hello".to_string()).await.unwrap();
//! assert_eq!(id, 0);
//! # }
//! ```
//!
//! # Differences from `tower::buffer::Buffer` and `tower-batch-control`
//!
//! `Buffer` forwards one request per inner call; `Batch` forwards many.
//! `tower-batch-control` (Zebra's, on tower 0.4) leaves matching results to
//! callers and stops its worker on the first inner error; here each caller
//! receives its own item's result, per-item errors fail one caller, and the
//! worker survives batch errors, length mismatches and panics. Batches can be
//! bounded by weight as well as by count, more than one batch can be in
//! flight, and the queue can refuse with `Overloaded` instead of applying
//! backpressure.
//!
//! `Buffer` allocates a oneshot channel per request. A `Batch` handle that
//! awaits its calls one at a time reuses the one-shot channel its last
//! result came through, the worker reuses the lanes its batches run in, and
//! queue slots are given back once per pass over the queue, not per item: a
//! request costs its share of the one `Vec` each batch hands to the inner
//! service.
//! Batches still form from whatever is queued when the worker runs; there is
//! no path that skips the worker at idle, since with an inner call that
//! finishes at once it would send every concurrent caller alone.

mod answer;
mod call;
mod config;
pub mod error;
mod flight;
pub mod future;
mod layer;
mod service;
mod slots;
mod worker;

pub use config::{BatchConfig, BatchConfigBuilder, Flush};
pub use layer::BatchLayer;
pub use service::{Batch, BatchStats};
pub use worker::Worker;
