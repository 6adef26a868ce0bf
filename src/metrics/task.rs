//! [`Publishing`]: a reporter publishing on an interval.

use std::time::Duration;

use tokio::{task::JoinHandle, time::MissedTickBehavior};

use super::MetricsReporter;

/// A [`MetricsReporter`] publishing on a tokio task, from
/// [`MetricsReporter::spawn`]; dropping it stops the task.
#[derive(Debug)]
#[must_use = "dropping the guard stops publishing"]
pub struct Publishing {
    task: JoinHandle<()>,
}

impl Publishing {
    pub(super) fn spawn(reporter: MetricsReporter, period: Duration) -> Self {
        let period = period.max(Duration::from_millis(1));
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            // A late tick publishes once, not once per tick missed.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                reporter.publish();
            }
        });
        Self { task }
    }
}

impl Drop for Publishing {
    fn drop(&mut self) {
        self.task.abort();
    }
}
