-- Support: requesters (the team's customers), tickets with their thread, SLA targets, and
-- the customer persona's isolation, enforced here rather than by the tools.
--
-- Two personas use these tables, both as hdls_runtime. The Scope stamps `hdls.persona`
-- ('agent' or 'customer') and, for a customer, `hdls.principal_id` (their requester id) with
-- SET LOCAL. RESTRICTIVE policies then narrow a customer to their own rows on top of the
-- tenant policy: their requester row, their tickets, the public entries of their tickets.
-- Anything else (no persona, a customer without a principal) sees zero rows: fail closed.
--
-- Every table follows DESIGN §3: workspace_id leads every key, index and foreign key; ids
-- are random; RLS enabled and forced; one outbox trigger each.

-- The server clock's time of the current tool call (the Scope stamps it in `hdls.call`, see
-- V7), or the statement's time outside a tool call. Triggers read it so the test clock
-- drives every timestamp they set.
CREATE FUNCTION hdls.call_time() RETURNS timestamptz
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT coalesce(
        to_timestamp(nullif(split_part(nullif(current_setting('hdls.call', true), ''), ' ', 2), '')::bigint / 1000.0),
        statement_timestamp())
$$;

-- Whether the current transaction acts for the team (an agent) or for one customer.
CREATE FUNCTION hdls.acting_as_agent() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$ SELECT coalesce(hdls.current_persona() = 'agent', false) $$;

CREATE FUNCTION hdls.acting_as_customer(requester uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT coalesce(hdls.current_persona() = 'customer' AND requester = hdls.current_principal(), false)
$$;

CREATE TABLE support.requesters (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    email        text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    name         text CHECK (length(name) BETWEEN 1 AND 200),
    organisation text CHECK (length(organisation) BETWEEN 1 AND 200),
    custom       jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    -- A disabled requester's customer credentials stop at their next request.
    disabled_at  timestamptz,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
-- One requester per address in a workspace, whatever its case.
CREATE UNIQUE INDEX requesters_email ON support.requesters (workspace_id, lower(email));
CREATE INDEX requesters_name ON support.requesters (workspace_id, name, id);

-- Per-workspace SLA targets by priority; a priority without a row uses the defaults below.
CREATE TABLE support.sla_policies (
    workspace_id           uuid NOT NULL DEFAULT hdls.current_workspace()
                           REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    priority               text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    first_response_minutes integer NOT NULL CHECK (first_response_minutes BETWEEN 1 AND 525600),
    resolution_minutes     integer NOT NULL CHECK (resolution_minutes BETWEEN 1 AND 525600),
    updated_at             timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, priority),
    CHECK (first_response_minutes <= resolution_minutes)
);

-- The defaults: urgent 1 h / 4 h, high 4 h / 1 day, normal 8 h / 3 days, low 1 day / 7 days.
CREATE FUNCTION support.default_sla(priority text, OUT first_response_minutes integer, OUT resolution_minutes integer)
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog
AS $$
    SELECT d.f, d.r FROM (VALUES ('urgent', 60, 240), ('high', 240, 1440),
                                 ('normal', 480, 4320), ('low', 1440, 10080)) d (p, f, r)
    WHERE d.p = priority
$$;

-- The current workspace's targets for a priority (its own row, else the default). SECURITY
-- DEFINER so a customer's new ticket gets the workspace's targets although the customer
-- cannot read the policies; it still reads only the current workspace's row (the tenant
-- policy binds the owner too) and returns only the two intervals.
CREATE FUNCTION support.sla_targets(priority text, OUT first_response interval, OUT resolution interval)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    SELECT make_interval(mins => coalesce(p.first_response_minutes, d.first_response_minutes)),
           make_interval(mins => coalesce(p.resolution_minutes, d.resolution_minutes))
    FROM support.default_sla(sla_targets.priority) d
    LEFT JOIN support.sla_policies p ON p.priority = sla_targets.priority
$$;

