//! Switchyard: a self-hosted, Helicone-compatible LLM gateway on Cloudflare Pingora.

pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod conn;
pub mod ctx;
pub mod error;
pub mod export;
pub mod failover;
pub mod forward;
pub mod headers;
pub mod lifecycle;
pub mod limits;
pub mod metadata;
pub mod metrics;
pub mod pricing;
pub mod prompts;
pub mod proxy;
pub mod routing;
pub mod shared_redis;
pub mod ssrf;
pub mod translate;
pub mod unified;
pub mod upstream;
pub mod usage;
