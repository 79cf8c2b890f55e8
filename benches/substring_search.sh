#!/usr/bin/env bash
# Substring search at scale (issue 15, target 4): 100,000 accounts in one workspace and
# 1,000,009 across 100 workspaces; pgbench at 1 client runs, as hdls_runtime with identity
# stamped by SET LOCAL, the transaction search_accounts runs (its exact SEARCH_SQL, prepared,
# the search text as a parameter) and a query_records-style `name ILIKE` filter, and prints
# p50/p99 latency in three phases:
#   1. as migrated (V18 trigram indexes, LIKE/ILIKE leakproof as `hdls setup` leaves them),
#   2. indexes kept but LIKE/ILIKE not leakproof (what RLS does to the planner without it),
#   3. the V18 indexes dropped (today's behaviour before V18),
# and the create_account insert transaction's rate (8 clients) with and without crm.accounts'
# two trigram indexes, alternating, twice (durable, and with synchronous_commit off so the
# WAL flush does not hide the index maintenance).
#
# Needs PostgreSQL server binaries (initdb, pg_ctl, pgbench, psql) and a built hdls
# (`cargo build --release`, or HDLS_BIN). By default it starts a private cluster in a
# temporary directory and removes it at the end; with HDLS_BENCH_DATABASE_URL (a superuser
# URL such as postgres://postgres@127.0.0.1:5432/postgres, trust or .pgpass auth for the
# hdls roles too) it creates and finally drops a database hdls_substring_bench there.
#   bash benches/substring_search.sh            (SECONDS_PER_RUN=10 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${HDLS_BIN:-target/release/hdls}
T=${SECONDS_PER_RUN:-10}
DB=hdls_substring_bench
WS=00000000-0000-0000-0000-000000000001 # the workspace with 100,000 accounts
WORK=$(mktemp -d /tmp/hdls-substring-bench.XXXXXX)
chmod 755 "$WORK"
CLUSTER=""
cleanup() {
  if [ -n "$CLUSTER" ]; then
    as_pg pg_ctl -D "$CLUSTER/data" -m immediate stop >/dev/null 2>&1 || true
  elif [ -n "${ADMIN_URL:-}" ]; then
    psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
# PostgreSQL refuses to run as root: switch to the postgres system user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -n "${HDLS_BENCH_DATABASE_URL:-}" ]; then
  ADMIN_URL=$HDLS_BENCH_DATABASE_URL
  psql "$ADMIN_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  eval "$(python3 - "$ADMIN_URL" "$DB" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1])
print(f"export PGHOST={p.hostname or '127.0.0.1'} PGPORT={p.port or 5432}")
print(f"SUPER_USER={p.username or 'postgres'}")
print("DB_URL=" + u.urlunsplit(p._replace(path='/' + sys.argv[2])))
PY
)"
else
  BINDIR=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  export PATH="$BINDIR:$PATH"
  CLUSTER=$WORK/cluster
  mkdir -p "$CLUSTER"
  [ "$(id -u)" = 0 ] && chown postgres "$CLUSTER"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_pg initdb -D "$CLUSTER/data" -U postgres -A trust >/dev/null
  as_pg pg_ctl -D "$CLUSTER/data" -l "$CLUSTER/log" -w \
    -o "-p $PORT -k $CLUSTER -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null
  export PGHOST=127.0.0.1 PGPORT=$PORT
  SUPER_USER=postgres
  psql -U postgres -d postgres -qc "CREATE DATABASE $DB"
  DB_URL="postgres://postgres@127.0.0.1:$PORT/$DB"
fi
SU() { psql -U "$SUPER_USER" -d $DB -v ON_ERROR_STOP=1 -q "$@"; }

$BIN setup --database-url "$DB_URL" >/dev/null
$BIN migrate --database-url "$DB_URL" >/dev/null

