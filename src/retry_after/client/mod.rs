//! The client half: honour `Retry-After` and `grpc-retry-pushback-ms`.

mod body;
mod budget;
mod cooldown;
mod future;
mod handle;
mod layer;
mod retries;
mod service;

pub use body::ReplayBody;
pub use budget::RetryBudget;
use cooldown::Cooldown;
pub use future::HonorFuture;
pub use handle::{HonorRetryAfterHandle, HonorRetryAfterSnapshot};
pub use layer::{HonorRetryAfterBuilder, HonorRetryAfterLayer};
pub use retries::{RETRY_ATTEMPT, Retries};
pub use service::HonorRetryAfter;

#[cfg(test)]
mod tests;