CREATE TABLE support.tickets (
    workspace_id          uuid NOT NULL DEFAULT hdls.current_workspace()
                          REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id                    uuid NOT NULL DEFAULT gen_random_uuid(),
    subject               text NOT NULL CHECK (length(subject) BETWEEN 1 AND 500),
    requester_id          uuid NOT NULL,
    status                text NOT NULL DEFAULT 'open'
                          CHECK (status IN ('open', 'pending', 'resolved', 'closed')),
    priority              text NOT NULL DEFAULT 'normal'
                          CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    tags                  text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 50),
    assignee              uuid,
    custom                jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(custom) = 'object'),
    created_at            timestamptz NOT NULL,
    -- Last activity: creation, any thread entry, any change.
    updated_at            timestamptz NOT NULL,
    -- The SLA clocks, kept by the triggers below from the call's time (never from a client).
    first_response_due_at timestamptz NOT NULL,
    first_responded_at    timestamptz,
    resolution_due_at     timestamptz NOT NULL,
    -- Set while the ticket is pending: the resolution clock is paused since then.
    resolution_paused_at  timestamptz,
    -- How long the ticket was pending before (added to the resolution due time), so a new
    -- priority's target is counted from creation whatever the policies were meanwhile.
    resolution_paused_for interval NOT NULL DEFAULT interval '0',
    resolved_at           timestamptz,
    -- Customer satisfaction: one rating, by the customer, once the ticket is resolved.
    csat_score            smallint CHECK (csat_score BETWEEN 1 AND 5),
    csat_comment          text CHECK (length(csat_comment) <= 2000),
    csat_at               timestamptz,
    PRIMARY KEY (workspace_id, id),
    -- A requester with tickets is disabled, not deleted.
    FOREIGN KEY (workspace_id, requester_id) REFERENCES support.requesters (workspace_id, id),
    FOREIGN KEY (workspace_id, assignee) REFERENCES hdls.members (workspace_id, user_id)
        ON DELETE SET NULL (assignee)
);
CREATE INDEX tickets_activity ON support.tickets (workspace_id, updated_at DESC, id DESC);
CREATE INDEX tickets_requester ON support.tickets (workspace_id, requester_id, updated_at DESC, id DESC);
CREATE INDEX tickets_assignee ON support.tickets (workspace_id, assignee) WHERE assignee IS NOT NULL;
CREATE INDEX tickets_open ON support.tickets (workspace_id, status, priority)
    WHERE status IN ('open', 'pending');
CREATE INDEX tickets_tags ON support.tickets USING gin (tags);  -- with the tenant predicate, a bitmap AND
CREATE INDEX tickets_rated ON support.tickets (workspace_id, csat_at) WHERE csat_at IS NOT NULL;

-- Whether a ticket is past an SLA target at `at`: an active ticket (open or pending) still
-- waiting for its first public reply after that was due, or not resolved after that was due
-- (a pending ticket's clock stopped when it became pending).
CREATE FUNCTION support.breached(t support.tickets, at timestamptz) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog
AS $$
    SELECT t.status IN ('open', 'pending')
       AND ((t.first_responded_at IS NULL AND t.first_response_due_at < at)
            OR t.resolution_due_at < coalesce(t.resolution_paused_at, at))
$$;

-- The thread: the opening message, public replies (from the customer or an agent) and
-- internal notes (agents only; no customer credential can read one). Append-only.
CREATE TABLE support.ticket_entries (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    ticket_id    uuid NOT NULL,
    -- The ticket's requester, copied by the trigger below so the customer policy is a
    -- column comparison (and works on a distributed table without a join).
    requester_id uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('opening', 'reply', 'internal_note')),
    -- Stamped by the trigger from the persona, never from a client.
    author_kind  text NOT NULL CHECK (author_kind IN ('agent', 'customer')),
    -- `requester:<uuid>` for a customer, `user:<uuid>` for a person over OAuth, else the
    -- credential id; stamped from the call (V12).
    author       text NOT NULL CHECK (length(author) <= 200),
    body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, ticket_id) REFERENCES support.tickets (workspace_id, id) ON DELETE CASCADE,
    CHECK (kind <> 'internal_note' OR author_kind = 'agent')
);
CREATE INDEX ticket_entries_ticket ON support.ticket_entries (workspace_id, ticket_id, created_at, id);

-- A new ticket: times and SLA due dates from the call's time and the workspace's targets.
CREATE FUNCTION support.ticket_opened() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
DECLARE
    at      timestamptz := hdls.call_time();
    targets record;
BEGIN
    NEW.created_at := coalesce(NEW.created_at, at);
    NEW.updated_at := greatest(coalesce(NEW.updated_at, NEW.created_at), NEW.created_at);
    SELECT * INTO targets FROM support.sla_targets(NEW.priority);
    NEW.first_response_due_at := NEW.created_at + targets.first_response;
    NEW.resolution_due_at := NEW.created_at + targets.resolution;
    NEW.first_responded_at := NULL;
    NEW.resolution_paused_at := CASE WHEN NEW.status = 'pending' THEN NEW.created_at END;
    NEW.resolution_paused_for := interval '0';
    NEW.resolved_at := CASE WHEN NEW.status IN ('resolved', 'closed') THEN NEW.created_at END;
    NEW.csat_score := NULL;
    NEW.csat_comment := NULL;
    NEW.csat_at := NULL;
    RETURN NEW;
