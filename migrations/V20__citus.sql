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
    has_rows boolean;
    forced boolean;
    paused name[];
    trigger_name name;
BEGIN
    IF wanted IS NULL OR placement IS NOT DISTINCT FROM wanted THEN
        RETURN;
    END IF;
    IF placement IS NOT NULL THEN
        -- A Citus local table (or the wrong kind): back to a plain table first.
        EXECUTE 'SELECT undistribute_table($1)' USING tbl;
    END IF;
    -- A table with rows (a database converted in place): Citus copies them into the shards
    -- with COPY, where the table's triggers would fire again (a second change event per row,
    -- a row written into a table not distributed yet), and which row-level security refuses
    -- while it binds the owner. Both are lifted for the copy and the local truncation after
    -- it (the audit log's trigger refuses TRUNCATE), and restored as they were.
    has_rows := pg_relation_size(tbl) > 0;
    forced := (SELECT c.relforcerowsecurity FROM pg_class c WHERE c.oid = tbl);
    IF has_rows THEN
        paused := ARRAY(SELECT t.tgname FROM pg_trigger t
                        WHERE t.tgrelid = tbl AND NOT t.tgisinternal AND t.tgenabled <> 'D'
                        ORDER BY t.tgname);
        FOREACH trigger_name IN ARRAY paused LOOP
            EXECUTE format('ALTER TABLE %s DISABLE TRIGGER %I', tbl, trigger_name);
        END LOOP;
        IF forced THEN
            EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
        END IF;
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
    IF has_rows THEN
        -- The coordinator's own copy of the rows is dead weight now.
        EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)' USING tbl;
        IF forced THEN
            EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
        END IF;
        FOREACH trigger_name IN ARRAY paused LOOP
            EXECUTE format('ALTER TABLE %s ENABLE TRIGGER %I', tbl, trigger_name);
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

-- Makes hdls's own functions known to every node (create_distributed_function without a
-- distribution argument only propagates a function). Citus creates a function on the workers
-- by itself when it is created in a database that has Citus and a table depending on it is
-- distributed, but not one used only in a row policy or a query (hdls.acting_as_agent() in
-- policies, support.breached(tickets, …) in queries) or made before Citus was installed.
-- `after_tables`: the functions that can go only once the tables are distributed (those
-- taking or returning a table's row type, SQL functions whose body names a table, PL/pgSQL
-- ones declaring a variable of a table's row type: a worker checks those on creation); the
-- others go first, since row policies and triggers use them.
CREATE FUNCTION hdls.citus_propagate_functions(after_tables boolean) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
DECLARE
    unsent regprocedure[];
    pending regprocedure[];
    fn regprocedure;
    progress boolean := true;
BEGIN
    -- Every function of hdls's schemas not on the workers yet (the Citus helpers of this
    -- migration stay on the coordinator: nothing runs them elsewhere).
    unsent := ARRAY(
        SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname IN ('hdls', 'crm', 'support', 'contacts', 'hdls_catalog', 'hdls_identity')
          AND p.prokind = 'f'
          AND NOT (n.nspname = 'hdls' AND (p.proname LIKE 'citus\_%' OR p.proname LIKE 'distribute%'
                                           OR p.proname LIKE 'delegate%'))
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
          AND NOT EXISTS (SELECT 1 FROM pg_dist_object o
                          WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid)
        ORDER BY p.oid::regprocedure::text);
    -- Those this pass may send: before the tables, the ones whose creation on a worker does
    -- not need a table there.
    pending := ARRAY(
        SELECT f FROM unnest(unsent) AS u(f) JOIN pg_proc p ON p.oid = u.f
        WHERE after_tables OR NOT (
            EXISTS (SELECT 1 FROM unnest(p.proargtypes::oid[] || p.prorettype) AS a(t)
                    JOIN pg_type ty ON ty.oid = a.t WHERE ty.typrelid <> 0)
            OR ((p.prolang = (SELECT l.oid FROM pg_language l WHERE l.lanname = 'sql')
                 OR p.prosrc ~* '%(row)?type')
                AND EXISTS (SELECT 1 FROM hdls.citus_tables() c
                            WHERE strpos(p.prosrc, c.tbl::text) > 0))));
    -- A worker checks a SQL function's body when it is created there, so a function goes
    -- only after every unsent function its body names (hdls.acting_as_agent() after
    -- hdls.current_persona()); before the tables, one naming a function that must wait
    -- waits too; after them, whatever is left by a cycle goes last, as it is.
    WHILE progress AND cardinality(pending) > 0 LOOP
        progress := false;
        FOREACH fn IN ARRAY pending LOOP
            IF NOT EXISTS (
                SELECT 1 FROM unnest(unsent) AS o(f)
                JOIN pg_proc op ON op.oid = o.f
                JOIN pg_namespace opn ON opn.oid = op.pronamespace
                WHERE o.f <> fn
                  AND strpos((SELECT p.prosrc FROM pg_proc p WHERE p.oid = fn),
                             opn.nspname || '.' || op.proname || '(') > 0)
            THEN
                EXECUTE 'SELECT create_distributed_function($1)' USING fn;
                pending := array_remove(pending, fn);
                unsent := array_remove(unsent, fn);
                progress := true;
            END IF;
        END LOOP;
    END LOOP;
    IF after_tables THEN
        FOREACH fn IN ARRAY pending LOOP
            EXECUTE 'SELECT create_distributed_function($1)' USING fn;
        END LOOP;
    END IF;
