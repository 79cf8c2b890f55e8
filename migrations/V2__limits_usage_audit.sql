-- Per-workspace rate limits, monthly budgets from the usage ledger, and the audit log.

-- Plans are reference data shared by many workspaces, so they live outside the tenant
-- schemas. Only the owner role (hdls admin plan set) writes them; the runtime reads.
CREATE TABLE hdls_catalog.plans (
    name           text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    per_minute     integer CHECK (per_minute > 0),
    monthly_budget bigint CHECK (monthly_budget >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
GRANT USAGE ON SCHEMA hdls_catalog TO hdls_runtime;
GRANT SELECT ON hdls_catalog.plans TO hdls_runtime;

-- The workspace→plan link. NULL means the defaults (120/minute, no monthly budget).
ALTER TABLE hdls.workspaces ADD COLUMN plan text REFERENCES hdls_catalog.plans (name);

-- Per-minute windows. UNLOGGED on purpose: a window lives for one minute, and after a
-- crash (or a failover, since unlogged tables are not replicated) the worst case is that
-- one minute's count restarts from zero. Skipping WAL keeps this hot row cheap.
CREATE UNLOGGED TABLE hdls.rate_windows (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    window_start timestamptz NOT NULL,
    calls        integer NOT NULL CHECK (calls >= 0),
    PRIMARY KEY (workspace_id, window_start)
);
ALTER TABLE hdls.rate_windows ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.rate_windows FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.rate_windows
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
GRANT SELECT, INSERT, UPDATE, DELETE ON hdls.rate_windows TO hdls_runtime;

-- The usage ledger: admitted tool calls per workspace per calendar month (UTC). This is
-- what a bill is computed from, and what the monthly budget is checked against: one
-- source of truth. Logged (durable); see src/limits.rs for the commit durability.
CREATE TABLE hdls.usage_ledger (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    period       date NOT NULL CHECK (extract(day FROM period) = 1),
    calls        bigint NOT NULL CHECK (calls >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, period)
);
ALTER TABLE hdls.usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.usage_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.usage_ledger
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
GRANT SELECT, INSERT, UPDATE ON hdls.usage_ledger TO hdls_runtime;

-- Admits one call for `workspace` at time `at`, or says why not: one statement, sent
-- outside any transaction, so it commits on its own and its row locks last microseconds
-- rather than the length of the tool call. It stamps the workspace itself (transaction-
-- local, so the setting ends with the statement) and stays SECURITY INVOKER, so RLS
-- applies as everywhere else. Passing the id grants nothing new: the runtime role stamps
-- its own identity on every transaction anyway. (On Citus this is the shape of a
-- distributed function delegated by its workspace argument.)
-- Order matters: the minute window is taken first; if the month is exhausted that slot is
-- given back, so a refused call is counted nowhere. Row locks on the two counters make
-- the limits exact across any number of hdls processes.
CREATE FUNCTION hdls.admit_call(workspace uuid, at timestamptz,
                                OUT allowed boolean, OUT refused_window text,
                                OUT call_limit bigint, OUT retry_after_s integer)
    LANGUAGE plpgsql VOLATILE SECURITY INVOKER
    SET search_path = pg_catalog
AS $$
DECLARE
    per_minute integer;
    budget bigint;
    minute_start timestamptz := date_trunc('minute', at, 'UTC');
    month_start date := date_trunc('month', at, 'UTC')::date;
    taken integer;
    spent bigint;
BEGIN
    PERFORM set_config('hdls.workspace_id', workspace::text, true);
    -- Counters are not worth a WAL flush per call: see src/limits.rs.
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT coalesce(p.per_minute, 120), p.monthly_budget INTO per_minute, budget
    FROM hdls.workspaces w LEFT JOIN hdls_catalog.plans p ON p.name = w.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no workspace in scope' USING ERRCODE = 'insufficient_privilege';
    END IF;

    INSERT INTO hdls.rate_windows AS r (window_start, calls) VALUES (minute_start, 1)
    ON CONFLICT (workspace_id, window_start) DO UPDATE SET calls = r.calls + 1
        WHERE r.calls < per_minute
    RETURNING r.calls INTO taken;
    IF taken IS NULL OR taken > per_minute THEN
        allowed := false; refused_window := 'minute'; call_limit := per_minute;
        retry_after_s := greatest(1, ceil(extract(epoch FROM (minute_start + interval '1 minute' - at)))::integer);
        RETURN;
    END IF;

    IF budget IS NOT NULL THEN
        INSERT INTO hdls.usage_ledger AS u (period, calls) VALUES (month_start, 1)
        ON CONFLICT (workspace_id, period) DO UPDATE SET calls = u.calls + 1, updated_at = now()
            WHERE u.calls < budget
        RETURNING u.calls INTO spent;
        IF spent IS NULL OR spent > budget THEN
            UPDATE hdls.rate_windows SET calls = calls - 1 WHERE window_start = minute_start;
            allowed := false; refused_window := 'month'; call_limit := budget;
            retry_after_s := greatest(1, ceil(extract(epoch FROM
                ((month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC' - at)))::integer);
            RETURN;
        END IF;
    ELSE
        INSERT INTO hdls.usage_ledger AS u (period, calls) VALUES (month_start, 1)
        ON CONFLICT (workspace_id, period) DO UPDATE SET calls = u.calls + 1, updated_at = now();
    END IF;

    -- Old windows are dead weight; each workspace sweeps its own when it opens a new one.
    IF taken = 1 THEN
        DELETE FROM hdls.rate_windows WHERE window_start < minute_start - interval '1 hour';
    END IF;
    allowed := true;
END
$$;

-- The audit log: privileged and credential events, allowed or refused. Append-only:
-- the runtime role may INSERT and SELECT, never UPDATE or DELETE (and a trigger refuses
-- both for every role, including the owner, as a second line).
CREATE TABLE hdls.audit_events (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL,
    at           timestamptz NOT NULL,
    actor_kind   text NOT NULL CHECK (actor_kind IN ('api_key', 'oauth_token', 'cli')),
    actor_id     text NOT NULL,
    action       text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target       text CHECK (length(target) <= 1000),
    outcome      text NOT NULL CHECK (outcome IN ('allowed', 'refused')),
    reason       text CHECK (length(reason) <= 1000),
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX audit_events_recent ON hdls.audit_events (workspace_id, at DESC, id DESC);
CREATE INDEX audit_events_action ON hdls.audit_events (workspace_id, action, at DESC, id DESC);
ALTER TABLE hdls.audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.audit_events
    USING (workspace_id = hdls.current_workspace())
    WITH CHECK (workspace_id = hdls.current_workspace());
GRANT SELECT, INSERT ON hdls.audit_events TO hdls_runtime;

-- One trigger function for every "this change is never allowed" rule: it refuses with the
-- reason given as the trigger's argument.
CREATE FUNCTION hdls.refuse_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON hdls.audit_events
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('the audit log is append-only');
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON hdls.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION hdls.refuse_change('the audit log is append-only');
