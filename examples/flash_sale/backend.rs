//! The shop being protected: four routes over a simulated database.
//!
//! The database has `slots` write slots and takes `service_ms` per write. It
//! gets slower when oversubscribed, as real databases do under lock and
//! connection contention: every request holding or waiting for a slot beyond
//! the slot count adds half a service time, up to five times the base. A write
//! that has started runs to the end even if its client has given up, so work
//! done for timed-out callers is wasted, as it is in a real database.
//!
//! Slots keep time on a virtual clock: a write is booked on the slot that
//! frees first, from the moment it frees, and the caller sleeps until the
//! write's end. Timer granularity then adds a little latency to each write
//! but never costs throughput, so the database sustains exactly
//! `slots / service` writes a second, like a real one, whatever the host's
//! timers do.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Extension, Router, extract::State, http::StatusCode, routing::post};
use tokio::time::Instant;
use tower_spillway::spill::Replay;

#[derive(Debug)]
pub struct Database {
    /// When each slot is next free.
    free_at: Mutex<Vec<Instant>>,
    slot_count: usize,
    service: Duration,
    /// Requests holding or waiting for a slot.
    active: AtomicUsize,
    /// Writes done for replayed (spilled) requests.
    replayed: AtomicU64,
    /// Whether oversubscription slows every write down.
    contended: bool,
}

impl Database {
    pub fn new(slots: usize, service: Duration) -> Arc<Self> {
        Self::with_contention(slots, service, true)
    }

    /// A database that takes `service` per write however many wait: an
    /// ideal backend, for measuring how much of it a caller uses (the
    /// drain bench does; the examples that share this file do not).
    #[allow(dead_code)]
    pub fn uncontended(slots: usize, service: Duration) -> Arc<Self> {
        Self::with_contention(slots, service, false)
    }

    fn with_contention(slots: usize, service: Duration, contended: bool) -> Arc<Self> {
        Arc::new(Self {
            free_at: Mutex::new(vec![Instant::now(); slots]),
            slot_count: slots,
            service,
            active: AtomicUsize::new(0),
            replayed: AtomicU64::new(0),
            contended,
        })
    }

    /// Writes per second the database sustains when not oversubscribed.
    pub fn capacity_rps(&self) -> f64 {
        self.slot_count as f64 / self.service.as_secs_f64()
    }

    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Requests holding or waiting for a slot.
    pub fn busy(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Writes done for replayed requests: what a spill drain delivered.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }

    /// One write. It runs on its own task, so a caller that goes away does not
    /// stop it.
    pub async fn write(self: &Arc<Self>) {
        let db = Arc::clone(self);
        let task = tokio::spawn(async move {
            let active = db.active.fetch_add(1, Ordering::Relaxed) + 1;
            let over = active.saturating_sub(db.slot_count) as f64 / db.slot_count as f64;
            let slowdown = if db.contended {
                (1.0 + 0.5 * over).min(5.0)
            } else {
                1.0
            };
            let end = {
                let mut free_at = db.free_at.lock().expect("never poisoned");
                let now = Instant::now();
                let (slot, free) = free_at
                    .iter()
                    .copied()
                    .enumerate()
                    .min_by_key(|(_, t)| *t)
                    .expect("at least one slot");
                let end = free.max(now) + db.service.mul_f64(slowdown);
                free_at[slot] = end;
                end
            };
            tokio::time::sleep_until(end).await;
            db.active.fetch_sub(1, Ordering::Relaxed);
        });
        let _ = task.await;
    }
}

async fn write(
    State(db): State<Arc<Database>>,
    replay: Option<Extension<Replay>>,
) -> (StatusCode, &'static str) {
    db.write().await;
    if replay.is_some() {
        db.replayed.fetch_add(1, Ordering::Relaxed);
    }
    (StatusCode::OK, "{\"ok\":true}")
}

/// The four routes of the sale, each a database write.
pub fn app(db: Arc<Database>) -> Router {
    Router::new()
        .route("/payments", post(write))
        .route("/orders", post(write))
        .route("/likes", post(write))
        .route("/analytics", post(write))
        .with_state(db)
}
