//! The one integration-test binary: real PostgreSQL, real HTTP, the rmcp client.

mod harness;

mod audit;
mod bad_input;
mod browser;
mod change_events;
mod cli;
mod clock;
mod contacts;
mod credentials;
mod crm;
mod custom_fields;
mod database_roles;
mod embedded_serve;
mod interop;
mod isolation;
mod limits;
mod log_secrets;
mod oauth_flow;
mod oauth_refusals;
mod oauth_server;
mod oauth_support;
mod people;
mod power_fuzz;
mod power_refusals;
mod power_tools;
mod products;
mod protocol_errors;
mod refusal_costs;
mod role_matrix;
mod statement_timeout;
mod transport;
mod webhooks;
mod widening;