END
$$;
CREATE TRIGGER ticket_opened BEFORE INSERT ON support.tickets
    FOR EACH ROW EXECUTE FUNCTION support.ticket_opened();

-- A changed ticket. Whoever changes it (a named tool, a power tool, the thread trigger):
-- * a customer may only reopen their own ticket (a reply does that) and rate it;
-- * the SLA columns follow the status and priority, from the call's time;
-- * a rating is given once, by the customer, on a resolved or closed ticket, and never rewritten.
CREATE FUNCTION support.ticket_changed() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
DECLARE
    at          timestamptz := hdls.call_time();
    new_targets record;
BEGIN
    IF NOT hdls.acting_as_agent() THEN
        IF (NEW.subject, NEW.requester_id, NEW.priority, NEW.tags, NEW.assignee, NEW.custom, NEW.created_at)
           IS DISTINCT FROM (OLD.subject, OLD.requester_id, OLD.priority, OLD.tags, OLD.assignee, OLD.custom, OLD.created_at)
           OR (NEW.status <> OLD.status AND NEW.status <> 'open') THEN
            RAISE EXCEPTION 'a customer cannot change this ticket' USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    -- The clocks are the database's: a client's values for them are ignored.
    NEW.first_response_due_at := OLD.first_response_due_at;
    NEW.resolution_due_at := OLD.resolution_due_at;
    NEW.resolution_paused_at := OLD.resolution_paused_at;
    NEW.resolution_paused_for := OLD.resolution_paused_for;
    NEW.resolved_at := OLD.resolved_at;
    NEW.csat_at := OLD.csat_at;
    -- The first response is recorded once (by the thread trigger), never moved or cleared.
    IF OLD.first_responded_at IS NOT NULL OR NEW.first_responded_at > at THEN
        NEW.first_responded_at := OLD.first_responded_at;
    END IF;
    IF NEW.priority <> OLD.priority THEN
        SELECT * INTO new_targets FROM support.sla_targets(NEW.priority);
        NEW.first_response_due_at := OLD.created_at + new_targets.first_response;
        -- Keeps the time the ticket spent pending (a pause still running is added when it ends).
        NEW.resolution_due_at := OLD.created_at + new_targets.resolution + OLD.resolution_paused_for;
    END IF;
    IF NEW.status <> OLD.status THEN
        IF OLD.resolution_paused_at IS NOT NULL THEN
            NEW.resolution_due_at := NEW.resolution_due_at + greatest(at - OLD.resolution_paused_at, interval '0');
            NEW.resolution_paused_for := OLD.resolution_paused_for + greatest(at - OLD.resolution_paused_at, interval '0');
            NEW.resolution_paused_at := NULL;
        END IF;
        IF NEW.status = 'pending' THEN
            NEW.resolution_paused_at := at;
        END IF;
        IF NEW.status IN ('resolved', 'closed') THEN
            NEW.resolved_at := coalesce(OLD.resolved_at, at);
        ELSE
            NEW.resolved_at := NULL;
        END IF;
    END IF;
    IF (NEW.csat_score, NEW.csat_comment) IS DISTINCT FROM (OLD.csat_score, OLD.csat_comment) THEN
        -- The rating is the customer's word: no agent writes it (through any tool).
        IF hdls.acting_as_agent() THEN
            RAISE EXCEPTION 'only the customer rates a ticket' USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF OLD.csat_score IS NOT NULL THEN
            RAISE EXCEPTION 'this ticket has been rated already' USING ERRCODE = 'check_violation';
        END IF;
        IF OLD.status NOT IN ('resolved', 'closed') OR NEW.csat_score IS NULL THEN
            RAISE EXCEPTION 'only a resolved ticket can be rated' USING ERRCODE = 'check_violation';
        END IF;
        NEW.csat_at := at;
    END IF;
    IF (NEW.subject, NEW.status, NEW.priority, NEW.tags, NEW.assignee, NEW.custom, NEW.csat_score)
       IS DISTINCT FROM (OLD.subject, OLD.status, OLD.priority, OLD.tags, OLD.assignee, OLD.custom, OLD.csat_score) THEN
        NEW.updated_at := greatest(OLD.updated_at, at);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER ticket_changed BEFORE UPDATE ON support.tickets
    FOR EACH ROW EXECUTE FUNCTION support.ticket_changed();

