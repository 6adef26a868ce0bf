//! The settings of a [`RedisStreamSource`], checked once.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64},
    },
    time::Duration,
};

use crate::{ConfigError, Priority};

use super::{RedisStreamSource, TIERS, connection::Connection, entry, scripts};

/// The settings of a [`RedisStreamSource`]; [`build`](Self::build) checks
/// them.
#[derive(Debug)]
pub struct RedisStreamSourceBuilder {
    client: redis::Client,
    name: String,
    group: String,
    consumer: Option<String>,
    discard_after: [Option<Duration>; 4],
    dead_max_len: usize,
    timeout: Duration,
}

impl RedisStreamSource {
    /// A builder for the source reading the streams `<name>:<priority>`
    /// through `client`. Nothing connects until the drain's first lease, so
    /// a Redis that is down at start delays the drain, not the build.
    pub fn builder(client: redis::Client, name: impl Into<String>) -> RedisStreamSourceBuilder {
        RedisStreamSourceBuilder {
            client,
            name: name.into(),
            group: "spillway".to_owned(),
            consumer: None,
            discard_after: [None; 4],
            dead_max_len: 100_000,
            timeout: Duration::from_secs(2),
        }
    }
}

impl RedisStreamSourceBuilder {
    /// The consumer group (default `spillway`). Drains of one group share
    /// the backlog; each group sees every entry.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// This drain's consumer name in the group (default: the process id
    /// and a random tag, so a restarted process is a new consumer and what
    /// the old one held is reclaimed after the lease).
    #[must_use]
    pub fn consumer(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }

    /// The emergency bound of a tier: when its oldest unread entry has
    /// waited longer than `bound`, the entries older than `bound` are
    /// skipped, counted and logged (default: none, nothing is discarded).
    #[must_use]
    pub fn discard_older_than(mut self, priority: Priority, bound: Duration) -> Self {
        self.discard_after[priority.index()] = Some(bound);
        self
    }

    /// About how many entries each `<stream>:dead` keeps (default 100,000;
    /// `MAXLEN ~`).
    #[must_use]
    pub fn dead_letters(mut self, max: usize) -> Self {
        self.dead_max_len = max;
        self
    }

    /// How long a Redis command may take, and a connection to be made
    /// (default 2 s); past it the call fails and the drain backs off.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings and makes the source.
    pub fn build(self) -> Result<RedisStreamSource, ConfigError> {
        let consumer = self
            .consumer
            .unwrap_or_else(|| format!("{}-{:016x}", std::process::id(), fastrand::u64(..)));
        if self.name.is_empty() || self.group.is_empty() || consumer.is_empty() {
            return Err(ConfigError::new(
                "name",
                "the stream name, group and consumer must not be empty",
            ));
        }
        if self.discard_after.iter().flatten().any(Duration::is_zero) {
            return Err(ConfigError::new(
                "discard_older_than",
                "a discard bound must be above zero",
            ));
        }
        if self.dead_max_len == 0 {
            return Err(ConfigError::new("dead_letters", "must keep at least one"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be above zero"));
        }
        let streams = TIERS.map(|p| entry::stream_key(&self.name, p));
        let dead = streams.clone().map(|s| format!("{s}:dead"));
        Ok(RedisStreamSource {
            connection: Connection::new(self.client, self.timeout),
            name: self.name,
            group: self.group,
            consumer,
            keys: streams.into_iter().chain(dead).collect(),
            discard_after: self.discard_after,
            dead_max_len: self.dead_max_len,
            scripts: scripts::Scripts::new(),
            cursors: Mutex::new(std::array::from_fn(|_| "0-0".to_owned())),
            trimmed: Default::default(),
            groups_ready: AtomicBool::new(false),
            lease_ms: AtomicU64::new(30_000),
        })
    }
}
