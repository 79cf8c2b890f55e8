//! The few HTML pages people see (sign-in, consent, set a password, accept an invitation,
//! the customer portal):
//! cookies and CSRF, page templates, and the account pages. The OAuth endpoints live in
//! `crate::oauth`; they render through here.

pub mod account;
pub mod pages;
pub mod portal;
pub mod session;

use std::net::IpAddr;

use axum::http::Extensions;

/// The client's address, as `crate::client_address` resolved it (the TCP peer, or the first
/// untrusted `X-Forwarded-For` hop behind a trusted proxy).
pub fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<crate::client_address::ClientAddress>()
        .map(|c| c.0)
}
