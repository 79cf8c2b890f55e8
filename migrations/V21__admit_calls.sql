-- Admission of one call or several of one workspace at once, from this version the only
-- admission hdls issues (hdls.admit_call stays for processes of the previous version during
-- a rolling upgrade). Reads come in batches (src/limits/batch.rs): a process
-- gathers the read-only calls of a workspace that arrive while one admission is on its way to
-- the database and admits them with one statement, so concurrent calls no longer queue on the
-- counter row's lock one by one. The rules of hdls.admit_call (V19) hold: the workspace is an
-- argument (delegated to its shard under Citus), the time is an argument, identity is stamped
-- by the caller's SET LOCAL, a moved credential epoch refuses every call of the batch before
-- anything is counted, and a refused call is counted nowhere.
-- `admitted` is how many of the `wanted` calls were admitted (the first ones, in the caller's
-- order); the others are refused for `refused_window`. When all fit, one upsert counts them;
-- only near a limit are they counted one at a time, so exactly as many as fit get in.
CREATE FUNCTION hdls.admit_calls(workspace uuid, at timestamptz, expected_epoch bigint,
                                 wanted integer,
                                 OUT admitted integer, OUT refused_window text,
                                 OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
DECLARE
    plan_name text;
    per_minute integer;
    budget bigint;
    minute_start timestamptz := date_trunc('minute', at, 'UTC');
    month_start date := date_trunc('month', at, 'UTC')::date;
    counted hdls.usage_ledger%ROWTYPE;
BEGIN
    IF wanted IS NULL OR wanted < 1 THEN
        RAISE EXCEPTION 'admit_calls: wanted must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    admitted := 0;
    IF expected_epoch IS NOT NULL AND expected_epoch IS DISTINCT FROM
            (SELECT e.epoch FROM hdls.credential_epochs e WHERE e.workspace_id = workspace) THEN
        refused_window := 'credential'; call_limit := 0; retry_after_s := 0;
        RETURN;
    END IF;
    -- Scalar lookups, not an outer join to the plans (a reference table under Citus).
    SELECT w.plan INTO plan_name FROM hdls.workspaces w WHERE w.workspace_id = workspace;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no workspace in scope' USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT p.per_minute, p.monthly_budget INTO per_minute, budget
    FROM hdls_catalog.plans p WHERE p.name = plan_name;
    per_minute := coalesce(per_minute, 120);

    -- All at once, when all fit (the usual case).
    IF wanted <= per_minute AND (budget IS NULL OR wanted <= budget) THEN
        INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls)
        VALUES (workspace, month_start, wanted, at, minute_start, wanted)
        ON CONFLICT (workspace_id, period) DO UPDATE
            SET calls = u.calls + wanted,
                updated_at = excluded.updated_at,
                window_start = excluded.window_start,
                window_calls = CASE WHEN u.window_start = excluded.window_start
                                    THEN u.window_calls + wanted ELSE wanted END
            WHERE (CASE WHEN u.window_start = excluded.window_start THEN u.window_calls ELSE 0 END)
                      + wanted <= per_minute
              AND (budget IS NULL OR u.calls + wanted <= budget)
        RETURNING u.* INTO counted;
        IF counted.workspace_id IS NOT NULL THEN
            admitted := wanted;
            RETURN;
        END IF;
    END IF;

    -- Near a limit: one at a time, each as hdls.admit_call counts one, until one is refused.
    WHILE admitted < wanted LOOP
        counted := NULL;
        INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls)
        VALUES (workspace, month_start, 1, at, minute_start, 1)
        ON CONFLICT (workspace_id, period) DO UPDATE
            SET calls = u.calls + 1,
                updated_at = excluded.updated_at,
                window_start = excluded.window_start,
                window_calls = CASE WHEN u.window_start = excluded.window_start
                                    THEN u.window_calls + 1 ELSE 1 END
            WHERE (u.window_start IS DISTINCT FROM excluded.window_start OR u.window_calls < per_minute)
              AND (budget IS NULL OR u.calls < budget)
        RETURNING u.* INTO counted;
        EXIT WHEN counted.workspace_id IS NULL;
        admitted := admitted + 1;
    END LOOP;
    IF admitted = wanted THEN
        RETURN;
    END IF;

    -- Some refused: which window is full?
    SELECT * INTO counted FROM hdls.usage_ledger u
    WHERE u.workspace_id = workspace AND u.period = month_start;
    IF counted.window_start = minute_start AND counted.window_calls >= per_minute THEN
        refused_window := 'minute'; call_limit := per_minute;
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
    ELSE
        refused_window := 'month'; call_limit := budget;
        retry_after_s := greatest(1, ceil(extract(epoch FROM
            ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC' - at)))::integer);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION hdls.admit_calls(uuid, timestamptz, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hdls.admit_calls(uuid, timestamptz, bigint, integer) TO hdls_runtime;

-- Delegated to the workspace's shard under Citus, like hdls.admit_call (V20); a no-op without.
CREATE OR REPLACE FUNCTION hdls.delegated_functions() RETURNS SETOF regprocedure
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    VALUES ('hdls.admit_call(uuid, timestamptz, bigint)'::regprocedure),
           ('hdls.admit_calls(uuid, timestamptz, bigint, integer)'::regprocedure),
           ('hdls.count_refusal(uuid, timestamptz)'::regprocedure)
$$;
SELECT hdls.delegate('hdls.admit_calls(uuid, timestamptz, bigint, integer)'::regprocedure);
