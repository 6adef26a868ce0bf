//! Queue slots: how many items may wait in front of the worker.
//!
//! A tokio `Semaphore` counts them, but an item does not carry an
//! `OwnedSemaphorePermit` (an `Arc` clone and drop, and a locked release,
//! per item). A handle takes a permit and forgets it; the worker gives back
//! the slots of the items it took out of the queue, together, once per pass
//! over the queue. Items still queued when the worker is dropped are never
//! given back: the worker closes the semaphore instead, which tells every
//! handle waiting for room that it stopped.

use std::sync::Arc;

use tokio::sync::{Semaphore, TryAcquireError};

/// A handle's side: a slot reserved by `poll_ready` and not yet used by
/// `call`, given back if the handle is dropped first.
#[derive(Debug)]
pub(super) struct Reservation {
    semaphore: Arc<Semaphore>,
    held: bool,
}

impl Reservation {
    pub(super) fn new(semaphore: Arc<Semaphore>) -> Self {
        Self {
            semaphore,
            held: false,
        }
    }

    pub(super) fn semaphore(&self) -> &Arc<Semaphore> {
        &self.semaphore
    }

    pub(super) fn is_held(&self) -> bool {
        self.held
    }

    /// Takes a slot now if one is free and holds it for the next `call`.
    pub(super) fn try_reserve(&mut self) -> Result<(), TryAcquireError> {
        if !self.held {
            self.semaphore.try_acquire()?.forget();
            self.held = true;
        }
        Ok(())
    }

    /// Holds a slot acquired elsewhere (by a handle that waited for room).
    pub(super) fn hold(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        permit.forget();
        if self.held {
            // Already holding one: give the extra back.
            self.semaphore.add_permits(1);
        }
        self.held = true;
    }

    /// The slot for one item: the held one, or a free one taken now. From
    /// here on the item owns it, and the worker gives it back.
    pub(super) fn take(&mut self) -> Result<(), TryAcquireError> {
        self.try_reserve()?;
        self.held = false;
        Ok(())
    }

    /// Gives back the slot of an item that never reached the queue.
    pub(super) fn give_back(&self) {
        self.semaphore.add_permits(1);
    }

    /// Another handle's reservation: nothing held yet.
    pub(super) fn fresh(&self) -> Self {
        Self::new(self.semaphore.clone())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            self.semaphore.add_permits(1);
        }
    }
}

/// The worker's side: counts the items taken out of the queue and gives
/// their slots back in one go; closes the semaphore when dropped.
#[derive(Debug)]
pub(super) struct Release {
    semaphore: Arc<Semaphore>,
    pending: usize,
}

impl Release {
    pub(super) fn new(semaphore: Arc<Semaphore>) -> Self {
        Self {
            semaphore,
            pending: 0,
        }
    }

    /// One item left the queue.
    pub(super) fn one(&mut self) {
        self.pending += 1;
    }

    /// Gives back the slots counted so far.
    pub(super) fn flush(&mut self) {
        if self.pending > 0 {
            self.semaphore.add_permits(self.pending);
            self.pending = 0;
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.semaphore.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_comes_back_once() {
        let semaphore = Arc::new(Semaphore::new(2));
        let mut release = Release::new(semaphore.clone());
        let mut a = Reservation::new(semaphore.clone());
        let mut b = a.fresh();

        a.try_reserve().unwrap();
        a.try_reserve().unwrap();
        assert_eq!(
            semaphore.available_permits(),
            1,
            "reserving twice holds one"
        );
        a.take().unwrap(); // the held slot goes to an item
        b.take().unwrap(); // the last free one
        assert!(a.take().is_err(), "full");
        assert_eq!(semaphore.available_permits(), 0);

        // The worker took both items out.
        release.one();
        release.one();
        release.flush();
        assert_eq!(semaphore.available_permits(), 2);

        // A held slot comes back with its handle.
        b.try_reserve().unwrap();
        drop(b);
        assert_eq!(semaphore.available_permits(), 2);

        // One that waited for room and already held one gives the extra back.
        a.try_reserve().unwrap();
        let permit = semaphore.clone().try_acquire_owned().unwrap();
        a.hold(permit);
        assert_eq!(semaphore.available_permits(), 1);

        drop(release);
        assert!(semaphore.is_closed());
        assert!(matches!(a.fresh().take(), Err(TryAcquireError::Closed)));
    }
}
