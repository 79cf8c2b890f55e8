#!/usr/bin/env bash
# Outbox write cost: pgbench runs the insert transaction create_account runs (as
# hdls_runtime, identity stamped with SET LOCAL), with and without the change-event trigger,
# twice each, and prints the rates; compare them within one run. Needs a PostgreSQL server
# where superuser `postgres` connects without a password (PGHOST/PGPORT, default
# 127.0.0.1:5432) and a built hdls (`cargo build --release`, or HDLS_BIN).
#   bash benches/outbox_write_cost.sh
set -euo pipefail
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
DB=hdls_outbox_bench
psql -h "$PGHOST" -p "$PGPORT" -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
BIN=${HDLS_BIN:-target/release/hdls}
$BIN setup --database-url "postgres://postgres@$PGHOST:$PGPORT/$DB" >/dev/null
$BIN migrate --database-url "postgres://postgres@$PGHOST:$PGPORT/$DB" >/dev/null
WS=$($BIN admin workspace create --name bench --json --database-url "postgres://postgres@$PGHOST:$PGPORT/$DB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["workspace_id"])')
cat > /tmp/outbox_insert.sql <<SQL
BEGIN;
SET LOCAL hdls.workspace_id = '$WS';
SET LOCAL hdls.persona = 'agent';
SET LOCAL hdls.call = 'key_00000000000000aa 1764650000000';
INSERT INTO crm.accounts (id, name, domain, custom, created_at, updated_at) VALUES (gen_random_uuid(), 'Bench account', 'bench.example', '{}', now(), now());
COMMIT;
SQL
run() { pgbench -h "$PGHOST" -p "$PGPORT" -U hdls_runtime -n -M prepared -c 8 -j 2 -T 15 -f /tmp/outbox_insert.sql $DB 2>/dev/null | grep -E "^tps" | head -1; }
for round in 1 2; do
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d $DB -qc "ALTER TABLE crm.accounts ENABLE TRIGGER record_change"
  echo "round $round with trigger:    $(run)"
  psql -h "$PGHOST" -p "$PGPORT" -U postgres -d $DB -qc "ALTER TABLE crm.accounts DISABLE TRIGGER record_change"
  echo "round $round without trigger: $(run)"
done
psql -h "$PGHOST" -p "$PGPORT" -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
