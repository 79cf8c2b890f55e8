//! The few HTML pages people see (sign-in, consent, set a password, accept an invitation):
//! cookies and CSRF, page templates, and the account pages. The OAuth endpoints live in
//! `crate::oauth`; they render through here.

pub mod account;
pub mod pages;
pub mod session;

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::Extensions;

/// The connecting client's address (the TCP peer; hdls does not trust forwarding headers).
pub fn client_address(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}
