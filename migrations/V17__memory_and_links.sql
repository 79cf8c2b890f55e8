-- Workspace memory (notes for assistants, shared by the team) and cross-product links
-- (a ticket to a CRM account, a deal to an address-book organisation, …). Managed only:
-- both live in the control plane, under the same rules as every tenant table, and only
-- agents reach them (customers never see either, nor know they exist).

CREATE TABLE hdls.memories (
    workspace_id  uuid NOT NULL DEFAULT hdls.current_workspace()
                  REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    content       text NOT NULL CHECK (length(content) BETWEEN 1 AND 4000),
    tags          text[] NOT NULL DEFAULT '{}'
                  CHECK (cardinality(tags) <= 20 AND array_position(tags, NULL) IS NULL),
    -- What the note is about, if anything: all three or none.
    about_product text CHECK (about_product IN ('crm', 'support', 'contacts')),
    about_entity  text CHECK (about_entity ~ '^[a-z_]{1,40}$'),
    about_id      uuid,
    author        text NOT NULL CHECK (length(author) <= 200),
    created_at    timestamptz NOT NULL,
    -- The content's words (tags are matched exactly, by recall's tag filter).
    search        tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    CHECK ((about_product IS NULL) = (about_entity IS NULL) AND (about_entity IS NULL) = (about_id IS NULL)),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX memories_recent ON hdls.memories (workspace_id, created_at DESC, id DESC);
CREATE INDEX memories_about ON hdls.memories (workspace_id, about_product, about_entity, about_id)
    WHERE about_id IS NOT NULL;
-- Full text within a workspace: the policy's workspace_id condition narrows first, then
-- the GIN index (a separate index: btree_gin is not assumed to be installed).
CREATE INDEX memories_search ON hdls.memories USING gin (search);

CREATE TABLE hdls.links (
    workspace_id  uuid NOT NULL DEFAULT hdls.current_workspace()
                  REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    from_product  text NOT NULL CHECK (from_product IN ('crm', 'support', 'contacts')),
    from_entity   text NOT NULL CHECK (from_entity ~ '^[a-z_]{1,40}$'),
    from_id       uuid NOT NULL,
    to_product    text NOT NULL CHECK (to_product IN ('crm', 'support', 'contacts')),
    to_entity     text NOT NULL CHECK (to_entity ~ '^[a-z_]{1,40}$'),
    to_id         uuid NOT NULL,
    relation      text NOT NULL DEFAULT 'related' CHECK (relation ~ '^[a-z][a-z0-9_]{0,39}$'),
    created_by    text NOT NULL CHECK (length(created_by) <= 200),
    created_at    timestamptz NOT NULL,
    CHECK ((from_product, from_entity, from_id) <> (to_product, to_entity, to_id)),
    PRIMARY KEY (workspace_id, id),
    -- Keys lead with workspace_id (constraint checks ignore policies).
    CONSTRAINT links_once UNIQUE (workspace_id, from_product, from_entity, from_id,
                                  to_product, to_entity, to_id, relation)
);
CREATE INDEX links_to ON hdls.links (workspace_id, to_product, to_entity, to_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['memories', 'links'] LOOP
        EXECUTE format('ALTER TABLE hdls.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE hdls.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON hdls.%I USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace())', t);
        -- Team only: a customer transaction neither reads nor writes either table.
        EXECUTE format('CREATE POLICY persona ON hdls.%I AS RESTRICTIVE TO hdls_runtime USING (hdls.acting_as_agent()) WITH CHECK (hdls.acting_as_agent())', t);
        EXECUTE format('GRANT SELECT, INSERT, DELETE ON hdls.%I TO hdls_runtime', t);
    END LOOP;
END
$$;

-- Change events like every product table's (webhooks see them under schema "hdls").
SELECT hdls.track_changes('hdls.memories');
SELECT hdls.track_changes('hdls.links');
