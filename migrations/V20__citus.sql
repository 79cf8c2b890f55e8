-- Scale-out on Citus (issue 16; DESIGN §3, Scale-out): the same schema, distributed by
-- workspace_id. On a database without the `citus` extension every function here is a no-op,
-- so this migration (and every later one) is correct on plain PostgreSQL and on Citus.
--
-- How a table is placed:
-- * a tenant table (it has workspace_id; schemas hdls, crm, support, contacts) is
--   distributed by workspace_id, co-located with hdls.workspaces: one workspace's rows of
--   every table live in shards of the same shard group, on one worker, so joins on
--   workspace_id, foreign keys and triggers writing rows of the same workspace stay on that
--   worker;
-- * a table that belongs to no workspace (hdls_catalog, hdls_identity: plans, people, OAuth
--   clients, signing keys, sessions) is a reference table: a copy on every node, so a tenant
--   table may reference it and a query may join it;
-- * hdls_meta (migration bookkeeping) stays a plain table on the coordinator.
--
-- Order matters on Citus: making a table a reference table pulls every table linked to it by
-- a foreign key into Citus's metadata as a "local" table, which then cannot be distributed,
-- and a foreign key between a distributed and a plain table is refused. So the conversion
-- records and drops the foreign keys that touch a table not yet converted, converts the
-- reference tables, then hdls.workspaces, then every other tenant table, and adds the foreign
-- keys back. Everything names Citus's functions through EXECUTE, so this file compiles and
-- runs without Citus.
--
-- From now on a migration that creates a tenant table calls `SELECT hdls.distribute('s.t')`
-- right after creating it (foreign keys declared in CREATE TABLE are dropped and added back
-- by the call), and one that (re)creates a per-call function taking a `workspace` argument
-- calls `SELECT hdls.delegate('s.f(argtypes)')`. The catalog test checks both under Citus.
--
-- Triggers: Citus refuses to distribute a table with triggers, and to create a trigger on
-- one, unless `citus.enable_unsafe_triggers` is on ("unsafe" because a trigger on a shard
-- could write rows that live on another node). Every trigger of hdls only raises errors or
-- writes rows of the row's own workspace (DESIGN §3), which are in the same shard group on
-- the same worker, so the conversion turns it on for its own transaction, and `hdls setup`
-- sets it for hdls_owner so later migrations can add triggers.

-- Whether this database is a Citus database.
CREATE FUNCTION hdls.citus_enabled() RETURNS boolean
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$ SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') $$;

-- What Citus has made of a table: 'distributed', 'reference', 'local' (a Citus local table,
-- which hdls never wants), or NULL (a plain table, or no Citus).
CREATE FUNCTION hdls.citus_placement(tbl regclass) RETURNS text
    LANGUAGE plpgsql STABLE SET search_path = pg_catalog
AS $$
DECLARE
    placement text;
BEGIN
    IF NOT hdls.citus_enabled() THEN
        RETURN NULL;
    END IF;
    EXECUTE $q$SELECT CASE WHEN partmethod = 'h' THEN 'distributed'
                           WHEN repmodel = 't' THEN 'reference'
                           ELSE 'local' END
               FROM pg_dist_partition WHERE logicalrelid = $1$q$
        INTO placement USING tbl;
    RETURN placement;
END
$$;

-- What a table of hdls should be on Citus: 'distributed' for a tenant table, 'reference' for
-- the rest (see the top of this file), NULL for one that stays on the coordinator.
CREATE FUNCTION hdls.citus_wanted(tbl regclass) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT CASE
        WHEN n.nspname IN ('hdls_catalog', 'hdls_identity') THEN 'reference'
        WHEN n.nspname NOT IN ('hdls', 'crm', 'support', 'contacts') THEN NULL
        WHEN EXISTS (SELECT 1 FROM pg_attribute a
                     WHERE a.attrelid = c.oid AND a.attname = 'workspace_id'
                       AND a.attnum > 0 AND NOT a.attisdropped) THEN 'distributed'
        ELSE 'reference'
    END
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = tbl AND c.relkind IN ('r', 'p')
$$;

