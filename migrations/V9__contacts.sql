-- The Contacts product: the workspace's address book of people and organisations.
-- Follows DESIGN §3 like every tenant table, with one outbox trigger each.

CREATE TABLE contacts.organisations (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    domain       text CHECK (length(domain) BETWEEN 1 AND 253),
    custom       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX organisations_name ON contacts.organisations (workspace_id, name, id);

CREATE TABLE contacts.contacts (
    workspace_id    uuid NOT NULL DEFAULT hdls.current_workspace()
                    REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    email           text CHECK (length(email) BETWEEN 3 AND 254),
    phone           text CHECK (length(phone) BETWEEN 1 AND 50),
    organisation_id uuid,
    tags            text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 50),
    custom          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, organisation_id) REFERENCES contacts.organisations (workspace_id, id)
        ON DELETE SET NULL (organisation_id)
);
-- One contact per address in a workspace, whatever its case (import dedupes on it).
CREATE UNIQUE INDEX contacts_email ON contacts.contacts (workspace_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX contacts_name ON contacts.contacts (workspace_id, name, id);
CREATE INDEX contacts_organisation ON contacts.contacts (workspace_id, organisation_id)
    WHERE organisation_id IS NOT NULL;
CREATE INDEX contacts_tags ON contacts.contacts USING gin (tags);  -- with the tenant predicate, a bitmap AND

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organisations', 'contacts'] LOOP
        EXECUTE format('ALTER TABLE contacts.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE contacts.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON contacts.%I USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON contacts.%I TO hdls_runtime', t);
        PERFORM hdls.track_changes(format('contacts.%I', t)::regclass);
    END LOOP;
END
$$;
