//! Errors the gateway itself answers with: one enum whose variants belong to the domain that makes them (request, auth, routing, SSRF, limits, body, upstream), each carrying its rejection label; rendered in one place as OpenAI-shaped JSON.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use serde_json::json;

use crate::headers;
use crate::metrics::Rejection;

/// Every error that ends a request at the gateway (spec section 12).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The SSRF guard refused the target's address.
    #[error("{0}")]
    Forbidden(String),
    /// An origin that is not approved, on a gateway that refuses unapproved origins.
    #[error("{0}")]
    OriginDenied(String),
    #[error("{0}")]
    NotFound(String),
    /// An unknown `model` on the unified API.
    #[error("{0}")]
    ModelNotFound(String),
    #[error("{message}")]
    MethodNotAllowed {
        message: String,
        allow: &'static str,
    },
    #[error("{0}")]
    LengthRequired(String),
    #[error("request body is larger than the configured limit of {limit} bytes; send a smaller body or raise limits.max_body_bytes")]
    PayloadTooLarge { limit: usize },
    /// An unapproved origin over its quota.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// A rate-limit policy or a gateway key's limit refused the request.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    GatewayTimeout(String),
    /// A store the gateway needs (Redis for shared limits) is down and it was told to refuse.
    #[error("{0}")]
    Unavailable(String),
    /// The gateway holds as many request bodies as `limits.max_inflight_body_bytes` allows.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Internal(String),
    /// Every provider attempt of a unified request failed (spec section 9).
    #[error("{message}")]
    AttemptsFailed {
        status: u16,
        message: String,
        /// OpenAI `error.type` and `error.code`, from the provider when one attempt was made.
        kind: String,
        code: String,
        /// `[{provider, model, status, message}]`, in attempt order.
        attempts: serde_json::Value,
    },
    /// No provider attempt of a unified request could be made: answered as its one problem, or
    /// as a 400 listing them all.
    #[error("{error}")]
    NoAttempt {
        error: Box<GatewayError>,
        /// One of the problems was the SSRF guard's refusal.
        ssrf: bool,
    },
}

impl GatewayError {
    /// The error of a unified request none of whose candidates could be attempted.
    pub fn no_attempt(mut problems: Vec<GatewayError>) -> Self {
        let ssrf = problems.iter().any(|e| matches!(e, Self::Forbidden(_)));
        let error = if problems.len() == 1 {
            problems.remove(0)
        } else {
            Self::BadRequest(format!(
                "no provider attempt could be made: {}",
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        };
        Self::NoAttempt {
            error: Box::new(error),
            ssrf,
        }
    }

    /// The `reason` label of `switchyard_rejections_total` when this error refuses a request at
    /// admission (`None`: it is not counted as a rejection).
    pub fn rejection(&self) -> Option<Rejection> {
        Some(match self {
            Self::BadRequest(_) | Self::MethodNotAllowed { .. } | Self::LengthRequired(_) => {
                Rejection::BadRequest
            }
            Self::Unauthorized(_) => Rejection::Auth,
            Self::Forbidden(_) => Rejection::Ssrf,
            Self::OriginDenied(_) => Rejection::Denied,
            Self::NotFound(_) | Self::ModelNotFound(_) => Rejection::NoRoute,
            Self::PayloadTooLarge { .. } => Rejection::Size,
            Self::TooManyRequests { .. } => Rejection::Quota,
            Self::RateLimited { .. } => Rejection::RateLimit,
            Self::Unavailable(_) => Rejection::LimitStore,
            Self::Overloaded { .. } => Rejection::Overload,
            Self::NoAttempt { ssrf: true, .. } => Rejection::Ssrf,
            Self::NoAttempt { ssrf: false, .. } => Rejection::BadRequest,
            Self::BadGateway(_)
            | Self::GatewayTimeout(_)
            | Self::Internal(_)
            | Self::AttemptsFailed { .. } => return None,
        })
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) | Self::OriginDenied(_) => 403,
            Self::NotFound(_) | Self::ModelNotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::LengthRequired(_) => 411,
            Self::PayloadTooLarge { .. } => 413,
            Self::TooManyRequests { .. } | Self::RateLimited { .. } => 429,
            Self::BadGateway(_) => 502,
            Self::GatewayTimeout(_) => 504,
            Self::Unavailable(_) | Self::Overloaded { .. } => 503,
            Self::Internal(_) => 500,
            Self::AttemptsFailed { status, .. } => *status,
            Self::NoAttempt { error, .. } => error.status(),
        }
    }