-- The tables of hdls's schemas that Citus should hold, with what each should be.
CREATE FUNCTION hdls.citus_tables(OUT tbl regclass, OUT wanted text, OUT placement text)
    RETURNS SETOF record
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT c.oid::regclass, hdls.citus_wanted(c.oid), hdls.citus_placement(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('hdls', 'crm', 'support', 'contacts', 'hdls_catalog', 'hdls_identity')
      AND c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND hdls.citus_wanted(c.oid) IS NOT NULL
    ORDER BY c.oid::regclass::text
$$;

-- Converts one table to what it should be, foreign keys already out of the way.
CREATE FUNCTION hdls.citus_convert(tbl regclass) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    wanted text := hdls.citus_wanted(tbl);
    placement text := hdls.citus_placement(tbl);
    guard name;
    has_rows boolean;
    forced boolean;
BEGIN
    IF wanted IS NULL OR placement IS NOT DISTINCT FROM wanted THEN
        RETURN;
    END IF;
    IF placement IS NOT NULL THEN
        -- A Citus local table (or the wrong kind): back to a plain table first.
        EXECUTE 'SELECT undistribute_table($1)' USING tbl;
    END IF;
    has_rows := pg_relation_size(tbl) > 0;
    forced := (SELECT c.relforcerowsecurity FROM pg_class c WHERE c.oid = tbl);
    IF has_rows AND forced THEN
        -- Citus copies existing rows into the shards with COPY, which row-level security
        -- refuses while it binds the owner; lifted for the copy, as V6 does for a back-fill.
        EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
    END IF;
    IF wanted = 'reference' THEN
        EXECUTE 'SELECT create_reference_table($1)' USING tbl;
    ELSIF tbl = 'hdls.workspaces'::regclass THEN
        EXECUTE $q$SELECT create_distributed_table($1, 'workspace_id')$q$ USING tbl;
    ELSE
        EXECUTE $q$SELECT create_distributed_table($1, 'workspace_id',
                                                   colocate_with => 'hdls.workspaces')$q$
            USING tbl;
    END IF;
    IF has_rows AND forced THEN
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    END IF;
    -- Existing rows were copied into the shards; the coordinator's copy is dead weight. The
    -- audit log refuses TRUNCATE by trigger: lifted for this one local truncation only.
    IF has_rows THEN
        FOR guard IN SELECT t.tgname FROM pg_trigger t
                     WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgtype & 32 <> 0 LOOP
            EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', tbl, guard);
        END LOOP;
        EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)' USING tbl;
        FOR guard IN SELECT t.tgname FROM pg_trigger t
                     WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgtype & 32 <> 0 LOOP
            EXECUTE format('ALTER TABLE %s ENABLE TRIGGER %I', tbl, guard);
        END LOOP;
    END IF;
END
$$;

-- The foreign keys among hdls's tables that touch a table not yet what it should be (only
-- those: keys between converted tables stay). `only_tbl` narrows to one table's keys.
CREATE FUNCTION hdls.citus_pending_foreign_keys(only_tbl regclass DEFAULT NULL)
    RETURNS TABLE (tbl regclass, name name, definition text)
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    SELECT k.conrelid::regclass, k.conname, pg_get_constraintdef(k.oid)
    FROM pg_constraint k
    JOIN hdls.citus_tables() a ON a.tbl = k.conrelid
    JOIN hdls.citus_tables() b ON b.tbl = k.confrelid
    WHERE k.contype = 'f'
      AND (a.placement IS DISTINCT FROM a.wanted OR b.placement IS DISTINCT FROM b.wanted)
      AND (only_tbl IS NULL OR only_tbl IN (k.conrelid, k.confrelid))
    ORDER BY k.conrelid::regclass::text, k.conname
$$;

