-- Substring search that does not scan the workspace (issue 15, target 4).
--
-- Every column a named `search_*` tool matches with ILIKE gets a trigram GIN index that
-- leads with workspace_id (btree_gin provides the uuid operator class), so a search for
-- "cme Rob" reads the index entries of its own workspace only. The power tools' like/ilike
-- filters on these columns use the same indexes. `hdls setup` (superuser) installs pg_trgm
-- and btree_gin (in schema hdls_ext) and marks textlike/texticlike LEAKPROOF, without which
-- row-level security keeps the planner from using any of these indexes (see setup.rs).
--
-- crm.contacts is matched on one expression, first_name || ' ' || coalesce(last_name, ''),
-- instead of first_name, last_name and concat_ws(...) separately: concat_ws is not
-- immutable (no index on it), and for a trimmed, escaped search text a substring of either
-- name is a substring of that expression, so the results are the same with one index.
--
-- Writes: each index adds its trigrams to the GIN pending list on insert/update of the
-- indexed column (measured in benches/substring_search.sh and the commit message).
DO $$
DECLARE
    trgm text := (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                  WHERE e.extname = 'pg_trgm');
    missing text := (SELECT string_agg(x, ', ') FROM unnest(ARRAY['pg_trgm', 'btree_gin']) x
                     WHERE NOT EXISTS (SELECT FROM pg_extension WHERE extname = x));
    idx record;
BEGIN
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'the PostgreSQL extension(s) % are not installed in database %', missing, current_database()
            USING HINT = 'run `hdls setup` with a superuser URL on this database (it installs pg_trgm and btree_gin, both shipped with the PostgreSQL server packages), then `hdls migrate` again';
    END IF;
    IF NOT (SELECT bool_and(proleakproof) FROM pg_proc
            WHERE oid IN ('pg_catalog.textlike(text, text)'::regprocedure,
                          'pg_catalog.texticlike(text, text)'::regprocedure)) THEN
        RAISE EXCEPTION 'LIKE/ILIKE are not marked LEAKPROOF in database %, so row-level security would keep substring searches off their indexes', current_database()
            USING HINT = 'run `hdls setup` with a superuser URL on this database, then `hdls migrate` again';
    END IF;
    FOR idx IN SELECT * FROM (VALUES
        ('accounts_name_trgm',          'crm.accounts',           'name'),
        ('accounts_domain_trgm',        'crm.accounts',           'domain'),
        ('contacts_full_name_trgm',     'crm.contacts',           '(first_name || '' '' || coalesce(last_name, ''''))'),
        ('contacts_email_trgm',         'crm.contacts',           'email'),
        ('deals_name_trgm',             'crm.deals',              'name'),
        ('contacts_name_trgm',          'contacts.contacts',      'name'),
        ('contacts_email_trgm',         'contacts.contacts',      'email'),
        ('organisations_name_trgm',     'contacts.organisations', 'name'),
        ('organisations_domain_trgm',   'contacts.organisations', 'domain'),
        ('requesters_email_trgm',       'support.requesters',     'email'),
        ('requesters_name_trgm',        'support.requesters',     'name'),
        ('requesters_organisation_trgm','support.requesters',     'organisation'),
        ('tickets_subject_trgm',        'support.tickets',        'subject')
    ) AS t(name, tab, col) LOOP
        EXECUTE format('CREATE INDEX %I ON %s USING gin (workspace_id, %s %I.gin_trgm_ops)',
                       idx.name, idx.tab, idx.col, trgm);
    END LOOP;
END $$;