    /// The OpenAI `error.type` value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_)
            | Self::LengthRequired(_)
            | Self::PayloadTooLarge { .. }
            | Self::MethodNotAllowed { .. } => "invalid_request_error",
            Self::Unauthorized(_) => "authentication_error",
            Self::Forbidden(_) | Self::OriginDenied(_) => "permission_error",
            Self::NotFound(_) => "not_found_error",
            Self::ModelNotFound(_) => "invalid_request_error",
            Self::TooManyRequests { .. } | Self::RateLimited { .. } => "rate_limit_error",
            Self::BadGateway(_) | Self::GatewayTimeout(_) => "upstream_error",
            Self::Unavailable(_) | Self::Overloaded { .. } => "server_error",
            Self::Internal(_) => "server_error",
            Self::AttemptsFailed { .. } => "upstream_error",
            Self::NoAttempt { error, .. } => error.kind(),
        }
    }

    /// The OpenAI `error.code` value: a stable, machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "invalid_gateway_key",
            Self::Forbidden(_) | Self::OriginDenied(_) => "target_refused",
            Self::NotFound(_) => "no_route",
            Self::ModelNotFound(_) => "model_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::LengthRequired(_) => "length_required",
            Self::PayloadTooLarge { .. } => "body_too_large",
            Self::TooManyRequests { .. } | Self::RateLimited { .. } => "rate_limited",
            Self::BadGateway(_) => "upstream_unreachable",
            Self::GatewayTimeout(_) => "upstream_timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded { .. } => "overloaded",
            Self::Internal(_) => "internal_error",
            Self::AttemptsFailed { .. } => "all_attempts_failed",
            Self::NoAttempt { error, .. } => error.code(),
        }
    }

    pub fn to_json(&self) -> Bytes {
        let body = match self {
            Self::NoAttempt { error, .. } => return error.to_json(),
            Self::AttemptsFailed {
                message,
                kind,
                code,
                attempts,
                ..
            } => json!({"error": {
                "message": message,
                "type": kind,
                "code": code,
                "param": null,
                "attempts": attempts,
            }}),
            _ => json!({"error": {
                "message": self.to_string(),
                "type": self.kind(),
                "code": self.code(),
            }}),
        };
        Bytes::from(body.to_string())
    }

    /// The full error response (header and body) for this error.
    pub fn response(&self, request_id: &str) -> pingora_error::Result<(ResponseHeader, Bytes)> {
        if let Self::NoAttempt { error, .. } = self {
            return error.response(request_id);
        }
        let body = self.to_json();
        let mut h = ResponseHeader::build(self.status(), Some(5))?;
        h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        h.insert_header(headers::HELICONE_ID.clone(), request_id)?;
        if let Self::MethodNotAllowed { allow, .. } = self {
            h.insert_header(http::header::ALLOW, *allow)?;
        }
        if matches!(self.status(), 400..=499) && !matches!(self.status(), 408 | 409 | 429) {
            // the OpenAI and Anthropic SDKs (and Claude Code's own loop) read this: sending the
            // same request again cannot help
            h.insert_header(headers::SHOULD_RETRY.clone(), "false")?;
        }
        if let Self::TooManyRequests {
            retry_after_secs, ..
        }
        | Self::RateLimited {
            retry_after_secs, ..
        }
        | Self::Overloaded {
            retry_after_secs, ..
        } = self
        {
            h.insert_header(headers::RETRY_AFTER.clone(), retry_after_secs.to_string())?;
        }
        Ok((h, body))
    }

    /// Maps a Pingora proxy error (connect, read, TLS...) to what the client is told.
    pub fn from_proxy_error(e: &pingora_error::Error) -> Option<Self> {
        use pingora_error::{ErrorSource, ErrorType as T};
        let detail = e.to_string();
        Some(match e.etype() {
            T::HTTPStatus(code) => match code {
                400 => Self::BadRequest(detail),
                413 => Self::PayloadTooLarge { limit: 0 },
                504 => Self::GatewayTimeout(detail),
                _ if *code >= 500 => Self::BadGateway(detail),
                _ => Self::BadRequest(detail),
            },
            T::ConnectTimedout | T::ReadTimedout | T::WriteTimedout => {
                Self::GatewayTimeout(format!("upstream did not answer in time: {detail}"))
            }
            _ => match e.esource() {
                ErrorSource::Upstream => {
                    Self::BadGateway(format!("upstream connection failed: {detail}"))
                }
                ErrorSource::Downstream => match e.etype() {
                    T::WriteError | T::ReadError | T::ConnectionClosed => return None,
                    _ => Self::BadRequest(format!("malformed request: {detail}")),
                },
                ErrorSource::Internal | ErrorSource::Unset => Self::Internal(detail),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape_with_id_and_retry_after() {
        let e = GatewayError::TooManyRequests {
            message: "slow down".into(),
            retry_after_secs: 7,
        };
        let (h, body) = e.response("abc").unwrap();
        assert_eq!(h.status.as_u16(), 429);
        assert_eq!(h.headers.get("retry-after").unwrap(), "7");
        assert_eq!(h.headers.get("helicone-id").unwrap(), "abc");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "slow down");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limited");
    }

    /// Each domain's error: its status, `error.code` and rejection label.
    #[test]
    fn each_domain_error_maps_to_its_status_code_and_rejection() {
        use Rejection as R;
        let m = || "m".to_string();
        let cases: Vec<(GatewayError, u16, &str, Option<Rejection>)> = vec![
            // request
            (
                GatewayError::BadRequest(m()),
                400,
                "bad_request",
                Some(R::BadRequest),
            ),
            (
                GatewayError::MethodNotAllowed {
                    message: m(),
                    allow: "POST",
                },
                405,
                "method_not_allowed",
                Some(R::BadRequest),
            ),
            // auth
            (
                GatewayError::Unauthorized(m()),
                401,
                "invalid_gateway_key",
                Some(R::Auth),
            ),
            // routing
            (
                GatewayError::NotFound(m()),
                404,
                "no_route",
                Some(R::NoRoute),
            ),
            (
                GatewayError::ModelNotFound(m()),
                404,
                "model_not_found",
                Some(R::NoRoute),
            ),
            (
                GatewayError::OriginDenied(m()),
                403,
                "target_refused",
                Some(R::Denied),
            ),
            // SSRF guard
            (
                GatewayError::Forbidden(m()),
                403,
                "target_refused",
                Some(R::Ssrf),
            ),
            // body
            (
                GatewayError::LengthRequired(m()),
                411,
                "length_required",
                Some(R::BadRequest),
            ),
            (
                GatewayError::PayloadTooLarge { limit: 1 },
                413,
                "body_too_large",
                Some(R::Size),
            ),
            (
                GatewayError::Overloaded {
                    message: m(),
                    retry_after_secs: 1,
                },
                503,
                "overloaded",
                Some(R::Overload),
            ),
            // limits
            (
                GatewayError::TooManyRequests {
                    message: m(),
                    retry_after_secs: 1,
                },
                429,
                "rate_limited",
                Some(R::Quota),
            ),
            (
                GatewayError::RateLimited {
                    message: m(),
                    retry_after_secs: 1,
                },
                429,
                "rate_limited",
                Some(R::RateLimit),
            ),
            (
                GatewayError::Unavailable(m()),
                503,
                "unavailable",
                Some(R::LimitStore),
            ),
            // upstream: not rejections
            (
                GatewayError::BadGateway(m()),
                502,
                "upstream_unreachable",
                None,
            ),
            (
                GatewayError::GatewayTimeout(m()),
                504,
                "upstream_timeout",
                None,
            ),
            (GatewayError::Internal(m()), 500, "internal_error", None),
            (
                GatewayError::AttemptsFailed {
                    status: 429,
                    message: m(),
                    kind: "rate_limit_error".into(),
                    code: "rate_limited".into(),
                    attempts: json!([]),
                },
                429,
                "all_attempts_failed",
                None,
            ),
        ];
        for (e, status, code, rejection) in cases {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.rejection(), rejection, "{e:?}");
            let (h, body) = e.response("id").unwrap();
            assert_eq!(h.status.as_u16(), status, "{e:?}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if !matches!(e, GatewayError::AttemptsFailed { .. }) {
                // (the aggregated error shows the provider's code when one attempt was made)
                assert_eq!(v["error"]["code"], code, "{e:?}");
            }
        }
    }

    #[test]
    fn both_429s_render_alike_with_retry_after() {
        let quota = GatewayError::TooManyRequests {
            message: "m".into(),
            retry_after_secs: 3,
        };
        let rate = GatewayError::RateLimited {
            message: "m".into(),
            retry_after_secs: 3,
        };
        let (qh, qb) = quota.response("id").unwrap();
        let (rh, rb) = rate.response("id").unwrap();
        assert_eq!(qb, rb);
        assert_eq!(qh.headers, rh.headers);
        assert_eq!(rh.headers.get("retry-after").unwrap(), "3");
        let ssrf = GatewayError::Forbidden("m".into()).to_json();
        assert_eq!(ssrf, GatewayError::OriginDenied("m".into()).to_json());
    }

    #[test]
    fn no_attempt_answers_as_its_one_problem_or_a_400_listing_them() {
        let one = GatewayError::no_attempt(vec![GatewayError::BadGateway("dns".into())]);
        assert_eq!(one.status(), 502);
        assert_eq!(
            one.to_json(),
            GatewayError::BadGateway("dns".into()).to_json()
        );
        assert_eq!(one.rejection(), Some(Rejection::BadRequest));

        let refused = GatewayError::no_attempt(vec![GatewayError::Forbidden("private".into())]);
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.rejection(), Some(Rejection::Ssrf));

        let two = GatewayError::no_attempt(vec![
            GatewayError::BadRequest("a".into()),
            GatewayError::Forbidden("b".into()),
        ]);
        assert_eq!(two.status(), 400);
        assert_eq!(two.code(), "bad_request");
        assert_eq!(two.rejection(), Some(Rejection::Ssrf));
        let v: serde_json::Value = serde_json::from_slice(&two.to_json()).unwrap();
        assert_eq!(
            v["error"]["message"],
            "no provider attempt could be made: a; b"
        );
    }

    #[test]
    fn proxy_errors_map_to_502_and_504() {
        use pingora_error::{Error, ErrorType};
        let refused = Error::new(ErrorType::ConnectRefused).into_up();
        assert_eq!(
            GatewayError::from_proxy_error(&refused).unwrap().status(),
            502
        );
        let timeout = Error::new(ErrorType::ReadTimedout).into_up();
        assert_eq!(
            GatewayError::from_proxy_error(&timeout).unwrap().status(),
            504
        );
        let gone = Error::new(ErrorType::ConnectionClosed).into_down();
        assert!(GatewayError::from_proxy_error(&gone).is_none());
    }
}
