//! HTTP plumbing shared by every layer's HTTP face: refusal responses and
//! response bodies.
//!
//! - [`AsResponse`] is the rejection strategy of the HTTP face (see
//!   [`reject`](crate::reject)); [`ProblemDetails`] is its default response:
//!   `503`/`429`, `Retry-After`, `application/problem+json`, or a trailers-only
//!   response for gRPC calls.
//! - [`MakeRejection`] lets a service answer refusals in its own format.
//! - [`ResponseBody`] is the body of a layer's HTTP face: the inner body, or the
//!   refusal's [`RejectBody`].
//! - A refused request whose body is still arriving has it drained in the
//!   background (at most 64 KiB, for at most 1 s, at most 1,024 bodies at
//!   once) rather than dropped, so HTTP/2 connections
//!   are not reset by their own defence against rapid resets.
//! - [`Guarded`] holds a permit (any [`OnBodyEnd`](crate::guard::OnBodyEnd)) until the response body
//!   ends, so a concurrency limit covers streaming responses too.

mod body;
pub(crate) mod cache;
mod drain;
mod reject;

pub use body::{Guarded, RejectBody, ResponseBody};
pub(crate) use reject::rejection_response;
pub use reject::{AsResponse, MakeRejection, ProblemDetails, RequestInfo};
