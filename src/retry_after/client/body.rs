//! A request body that can be sent again.

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The request body [`HonorRetryAfter`](super::HonorRetryAfter) sends: the
/// caller's body, recorded as it streams (up to a byte bound) so that a retry
/// can send it again.
///
/// The first attempt streams the caller's body and keeps a copy of each
/// chunk; a retry replays the copy and, if the first attempt had not read the
/// body to its end, continues with the rest of it. A body larger than the
/// bound is sent once and never retried, and its copy is freed.
///
/// Clients that want their own body type convert it with `map_request`, e.g.
/// for a tonic `Channel`: `tonic::body::Body::new`.
pub struct ReplayBody<B> {
    state: Option<Arc<Mutex<Recording<B>>>>,
    /// The caller's body while this attempt owns it.
    body: Option<B>,
    /// The next recorded chunk to replay.
    next: usize,
    trailers_sent: bool,
}

pub(crate) struct Recording<B> {
    chunks: Vec<Bytes>,
    len: usize,
    max: usize,
    trailers: Option<HeaderMap>,
    /// The caller's body has been read to its end.
    complete: bool,
    /// It outgrew `max`: it cannot be replayed.
    overflow: bool,
    /// The caller's body, when no attempt holds it.
    body: Option<B>,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("replayable", &self.state.is_some())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

fn lock<B>(state: &Mutex<Recording<B>>) -> MutexGuard<'_, Recording<B>> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B: Body> ReplayBody<B> {
    /// Sends `body` once, recording nothing.
    pub(crate) fn once(body: B) -> Self {
        Self {
            state: None,
            body: Some(body),
            next: 0,
            trailers_sent: false,
        }
    }

    /// The first attempt of a replayable body of at most `max` bytes; the
    /// returned handle makes the retries.
    pub(crate) fn first(body: B, max: usize) -> (Self, Arc<Mutex<Recording<B>>>) {
        let complete = body.is_end_stream();
        let state = Arc::new(Mutex::new(Recording {
            chunks: Vec::new(),
            len: 0,
            max,
            trailers: None,
            complete,
            overflow: false,
            body: None,
        }));
        let this = Self {
            state: Some(Arc::clone(&state)),
            body: Some(body),
            next: 0,
            trailers_sent: false,
        };
        (this, state)
    }

    /// Another attempt, if the body can still be replayed: it was recorded
    /// whole, or the rest of it is back from the previous attempt.
    pub(crate) fn retry(state: &Arc<Mutex<Recording<B>>>) -> Option<Self> {
        let mut shared = lock(state);
        if shared.overflow {
            return None;
        }
        let body = if shared.complete {
            None
        } else {
            Some(shared.body.take()?)
        };
        Some(Self {
            state: Some(Arc::clone(state)),
            body,
            next: 0,
            trailers_sent: false,
        })
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some(state) = &this.state else {
            // Sent once: a plain pass-through.
            return match &mut this.body {
                Some(body) => Pin::new(body).poll_frame(cx),
                None => Poll::Ready(None),
            };
        };
        {
            let shared = lock(state);
            if let Some(chunk) = shared.chunks.get(this.next) {
                this.next += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
        }
        let Some(body) = &mut this.body else {
            // Everything recorded is replayed: the trailers, then the end.
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(t) = lock(state).trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
            }
            return Poll::Ready(None);
        };
        let frame = match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(frame) => frame,
        };
        let end = body.is_end_stream();
        let mut shared = lock(state);
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if !shared.overflow && shared.len + data.len() <= shared.max {
                        shared.len += data.len();
                        shared.chunks.push(data.clone());
                        this.next += 1;
                    } else if !shared.overflow {
                        shared.overflow = true;
                        shared.chunks = Vec::new();
                        shared.len = 0;
                        this.next = 0;
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    shared.trailers = Some(t.clone());
                    this.trailers_sent = true;
                }
                if end {
                    shared.complete = true;
                    this.body = None;
                }
            }
            Some(Err(_)) => {
                // A failing body cannot be replayed faithfully.
                shared.overflow = true;
                shared.chunks = Vec::new();
            }
            None => {
                shared.complete = true;
                this.body = None;
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            None => self.body.as_ref().is_none_or(Body::is_end_stream),
            Some(state) => {
                let shared = lock(state);
                if self.next < shared.chunks.len() {
                    return false;
                }
                match &self.body {
                    Some(body) => body.is_end_stream(),
                    None => self.trailers_sent || shared.trailers.is_none(),
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Some(state) = &self.state else {
            return self
                .body
                .as_ref()
                .map_or(SizeHint::with_exact(0), Body::size_hint);
        };
        // What is left to replay, plus what the caller's body still holds.
        let shared = lock(state);
        let replay: u64 = shared
            .chunks
            .iter()
            .skip(self.next)
            .map(|c| c.len() as u64)
            .sum();
        match &self.body {
            None => SizeHint::with_exact(replay),
            Some(body) => {
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(replay));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(replay));
                }
                hint
            }
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        // Hand the unread rest of the caller's body back for a retry.
        if let (Some(state), Some(body)) = (&self.state, self.body.take()) {
            lock(state).body = Some(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Chunks = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn replays_a_recorded_body() {
        let (first, state) = ReplayBody::first(chunks(&["ab", "cd"]), 100);
        assert_eq!(first.collect().await.unwrap().to_bytes(), "abcd");
        for _ in 0..2 {
            let again = ReplayBody::retry(&state).unwrap();
            assert_eq!(again.size_hint().exact(), Some(4));
            assert_eq!(again.collect().await.unwrap().to_bytes(), "abcd");
        }
    }

    #[tokio::test]
    async fn continues_a_body_the_first_attempt_left_half_read() {
        let (mut first, state) = ReplayBody::first(chunks(&["ab", "cd", "ef"]), 100);
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        // Still held by the first attempt: no retry yet.
        assert!(ReplayBody::retry(&state).is_none());
        drop(first);
        let again = ReplayBody::retry(&state).unwrap();
        // The recorded prefix counts in the size hint.
        assert_eq!(again.size_hint().lower(), 2);
        assert_eq!(again.collect().await.unwrap().to_bytes(), "abcdef");
        let third = ReplayBody::retry(&state).unwrap();
        assert_eq!(third.collect().await.unwrap().to_bytes(), "abcdef");
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_sent_once() {
        let (first, state) = ReplayBody::first(chunks(&["abc", "def"]), 4);
        assert_eq!(first.collect().await.unwrap().to_bytes(), "abcdef");
        assert!(ReplayBody::retry(&state).is_none());
        assert!(lock(&state).chunks.is_empty());
    }

    #[tokio::test]
    async fn once_passes_through() {
        let body = ReplayBody::once(chunks(&["x", "y"]));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "xy");
    }
}