-- A new thread entry: who wrote it (persona and author), which requester's ticket it is on
-- (read under the caller's row policies: a ticket the caller cannot see has no requester
-- here, and the insert fails), and when.
CREATE FUNCTION support.entry_written() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    NEW.author_kind := CASE WHEN hdls.acting_as_agent() THEN 'agent' ELSE 'customer' END;
    NEW.requester_id := (SELECT t.requester_id FROM support.tickets t
                         WHERE t.workspace_id = NEW.workspace_id AND t.id = NEW.ticket_id);
    NEW.created_at := coalesce(NEW.created_at, hdls.call_time());
    RETURN NEW;
END
$$;
CREATE TRIGGER entry_written BEFORE INSERT ON support.ticket_entries
    FOR EACH ROW EXECUTE FUNCTION support.entry_written();
CREATE TRIGGER stamp_author BEFORE INSERT ON support.ticket_entries
    FOR EACH ROW EXECUTE FUNCTION hdls.stamp_author('author');
CREATE TRIGGER entries_are_final BEFORE UPDATE ON support.ticket_entries
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('a ticket''s thread is append-only');

-- What an entry does to its ticket: it is activity; an agent's public reply stops the
-- first-response clock; a customer's reply reopens a pending or resolved ticket.
CREATE FUNCTION support.entry_added() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
BEGIN
    UPDATE support.tickets t
    SET updated_at = greatest(t.updated_at, NEW.created_at),
        first_responded_at = CASE
            WHEN NEW.kind = 'reply' AND NEW.author_kind = 'agent' AND t.first_responded_at IS NULL
            THEN NEW.created_at ELSE t.first_responded_at END,
        status = CASE
            WHEN NEW.author_kind = 'customer' AND NEW.kind = 'reply' AND t.status IN ('pending', 'resolved')
            THEN 'open' ELSE t.status END
    WHERE t.workspace_id = NEW.workspace_id AND t.id = NEW.ticket_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER entry_added AFTER INSERT ON support.ticket_entries
    FOR EACH ROW EXECUTE FUNCTION support.entry_added();

-- The customer accounts of a workspace: a person (signed in with their own password) bound
-- to one requester. Not a membership: no role, never listed among members, never offered as
-- a workspace member at consent. One binding per person per workspace.
CREATE TABLE hdls.customer_accounts (
    workspace_id uuid NOT NULL DEFAULT hdls.current_workspace()
                 REFERENCES hdls.workspaces (workspace_id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES hdls_identity.users ON DELETE CASCADE,
    requester_id uuid NOT NULL,
    joined_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id),
    UNIQUE (workspace_id, requester_id),
    FOREIGN KEY (workspace_id, requester_id) REFERENCES support.requesters (workspace_id, id)
        ON DELETE CASCADE
);
CREATE INDEX customer_accounts_user ON hdls.customer_accounts (user_id);

-- Invitations either add a member or make a customer account for one requester.
ALTER TABLE hdls.invitations
    ADD COLUMN requester_id uuid,
    ADD CONSTRAINT invitations_requester FOREIGN KEY (workspace_id, requester_id)
        REFERENCES support.requesters (workspace_id, id) ON DELETE CASCADE;

-- Credentials carry the persona and principal they were issued with; nothing at request
-- time changes them. A customer credential is bound to one requester.
ALTER TABLE hdls.api_keys
    ADD COLUMN persona text NOT NULL DEFAULT 'agent' CHECK (persona IN ('agent', 'customer')),
    ADD COLUMN principal_id uuid,
    ADD CONSTRAINT api_keys_principal CHECK ((persona = 'customer') = (principal_id IS NOT NULL)),
    ADD CONSTRAINT api_keys_requester FOREIGN KEY (workspace_id, principal_id)
        REFERENCES support.requesters (workspace_id, id) ON DELETE CASCADE;
ALTER TABLE hdls.oauth_grants
    ADD COLUMN persona text NOT NULL DEFAULT 'agent' CHECK (persona IN ('agent', 'customer')),
    ADD COLUMN principal_id uuid,
    ADD CONSTRAINT oauth_grants_principal CHECK ((persona = 'customer') = (principal_id IS NOT NULL)),
    ADD CONSTRAINT oauth_grants_requester FOREIGN KEY (workspace_id, principal_id)
        REFERENCES support.requesters (workspace_id, id) ON DELETE CASCADE;
-- Persona and principal are frozen at issue.
CREATE TRIGGER persona_is_frozen BEFORE UPDATE OF persona, principal_id ON hdls.api_keys
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('a credential''s persona and principal never change');
CREATE TRIGGER persona_is_frozen BEFORE UPDATE OF persona, principal_id ON hdls.oauth_grants
    FOR EACH ROW EXECUTE FUNCTION hdls.refuse_change('a credential''s persona and principal never change');

