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
    drain_handle::{DrainHandle, DrainShared},
    group_commit::{self, FinishBatch},
    handle::SpillHandle,
    job::{Finish, Job},
    source::{Discarded, DrainSource, Ending},
    store::StoreError,
    window::Window,
};

/// How a [`SpillHandle::drain`] replays: built by it, started by
/// [`spawn`](Self::spawn).
///
/// The drain keeps a window of replays in flight, like a TCP sender: it
/// starts at 4, doubles each round trip until the stack first refuses a
/// replay for overload, then grows by one per round and falls to 0.7 of
/// itself on a refusal, once per round trip (the refused job goes back to
/// the store, its attempt not counted). So the application's own limiter
/// sets the pace, and live traffic, which the limiter ranks by priority as
/// usual, keeps its share. A slot of the window is free again as soon as
/// the application has answered (the end is written with the others that
/// ended meanwhile), and a store's next window of jobs is leased while half
/// of the last one is still waiting to start, so the application never
/// waits on the store between replays.
///
/// At the narrowest window, a refusal also stops the drain from leasing
/// for the refusal's hint (at most 2 s): while the stack throttles,
/// jobs stay on their source instead of being taken to be refused. A
/// source that fails (a database or Redis down) is retried after a backoff
/// that doubles up to 2 s; nothing panics, and the drain resumes
/// when the source answers again.
///
/// Replayed requests have bodies of type `B`, [`Full<Bytes>`] unless
/// [`with_body`](Self::with_body) says otherwise; an axum `Router` takes any.
#[derive(Debug)]
pub struct Drain<S, B = Full<Bytes>> {
    shared: Arc<DrainShared>,
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
        Drain::with_shared(Arc::clone(&self.shared.drain), app)
    }
}

/// The longest a drain stops leasing: after a refusal at its narrowest
/// window, or between tries of a source that fails.
const MAX_HOLD: Duration = Duration::from_secs(2);

impl<S> Drain<S> {
    /// A drain replaying the jobs of `source` into `app`, the whole
    /// application, so that replays pass the same limiter as live requests.
    /// [`handle`](Self::handle) reads its figures. (A `SpillLayer`'s drain
    /// is made by [`SpillHandle::drain`] instead.)
    pub fn new(source: impl DrainSource, app: S) -> Self {
        // Only a `SpillLayer` serves job status, so only its drain keeps
        // the first bytes of answers.
        Self::with_shared(Arc::new(DrainShared::new(Arc::new(source), 0)), app)
    }

