//! Errors the gateway itself answers with: one enum, rendered in one place as OpenAI-shaped JSON.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use serde_json::json;

use crate::headers;

/// Every error that ends a request at the gateway (spec section 12).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
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
    #[error("{message}")]
    TooManyRequests {
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
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Unauthorized(_) => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) | Self::ModelNotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::LengthRequired(_) => 411,
            Self::PayloadTooLarge { .. } => 413,
            Self::TooManyRequests { .. } => 429,
            Self::BadGateway(_) => 502,
            Self::GatewayTimeout(_) => 504,
            Self::Unavailable(_) | Self::Overloaded { .. } => 503,
            Self::Internal(_) => 500,
            Self::AttemptsFailed { status, .. } => *status,
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
            Self::Forbidden(_) => "permission_error",
            Self::NotFound(_) => "not_found_error",
            Self::ModelNotFound(_) => "invalid_request_error",
            Self::TooManyRequests { .. } => "rate_limit_error",
            Self::BadGateway(_) | Self::GatewayTimeout(_) => "upstream_error",
            Self::Unavailable(_) | Self::Overloaded { .. } => "server_error",
            Self::Internal(_) => "server_error",
            Self::AttemptsFailed { .. } => "upstream_error",
        }
    }

    /// The OpenAI `error.code` value: a stable, machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "invalid_gateway_key",
            Self::Forbidden(_) => "target_refused",
            Self::NotFound(_) => "no_route",
            Self::ModelNotFound(_) => "model_not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::LengthRequired(_) => "length_required",
            Self::PayloadTooLarge { .. } => "body_too_large",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::BadGateway(_) => "upstream_unreachable",
            Self::GatewayTimeout(_) => "upstream_timeout",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded { .. } => "overloaded",
            Self::Internal(_) => "internal_error",
            Self::AttemptsFailed { .. } => "all_attempts_failed",
        }
    }

    pub fn to_json(&self) -> Bytes {
        let body = match self {
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
        let body = self.to_json();
        let mut h = ResponseHeader::build(self.status(), Some(4))?;
        h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        h.insert_header(headers::HELICONE_ID.clone(), request_id)?;
        if let Self::MethodNotAllowed { allow, .. } = self {
            h.insert_header(http::header::ALLOW, *allow)?;
        }
        if let Self::TooManyRequests {
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
