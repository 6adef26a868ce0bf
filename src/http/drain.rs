//! Refused requests' bodies, let go of gently.
//!
//! A layer that refuses an HTTP/2 request answers before reading its body,
//! as it must. If the body has not fully arrived, dropping it makes the server
//! reset the stream (`RST_STREAM(NO_ERROR)`), and the client's DATA frames
//! still in flight then land on a closed stream, which the server answers
//! with `STREAM_CLOSED`. h2 counts each of those as a locally generated reset
//! (its defence against rapid-reset attacks), for the connection's lifetime,
//! and at 1 024 it closes the connection with `ENHANCE_YOUR_CALM`, failing
//! every request in flight on it: under a spike of POSTs, refusing quickly
//! would kill the connection that carries the critical requests too.
//!
//! So a refused request's unfinished body is drained in the background
//! instead of dropped: read and discarded until it ends, up to
//! [`MAX_DRAIN_BYTES`] and [`MAX_DRAIN_TIME`], then dropped. A body already at
//! its end (every GET, every request whose body arrived with its head) costs
//! nothing. At most [`MAX_DRAINS`] bodies are drained at once in the whole
//! process; past that, a flood of refused requests with stalled bodies gets
//! its bodies dropped, not tens of thousands of tasks.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use http_body::Body;

/// The most of a refused request's body that is read and discarded.
pub(crate) const MAX_DRAIN_BYTES: u64 = 64 * 1024;

/// The longest a refused request's body is waited for.
pub(crate) const MAX_DRAIN_TIME: Duration = Duration::from_secs(1);

/// The most refused bodies drained at once, in the whole process.
pub(crate) const MAX_DRAINS: usize = 1024;

/// Bodies being drained now.
static DRAINING: AtomicUsize = AtomicUsize::new(0);

/// A place among the [`MAX_DRAINS`], given back when the drain ends or its
/// task is dropped.
struct Place;

impl Place {
    fn take() -> Option<Self> {
        DRAINING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_DRAINS).then_some(n + 1)
            })
            .ok()
            .map(|_| Place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        DRAINING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drops `body`, after draining it in the background if it has not ended
/// (bounded by [`MAX_DRAIN_BYTES`] and [`MAX_DRAIN_TIME`], and by
/// [`MAX_DRAINS`] at once). Outside a tokio runtime it is simply dropped.
pub(crate) fn discard<B>(body: B)
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(place) = Place::take() else {
        return;
    };
    runtime.spawn(async move {
        let _place = place;
        let _ = tokio::time::timeout(MAX_DRAIN_TIME, drain(body)).await;
    });
}

async fn drain<B: Body>(body: B) {
    use bytes::Buf;
    let mut body = std::pin::pin!(body);
    let mut read = 0u64;
    while read <= MAX_DRAIN_BYTES {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    read += data.remaining() as u64;
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::Pin,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
        task::{Context, Poll},
    };

    use bytes::Bytes;
    use http_body::Frame;

    use super::*;

    /// The drains in flight are counted process-wide: the tests that drain
    /// run one at a time, so the flood cannot take a neighbour's place.
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// A body of `frames` 16 KiB frames, one every millisecond, that records
    /// how many were read and whether it was dropped.
    struct Slow {
        left: usize,
        read: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
        sleep: Pin<Box<tokio::time::Sleep>>,
    }

    impl Drop for Slow {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl Body for Slow {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            std::task::ready!(self.sleep.as_mut().poll(cx));
            let next = tokio::time::Instant::now() + Duration::from_millis(1);
            self.sleep.as_mut().reset(next);
            self.left -= 1;
            self.read.fetch_add(1, Ordering::SeqCst);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0; 16 * 1024])))))
        }
        fn is_end_stream(&self) -> bool {
            self.left == 0
        }
    }

    fn slow(frames: usize) -> (Slow, Arc<AtomicUsize>, Arc<AtomicBool>) {
        let read = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        let body = Slow {
            left: frames,
            read: Arc::clone(&read),
            dropped: Arc::clone(&dropped),
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        (body, read, dropped)
    }

    #[tokio::test(start_paused = true)]
    async fn small_body_is_read_to_its_end() {
        let _alone = ALONE.lock().await;
        let (body, read, dropped) = slow(2);
        discard(body);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(read.load(Ordering::SeqCst), 2);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn large_body_is_dropped_after_the_byte_bound() {
        let _alone = ALONE.lock().await;
        let (body, read, dropped) = slow(1000);
        discard(body);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // 64 KiB is four 16 KiB frames; the fifth crosses the bound.
        assert_eq!(read.load(Ordering::SeqCst), 5);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_body_is_dropped_after_the_time_bound() {
        let _alone = ALONE.lock().await;
        let dropped = Arc::new(AtomicBool::new(false));
        discard(Stalled(Arc::clone(&dropped)));
        tokio::time::sleep(MAX_DRAIN_TIME - Duration::from_millis(10)).await;
        assert!(!dropped.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(dropped.load(Ordering::SeqCst));
    }

    /// A body that never sends a frame, and says when it is dropped.
    struct Stalled(Arc<AtomicBool>);
    impl Drop for Stalled {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_stalled_bodies_is_drained_at_most_max_drains_at_once() {
        let _alone = ALONE.lock().await;
        let flags: Vec<Arc<AtomicBool>> = (0..MAX_DRAINS + 100)
            .map(|_| Arc::new(AtomicBool::new(false)))
            .collect();
        for flag in &flags {
            discard(Stalled(Arc::clone(flag)));
        }
        let held = || flags.iter().filter(|f| !f.load(Ordering::SeqCst)).count();
        // (Other tests in this process may hold a few places too.)
        assert!(held() <= MAX_DRAINS, "{} held", held());
        assert!(held() > MAX_DRAINS - 50, "{} held", held());
        // The places come back when the drains give up.
        tokio::time::sleep(MAX_DRAIN_TIME + Duration::from_millis(10)).await;
        assert_eq!(held(), 0);
        let again = Arc::new(AtomicBool::new(false));
        discard(Stalled(Arc::clone(&again)));
        tokio::task::yield_now().await;
        assert!(!again.load(Ordering::SeqCst), "drained again, not dropped");
    }

    #[test]
    fn outside_a_runtime_the_body_is_dropped() {
        let (body, read, dropped) = {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let _guard = rt.enter();
            slow(3)
        };
        discard(body);
        assert_eq!(read.load(Ordering::SeqCst), 0);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
