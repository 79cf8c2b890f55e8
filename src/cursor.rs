//! Opaque pagination cursors: the keyset position after a page's last row.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ToolError;

/// Encodes a keyset position. Opaque to clients; not a secret and not signed, because
/// every value in it is re-checked by the query (RLS included) when it comes back.
pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// Decodes a cursor this server issued; anything else is `invalid_input` at `path`.
pub fn decode<T: DeserializeOwned>(path: &str, text: &str) -> Result<T, ToolError> {
    let bad = || ToolError::invalid_input(path, "cursor is not one this server issued");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}
