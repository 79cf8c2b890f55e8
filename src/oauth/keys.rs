//! Token signing keys: Ed25519, private halves sealed under the master key, public halves
//! published as a JWKS. Rotation adds a new key and retires the old ones; a retired key keeps
//! verifying for longer than an access token lives, so rotating never breaks a valid token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::RwLock;

use crate::error::ToolError;
use crate::master_key::MasterKey;
use crate::secret;

/// How long a retired key still verifies (access tokens live 10 minutes).
pub const RETIRED_GRACE: time::Duration = time::Duration::minutes(15);
/// How long a loaded key set is trusted before re-reading (picks up rotation by other nodes).
const CACHE_FOR: Duration = Duration::from_secs(60);
/// An unknown `kid` triggers at most one re-read per this interval (forged kids cannot make
/// every request hit the database).
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);

struct Loaded {
    at: Instant,
    /// The newest unretired key; `None` inside when this process cannot open it (a master key
    /// that differs from the one that sealed it). Verification never needs it.
    signing: Option<(String, Option<Arc<EncodingKey>>)>,
    verifying: Vec<(String, [u8; 32])>,
}

/// The signing keys, cached in memory.
pub struct Keyring {
    master: MasterKey,
    loaded: RwLock<Option<Arc<Loaded>>>,
}

fn seal_context(kid: &str) -> Vec<u8> {
    format!("hdls signing key {kid}").into_bytes()
}

impl Keyring {
    /// The master key the keyring seals with (also sealing other secrets at rest: webhook
    /// signing secrets, linked databases' connection strings).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    pub fn new(master: MasterKey) -> Keyring {
        Keyring {
            master,
            loaded: RwLock::new(None),
        }
    }

    async fn load(&self, auth: &Pool, now: OffsetDateTime) -> Result<Arc<Loaded>, ToolError> {
        let client = auth.get().await.map_err(ToolError::from_pool)?;
        let rows = client
            .query(
                "SELECT kid, private_key_sealed, public_key, retired_at FROM hdls_identity.signing_keys
                 WHERE retired_at IS NULL OR retired_at > $1
                 ORDER BY created_at DESC, kid",
                &[&(now - RETIRED_GRACE)],
            )
            .await?;
        let mut signing = None;
        let mut verifying = Vec::new();
        for row in rows {
            let kid: String = row.get("kid");
            let public: Vec<u8> = row.get("public_key");
            let Ok(public) = <[u8; 32]>::try_from(public.as_slice()) else {
                continue;
            };
            let retired: Option<OffsetDateTime> = row.get("retired_at");
            if signing.is_none() && retired.is_none() {
                let sealed: Vec<u8> = row.get("private_key_sealed");
                let opened = match self.master.open(&sealed, &seal_context(&kid)) {
                    Ok(der) => Some(Arc::new(EncodingKey::from_ed_der(&der))),
                    Err(error) => {
                        tracing::error!(%error, kid, "cannot open the current signing key");
                        None
                    }
                };
                signing = Some((kid.clone(), opened));
            }
            verifying.push((kid, public));
        }
        let loaded = Arc::new(Loaded {
            at: Instant::now(),
            signing,
            verifying,
        });
        *self.loaded.write().await = Some(loaded.clone());
        Ok(loaded)
    }

    async fn cached(&self) -> Option<Arc<Loaded>> {
        self.loaded.read().await.clone()
    }

    /// The key to sign with now (creating the first one on first use).
    pub async fn signing_key(
        &self,
        auth: &Pool,
        now: OffsetDateTime,
    ) -> Result<(String, Arc<EncodingKey>), ToolError> {
        let usable = |signing: &Option<(String, Option<Arc<EncodingKey>>)>| match signing {
            Some((kid, Some(key))) => Ok(Some((kid.clone(), key.clone()))),
            Some((kid, None)) => Err(ToolError::internal(format!(
                "signing key {kid} cannot be opened with this server's master key \
                 (every node must use the same HDLS_MASTER_KEY)"
            ))),
            None => Ok(None),
        };
        if let Some(l) = self.cached().await
            && l.at.elapsed() < CACHE_FOR
            && let Some(s) = usable(&l.signing)?
        {
            return Ok(s);
        }
        if let Some(s) = usable(&self.load(auth, now).await?.signing)? {
            return Ok(s);
        }
        create(auth, &self.master, now).await?;
        usable(&self.load(auth, now).await?.signing)?
            .ok_or_else(|| ToolError::internal("no signing key after creating one"))
    }

    /// The verifying key for `kid`, if it is current or recently retired.
    pub async fn verifying_key(
        &self,
        auth: &Pool,
        kid: &str,
        now: OffsetDateTime,
    ) -> Result<Option<DecodingKey>, ToolError> {
        let find = |l: &Loaded| {
            l.verifying
                .iter()
                .find(|(k, _)| k == kid)
                .map(|(_, public)| DecodingKey::from_ed_der(public))
        };
        let current = self.cached().await;
        if let Some(l) = &current {
            if let Some(key) = find(l) {
                if l.at.elapsed() < CACHE_FOR {
                    return Ok(Some(key));
                }
            } else if l.at.elapsed() < RELOAD_AT_MOST_EVERY {
                return Ok(None);
            }
        }
        Ok(find(&*self.load(auth, now).await?))
    }

    /// The public keys as a JWKS document (RFC 7517, OKP keys per RFC 8037).
    pub async fn jwks(&self, auth: &Pool, now: OffsetDateTime) -> Result<Value, ToolError> {
        let loaded = match self.cached().await {
            Some(l) if l.at.elapsed() < CACHE_FOR => l,
            _ => self.load(auth, now).await?,
        };
        let keys: Vec<Value> = loaded
            .verifying
            .iter()
            .map(|(kid, public)| {
                json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": secret::b64url(public) })
            })
            .collect();
        Ok(json!({ "keys": keys }))
    }

    /// Rotates with this keyring's master key and drops the cache, so this process signs with
    /// the new key at once (other processes pick it up within a minute).
    pub async fn rotate(&self, auth: &Pool, now: OffsetDateTime) -> Result<String, ToolError> {
        let kid = rotate(auth, &self.master, now).await?;
        self.invalidate().await;
        Ok(kid)
    }

    /// Forgets the cache (after a rotation in this process).
    pub async fn invalidate(&self) {
        *self.loaded.write().await = None;
    }
}

