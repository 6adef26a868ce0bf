use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::guard::{BodyEnd, OnBodyEnd};

/// The small, complete body of a refusal: a problem+json document, or nothing
/// at all for a trailers-only gRPC response.
#[derive(Debug, Default, Clone)]
pub struct RejectBody {
    data: Option<Bytes>,
}

impl RejectBody {
    /// An empty body that ends the stream at once.
    pub const fn empty() -> Self {
        Self { data: None }
    }

    /// A body of `data`.
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for RejectBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

pin_project! {
    /// The response body of a layer's HTTP face: the inner service's body, or
    /// the layer's own answer (a refusal, or a degraded route's fallback).
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Rejected { body: RejectBody },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub const fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// Wraps a refusal's body.
    pub const fn rejected(body: RejectBody) -> Self {
        Self {
            kind: Kind::Rejected { body },
        }
    }

    /// `true` when this is a refusal rather than the inner service's body.
    pub const fn is_rejected(&self) -> bool {
        matches!(self.kind, Kind::Rejected { .. })
    }
}

impl<B> Body for ResponseBody<B>
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
            KindProj::Rejected { body } => match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Rejected { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Rejected { body } => body.size_hint(),
        }
    }
}

pin_project! {
    /// A response body that holds a guard until the body ends, so a permit
    /// covers the whole response, not just its head.
    ///
    /// The guard runs exactly once: at the end of the stream (with the
    /// trailers, if any), on the first error, or when the body is dropped. A
    /// body dropped after it reported its end (hyper does not poll a body that
    /// says it has ended) counts as complete.
    pub struct Guarded<B: Body, G: OnBodyEnd> {
        #[pin]
        body: B,
        guard: Option<G>,
    }

    impl<B: Body, G: OnBodyEnd> PinnedDrop for Guarded<B, G> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(guard) = this.guard.take() {
                if this.body.is_end_stream() {
                    guard.on_body_end(BodyEnd::complete());
                } else {
                    guard.on_body_end(BodyEnd::Dropped);
                }
            }
        }
    }
}

impl<B: Body, G: OnBodyEnd> Guarded<B, G> {
    /// Holds `guard` until `body` ends.
    pub fn new(body: B, guard: G) -> Self {
        Self {
            body,
            guard: Some(guard),
        }
    }
}

impl<B: Body, G: OnBodyEnd> std::fmt::Debug for Guarded<B, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("armed", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body, G: OnBodyEnd> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    if let Some(guard) = this.guard.take() {
                        guard.on_body_end(BodyEnd::Complete {
                            trailers: Some(trailers),
                        });
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(guard) = this.guard.take() {
                    guard.on_body_end(BodyEnd::Error);
                }
            }
            Poll::Ready(None) => {
                if let Some(guard) = this.guard.take() {
                    guard.on_body_end(BodyEnd::complete());
                }
            }
            Poll::Pending => {}
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::HeaderMap;
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<String>>>);

    impl OnBodyEnd for Log {
        fn on_body_end(self, end: BodyEnd<'_>) {
            let s = match end {
                BodyEnd::Complete { trailers: Some(t) } => {
                    format!("complete with {} trailers", t.len())
                }
                BodyEnd::Complete { trailers: None } => "complete".to_owned(),
                BodyEnd::Error => "error".to_owned(),
                BodyEnd::Dropped => "dropped".to_owned(),
            };
            self.0.lock().unwrap().push(s);
        }
    }

    impl Log {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    #[tokio::test]
    async fn guard_runs_once_at_end() {
        let log = Log::default();
        let body = Guarded::new(Full::new(Bytes::from_static(b"hi")), log.clone());
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hi");
        assert_eq!(log.take(), ["complete"]);
    }

    #[tokio::test]
    async fn guard_sees_trailers() {
        let log = Log::default();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = Guarded::new(StreamBody::new(futures_stream(frames)), log.clone());
        body.collect().await.unwrap();
        assert_eq!(log.take(), ["complete with 1 trailers"]);
    }

    #[tokio::test]
    async fn dropped_half_read_counts_as_dropped() {
        let log = Log::default();
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ];
        let mut body = Guarded::new(StreamBody::new(futures_stream(frames)), log.clone());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "a");
        drop(body);
        assert_eq!(log.take(), ["dropped"]);
    }

    #[test]
    fn dropped_unpolled_empty_body_is_complete() {
        let log = Log::default();
        drop(Guarded::new(RejectBody::empty(), log.clone()));
        assert_eq!(log.take(), ["complete"]);
        drop(Guarded::new(RejectBody::new("x"), log.clone()));
        assert_eq!(log.take(), ["dropped"]);
    }

    #[tokio::test]
    async fn error_ends_guard() {
        #[derive(Debug)]
        struct Boom;
        impl std::fmt::Display for Boom {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("boom")
            }
        }
        impl std::error::Error for Boom {}
        let log = Log::default();
        let frames: Vec<Result<Frame<Bytes>, Boom>> = vec![Err(Boom)];
        let body = Guarded::new(StreamBody::new(futures_stream(frames)), log.clone());
        assert!(body.collect().await.is_err());
        assert_eq!(log.take(), ["error"]);
    }

    #[tokio::test]
    async fn reject_body_yields_once() {
        let body = ResponseBody::<Full<Bytes>>::rejected(RejectBody::new("{}"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(2));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
        let empty = ResponseBody::<Full<Bytes>>::rejected(RejectBody::empty());
        assert!(empty.is_end_stream());
    }

    /// A stream over a vector, without pulling in a futures crate.
    fn futures_stream<T: Unpin>(items: Vec<T>) -> VecStream<T> {
        VecStream(items.into_iter())
    }

    struct VecStream<T>(std::vec::IntoIter<T>);

    impl<T: Unpin> futures_core::Stream for VecStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.next())
        }
    }
}
