-- Admission leases: on a plan far from its limits, a process may take a few calls of the
-- current minute in advance ("lease" them) with the admission it makes anyway, admit its
-- next reads from them without a write, and settle them later (src/limits/lease.rs).
-- Measured (cargo bench --bench mcp, 2 cores): even in batches, the one write per admission
-- cost reads a third of their throughput against no limits at all.
--
-- The rules that keep this exact where it matters:
-- * a lease belongs to one minute window: `window_calls` counts its calls at once (used or
--   not), so the per-minute limit can never be passed; `window_leased` says how many of the
--   window's calls are leased and not settled yet, and is reset with the window;
-- * the month's `calls`, what bills are computed from, only ever counts calls that ran: a
--   lease's used calls are added when it is settled, never its unused ones (the ledger still
--   only grows, V3). Until then the budget check counts the window's leased calls as spent,
--   so the budget is not passed either, but for one moment: a lease ends with its minute at
--   the latest and is settled a few milliseconds later, and in between its calls are no
--   longer reserved (by then 8 leases' worth of the budget were still free when it was
--   granted);
-- * a lease is granted only far from both limits: after it, at least 8 leases' worth of room
--   must remain in the minute and in the month. Near a limit every call is admitted by the
--   database one batch at a time, exactly as before, so small plans (the default 120 a
--   minute included) never lease;
-- * settling gives a lease's unused calls back to its minute while that minute lasts.
-- What a lease costs: while a process holds unused leased calls (at most one lease per
-- workspace per process, for at most 100 ms), another process near the minute's limit may
-- be refused calls that the lease will give back. A process that dies holding a lease never
-- settles it: its used calls are not billed (an under-count, in the customer's favour, like
-- the asynchronous commit of admissions) and its unused ones free up with their minute.