    fn with_shared(shared: Arc<DrainShared>, app: S) -> Self {
        Drain {
            shared,
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
    /// The handle on this drain's figures and its source's.
    pub fn handle(&self) -> DrainHandle {
        DrainHandle {
            shared: Arc::clone(&self.shared),
        }
    }

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
    /// Refused for overload, with the refusal's hint.
    Refused(Duration),
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
        let source = Arc::clone(&self.shared.source);
        let mut window = Window::new(self.max_window);
        let mut running = JoinSet::new();
        // Jobs leased and not yet started, with when they were leased.
        let mut ready: VecDeque<(Instant, Job)> = VecDeque::new();
        // The next lease, taken while the replays of the last one run, on
        // a task of its own: it may hold one of the source's connections
        // while this loop awaits another (the source's figures), and a
        // future only this loop polls would then wait on itself.
        let mut leasing: Option<LeaseTask> = None;
        // The last lease found fewer jobs than it asked for: lease again on
        // news of a spill, a replay's end or the idle poll, not at once.
        let mut dry = false;
        let finishing = group_commit::finishing(Arc::clone(&source));
        let (mut stats_at, mut prune_at) = (Instant::now(), Instant::now() + PRUNE_EVERY);
        // No lease before this: the stack refused at the narrowest window,
        // or the source failed.
        let mut hold_until: Option<Instant> = None;
        let mut failing = SourceFailures::default();
        loop {
            let now = Instant::now();
            // A failing source is not asked for its figures: each ask would
            // wait out its timeout too. The next lease that works resumes them.
            if now >= stats_at && failing.count == 0 {
                if let Ok(discarded) = source.discard().await {
                    self.count_discarded(&discarded);
                }
                let _ = self.shared.read_stats().await;
                stats_at = now + STATS_EVERY;
            }
            if now >= prune_at {
                let _ = source.prune(self.keep_results).await;
                prune_at = now + PRUNE_EVERY;
            }
            // A store takes a whole window in one lease (one transaction, not
            // an fsync per job), asked for while half a window is still
            // ready to start; a stream takes only the slots nothing fills
            // yet, so its backlog stays on the source.
            let free = window.size().saturating_sub(running.len() + ready.len());
            let want = source.lease_size(free, window.size());
            let held = hold_until.is_some_and(|until| now < until);
            if leasing.is_none() && !dry && !held && want > 0 && ready.len() <= window.size() / 2 {
                let (source, lease) = (Arc::clone(&source), self.lease);
                leasing = Some(LeaseTask(tokio::spawn(async move {
                    let leased = source.lease(want, lease).await;
                    (want, Instant::now(), leased)
                })));
            }
            while running.len() < window.size() {
                let Some((leased_at, job)) = ready.pop_front() else {
                    break;
                };
                // The replay must end within what is left of its lease.
                let left = self.lease.saturating_sub(leased_at.elapsed());
                let at = Instant::now();
                let attempt = replay(
                    Arc::clone(&self.shared),
                    self.app.clone(),
                    finishing.clone(),
                    job,
                    self.max_attempts,
                    left,
                );
                running.spawn(async move { (at, attempt.await) });
            }
            // Wait for a replay to end, a lease to come back, a new job, the
            // end of a hold, or the next look at the source (for backoffs
            // that ran out and leases that expired).
            let wake = match hold_until {
                Some(until) if until > Instant::now() => until,
                _ => Instant::now() + IDLE_POLL,
            };
            let in_flight = &self.shared.counters.in_flight;
            in_flight.store(running.len() as u64, Relaxed);
            tokio::select! {
                Some(ended) = running.join_next(), if !running.is_empty() => {
                    dry = false;
                    match ended {
                        Ok((_, Ended::Answered)) => window.answered(),
                        Ok((started, Ended::Refused(after))) => {
                            let narrowest = window.size() <= 1;
                            let now = Instant::now();
                            // At the narrowest window the stack still
                            // refuses: leave the jobs on the source a while.
                            if window.refused(started, now) && narrowest {
                                hold_until = Some(now + after.min(MAX_HOLD));
                            }
                        }
                        Ok((_, Ended::Failed)) | Err(_) => {}
                    }
                }
                lease = async { (&mut leasing.as_mut().expect("guarded").0).await }, if leasing.is_some() => {
                    leasing = None;
                    // A lease task that panicked leased nothing it returned:
                    // what it took comes back when the lease ends.
                    let (asked, at, leased) = lease.unwrap_or_else(|e| {
                        (0, Instant::now(), Err(StoreError::new(e)))
                    });
                    match leased {
                        Ok(jobs) => {
                            failing.recovered();
                            hold_until = None;
                            dry = jobs.len() < asked;
                            ready.extend(jobs.into_iter().map(|job| (at, job)));
                        }
                        Err(_err) => {
                            let wait = failing.failed();
                            #[cfg(feature = "tracing")]
                            if failing.count == 1 {
                                tracing::warn!(error = %_err, retry_ms = wait.as_millis() as u64, "drain source unavailable; backing off");
                            }
                            hold_until = Some(Instant::now() + wait);
                        }
                    }
                }
                () = self.shared.stored.notified(), if dry && hold_until.is_none() => dry = false,
                () = tokio::time::sleep_until(wake) => dry = false,
            }
        }
    }

    /// Counts and logs what the source discarded: never silently.
    fn count_discarded(&self, discarded: &[Discarded]) {
        for d in discarded.iter().filter(|d| d.jobs > 0) {
            self.shared.counters.discarded[d.priority.index()].fetch_add(d.jobs, Relaxed);
            #[cfg(feature = "tracing")]
            tracing::warn!(
                priority = d.priority.as_str(),
                discarded = d.jobs,
                oldest_ms = d.oldest.as_millis() as u64,
                reason = d.why.as_str(),
                "drain source discarded jobs"
            );
        }
    }
}

/// A lease in progress: how many jobs it asked for, when it came back, and
/// what it got. Aborted with the drain.
struct LeaseTask(tokio::task::JoinHandle<(usize, Instant, Result<Vec<Job>, StoreError>)>);

impl Drop for LeaseTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The source's failures in a row, and the backoff they earn.
#[derive(Default)]
struct SourceFailures {
    count: u32,
}

impl SourceFailures {
    /// One more failure: how long to wait before the next try (250 ms,
    /// doubling, at most [`MAX_HOLD`]).
    fn failed(&mut self) -> Duration {
        self.count = self.count.saturating_add(1);
        Duration::from_millis(250)
            .saturating_mul(1 << self.count.saturating_sub(1).min(8))
            .min(MAX_HOLD)
    }

