//! How long an admitted request holds its place: until its response arrives,
//! or until the response body ends.
//!
//! A shedder's or a limiter's [permit](crate::limit::Permit) must be released
//! exactly once, when the request is finished. For a response that is a value
//! that is when it arrives; for an HTTP response it is when its body has been
//! sent to the end (a streamed response may take much longer than its head).
//! Every layer's future does the same thing with its permit: it hands it to a
//! [`Hold`] strategy together with the inner service's response, as
//! tower-http's `InFlightRequests` moves its guard into the body:
//!
//! - [`AtOnce`] ends the guard when the response arrives;
//! - [`InBody`] (HTTP) moves it into the response body
//!   ([`Guarded`](crate::http::Guarded)), where it ends with the body.
//!
//! The guard itself is any [`OnBodyEnd`]: it learns how the body ended.

/// How a response body ended, as told to an [`OnBodyEnd`] guard.
#[derive(Debug)]
pub enum BodyEnd<'a> {
    /// The body was read to its end (for a response without a body: the
    /// response arrived).
    Complete {
        /// The trailer block, where gRPC carries its status.
        #[cfg(feature = "http")]
        #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
        trailers: Option<&'a http::HeaderMap>,
        #[doc(hidden)]
        #[cfg(not(feature = "http"))]
        _end: std::marker::PhantomData<&'a ()>,
    },
    /// Reading the body failed.
    Error,
    /// The body was dropped before its end: the client went away.
    Dropped,
}

impl BodyEnd<'_> {
    /// A body that ended with no trailers.
    pub const fn complete() -> Self {
        Self::Complete {
            #[cfg(feature = "http")]
            trailers: None,
            #[cfg(not(feature = "http"))]
            _end: std::marker::PhantomData,
        }
    }
}

/// Something that must happen exactly once when a response is finished:
/// release a permit, record a latency sample, count a completion.
pub trait OnBodyEnd {
    /// Called once, when the response (or its body) ends, fails, or is
    /// dropped.
    fn on_body_end(self, end: BodyEnd<'_>);
}

/// Where a layer's future puts the guard of an admitted request: the one
/// place that decides how long a permit lasts.
///
/// `Res` is the inner service's response; [`Held`](Self::Held) is that
/// response carrying guard `G`.
pub trait Hold<Res> {
    /// The response carrying a guard.
    type Held<G: OnBodyEnd>;

    /// Hands `guard` to `res`: it ends at once or with the body.
    fn hold<G: OnBodyEnd>(res: Res, guard: G) -> Self::Held<G>;
}

/// The guard ends when the response arrives: for responses that are values.
#[derive(Debug, Clone, Copy, Default)]
pub struct AtOnce;

impl<Res> Hold<Res> for AtOnce {
    type Held<G: OnBodyEnd> = Res;

    #[inline]
    fn hold<G: OnBodyEnd>(res: Res, guard: G) -> Res {
        guard.on_body_end(BodyEnd::complete());
        res
    }
}

/// The guard moves into the HTTP response body and ends with it.
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct InBody;

#[cfg(feature = "http")]
impl<B: http_body::Body> Hold<http::Response<B>> for InBody {
    type Held<G: OnBodyEnd> = http::Response<crate::http::Guarded<B, G>>;

    #[inline]
    fn hold<G: OnBodyEnd>(res: http::Response<B>, guard: G) -> Self::Held<G> {
        res.map(|body| crate::http::Guarded::new(body, guard))
    }
}

/// The generic face's responses are values: their guard ends on arrival.
impl<Res> Hold<Res> for crate::AsError {
    type Held<G: OnBodyEnd> = Res;

    #[inline]
    fn hold<G: OnBodyEnd>(res: Res, guard: G) -> Res {
        AtOnce::hold(res, guard)
    }
}

/// The HTTP face's guard lasts until the response body ends.
#[cfg(feature = "http")]
impl<M, B: http_body::Body> Hold<http::Response<B>> for crate::http::AsResponse<M> {
    type Held<G: OnBodyEnd> = http::Response<crate::http::Guarded<B, G>>;

    #[inline]
    fn hold<G: OnBodyEnd>(res: http::Response<B>, guard: G) -> Self::Held<G> {
        InBody::hold(res, guard)
    }
}
