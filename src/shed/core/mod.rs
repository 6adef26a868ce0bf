//! The pure decision core: static thresholds, the adaptive admission level,
//! and the retry hint. No async, no Tower types: plain values fed
//! observations and asked for decisions, so every rule is tested with vectors.

mod adaptive;
mod meter;
mod thresholds;

pub use adaptive::{Adaptive, AdaptiveBuilder};
pub(crate) use adaptive::{Controller, Movement, SLOTS, Window, admits_at};
pub(crate) use meter::{RateMeter, drain_time};
pub use thresholds::{Thresholds, ThresholdsBuilder};
