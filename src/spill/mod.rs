//! Spill: deferrable writes that the stack cannot take now are stored,
//! answered `202 Accepted`, and replayed at the pace the backend sustains.
//!
//! (Module documentation grows with the layer; see the crate's CHANGELOG.)

mod job;
mod store;

pub use job::{Enqueued, Finish, Job, JobId, JobStatus, NewJob, ParseJobIdError};
pub use store::{Bounds, SpillStore, StoreError, StoreFuture, StoreStats};
