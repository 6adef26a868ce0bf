//! The server half: overload errors from inner layers become 503/429 answers.

mod future;
mod layer;
mod service;
#[cfg(test)]
mod tests;

pub use future::ResponseFuture;
pub use layer::RetryAfterLayer;
pub use service::RetryAfter;
