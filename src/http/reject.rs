use std::{fmt::Write as _, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::{RejectBody, ResponseBody};
use crate::{
    ConfigError, Overloaded,
    grpc::{self, Code},
    hint::{RetryAfterPolicy, ceil_secs, pushback_ms},
    reject::Reject,
};

/// What a rejection needs to know about the refused request, captured before
/// the request moves on (the request body is never read).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo {
    grpc: bool,
}

impl RequestInfo {
    /// Reads what is needed from a request's head.
    pub fn from_request<B>(req: &http::Request<B>) -> Self {
        Self {
            grpc: grpc::is_grpc_request(req.headers()),
        }
    }

    /// Describes a gRPC (`true`) or plain HTTP (`false`) request.
    pub const fn new(grpc: bool) -> Self {
        Self { grpc }
    }

    /// `true` when the request is a gRPC call, which must be refused with a
    /// trailers-only response.
    pub const fn is_grpc(&self) -> bool {
        self.grpc
    }
}

/// Builds the response that refuses an overloaded request.
///
/// Implemented for closures `Fn(&Overloaded, &RequestInfo) -> Response<RejectBody>`,
/// so a service can answer in its own format:
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_spillway::{Overloaded, http::{RejectBody, RequestInfo}};
///
/// let plain = |o: &Overloaded, _: &RequestInfo| {
///     let mut res = Response::new(RejectBody::new(o.to_string()));
///     *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
///     res
/// };
/// # let _: &dyn tower_spillway::http::MakeRejection = &plain;
/// ```
///
/// Whatever it builds, the layer adds the [`Overloaded`] to the response's
/// extensions for outer layers and logs.
pub trait MakeRejection {
    /// The response refusing a request described by `request` for `overloaded`.
    fn make_rejection(
        &self,
        overloaded: &Overloaded,
        request: &RequestInfo,
    ) -> Response<RejectBody>;
}

impl<F> MakeRejection for F
where
    F: Fn(&Overloaded, &RequestInfo) -> Response<RejectBody>,
{
    fn make_rejection(
        &self,
        overloaded: &Overloaded,
        request: &RequestInfo,
    ) -> Response<RejectBody> {
        self(overloaded, request)
    }
}

/// The default refusal: `503`/`429` with an honest, jittered `Retry-After` and
/// an `application/problem+json` body (RFC 9457); for gRPC calls, a
/// trailers-only response with `grpc-status` 14 or 8 and
/// `grpc-retry-pushback-ms`.
///
/// ```text
/// HTTP/1.1 503 Service Unavailable
/// retry-after: 2
/// content-type: application/problem+json
///
/// {"type":"urn:tower-spillway:shed","title":"Service Unavailable","status":503,
///  "detail":"request shed: service overloaded (priority low)","priority":"low","retry_after":2}
/// ```
#[derive(Debug, Clone)]
pub struct ProblemDetails {
    capacity_status: StatusCode,
    quota_status: StatusCode,
    policy: RetryAfterPolicy,
}

impl Default for ProblemDetails {
    fn default() -> Self {
        Self {
            capacity_status: StatusCode::SERVICE_UNAVAILABLE,
            quota_status: StatusCode::TOO_MANY_REQUESTS,
            policy: RetryAfterPolicy::default(),
        }
    }
}

impl ProblemDetails {
    /// 503 for capacity, 429 for quota, and the default [`RetryAfterPolicy`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The status for capacity refusals (shed, queue full or timed out,
    /// cooldown). It must be a client or server error (400–599).
    pub fn capacity_status(mut self, status: StatusCode) -> Result<Self, ConfigError> {
        check_error_status(status, "capacity_status")?;
        self.capacity_status = status;
        Ok(self)
    }

    /// The status for quota refusals (rate limited). It must be 400–599.
    pub fn quota_status(mut self, status: StatusCode) -> Result<Self, ConfigError> {
        check_error_status(status, "quota_status")?;
        self.quota_status = status;
        Ok(self)
    }

