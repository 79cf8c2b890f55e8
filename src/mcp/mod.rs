//! The MCP surface: one Streamable HTTP service per endpoint, all reading the one registry.

mod handler;
pub mod metadata;
pub mod user_content;

pub use handler::McpEndpoint;
