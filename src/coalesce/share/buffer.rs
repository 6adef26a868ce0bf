//! [`BufferBody`]: HTTP responses shared by reading their bodies into memory.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response, response::Parts};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Collected, Share};

/// Shares HTTP responses by reading each body into memory, up to `max`
/// bytes (1 MiB unless set). A response whose body is larger (or fails
/// half-way) is not shared: the caller whose request made the call gets it
/// whole, the other waiters make their own calls.
#[derive(Debug, Clone, Copy)]
pub struct BufferBody {
    max: usize,
}

impl BufferBody {
    /// The default cap: 1 MiB.
    pub const DEFAULT_MAX: usize = 1 << 20;

    /// Buffers bodies of up to `max` bytes.
    pub const fn new(max: usize) -> Self {
        Self { max }
    }

    /// The cap, in bytes.
    pub const fn max(&self) -> usize {
        self.max
    }
}

impl Default for BufferBody {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX)
    }
}

/// A response head, body and trailers held in memory, cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedResponse(Arc<(Parts, Bytes, Option<HeaderMap>)>);

impl SharedResponse {
    /// The response's status, headers and extensions.
    pub fn parts(&self) -> &Parts {
        &self.0.0
    }

    /// The whole body.
    pub fn body(&self) -> &Bytes {
        &self.0.1
    }
}

impl<B> Share<Response<B>> for BufferBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Send,
{
    type Shared = SharedResponse;
    type Response = Response<CoalesceBody<B>>;
    type Collect = CollectBody<B>;

    fn collect(&self, res: Response<B>) -> CollectBody<B> {
        let (parts, body) = res.into_parts();
        let shareable = shareable(&parts.headers) && fits(&body, self.max);
        CollectBody {
            parts: Some(parts),
            body: Some(Box::pin(body)),
            buf: BytesMut::new(),
            trailers: None,
            max: self.max,
            shareable,
        }
    }

    fn response(shared: &SharedResponse) -> Self::Response {
        let (parts, data, trailers) = &*shared.0;
        Response::from_parts(
            parts.clone(),
            CoalesceBody {
                kind: Kind::Buffered {
                    data: (!data.is_empty()).then(|| data.clone()),
                    trailers: trailers.clone(),
                },
            },
        )
    }

    fn unshared(res: Response<B>) -> Self::Response {
        res.map(|body| CoalesceBody {
            kind: Kind::Inner { body },
        })
    }
}

/// Whether a response may go to callers other than the one it was made
/// for: not if it sets a cookie (a session made for one caller), is
/// `Cache-Control: private` or `no-store`, or varies on a request header
/// the default key does not hold ([`HttpKey`](crate::coalesce::HttpKey)
/// keys the credentials, `Host` and `Accept*`; headers added to a key
/// are not known here, so a response varying on one is not shared).
fn shareable(headers: &HeaderMap) -> bool {
    use crate::http::cache;
    !cache::private_to_caller(headers)
        && cache::tokens(headers, http::header::VARY)
            .all(|t| t.is_empty() || crate::coalesce::key::keys_header(t))
}

/// Whether the body can be held for sharing: it says how long it is, and
/// that is within `max`. A body of unknown length (a stream, chunked) goes
/// to its own caller as it arrives instead of making every waiter wait
/// for its end.
fn fits<B: Body>(body: &B, max: usize) -> bool {
    body.is_end_stream() || body.size_hint().exact().is_some_and(|n| n <= max as u64)
}

/// Reads a response body into memory for sharing; see [`BufferBody`].
pub struct CollectBody<B> {
    parts: Option<Parts>,
    body: Option<Pin<Box<B>>>,
    buf: BytesMut,
    trailers: Option<HeaderMap>,
    max: usize,
    /// Decided from the head: if not, the response goes to its caller
    /// at once.
    shareable: bool,
}

impl<B> fmt::Debug for CollectBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectBody")
            .field("buffered", &self.buf.len())
            .field("max", &self.max)
            .finish()
    }
}

impl<B> CollectBody<B>
where
    B: Body<Data = Bytes>,
{
    fn give_up(&mut self, rest: Rest<B>) -> Collected<SharedResponse, Response<CoalesceBody<B>>> {
        let parts = self.parts.take().expect("polled after completion");
        let data = std::mem::take(&mut self.buf).freeze();
        Collected::Unshared(Response::from_parts(
            parts,
            CoalesceBody {
                kind: Kind::Prefix {
                    data: (!data.is_empty()).then_some(data),
                    rest,
                },
            },
        ))
    }
}

impl<B> Future for CollectBody<B>
where
    B: Body<Data = Bytes>,
{
    type Output = Collected<SharedResponse, Response<CoalesceBody<B>>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if !this.shareable {
            let body = this.body.take().expect("polled after completion");
            return Poll::Ready(this.give_up(Rest::Body { body }));
        }
        loop {
            let body = this.body.as_mut().expect("polled after completion");
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if this.buf.len() + data.len() > this.max {
                            let body = this.body.take().expect("checked above");
                            this.buf.extend_from_slice(&data);
                            return Poll::Ready(this.give_up(Rest::Body { body }));
                        }
                        this.buf.extend_from_slice(&data);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            match &mut this.trailers {
                                Some(t) => t.extend(trailers),
                                None => this.trailers = Some(trailers),
                            }
                        }
                    }
                },
                Poll::Ready(Some(Err(err))) => {
                    this.body = None;
                    return Poll::Ready(this.give_up(Rest::Error { error: Some(err) }));
                }
                Poll::Ready(None) => {
                    this.body = None;
                    let parts = this.parts.take().expect("polled after completion");
                    let data = std::mem::take(&mut this.buf).freeze();
                    let trailers = this.trailers.take();
                    return Poll::Ready(Collected::Shared(SharedResponse(Arc::new((
                        parts, data, trailers,
                    )))));
                }
            }
        }
    }
}

pin_project! {
    /// The body of a coalesced HTTP response: a copy of a shared, buffered
    /// body, or the inner body itself.
    pub struct CoalesceBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Inner { #[pin] body: B },
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Prefix { data: Option<Bytes>, rest: Rest<B> },
    }
}

enum Rest<B: Body> {
    Body { body: Pin<Box<B>> },
    Error { error: Option<B::Error> },
}

impl<B: Body> fmt::Debug for CoalesceBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Buffered { .. } => "buffered",
            Kind::Prefix { .. } => "prefix",
        };
        f.debug_struct("CoalesceBody").field("kind", &kind).finish()
    }
}

impl<B> Body for CoalesceBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            KindProj::Prefix { data, rest } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                match rest {
                    Rest::Body { body } => body.as_mut().poll_frame(cx),
                    Rest::Error { error } => Poll::Ready(error.take().map(Err)),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Prefix { data, rest } => {
                data.is_none()
                    && match rest {
                        Rest::Body { body } => body.is_end_stream(),
                        Rest::Error { error } => error.is_none(),
                    }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Prefix { data, rest } => {
                let prefix = data.as_ref().map_or(0, |d| d.len() as u64);
                match rest {
                    Rest::Body { body } => {
                        let inner = body.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(inner.lower() + prefix);
                        if let Some(upper) = inner.upper() {
                            hint.set_upper(upper + prefix);
                        }
                        hint
                    }
                    Rest::Error { .. } => SizeHint::with_exact(prefix),
                }
            }
        }
    }
}
