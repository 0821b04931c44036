//! Request limits enforced in `request_filter`: today the unapproved-origin quotas.

pub mod origin_quota;
