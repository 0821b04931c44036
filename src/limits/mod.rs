//! Request limits enforced in `request_filter`: the unapproved-origin quotas, and (groundwork
//! for rate-limit policies) the policy grammar and an exact sliding-window counter.

pub mod limiter;
pub mod origin_quota;
pub mod policy;
pub mod redis_window;
pub mod window;
