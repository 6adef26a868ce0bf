//! [`RedisStore`]: the handle services hold on a Redis-backed limit.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use tokio::sync::{mpsc, oneshot};

use super::{
    Fallback, RedisClient, RedisKey, RedisOptions,
    name::bucket,
    script::Answer,
    shared::{Cause, Shared},
    worker::{Check, MAX_BATCH, Worker},
};
use crate::{
    rate::{
        Quota,
        gcra::{Decision, Limiter, current_field},
    },
    sync::lock,
};

/// Checks queued for Redis before new ones are decided locally: a few full
/// batches. Past that Redis is not keeping up, and waiting longer would
/// only spend the timeout.
pub(super) const QUEUE: usize = 8 * MAX_BATCH;

/// The GCRA state of a [`RateLimitLayer`](crate::rate::RateLimitLayer) kept
/// in Redis, shared by every instance configured with the same
/// [`prefix`](RedisOptions::new); built by
/// [`RateLimitBuilder::redis`](crate::rate::RateLimitBuilder::redis).
///
/// Cheap to clone: every service of the layer holds one, and all of them
/// queue their checks to one task, which batches them (see the
/// [module docs](crate::rate#shared-quotas-in-redis)).
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    checks: mpsc::Sender<Check>,
    /// The worker, until it is started on the runtime building the layer,
    /// or else on the one serving the first check (building the layer
    /// needs no runtime).
    worker: Mutex<Option<Worker>>,
    started: AtomicBool,
}

/// How a check goes on after it is queued or not.
#[derive(Debug)]
pub(crate) enum Started {
    /// Redis will answer, or the fallback after the timeout.
    Waiting(oneshot::Receiver<Answer>),
    /// Decide by the fallback now.
    Fallback,
}

impl RedisStore {
    /// `adopted` gives the local fallback its share: of a quota another
    /// instance set, or among a new count of instances.
    pub(crate) fn new(
        client: RedisClient,
        options: &RedisOptions,
        quota: Quota,
        adopted: Box<dyn Fn(Quota) + Send + Sync>,
    ) -> Self {
        let shared = Arc::new(Shared::new(quota, options));
        let (checks, rx) = mpsc::channel(QUEUE);
        let worker = Worker {
            client,
            checks: rx,
            shared: Arc::clone(&shared),
            adopted,
        };
        let store = Self {
            inner: Arc::new(Inner {
                shared,
                checks,
                worker: Mutex::new(Some(worker)),
                started: AtomicBool::new(false),
            }),
        };
        // Connect now if a runtime is running, so that the first requests
        // do not wait for the connection; else the first check starts it.
        store.start();
        store
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Starts the worker on the current runtime; `false` outside one.
    #[cold]
    fn start(&self) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if let Some(worker) = lock(&self.inner.worker).take() {
            runtime.spawn(worker.run());
        }
        self.inner.started.store(true, Ordering::Release);
        true
    }

    /// Queues a check of `key` for Redis, unless the limit is in fallback
    /// (or the queue is full, or there is no runtime to run the worker on).
    pub(crate) fn start_check<K: RedisKey>(&self, key: &K) -> Started {
        if !self.inner.started.load(Ordering::Acquire) && !self.start() {
            return Started::Fallback;
        }
        let shared = &self.inner.shared;
        if shared.in_fallback() {
            return Started::Fallback;
        }
        let (reply, answer) = oneshot::channel();
        let check = Check {
            bucket: bucket(&shared.prefix, key),
            reply,
        };
        match self.inner.checks.try_send(check) {
            Ok(()) => Started::Waiting(answer),
            Err(mpsc::error::TrySendError::Full(_)) => Started::Fallback,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                shared.enter_fallback(Cause::Error);
                Started::Fallback
            }
        }
    }

    /// Redis's answer as a decision under the fleet's quota.
    ///
    /// An admission is also charged to the local fallback's bucket for
    /// `key`, so that it follows what this instance really admits: an
    /// instance taking more than its share of the fleet's quota has an
    /// empty local bucket, and a check that times out there is refused
    /// rather than admitted on top of the shared quota. (The charge is one
    /// local GCRA step, tens of nanoseconds beside a round trip.)
    pub(crate) fn decide<K: std::hash::Hash + Eq + Clone>(
        &self,
        local: &Limiter<K>,
        key: &K,
        answer: Answer,
        want_fields: bool,
    ) -> Decision {
        let shared = &self.inner.shared;
        let fleet = shared.fleet();
        match answer {
            Answer::Allow { remaining } => {
                shared.count(true, true);
                let _ = local.check(key, false);
                let fields = want_fields.then(|| {
                    let spent = fleet.quota.burst_size().saturating_sub(remaining);
                    let reset = fleet.quota.replenish_interval() * spent;
                    (fleet.policy.clone(), current_field(remaining, reset))
                });
                Decision::Allow { remaining, fields }
            }
            Answer::Deny { wait } => {
                shared.count(false, true);
                Decision::Deny {
                    wait,
                    policy: fleet.policy.clone(),
                }
            }
        }
    }

    /// The fallback policy's decision for `key`.
    pub(crate) fn fallback<K: std::hash::Hash + Eq + Clone>(
        &self,
        local: &Limiter<K>,
        key: &K,
        want_fields: bool,
    ) -> Decision {
        let shared = &self.inner.shared;
        let decision = match shared.fallback_policy {
            Fallback::LocalShare => local.check(key, want_fields),
            Fallback::Allow => Decision::Allow {
                remaining: 0,
                fields: None,
            },
            Fallback::Refuse => Decision::Deny {
                // Redis is probed this often: no sooner can an answer change.
                wait: shared.probe_interval,
                policy: shared.fleet().policy.clone(),
            },
        };
        shared.count(matches!(decision, Decision::Allow { .. }), false);
        decision
    }
}