-- Customer sessions on the web portal: one person, bound to one workspace's customer account.
CREATE TABLE hdls_identity.portal_sessions (
    token_hash   bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id      uuid NOT NULL REFERENCES hdls_identity.users ON DELETE CASCADE,
    workspace_id uuid NOT NULL,
    requester_id uuid NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
CREATE INDEX portal_sessions_user ON hdls_identity.portal_sessions (user_id);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['requesters', 'sla_policies', 'tickets', 'ticket_entries'] LOOP
        EXECUTE format('ALTER TABLE support.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE support.%I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON support.%I USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON support.%I TO hdls_runtime', t);
        PERFORM hdls.track_changes(format('support.%I', t)::regclass);
    END LOOP;
END
$$;
ALTER TABLE hdls.customer_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE hdls.customer_accounts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hdls.customer_accounts
    USING (workspace_id = hdls.current_workspace()) WITH CHECK (workspace_id = hdls.current_workspace());
CREATE POLICY credential_path ON hdls.customer_accounts TO hdls_auth USING (true) WITH CHECK (true);

-- The customer persona, on top of the tenant policy (RESTRICTIVE: both must pass).
-- Requesters: a customer sees their own row and writes none (a DELETE has no WITH CHECK,
-- so it gets its own policy: without it a customer could delete their own row).
CREATE POLICY persona ON support.requesters AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent() OR hdls.acting_as_customer(id))
    WITH CHECK (hdls.acting_as_agent());
CREATE POLICY agents_delete ON support.requesters AS RESTRICTIVE FOR DELETE TO hdls_runtime
    USING (hdls.acting_as_agent());
-- SLA targets: agents only (a customer's new ticket reads them through support.sla_targets).
CREATE POLICY persona ON support.sla_policies AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent()) WITH CHECK (hdls.acting_as_agent());
-- Tickets: a customer sees, opens and updates only tickets whose requester is them, and
-- never deletes one.
CREATE POLICY persona ON support.tickets AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent() OR hdls.acting_as_customer(requester_id))
    WITH CHECK (hdls.acting_as_agent() OR hdls.acting_as_customer(requester_id));
CREATE POLICY agents_delete ON support.tickets AS RESTRICTIVE FOR DELETE TO hdls_runtime
    USING (hdls.acting_as_agent());
-- The thread: a customer sees the public entries of their own tickets and adds only
-- public entries written as themselves; internal notes do not exist for them.
CREATE POLICY persona ON support.ticket_entries AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent() OR (hdls.acting_as_customer(requester_id) AND kind <> 'internal_note'))
    WITH CHECK (hdls.acting_as_agent()
                OR (hdls.acting_as_customer(requester_id) AND kind <> 'internal_note' AND author_kind = 'customer'));
CREATE POLICY agents_delete ON support.ticket_entries AS RESTRICTIVE FOR DELETE TO hdls_runtime
    USING (hdls.acting_as_agent());
-- Customer accounts: agents see them (which requesters have one); a customer sees only
-- their own, and nothing writes them at runtime but an agent removing one.
CREATE POLICY persona ON hdls.customer_accounts AS RESTRICTIVE TO hdls_runtime
    USING (hdls.acting_as_agent() OR hdls.acting_as_customer(requester_id))
    WITH CHECK (hdls.acting_as_agent());
CREATE POLICY agents_delete ON hdls.customer_accounts AS RESTRICTIVE FOR DELETE TO hdls_runtime
    USING (hdls.acting_as_agent());
-- The change-event outbox carries whole rows (internal notes among them): a customer
-- transaction writes its events through the triggers but reads none.
CREATE POLICY persona ON hdls.change_events AS RESTRICTIVE FOR SELECT TO hdls_runtime
    USING (hdls.acting_as_agent());

GRANT SELECT, DELETE ON hdls.customer_accounts TO hdls_runtime;

-- The credential path: accepting a customer invitation makes the account; every request
-- with a customer credential checks its requester is still enabled; portal sessions.
GRANT USAGE ON SCHEMA support TO hdls_auth;
GRANT SELECT (workspace_id, id, email, name, disabled_at) ON support.requesters TO hdls_auth;
CREATE POLICY credential_path ON support.requesters FOR SELECT TO hdls_auth USING (true);
GRANT SELECT, INSERT, DELETE ON hdls.customer_accounts TO hdls_auth;
GRANT SELECT, INSERT, DELETE ON hdls_identity.portal_sessions TO hdls_auth;