    fn recovered(&mut self) {
        #[cfg(feature = "tracing")]
        if self.count > 0 {
            tracing::info!(failures = self.count, "drain source answering again");
        }
        self.count = 0;
    }
}

/// One attempt at one job.
async fn replay<S, B, RB>(
    shared: Arc<DrainShared>,
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
    let (id, attempt, priority) = (job.id, job.attempt, job.request.priority);
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
                let body = first_bytes(res.into_body(), shared.status_body).await;
                (Finish::Done { status, body }, Ended::Answered)
            }
        },
        Ok(Err(err)) => match crate::find_overloaded(&*err) {
            Some(refusal) => refused(&shared, refusal),
            None => failed(&shared, attempt, max_attempts, format!("failed: {err}")),
        },
        Err(_) => failed(&shared, attempt, max_attempts, "timed out".to_owned()),
    };
    // Replays and dead letters count once the source has recorded them,
    // so a snapshot never shows a job done that its status calls running.
    let (done, dead) = (
        matches!(finish, Finish::Done { .. }),
        matches!(finish, Finish::Failed { .. }),
    );
    let ending = Ending {
        id,
        priority,
        attempt,
        how: finish,
    };
    // The app has answered: the slot in the window is free now, and the
    // end is written with the others that ended meanwhile. A source that
    // fails here leaves the job leased until its lease ends; then it is
    // replayed again (at least once, never lost).
    let answered = matches!(ended, Ended::Answered);
    tokio::spawn(async move {
        let written = poll_fn(|cx| finishing.poll_ready(cx)).await.is_ok()
            && finishing.call(ending).await.is_ok();
        let counters = &shared.counters;
        if written && done {
            counters.replayed.fetch_add(1, Relaxed);
            if answered {
                crate::sync::lock(&shared.pace).record(Instant::now());
            }
        } else if written && dead {
            counters.dead_lettered.fetch_add(1, Relaxed);
        }
    });
    ended
}

/// A replay the stack refused for overload: back to the store after the
/// refusal's hint, at most [`MAX_HOLD`], the attempt not counted. A hint
/// is written for clients (a shedder with no completions to measure sends
/// its cap, tens of seconds); the drain paces itself by its window, so a
/// job it was refused need not wait longer than the drain does itself.
fn refused(shared: &DrainShared, refusal: &Overloaded) -> (Finish, Ended) {
    shared.counters.deferred.fetch_add(1, Relaxed);
    let after = refusal
        .retry_after()
        .unwrap_or(Duration::from_secs(1))
        .min(MAX_HOLD);
    (
        Finish::Retry {
            after,
            counted: false,
        },
        Ended::Refused(after),
    )
}