-- Admission, settlement and lease in one statement. `wanted` calls are admitted as by V21
-- (all at once when they fit, else one at a time, the rest refused and counted nowhere).
-- Then, if all were admitted, `lease` calls more are leased when far enough from both
-- limits (`leased`: how many; 0 or `lease`). First, a lease taken earlier is settled:
-- `settle_used` of its `settle_leased` calls of the minute `settle_window` ran. A call with
-- `wanted` = 0 and `lease` = 0 only settles. A moved credential epoch refuses the calls and
-- grants no lease, but still settles: the settled calls ran.
CREATE FUNCTION hdls.admit_calls(workspace uuid, at timestamptz, expected_epoch bigint,
                                 wanted integer, lease integer,
                                 settle_window timestamptz, settle_leased integer,
                                 settle_used integer,
                                 OUT admitted integer, OUT leased integer,
                                 OUT refused_window text, OUT call_limit bigint,
                                 OUT retry_after_s integer)
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
    IF wanted IS NULL OR wanted < 0 OR lease IS NULL OR lease < 0
       OR settle_leased IS NULL OR settle_used IS NULL OR settle_used < 0
       OR settle_used > settle_leased OR (settle_leased > 0 AND settle_window IS NULL) THEN
        RAISE EXCEPTION 'admit_calls: invalid arguments' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    admitted := 0;
    leased := 0;

    IF settle_leased > 0 THEN
        UPDATE hdls.usage_ledger u
        SET calls = u.calls + settle_used,
            updated_at = greatest(u.updated_at, at),
            window_calls = CASE WHEN u.window_start = settle_window
                                THEN greatest(u.window_calls - (settle_leased - settle_used), 0)
                                ELSE u.window_calls END,
            window_leased = CASE WHEN u.window_start = settle_window
                                 THEN greatest(u.window_leased - settle_leased, 0)
                                 ELSE u.window_leased END
        WHERE u.workspace_id = workspace
          AND u.period = date_trunc('month', settle_window, 'UTC')::date;
    END IF;
    IF wanted = 0 AND lease = 0 THEN
        RETURN;
    END IF;

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

    -- All at once, when all fit (the usual case). The window's leased calls are spent as far
    -- as the budget knows.
    IF wanted <= per_minute AND (budget IS NULL OR wanted <= budget) THEN
        INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls, window_leased)
        VALUES (workspace, month_start, wanted, at, minute_start, wanted, 0)
        ON CONFLICT (workspace_id, period) DO UPDATE
            SET calls = u.calls + wanted,
                updated_at = excluded.updated_at,
                window_start = excluded.window_start,
                window_calls = CASE WHEN u.window_start = excluded.window_start
                                    THEN u.window_calls + wanted ELSE wanted END,
                window_leased = CASE WHEN u.window_start = excluded.window_start
                                     THEN u.window_leased ELSE 0 END
            WHERE (CASE WHEN u.window_start = excluded.window_start THEN u.window_calls ELSE 0 END)
                      + wanted <= per_minute
              AND (budget IS NULL OR u.calls + wanted
                   + (CASE WHEN u.window_start = excluded.window_start THEN u.window_leased ELSE 0 END)
                   <= budget)
        RETURNING u.* INTO counted;
        IF counted.workspace_id IS NOT NULL THEN
            admitted := wanted;
        END IF;
    END IF;

    -- Near a limit: one at a time, until one is refused.
    WHILE admitted < wanted LOOP
        counted := NULL;
        INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls, window_leased)
        VALUES (workspace, month_start, 1, at, minute_start, 1, 0)
        ON CONFLICT (workspace_id, period) DO UPDATE
            SET calls = u.calls + 1,
                updated_at = excluded.updated_at,
                window_start = excluded.window_start,
                window_calls = CASE WHEN u.window_start = excluded.window_start
                                    THEN u.window_calls + 1 ELSE 1 END,
                window_leased = CASE WHEN u.window_start = excluded.window_start
                                     THEN u.window_leased ELSE 0 END
            WHERE (u.window_start IS DISTINCT FROM excluded.window_start OR u.window_calls < per_minute)
              AND (budget IS NULL OR u.calls
                   + (CASE WHEN u.window_start = excluded.window_start THEN u.window_leased ELSE 0 END)
                   < budget)
        RETURNING u.* INTO counted;
        EXIT WHEN counted.workspace_id IS NULL;
        admitted := admitted + 1;
    END LOOP;

    IF admitted = wanted THEN
        -- `counted` is the row as this admission left it. Only far from both limits.
        IF lease > 0 AND counted.window_start = minute_start
           AND counted.window_calls + 9 * lease <= per_minute
           AND (budget IS NULL OR counted.calls + counted.window_leased + 9 * lease <= budget) THEN
            UPDATE hdls.usage_ledger u
            SET window_calls = u.window_calls + lease,
                window_leased = u.window_leased + lease
            WHERE u.workspace_id = workspace AND u.period = month_start
              AND u.window_start = minute_start
              AND u.window_calls + 9 * lease <= per_minute
              AND (budget IS NULL OR u.calls + u.window_leased + 9 * lease <= budget)
            RETURNING lease INTO leased;
            leased := coalesce(leased, 0);
        END IF;
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
REVOKE EXECUTE ON FUNCTION hdls.admit_calls(uuid, timestamptz, bigint, integer, integer, timestamptz, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hdls.admit_calls(uuid, timestamptz, bigint, integer, integer, timestamptz, integer, integer) TO hdls_runtime;

-- V21's admission, for processes of the previous version during a rolling upgrade: the same
-- rules, through the function above (so they respect leases too).
CREATE OR REPLACE FUNCTION hdls.admit_calls(workspace uuid, at timestamptz, expected_epoch bigint,
                                            wanted integer,
                                            OUT admitted integer, OUT refused_window text,
                                            OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE sql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
    SELECT a.admitted, a.refused_window, a.call_limit, a.retry_after_s
    FROM hdls.admit_calls(workspace, at, expected_epoch, wanted, 0, NULL, 0, 0) a
$$;

-- A refused call counted in the minute (V20): a new window also starts with nothing leased.
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
    INSERT INTO hdls.usage_ledger AS u (workspace_id, period, calls, updated_at, window_start, window_calls, window_leased)
    VALUES (workspace, month_start, 0, at, minute_start, 1, 0)
    ON CONFLICT (workspace_id, period) DO UPDATE
        SET window_start = excluded.window_start,
            window_calls = CASE WHEN u.window_start = excluded.window_start
                                THEN u.window_calls + 1 ELSE 1 END,
            window_leased = CASE WHEN u.window_start = excluded.window_start
                                 THEN u.window_leased ELSE 0 END
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

-- Delegated to the workspace's shard under Citus, like every admission; a no-op without.
CREATE OR REPLACE FUNCTION hdls.delegated_functions() RETURNS SETOF regprocedure
    LANGUAGE sql STABLE SET search_path = pg_catalog
AS $$
    VALUES ('hdls.admit_call(uuid, timestamptz, bigint)'::regprocedure),
           ('hdls.admit_calls(uuid, timestamptz, bigint, integer)'::regprocedure),
           ('hdls.admit_calls(uuid, timestamptz, bigint, integer, integer, timestamptz, integer, integer)'::regprocedure),
           ('hdls.count_refusal(uuid, timestamptz)'::regprocedure)
$$;
SELECT hdls.delegate('hdls.admit_calls(uuid, timestamptz, bigint, integer, integer, timestamptz, integer, integer)'::regprocedure);

-- The column last: under Citus, a function command (above) may not follow a parallel
-- operation on a distributed table, such as this ALTER, in one transaction. The functions
-- name the column only when they run.
-- The constraint in a command of its own, with a name: Citus refuses a column added with an
-- unnamed constraint to a distributed table. Through EXECUTE, because Citus sends an added
-- CHECK to the workers as the text of the statement it came in, and a migration arrives as
-- one string of many statements, which a worker refuses.
ALTER TABLE hdls.usage_ledger ADD COLUMN window_leased integer NOT NULL DEFAULT 0;
DO $$
BEGIN
    EXECUTE 'ALTER TABLE hdls.usage_ledger
             ADD CONSTRAINT usage_ledger_window_leased_check CHECK (window_leased >= 0)';
END
$$;
GRANT UPDATE (window_leased) ON hdls.usage_ledger TO hdls_runtime;
