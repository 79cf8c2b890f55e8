-- Foundation: tenant identity, workspaces, API keys, installed products, CRM accounts.
-- Runs as hdls_owner. Every table here is a tenant table: workspace_id stamped by a
-- column default from the transaction-local setting, RLS enabled AND forced (so the
-- owner is bound too), one policy with USING and WITH CHECK on the same predicate.

-- The identity the Scope stamps with SET LOCAL. nullif() matters: once a pooled
-- connection has run a transaction that set hdls.workspace_id, current_setting()
-- returns '' rather than NULL, and '' must mean "no tenant" (fail closed).
CREATE FUNCTION hdls.current_workspace() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('hdls.workspace_id', true), '')::uuid $$;

CREATE FUNCTION hdls.current_persona() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('hdls.persona', true), '') $$;

CREATE FUNCTION hdls.current_principal() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('hdls.principal_id', true), '')::uuid $$;

CREATE TABLE hdls.workspaces (
    workspace_id uuid PRIMARY KEY DEFAULT hdls.current_workspace(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at   timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE hdls.workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.workspaces
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());

-- key_id is the non-secret handle shown in listings and embedded in the token
-- (hdls_<key_id>_<secret>) so the server finds the row without querying by a
-- secret-derived value, then compares the hash in constant time.
CREATE TABLE hdls.api_keys (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    key_id       text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    secret_hash  bytea NOT NULL CHECK (length(secret_hash) = 32),
    role         text NOT NULL CHECK (role IN ('reader', 'member', 'admin', 'owner')),
    label        text CHECK (length(label) <= 200),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    PRIMARY KEY (workspace_id, key_id)
);
-- Not unique on purpose: a global unique index would let a constraint check reveal
-- another tenant's value. 64 random bits make collisions a non-event, and the
-- resolver compares every candidate's hash anyway.
CREATE INDEX api_keys_key_id ON hdls.api_keys (key_id);
ALTER TABLE hdls.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.api_keys
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());

CREATE TABLE hdls.installed_products (
    workspace_id   uuid NOT NULL DEFAULT hdls.current_workspace()
                   REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    product        text NOT NULL CHECK (product IN ('crm', 'support', 'contacts')),
    installed_at   timestamptz NOT NULL DEFAULT now(),
    uninstalled_at timestamptz,
    PRIMARY KEY (workspace_id, product)
);
ALTER TABLE hdls.installed_products ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.installed_products FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.installed_products
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());

CREATE TABLE crm.accounts (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    domain       text CHECK (length(domain) <= 253),
    custom       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX accounts_name ON crm.accounts (workspace_id, name, id);
ALTER TABLE crm.accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE crm.accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON crm.accounts
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());

-- The runtime role: row access only, never DDL, never on credential hashes beyond
-- what the call path needs.
GRANT USAGE ON SCHEMA hdls, crm, support, contacts TO hdls_runtime;
GRANT SELECT, INSERT, UPDATE ON hdls.workspaces TO hdls_runtime;
GRANT SELECT, INSERT ON hdls.api_keys TO hdls_runtime;
GRANT UPDATE (revoked_at) ON hdls.api_keys TO hdls_runtime;
GRANT SELECT, INSERT, UPDATE ON hdls.installed_products TO hdls_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON crm.accounts TO hdls_runtime;

-- The credential resolver runs before any tenant is known, so it gets its own
-- narrow role and policies: read the credential and workspace rows, touch
-- last_used_at, and nothing in any product schema.
GRANT USAGE ON SCHEMA hdls TO hdls_auth;
GRANT SELECT ON hdls.workspaces, hdls.api_keys, hdls.installed_products TO hdls_auth;
GRANT UPDATE (last_used_at) ON hdls.api_keys TO hdls_auth;
CREATE POLICY resolve_credentials ON hdls.workspaces FOR SELECT TO hdls_auth USING (true);
CREATE POLICY resolve_credentials ON hdls.api_keys FOR SELECT TO hdls_auth USING (true);
CREATE POLICY touch_last_used ON hdls.api_keys FOR UPDATE TO hdls_auth USING (true) WITH CHECK (true);
CREATE POLICY resolve_credentials ON hdls.installed_products FOR SELECT TO hdls_auth USING (true);
