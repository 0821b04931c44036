//! Header names the gateway reads or writes, as constants (all lower-case).

use http::HeaderName;

pub const HELICONE_PREFIX: &str = "helicone-";
pub const X_HELICONE_PREFIX: &str = "x-helicone-";

pub const TARGET_URL: &str = "helicone-target-url";
pub const TARGET_PROVIDER: &str = "helicone-target-provider";
pub const HELICONE_AUTH: &str = "helicone-auth";
pub const REQUEST_ID: &str = "helicone-request-id";
/// The model used for cost and logs instead of the one the provider reports.
pub const MODEL_OVERRIDE: &str = "helicone-model-override";
/// `true`: streamed requests get `stream_options.include_usage` so that usage is counted.
pub const STREAM_USAGE: &str = "helicone-stream-usage";
pub const FALLBACKS: &str = "helicone-fallbacks";
/// Where clients carry their own provider credentials (passthrough): the cache key hashes them,
/// so that tenants never share entries.
pub const PROVIDER_CREDENTIALS: [&str; 4] =
    ["authorization", "x-api-key", "api-key", "x-goog-api-key"];

pub const RETRY_ENABLED: &str = "helicone-retry-enabled";
pub const RETRY_NUM: &str = "helicone-retry-num";
pub const RETRY_FACTOR: &str = "helicone-retry-factor";
pub const RETRY_MIN_TIMEOUT: &str = "helicone-retry-min-timeout";
pub const RETRY_MAX_TIMEOUT: &str = "helicone-retry-max-timeout";

// response cache (spec section 7)
pub const CACHE_ENABLED: &str = "helicone-cache-enabled";
pub const CACHE_SEED: &str = "helicone-cache-seed";
pub const CACHE_BUCKET_MAX_SIZE: &str = "helicone-cache-bucket-max-size";
pub const CACHE_IGNORE_KEYS: &str = "helicone-cache-ignore-keys";
pub static CACHE: HeaderName = HeaderName::from_static("helicone-cache");
pub static CACHE_BUCKET_IDX: HeaderName = HeaderName::from_static("helicone-cache-bucket-idx");
pub static CACHE_LATENCY: HeaderName = HeaderName::from_static("helicone-cache-latency");

// rate-limit policies (spec section 8)
pub const RATELIMIT_LIMIT: &str = "helicone-ratelimit-limit";
pub const RATELIMIT_REMAINING: &str = "helicone-ratelimit-remaining";
/// The policy the client sends, and the same header echoing it on the response.
pub const RATELIMIT_POLICY: &str = "helicone-ratelimit-policy";
pub const RATELIMIT_RESET: &str = "helicone-ratelimit-reset";

// prompt templates: which one rendered the request (response headers)
pub static PROMPT_ID: HeaderName = HeaderName::from_static("helicone-prompt-id");
pub static PROMPT_VERSION: HeaderName = HeaderName::from_static("helicone-prompt-version");

// what the log record takes from the request
pub const OMIT_REQUEST: &str = "helicone-omit-request";
pub const OMIT_RESPONSE: &str = "helicone-omit-response";
pub const PROPERTY_PREFIX: &str = "helicone-property-";
pub const USER_ID: &str = "helicone-user-id";
pub const SESSION_ID: &str = "helicone-session-id";
pub const SESSION_PATH: &str = "helicone-session-path";
pub const SESSION_NAME: &str = "helicone-session-name";

pub static FALLBACK_INDEX: HeaderName = HeaderName::from_static("helicone-fallback-index");

/// Unified API: which provider answered, under which model id.
pub static PROVIDER: HeaderName = HeaderName::from_static("helicone-provider");
pub static MODEL: HeaderName = HeaderName::from_static("helicone-model");

pub static HELICONE_ID: HeaderName = HeaderName::from_static("helicone-id");
pub static RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
/// `false` on the gateway's own refusals that a retry cannot fix (read by the OpenAI and
/// Anthropic SDKs).
pub static SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

// Anthropic's client headers, read on `/v1/messages`
pub const ANTHROPIC_VERSION: &str = "anthropic-version";
pub const ANTHROPIC_BETA: &str = "anthropic-beta";
/// The anthropic SDK's and Claude Code's key header (`ANTHROPIC_API_KEY`).
pub const X_API_KEY: &str = "x-api-key";
/// Hints the provider's dialect could not honour, dropped on the way (comma-separated field
/// paths; the log record lists them too).
pub static DROPPED_FIELDS: HeaderName = HeaderName::from_static("helicone-dropped-fields");
/// How a local token count was made (`count_tokens` for a model that is not Anthropic's).
pub static TOKEN_COUNT: HeaderName = HeaderName::from_static("helicone-token-count");

/// A request header's value by name, as text (what the header parsers of `failover` and `cache`
/// read from).
pub fn reader(map: &http::HeaderMap) -> impl Fn(&str) -> Option<String> + '_ {
    move |n| {
        map.get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// The same reader over fixed pairs, for the parsers' unit tests.
#[cfg(test)]
pub fn from_pairs(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |n| {
        pairs
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    }
}

/// `true` for headers that belong to the gateway and must never reach an upstream.
pub fn is_gateway_header(name: &str) -> bool {
    // header names from `http` are already lower-case
    name.starts_with(HELICONE_PREFIX) || name.starts_with(X_HELICONE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_headers_are_recognised() {
        assert!(is_gateway_header("helicone-auth"));
        assert!(is_gateway_header("helicone-target-url"));
        assert!(is_gateway_header("x-helicone-anything"));
        assert!(!is_gateway_header("authorization"));
        assert!(!is_gateway_header("x-api-key"));
        assert!(!is_gateway_header("heliconeauth"));
    }
}
