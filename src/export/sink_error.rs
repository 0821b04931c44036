//! Why a sink did not take a batch, and whether sending it again can help (retry) or not (dead-letter).

use std::fmt;

/// What a failure means for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The sink is down, slow, overloaded or misconfigured (connection, DNS, timeout, 5xx, 408,
    /// 429, auth, 404): the batch is fine and is retried, then spooled and replayed with backoff.
    Retryable,
    /// The sink refused this batch itself (a bad row, a schema mismatch, too large): sending it
    /// again would fail the same way, so it goes to the dead-letter directory.
    Rejected,
}

/// A failed delivery of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    pub kind: FailureKind,
    /// The HTTP status, when the sink answered.
    pub status: Option<u16>,
    pub message: String,
}

/// ClickHouse error codes that are about the data sent, not the server: parse and type errors.
/// 6 CANNOT_PARSE_TEXT, 16 NO_SUCH_COLUMN_IN_TABLE, 26 CANNOT_PARSE_QUOTED_STRING,
/// 27 CANNOT_PARSE_INPUT_ASSERTION_FAILED, 33 CANNOT_READ_ALL_DATA, 38 CANNOT_PARSE_DATE,
/// 41 CANNOT_PARSE_DATETIME, 53 TYPE_MISMATCH, 62 SYNTAX_ERROR, 70 CANNOT_CONVERT_TYPE,
/// 72 CANNOT_PARSE_NUMBER, 117 INCORRECT_DATA, 349 CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN,
/// 354 ZLIB_INFLATE_FAILED (a corrupt payload).
const CLICKHOUSE_REJECTED_CODES: &[u32] =
    &[6, 16, 26, 27, 33, 38, 41, 53, 62, 70, 72, 117, 349, 354];

impl SinkError {
    pub fn retryable(message: impl Into<String>) -> SinkError {
        SinkError {
            kind: FailureKind::Retryable,
            status: None,
            message: message.into(),
        }
    }

    pub fn is_rejected(&self) -> bool {
        self.kind == FailureKind::Rejected
    }

    /// A non-2xx answer of a generic HTTP endpoint (the webhook): 400, 413, 415 and 422 say the
    /// batch itself is unacceptable; anything else (401/403/404 misconfiguration, 408, 429, 5xx,
    /// ...) is the sink's state, which an operator or time fixes.
    pub fn from_http(status: u16, body: &str) -> SinkError {
        let kind = match status {
            400 | 413 | 415 | 422 => FailureKind::Rejected,
            _ => FailureKind::Retryable,
        };
        SinkError {
            kind,
            status: Some(status),
            message: format!("HTTP {status}: {}", body.trim()),
        }
    }

    /// A non-2xx answer of ClickHouse. Its exception code (`X-ClickHouse-Exception-Code`, or
    /// `Code: NN` at the start of the body: 18.16 sends no header, and answers 500 to some
    /// parse errors) decides: a parse or type error is about the batch; any other code (unknown
    /// table or database, authentication, memory, too many parts, ...) is the server's state.
    /// Without a code, the status decides as for any HTTP endpoint.
    pub fn from_clickhouse(status: u16, code_header: Option<&str>, body: &str) -> SinkError {
        let code = code_header
            .and_then(|c| c.trim().parse::<u32>().ok())
            .or_else(|| clickhouse_code(body));
        let Some(code) = code else {
            return SinkError::from_http(status, body);
        };
        let kind = if CLICKHOUSE_REJECTED_CODES.contains(&code) {
            FailureKind::Rejected
        } else {
            FailureKind::Retryable
        };
        SinkError {
            kind,
            status: Some(status),
            message: format!("HTTP {status}: {}", body.trim()),
        }
    }
}

/// `NN` of a ClickHouse error body `Code: NN, e.displayText() = ...`.
fn clickhouse_code(body: &str) -> Option<u32> {
    let rest = body.trim_start().strip_prefix("Code:")?.trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FailureKind::Retryable => "retryable",
            FailureKind::Rejected => "rejected",
        };
        write!(f, "{} ({kind})", self.message)
    }
}

impl std::error::Error for SinkError {}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureKind::*;

    #[test]
    fn http_answers_about_the_batch_are_rejected_the_rest_is_retried() {
        for (status, kind) in [
            (400, Rejected),
            (413, Rejected),
            (415, Rejected),
            (422, Rejected),
            (401, Retryable),
            (403, Retryable),
            (404, Retryable),
            (408, Retryable),
            (429, Retryable),
            (500, Retryable),
            (502, Retryable),
            (503, Retryable),
        ] {
            let e = SinkError::from_http(status, " no \n");
            assert_eq!(e.kind, kind, "HTTP {status}");
            assert_eq!(e.status, Some(status));
            assert_eq!(e.message, format!("HTTP {status}: no"));
        }
        assert_eq!(SinkError::retryable("dns").kind, Retryable);
        assert_eq!(SinkError::retryable("dns").status, None);
    }

    #[test]
    fn clickhouse_is_classified_by_its_exception_code_not_only_the_status() {
        // what ClickHouse 18.16 answers (tried with curl): a bad value is a 500 with code 27
        let bad_value = "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected \" before: notanumber\"}\\n: (while read the value of key status): (at row 1)\n, e.what() = DB::Exception\n";
        let e = SinkError::from_clickhouse(500, None, bad_value);
        assert_eq!((e.kind, e.status), (Rejected, Some(500)));
        assert!(e.message.contains("Cannot parse input"), "{}", e.message);
        // a broken JSON line: 400, code 26
        let broken = "Code: 26, e.displayText() = DB::Exception: Cannot parse JSON string: expected opening quote: (at row 1)\n";
        assert_eq!(SinkError::from_clickhouse(400, None, broken).kind, Rejected);
        // a corrupt gzip payload: 500, code 354
        let corrupt = "Code: 354, e.displayText() = DB::Exception: inflate failed: data error";
        assert_eq!(
            SinkError::from_clickhouse(500, None, corrupt).kind,
            Rejected
        );
        // the table is missing (404, code 60), the server is out of memory, a wrong password:
        // the batch is fine
        let missing = "Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist.";
        assert_eq!(
            SinkError::from_clickhouse(404, None, missing).kind,
            Retryable
        );
        let memory = "Code: 241, e.displayText() = DB::Exception: Memory limit exceeded";
        assert_eq!(
            SinkError::from_clickhouse(500, None, memory).kind,
            Retryable
        );
        let auth = "Code: 193, e.displayText() = DB::Exception: Wrong password for user default";
        assert_eq!(SinkError::from_clickhouse(500, None, auth).kind, Retryable);
        // the header of newer servers wins over the body
        assert_eq!(
            SinkError::from_clickhouse(500, Some("117"), "whatever").kind,
            Rejected
        );
        assert_eq!(
            SinkError::from_clickhouse(400, Some("241"), "Code: 27").kind,
            Retryable
        );
        // no code at all (a proxy in front): the status decides
        assert_eq!(
            SinkError::from_clickhouse(503, None, "Service Unavailable").kind,
            Retryable
        );
        assert_eq!(
            SinkError::from_clickhouse(413, None, "too big").kind,
            Rejected
        );
    }
}
