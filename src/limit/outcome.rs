//! Outcome classification: which results tell the algorithm about capacity.
//!
//! A 503 is not a success. Limiters that count every response as a success
//! never learn that the service behind them is refusing work; limiters that
//! count every error as overload shrink when a client sends garbage. A
//! [`ClassifyOutcome`] decides, and also says *when* the permit ends (its
//! [`Hold`]): for HTTP, when the response body ends or is dropped, not when its
//! head arrives.

use super::{Outcome, Permit};
use crate::guard::{AtOnce, BodyEnd, Hold, OnBodyEnd};

/// Decides a request's [`Outcome`] from its result, and how long its
/// [`Permit`] lasts.
///
/// The limiter's future hands the permit, in a [`PermitGuard`], to
/// [`Hold`](Self::Hold) with the inner service's response: [`AtOnce`]
/// releases it when the response arrives, [`InBody`](crate::guard::InBody)
/// when the response body ends. The outcome is what
/// [`on_response`](Self::on_response) reads from the response, revised by
/// [`on_end`](Self::on_end) when the guard ends (a gRPC status in the
/// trailers, a body that failed). [`on_error`](Self::on_error) classifies the
/// inner service's errors.
///
/// A permit that is dropped without being finished (the caller went away, the
/// inner service panicked) is released as [`Outcome::Ignored`].
///
/// ```
/// use tower_spillway::{guard::AtOnce, limit::{ClassifyOutcome, Outcome}};
///
/// /// A client of a key-value store: `Err("busy")` means overloaded,
/// /// other errors say nothing about capacity.
/// #[derive(Clone)]
/// struct KvOutcomes;
///
/// impl<T> ClassifyOutcome<T, &'static str> for KvOutcomes {
///     type Hold = AtOnce;
///     fn on_response(&self, _res: &T) -> Outcome {
///         Outcome::Success
///     }
///     fn on_error(&self, err: &&'static str) -> Outcome {
///         if *err == "busy" { Outcome::Dropped } else { Outcome::Ignored }
///     }
/// }
/// ```
pub trait ClassifyOutcome<Res, E> {
    /// How long the permit lasts.
    type Hold: Hold<Res>;

    /// The outcome a response tells when it arrives.
    fn on_response(&self, res: &Res) -> Outcome;

    /// The outcome once the response has ended, given what it told on
    /// arrival (`head`). By default: `head` when it ended normally, a drop
    /// when its body failed, ignored when it was dropped before its end (the
    /// client went away).
    fn on_end(&self, head: Outcome, end: BodyEnd<'_>) -> Outcome {
        match end {
            BodyEnd::Complete { .. } => head,
            BodyEnd::Error => Outcome::Dropped,
            BodyEnd::Dropped => Outcome::Ignored,
        }
    }

    /// The outcome of an inner error.
    fn on_error(&self, err: &E) -> Outcome;
}

/// An admitted request's [`Permit`] with the outcome its response told,
/// released when the [`Hold`] ends it.
pub struct PermitGuard<C> {
    permit: Permit,
    head: Outcome,
    outcomes: C,
    // Chosen where the response type is known, so the guard's type need not
    // name it.
    on_end: fn(&C, Outcome, BodyEnd<'_>) -> Outcome,
}

impl<C> PermitGuard<C> {
    pub(crate) fn new<Res, E>(permit: Permit, res: &Res, outcomes: C) -> Self
    where
        C: ClassifyOutcome<Res, E>,
    {
        Self {
            permit,
            head: outcomes.on_response(res),
            outcomes,
            on_end: <C as ClassifyOutcome<Res, E>>::on_end,
        }
    }
}

impl<C> std::fmt::Debug for PermitGuard<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitGuard")
            .field("permit", &self.permit)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

impl<C> OnBodyEnd for PermitGuard<C> {
    fn on_body_end(self, end: BodyEnd<'_>) {
        let outcome = (self.on_end)(&self.outcomes, self.head, end);
        self.permit.finish(outcome);
    }
}

/// The generic classification: every response is a success, released when it
/// arrives; every inner error is a drop (configurable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByResult {
    errors: Outcome,
}

impl Default for ByResult {
    fn default() -> Self {
        Self::new()
    }
}

impl ByResult {
    /// Responses succeed, errors are drops.
    pub const fn new() -> Self {
        Self {
            errors: Outcome::Dropped,
        }
    }

    /// The outcome of inner errors (default [`Outcome::Dropped`]).
    #[must_use]
    pub const fn errors(mut self, outcome: Outcome) -> Self {
        self.errors = outcome;
        self
    }
}

impl<Res, E> ClassifyOutcome<Res, E> for ByResult {
    type Hold = AtOnce;

    #[inline]
    fn on_response(&self, _res: &Res) -> Outcome {
        Outcome::Success
    }

    #[inline]
    fn on_error(&self, _err: &E) -> Outcome {
        self.errors
    }
}

