//! Request priorities and how requests get them.
//!
//! Every refusal decision in this crate asks one question first: what is this
//! request worth? The answer is a [`Priority`], `Critical > High > Default >
//! Low`. A [`Classify`] implementation decides it, and [`PriorityLayer`] stamps
//! it into the request's extensions once, at the edge of the stack, so that the
//! shedding and limiting layers below all read the same answer through
//! [`FromExtensions`].
//!
//! Built-in classifiers:
//!
//! - [`RouteTable`]: method and path prefix, most specific wins;
//! - [`HeaderPriority`]: an `x-priority` header that, unless trusted, can only
//!   lower a request's priority;
//! - [`GrpcMethods`]: `/package.Service/Method` paths;
//! - any closure `Fn(&Req) -> Priority`, or a fixed [`Priority`].
//!
//! Optionally each request also gets a [`Cohort`] from its caller, stable for a
//! period, so adaptive shedding can refuse part of a tier consistently.
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use http::Method;
//! use tower_spillway::priority::{HeaderPriority, Priority, PriorityLayer, RouteTable};
//!
//! // Routes decide; a client may still mark its own request as less important.
//! let classify = HeaderPriority::with_base(
//!     RouteTable::new()
//!         .route(Some(Method::POST), "/payments", Priority::Critical)
//!         .route(None, "/orders", Priority::High)
//!         .route(None, "/analytics", Priority::Low),
//! );
//!
//! let app: Router = Router::new()
//!     .route("/payments", post(|| async { "paid" }))
//!     .route("/analytics", get(|| async { "counted" }))
//!     .layer(PriorityLayer::new(classify));
//! ```
//!
//! # Differences from other schemes
//!
//! Google's SRE criticality and Uber's Cinnamon both propagate a tier with the
//! request; here the tier travels in `http::Extensions`, never in a global, and
//! an incoming header is distrusted by default: a client cannot promote itself.

mod classify;
mod cohort;
mod level;

#[cfg(feature = "http")]
mod grpc;
#[cfg(feature = "http")]
mod header;
#[cfg(feature = "http")]
mod layer;
mod per_priority;
#[cfg(feature = "http")]
pub(crate) mod route;

pub use classify::{Classify, FromExtensions};
pub use cohort::{Cohort, Cohorts};
pub use level::{ParsePriorityError, Priority};
pub use per_priority::PerPriority;

#[cfg(feature = "http")]
pub use grpc::GrpcMethods;
#[cfg(feature = "http")]
pub use header::{HeaderPriority, X_PRIORITY};
#[cfg(feature = "http")]
pub use layer::{NoCohorts, PriorityLayer, SetPriority};
#[cfg(feature = "http")]
pub use route::RouteTable;
