-- Who may change or delete a CRM note: its author, or an admin or owner. The named tools
-- checked this, but the power tools (update_record, delete_record) reach the same rows, so
-- the rule lives here, where every path meets it.
--
-- The Scope stamps `hdls.call` = '<credential> <unix ms> <author> <role>' (V7, V12). A
-- statement outside a tool call (the operator at a psql prompt) has no stamp and is not a
-- caller this rule is about. A note deleted because its record was deleted (the cascade
-- trigger of V8, one trigger level down) goes with the record, whoever wrote it.

CREATE FUNCTION hdls.call_author() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$ SELECT nullif(split_part(nullif(current_setting('hdls.call', true), ''), ' ', 3), '') $$;

CREATE FUNCTION hdls.call_role() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$ SELECT nullif(split_part(nullif(current_setting('hdls.call', true), ''), ' ', 4), '') $$;

CREATE FUNCTION crm.note_owned_by_caller() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    IF pg_trigger_depth() = 1
       AND hdls.call_author() IS NOT NULL
       AND OLD.author IS DISTINCT FROM hdls.call_author()
       AND coalesce(hdls.call_role(), '') NOT IN ('admin', 'owner') THEN
        RAISE EXCEPTION 'only a note''s author, or an admin or owner, may change or delete it'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER note_owned_by_caller BEFORE UPDATE OR DELETE ON crm.notes
    FOR EACH ROW EXECUTE FUNCTION crm.note_owned_by_caller();