#[cfg(feature = "http")]
pub use self::http_outcomes::HttpOutcomes;

#[cfg(feature = "http")]
mod http_outcomes {
    use http::{HeaderMap, StatusCode};
    use http_body::Body;

    use super::{ClassifyOutcome, Outcome};
    use crate::{
        grpc::grpc_status,
        guard::{BodyEnd, InBody},
        rate::{RATELIMIT, RATELIMIT_POLICY},
    };

    /// The HTTP classification, for servers and for clients.
    ///
    /// | result | outcome |
    /// |---|---|
    /// | `429` or gRPC `RESOURCE_EXHAUSTED` carrying `RateLimit` or `RateLimit-Policy` (a quota's refusal) | [`quota_refusals`](Self::quota_refusals), ignored by default |
    /// | `429`, `503`, `504` | dropped |
    /// | other `5xx` | [`server_errors`](Self::server_errors), ignored by default |
    /// | `4xx` | ignored |
    /// | gRPC `grpc-status` 4, 8, 14 (trailers-only headers, or trailers at the end of the body) | dropped |
    /// | gRPC 2, 13, 15 (unknown, internal, data loss) | as other `5xx` |
    /// | other non-zero gRPC statuses, such as a client's cancellation | ignored |
    /// | body dropped before its end (the client went away) | ignored |
    /// | body or inner error | [`errors`](Self::errors), dropped by default |
    /// | anything else | success |
    ///
    /// A quota's refusal says the caller went over its share of calls per
    /// second, not that the server is short of capacity: fewer calls in
    /// flight would not be refused less, a slower pace would
    /// ([`PaceLayer`](crate::rate::PaceLayer),
    /// [`LearnPaceLayer`](crate::rate::LearnPaceLayer)). Counted as drops,
    /// each refusal cut the limit of a client that shares a quota with
    /// others, down to one call in flight, where it could no longer keep
    /// even its share of the pace.
    ///
    /// The permit moves into the response body ([`InBody`]) and is released,
    /// with the rtt measured, when the body ends or is dropped, so a slow
    /// stream holds its slot for as long as it runs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct HttpOutcomes {
        server_errors: Outcome,
        errors: Outcome,
        quota_refusals: Outcome,
    }

    impl Default for HttpOutcomes {
        fn default() -> Self {
            Self::new()
        }
    }

    impl HttpOutcomes {
        /// The defaults in the table above.
        pub const fn new() -> Self {
            Self {
                server_errors: Outcome::Ignored,
                errors: Outcome::Dropped,
                quota_refusals: Outcome::Ignored,
            }
        }

        /// The outcome of a refusal for a quota: a `429`, or a gRPC
        /// `RESOURCE_EXHAUSTED`, that carries the `RateLimit` or
        /// `RateLimit-Policy` field. Ignored by default; `Outcome::Dropped`
        /// counts it as overload, as a refusal without those fields is.
        #[must_use]
        pub const fn quota_refusals(mut self, outcome: Outcome) -> Self {
            self.quota_refusals = outcome;
            self
        }

        /// The outcome of `5xx` statuses other than 503 and 504 (and of the
        /// gRPC statuses that mean a server fault). Ignored by default: a
        /// bug's quick `500` says nothing about capacity.
        #[must_use]
        pub const fn server_errors(mut self, outcome: Outcome) -> Self {
            self.server_errors = outcome;
            self
        }

        /// The outcome of inner errors and body errors (default dropped).
        #[must_use]
        pub const fn errors(mut self, outcome: Outcome) -> Self {
            self.errors = outcome;
            self
        }

        /// The outcome a response head tells: its status, and for a
        /// trailers-only gRPC response, its `grpc-status`.
        pub fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
            match status.as_u16() {
                429 if for_a_quota(headers) => return self.quota_refusals,
                429 | 503 | 504 => return Outcome::Dropped,
                500..=599 => return self.server_errors,
                400..=499 => return Outcome::Ignored,
                _ => {}
            }
            match grpc_status(headers) {
                Some(code) => self.classify_grpc_in(code, headers),
                None => Outcome::Success,
            }
        }

        /// A gRPC status code, with the headers (or trailers) it came in:
        /// `RESOURCE_EXHAUSTED` with a quota's fields is a quota's refusal.
        fn classify_grpc_in(&self, code: i32, fields: &HeaderMap) -> Outcome {
            match code {
                8 if for_a_quota(fields) => self.quota_refusals,
                code => self.classify_grpc(code),
            }
        }

        /// The outcome of a gRPC status code alone (without the fields that
        /// would tell a quota's refusal).
        pub fn classify_grpc(&self, code: i32) -> Outcome {
            match code {
                0 => Outcome::Success,
                4 | 8 | 14 => Outcome::Dropped,
                2 | 13 | 15 => self.server_errors,
                _ => Outcome::Ignored,
            }
        }
    }

    impl<B, E> ClassifyOutcome<http::Response<B>, E> for HttpOutcomes
    where
        B: Body,
    {
        type Hold = InBody;

        fn on_response(&self, res: &http::Response<B>) -> Outcome {
            self.classify_head(res.status(), res.headers())
        }

        fn on_end(&self, head: Outcome, end: BodyEnd<'_>) -> Outcome {
            match end {
                BodyEnd::Complete { trailers } => {
                    match (head, trailers.and_then(|t| Some((grpc_status(t)?, t)))) {
                        (Outcome::Success, Some((code, t))) => self.classify_grpc_in(code, t),
                        (head, _) => head,
                    }
                }
                BodyEnd::Error => self.errors,
                BodyEnd::Dropped => Outcome::Ignored,
            }
        }

        fn on_error(&self, _err: &E) -> Outcome {
            self.errors
        }
    }

    /// Whether a refusal carries a quota's fields (draft-ietf-httpapi-
    /// ratelimit-headers), as [`RateLimitLayer`](crate::rate::RateLimitLayer)'s do.
    fn for_a_quota(fields: &HeaderMap) -> bool {
        fields.contains_key(RATELIMIT) || fields.contains_key(RATELIMIT_POLICY)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn statuses() {
            let h = HttpOutcomes::new();
            let empty = HeaderMap::new();
            for (code, want) in [
                (200, Outcome::Success),
                (204, Outcome::Success),
                (302, Outcome::Success),
                (400, Outcome::Ignored),
                (404, Outcome::Ignored),
                (429, Outcome::Dropped),
                (500, Outcome::Ignored),
                (502, Outcome::Ignored),
                (503, Outcome::Dropped),
                (504, Outcome::Dropped),
            ] {
                let s = StatusCode::from_u16(code).unwrap();
                assert_eq!(h.classify_head(s, &empty), want, "{code}");
            }
            let strict = h.server_errors(Outcome::Dropped);
            assert_eq!(
                strict.classify_head(StatusCode::BAD_GATEWAY, &empty),
                Outcome::Dropped
            );
        }

        #[test]
        fn a_quota_refusal_is_ignored_unless_told_otherwise() {
            let h = HttpOutcomes::new();
            let quota = |name: &'static str| {
                let mut fields = HeaderMap::new();
                fields.insert(name, "\"default\";q=200;w=1".parse().unwrap());
                fields
            };
            let too_many = StatusCode::TOO_MANY_REQUESTS;
            for name in ["ratelimit", "ratelimit-policy"] {
                assert_eq!(h.classify_head(too_many, &quota(name)), Outcome::Ignored);
                // gRPC, trailers-only.
                let mut grpc = quota(name);
                grpc.insert("grpc-status", "8".parse().unwrap());
                assert_eq!(h.classify_head(StatusCode::OK, &grpc), Outcome::Ignored);
                // gRPC, in the trailers after a body.
                let end = BodyEnd::Complete {
                    trailers: Some(&grpc),
                };
                assert_eq!(
                    ClassifyOutcome::<http::Response<String>, ()>::on_end(
                        &h,
                        Outcome::Success,
                        end
                    ),
                    Outcome::Ignored
                );
            }
            // Without the fields, a refusal is an overload, as before.
            let mut plain = HeaderMap::new();
            assert_eq!(h.classify_head(too_many, &plain), Outcome::Dropped);
            plain.insert("grpc-status", "8".parse().unwrap());
            assert_eq!(h.classify_head(StatusCode::OK, &plain), Outcome::Dropped);
            // A 503 or UNAVAILABLE with the fields is still a lack of capacity.
            let mut unavailable = quota("ratelimit");
            assert_eq!(
                h.classify_head(StatusCode::SERVICE_UNAVAILABLE, &unavailable),
                Outcome::Dropped
            );
            unavailable.insert("grpc-status", "14".parse().unwrap());
            assert_eq!(
                h.classify_head(StatusCode::OK, &unavailable),
                Outcome::Dropped
            );
            // Counted as drops when asked.
            let strict = h.quota_refusals(Outcome::Dropped);
            assert_eq!(
                strict.classify_head(too_many, &quota("ratelimit")),
                Outcome::Dropped
            );
        }

        #[test]
        fn grpc_codes_in_trailers_only_headers() {
            let h = HttpOutcomes::new();
            for (code, want) in [
                ("0", Outcome::Success),
                ("1", Outcome::Ignored),
                ("3", Outcome::Ignored),
                ("4", Outcome::Dropped),
                ("8", Outcome::Dropped),
                ("13", Outcome::Ignored),
                ("14", Outcome::Dropped),
                ("garbage", Outcome::Success),
            ] {
                let mut headers = HeaderMap::new();
                headers.insert("grpc-status", code.parse().unwrap());
                assert_eq!(h.classify_head(StatusCode::OK, &headers), want, "{code}");
            }
        }
    }
}
