-- Least privilege, tightened after review.

-- No tool renames a workspace or changes its plan; plans are the operator's (owner role).
-- Without this, the runtime role could move its own workspace onto a bigger plan.
REVOKE UPDATE ON hdls.workspaces FROM hdls_runtime;

-- Revocation is one-way: once revoked_at is set, nobody (not even a buggy or compromised
-- runtime, which may set revoked_at) can clear or move it.
-- The WHEN clause is evaluated without calling the function, so allowed updates pay nothing
-- (hdls.refuse_change is defined in V2).
CREATE TRIGGER revocation_is_final BEFORE UPDATE OF revoked_at ON hdls.api_keys
    FOR EACH ROW WHEN (OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at)
    EXECUTE FUNCTION hdls.refuse_change('a revoked API key stays revoked');

-- The usage ledger is what bills are computed from: a month's count only ever grows.
-- Every admitted call updates this row: the WHEN clause keeps that free of a function call.
CREATE TRIGGER only_grows BEFORE UPDATE ON hdls.usage_ledger
    FOR EACH ROW WHEN (NEW.calls < OLD.calls OR NEW.period <> OLD.period OR NEW.workspace_id <> OLD.workspace_id)
    EXECUTE FUNCTION hdls.refuse_change('the usage ledger only grows');
