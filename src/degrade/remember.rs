//! [`Remember`]: a response body copied into a route's last-good slot as
//! it streams to its caller.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, Response, StatusCode,
    header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, VARY},
};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::fallback::{Slot, Stored};
use crate::http::cache;

/// Whether a request carries credentials: a response made for it may be
/// made for that caller alone.
pub(super) fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION)
        || headers.contains_key(PROXY_AUTHORIZATION)
        || headers.contains_key(COOKIE)
        || headers.contains_key("x-api-key")
}

/// Whether `res` may be replayed to any caller; see
/// [`Fallback::last_good`](super::Fallback::last_good).
fn keepable(status: StatusCode, headers: &HeaderMap, credentials: bool) -> bool {
    status.is_success()
        && status != StatusCode::PARTIAL_CONTENT
        && !cache::private_to_caller(headers)
        && cache::tokens(headers, VARY).all(str::is_empty)
        && (!credentials || cache::public(headers))
}

/// What a request that may leave a last-good response remembers.
#[derive(Debug)]
pub(super) struct Keep {
    pub(super) slot: Arc<Slot>,
    pub(super) query: Option<Box<str>>,
    pub(super) credentials: bool,
}

/// A copy being made.
struct Copy {
    status: StatusCode,
    headers: HeaderMap,
    buf: BytesMut,
    keep: Keep,
}

pin_project! {
    /// The inner service's response body as a
    /// [`DegradeLayer`](super::DegradeLayer) passes it on: untouched, or,
    /// on a route with a [`last_good`](super::Fallback::last_good) fallback,
    /// copied (up to the fallback's cap) as it streams, and kept once it has
    /// ended.
    pub struct Remember<B> {
        #[pin]
        body: B,
        copy: Option<Box<Copy>>,
    }
}

impl<B> fmt::Debug for Remember<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remember")
            .field("copying", &self.copy.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body> Remember<B> {
    /// Passes `res` on, copying its body into `keep`'s slot if the response
    /// may be kept.
    pub(super) fn response(res: Response<B>, keep: Option<Keep>) -> Response<Self> {
        let (parts, body) = res.into_parts();
        let copy = keep
            .filter(|k| keepable(parts.status, &parts.headers, k.credentials))
            .filter(|k| body.size_hint().lower() <= k.slot.max_body as u64)
            .map(|keep| {
                Box::new(Copy {
                    status: parts.status,
                    headers: parts.headers.clone(),
                    buf: BytesMut::new(),
                    keep,
                })
            });
        let mut body = Remember { body, copy };
        if body.body.is_end_stream() {
            body.kept();
        }
        Response::from_parts(parts, body)
    }

    /// The body has ended: keep the copy.
    fn kept(&mut self) {
        Self::keep(&mut self.copy);
    }

    fn keep(copy: &mut Option<Box<Copy>>) {
        if let Some(copy) = copy.take() {
            let Copy {
                status,
                headers,
                buf,
                keep,
            } = *copy;
            keep.slot.keep(Stored::new(
                status,
                headers,
                buf.freeze(),
                Some(Instant::now()),
                keep.query,
            ));
        }
    }
}

impl<B> Body for Remember<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.body.as_mut().poll_frame(cx);
        let Some(copy) = this.copy.as_mut() else {
            return polled;
        };
        match &polled {
            Poll::Pending => return polled,
            Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                Some(data) if copy.buf.len() + data.len() <= copy.keep.slot.max_body => {
                    copy.buf.extend_from_slice(data);
                }
                // Too large, or trailers: not kept.
                _ => *this.copy = None,
            },
            Poll::Ready(Some(Err(_))) => *this.copy = None,
            Poll::Ready(None) => {}
        }
        // hyper stops polling a body that says it has ended.
        if matches!(polled, Poll::Ready(None)) || this.body.is_end_stream() {
            Self::keep(this.copy);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
