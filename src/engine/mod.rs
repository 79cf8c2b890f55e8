//! The generic query engine behind the power tools: works from the live catalog of any
//! PostgreSQL schema, validates every identifier against it, binds every value as a
//! parameter, and runs inside the caller's Scope so RLS applies. It adds no tenant filter
//! of its own and needs none.

pub mod aggregate;
pub mod catalog;
pub mod filter;
pub mod listener;
pub mod mutate;
pub mod query;
pub mod sql;
pub mod values;
