-- Closing the ways an identity or a credential could be widened around row-level security.
--
-- 1. Proven addresses. A password chosen through an invitation link proves only that the
--    person holds that link (which the inviter also saw). Such a person reaches the
--    memberships they joined through invitation links; a membership added by the operator
--    (first start, `hdls admin member add`) needs the address proven, which an
--    operator-issued set-password link does (the operator vouches for the address).
-- 2. Credentials that make credentials. Every API key records the credential that minted it
--    (another key, or an OAuth connection), is bounded by it (role, products, expiry), and is
--    revoked with it, transitively, by a trigger, so no revocation path can forget it.

ALTER TABLE hdls_identity.users ADD COLUMN address_proven_at timestamptz;
-- People whose account an invitation link created (same instant as its acceptance) have not
-- proven their address; everyone else got their password from an operator-issued link (or
-- has none yet), even if they later joined another workspace through an invitation.
ALTER TABLE hdls.invitations NO FORCE ROW LEVEL SECURITY;
UPDATE hdls_identity.users u SET address_proven_at = u.created_at
WHERE u.password_hash IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM hdls.invitations i
                  WHERE i.accepted_by = u.user_id AND i.accepted_at = u.created_at);
ALTER TABLE hdls.invitations FORCE ROW LEVEL SECURITY;
GRANT UPDATE (address_proven_at) ON hdls_identity.users TO hdls_auth;

ALTER TABLE hdls.members ADD COLUMN joined_via text NOT NULL DEFAULT 'operator'
    CHECK (joined_via IN ('operator', 'invitation'));
-- The owner role is subject to the forced row policies like everyone, so it lifts them for
-- the two tables this back-fill reads and writes, inside this migration's transaction.
ALTER TABLE hdls.members NO FORCE ROW LEVEL SECURITY;
ALTER TABLE hdls.invitations NO FORCE ROW LEVEL SECURITY;
UPDATE hdls.members m SET joined_via = 'invitation'
WHERE EXISTS (SELECT 1 FROM hdls.invitations i
              WHERE i.workspace_id = m.workspace_id AND i.accepted_by = m.user_id);
ALTER TABLE hdls.members FORCE ROW LEVEL SECURITY;
ALTER TABLE hdls.invitations FORCE ROW LEVEL SECURITY;

-- The memberships a signed-in person may use: the one rule, read by consent, token exchange,
-- refresh and every OAuth request. security_invoker: it grants nothing by itself.
CREATE VIEW hdls_identity.usable_memberships WITH (security_invoker = true) AS
    SELECT m.workspace_id, m.user_id, m.email, m.role, m.joined_at
    FROM hdls.members m JOIN hdls_identity.users u ON u.user_id = m.user_id
    WHERE u.address_proven_at IS NOT NULL OR m.joined_via = 'invitation';
GRANT SELECT ON hdls_identity.usable_memberships TO hdls_auth;

-- Keys: their product bound (NULL: every installed product) and who minted them.
ALTER TABLE hdls.api_keys
    ADD COLUMN products text[] CHECK (products <@ ARRAY['crm', 'support', 'contacts']::text[]),
    ADD COLUMN parent_key_id text CHECK (parent_key_id ~ '^[0-9a-f]{16}$'),
    ADD COLUMN parent_grant_id uuid,
    ADD COLUMN revoked_reason text CHECK (length(revoked_reason) <= 200),
    ADD CONSTRAINT one_parent CHECK (parent_key_id IS NULL OR parent_grant_id IS NULL);
CREATE INDEX api_keys_parent_key ON hdls.api_keys (workspace_id, parent_key_id)
    WHERE parent_key_id IS NOT NULL;
CREATE INDEX api_keys_parent_grant ON hdls.api_keys (workspace_id, parent_grant_id)
    WHERE parent_grant_id IS NOT NULL;
GRANT UPDATE (revoked_reason) ON hdls.api_keys TO hdls_runtime;
-- The credential path revokes connections (refresh reuse, RFC 7009, a new password); the
-- cascade below then revokes the keys they minted, as hdls_auth.
GRANT UPDATE (revoked_at, revoked_reason) ON hdls.api_keys TO hdls_auth;

