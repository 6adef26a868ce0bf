use std::future::{Future, Ready, ready};

/// How one inner response is shared between every waiter of a call.
///
/// [`CloneResponse`] clones responses that are `Clone`;
/// [`BufferBody`](super::BufferBody) (HTTP) reads a response body into memory,
/// up to a cap, and gives each waiter a copy.
pub trait Share<Res> {
    /// The shareable form of a response.
    type Shared: Clone + Send + Sync + 'static;
    /// What each waiter receives.
    type Response: Send + 'static;
    /// Turns the inner response into its shareable form (for HTTP: reads the
    /// body).
    type Collect: Future<Output = Collected<Self::Shared, Self::Response>> + Send + 'static;

    /// Starts making `res` shareable.
    fn collect(&self, res: Res) -> Self::Collect;

    /// A waiter's copy of a shared response.
    fn response(shared: &Self::Shared) -> Self::Response;

    /// A response that is not shared (the request had no key, or it made its
    /// own call).
    fn unshared(res: Res) -> Self::Response;
}

/// The result of [`Share::collect`].
#[derive(Debug)]
pub enum Collected<Sh, R> {
    /// Every waiter gets a copy.
    Shared(Sh),
    /// The response cannot be shared (for HTTP: its body is over the cap): the
    /// caller whose request made the call gets it, every other waiter makes its
    /// own call.
    Unshared(R),
}

/// Shares responses that are `Clone` by cloning them; the generic face's
/// default.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneResponse;

impl<Res> Share<Res> for CloneResponse
where
    Res: Clone + Send + Sync + 'static,
{
    type Shared = Res;
    type Response = Res;
    type Collect = Ready<Collected<Res, Res>>;

    fn collect(&self, res: Res) -> Self::Collect {
        ready(Collected::Shared(res))
    }

    fn response(shared: &Res) -> Res {
        shared.clone()
    }

    fn unshared(res: Res) -> Res {
        res
    }
}

#[cfg(feature = "http")]
mod buffer;
#[cfg(feature = "http")]
pub use buffer::{BufferBody, CoalesceBody, CollectBody, SharedResponse};
