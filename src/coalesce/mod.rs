//! Single-flight: identical requests in flight at the same time share one
//! call to the inner service.
//!
//! When a thousand clients ask for the same hot page at once, the backend
//! needs to render it once. [`Coalesce`] keys each request; the first request
//! with a key calls the inner service, and every request with the same key
//! that arrives before that call completes waits for it and receives a copy
//! of its response. When the call completes, the key is forgotten: there is
//! no caching, and the next request calls again.
//!
//! - The shared call keeps running while any waiter remains, even if the
//!   caller that started it leaves; it stops when every waiter has gone.
//! - Its error reaches every waiter (the inner error type must be `Clone`);
//!   a panic reaches every waiter as a panic (the first waiter to see it
//!   resumes the original payload), as it would have without coalescing.
//!
//! # Two faces
//!
//! - [`CoalesceLayer::new`] takes a [`KeyExtractor`](crate::key::KeyExtractor)
//!   whose key is an `Option` (a closure `Fn(&Req) -> Option<Key>` through
//!   [`key_fn`](crate::key::key_fn); `None` means "never share") and shares
//!   responses that are `Clone` ([`CloneResponse`]).
//! - [`CoalesceLayer::http`] keys `GET` and `HEAD` requests by method, URI,
//!   `Host`, credentials (`Authorization`, `Proxy-Authorization`,
//!   `x-api-key`, `Cookie`) and `Accept*` ([`HttpKey`]; add headers with
//!   [`HttpKey::header`]) — so one user never receives a response made for
//!   another — and never shares conditional or range requests. It shares a
//!   response by reading its body into memory up to a cap ([`BufferBody`],
//!   1 MiB by default), and only one that sets no cookie, is neither
//!   `Cache-Control: private` nor `no-store`, varies on no header outside the
//!   key, and says its length. Any other response goes to the caller that
//!   made the call, as it arrives, and the other waiters make their own
//!   calls. Other methods pass straight through.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_spillway::coalesce::CoalesceLayer;
//!
//! let app: Router = Router::new()
//!     .route("/report", get(|| async { "expensive" }))
//!     .layer(CoalesceLayer::http().max_body(256 * 1024));
//! ```
//!
//! The generic face, keyed by a closure:
//!
//! ```
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_spillway::{coalesce::CoalesceLayer, key::key_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let lookup = ServiceBuilder::new()
//!     .layer(CoalesceLayer::new(key_fn(|user: &u64| Some(*user))))
//!     .service_fn(|user: u64| async move { Ok::<_, std::convert::Infallible>(format!("user {user}")) });
//! assert_eq!(lookup.oneshot(7).await.unwrap(), "user 7");
//! # }
//! ```
//!
//! # Differences from Go's `singleflight` and tower
//!
//! tower has no single-flight layer. Go's `singleflight.Group.Do` shares a
//! value and an error; so does the generic face here. The HTTP face shares
//! responses whose bodies are streams, which single-flight crates that
//! require `Clone` responses cannot, and puts the caller's credentials in the
//! default key. Like `singleflight` (and unlike a cache), nothing outlives
//! the call.

pub mod future;
mod key;
mod service;
mod share;

#[cfg(feature = "http")]
pub use key::{HttpKey, HttpRequestKey};
pub use service::{Coalesce, CoalesceLayer, CoalesceStats};
#[cfg(feature = "http")]
pub use share::{BufferBody, CoalesceBody, CollectBody, SharedResponse};
pub use share::{CloneResponse, Collected, Share};