echo "loading 1,000,009 accounts into 100 workspaces ($WS holds 100,000) ..."
SU -c "INSERT INTO hdls.workspaces (workspace_id, name) VALUES ('$WS', 'bench 1')"
sed "s/\\\$WS\\\$/'$WS'/g" benches/accounts_at_scale.sql | SU
SU -c "VACUUM ANALYZE crm.accounts"
SU -At -c "SELECT format('%s accounts in all, %s in the big workspace; \"cme Rob\" matches %s of them (%s%%), \"zzqx\" none',
  (SELECT count(*) FROM crm.accounts), count(*), count(*) FILTER (WHERE name ILIKE '%cme Rob%' OR domain ILIKE '%cme Rob%'),
  round(100.0 * count(*) FILTER (WHERE name ILIKE '%cme Rob%' OR domain ILIKE '%cme Rob%') / count(*), 3))
  FROM crm.accounts WHERE workspace_id = '$WS'"

# search_accounts: BEGIN; SET LOCAL identity; SEARCH_SQL (src/products/crm/accounts.rs) with
# the pattern named::search_pattern makes, no cursor, limit 50 + 1; COMMIT.
cat > "$WORK/search.sql" <<SQL
BEGIN;
SET LOCAL hdls.workspace_id = '$WS';
SET LOCAL hdls.persona = 'agent';
SET LOCAL hdls.call = 'key_00000000000000aa 1764650000000';
SELECT id, name, domain, owner, industry, tags, custom, created_at, updated_at
     FROM crm.accounts
     WHERE workspace_id = '$WS' AND (:pattern::text IS NULL OR name ILIKE :pattern OR domain ILIKE :pattern)
       AND (NULL::text IS NULL OR (name, id) > (NULL, NULL::uuid))
     ORDER BY name, id
     LIMIT 51;
COMMIT;
SQL
# query_records {table: accounts, filter: {column: name, op: ilike, value: …}}: the shape the
# engine builds (src/engine/query.rs), default order by the primary key, limit 50 + 1.
cat > "$WORK/records.sql" <<SQL
BEGIN;
SET LOCAL hdls.workspace_id = '$WS';
SET LOCAL hdls.persona = 'agent';
SET LOCAL hdls.call = 'key_00000000000000aa 1764650000000';
SELECT json_build_object('id'::text, p.c0, 'name'::text, p.c1, 'domain'::text, p.c2) AS row,
       ARRAY[p.k0::text]::text[] AS position
FROM (SELECT t.id AS c0, t.name AS c1, t.domain AS c2, t.id AS k0, 1 AS one
      FROM crm.accounts t WHERE true AND t.name ILIKE :pattern::text::text
      ORDER BY t.id ASC NULLS LAST LIMIT 51) p;
COMMIT;
SQL
# create_account's insert (as benches/outbox_write_cost.sh), change-event trigger on.
cat > "$WORK/insert.sql" <<SQL
BEGIN;
SET LOCAL hdls.workspace_id = '$WS';
SET LOCAL hdls.persona = 'agent';
SET LOCAL hdls.call = 'key_00000000000000aa 1764650000000';
INSERT INTO crm.accounts (id, name, domain, custom, created_at, updated_at)
VALUES (gen_random_uuid(), 'Bench ' || md5(random()::text), md5(random()::text) || '.example', '{}', now(), now());
COMMIT;
SQL

# The same with synchronous_commit off, so the WAL flush does not hide the index work.
sed 's/^SET LOCAL hdls.call.*/&\nSET LOCAL synchronous_commit = off;/' "$WORK/insert.sql" > "$WORK/insert_async.sql"

