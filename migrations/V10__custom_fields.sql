-- Custom fields: a workspace's own fields on a product's entities, without a schema change.
-- Values live in the entity's `custom` jsonb; these rows define them. One name per entity,
-- whoever owns it, since all values share the one jsonb object.
--
-- A field is personal when created (`owner` is the creator: `user:<uuid>` for a person, else
-- the credential id, e.g. `key_…`) and a team field once promoted (`owner` NULL). A removed
-- field keeps its values, hidden; re-adding it with the same type brings them back.

CREATE TABLE hdls.custom_fields (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    product      text NOT NULL CHECK (product IN ('crm', 'support', 'contacts')),
    entity       text NOT NULL CHECK (entity ~ '^[a-z][a-z_]{0,39}$'),
    name         text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    type         text NOT NULL CHECK (type IN ('text', 'number', 'boolean', 'date', 'select', 'multiselect')),
    options      text[] CHECK (cardinality(options) BETWEEN 1 AND 100),
    description  text CHECK (length(description) <= 500),
    owner        text CHECK (length(owner) <= 200),
    created_by   text NOT NULL CHECK (length(created_by) <= 200),
    created_at   timestamptz NOT NULL,
    removed_at   timestamptz,
    PRIMARY KEY (workspace_id, product, entity, name),
    CHECK ((type IN ('select', 'multiselect')) = (options IS NOT NULL))
);
ALTER TABLE hdls.custom_fields ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.custom_fields FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.custom_fields
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
GRANT SELECT, INSERT, UPDATE ON hdls.custom_fields TO hdls_runtime;
