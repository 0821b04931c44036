-- Switchyard request log table (ClickHouse >= 18.16). {db} and {table} are replaced by the
-- values of export.clickhouse.database / .table; the gateway runs this at start-up when
-- export.clickhouse.create_table is true. ReplacingMergeTree ordered by (id, record_id): a batch
-- replayed after an outage counts once (record_id is made by the gateway for each record, and a
-- replay carries the same one), while two records that share a request id (a client may send
-- the same Helicone-Request-Id twice) both stay; id lookups use the key's prefix. Query with
-- FINAL (or GROUP BY id, record_id) for exact counts. A table made before record_id existed gets
-- the column and this key at start-up (see README, "Request logs").
CREATE TABLE IF NOT EXISTS {db}.{table} (
    event_date Date,
    id String,
    record_id String,
    start_time String,
    key_id Nullable(String),
    method String,
    path String,
    target Nullable(String),
    provider Nullable(String),
    model_requested Nullable(String),
    model_responded Nullable(String),
    status UInt16,
    attempts String,
    fallback_index Nullable(UInt32),
    retries UInt32,
    latency_ms UInt64,
    ttfb_ms Nullable(UInt64),
    ttft_ms Nullable(UInt64),
    stream UInt8,
    prompt_tokens Nullable(UInt64),
    completion_tokens Nullable(UInt64),
    cached_tokens Nullable(UInt64),
    cache_write_tokens Nullable(UInt64),
    reasoning_tokens Nullable(UInt64),
    cost_usd Nullable(Float64),
    cost_status Nullable(String),
    deprecated UInt8,
    dialect Nullable(String),
    dropped_fields String,
    cache Nullable(String),
    cache_reference_id Nullable(String),
    rate_limit Nullable(String),
    rejection Nullable(String),
    prompt_id Nullable(String),
    prompt_version Nullable(UInt32),
    model_override Nullable(String),
    target_provider Nullable(String),
    user_id Nullable(String),
    session_id Nullable(String),
    session_path Nullable(String),
    session_name Nullable(String),
    properties String,
    request_body String,
    response_body String,
    request_bytes UInt64,
    response_bytes UInt64,
    error Nullable(String),
    batch_id String
) ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM(event_date) ORDER BY (id, record_id)