-- Runs a per-call function on the shard of its `workspace` argument's workspace, co-located
-- with hdls.workspaces. force_delegation: the admission runs inside BEGIN … COMMIT (the
-- tool's stamp is SET LOCAL), where Citus otherwise plans the call on the coordinator and
-- sends each of its statements to the worker separately.
CREATE FUNCTION hdls.delegate(fn regprocedure) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    IF NOT hdls.citus_enabled() OR hdls.citus_placement('hdls.workspaces') IS DISTINCT FROM 'distributed' THEN
        RETURN;
    END IF;
    EXECUTE $q$SELECT create_distributed_function($1, 'workspace',
                                                  colocate_with => 'hdls.workspaces',
                                                  force_delegation => true)$q$
        USING fn;
END
$$;

-- The functions delegated to a workspace's shard (each takes `workspace uuid`).
CREATE FUNCTION hdls.delegated_functions() RETURNS SETOF regprocedure
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog
AS $$
    VALUES ('hdls.admit_call(uuid, timestamptz, bigint)'::regprocedure),
           ('hdls.count_refusal(uuid, timestamptz)'::regprocedure)
$$;

-- The whole-schema conversion: idempotent, and a no-op without Citus. `hdls migrate` runs it
-- here (a fresh Citus database is distributed as it is migrated) and `hdls admin citus
-- distribute` runs it on an existing database migrated before Citus was installed.
CREATE FUNCTION hdls.distribute_all() RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    drops text[];
    adds text[];
    statement text;
    t record;
    fn regprocedure;
BEGIN
    IF NOT hdls.citus_enabled() THEN
        RETURN;
    END IF;
    -- See the top of this file. Sequential: creating shards and foreign keys in one
    -- transaction over one connection per worker is what Citus supports inside a
    -- transaction block.
    SET LOCAL citus.enable_unsafe_triggers = on;
    SET LOCAL citus.multi_shard_modify_mode = 'sequential';
    SELECT array_agg(format('ALTER TABLE %s DROP CONSTRAINT %I', k.tbl, k.name)),
           array_agg(format('ALTER TABLE %s ADD CONSTRAINT %I %s', k.tbl, k.name, k.definition))
    INTO drops, adds FROM hdls.citus_pending_foreign_keys() k;
    FOREACH statement IN ARRAY coalesce(drops, '{}') LOOP
        EXECUTE statement;
    END LOOP;
    FOR t IN SELECT * FROM hdls.citus_tables() WHERE wanted = 'reference' LOOP
        PERFORM hdls.citus_convert(t.tbl);
    END LOOP;
    PERFORM hdls.citus_convert('hdls.workspaces');
    FOR t IN SELECT * FROM hdls.citus_tables() WHERE wanted = 'distributed' LOOP
        PERFORM hdls.citus_convert(t.tbl);
    END LOOP;
    FOREACH statement IN ARRAY coalesce(adds, '{}') LOOP
        EXECUTE statement;
    END LOOP;
    FOR fn IN SELECT * FROM hdls.delegated_functions() LOOP
        PERFORM hdls.delegate(fn);
    END LOOP;
END
$$;

-- One table, for the migration that creates it: converted, with its foreign keys dropped and
-- added back around the conversion. On a database whose schema is not converted yet (an
-- older database that got Citus later) it converts the whole schema.
CREATE FUNCTION hdls.distribute(tbl regclass) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    drops text[];
    adds text[];
    statement text;
BEGIN
    IF NOT hdls.citus_enabled() THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM hdls.citus_tables() c
               WHERE c.tbl <> distribute.tbl AND c.placement IS DISTINCT FROM c.wanted) THEN
        PERFORM hdls.distribute_all();
        RETURN;
    END IF;
    SET LOCAL citus.enable_unsafe_triggers = on;
    SET LOCAL citus.multi_shard_modify_mode = 'sequential';
    SELECT array_agg(format('ALTER TABLE %s DROP CONSTRAINT %I', k.tbl, k.name)),
           array_agg(format('ALTER TABLE %s ADD CONSTRAINT %I %s', k.tbl, k.name, k.definition))
    INTO drops, adds FROM hdls.citus_pending_foreign_keys(tbl) k;
    FOREACH statement IN ARRAY coalesce(drops, '{}') LOOP
        EXECUTE statement;
    END LOOP;
    PERFORM hdls.citus_convert(tbl);
    FOREACH statement IN ARRAY coalesce(adds, '{}') LOOP
        EXECUTE statement;
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION hdls.citus_convert(regclass), hdls.delegate(regprocedure),
    hdls.distribute_all(), hdls.distribute(regclass) FROM PUBLIC;

