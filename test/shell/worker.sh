#!/usr/bin/env bash
# The background worker (library preloaded, eventsourced.worker_databases =
# 'es_worker_test'): it applies appends to running projections without any
# client call, sends the coalesced notifications, respects error strategies,
# and survives the extension and the database being dropped and created
# again.  Waits are bounded (generous limits), never timed.  Uses PGHOST/PGPORT/PGUSER.
set -u
db=es_worker_test
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d $db -c "$1"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
# wait_for SQL EXPECTED: poll (at most 30 s) until SQL returns EXPECTED; prints the last result
wait_for() {
    local got="" i
    for i in $(seq 1 300); do
        got=$(q "$1" 2>/dev/null)
        [ "$got" = "$2" ] && break
        sleep 0.1
    done
    echo "$got"
}
setup_db() {
    q "CREATE EXTENSION IF NOT EXISTS eventsourced" >/dev/null
    q "CREATE TABLE IF NOT EXISTS totals (id text PRIMARY KEY, n bigint NOT NULL)" >/dev/null
    q "CREATE OR REPLACE FUNCTION add_total(entity_id text, seq_no bigint, event_type text,
                                            payload jsonb, pos bigint) RETURNS void
       LANGUAGE plpgsql AS \$\$
       BEGIN
         IF payload ? 'fail' THEN RAISE EXCEPTION 'refused'; END IF;
         INSERT INTO totals VALUES (entity_id, (payload->>'n')::bigint)
         ON CONFLICT (id) DO UPDATE SET n = totals.n + excluded.n;
       END \$\$" >/dev/null
    q "SELECT eventsourced.create_projection('totals', 'counter', 'add_total(text,bigint,text,jsonb,bigint)')" >/dev/null
}
worker_connected() {
    wait_for "SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'eventsourced worker' AND datname = '$db'" t
}

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
createdb $db
setup_db
check "worker connects to its database" "$(worker_connected)" "t"

for i in $(seq 1 50); do
    q "SELECT eventsourced.append('counter', 'c' || ($i % 5), NULL, 'Increased', '{\"n\": $i}')" >/dev/null
done
check "worker applies appends without any client call" \
      "$(wait_for "SELECT sum(n) FROM totals" 1275)" "1275"
check "checkpoint reaches the last event" \
      "$(wait_for "SELECT checkpoint = (SELECT max(position) FROM eventsourced.events) FROM eventsourced.projections" t)" "t"

# What a LISTENing session prints while another session runs the SQL in $1.
notifications_during() {
    local sql
    sql=$(mktemp /tmp/es_worker_sql.XXXXXX)
    printf '%s\n' "$1" >"$sql"
    psql -X -q -d $db 2>&1 <<SQL
LISTEN eventsourced;
\! psql -X -q -d $db -f $sql >/dev/null
SELECT pg_sleep(1);
SELECT 1;
SQL
    rm -f "$sql"
}

# Notifications come from the worker, coalesced: one per type per transaction.
out=$(notifications_during "BEGIN; SELECT eventsourced.append('counter', 'n1', NULL, 'Increased', '{\"n\": 0}'); SELECT eventsourced.append('counter', 'n2', NULL, 'Increased', '{\"n\": 0}'); SELECT eventsourced.append('other', 'o1', NULL, 'X', '{}'); COMMIT;")
workers=$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'eventsourced worker' AND datname = '$db'")
check "one notification for each type of the transaction" \
      "$(echo "$out" | grep -c 'Asynchronous notification "eventsourced"')" "2"
check "notification names the type" \
      "$(echo "$out" | grep -c 'payload "{"entity_type": "other", "position": ')" "1"
sender=$(echo "$out" | grep -o 'server process with PID [0-9]*' | head -1 | awk '{print $NF}')
check "notifications are sent by the worker" \
      "$(for p in $workers; do [ "$p" = "$sender" ] && echo yes; done)" "yes"

# More than 16 types in one transaction: 16 by name and one for "any type".
out=$(notifications_during "SELECT count(eventsourced.append('many' || g, 'm', NULL, 'E', '{}')) FROM generate_series(1, 20) g")
check "20 types in one transaction: 17 notifications" \
      "$(echo "$out" | grep -c 'Asynchronous notification "eventsourced"')" "17"
check "one of them for any type, at the transaction's highest position" \
      "$(echo "$out" | grep -c "payload \"{\"entity_type\": null, \"position\": $(q "SELECT max(position) FROM eventsourced.events")}\"")" "1"

# Error strategy 'stop' is respected: the worker stops the projection at the failing event.
q "SELECT eventsourced.append('counter', 'bad', NULL, 'Increased', '{\"n\": 1, \"fail\": true}')" >/dev/null
q "SELECT eventsourced.append('counter', 'c0', NULL, 'Increased', '{\"n\": 1000}')" >/dev/null
check "worker stops a failing 'stop' projection" \
      "$(wait_for "SELECT status FROM eventsourced.projections" failed)" "failed"
check "checkpoint stays before the failing event" \
      "$(q "SELECT checkpoint < (SELECT position FROM eventsourced.events WHERE entity_id = 'bad') FROM eventsourced.projections")" "t"

# Dropping and re-creating the extension: the worker carries on.
q "DROP EXTENSION eventsourced CASCADE" >/dev/null 2>&1
q "DROP TABLE totals" >/dev/null
setup_db
q "SELECT eventsourced.append('counter', 'c1', NULL, 'Increased', '{\"n\": 7}')" >/dev/null
check "worker survives DROP/CREATE EXTENSION" "$(wait_for "SELECT sum(n) FROM totals" 7)" "7"

# Dropping and re-creating the database: the worker reconnects.
psql -X -q -d postgres -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
createdb $db
setup_db
check "worker reconnects to a re-created database" "$(worker_connected)" "t"
q "SELECT eventsourced.append('counter', 'c1', NULL, 'Increased', '{\"n\": 11}')" >/dev/null
check "worker applies appends in the re-created database" "$(wait_for "SELECT sum(n) FROM totals" 11)" "11"