-- Revoking a key or a connection revokes every key minted through it. The nested UPDATE
-- fires this trigger again for those keys, so the cascade is transitive. It writes only rows
-- of the same workspace (safe on a distributed table).
CREATE FUNCTION hdls.revoke_minted_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    IF TG_TABLE_NAME = 'api_keys' THEN
        UPDATE hdls.api_keys SET revoked_at = NEW.revoked_at,
               revoked_reason = left('minter revoked: key_' || NEW.key_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_key_id = NEW.key_id AND revoked_at IS NULL;
    ELSE
        UPDATE hdls.api_keys SET revoked_at = NEW.revoked_at,
               revoked_reason = left('minting connection revoked: grant_' || NEW.grant_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_grant_id = NEW.grant_id AND revoked_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER revoke_minted_keys AFTER UPDATE OF revoked_at ON hdls.api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.revoke_minted_keys();
CREATE TRIGGER revoke_minted_keys AFTER UPDATE OF revoked_at ON hdls.oauth_grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.revoke_minted_keys();

-- A refused tool call counts against the workspace's per-minute window (never the monthly
-- ledger, which bills only calls that ran). Runs inside the caller's tenant transaction,
-- which has stamped the workspace with SET LOCAL; the time comes from the server's clock.
CREATE FUNCTION hdls.count_refusal(at timestamptz,
                                   OUT allowed boolean, OUT refused_window text,
                                   OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
DECLARE
    per_minute integer;
    minute_start timestamptz := date_trunc('minute', at, 'UTC');
    taken integer;
BEGIN
    per_minute := coalesce((SELECT p.per_minute FROM hdls_catalog.plans p
                            WHERE p.name = (SELECT w.plan FROM hdls.workspaces w)), 120);
    INSERT INTO hdls.rate_windows AS r (window_start, calls) VALUES (minute_start, 1)
    ON CONFLICT (workspace_id, window_start) DO UPDATE SET calls = r.calls + 1
        WHERE r.calls < per_minute
    RETURNING r.calls INTO taken;
    allowed := taken IS NOT NULL AND taken <= per_minute;
    IF NOT allowed THEN
        refused_window := 'minute';
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
    END IF;
    call_limit := per_minute;
END
$$;

-- Housekeeping forgets OAuth clients nobody connected within a day (anonymous registration
-- must not grow the table without end).
GRANT DELETE ON hdls_identity.oauth_clients TO hdls_auth;

-- Keys minted before this migration: their maker, from created_by (`key_<hex>` or
-- `grant_<uuid>`), a key minted over OAuth bounded by its connection's products, and keys
-- whose maker is already revoked revoked now (the trigger above cascades further down).
ALTER TABLE hdls.api_keys NO FORCE ROW LEVEL SECURITY;
ALTER TABLE hdls.oauth_grants NO FORCE ROW LEVEL SECURITY;
UPDATE hdls.api_keys k SET parent_key_id = substr(k.created_by, 5)
WHERE k.created_by ~ '^key_[0-9a-f]{16}$';
UPDATE hdls.api_keys k
SET parent_grant_id = g.grant_id, products = g.products
FROM hdls.oauth_grants g
WHERE k.created_by ~ '^grant_[0-9a-f-]{36}$'
  AND g.workspace_id = k.workspace_id AND g.grant_id = substr(k.created_by, 7)::uuid;
UPDATE hdls.api_keys k
SET revoked_at = statement_timestamp(), revoked_reason = 'its minter was revoked before revocation cascaded'
WHERE k.revoked_at IS NULL
  AND (EXISTS (SELECT 1 FROM hdls.api_keys p
               WHERE p.workspace_id = k.workspace_id AND p.key_id = k.parent_key_id AND p.revoked_at IS NOT NULL)
       OR EXISTS (SELECT 1 FROM hdls.oauth_grants g
                  WHERE g.workspace_id = k.workspace_id AND g.grant_id = k.parent_grant_id AND g.revoked_at IS NOT NULL));
ALTER TABLE hdls.api_keys FORCE ROW LEVEL SECURITY;
ALTER TABLE hdls.oauth_grants FORCE ROW LEVEL SECURITY;
