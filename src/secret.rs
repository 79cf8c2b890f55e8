//! Opaque one-time secrets (refresh tokens, authorization codes, sessions, invitation and
//! password links): 256 random bits, shown once, stored only as a SHA-256.
//!
//! SHA-256 rather than a slow hash: the secret is uniformly random, so there is nothing to
//! brute-force, and lookups by hash need a deterministic digest.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A freshly generated secret: `token` goes to the holder once, `hash` to the database.
pub struct Secret {
    pub token: String,
    pub hash: [u8; 32],
}

/// A new secret whose token starts with `prefix` (so people and scanners can tell kinds apart).
pub fn generate(prefix: &str) -> Secret {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    Secret { token, hash }
}

/// SHA-256 of a presented token.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two byte strings (length may leak, content does not).
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// Base64url without padding, as OAuth uses everywhere.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A configuration value that holds a credential (e.g. an SMTP URL with a password): `Debug`
/// never prints it, so deriving `Debug` on a config struct cannot leak it into a log.
#[derive(Clone)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redacted(…)")
    }
}

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Redacted(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_hash_matches() {
        let a = generate("x_");
        let b = generate("x_");
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("x_"));
        assert_eq!(a.token.len(), 2 + 43);
        assert!(equal(&hash(&a.token), &a.hash));
        assert!(!equal(&hash(&b.token), &a.hash));
    }
}
