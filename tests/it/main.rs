//! The one integration-test binary: real PostgreSQL, real HTTP, the rmcp client.

mod harness;

mod audit;
mod cli;
mod credentials;
mod database_roles;
mod embedded_serve;
mod isolation;
mod limits;
mod products;
mod role_matrix;
mod transport;
