//! Access tokens: EdDSA-signed JWTs (RFC 9068 shape), 10 minutes, audience = the exact MCP
//! endpoint URL. Verifying one yields the same Principal an API key does.
//!
//! Beyond the signature, every request re-reads the grant and the membership (one indexed
//! lookup, as API keys do), so a revoked connection or a removed member stops at once rather
//! than when the token expires, and a demoted member's token carries the lower role. A
//! customer grant is checked the same way against its customer account and requester.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::app::App;
use crate::error::ToolError;
use crate::identity::{CredentialKind, CredentialRef, Endpoint, Persona, Principal, Product, Role};

/// How long an access token lives.
pub const ACCESS_TTL: time::Duration = time::Duration::minutes(10);

/// The claims hdls puts in an access token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The person (user id).
    pub sub: String,
    /// The MCP endpoint URL this token is for.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub workspace_id: Uuid,
    pub role: Role,
    pub products: Vec<Product>,
    pub grant_id: Uuid,
}

/// What a token is issued for.
pub struct Subject<'a> {
    pub user_id: Uuid,
    pub workspace_id: Uuid,
    pub role: Role,
    pub products: &'a [Product],
    pub client_id: &'a str,
    pub grant_id: Uuid,
    pub resource: &'a str,
}

/// Signs an access token.
pub async fn issue(
    app: &App,
    subject: &Subject<'_>,
    now: OffsetDateTime,
) -> Result<String, ToolError> {
    let (kid, key) = app.keys.signing_key(&app.pools.auth, now).await?;
    let claims = Claims {
        iss: app.public.base().to_owned(),
        sub: subject.user_id.to_string(),
        aud: subject.resource.to_owned(),
        exp: (now + ACCESS_TTL).unix_timestamp(),
        iat: now.unix_timestamp(),
        jti: Uuid::now_v7().to_string(),
        client_id: subject.client_id.to_owned(),
        workspace_id: subject.workspace_id,
        role: subject.role,
        products: subject.products.to_vec(),
        grant_id: subject.grant_id,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid);
    header.typ = Some("at+jwt".to_owned());
    jsonwebtoken::encode(&header, &claims, &key).map_err(ToolError::internal)
}

/// Why a token was refused (logged; the wire says only `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    /// The connection was revoked, or the person is no longer a member.
    Revoked,
}

/// Verifies signature, issuer and audience (ignoring expiry); used by the revocation endpoint
/// too, which must accept expired tokens.
pub async fn verify_claims(
    app: &App,
    token: &str,
    audience: Option<&str>,
    now: OffsetDateTime,
) -> Result<Result<Claims, Rejection>, ToolError> {
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return Ok(Err(Rejection::Malformed));
    };
    if header.alg != Algorithm::EdDSA {
        return Ok(Err(Rejection::Malformed));
    }
    let Some(kid) = header.kid.as_deref() else {
        return Ok(Err(Rejection::UnknownKey));
    };
    let Some(key) = app.keys.verifying_key(&app.pools.auth, kid, now).await? else {
        return Ok(Err(Rejection::UnknownKey));
    };
    let mut validation = Validation::new(Algorithm::EdDSA);
    // Expiry is checked below against the server's clock (tests drive it).
    validation.validate_exp = false;
    validation.leeway = 0;
    validation.set_issuer(&[app.public.base()]);
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
        Ok(data) => Ok(Ok(data.claims)),
        Err(e) => {
            use jsonwebtoken::errors::ErrorKind;
            Ok(Err(match e.kind() {
                ErrorKind::InvalidSignature => Rejection::BadSignature,
                ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
                ErrorKind::InvalidAudience => Rejection::WrongAudience,
                _ => Rejection::Malformed,
            }))
        }
    }
}

