//! Scoped API keys: `hdls_<key_id>_<secret>`. Only a SHA-256 of the whole token is stored.
//!
//! SHA-256 (not a slow password hash) is right here because the secret is 256 random bits:
//! there is nothing to brute-force, and verification sits on every request.

use deadpool_postgres::Pool;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit;
use crate::credentials;
use crate::db::Scope;
use crate::error::ToolError;
use crate::identity::{
    CredentialKind, CredentialRef, DataSourceBinding, Persona, Principal, Product, Role,
};
use crate::secret;

/// Every key starts with this, so secret scanners and humans recognise it.
pub const PREFIX: &str = "hdls_";
const KEY_ID_HEX: usize = 16;
const SECRET_BYTES: usize = 32;

/// A freshly generated key: the token is shown once, the hash is stored.
pub struct GeneratedKey {
    pub key_id: String,
    pub token: String,
    pub hash: [u8; 32],
}

/// Makes a new random key.
pub fn generate() -> GeneratedKey {
    let mut id = [0u8; KEY_ID_HEX / 2];
    let mut secret_bytes = [0u8; SECRET_BYTES];
    rand::fill(&mut id);
    rand::fill(&mut secret_bytes);
    let key_id = hex::encode(id);
    let token = format!("{PREFIX}{key_id}_{}", secret::b64url(&secret_bytes));
    let hash = hash(&token);
    GeneratedKey {
        key_id,
        token,
        hash,
    }
}

/// SHA-256 of the whole token (the same digest every opaque hdls secret uses).
pub fn hash(token: &str) -> [u8; 32] {
    secret::hash(token)
}

/// The key id inside a well-formed token, or `None` if it is not shaped like one of ours.
pub fn parse_key_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let well_formed = key_id.len() == KEY_ID_HEX
        && key_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(key_id)
}

/// The id people see in listings: `key_<hex>`.
pub fn display_id(key_id: &str) -> String {
    format!("key_{key_id}")
}

/// Accepts `key_<hex>` or bare `<hex>`.
pub fn parse_display_id(text: &str) -> Option<&str> {
    let hex = text.strip_prefix("key_").unwrap_or(text);
    (hex.len() == KEY_ID_HEX && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then_some(hex)
}

/// Why a presented key was not accepted. Deliberately coarse on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    Unknown,
    Expired,
    Revoked,
    /// A customer key whose requester is disabled or gone.
    RequesterDisabled,
}

/// Resolves a presented token to a Principal, through the narrow auth role.
pub async fn resolve(
    auth: &Pool,
    token: &str,
    now: OffsetDateTime,
) -> Result<Result<(Principal, Option<OffsetDateTime>), Rejection>, ToolError> {
    let Some(key_id) = parse_key_id(token) else {
        return Ok(Err(Rejection::Malformed));
    };
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let statement = client
        .prepare_cached(
            "SELECT k.workspace_id, k.secret_hash, k.role, k.expires_at, k.revoked_at, k.last_used_at, w.name,
                    k.products IS NULL AS all_products, k.persona, k.principal_id,
                    k.data_source_id, k.data_source_schema,
                    (SELECT e.epoch FROM hdls.credential_epochs e
                     WHERE e.workspace_id = k.workspace_id) AS credential_epoch,
                    (SELECT r.disabled_at IS NULL FROM support.requesters r
                     WHERE r.workspace_id = k.workspace_id AND r.id = k.principal_id) AS requester_enabled,
                    ARRAY(SELECT p.product FROM hdls.installed_products p
                          WHERE p.workspace_id = k.workspace_id AND p.uninstalled_at IS NULL
                            AND (k.products IS NULL OR p.product = ANY (k.products))
                          ORDER BY p.product) AS products
             FROM hdls.api_keys k JOIN hdls.workspaces w USING (workspace_id)
             WHERE k.key_id = $1",
        )
        .await?;
    let rows = client.query(&statement, &[&key_id]).await?;
    let presented = hash(token);
    // Compare against every candidate in constant time; key ids are random, so there is
    // almost always exactly one.
    let Some(row) = rows.into_iter().find(|row| {
        let stored: &[u8] = row.get("secret_hash");
        secret::equal(stored, &presented)
    }) else {
        return Ok(Err(Rejection::Unknown));
    };
    let revoked_at: Option<OffsetDateTime> = row.get("revoked_at");
    if revoked_at.is_some() {
        return Ok(Err(Rejection::Revoked));
    }
    let expires_at: Option<OffsetDateTime> = row.get("expires_at");
    if expires_at.is_some_and(|t| t <= now) {
        return Ok(Err(Rejection::Expired));
    }
    let role: String = row.get("role");
    let role: Role = role.parse().map_err(ToolError::internal)?;
    let products: Vec<Product> = row
        .get::<_, Vec<String>>("products")
        .iter()
        .filter_map(|s| Product::from_slug(s))
        .collect();
    let principal_id: Option<Uuid> = row.get("principal_id");
    let (persona, role, products, all_products) = match row.get::<_, &str>("persona") {
        "agent" => (Persona::Agent, role, products, row.get("all_products")),
        "customer" => {
            // Checked on every request, so disabling the requester stops the key at once
            // (NULL: the requester is gone).
            if row.get::<_, Option<bool>>("requester_enabled") != Some(true) {
                return Ok(Err(Rejection::RequesterDisabled));
            }
            // Whatever the row says, a customer is a reader on support and nothing else.
            let support: Vec<Product> = products
                .into_iter()
                .filter(|p| *p == Product::Support)
                .collect();
            (Persona::Customer, Role::Reader, support, false)
        }
        other => {
            return Err(ToolError::internal(format!(
                "API key with unknown persona {other:?}"
            )));
        }
    };
    let principal = Principal {
        workspace_id: row.get("workspace_id"),
        workspace_name: row.get("name"),
        role,
        persona,
        principal_id: principal_id.filter(|_| persona == Persona::Customer),
        user_id: None,
        products,
        all_products,
        credential: CredentialRef {
            kind: CredentialKind::ApiKey,
            id: display_id(key_id),
        },
        expires_at,
        data_source: row
            .get::<_, Option<Uuid>>("data_source_id")
            .zip(row.get::<_, Option<String>>("data_source_schema"))
            .map(|(id, schema)| DataSourceBinding { id, schema }),
        credential_epoch: row.get("credential_epoch"),
    };
    Ok(Ok((principal, row.get("last_used_at"))))
}

