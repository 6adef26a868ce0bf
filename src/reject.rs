//! How a rejecting layer answers overload: with an error or with a response.
//!
//! Every rejecting layer in this crate carries a *rejection strategy* as a
//! type parameter, implementing [`Reject`]:
//!
//! - [`AsError`] (the generic face, for any request type): a refusal is an
//!   [`Overloaded`] error, inner errors are boxed, as tower's own layers do;
//! - [`AsResponse`](crate::http::AsResponse) (the HTTP face): a refusal is a
//!   503 or 429 response (or a trailers-only gRPC response) built by a
//!   [`MakeRejection`](crate::http::MakeRejection), and the inner error type
//!   is kept, so axum's `Infallible` stays `Infallible` and the layer needs no
//!   `HandleErrorLayer`.
//!
//! One layer type thus serves both worlds without two overlapping `Service`
//! impls: the strategy is chosen once, when the layer is built.

use crate::{BoxError, Overloaded};

/// Turns a layer's refusals and its inner service's results into the layer's
/// own response and error types.
///
/// `Req`, `Res` and `E` are the request, response and error types of the
/// service the layer wraps.
pub trait Reject<Req, Res, E> {
    /// What the layer answers with.
    type Response;
    /// What the layer fails with.
    type Error;
    /// What the strategy needs to remember about a request to answer a refusal
    /// later, after the request has moved on (for HTTP: is it gRPC?). Taken
    /// before the request is handed to the inner service, so refusing never
    /// reads the request body.
    type Info;

    /// Remembers what a later refusal of `req` will need.
    fn info(&self, req: &Req) -> Self::Info;

    /// The answer to a refused request.
    fn reject(
        &self,
        info: Self::Info,
        overloaded: Overloaded,
    ) -> Result<Self::Response, Self::Error>;

    /// Maps the inner service's response.
    fn map_response(res: Res) -> Self::Response;

    /// Maps the inner service's error.
    fn map_error(err: E) -> Self::Error;
}

/// The generic face: refusals are [`Overloaded`] errors, boxed with every other
/// error into a [`BoxError`]. Use [`is_overloaded`](crate::is_overloaded) to
/// tell them apart.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsError;

impl<Req, Res, E> Reject<Req, Res, E> for AsError
where
    E: Into<BoxError>,
{
    type Response = Res;
    type Error = BoxError;
    type Info = ();

    #[inline]
    fn info(&self, _req: &Req) {}

    #[inline]
    fn reject(&self, _info: (), overloaded: Overloaded) -> Result<Res, BoxError> {
        Err(Box::new(overloaded))
    }

    #[inline]
    fn map_response(res: Res) -> Res {
        res
    }

    #[inline]
    fn map_error(err: E) -> BoxError {
        err.into()
    }
}
