//! Credentials this process has resolved, so that a call does not pay a separate database
//! transaction to look its credential up again (issue 15).
//!
//! Exactness does not rest on this cache. Each entry carries the workspace's credential epoch
//! read together with the credential (migration V19); every transaction a cached principal
//! opens checks that epoch in the statement it sends anyway (`crate::db::Scope`), and any
//! revocation, expiry, role change, member removal, requester change or product change moves
//! the epoch in its own transaction. A call that finds it moved is answered by resolving the
//! credential afresh (`super::authenticate`), so the change takes effect on the next call on
//! every node. What the cache can serve without touching the database (the tool list,
//! `initialize`) is bounded by [`MAX_AGE`].
//!
//! Entries are keyed by the SHA-256 of the presented token and the endpoint it was presented
//! at (an OAuth token's audience is the endpoint). The digest of a 256-bit secret reveals
//! nothing usable, so comparing digests in a hash map needs no constant-time care. Nothing
//! unresolved is kept: unknown, expired and revoked credentials always go to the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use time::{Duration, OffsetDateTime};

use crate::identity::{Endpoint, Principal};

/// The longest an entry is served before the credential is resolved again.
pub const MAX_AGE: Duration = Duration::seconds(30);
/// Entries kept at most; past it, expired entries go first, then the oldest half.
const CAPACITY: usize = 10_000;
/// How often an API key's `last_used_at` is written (the same once a minute as before).
const TOUCH_EVERY: Duration = Duration::minutes(1);

/// One presented credential at one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    endpoint: Endpoint,
    token_hash: [u8; 32],
}

impl Key {
    pub fn new(endpoint: Endpoint, token: &str) -> Key {
        Key {
            endpoint,
            token_hash: crate::secret::hash(token),
        }
    }
}

struct Entry {
    principal: Arc<Principal>,
    resolved_at: OffsetDateTime,
    last_used: Option<OffsetDateTime>,
}

/// A cache hit: the principal (with its epoch) and whether its use is due to be recorded.
pub struct Hit {
    pub principal: Arc<Principal>,
    pub touch_due: bool,
}

#[derive(Default)]
pub struct CredentialCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl CredentialCache {
    /// The cached principal for `key`, unless it is older than [`MAX_AGE`] or its credential
    /// has expired by `now`.
    pub fn get(&self, key: &Key, now: OffsetDateTime) -> Option<Hit> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(key)?;
        if !fresh(entry, now) {
            entries.remove(key);
            return None;
        }
        let touch_due = touch_due(entry.last_used, now);
        if touch_due {
            entry.last_used = Some(now);
        }
        Some(Hit {
            principal: entry.principal.clone(),
            touch_due,
        })
    }

    /// Keeps a principal resolved at `now`. Only one that carries its epoch is kept: without
    /// one nothing could tell a later call that it changed.
    pub fn insert(
        &self,
        key: Key,
        principal: &Principal,
        last_used: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) {
        if principal.credential_epoch.is_none() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.retain(|_, entry| fresh(entry, now));
        }
        if entries.len() >= CAPACITY {
            let mut ages: Vec<OffsetDateTime> = entries.values().map(|e| e.resolved_at).collect();
            let middle = ages.len() / 2;
            let (_, cutoff, _) = ages.select_nth_unstable(middle);
            let cutoff = *cutoff;
            entries.retain(|_, entry| entry.resolved_at > cutoff);
        }
        entries.insert(
            key,
            Entry {
                principal: Arc::new(principal.clone()),
                resolved_at: now,
                last_used,
            },
        );
    }

    /// Drops an entry a call found out of date.
    pub fn forget(&self, key: &Key) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(key);
    }

    /// Entries held now (for `/metrics`).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an API key last used at `last_used` should have its use recorded at `now`.
pub fn touch_due(last_used: Option<OffsetDateTime>, now: OffsetDateTime) -> bool {
    last_used.is_none_or(|t| now - t >= TOUCH_EVERY)
}

fn fresh(entry: &Entry, now: OffsetDateTime) -> bool {
    now - entry.resolved_at < MAX_AGE && entry.principal.expires_at.is_none_or(|t| t > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CredentialKind, CredentialRef, Persona, Product, Role};
    use uuid::Uuid;

    fn principal(epoch: Option<i64>, expires_at: Option<OffsetDateTime>) -> Principal {
        Principal {
            workspace_id: Uuid::nil(),
            workspace_name: "w".into(),
            role: Role::Member,
            persona: Persona::Agent,
            principal_id: None,
            user_id: None,
            products: vec![Product::Crm],
            all_products: false,
            credential: CredentialRef {
                kind: CredentialKind::ApiKey,
                id: "key_00000000000000aa".into(),
            },
            expires_at,
            data_source: None,
            credential_epoch: epoch,
        }
    }

    #[test]
    fn entries_expire_with_age_and_with_the_credential() {
        let cache = CredentialCache::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let key = Key::new(Endpoint::Product(Product::Crm), "hdls_a");
        cache.insert(key, &principal(Some(3), None), None, now);
        let hit = cache.get(&key, now + Duration::seconds(1)).expect("hit");
        assert_eq!(hit.principal.credential_epoch, Some(3));
        assert!(hit.touch_due, "never used: due");
        assert!(
            !cache
                .get(&key, now + Duration::seconds(2))
                .expect("hit")
                .touch_due
        );
        assert!(cache.get(&key, now + MAX_AGE).is_none(), "too old");
        assert!(cache.is_empty(), "an old entry is dropped when found");

        let expiring = principal(Some(3), Some(now + Duration::seconds(5)));
        cache.insert(key, &expiring, None, now);
        assert!(cache.get(&key, now + Duration::seconds(4)).is_some());
        assert!(
            cache.get(&key, now + Duration::seconds(5)).is_none(),
            "expired"
        );
    }

    #[test]
    fn only_principals_with_an_epoch_are_kept_and_keys_include_the_endpoint() {
        let cache = CredentialCache::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        let crm = Key::new(Endpoint::Product(Product::Crm), "hdls_a");
        cache.insert(crm, &principal(None, None), None, now);
        assert!(cache.get(&crm, now).is_none());
        cache.insert(crm, &principal(Some(0), None), None, now);
        let support = Key::new(Endpoint::Product(Product::Support), "hdls_a");
        assert!(
            cache.get(&support, now).is_none(),
            "another endpoint is another entry"
        );
        cache.forget(&crm);
        assert!(cache.get(&crm, now).is_none());
    }

    #[test]
    fn a_full_cache_sheds_its_oldest_half() {
        let cache = CredentialCache::default();
        let now = OffsetDateTime::UNIX_EPOCH;
        for i in 0..CAPACITY {
            let key = Key::new(Endpoint::Product(Product::Crm), &format!("hdls_{i}"));
            let at = now + Duration::milliseconds(i as i64);
            cache.insert(key, &principal(Some(0), None), None, at);
        }
        let later = now + Duration::seconds(10);
        cache.insert(
            Key::new(Endpoint::Product(Product::Crm), "hdls_new"),
            &principal(Some(0), None),
            None,
            later,
        );
        assert!(cache.len() <= CAPACITY / 2 + 1, "{}", cache.len());
        let newest = Key::new(Endpoint::Product(Product::Crm), "hdls_new");
        assert!(cache.get(&newest, later).is_some());
    }
}
