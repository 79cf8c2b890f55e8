-- People, memberships, invitations and the OAuth 2.1 authorization server.
--
-- Two kinds of table:
-- * hdls_identity.*: state that belongs to no single workspace (a person's sign-in, OAuth
--   clients, signing keys, browser sessions). Only hdls_auth (the credential path) can reach
--   that schema; the runtime role has no USAGE on it at all.
-- * hdls.* tenant tables (members, invitations, grants, codes, refresh tokens): RLS like every
--   tenant table. The runtime role reaches them through the tenant policy (concierge tools);
--   hdls_auth gets its own policies because it acts before a tenant is known (sign-in,
--   consent, token exchange), exactly as it already does for API keys.

CREATE TABLE hdls_identity.users (
    user_id       uuid PRIMARY KEY,
    email         text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    -- argon2id PHC string; NULL until the person sets a password through a one-time link.
    password_hash text,
    created_at    timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email ON hdls_identity.users (email);

-- One-time links (set a password). Only a SHA-256 of the token is kept.
CREATE TABLE hdls_identity.user_links (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES hdls_identity.users ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('set_password')),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);

CREATE TABLE hdls_identity.web_sessions (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES hdls_identity.users ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Sign-in throttling counters, per account and per client address. UNLOGGED: losing them in
-- a crash only resets a throttle window.
CREATE UNLOGGED TABLE hdls_identity.sign_in_failures (
    subject      text PRIMARY KEY CHECK (length(subject) <= 300),
    window_start timestamptz NOT NULL,
    failures     integer NOT NULL CHECK (failures >= 0)
);

CREATE TABLE hdls_identity.oauth_clients (
    client_id     text PRIMARY KEY CHECK (length(client_id) BETWEEN 1 AND 2000),
    -- 'registered' (RFC 7591) or 'metadata_document' (client_id is an https URL).
    kind          text NOT NULL CHECK (kind IN ('registered', 'metadata_document')),
    client_name   text NOT NULL CHECK (length(client_name) BETWEEN 1 AND 200),
    redirect_uris text[] NOT NULL CHECK (cardinality(redirect_uris) BETWEEN 1 AND 10),
    created_at    timestamptz NOT NULL,
    fetched_at    timestamptz
);

-- Ed25519 signing keys. The private half is sealed with AES-256-GCM under the master key.
CREATE TABLE hdls_identity.signing_keys (
    kid                text PRIMARY KEY CHECK (kid ~ '^[0-9a-f]{16}$'),
    private_key_sealed bytea NOT NULL,
    public_key         bytea NOT NULL CHECK (length(public_key) = 32),
    created_at         timestamptz NOT NULL,
    retired_at         timestamptz
);

CREATE TABLE hdls.members (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES hdls_identity.users ON DELETE CASCADE,
    -- Copied from the person at join time so the runtime role never needs hdls_identity.
    email        text NOT NULL,
    role         text NOT NULL CHECK (role IN ('reader', 'member', 'admin', 'owner')),
    joined_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX members_user ON hdls.members (user_id);

CREATE TABLE hdls.invitations (
    workspace_id  uuid NOT NULL DEFAULT hdls.current_workspace()
                  REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    invitation_id uuid NOT NULL,
    token_hash    bytea NOT NULL CHECK (length(token_hash) = 32),
    email         text NOT NULL CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
    role          text NOT NULL CHECK (role IN ('reader', 'member', 'admin', 'owner')),
    invited_by    text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    accepted_at   timestamptz,
    accepted_by   uuid,
    PRIMARY KEY (workspace_id, invitation_id)
);
CREATE INDEX invitations_token ON hdls.invitations (token_hash);

-- A grant is one connection: the consent decision (who, which workspace, which client,
-- which resource, which products), frozen when the person approved it.
CREATE TABLE hdls.oauth_grants (
    workspace_id   uuid NOT NULL DEFAULT hdls.current_workspace()
                   REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    grant_id       uuid NOT NULL,
    user_id        uuid NOT NULL,
    client_id      text NOT NULL,
    client_name    text NOT NULL,
    resource       text NOT NULL,
    products       text[] NOT NULL,
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    revoked_reason text CHECK (length(revoked_reason) <= 200),
    PRIMARY KEY (workspace_id, grant_id)
);
CREATE INDEX oauth_grants_id ON hdls.oauth_grants (grant_id);
CREATE INDEX oauth_grants_user ON hdls.oauth_grants (workspace_id, user_id);

CREATE TABLE hdls.oauth_codes (
    workspace_id   uuid NOT NULL DEFAULT hdls.current_workspace()
                   REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    code_hash      bytea NOT NULL CHECK (length(code_hash) = 32),
    grant_id       uuid NOT NULL,
    client_id      text NOT NULL,
    redirect_uri   text NOT NULL,
    code_challenge text NOT NULL CHECK (code_challenge ~ '^[A-Za-z0-9_-]{43}$'),
    resource       text NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    PRIMARY KEY (workspace_id, code_hash)
);
CREATE INDEX oauth_codes_hash ON hdls.oauth_codes (code_hash);

CREATE TABLE hdls.oauth_refresh_tokens (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    grant_id     uuid NOT NULL,
    issued_at    timestamptz NOT NULL,
    used_at      timestamptz,
    PRIMARY KEY (workspace_id, token_hash)
);
CREATE INDEX oauth_refresh_tokens_hash ON hdls.oauth_refresh_tokens (token_hash);
CREATE INDEX oauth_refresh_tokens_grant ON hdls.oauth_refresh_tokens (workspace_id, grant_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['members', 'invitations', 'oauth_grants', 'oauth_codes', 'oauth_refresh_tokens'] LOOP
        EXECUTE format('ALTER TABLE hdls.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE hdls.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON hdls.%I USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace())', t);
        EXECUTE format('CREATE POLICY credential_path ON hdls.%I TO hdls_auth USING (true) WITH CHECK (true)', t);
    END LOOP;
END
$$;

-- Revoking a grant is final, like revoking a key.
CREATE TRIGGER revocation_is_final BEFORE UPDATE OF revoked_at ON hdls.oauth_grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION hdls.refuse_change('a revoked connection stays revoked');

-- People acting through the web pages (consent, invitations) are audit actors too.
ALTER TABLE hdls.audit_events DROP CONSTRAINT audit_events_actor_kind_check;
ALTER TABLE hdls.audit_events ADD CONSTRAINT audit_events_actor_kind_check
    CHECK (actor_kind IN ('api_key', 'oauth_token', 'cli', 'user'));
CREATE POLICY credential_path ON hdls.audit_events FOR INSERT TO hdls_auth WITH CHECK (true);

-- Runtime: the concierge tools manage members, invitations and connections in its own
-- workspace (RLS) and never see hdls_identity.
GRANT SELECT, UPDATE (role), DELETE ON hdls.members TO hdls_runtime;
GRANT SELECT, INSERT ON hdls.invitations TO hdls_runtime;
GRANT SELECT, UPDATE (revoked_at, revoked_reason) ON hdls.oauth_grants TO hdls_runtime;

-- The credential path: sign-in, consent, token exchange, refresh, revocation.
GRANT USAGE ON SCHEMA hdls_identity TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (password_hash) ON hdls_identity.users TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (used_at) ON hdls_identity.user_links TO hdls_auth;
GRANT SELECT, INSERT, DELETE ON hdls_identity.web_sessions TO hdls_auth;
GRANT SELECT, INSERT, UPDATE, DELETE ON hdls_identity.sign_in_failures TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (client_name, redirect_uris, fetched_at) ON hdls_identity.oauth_clients TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (retired_at) ON hdls_identity.signing_keys TO hdls_auth;
GRANT SELECT, INSERT ON hdls.members TO hdls_auth;
GRANT SELECT, UPDATE (accepted_at, accepted_by) ON hdls.invitations TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (last_used_at, revoked_at, revoked_reason) ON hdls.oauth_grants TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (used_at) ON hdls.oauth_codes TO hdls_auth;
GRANT SELECT, INSERT, UPDATE (used_at) ON hdls.oauth_refresh_tokens TO hdls_auth;
GRANT INSERT ON hdls.audit_events TO hdls_auth;
