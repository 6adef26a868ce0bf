//! The drain: replays stored jobs into the application, as fast as the
//! stack below admits them and no faster.

use std::{
    collections::VecDeque,
    future::poll_fn,
    marker::PhantomData,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tokio::{task::JoinSet, time::Instant};
use tower_service::Service;

use crate::{BoxError, Overloaded};

use super::{
    Replay,
    group_commit::{self, FinishBatch},
    handle::{Shared, SpillHandle},
    job::{Finish, Job},
    window::Window,
};

/// How a [`SpillHandle::drain`] replays: built by it, started by
/// [`spawn`](Self::spawn).
///
/// The drain keeps a window of replays in flight, like a TCP sender: it
/// starts at 4, doubles each round trip until the stack first refuses a
/// replay for overload, then grows by one per round and halves on a
/// refusal (the refused job goes back to the store, its attempt not
/// counted). So the application's own
/// limiter sets the pace, and live traffic, which the limiter ranks by
/// priority as usual, keeps its share.
///
/// Replayed requests have bodies of type `B`, [`Full<Bytes>`] unless
/// [`with_body`](Self::with_body) says otherwise; an axum `Router` takes any.
#[derive(Debug)]
pub struct Drain<S, B = Full<Bytes>> {
    shared: Arc<Shared>,
    app: S,
    max_attempts: u32,
    lease: Duration,
    max_window: usize,
    keep_results: Duration,
    body: PhantomData<fn() -> B>,
}

impl SpillHandle {
    /// A drain replaying this layer's jobs into `app`: the whole
    /// application, the `SpillLayer` included (it lets replays through), so
    /// replays pass the same limiter and reach the same handlers as live
    /// requests.
    pub fn drain<S>(&self, app: S) -> Drain<S> {
        Drain {
            shared: Arc::clone(&self.shared),
            app,
            max_attempts: 5,
            lease: Duration::from_secs(30),
            max_window: 256,
            keep_results: Duration::from_secs(3600),
            body: PhantomData,
        }
    }
}

impl<S, B> Drain<S, B> {
    /// Replays with bodies of type `B2` (any type made from `Bytes`), for
    /// services that take one body type only.
    pub fn with_body<B2>(self) -> Drain<S, B2> {
        Drain {
            shared: self.shared,
            app: self.app,
            max_attempts: self.max_attempts,
            lease: self.lease,
            max_window: self.max_window,
            keep_results: self.keep_results,
            body: PhantomData,
        }
    }

    /// Attempts before a job is dead-lettered (default 5, at least 1).
    /// Replays the stack refused for overload do not count.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a replay holds its job (default 30 s); a replay still
    /// running at the end is abandoned and the job is replayed again.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(10));
        self
    }

    /// The most replays in flight at once (default 256, at least 1). The
    /// window stays below it by itself, at what the stack admits; the bound
    /// is on memory: each replay in flight, and each of the up to one and a
    /// half windows of jobs leased and waiting to start, holds its body.
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_window = max.max(1);
        self
    }

    /// How long done and failed jobs are kept for their status (default one
    /// hour).
    #[must_use]
    pub fn keep_results(mut self, keep: Duration) -> Self {
        self.keep_results = keep;
        self
    }
}

/// How one replay ended, as the window sees it.
enum Ended {
    Answered,
    Refused,
    Failed,
}

impl<S, B, RB> Drain<S, B>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: From<Bytes> + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    /// Runs the drain on the current runtime until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run())
    }

    /// The drain's loop, for callers that run it themselves.
    pub async fn run(self) {
        const IDLE_POLL: Duration = Duration::from_millis(250);
        const STATS_EVERY: Duration = Duration::from_millis(200);
        const PRUNE_EVERY: Duration = Duration::from_secs(60);
        let mut window = Window::new(self.max_window);
        let mut running = JoinSet::new();
        // Jobs leased and not yet started, with when they were leased.
        let mut ready: VecDeque<(Instant, Job)> = VecDeque::new();
        // The next lease, taken while the replays of the last one run, so
        // a free slot never waits for the store.
        let mut leasing: Option<LeaseFuture> = None;
        // The last lease found fewer jobs than it asked for: lease again on
        // news of a spill, a replay's end or the idle poll, not at once.
        let mut store_dry = false;
        let finishing = group_commit::finishing(Arc::clone(&self.shared.store));
        let (mut stats_at, mut prune_at) = (Instant::now(), Instant::now() + PRUNE_EVERY);
        loop {
            let now = Instant::now();
            if now >= stats_at {
                if let Ok(stats) = self.shared.store.stats().await {
                    *crate::sync::lock(&self.shared.last_stats) = stats;
                }
                stats_at = now + STATS_EVERY;
            }
            if now >= prune_at {
                let _ = self.shared.store.prune(self.keep_results).await;
                prune_at = now + PRUNE_EVERY;
            }
            // One lease, one transaction, for a whole window of jobs
            // (leasing one per free slot would cost an fsync per job),
            // asked for while half a window is still ready to start.
            if leasing.is_none() && !store_dry && ready.len() <= window.size() / 2 {
                let store = Arc::clone(&self.shared.store);
                let (max, lease) = (window.size(), self.lease);
                leasing = Some(Box::pin(async move {
                    let jobs = store.lease(max, lease).await.unwrap_or_default();
                    (max, Instant::now(), jobs)
                }));
            }
            while running.len() < window.size() {
                let Some((leased_at, job)) = ready.pop_front() else {
                    break;
                };
                // The replay must end within what is left of its lease.
                let left = self.lease.saturating_sub(leased_at.elapsed());
                let replay = replay(
                    Arc::clone(&self.shared),
                    self.app.clone(),
                    finishing.clone(),
                    job,
                    self.max_attempts,
                    left,
                );
                let sent = Instant::now();
                running.spawn(async move { (replay.await, sent) });
            }
            // Wait for a replay to end, a lease to come back, a new job, or
            // the next look at the store (for backoffs that ran out and
            // leases that expired).
            tokio::select! {
                Some(ended) = running.join_next(), if !running.is_empty() => {
                    store_dry = false;
                    match ended {
                        Ok((Ended::Answered, _)) => window.answered(),
                        Ok((Ended::Refused, sent)) => window.refused(sent, Instant::now()),
                        Ok((Ended::Failed, _)) | Err(_) => {}
                    }
                }
                (asked, at, jobs) = async { leasing.as_mut().expect("guarded").await }, if leasing.is_some() => {
                    leasing = None;
                    store_dry = jobs.len() < asked;
                    ready.extend(jobs.into_iter().map(|job| (at, job)));
                }
                () = self.shared.stored.notified(), if store_dry => store_dry = false,
                () = tokio::time::sleep(IDLE_POLL) => store_dry = false,
            }
        }
    }
}

