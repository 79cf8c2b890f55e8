-- Housekeeping of spent credentials: the auth role (which issues them) may delete the ones
-- that can no longer be used. Grants are never deleted: they are the record of a connection.
GRANT DELETE ON hdls_identity.user_links TO hdls_auth;
GRANT DELETE ON hdls.oauth_codes TO hdls_auth;
GRANT DELETE ON hdls.oauth_refresh_tokens TO hdls_auth;