/// Records a key's use, off the request path (callers do it at most once a minute).
pub fn record_use(auth: &Pool, principal: &Principal, now: OffsetDateTime) {
    let Some(key_id) = principal
        .credential
        .id
        .strip_prefix("key_")
        .map(str::to_owned)
    else {
        return;
    };
    let workspace_id = principal.workspace_id;
    let auth = auth.clone();
    tokio::spawn(async move {
        let result = async {
            let client = auth.get().await.map_err(|e| e.to_string())?;
            client
                .execute(
                    "UPDATE hdls.api_keys SET last_used_at = $3 WHERE workspace_id = $1 AND key_id = $2",
                    &[&workspace_id, &key_id, &now],
                )
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not record key use");
        }
    });
}

/// What minting returns: the token appears here and nowhere else, ever.
#[derive(Debug, Serialize)]
pub struct MintedKey {
    pub key_id: String,
    pub key: String,
    pub role: Role,
    /// Whom the key acts for: the team (`agent`) or one requester (`customer`).
    pub persona: Persona,
    /// The requester a customer key is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<Uuid>,
    /// The products the key reaches; `None` (shown as null) means every installed product.
    pub products: Option<Vec<Product>>,
    /// The linked database (and schema) a data-source key is bound to; it works only at
    /// `endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source: Option<DataSourceBinding>,
    /// Where a data-source key works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The credential it was minted through (`cli`, `key_…`, `grant_…`); revoking that one
    /// revokes this one.
    pub minted_by: String,
    pub label: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// Mints a key in the Scope's workspace on `actor`'s authority, bounded by it (see
/// [`crate::credentials::bound`]), and audits it.
pub async fn mint(
    scope: &Scope,
    actor: &Principal,
    role: Role,
    products: Option<Vec<Product>>,
    label: Option<String>,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<MintedKey, ToolError> {
    let bounded = credentials::bound(actor, role, products, expires_at, now)?;
    store(scope, actor, bounded, None, None, label, now).await
}

/// Mints a data-source key: bound to one linked database of the Scope's workspace and to its
/// schema, bounded by `actor` like every minted key (see [`crate::credentials::bound_data_source`]),
/// and audited. It works only at that source's endpoint, and is revoked when the source is
/// unlinked (a trigger, migration V15).
#[allow(clippy::too_many_arguments)]
pub async fn mint_data_source(
    scope: &Scope,
    actor: &Principal,
    data_source: Uuid,
    schema: Option<String>,
    role: Role,
    label: Option<String>,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<MintedKey, ToolError> {
    let bounded = credentials::bound_data_source(actor, role, expires_at, now)?;
    // Locked so the source cannot be unlinked between this check and the insert.
    let linked_schema: String = scope
        .query_opt(
            "SELECT schema_name FROM hdls.data_sources
             WHERE workspace_id = $2 AND id = $1 AND unlinked_at IS NULL FOR SHARE",
            &[&data_source, &scope.workspace()],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!(
                "no linked data source {data_source} in this workspace"
            ))
            .with("path", "data_source")
        })?
        .get(0);
    let schema = schema.unwrap_or_else(|| linked_schema.clone());
    if schema != linked_schema {
        return Err(ToolError::invalid_input(
            "schema",
            format!(
                "this data source was linked for schema {linked_schema:?}; link the database again to serve another schema"
            ),
        ));
    }
    let binding = DataSourceBinding {
        id: data_source,
        schema,
    };
    store(scope, actor, bounded, None, Some(binding), label, now).await
}

/// Mints a customer key bound to `requester_id` (support's customer persona), bounded by
/// `actor` (see [`crate::credentials::bound_customer`]), and audits it. The requester must
/// be one of the workspace's and not disabled.
pub async fn mint_customer(
    scope: &Scope,
    actor: &Principal,
    requester_id: Uuid,
    label: Option<String>,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<MintedKey, ToolError> {
    let bounded = credentials::bound_customer(actor, expires_at, now)?;
    // Locked so the requester cannot be disabled between this check and the insert.
    let disabled_at: Option<OffsetDateTime> = scope
        .query_opt(
            "SELECT disabled_at FROM support.requesters WHERE workspace_id = $2 AND id = $1 FOR SHARE",
            &[&requester_id, &scope.workspace()],
        )
        .await?
        .ok_or_else(|| {
            ToolError::not_found(format!("no requester {requester_id} in this workspace"))
                .with("path", "requester_id")
        })?
        .get(0);
    if disabled_at.is_some() {
        return Err(ToolError::conflict(format!(
            "requester {requester_id} is disabled; enable them before minting them a key"
        ))
        .with("path", "requester_id"));
    }
    store(scope, actor, bounded, Some(requester_id), None, label, now).await
}

/// Writes a bounded key (a customer key when `requester_id` is given) and its audit record.
async fn store(
    scope: &Scope,
    actor: &Principal,
    bounded: credentials::Bounded,
    requester_id: Option<Uuid>,
    data_source: Option<DataSourceBinding>,
    label: Option<String>,
    now: OffsetDateTime,
) -> Result<MintedKey, ToolError> {
    let persona = match requester_id {
        Some(_) => Persona::Customer,
        None => Persona::Agent,
    };
    let key = generate();
    scope
        .execute(
            "INSERT INTO hdls.api_keys (key_id, secret_hash, role, label, created_by, created_at, expires_at,
                                        products, parent_key_id, parent_grant_id, persona, principal_id,
                                        data_source_id, data_source_schema)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &key.key_id,
                &key.hash.as_slice(),
                &bounded.role.as_str(),
                &label,
                &actor.credential.id,
                &now,
                &bounded.expires_at,
                &bounded.product_slugs(),
                &bounded.parent_key_id(),
                &bounded.parent_grant_id(),
                &persona.as_str(),
                &requester_id,
                &data_source.as_ref().map(|b| b.id),
                &data_source.as_ref().map(|b| b.schema.as_str()),
            ],
        )
        .await?;
    let key_id = display_id(&key.key_id);
    let role = bounded.role;
    let target = match (requester_id, &data_source) {
        (Some(requester), _) => {
            format!("{key_id} role={role} persona=customer requester_id={requester}")
        }
        (None, Some(binding)) => format!("{key_id} role={role} data_source={}", binding.id),
        (None, None) => format!("{key_id} role={role}"),
    };
    audit::record(
        scope,
        actor,
        audit::actions::API_KEY_MINT,
        Some(&target),
        audit::Outcome::Allowed,
        now,
    )
    .await?;
    Ok(MintedKey {
        key_id,
        key: key.token,
        role,
        persona,
        requester_id,
        products: bounded.products,
        endpoint: data_source
            .as_ref()
            .map(|b| crate::identity::Endpoint::data_source_path(b.id)),
        data_source,
        minted_by: actor.credential.id.clone(),
        label,
        expires_at: bounded.expires_at,
    })
}

