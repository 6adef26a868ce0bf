//! What a spilled request is, what a store answers about it, and how a replay
//! ended.

use std::{fmt, str::FromStr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};

use crate::Priority;

/// A spilled request's id: the store's sequence number and a random tag, so
/// ids cannot be guessed by counting (`GET <prefix>/<id>` shows a job's
/// result to whoever names it).
///
/// Shown and parsed as `<seq>-<tag in 16 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobId {
    /// The store's sequence number: increasing in order of arrival.
    pub seq: u64,
    /// A random tag chosen when the job was stored.
    pub tag: u64,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}", self.seq, self.tag)
    }
}

/// A string that is not a [`JobId`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseJobIdError(());

impl fmt::Display for ParseJobIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a job id (expected <seq>-<16 hex digits>)")
    }
}

impl std::error::Error for ParseJobIdError {}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (seq, tag) = s.split_once('-').ok_or(ParseJobIdError(()))?;
        let digits = |t: &str, radix| {
            (!t.is_empty() && t.len() <= 20 && t.bytes().all(|b| (b as char).is_digit(radix)))
                .then_some(())
                .ok_or(ParseJobIdError(()))
        };
        digits(seq, 10)?;
        if tag.len() != 16 {
            return Err(ParseJobIdError(()));
        }
        digits(tag, 16)?;
        Ok(Self {
            seq: seq.parse().map_err(|_| ParseJobIdError(()))?,
            tag: u64::from_str_radix(tag, 16).map_err(|_| ParseJobIdError(()))?,
        })
    }
}

/// A request to store: everything a replay needs to send it again.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its priority: replays go highest first, oldest first within a tier.
    pub priority: Priority,
    /// The method.
    pub method: Method,
    /// The URI (path and query).
    pub uri: Uri,
    /// The headers kept (the layer's `keep_header` list).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The caller's `Idempotency-Key`: a second job with the same key is the
    /// first one.
    pub idempotency_key: Option<String>,
}

impl NewJob {
    /// What the job weighs against the store's byte bound: its body, URI and
    /// headers.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 2)
            .sum();
        (self.body.len() + self.uri.to_string().len() + headers) as u64
    }
}

/// A job leased to a drain: the request, and which attempt this is.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// The stored request.
    pub request: NewJob,
    /// This attempt's number, from 1; it also identifies the lease, so a
    /// drain whose lease expired cannot finish a job another drain holds.
    pub attempt: u32,
    /// How long the job waited in the store before this lease.
    pub waited: Duration,
}

/// What storing one request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored as a new job.
    New(JobId),
    /// A job with the same `Idempotency-Key` exists: this one.
    Existing(JobId),
    /// The store is at one of its bounds; nothing was stored.
    Full,
}

/// Where a job is, as `GET <prefix>/<id>` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting, with at most this many jobs of its priority or higher ahead.
    Queued {
        /// Jobs that will be replayed before it (counted up to a bound).
        ahead: u64,
        /// Attempts made so far.
        attempts: u32,
    },
    /// Being replayed now.
    Running {
        /// Attempts made so far, this one included.
        attempts: u32,
    },
    /// Replayed: the inner service's answer, and the first bytes of its body.
    Done {
        /// The answer's status.
        status: StatusCode,
        /// The first bytes of the answer's body.
        body: Bytes,
    },
    /// Given up on.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: String,
    },
}

impl JobStatus {
    /// `"queued"`, `"running"`, `"done"` or `"failed"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Running { .. } => "running",
            Self::Done { .. } => "done",
            Self::Failed { .. } => "failed",
        }
    }
}

/// How a replay ended, as the drain reports it to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The inner service answered (any status it means: the replay is over).
    Done {
        /// The answer's status.
        status: StatusCode,
        /// The first bytes of the answer's body.
        body: Bytes,
    },
    /// Try again, no sooner than `after`.
    Retry {
        /// The least time before the next attempt.
        after: Duration,
        /// `false` when the stack refused the replay for overload: the
        /// attempt did not reach the handler and does not count toward the
        /// dead-letter bound.
        counted: bool,
    },
    /// Give up: dead-letter the job.
    Failed {
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text() {
        let id = JobId {
            seq: 42,
            tag: 0x00ab_cdef_0123_4567,
        };
        assert_eq!(id.to_string(), "42-00abcdef01234567");
        assert_eq!("42-00abcdef01234567".parse::<JobId>(), Ok(id));
        let max = JobId {
            seq: u64::MAX,
            tag: u64::MAX,
        };
        assert_eq!(max.to_string().parse::<JobId>(), Ok(max));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "-",
            "42",
            "42-",
            "-00abcdef01234567",
            "42-abc",
            "42-00abcdef012345678",
            "x2-00abcdef01234567",
            "42-00abcdef0123456g",
            "+42-00abcdef01234567",
            "99999999999999999999-00abcdef01234567",
            "42-00abcdef01234567-1",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_jobs_weight_counts_body_uri_and_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/plain".parse().unwrap());
        let job = NewJob {
            priority: Priority::Low,
            method: Method::POST,
            uri: "/likes?x=1".parse().unwrap(),
            headers,
            body: Bytes::from_static(b"hello"),
            idempotency_key: None,
        };
        assert_eq!(job.weight(), 5 + 10 + (12 + 10 + 2));
    }
}
