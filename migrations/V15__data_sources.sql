-- Bring your own PostgreSQL: linked data sources, and API keys bound to one of them.
--
-- The connection string is stored only sealed (AES-256-GCM under the master key, bound to
-- the workspace and the data source id as associated data); the plain columns are what
-- list_databases shows (host, port, database name), never a user name or a password.

CREATE TABLE hdls.data_sources (
    workspace_id      uuid NOT NULL DEFAULT hdls.current_workspace()
                      REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id                uuid NOT NULL,
    name              text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{0,62}$'),
    host              text NOT NULL CHECK (length(host) BETWEEN 1 AND 253),
    port              integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    database          text NOT NULL CHECK (length(database) BETWEEN 1 AND 63),
    schema_name       text NOT NULL CHECK (length(schema_name) BETWEEN 1 AND 63),
    -- NULL once unlinked: unlinking forgets the secret.
    sealed_connection bytea CHECK (length(sealed_connection) > 28),
    status            text NOT NULL DEFAULT 'linked' CHECK (status IN ('linked', 'unavailable', 'unlinked')),
    last_error        text CHECK (length(last_error) <= 300),
    last_checked_at   timestamptz,
    created_by        text NOT NULL CHECK (length(created_by) <= 100),
    created_at        timestamptz NOT NULL,
    unlinked_at       timestamptz,
    PRIMARY KEY (workspace_id, id),
    CONSTRAINT sealed_while_linked CHECK ((unlinked_at IS NULL) = (sealed_connection IS NOT NULL)),
    CONSTRAINT unlinked_status CHECK ((unlinked_at IS NULL) = (status <> 'unlinked'))
);
-- Names are unique among a workspace's linked sources (the key includes workspace_id).
CREATE UNIQUE INDEX data_sources_name ON hdls.data_sources (workspace_id, name)
    WHERE unlinked_at IS NULL;
ALTER TABLE hdls.data_sources ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.data_sources FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.data_sources
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
-- Customers never see a workspace's linked databases.
CREATE POLICY agents_only ON hdls.data_sources AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent()) WITH CHECK (hdls.acting_as_agent());
GRANT SELECT, INSERT ON hdls.data_sources TO hdls_runtime;
GRANT UPDATE (status, last_error, last_checked_at, unlinked_at, sealed_connection)
    ON hdls.data_sources TO hdls_runtime;
-- What a source is stays what it was linked as: re-link to point somewhere else.
CREATE TRIGGER data_source_is_frozen BEFORE UPDATE OF id, name, host, port, database, schema_name, workspace_id
    ON hdls.data_sources
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('a linked data source''s target never changes; link it again');

-- A data-source key: an API key bound to one linked source and one schema of it. It works
-- only at that source's endpoint (the credential path checks), and only for agents.
ALTER TABLE hdls.api_keys
    ADD COLUMN data_source_id uuid,
    ADD COLUMN data_source_schema text CHECK (length(data_source_schema) BETWEEN 1 AND 63),
    ADD CONSTRAINT api_keys_data_source_schema
        CHECK ((data_source_id IS NULL) = (data_source_schema IS NULL)),
    ADD CONSTRAINT api_keys_data_source_agent
        CHECK (data_source_id IS NULL OR persona = 'agent'),
    ADD CONSTRAINT api_keys_data_source FOREIGN KEY (workspace_id, data_source_id)
        REFERENCES hdls.data_sources (workspace_id, id);
CREATE INDEX api_keys_data_source ON hdls.api_keys (workspace_id, data_source_id)
    WHERE data_source_id IS NOT NULL;
CREATE TRIGGER data_source_binding_is_frozen BEFORE UPDATE OF data_source_id, data_source_schema
    ON hdls.api_keys
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('a credential''s data source never changes');

-- Unlinking a source revokes every key bound to it, by trigger, so no unlink path can
-- forget it; the key cascade (V6) then revokes whatever those keys minted. Writes only
-- rows of the same workspace.
CREATE FUNCTION hdls.revoke_data_source_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    UPDATE hdls.api_keys SET revoked_at = NEW.unlinked_at,
           revoked_reason = left('data source unlinked: ' || NEW.id, 200)
    WHERE workspace_id = NEW.workspace_id AND data_source_id = NEW.id AND revoked_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER revoke_data_source_keys AFTER UPDATE OF unlinked_at ON hdls.data_sources
    FOR EACH ROW WHEN (OLD.unlinked_at IS NULL AND NEW.unlinked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.revoke_data_source_keys();
