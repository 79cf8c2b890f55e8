//! Webhook signing secrets and the signatures every delivery carries.
//!
//! A secret is `whsec_` + standard base64 of 32 random bytes, the shape Standard Webhooks
//! libraries take. Two signatures travel with each delivery:
//! - `X-Hdls-Signature: v1=<hex>`: HMAC-SHA256 of the raw body, keyed with the whole secret
//!   string exactly as it was shown (the seed's `hmacSha256Hex(yourSecret, rawRequestBody)`);
//! - `webhook-signature: v1,<base64>`: Standard Webhooks, HMAC-SHA256 of
//!   `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the bytes the part after `whsec_`
//!   decodes to.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::ToolError;
use crate::master_key::MasterKey;

/// Every secret starts with this.
pub const PREFIX: &str = "whsec_";

/// A new signing secret.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("{PREFIX}{}", STANDARD.encode(bytes))
}

/// What a sealed secret is bound to: moved to another subscription, it does not open.
fn context(workspace_id: Uuid, subscription_id: Uuid) -> Vec<u8> {
    format!("hdls webhook secret {workspace_id} {subscription_id}").into_bytes()
}

/// Seals a secret for storage.
pub fn seal(
    master: &MasterKey,
    workspace_id: Uuid,
    subscription_id: Uuid,
    secret: &str,
) -> Result<Vec<u8>, ToolError> {
    master
        .seal(secret.as_bytes(), &context(workspace_id, subscription_id))
        .map_err(ToolError::internal)
}

/// Opens a sealed secret, only to sign a delivery.
pub fn open(
    master: &MasterKey,
    workspace_id: Uuid,
    subscription_id: Uuid,
    sealed: &[u8],
) -> anyhow::Result<String> {
    let bytes = master.open(sealed, &context(workspace_id, subscription_id))?;
    Ok(String::from_utf8(bytes)?)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length, so this never fails; were it to, an all-zero signature
    // verifies nowhere, which fails closed.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0u8; 32];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The `X-Hdls-Signature` value: `v1=` + lowercase hex HMAC-SHA256 of the body, keyed with
/// the secret string as shown.
pub fn hdls_signature(secret: &str, body: &[u8]) -> String {
    format!("v1={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// The `webhook-signature` value (Standard Webhooks): `v1,` + base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`, keyed with the secret's decoded bytes.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let encoded = secret.strip_prefix(PREFIX).unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| secret.as_bytes().to_vec());
    let signed = hmac(
        &key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    format!("v1,{}", STANDARD.encode(signed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_standard_webhooks_shaped_and_seal_to_their_subscription() {
        let secret = generate();
        assert!(secret.starts_with(PREFIX));
        assert_eq!(STANDARD.decode(&secret[PREFIX.len()..]).unwrap().len(), 32);
        let master = MasterKey::ephemeral();
        let (ws, id) = (Uuid::now_v7(), Uuid::now_v7());
        let sealed = seal(&master, ws, id, &secret).unwrap();
        assert_eq!(open(&master, ws, id, &sealed).unwrap(), secret);
        assert!(open(&master, ws, Uuid::now_v7(), &sealed).is_err());
    }

    #[test]
    fn signatures_match_known_vectors() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            hdls_signature("Jefe", b"what do ya want for nothing?"),
            "v1=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // The Standard Webhooks specification's example.
        assert_eq!(
            standard_signature(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