-- `ON DELETE SET NULL (col)`: Citus refuses any SET NULL action on a foreign key that
-- includes the distribution column (it would not know that only `col` is cleared), and every
-- key of hdls includes workspace_id. So the seven keys that cleared a reference when its
-- target went (an account's owner when the member is removed, a deal's account, a contact's
-- organisation, a ticket's assignee, …) become plain keys (NO ACTION), and a BEFORE DELETE
-- trigger on the referenced table clears the references first, in rows of the same
-- workspace — on both PostgreSQL and Citus, so the same schema is tested on both. It runs as
-- the owner, as the key's action did (the runtime role may lack UPDATE on the column, and a
-- restrictive persona policy must not stop a clean-up the key would have made); the forced
-- tenant policy still binds it to the caller's workspace. Later migrations use the same
-- pair through hdls.clear_on_delete() instead of SET NULL.
CREATE FUNCTION hdls.clear_references() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    referenced uuid := (to_jsonb(OLD) ->> TG_ARGV[2])::uuid;
BEGIN
    -- TG_ARGV: the referencing table, its column, the referenced column (all uuid).
    IF referenced IS NOT NULL THEN
        EXECUTE format('UPDATE %s SET %I = NULL WHERE workspace_id = $1 AND %I = $2',
                       TG_ARGV[0], TG_ARGV[1], TG_ARGV[1])
            USING OLD.workspace_id, referenced;
    END IF;
    RETURN OLD;
END
$$;
REVOKE EXECUTE ON FUNCTION hdls.clear_references() FROM PUBLIC;

-- The key `name` on `referencing` (workspace_id, `col`) → `referenced` (workspace_id,
-- `referenced_col`), cleared on delete by trigger rather than by SET NULL.
CREATE FUNCTION hdls.clear_on_delete(referencing regclass, col name, referenced regclass,
                                     referenced_col name, name name) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (workspace_id, %I)
                        REFERENCES %s (workspace_id, %I)',
                   referencing, name, col, referenced, referenced_col);
    EXECUTE format('CREATE TRIGGER %I BEFORE DELETE ON %s FOR EACH ROW
                        EXECUTE FUNCTION hdls.clear_references(%L, %L, %L)',
                   left('clear_' || name, 63), referenced, referencing::text, col, referenced_col);
END
$$;
REVOKE EXECUTE ON FUNCTION hdls.clear_on_delete(regclass, name, regclass, name, name) FROM PUBLIC;

DO $$
DECLARE
    k record;
BEGIN
    FOR k IN
        SELECT c.conname, c.conrelid::regclass AS referencing, c.confrelid::regclass AS referenced,
               (SELECT a.attname FROM pg_attribute a
                WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[2]) AS col,
               (SELECT a.attname FROM pg_attribute a
                WHERE a.attrelid = c.confrelid AND a.attnum = c.confkey[2]) AS referenced_col
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE c.contype = 'f' AND c.confdeltype = 'n'
          AND n.nspname IN ('hdls', 'crm', 'support', 'contacts')
        ORDER BY 1
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', k.referencing, k.conname);
        PERFORM hdls.clear_on_delete(k.referencing, k.col, k.referenced, k.referenced_col, k.conname);
    END LOOP;
END
$$;

