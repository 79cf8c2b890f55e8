-- Least privilege, tightened after review.

-- No tool renames a workspace or changes its plan; plans are the operator's (owner role).
-- Without this, the runtime role could move its own workspace onto a bigger plan.
REVOKE UPDATE ON hdls.workspaces FROM hdls_runtime;

-- Revocation is one-way: once revoked_at is set, nobody (not even a buggy or compromised
-- runtime, which may set revoked_at) can clear or move it.
CREATE FUNCTION hdls.api_key_revocation_is_final() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog
AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'a revoked API key stays revoked' USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER revocation_is_final BEFORE UPDATE OF revoked_at ON hdls.api_keys
    FOR EACH ROW EXECUTE FUNCTION hdls.api_key_revocation_is_final();
