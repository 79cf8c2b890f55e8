-- The whole CRM: accounts gain an owner, an industry and tags; the people at accounts
-- (contacts), deals in per-workspace pipeline stages with their stage history, and notes on
-- any CRM record. Every table follows DESIGN §3: workspace_id leads every key, index and
-- foreign key; ids are random; RLS enabled and forced; one outbox trigger each.

ALTER TABLE crm.accounts
    ADD COLUMN owner    uuid,
    ADD COLUMN industry text CHECK (length(industry) BETWEEN 1 AND 200),
    ADD COLUMN tags     text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 50),
    -- A removed member owns nothing: the owner is cleared, never left dangling.
    ADD CONSTRAINT accounts_owner_member FOREIGN KEY (workspace_id, owner)
        REFERENCES hdls.members (workspace_id, user_id) ON DELETE SET NULL (owner);
CREATE INDEX accounts_owner ON crm.accounts (workspace_id, owner) WHERE owner IS NOT NULL;
CREATE INDEX accounts_tags ON crm.accounts USING gin (tags);  -- with the tenant predicate, a bitmap AND

CREATE TABLE crm.contacts (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    first_name   text NOT NULL CHECK (length(first_name) BETWEEN 1 AND 200),
    last_name    text CHECK (length(last_name) BETWEEN 1 AND 200),
    email        text CHECK (length(email) BETWEEN 3 AND 254),
    phone        text CHECK (length(phone) BETWEEN 1 AND 50),
    title        text CHECK (length(title) BETWEEN 1 AND 200),
    account_id   uuid,
    tags         text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 50),
    custom       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, account_id) REFERENCES crm.accounts (workspace_id, id)
        ON DELETE SET NULL (account_id)
);
-- One contact per address in a workspace, whatever its case.
CREATE UNIQUE INDEX contacts_email ON crm.contacts (workspace_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX contacts_name ON crm.contacts (workspace_id, first_name, id);
CREATE INDEX contacts_account ON crm.contacts (workspace_id, account_id) WHERE account_id IS NOT NULL;
CREATE INDEX contacts_tags ON crm.contacts USING gin (tags);  -- with the tenant predicate, a bitmap AND

CREATE TABLE crm.pipeline_stages (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,39}$'),
    sort_order     integer NOT NULL CHECK (sort_order BETWEEN 0 AND 99),
    probability  integer NOT NULL CHECK (probability BETWEEN 0 AND 100),
    kind         text NOT NULL CHECK (kind IN ('open', 'won', 'lost')),
    PRIMARY KEY (workspace_id, name)
);

-- The stages a workspace starts with.
CREATE FUNCTION crm.default_stages() RETURNS TABLE (name text, sort_order integer, probability integer, kind text)
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog
AS $$
    VALUES ('lead', 0, 10, 'open'), ('qualified', 1, 25, 'open'), ('proposal', 2, 50, 'open'),
           ('negotiation', 3, 75, 'open'), ('won', 4, 100, 'won'), ('lost', 5, 0, 'lost')
$$;