/// Resolves a bearer access token presented at `endpoint` to a Principal.
pub async fn resolve(
    app: &App,
    token: &str,
    endpoint: Endpoint,
    now: OffsetDateTime,
) -> Result<Result<Principal, Rejection>, ToolError> {
    let audience = app.public.endpoint_url(endpoint);
    let claims = match verify_claims(app, token, Some(&audience), now).await? {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    if claims.exp <= now.unix_timestamp() {
        return Ok(Err(Rejection::Expired));
    }
    let Ok(user_id) = claims.sub.parse::<Uuid>() else {
        return Ok(Err(Rejection::Malformed));
    };
    let client = app.pools.auth.get().await.map_err(ToolError::from_pool)?;
    let statement = client.prepare_cached(&RESOLVE_SQL).await?;
    let Some(row) = client
        .query_opt(
            &statement,
            &[&claims.workspace_id, &claims.grant_id, &user_id],
        )
        .await?
    else {
        return Ok(Err(Rejection::Revoked));
    };
    // The binding's role: NULL when the membership (agent) or the customer account (customer)
    // is gone, or the requester is disabled.
    let Some(bound_role) = row.get::<_, Option<&str>>("role") else {
        return Ok(Err(Rejection::Revoked));
    };
    let bound_role: Role = bound_role.parse().map_err(ToolError::internal)?;
    let persona = super::grants::parse_persona(row.get("persona"))?;
    let principal_id: Option<Uuid> = row.get("principal_id");
    // A customer grant is made only for the support endpoint (the audience pins it); this
    // keeps it there even if a grant row said otherwise.
    if persona == Persona::Customer && endpoint != Endpoint::Product(Product::Support) {
        return Ok(Err(Rejection::WrongAudience));
    }
    let installed: Vec<String> = row.get("installed");
    let products = claims
        .products
        .iter()
        .copied()
        .filter(|p| installed.iter().any(|s| s == p.slug()))
        .filter(|p| persona == Persona::Agent || *p == Product::Support)
        .collect();
    Ok(Ok(Principal {
        workspace_id: claims.workspace_id,
        workspace_name: row.get("name"),
        role: claims.role.min(bound_role),
        persona,
        principal_id,
        user_id: Some(user_id),
        products,
        all_products: false,
        credential: CredentialRef {
            kind: CredentialKind::OauthToken,
            id: format!("grant_{}", claims.grant_id),
        },
        expires_at: OffsetDateTime::from_unix_timestamp(claims.exp).ok(),
        data_source: None,
        credential_epoch: row.get("credential_epoch"),
    }))
}

/// The grant behind a token, with the role its binding allows now: the member's role for an
/// agent grant; `reader` for a customer grant whose account stands (same person bound to the
/// same requester, requester enabled, support installed); NULL otherwise. Persona and
/// principal come from the grant row, never from the token or the request.
static RESOLVE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT w.name, g.persona, g.principal_id,
                (SELECT e.epoch FROM hdls.credential_epochs e
                 WHERE e.workspace_id = g.workspace_id) AS credential_epoch,
                CASE WHEN g.persona = 'agent' THEN
                         (SELECT m.role FROM hdls_identity.usable_memberships m
                          WHERE m.workspace_id = g.workspace_id AND m.user_id = g.user_id)
                     WHEN EXISTS (SELECT 1 FROM hdls.customer_accounts ca
                                  WHERE ca.workspace_id = g.workspace_id AND ca.user_id = g.user_id
                                    AND ca.requester_id = g.principal_id AND {})
                     THEN 'reader' END AS role,
                ARRAY(SELECT p.product FROM hdls.installed_products p
                      WHERE p.workspace_id = g.workspace_id AND p.uninstalled_at IS NULL
                      ORDER BY p.product) AS installed
         FROM hdls.oauth_grants g
         JOIN hdls.workspaces w USING (workspace_id)
         WHERE g.workspace_id = $1 AND g.grant_id = $2 AND g.user_id = $3 AND g.revoked_at IS NULL",
        crate::people::customer_accounts::USABLE
    )
});
