//! hdls: headless, MCP-native backends on PostgreSQL with row-level security.

// A server answers errors; it does not abort. Tests may unwrap.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client_address;
pub mod clock;
pub mod concierge;
pub mod credentials;
pub mod cursor;
pub mod data_dir;
pub mod datasources;
pub mod db;
pub mod docs;
pub mod engine;
pub mod error;
pub mod http;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod mail;
pub mod master_key;
pub mod mcp;
pub mod metrics;
pub mod net;
pub mod oauth;
pub mod people;
pub mod products;
pub mod secret;
pub mod server;
pub mod tools;
pub mod web;
pub mod webhooks;
pub mod workspaces;
