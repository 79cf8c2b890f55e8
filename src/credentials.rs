//! The one rule for every credential that makes a credential: what it makes is never wider
//! or longer-lived than itself, and records who made it so that revoking the maker revokes
//! it (the cascade is a trigger, migration V6, so no revocation path can forget it).
//!
//! Every tool that mints a standing credential (API keys, customer keys; webhook
//! subscriptions and data-source keys as they land) asks [`bound`] (or, for a customer
//! credential, [`bound_customer`]) first.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::ToolError;
use crate::identity::{CredentialKind, Persona, Principal, Product, Role};

/// The credential a new one was minted through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maker {
    /// The operator's command line: bounded by nothing but the request.
    Operator,
    /// An API key (its bare hex id).
    Key(String),
    /// An OAuth connection (its grant id).
    Connection(Uuid),
}

/// What a new credential may be, once bounded by its maker.
#[derive(Debug, Clone)]
pub struct Bounded {
    pub role: Role,
    /// `None`: every product installed, now or later (only when the maker is unrestricted).
    pub products: Option<Vec<Product>>,
    pub expires_at: Option<OffsetDateTime>,
    pub maker: Maker,
}

impl Bounded {
    /// The bare key id of the minting key, for the `parent_key_id` column.
    pub fn parent_key_id(&self) -> Option<&str> {
        match &self.maker {
            Maker::Key(id) => Some(id),
            _ => None,
        }
    }

    /// The minting connection, for the `parent_grant_id` column.
    pub fn parent_grant_id(&self) -> Option<Uuid> {
        match self.maker {
            Maker::Connection(id) => Some(id),
            _ => None,
        }
    }

    /// Product slugs for storage (`None` = all).
    pub fn product_slugs(&self) -> Option<Vec<String>> {
        self.products
            .as_ref()
            .map(|ps| ps.iter().map(|p| p.slug().to_owned()).collect())
    }
}

/// Which credential `actor` is, as a maker.
pub fn maker_of(actor: &Principal) -> Result<Maker, ToolError> {
    let id = actor.credential.id.as_str();
    match actor.credential.kind {
        CredentialKind::Cli => Ok(Maker::Operator),
        CredentialKind::ApiKey => id
            .strip_prefix("key_")
            .map(|hex| Maker::Key(hex.to_owned()))
            .ok_or_else(|| ToolError::internal(format!("API key principal with id {id:?}"))),
        CredentialKind::OauthToken => id
            .strip_prefix("grant_")
            .and_then(|g| g.parse().ok())
            .map(Maker::Connection)
            .ok_or_else(|| ToolError::internal(format!("OAuth principal with id {id:?}"))),
        // A browser session is not a credential for tools; nothing mints through it.
        CredentialKind::User => Err(ToolError::forbidden(
            "a web sign-in cannot mint credentials",
        )),
    }
}