    /// How `Retry-After` and `grpc-retry-pushback-ms` are computed.
    #[must_use]
    pub fn retry_after(mut self, policy: RetryAfterPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in use.
    pub fn policy(&self) -> &RetryAfterPolicy {
        &self.policy
    }
}

fn check_error_status(status: StatusCode, field: &'static str) -> Result<(), ConfigError> {
    if status.is_client_error() || status.is_server_error() {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            "a refusal must be a 4xx or 5xx status",
        ))
    }
}

impl MakeRejection for ProblemDetails {
    fn make_rejection(&self, o: &Overloaded, request: &RequestInfo) -> Response<RejectBody> {
        if request.is_grpc() {
            let code = if o.is_quota() {
                Code::ResourceExhausted
            } else {
                Code::Unavailable
            };
            let mut res = Response::new(RejectBody::empty());
            grpc::set_trailers_only(
                res.headers_mut(),
                code,
                &o.to_string(),
                Some(pushback_ms(self.policy.pushback(o.retry_after()))),
            );
            return res;
        }
        let delay = self.policy.delay(o.retry_after());

        let status = if o.is_quota() {
            self.quota_status
        } else {
            self.capacity_status
        };
        let secs = ceil_secs(delay).max(1);
        let body = problem_json(o, status, secs);
        let mut res = Response::new(RejectBody::new(body));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

fn problem_json(o: &Overloaded, status: StatusCode, retry_after_secs: u64) -> Bytes {
    let mut s = String::with_capacity(200);
    // Every interpolated value is ASCII without quotes or backslashes, so no
    // JSON escaping is needed.
    let _ = write!(
        s,
        r#"{{"type":"urn:tower-spillway:{}","title":"{}","status":{},"detail":"{}","#,
        o.reason(),
        status.canonical_reason().unwrap_or("Error"),
        status.as_u16(),
        o,
    );
    match o.priority() {
        Some(p) => {
            let _ = write!(s, r#""priority":"{p}","#);
        }
        None => s.push_str(r#""priority":null,"#),
    }
    let _ = write!(s, r#""retry_after":{retry_after_secs}}}"#);
    Bytes::from(s)
}

/// The HTTP face: refusals become responses built by `M` (by default
/// [`ProblemDetails`]); the inner service's error type is kept.
#[derive(Debug)]
pub struct AsResponse<M = ProblemDetails> {
    make: Arc<M>,
}

impl<M> Clone for AsResponse<M> {
    fn clone(&self) -> Self {
        Self {
            make: Arc::clone(&self.make),
        }
    }
}

impl Default for AsResponse<ProblemDetails> {
    fn default() -> Self {
        Self::new(ProblemDetails::default())
    }
}

impl<M> AsResponse<M> {
    /// Refuses with responses from `make`.
    pub fn new(make: M) -> Self {
        Self {
            make: Arc::new(make),
        }
    }

    /// The response builder.
    pub fn make_rejection(&self) -> &M {
        &self.make
    }
}

impl<M, B, ResB, E> Reject<http::Request<B>, Response<ResB>, E> for AsResponse<M>
where
    M: MakeRejection,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = E;
    type Info = RequestInfo;

    #[inline]
    fn info(&self, req: &http::Request<B>) -> RequestInfo {
        RequestInfo::from_request(req)
    }

    fn reject(&self, info: RequestInfo, overloaded: Overloaded) -> Result<Self::Response, E> {
        Ok(rejection_response(&*self.make, &info, overloaded))
    }

    fn discard(&self, req: http::Request<B>) {
        super::drain::discard(req.into_body());
    }

    #[inline]
    fn map_response(res: Response<ResB>) -> Self::Response {
        res.map(ResponseBody::inner)
    }

    #[inline]
    fn map_error(err: E) -> E {
        err
    }
}

/// Builds the refusal with `make` and records the [`Overloaded`] in the
/// response's extensions.
pub(crate) fn rejection_response<M, B>(
    make: &M,
    info: &RequestInfo,
    overloaded: Overloaded,
) -> Response<ResponseBody<B>>
where
    M: MakeRejection + ?Sized,
{
    let mut res = make.make_rejection(&overloaded, info);
    res.extensions_mut().insert(overloaded);
    res.map(ResponseBody::rejected)
}

#[cfg(test)]
mod tests;
