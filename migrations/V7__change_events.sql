-- The change-event outbox: every insert, update and delete on a product table writes one row
-- here, in the same transaction, by a trigger. Webhooks read it; nothing else writes it.
--
-- Who and when come from the tool call: the Scope stamps `hdls.call` = '<credential id>
-- <unix milliseconds of the server clock>' with SET LOCAL (see src/db/scope.rs). Without it
-- (a superuser at a psql prompt) the actor is null and the time is the statement's.

CREATE TABLE hdls.change_events (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    -- uuid v7: time-ordered, and later also the webhook delivery's event id.
    event_id     uuid NOT NULL,
    schema_name  text NOT NULL,
    table_name   text NOT NULL,
    op           text NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    record_id    uuid,
    -- The row after an insert or update; the old row for a delete.
    data         jsonb NOT NULL,
    -- For updates: the columns whose value changed.
    changed      text[],
    actor        text CHECK (length(actor) <= 200),
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, event_id)
);
-- No index beyond the key: event ids are time-ordered (v7), so the key also orders events in
-- time, and every index here is paid by every write to every product table.
ALTER TABLE hdls.change_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.change_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.change_events
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
-- The runtime role writes events (through the trigger, as itself) and reads them; it can
-- neither change nor remove one.
GRANT SELECT, INSERT ON hdls.change_events TO hdls_runtime;
CREATE TRIGGER events_are_final BEFORE UPDATE ON hdls.change_events
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('a change event is never rewritten');

-- A version 7 uuid for `at`: 48 bits of Unix milliseconds, then random bits (RFC 9562).
CREATE FUNCTION hdls.uuid_v7(at timestamptz) RETURNS uuid
    LANGUAGE sql VOLATILE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

CREATE FUNCTION hdls.record_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
DECLARE
    call     text := nullif(current_setting('hdls.call', true), '');
    actor    text := nullif(split_part(call, ' ', 1), '');
    at       timestamptz := coalesce(to_timestamp(nullif(split_part(call, ' ', 2), '')::bigint / 1000.0),
                                     statement_timestamp());
    row_data jsonb;
    old_data jsonb;
    changed  text[];
    ws       uuid;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_data := to_jsonb(OLD);
        ws := OLD.workspace_id;
    ELSE
        row_data := to_jsonb(NEW);
        ws := NEW.workspace_id;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_data := to_jsonb(OLD);
        SELECT coalesce(array_agg(n.key ORDER BY n.key), '{}') INTO changed
        FROM jsonb_each(row_data) n
        WHERE n.value IS DISTINCT FROM old_data -> n.key;
    END IF;
    INSERT INTO hdls.change_events
        (workspace_id, event_id, schema_name, table_name, op, record_id, data, changed, actor, occurred_at)
    VALUES (ws, hdls.uuid_v7(at), TG_TABLE_SCHEMA, TG_TABLE_NAME, lower(TG_OP),
            (row_data ->> 'id')::uuid, row_data - 'workspace_id', changed, left(actor, 200), at);
    RETURN NULL;
END
$$;

-- Every product table gets the trigger through this, in the migration that creates it; a
-- test fails for a product table without it.
CREATE FUNCTION hdls.track_changes(tbl regclass) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER record_change AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION hdls.record_change()', tbl);
END
$$;
REVOKE EXECUTE ON FUNCTION hdls.track_changes(regclass) FROM PUBLIC;

SELECT hdls.track_changes('crm.accounts');