/// Revokes a key in the Scope's workspace on `actor`'s authority (never one above the
/// actor's own role), and audits it. Revoking an already revoked key is a no-op success.
pub async fn revoke(
    scope: &Scope,
    actor: &Principal,
    key_id: &str,
    now: OffsetDateTime,
) -> Result<(), ToolError> {
    let shown = display_id(key_id);
    let row = scope
        .query_opt(
            "SELECT role, revoked_at FROM hdls.api_keys WHERE workspace_id = $2 AND key_id = $1 FOR UPDATE",
            &[&key_id, &scope.workspace()],
        )
        .await?
        .ok_or_else(|| ToolError::not_found(format!("no API key {shown} in this workspace")))?;
    let role: Role = row
        .get::<_, &str>("role")
        .parse()
        .map_err(ToolError::internal)?;
    if role > actor.role {
        return Err(ToolError::forbidden(format!(
            "a {} credential cannot revoke a {} key",
            actor.role, role
        )));
    }
    let already: Option<OffsetDateTime> = row.get("revoked_at");
    if already.is_none() {
        scope
            .execute(
                "UPDATE hdls.api_keys SET revoked_at = $2, revoked_reason = $3 WHERE key_id = $1",
                &[
                    &key_id,
                    &now,
                    &format!("revoked by {}", actor.credential.id),
                ],
            )
            .await?;
        audit::record(
            scope,
            actor,
            audit::actions::API_KEY_REVOKE,
            Some(&shown),
            audit::Outcome::Allowed,
            now,
        )
        .await?;
    }
    Ok(())
}

/// Finds which workspace a key id belongs to (operator CLI only; through the auth role).
pub async fn workspace_of(auth: &Pool, key_id: &str) -> Result<Vec<(Uuid, String)>, ToolError> {
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    let rows = client
        .query(
            "SELECT k.workspace_id, w.name FROM hdls.api_keys k JOIN hdls.workspaces w USING (workspace_id)
             WHERE k.key_id = $1",
            &[&key_id],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