END
$$;

-- The functions delegated to a workspace's shard (each takes `workspace uuid`).
CREATE FUNCTION hdls.delegated_functions() RETURNS SETOF regprocedure
    LANGUAGE sql STABLE SET search_path = pg_catalog
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
    PERFORM hdls.citus_propagate_functions(false);
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
    PERFORM hdls.citus_propagate_functions(true);
    -- A schema that existed before the extension (a database converted in place) may reach
    -- the workers without its grants (`hdls setup` changing its owner marks it distributed
    -- first). Granting what it has again is nothing new here and makes Citus send it there.
    FOR statement IN
        SELECT format('GRANT %s ON SCHEMA %I TO %s%s', a.privilege_type, n.nspname,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
                      CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
        FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
        WHERE n.nspname IN ('hdls', 'crm', 'support', 'contacts', 'hdls_catalog', 'hdls_identity')
          AND a.grantee <> n.nspowner
        ORDER BY 1
    LOOP
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
    PERFORM hdls.citus_propagate_functions(false);
    PERFORM hdls.citus_convert(tbl);
    FOREACH statement IN ARRAY coalesce(adds, '{}') LOOP
        EXECUTE statement;
    END LOOP;
    PERFORM hdls.citus_propagate_functions(true);
END
$$;

REVOKE EXECUTE ON FUNCTION hdls.citus_convert(regclass), hdls.delegate(regprocedure),
    hdls.citus_propagate_functions(boolean),
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
             ORDER BY tgrelid::regclass::text
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

-- The refused-call count, as V19 writes it but for reading the plan in two lookups (the
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
    month_start date := date_trunc('month', at, 'UTC')::date;
    taken integer;
BEGIN
    SELECT w.plan INTO plan_name FROM hdls.workspaces w WHERE w.workspace_id = workspace;
    SELECT p.per_minute INTO per_minute FROM hdls_catalog.plans p WHERE p.name = plan_name;
    per_minute := coalesce(per_minute, 120);
    INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls)
    VALUES (workspace, month_start, 0, at, minute_start, 1)
    ON CONFLICT (workspace_id, period) DO UPDATE
        SET window_start = excluded.window_start,
            window_calls = CASE WHEN u.window_start = excluded.window_start
                                THEN u.window_calls + 1 ELSE 1 END
        WHERE u.window_start IS DISTINCT FROM excluded.window_start OR u.window_calls < per_minute
    RETURNING u.window_calls INTO taken;
    allowed := taken IS NOT NULL;
    IF NOT allowed THEN
        refused_window := 'minute';
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
    END IF;
    call_limit := per_minute;
END
$$;

-- support.breached(t, at) takes a ticket's row type. On Citus a query runs on the shard,
-- whose row type is the shard's own (support.tickets_102141), so no such function exists
-- there. The rule, over the columns it reads; the old signature stays, built on it.
CREATE FUNCTION support.sla_breached(status text, first_responded_at timestamptz,
                                     first_response_due_at timestamptz,
                                     resolution_due_at timestamptz,
                                     resolution_paused_at timestamptz, at timestamptz)
    RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT status IN ('open', 'pending')
       AND ((first_responded_at IS NULL AND first_response_due_at < at)
            OR resolution_due_at < coalesce(resolution_paused_at, at))
$$;
CREATE OR REPLACE FUNCTION support.breached(t support.tickets, at timestamptz) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT support.sla_breached(t.status, t.first_responded_at, t.first_response_due_at,
                                t.resolution_due_at, t.resolution_paused_at, at)
$$;

-- The SLA targets of the current workspace, in PL/pgSQL: Citus cannot plan a SQL function's
-- query on a distributed table with the function's parameters in it ("could not create
-- distributed plan"), and the workspace named as a value routes the lookup to one shard.
CREATE OR REPLACE FUNCTION support.sla_targets(priority text, OUT first_response interval,
                                               OUT resolution interval)
    LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
    workspace uuid := hdls.current_workspace();
    own_first integer;
    own_resolution integer;
    d record;
BEGIN
    SELECT p.first_response_minutes, p.resolution_minutes INTO own_first, own_resolution
    FROM support.sla_policies p
    WHERE p.workspace_id = workspace AND p.priority = sla_targets.priority;
    SELECT * INTO d FROM support.default_sla(sla_targets.priority);
    first_response := make_interval(mins => coalesce(own_first, d.first_response_minutes));
    resolution := make_interval(mins => coalesce(own_resolution, d.resolution_minutes));
END
$$;

-- Citus 13.2.2 re-creates a table's row policies on its shards (and on the workers' copies of
-- the table) without `AS RESTRICTIVE` (commands/policy.c, CreatePolicyCommandForPolicy), so
-- every RESTRICTIVE policy of hdls (a customer's narrowing to their own rows, agents-only
-- deletes, the persona rules) becomes PERMISSIVE there and is OR-ed with the tenant policy:
-- a shard would then show an agent the rows of every workspace it holds. Measured on this
-- schema. Citus re-creates shard policies this way whenever it makes a shard (distributing,
-- moving or copying a placement, rebalancing), so hdls repairs them after each of its own
-- conversions (`hdls migrate`, `hdls admin citus distribute`), `hdls serve` refuses to start
-- while any is wrong, and the README tells operators to run `hdls admin citus distribute`
-- after moving shards.
--
-- The repair for one node, as one DO block run there: every restrictive policy of every
-- distributed table, dropped and created again AS RESTRICTIVE on each placement the node
-- holds (and on the node's copy of the table, unless the node is the coordinator, whose
-- copy is the original). One statement per node, atomic there.
CREATE FUNCTION hdls.citus_policy_repair() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $f$
    SELECT 'DO $repair$ DECLARE target text; BEGIN ' || coalesce(string_agg(format(
        'FOR target IN SELECT shard_name(s.logicalrelid, s.shardid) FROM pg_dist_shard s
             JOIN pg_dist_placement pl USING (shardid)
             WHERE s.logicalrelid = %1$L::regclass
               AND pl.groupid = (SELECT groupid FROM pg_dist_local_group)
           UNION ALL SELECT %1$L WHERE (SELECT groupid FROM pg_dist_local_group) <> 0
         LOOP
             EXECUTE format(%2$L, target);
         END LOOP; ',
        p.polrelid::regclass::text,
        format('DROP POLICY IF EXISTS %1$I ON %%1$s; CREATE POLICY %1$I ON %%1$s AS RESTRICTIVE FOR %2$s TO %3$s',
               p.polname,
               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                             WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
               (SELECT string_agg(CASE WHEN r.role = 0 THEN 'PUBLIC'
                                       ELSE quote_ident(pg_get_userbyid(r.role)) END, ', ')
                FROM unnest(p.polroles) AS r(role)))
        -- The expressions go through format() on the node: a literal % is doubled.
        || coalesce(' USING (' || replace(pg_get_expr(p.polqual, p.polrelid), '%', '%%') || ')', '')
        || coalesce(' WITH CHECK (' || replace(pg_get_expr(p.polwithcheck, p.polrelid), '%', '%%')
                    || ')', '')),
        '' ORDER BY p.polrelid::regclass::text, p.polname), '') || 'END $repair$'
    FROM pg_policy p
    WHERE NOT p.polpermissive AND hdls.citus_placement(p.polrelid) = 'distributed'
