//! Outbound network safety: the one guard every server-initiated connection goes through
//! (OAuth client metadata fetches, webhook deliveries, linked databases).

pub mod fetch;
pub mod guard;