/// A lease in progress: how many jobs it asked for, when it came back, and
/// the jobs.
type LeaseFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (usize, Instant, Vec<Job>)> + Send>>;

/// One attempt at one job.
async fn replay<S, B, RB>(
    shared: Arc<Shared>,
    mut app: S,
    mut finishing: FinishBatch,
    job: Job,
    max_attempts: u32,
    lease: Duration,
) -> Ended
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: From<Bytes>,
    RB: Body<Data = Bytes>,
    RB::Error: Into<BoxError>,
{
    let (id, attempt) = (job.id, job.attempt);
    let request = rebuild::<B>(&job);
    // A replay must end within its lease (less a margin for the store's
    // own write): past it, another drain may already hold the job.
    let within = lease.mul_f64(0.9);
    let outcome = tokio::time::timeout(within, async {
        poll_fn(|cx| app.poll_ready(cx)).await.map_err(Into::into)?;
        let res = app.call(request).await.map_err(Into::into)?;
        Ok::<_, BoxError>(res)
    })
    .await;
    let counters = &shared.counters;
    let (finish, ended) = match outcome {
        Ok(Ok(res)) => match res.extensions().get::<Overloaded>() {
            Some(refusal) => refused(&shared, refusal),
            None if res.status().is_server_error() => failed(
                &shared,
                attempt,
                max_attempts,
                format!("answered {}", res.status()),
            ),
            None => {
                let status = res.status();
                let body = first_bytes(res.into_body(), shared.config.status_body).await;
                counters.replayed.fetch_add(1, Relaxed);
                crate::sync::lock(&shared.pace).record(Instant::now());
                (Finish::Done { status, body }, Ended::Answered)
            }
        },
        Ok(Err(err)) => match crate::find_overloaded(&*err) {
            Some(refusal) => refused(&shared, refusal),
            None => failed(&shared, attempt, max_attempts, format!("failed: {err}")),
        },
        Err(_) => failed(&shared, attempt, max_attempts, "timed out".to_owned()),
    };
    // The app has answered: the slot in the window is free now, and the
    // end is written with the others that ended meanwhile. A store that
    // fails here leaves the job running until its lease ends; then it is
    // replayed again (at least once, never lost).
    tokio::spawn(async move {
        if poll_fn(|cx| finishing.poll_ready(cx)).await.is_ok() {
            let _ = finishing.call((id, attempt, finish)).await;
        }
    });
    ended
}

/// A replay the stack refused for overload: back to the store after the
/// refusal's hint, the attempt not counted.
fn refused(shared: &Shared, refusal: &Overloaded) -> (Finish, Ended) {
    shared.counters.deferred.fetch_add(1, Relaxed);
    let after = refusal.retry_after().unwrap_or(Duration::from_secs(1));
    (
        Finish::Retry {
            after,
            counted: false,
        },
        Ended::Refused,
    )
}

/// A failed attempt: back off and retry, or dead-letter after the last.
fn failed(shared: &Shared, attempt: u32, max_attempts: u32, reason: String) -> (Finish, Ended) {
    if attempt >= max_attempts {
        shared.counters.dead_lettered.fetch_add(1, Relaxed);
        return (Finish::Failed { reason }, Ended::Failed);
    }
    shared.counters.retried.fetch_add(1, Relaxed);
    (
        Finish::Retry {
            after: backoff(attempt),
            counted: true,
        },
        Ended::Failed,
    )
}

/// 1 s, 2 s, 4 s … after attempts 1, 2, 3 …, at most 5 minutes, with up to a
/// quarter more at random so jobs that failed together spread out.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(Duration::from_secs(300));
    base.mul_f64(1.0 + 0.25 * fastrand::f64())
}

fn rebuild<B: From<Bytes>>(job: &Job) -> Request<B> {
    let stored = &job.request;
    let mut req = Request::new(B::from(stored.body.clone()));
    *req.method_mut() = stored.method.clone();
    *req.uri_mut() = stored.uri.clone();
    *req.headers_mut() = stored.headers.clone();
    req.extensions_mut().insert(Replay {
        id: job.id,
        attempt: job.attempt,
    });
    req.extensions_mut().insert(stored.priority);
    req
}

/// Up to `max` bytes of `body`; the rest is not read.
async fn first_bytes<RB>(body: RB, max: usize) -> Bytes
where
    RB: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut kept = BytesMut::new();
    while kept.len() < max {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(max - kept.len());
                    kept.extend_from_slice(&data[..take]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    kept.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_upward_jitter() {
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (40, 300)] {
            let d = backoff(attempt);
            let base = Duration::from_secs(base);
            assert!(
                d >= base && d <= base.mul_f64(1.25),
                "attempt {attempt}: {d:?}"
            );
        }
    }
}
