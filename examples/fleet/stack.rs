//! The fleet: instances of the crate's stack over one database, and the
//! balancer in front of them.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::Router;
use http::Method;
use tower_spillway::{
    Priority,
    key::key_fn,
    limit::{AdaptiveLimitLayer, Gradient, LimitHandle},
    priority::{Cohorts, PriorityLayer, RouteTable},
    shed::{Adaptive, PriorityShedLayer, ShedHandle},
};

use crate::backend::{Database, app};

/// The header naming the caller; its value is the caller's id.
pub const CALLER: &str = "x-caller";

/// One instance: the README's stack over its own copy of the shop, sharing
/// only the database with the others.
pub struct Instance {
    pub app: Router,
    pub limit: LimitHandle,
    pub shed: ShedHandle,
    /// Requests the balancer has sent here that are not answered yet: what a
    /// least-loaded balancer sees of an instance.
    pub in_flight: AtomicUsize,
}

impl Instance {
    /// Builds an instance as the README builds its stack: the route table,
    /// and every other number a default. The one addition is caller cohorts,
    /// so that a tier the shedder cuts through is shed by caller, the same
    /// callers on every instance.
    pub fn new(db: Arc<Database>) -> Self {
        let routes = RouteTable::new()
            .route(Some(Method::POST), "/payments", Priority::Critical)
            .route(None, "/orders", Priority::High)
            .route(None, "/likes", Priority::Default)
            .route(None, "/analytics", Priority::Low);
        let limit = AdaptiveLimitLayer::builder(Gradient::default())
            .http()
            .build();
        let limit_handle = limit.handle();
        let shed = PriorityShedLayer::builder(Adaptive::default())
            .signal(limit_handle.clone())
            .http()
            .build();
        let shed_handle = shed.handle();
        let app = app(db)
            .layer(limit)
            .layer(shed)
            .layer(PriorityLayer::new(routes).cohorts(Cohorts::new(key_fn(caller_id))));
        Self {
            app,
            limit: limit_handle,
            shed: shed_handle,
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// The caller's id, as every instance reads it: the number in the header,
/// which hashes the same in every process. (`rate::HeaderKey` would do in
/// one process, but its digest is keyed by a secret of its process, so two
/// processes would put one caller in different cohorts.)
fn caller_id(req: &http::Request<axum::body::Body>) -> Option<u64> {
    req.headers().get(CALLER)?.to_str().ok()?.parse().ok()
}

/// How the balancer picks an instance for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balancer {
    /// Each instance in turn.
    RoundRobin,
    /// Two instances at random, the one with fewer requests in flight
    /// (Mitzenmacher's power of two choices, as Envoy and linkerd balance).
    TwoChoices,
}

impl Balancer {
    pub const ALL: [Balancer; 2] = [Balancer::RoundRobin, Balancer::TwoChoices];

    pub fn name(self) -> &'static str {
        match self {
            Balancer::RoundRobin => "round-robin",
            Balancer::TwoChoices => "p2c",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The instances and the balancer in front of them.
pub struct Fleet {
    pub instances: Vec<Instance>,
    balancer: Balancer,
    next: AtomicUsize,
}

impl Fleet {
    pub fn new(count: usize, balancer: Balancer, db: &Arc<Database>) -> Self {
        Self {
            instances: (0..count).map(|_| Instance::new(Arc::clone(db))).collect(),
            balancer,
            next: AtomicUsize::new(0),
        }
    }

    /// The instance the next request goes to.
    pub fn pick(&self) -> usize {
        let n = self.instances.len();
        match self.balancer {
            Balancer::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::TwoChoices if n == 1 => 0,
            Balancer::TwoChoices => {
                let a = fastrand::usize(..n);
                // A second instance, distinct from the first.
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let load = |i: usize| self.instances[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        }
    }

    /// Critical requests the instances' shedders refused (the rest of
    /// Critical's refusals are their limiters').
    pub fn critical_shed(&self) -> u64 {
        self.instances
            .iter()
            .map(|i| i.shed.snapshot().shed.critical)
            .sum()
    }

    /// The limiters' refusals, summed over the instances, by reason.
    pub fn limiter_refusals(&self) -> serde_json::Value {
        let snapshots: Vec<_> = self.instances.iter().map(|i| i.limit.snapshot()).collect();
        let sum = |f: fn(&tower_spillway::limit::LimitSnapshot) -> u64| {
            snapshots.iter().map(f).sum::<u64>()
        };
        serde_json::json!({
            "queue_full": sum(|s| s.rejected_queue_full),
            "queue_timeout": sum(|s| s.rejected_queue_timeout),
            "expected_wait": sum(|s| s.rejected_expected_wait),
            "while_waiting": sum(|s| s.rejected_while_waiting),
            "deadline": sum(|s| s.rejected_deadline),
        })
    }

    /// The instances' concurrency limits now.
    pub fn limits(&self) -> Vec<usize> {
        self.instances.iter().map(|i| i.limit.limit()).collect()
    }
}
