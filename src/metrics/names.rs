//! Every metric's name and label key, in one place: the table in the
//! module's docs lists the same, and a test checks that they agree.

/// The label naming the layer instance: the limiter's own name, or the
/// name given to the reporter.
pub(crate) const LAYER: &str = "layer";
pub(crate) const PRIORITY: &str = "priority";
pub(crate) const REASON: &str = "reason";

pub(crate) const LIMIT_CONCURRENCY_LIMIT: &str = "spillway_limit_concurrency_limit";
pub(crate) const LIMIT_IN_FLIGHT: &str = "spillway_limit_in_flight";
pub(crate) const LIMIT_QUEUED: &str = "spillway_limit_queued";
pub(crate) const LIMIT_OLDEST_WAIT_SECONDS: &str = "spillway_limit_oldest_wait_seconds";
pub(crate) const LIMIT_SERVICE_RATE: &str = "spillway_limit_service_rate";
pub(crate) const LIMIT_ADMITTED_TOTAL: &str = "spillway_limit_admitted_total";
pub(crate) const LIMIT_QUEUED_TOTAL: &str = "spillway_limit_queued_total";
pub(crate) const LIMIT_REJECTED_TOTAL: &str = "spillway_limit_rejected_total";
pub(crate) const LIMIT_EVICTED_TOTAL: &str = "spillway_limit_evicted_total";
pub(crate) const LIMIT_SAMPLES_TOTAL: &str = "spillway_limit_samples_total";
pub(crate) const LIMIT_DROPS_TOTAL: &str = "spillway_limit_drops_total";
pub(crate) const LIMIT_QUEUE_WAIT_SECONDS: &str = "spillway_limit_queue_wait_seconds";
pub(crate) const LIMIT_RTT_SECONDS: &str = "spillway_limit_rtt_seconds";

pub(crate) const SHED_ADMITTED_TOTAL: &str = "spillway_shed_admitted_total";
pub(crate) const SHED_REJECTED_TOTAL: &str = "spillway_shed_rejected_total";
pub(crate) const SHED_BYPASSED_TOTAL: &str = "spillway_shed_bypassed_total";
pub(crate) const SHED_IN_FLIGHT: &str = "spillway_shed_in_flight";
pub(crate) const SHED_ADMISSION_LEVEL: &str = "spillway_shed_admission_level";
pub(crate) const SHED_RETRY_AFTER_SECONDS: &str = "spillway_shed_retry_after_seconds";

pub(crate) const DEGRADE_LOAD_LEVEL: &str = "spillway_degrade_load_level";
pub(crate) const DEGRADE_TRANSITIONS_TOTAL: &str = "spillway_degrade_transitions_total";
pub(crate) const DEGRADE_FALLBACKS_TOTAL: &str = "spillway_degrade_fallbacks_total";

#[cfg(feature = "http")]
pub(crate) const RATE_ADMITTED_TOTAL: &str = "spillway_rate_admitted_total";
#[cfg(feature = "http")]
pub(crate) const RATE_REJECTED_TOTAL: &str = "spillway_rate_rejected_total";
#[cfg(feature = "http")]
pub(crate) const RATE_KEYS: &str = "spillway_rate_keys";

#[cfg(feature = "http")]
pub(crate) const CLIENT_CALLS_TOTAL: &str = "spillway_client_calls_total";
#[cfg(feature = "http")]
pub(crate) const CLIENT_RETRIES_TOTAL: &str = "spillway_client_retries_total";
#[cfg(feature = "http")]
pub(crate) const CLIENT_RETRIES_REFUSED_TOTAL: &str = "spillway_client_retries_refused_total";
#[cfg(feature = "http")]
pub(crate) const CLIENT_HINTS_OVER_CAP_TOTAL: &str = "spillway_client_hints_over_cap_total";
#[cfg(feature = "http")]
pub(crate) const CLIENT_COOLDOWNS_TOTAL: &str = "spillway_client_cooldowns_total";
#[cfg(feature = "http")]
pub(crate) const CLIENT_COOLDOWN_REMAINING_SECONDS: &str =
    "spillway_client_cooldown_remaining_seconds";
