//! Hierarchical aggregation: merge commutative updates in memory, answer at
//! once, and flush one merged map per interval to the next tier.
//!
//! A view counter that writes one row per view does a write per event; one
//! that adds views up in memory and writes `{page: views}` once a second does
//! a write per page per second, whatever the traffic. [`Aggregate`] does that
//! for any update that implements [`Merge`] (counters, maps, [`Max`], [`Min`],
//! pairs of these): `call((key, delta))` merges the delta into the entry for
//! `key` and resolves at once; a worker flushes the merged `HashMap<K, V>` to
//! the inner `Service<HashMap<K, V>>`
//!
//! - every [`interval`](AggregateConfigBuilder::interval),
//! - as soon as [`max_keys`](AggregateConfigBuilder::max_keys) distinct keys are
//!   merged (which bounds memory; when the inner service falls behind by more
//!   than [`max_pending_flushes`](AggregateConfigBuilder::max_pending_flushes)
//!   maps, `poll_ready` waits), and
//! - on [`shutdown`](Aggregate::shutdown), which flushes everything and waits
//!   for the inner service, or when every handle is dropped.
//!
//! `Aggregate` also serves whole `HashMap<K, V>` updates, so the inner service
//! of one tier can be another `Aggregate` (or a client of a remote one): tiers
//! stack, each reducing the writes of the tier below.
//!
//! ```
//! use std::{collections::HashMap, convert::Infallible, time::Duration};
//! use tower::{ServiceExt, service_fn};
//! use tower_spillway::aggregate::{Aggregate, AggregateConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let store = service_fn(|views: HashMap<String, u64>| async move {
//!     // UPDATE pages SET views = views + $2 WHERE page = $1, once per page.
//!     assert_eq!(views["/home"], 3);
//!     Ok::<_, Infallible>(())
//! });
//! let config = AggregateConfig::builder().interval(Duration::from_secs(1)).build().unwrap();
//! let views = Aggregate::new(store, config);
//! for _ in 0..3 {
//!     views.clone().oneshot(("/home".to_string(), 1u64)).await.unwrap();
//! }
//! views.shutdown().await; // one write for three views
//! # }
//! ```
//!
//! # Exactness
//!
//! Every accepted update is in exactly one flushed map: after `shutdown`
//! resolves, the flushed deltas add up to the inputs (property-tested). A
//! flush the inner service fails (or panics in) is counted in
//! [`AggregateStats::failed_flushes`] and its map kept: it is offered again
//! after a backoff (100 ms, doubling, at most 5 s), with the updates that
//! arrive meanwhile merged into it, up to five attempts; after that its keys
//! are counted in [`AggregateStats::keys_dropped`] and logged. A retried map
//! may reach an inner service that applied part of a failed call: delivery
//! is at least once. If the worker itself stops (its task cancelled, or a
//! panic in a [`Merge`]), every later update and `poll_ready` fails with
//! [`ShutDown`] and [`shutdown`](Aggregate::shutdown) returns.
//!
//! # Differences from tower's built-ins
//!
//! tower has no aggregator. The nearest is `tower::buffer::Buffer`, which
//! forwards every request; `Aggregate` answers at once and forwards one merged
//! request per interval, which only works because the updates commute.

mod config;
mod layer;
mod merge;
mod service;
mod worker;

pub use config::{AggregateConfig, AggregateConfigBuilder};
pub use layer::AggregateLayer;
pub use merge::{Max, Merge, Min};
pub use service::{Aggregate, AggregateStats, ShutDown};
