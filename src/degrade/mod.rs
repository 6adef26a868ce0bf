//! Graceful degradation: a [`LoadLevel`] derived from the stack's own
//! handles, which handlers and background jobs read to do less, and
//! per-route fallbacks that answer while the level is high.
//!
//! - [`DegradeHandle`] derives the level (`Normal < Elevated < Overloaded`)
//!   from one or more [`Source`]s — an adaptive limiter's
//!   [`LimitHandle`](crate::limit::LimitHandle) (saturation, queueing
//!   delay, refusals), a shedder's [`ShedHandle`](crate::shed::ShedHandle)
//!   (what it sheds), any [`LoadSignal`](crate::LoadSignal), a closure —
//!   taking the worst. The level rises at once (or after
//!   [`raise_after`](LevelBuilder::raise_after)) and falls only once no
//!   reading at or above it has been seen for a [`hold`](LevelBuilder::hold)
//!   (2 s by default), so it does not flap; with the `tracing` feature each
//!   change is logged once. The handle is a cheap clone: reading it is an
//!   atomic load and a clock read, and at most once per interval (50 ms)
//!   a read also evaluates the sources. Nothing runs in the background:
//!   requests and handle reads keep the level current, so it falls back to
//!   `Normal` when load falls even if only a background job polls it.
//! - [`DegradeLayer`] (feature `http`) stamps the level into each request's
//!   extensions, so a handler can skip enrichment
//!   (`Extension<LoadLevel>` in axum), and answers chosen routes from a
//!   [`Fallback`] while the level is high — a fixed response, or the
//!   route's last good one — without calling the inner service. A fallback
//!   answer carries `x-degraded: elevated` (or `overloaded`) and the level
//!   in its extensions. The layer keeps the inner error type, so it goes on
//!   an axum `Router` with one `.layer()` call.
//!
//! ```
//! use std::sync::{Arc, atomic::{AtomicBool, Ordering}};
//! use axum::{Extension, Json, Router, routing::get};
//! use http::{Method, Request};
//! use http_body_util::BodyExt;
//! use tower::ServiceExt;
//! use tower_spillway::{
//!     degrade::{DegradeHandle, DegradeLayer, Fallback, LoadLevel, Source},
//!     limit::{AdaptiveLimitLayer, Gradient},
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = AdaptiveLimitLayer::builder(Gradient::default()).http().build();
//! // A switch of our own, so the example can raise the level.
//! let busy = Arc::new(AtomicBool::new(false));
//! let switch = busy.clone();
//! let level = DegradeHandle::builder(limit.handle())
//!     .source(Source::from_fn(move || {
//!         if switch.load(Ordering::Relaxed) { LoadLevel::Elevated } else { LoadLevel::Normal }
//!     }))
//!     .build()?;
//! let degrade = DegradeLayer::builder(level.clone())
//!     .fallback(Method::GET, "/recommendations", LoadLevel::Elevated, Fallback::json("[]"))
//!     .build()?;
//!
//! let app = Router::new()
//!     .route("/recommendations", get(|| async { Json(["socks", "tea"]) }))
//!     .route("/product", get(|Extension(level): Extension<LoadLevel>| async move {
//!         // Skip the optional extras while the service is busy.
//!         if level == LoadLevel::Normal { "product, with reviews" } else { "product" }
//!     }))
//!     .layer(limit)
//!     .layer(degrade);
//!
//! let get = |path: &str| Request::get(path).body(axum::body::Body::empty()).unwrap();
//! let res = app.clone().oneshot(get("/recommendations")).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), r#"["socks","tea"]"#);
//!
//! busy.store(true, Ordering::Relaxed);
//! tokio::time::sleep(std::time::Duration::from_millis(60)).await; // one evaluation interval
//! let res = app.clone().oneshot(get("/recommendations")).await?;
//! assert_eq!(res.headers()["x-degraded"], "elevated");
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "[]");
//! let res = app.oneshot(get("/product")).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "product");
//! assert_eq!(level.level(), LoadLevel::Elevated);
//! # Ok(())
//! # }
//! ```
//!
//! # Where it goes
//!
//! Put the `DegradeLayer` outside the shedder and the limiter: a fallback
//! answer then costs no permit and is never refused. The handle can be
//! shared by several layers (an axum router and a tonic server) and by
//! anything else that should do less under load.
//!
//! # Differences from tower and linkerd
//!
//! tower has no degradation layer: `LoadShed` and `ConcurrencyLimit` refuse
//! work, and a service that wants to do less under load has to find out by
//! itself. linkerd's fail-fast answers every request with an error while a
//! backend is unavailable; here the answer is chosen per route and per
//! level, the rest of the traffic is served, and the level is a value any
//! handler or job can read. A last-good fallback is not a cache: it is used
//! only while the level is high, keeps one response per route, and only
//! one that any caller may see.

mod handle;
mod hysteresis;
mod level;
mod log;
mod sensor;
mod source;

pub use handle::{DegradeHandle, DegradeSnapshot, LevelBuilder};
pub use level::LoadLevel;
pub use source::Source;

#[cfg(feature = "http")]
mod fallback;
#[cfg(feature = "http")]
pub mod future;
#[cfg(feature = "http")]
mod layer;
#[cfg(feature = "http")]
mod remember;
#[cfg(feature = "http")]
mod service;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use fallback::{Fallback, X_DEGRADED};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use layer::{DegradeLayer, DegradeLayerBuilder};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use remember::Remember;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use service::Degrade;

#[cfg(feature = "http")]
use future::ResponseFuture;

#[cfg(test)]
mod tests;