/// Generates and stores a new key; returns its kid.
async fn create(auth: &Pool, master: &MasterKey, now: OffsetDateTime) -> Result<String, ToolError> {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    let signing = SigningKey::from_bytes(&seed);
    let der = signing.to_pkcs8_der().map_err(ToolError::internal)?;
    let public = signing.verifying_key().to_bytes();
    let mut kid_bytes = [0u8; 8];
    rand::fill(&mut kid_bytes);
    let kid = hex::encode(kid_bytes);
    let sealed = master
        .seal(der.as_bytes(), &seal_context(&kid))
        .map_err(ToolError::internal)?;
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    client
        .execute(
            "INSERT INTO hdls_identity.signing_keys (kid, private_key_sealed, public_key, created_at)
             VALUES ($1, $2, $3, $4)",
            &[&kid, &sealed, &public.as_slice(), &now],
        )
        .await?;
    Ok(kid)
}

/// Rotates: a new key signs from now on; every older key is retired (still verifying for
/// [`RETIRED_GRACE`]). Returns the new kid.
pub async fn rotate(
    auth: &Pool,
    master: &MasterKey,
    now: OffsetDateTime,
) -> Result<String, ToolError> {
    let kid = create(auth, master, now).await?;
    let client = auth.get().await.map_err(ToolError::from_pool)?;
    client
        .execute(
            "UPDATE hdls_identity.signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL",
            &[&kid, &now],
        )
        .await?;
    Ok(kid)
}