/// A failed attempt: back off and retry, or dead-letter after the last.
fn failed(
    shared: &DrainShared,
    attempt: u32,
    max_attempts: u32,
    reason: String,
) -> (Finish, Ended) {
    if attempt >= max_attempts {
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
    use std::{convert::Infallible, sync::atomic::AtomicUsize};

    use http::Method;

    use super::*;
    use crate::{
        Priority,
        spill::{JobId, NewJob, StoreFuture, StoreStats},
    };

    /// A source with one connection, as a pool's slot is: a lease holds it
    /// across an await, and reading the figures waits for it.
    struct OneConnection {
        connection: tokio::sync::Mutex<()>,
        queued: std::sync::Mutex<VecDeque<Job>>,
        done: AtomicUsize,
    }

    impl DrainSource for OneConnection {
        fn lease(&self, max: usize, _lease: Duration) -> StoreFuture<'_, Vec<Job>> {
            Box::pin(async move {
                let _held = self.connection.lock().await;
                // The round trip: this future must be polled again to end.
                tokio::time::sleep(Duration::from_millis(3)).await;
                let mut queued = crate::sync::lock(&self.queued);
                let n = max.min(queued.len());
                Ok(queued.drain(..n).collect())
            })
        }

        fn finish_many(&self, endings: Vec<Ending>) -> StoreFuture<'_, Vec<bool>> {
            Box::pin(async move {
                let _held = self.connection.lock().await;
                self.done.fetch_add(endings.len(), Relaxed);
                Ok(vec![true; endings.len()])
            })
        }

        fn stats(&self) -> StoreFuture<'_, StoreStats> {
            Box::pin(async move {
                let _held = self.connection.lock().await;
                Ok(StoreStats::default())
            })
        }
    }

    fn job(n: u64) -> Job {
        Job {
            id: JobId { seq: n, tag: n },
            request: NewJob {
                priority: Priority::Default,
                method: Method::POST,
                uri: "/likes".parse().unwrap(),
                headers: http::HeaderMap::new(),
                body: Bytes::new(),
                idempotency_key: None,
            },
            attempt: 1,
            waited: Duration::ZERO,
        }
    }

    /// The drain reads its source's figures while its next lease may hold
    /// the source's only connection: the lease runs on a task of its own,
    /// so the drain never waits on a future only it would poll.
    #[tokio::test(start_paused = true)]
    async fn a_lease_holding_the_sources_connection_never_stalls_the_drain() {
        const JOBS: u64 = 2_000;
        let source = Arc::new(OneConnection {
            connection: tokio::sync::Mutex::new(()),
            queued: std::sync::Mutex::new((0..JOBS).map(job).collect()),
            done: AtomicUsize::new(0),
        });
        struct Shared(Arc<OneConnection>);
        impl DrainSource for Shared {
            fn lease(&self, max: usize, lease: Duration) -> StoreFuture<'_, Vec<Job>> {
                self.0.lease(max, lease)
            }
            fn finish_many(&self, endings: Vec<Ending>) -> StoreFuture<'_, Vec<bool>> {
                self.0.finish_many(endings)
            }
            fn stats(&self) -> StoreFuture<'_, StoreStats> {
                self.0.stats()
            }
        }
        let app = tower::service_fn(|_: Request<Full<Bytes>>| async {
            // Replays end at scattered instants, some while a lease is under
            // way, and the drain runs long enough to read its figures many
            // times.
            tokio::time::sleep(Duration::from_micros(fastrand::u64(1_000..9_000))).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        });
        // A narrow window: many leases, and seconds of draining.
        let drain = Drain::new(Shared(Arc::clone(&source)), app)
            .max_in_flight(4)
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(600);
        while source.done.load(Relaxed) < JOBS as usize {
            assert!(
                Instant::now() < deadline,
                "the drain stalled at {} of {JOBS}",
                source.done.load(Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drain.abort();
    }

    #[test]
    fn a_failing_source_is_retried_after_a_doubling_wait_up_to_the_hold_cap() {
        let mut failing = SourceFailures::default();
        let waits: Vec<u64> = (0..6)
            .map(|_| failing.failed().as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
        failing.recovered();
        assert_eq!(failing.failed(), Duration::from_millis(250));
    }

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
