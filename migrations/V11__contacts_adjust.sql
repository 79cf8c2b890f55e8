-- The Contacts product's named tools: import_contacts finds organisations by name whatever
-- its case (one `lower(name) = ANY(...)` lookup per import), which the (workspace_id, name)
-- index cannot serve. Not unique: two organisations may share a name.
CREATE INDEX organisations_lower_name ON contacts.organisations (workspace_id, lower(name));