-- Installing (or reinstalling) the CRM gives the workspace the default stages, unless it has
-- stages already: one place, whichever path installs it (the tool, the CLI, a new workspace).
CREATE FUNCTION crm.seed_pipeline_stages() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    IF NEW.product = 'crm' AND NEW.uninstalled_at IS NULL THEN
        INSERT INTO crm.pipeline_stages (workspace_id, name, sort_order, probability, kind)
        SELECT NEW.workspace_id, d.name, d.sort_order, d.probability, d.kind
        FROM crm.default_stages() d
        WHERE NOT EXISTS (SELECT 1 FROM crm.pipeline_stages x WHERE x.workspace_id = NEW.workspace_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER seed_pipeline_stages AFTER INSERT OR UPDATE OF uninstalled_at ON hdls.installed_products
    FOR EACH ROW EXECUTE FUNCTION crm.seed_pipeline_stages();
-- Workspaces that have the CRM already (the owner lifts the forced policy to read them).
ALTER TABLE hdls.installed_products NO FORCE ROW LEVEL SECURITY;
INSERT INTO crm.pipeline_stages (workspace_id, name, sort_order, probability, kind)
SELECT p.workspace_id, d.name, d.sort_order, d.probability, d.kind
FROM hdls.installed_products p CROSS JOIN crm.default_stages() d
WHERE p.product = 'crm' AND p.uninstalled_at IS NULL;
ALTER TABLE hdls.installed_products FORCE ROW LEVEL SECURITY;

CREATE TABLE crm.deals (
    workspace_id     uuid NOT NULL DEFAULT hdls.current_workspace()
                     REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 500),
    account_id       uuid,
    contact_id       uuid,
    amount           numeric(18, 2) CHECK (amount >= 0),
    currency         text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stage            text NOT NULL,
    close_date       date,
    owner            uuid,
    custom           jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    stage_changed_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, account_id) REFERENCES crm.accounts (workspace_id, id)
        ON DELETE SET NULL (account_id),
    FOREIGN KEY (workspace_id, contact_id) REFERENCES crm.contacts (workspace_id, id)
        ON DELETE SET NULL (contact_id),
    -- A stage still used by deals cannot be removed (set_pipeline_stages says how many).
    FOREIGN KEY (workspace_id, stage) REFERENCES crm.pipeline_stages (workspace_id, name),
    FOREIGN KEY (workspace_id, owner) REFERENCES hdls.members (workspace_id, user_id)
        ON DELETE SET NULL (owner)
);
CREATE INDEX deals_name ON crm.deals (workspace_id, name, id);
CREATE INDEX deals_stage ON crm.deals (workspace_id, stage);
CREATE INDEX deals_account ON crm.deals (workspace_id, account_id) WHERE account_id IS NOT NULL;
CREATE INDEX deals_contact ON crm.deals (workspace_id, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX deals_owner ON crm.deals (workspace_id, owner) WHERE owner IS NOT NULL;

CREATE TABLE crm.deal_stage_history (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    deal_id      uuid NOT NULL,
    from_stage   text,
    to_stage     text NOT NULL,
    changed_by   text NOT NULL CHECK (length(changed_by) <= 200),
    changed_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, deal_id) REFERENCES crm.deals (workspace_id, id) ON DELETE CASCADE
);
CREATE INDEX deal_stage_history_deal ON crm.deal_stage_history (workspace_id, deal_id, changed_at);

-- Notes hang off any CRM record; deleting the record deletes its notes (trigger below).
CREATE TABLE crm.notes (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    record_type  text NOT NULL CHECK (record_type IN ('account', 'contact', 'deal')),
    record_id    uuid NOT NULL,
    body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    -- `user:<uuid>` for a person (over OAuth), else the credential id (`key_…`, `cli`).
    author       text NOT NULL CHECK (length(author) <= 200),
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX notes_record ON crm.notes (workspace_id, record_type, record_id, created_at DESC, id DESC);

CREATE FUNCTION crm.delete_notes_of_record() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    DELETE FROM crm.notes
    WHERE workspace_id = OLD.workspace_id AND record_type = TG_ARGV[0] AND record_id = OLD.id;
    RETURN NULL;
END
$$;
CREATE TRIGGER delete_notes AFTER DELETE ON crm.accounts
    FOR EACH ROW EXECUTE FUNCTION crm.delete_notes_of_record('account');
CREATE TRIGGER delete_notes AFTER DELETE ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION crm.delete_notes_of_record('contact');
CREATE TRIGGER delete_notes AFTER DELETE ON crm.deals
    FOR EACH ROW EXECUTE FUNCTION crm.delete_notes_of_record('deal');

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['contacts', 'pipeline_stages', 'deals', 'deal_stage_history', 'notes'] LOOP
        EXECUTE format('ALTER TABLE crm.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE crm.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON crm.%I USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON crm.%I TO hdls_runtime', t);
        PERFORM hdls.track_changes(format('crm.%I', t)::regclass);
    END LOOP;
END
$$;
-- The history is a record: written, never rewritten.
REVOKE UPDATE, DELETE ON crm.deal_stage_history FROM hdls_runtime;