$f$;

-- The check for one node: how many of the placements it holds (and its copies of the tables)
-- have a restrictive policy of hdls that is missing or not restrictive. 0 when all are right.
CREATE FUNCTION hdls.citus_policy_check() RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $f$
    SELECT 'SELECT count(*) FROM (VALUES ' || coalesce(string_agg(
               format('(%L::regclass, %L)', p.polrelid::regclass::text, p.polname), ', '),
               '(NULL::regclass, NULL::name)') || ') AS w(tbl, policy)
         JOIN LATERAL (SELECT shard_name(s.logicalrelid, s.shardid) AS target FROM pg_dist_shard s
                       JOIN pg_dist_placement pl USING (shardid)
                       WHERE s.logicalrelid = w.tbl
                         AND pl.groupid = (SELECT groupid FROM pg_dist_local_group)
                       UNION ALL SELECT w.tbl::text WHERE (SELECT groupid FROM pg_dist_local_group) <> 0) t
           ON true
         WHERE NOT EXISTS (SELECT 1 FROM pg_policy q
                           WHERE q.polrelid = t.target::regclass AND q.polname = w.policy
                             AND NOT q.polpermissive)'
    FROM pg_policy p
    WHERE NOT p.polpermissive AND hdls.citus_placement(p.polrelid) = 'distributed'
$f$;

-- Last: everything above is in place on the coordinator, and the conversion carries the
-- functions the tables depend on to the workers.
SELECT hdls.distribute_all();