-- Triggers name their table by argument, never by TG_TABLE_NAME: on Citus a trigger fires
-- on the shard, whose name carries the shard id (`accounts_102008`), so a change event would
-- name the shard and the key/connection cascades would take the wrong branch.
CREATE OR REPLACE FUNCTION hdls.record_change() RETURNS trigger
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
    -- TG_ARGV[0]: the table's name (hdls.track_changes passes it).
    INSERT INTO hdls.change_events
        (workspace_id, event_id, schema_name, table_name, op, record_id, data, changed, actor, occurred_at)
    VALUES (ws, hdls.uuid_v7(at), TG_TABLE_SCHEMA, TG_ARGV[0], lower(TG_OP),
            (row_data ->> 'id')::uuid, row_data - 'workspace_id', changed, left(actor, 200), at);
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION hdls.track_changes(tbl regclass) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    EXECUTE format('CREATE TRIGGER record_change AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION hdls.record_change(%L)',
                   tbl, (SELECT c.relname FROM pg_class c WHERE c.oid = tbl));
END
$$;

DO $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT tgrelid::regclass FROM pg_trigger
             WHERE tgname = 'record_change' AND tgfoid = 'hdls.record_change'::regproc
             ORDER BY 1::text
    LOOP
        EXECUTE format('DROP TRIGGER record_change ON %s', t);
        PERFORM hdls.track_changes(t);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION hdls.revoke_minted_keys() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    -- TG_ARGV[0]: 'api_keys' or 'oauth_grants'.
    IF TG_ARGV[0] = 'api_keys' THEN
        UPDATE hdls.api_keys SET revoked_at = NEW.revoked_at,
               revoked_reason = left('minter revoked: key_' || NEW.key_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_key_id = NEW.key_id AND revoked_at IS NULL;
    ELSE
        UPDATE hdls.api_keys SET revoked_at = NEW.revoked_at,
               revoked_reason = left('minting connection revoked: grant_' || NEW.grant_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_grant_id = NEW.grant_id AND revoked_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER revoke_minted_keys ON hdls.api_keys;
DROP TRIGGER revoke_minted_keys ON hdls.oauth_grants;
CREATE TRIGGER revoke_minted_keys AFTER UPDATE OF revoked_at ON hdls.api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.revoke_minted_keys('api_keys');
CREATE TRIGGER revoke_minted_keys AFTER UPDATE OF revoked_at ON hdls.oauth_grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.revoke_minted_keys('oauth_grants');

CREATE OR REPLACE FUNCTION hdls.disable_minted_webhooks() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    -- TG_ARGV[0]: 'api_keys' or 'oauth_grants'.
    IF TG_ARGV[0] = 'api_keys' THEN
        UPDATE hdls.webhook_subscriptions SET status = 'disabled', disabled_at = NEW.revoked_at,
               disabled_reason = left('creator revoked: key_' || NEW.key_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_key_id = NEW.key_id AND status = 'active';
    ELSE
        UPDATE hdls.webhook_subscriptions SET status = 'disabled', disabled_at = NEW.revoked_at,
               disabled_reason = left('creator revoked: grant_' || NEW.grant_id, 200)
        WHERE workspace_id = NEW.workspace_id AND parent_grant_id = NEW.grant_id AND status = 'active';
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER disable_minted_webhooks ON hdls.api_keys;
DROP TRIGGER disable_minted_webhooks ON hdls.oauth_grants;
CREATE TRIGGER disable_minted_webhooks AFTER UPDATE OF revoked_at ON hdls.api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.disable_minted_webhooks('api_keys');
CREATE TRIGGER disable_minted_webhooks AFTER UPDATE OF revoked_at ON hdls.oauth_grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION hdls.disable_minted_webhooks('oauth_grants');


-- The webhook claim, in two steps a distributed database can run. V14's single statement
-- (an UPDATE joined to a FOR UPDATE SKIP LOCKED subquery over every workspace) cannot be
-- pushed down to the shards. Now: the earliest due deliveries of all workspaces are read
-- (on Citus: from every shard, merged on the coordinator), then each workspace's are leased
-- by an UPDATE that names the workspace (one shard) and skips rows another process holds. A
-- delivery is still claimed by one process only: a row leased meanwhile is locked (skipped)
-- or no longer due when read again.
CREATE OR REPLACE FUNCTION hdls.claim_webhook_deliveries(at timestamptz, lease_until timestamptz,
                                                         max_rows integer)
    RETURNS TABLE (workspace_id uuid, delivery_id uuid)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    due record;
BEGIN
    FOR due IN
        SELECT q.workspace_id AS workspace, array_agg(q.id) AS ids
        FROM (SELECT d.workspace_id, d.id FROM hdls.webhook_deliveries d
              WHERE d.status = 'pending' AND d.next_attempt_at <= at
              ORDER BY d.next_attempt_at
              LIMIT least(greatest(max_rows, 0), 500)) q
        GROUP BY q.workspace_id
    LOOP
        RETURN QUERY
            UPDATE hdls.webhook_deliveries d
            SET next_attempt_at = lease_until, claimed_at = at
            WHERE d.workspace_id = due.workspace
              AND d.id IN (SELECT l.id FROM hdls.webhook_deliveries l
                           WHERE l.workspace_id = due.workspace AND l.id = ANY (due.ids)
                             AND l.status = 'pending' AND l.next_attempt_at <= at
                           FOR UPDATE SKIP LOCKED)
            RETURNING d.workspace_id, d.id;
    END LOOP;
END
$$;

-- Retention, unchanged but for naming the workspace as a value: a predicate on
-- hdls.current_workspace() is not one Citus can route on, so the statement would visit
-- every shard.
CREATE OR REPLACE FUNCTION hdls.purge_change_events(before timestamptz, before_id uuid)
    RETURNS bigint
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    workspace uuid := hdls.current_workspace();
    removed bigint;
BEGIN
    DELETE FROM hdls.change_events e
    WHERE e.workspace_id = workspace
      AND e.event_id < before_id AND e.occurred_at < before
      AND NOT EXISTS (SELECT 1 FROM hdls.webhook_deliveries d
                      WHERE d.workspace_id = e.workspace_id AND d.event_id = e.event_id
                        AND d.status = 'pending');
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

-- The refused-call count, as V19 wrote it but for reading the plan in two lookups (the
-- workspace's row, then the plan by name), as hdls.admit_call does: once delegated to the
-- workspace's shard with force_delegation, Citus lets it run only statements that name the
-- workspace or read a reference table alone, and a subquery on hdls.workspaces inside the
-- query on the plans is neither.
CREATE OR REPLACE FUNCTION hdls.count_refusal(workspace uuid, at timestamptz,
                                              OUT allowed boolean, OUT refused_window text,
                                              OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
DECLARE
    plan_name text;
    per_minute integer;
    minute_start timestamptz := date_trunc('minute', at, 'UTC');
    taken integer;
BEGIN
    SELECT w.plan INTO plan_name FROM hdls.workspaces w WHERE w.workspace_id = workspace;
    SELECT p.per_minute INTO per_minute FROM hdls_catalog.plans p WHERE p.name = plan_name;
    per_minute := coalesce(per_minute, 120);
    INSERT INTO hdls.rate_windows AS r (workspace_id, window_start, calls)
    VALUES (workspace, minute_start, 1)
    ON CONFLICT (workspace_id, window_start) DO UPDATE SET calls = r.calls + 1
        WHERE r.calls < per_minute
    RETURNING r.calls INTO taken;
    allowed := taken IS NOT NULL AND taken <= per_minute;
    IF NOT allowed THEN
        refused_window := 'minute';
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
    END IF;
    call_limit := per_minute;
END
$$;

-- Last: everything above is in place on the coordinator, and the conversion carries the
-- functions the tables depend on to the workers.
SELECT hdls.distribute_all();