/// Bounds a requested credential by the one minting it: role at most the actor's current
/// role; products a subset of the actor's (an unrestricted actor may mint unrestricted);
/// expiry no later than the actor's own key expiry. Refuses rather than silently narrowing
/// what was asked explicitly; fills in the actor's bound where nothing was asked.
pub fn bound(
    actor: &Principal,
    role: Role,
    products: Option<Vec<Product>>,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Bounded, ToolError> {
    if actor.persona != Persona::Agent {
        return Err(ToolError::forbidden(
            "customer credentials cannot mint credentials",
        ));
    }
    if actor.data_source.is_some() {
        return Err(ToolError::forbidden(
            "a data-source key cannot mint credentials",
        ));
    }
    let maker = maker_of(actor)?;
    if role > actor.role {
        return Err(ToolError::forbidden(format!(
            "a credential with the {} role cannot mint one with the {} role",
            actor.role, role
        ))
        .with("max_role", actor.role.as_str()));
    }
    let products = match (products, actor.all_products) {
        (requested, true) => requested,
        (None, false) => Some(actor.products.clone()),
        (Some(requested), false) => {
            if let Some(outside) = requested.iter().find(|p| !actor.products.contains(p)) {
                return Err(ToolError::forbidden(format!(
                    "this credential does not reach the {} product, so it cannot mint one that does",
                    outside.slug()
                ))
                .with("path", "products"));
            }
            Some(requested)
        }
    };
    let products = products.map(|mut ps| {
        ps.sort();
        ps.dedup();
        ps
    });
    // An OAuth principal's expiry is its access token's (minutes). The connection behind it
    // lives while it is used: its refresh token dies after REFRESH_IDLE unused. What it mints
    // lives at most that long from now (and dies at once if the connection is revoked).
    let ceiling = match actor.credential.kind {
        CredentialKind::ApiKey => actor.expires_at,
        CredentialKind::OauthToken => Some(now + crate::oauth::grants::REFRESH_IDLE),
        CredentialKind::Cli | CredentialKind::User => None,
    };
    let expires_at = match (expires_at, ceiling) {
        (None, ceiling) => ceiling,
        (Some(asked), Some(ceiling)) if asked > ceiling => {
            return Err(ToolError::forbidden(
                "a credential cannot mint one that outlives it; ask for a shorter expires_in",
            )
            .with("path", "expires_in"));
        }
        (Some(asked), _) => Some(asked),
    };
    Ok(Bounded {
        role,
        products,
        expires_at,
        maker,
    })
}

/// Bounds a customer credential (support's customer persona, bound to one requester) minted
/// by `actor`. It is the narrowest credential there is, the reader role on the support
/// product only, so the general rule is all it needs, plus one thing the general rule lets an
/// unrestricted maker skip: the maker must reach support itself now, since the new credential
/// is good for nothing else.
pub fn bound_customer(
    actor: &Principal,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Bounded, ToolError> {
    let bounded = bound(
        actor,
        Role::Reader,
        Some(vec![Product::Support]),
        expires_at,
        now,
    )?;
    if !actor.has_product(Product::Support) {
        return Err(ToolError::forbidden(
            "this credential does not reach the support product, so it cannot mint a customer credential",
        ));
    }
    Ok(bounded)
}

/// Bounds a data-source key minted by `actor`: the general rule for role and expiry, with no
/// product (the key reaches only its source's endpoint). A credential bound to a data source
/// never mints (it reaches no concierge), and is refused here too.
pub fn bound_data_source(
    actor: &Principal,
    role: Role,
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Bounded, ToolError> {
    if actor.data_source.is_some() {
        return Err(ToolError::forbidden(
            "a data-source key cannot mint credentials",
        ));
    }
    bound(actor, role, Some(Vec::new()), expires_at, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CredentialRef;

    fn key(
        role: Role,
        products: Option<Vec<Product>>,
        expires_at: Option<OffsetDateTime>,
    ) -> Principal {
        Principal {
            workspace_id: Uuid::nil(),
            workspace_name: "w".into(),
            role,
            persona: Persona::Agent,
            principal_id: None,
            user_id: None,
            all_products: products.is_none(),
            products: products.unwrap_or_else(|| Product::ALL.to_vec()),
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: "key_00000000000000aa".into(),
            },
            expires_at,
            data_source: None,
            credential_epoch: None,
        }
    }

    #[test]
    fn role_products_and_expiry_are_bounded() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let admin = key(Role::Admin, Some(vec![Product::Crm]), Some(now));
        assert!(bound(&admin, Role::Owner, None, None, now).is_err());
        assert!(bound(&admin, Role::Admin, Some(vec![Product::Support]), None, now).is_err());
        let b = bound(&admin, Role::Reader, None, None, now).unwrap();
        assert_eq!(b.products, Some(vec![Product::Crm]));
        assert_eq!(b.expires_at, Some(now));
        assert_eq!(b.maker, Maker::Key("00000000000000aa".into()));
        assert!(
            bound(
                &admin,
                Role::Reader,
                None,
                Some(now + time::Duration::days(1)),
                now
            )
            .is_err()
        );
        let mut customer = key(Role::Owner, None, None);
        customer.persona = Persona::Customer;
        assert_eq!(
            bound(&customer, Role::Reader, None, None, now)
                .unwrap_err()
                .code,
            crate::error::ErrorCode::Forbidden
        );
        let mut signed_in = key(Role::Owner, None, None);
        signed_in.credential.kind = CredentialKind::User;
        assert!(bound(&signed_in, Role::Reader, None, None, now).is_err());
        let open = key(Role::Owner, None, None);
        assert_eq!(
            bound(&open, Role::Owner, None, None, now).unwrap().products,
            None
        );
    }

    #[test]
    fn customer_credentials_are_reader_on_support_within_the_maker() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let later = now + time::Duration::days(30);
        let admin = key(Role::Admin, Some(vec![Product::Support]), Some(later));
        let b = bound_customer(&admin, None, now).unwrap();
        assert_eq!(b.role, Role::Reader);
        assert_eq!(b.products, Some(vec![Product::Support]));
        assert_eq!(b.expires_at, Some(later));
        assert_eq!(b.parent_key_id(), Some("00000000000000aa"));
        assert!(bound_customer(&admin, Some(later + time::Duration::days(1)), now).is_err());
        let crm_only = key(Role::Owner, Some(vec![Product::Crm]), None);
        assert!(bound_customer(&crm_only, None, now).is_err());
        // Unrestricted, but support is not installed: nothing to reach.
        let mut unrestricted = key(Role::Owner, None, None);
        unrestricted.products = vec![Product::Crm];
        assert!(bound_customer(&unrestricted, None, now).is_err());
        unrestricted.products = vec![Product::Crm, Product::Support];
        assert_eq!(
            bound_customer(&unrestricted, None, now).unwrap().products,
            Some(vec![Product::Support])
        );
        let mut customer = key(Role::Owner, None, None);
        customer.persona = Persona::Customer;
        assert!(bound_customer(&customer, None, now).is_err());
    }
}