# p50/p99 (ms) and tps of one pgbench run at 1 client, from its per-transaction log.
latency() { # script pattern label
  local dir="$WORK/log.$RANDOM"
  mkdir -p "$dir"
  chmod 777 "$dir"
  local out
  out=$(pgbench -U hdls_runtime -n -M prepared -c 1 -j 1 -T "$T" -D "pattern=$2" \
    -l --log-prefix="$dir/tx" -f "$1" $DB 2>&1) || { echo "$out" >&2; exit 1; }
  cat "$dir"/tx* | awk '{print $3}' | sort -n | awk -v label="$3" -v tps="$(echo "$out" | grep -E '^tps' | head -1 | awk '{print $3}')" '
    { v[NR] = $1 }
    END { printf "  %-44s p50 %7.3f ms  p99 %7.3f ms  (%s tx/s, n=%d)\n", label,
          v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000, tps, NR }'
  rm -rf "$dir"
}
writes() { # label [script]: create_account's insert at 8 clients, rate and latency percentiles
  local dir="$WORK/log.$RANDOM" out script=${2:-$WORK/insert.sql}
  mkdir -p "$dir"
  chmod 777 "$dir"
  out=$(pgbench -U hdls_runtime -n -M prepared -c 8 -j 2 -T "$T" -l --log-prefix="$dir/tx" \
    -f "$script" $DB 2>&1) || { echo "$out" >&2; exit 1; }
  cat "$dir"/tx* | awk '{print $3}' | sort -n | awk -v label="$1" -v tps="$(echo "$out" | grep -E '^tps' | head -1 | awk '{print $3}')" '
    { v[NR] = $1 }
    END { printf "  %-52s %7.0f tx/s  p50 %.3f ms  p99 %.3f ms\n", label, tps,
          v[int(NR * 0.50) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000 }'
  rm -rf "$dir"
}
reads() {
  latency "$WORK/search.sql" '%cme Rob%' 'search_accounts "cme Rob"'
  latency "$WORK/search.sql" '%grove Rob%' 'search_accounts "grove Rob" (sorts last)'
  latency "$WORK/search.sql" '%zzqx%' 'search_accounts "zzqx" (no match)'
  latency "$WORK/search.sql" '%Acme%' 'search_accounts "Acme" (1 in 40)'
  latency "$WORK/records.sql" '%cme Rob%' 'query_records name ilike "%cme Rob%"'
  latency "$WORK/records.sql" '%zzqx%' 'query_records name ilike "%zzqx%"'
}
INDEXES=$(SU -At -c "SELECT string_agg(format('%I.%I', schemaname, indexname), ', ') FROM pg_indexes WHERE indexname LIKE '%\_trgm'")
SIZE=$(SU -At -c "SELECT pg_size_pretty(sum(pg_relation_size(format('%I.%I', schemaname, indexname)::regclass))) FROM pg_indexes WHERE tablename = 'accounts' AND indexname LIKE '%\_trgm'")
echo "phase 1: V18 trigram indexes, LIKE/ILIKE leakproof (as hdls setup + migrate leave it); accounts' trigram indexes: $SIZE"
reads
echo "phase 2: same indexes, LIKE/ILIKE not leakproof (RLS keeps the ILIKE out of the index scan)"
SU -c "ALTER FUNCTION pg_catalog.textlike(text, text) NOT LEAKPROOF; ALTER FUNCTION pg_catalog.texticlike(text, text) NOT LEAKPROOF;"
reads
SU -c "ALTER FUNCTION pg_catalog.textlike(text, text) LEAKPROOF; ALTER FUNCTION pg_catalog.texticlike(text, text) LEAKPROOF;"
echo "phase 3: V18 indexes dropped ($INDEXES)"
SU -c "DROP INDEX $INDEXES"
reads
echo "write cost of crm.accounts' two trigram indexes (8 clients; random md5 names, so many distinct trigrams):"
both() { # state
  writes "round $1 $2"
  writes "round $1 $2, synchronous_commit off" "$WORK/insert_async.sql"
}
both 1 "without the indexes"
ACCOUNT_INDEXES="CREATE INDEX accounts_name_trgm ON crm.accounts USING gin (workspace_id, name hdls_ext.gin_trgm_ops);
  CREATE INDEX accounts_domain_trgm ON crm.accounts USING gin (workspace_id, domain hdls_ext.gin_trgm_ops);"
SU -c "SET maintenance_work_mem = '256MB'" -c "$ACCOUNT_INDEXES" -c "VACUUM ANALYZE crm.accounts"
both 1 "with the indexes"
SU -c "DROP INDEX crm.accounts_name_trgm, crm.accounts_domain_trgm" -c "VACUUM ANALYZE crm.accounts"
both 2 "without the indexes"
SU -c "SET maintenance_work_mem = '256MB'" -c "$ACCOUNT_INDEXES" -c "VACUUM ANALYZE crm.accounts"
both 2 "with the indexes"
