-- The columns that say who did something (a note's author, who moved a deal) are stamped by
-- the database from the tool call (`hdls.call`, set by the Scope with SET LOCAL), never taken
-- from the client: the power tools write these tables too, and must not let anyone write in
-- another person's name or rewrite who did it.

CREATE FUNCTION hdls.stamp_author() RETURNS trigger
    LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog
AS $$
DECLARE
    author text := nullif(split_part(nullif(current_setting('hdls.call', true), ''), ' ', 3), '');
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Who did it never changes afterwards.
        NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], to_jsonb(OLD) -> TG_ARGV[0]));
    ELSIF author IS NOT NULL THEN
        NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], left(author, 200)));
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER stamp_author BEFORE INSERT OR UPDATE ON crm.notes
    FOR EACH ROW EXECUTE FUNCTION hdls.stamp_author('author');
CREATE TRIGGER stamp_author BEFORE INSERT OR UPDATE ON crm.deal_stage_history
    FOR EACH ROW EXECUTE FUNCTION hdls.stamp_author('changed_by');
