#!/usr/bin/env bash
# checks: 34 (test/run fails when a different number of checks ran)
# The background worker (library preloaded, eventsourced.worker_databases =
# 'es_worker_test'): it applies appends to running projections without any
# client call, sends the coalesced notifications, respects error strategies,
# and comes back when the extension and the database are dropped and created
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

# What a LISTENing session prints while another session runs the SQL in $1:
# it listens until the notification of a later sentinel event (type
# "sentinel", or "any type" at or past its position) arrives, at most 30 s;
# the sentinel's own notification is left out.
notifications_during() {
    local line out="" got="" pos i
    coproc LISTENER { psql -X -q -t -A -d $db 2>&1; }
    echo "LISTEN eventsourced; SELECT 'listening';" >&"${LISTENER[1]}"
    while read -r -t 30 -u "${LISTENER[0]}" line && [ "$line" != listening ]; do :; done
    psql -X -q -d $db -c "$1" >/dev/null
    q "SELECT eventsourced.append('sentinel', 's', NULL, 'E', '{}')" >/dev/null
    pos=$(q "SELECT max(position) FROM eventsourced.events WHERE entity_type = 'sentinel'")
    for i in $(seq 1 300); do
        echo "SELECT 1;" >&"${LISTENER[1]}"
        while read -r -t 0.1 -u "${LISTENER[0]}" line; do
            [ "$line" = 1 ] && continue
            if [[ $line =~ \"position\":\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -ge "${pos:-0}" ]; then
                got=yes
            else
                out+="$line"$'\n'
            fi
        done
        [ -n "$got" ] && break
    done
    echo '\q' >&"${LISTENER[1]}"
    wait "$LISTENER_PID" 2>/dev/null
    printf '%s' "$out"
}

# Notifications come from the worker, coalesced: one per type per transaction.
out=$(notifications_during "BEGIN; SELECT eventsourced.append('counter', 'n1', NULL, 'Increased', '{\"n\": 0}'); SELECT eventsourced.append('counter', 'n2', NULL, 'Increased', '{\"n\": 0}'); SELECT eventsourced.append('other', 'o1', NULL, 'X', '{}'); COMMIT;")
workers=$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'eventsourced notifier' AND datname = '$db'")
check "one notification for each type of the transaction" \
      "$(echo "$out" | grep -c 'Asynchronous notification "eventsourced"')" "2"
check "notification names the type" \
      "$(echo "$out" | grep -c 'payload "{"entity_type": "other", "position": ')" "1"
sender=$(echo "$out" | grep -o 'server process with PID [0-9]*' | head -1 | awk '{print $NF}')
check "notifications are sent by the notifier" \
      "$(for p in $workers; do [ "$p" = "$sender" ] && echo yes; done)" "yes"

# More than 16 types in one transaction: 16 by name and one for "any type".
out=$(notifications_during "SELECT count(eventsourced.append('many' || g, 'm', NULL, 'E', '{}')) FROM generate_series(1, 20) g")
check "20 types in one transaction: 17 notifications" \
      "$(echo "$out" | grep -c 'Asynchronous notification "eventsourced"')" "17"
check "one of them for any type, at the transaction's highest position" \
      "$(echo "$out" | grep -c "payload \"{\"entity_type\": null, \"position\": $(q "SELECT max(position) FROM eventsourced.events WHERE entity_type LIKE 'many%'")}\"")" "1"

# The shared table of (database, type) pairs frees idle entries: after more
# types than it holds (1,024), each appended in a transaction of its own, a
# new type is still notified by name (it used to be "any type" until a restart).
for i in $(seq 1 1100); do
    echo "SELECT eventsourced.append('many_$i', 'm', NULL, 'E', '{}');"
done | psql -X -q -d $db >/dev/null
named=no
for attempt in $(seq 1 15); do
    out=$(notifications_during "SELECT eventsourced.append('fresh_$attempt', 'f', NULL, 'E', '{}')")
    if echo "$out" | grep -q "\"entity_type\": \"fresh_$attempt\""; then named=yes; break; fi
done
check "after 1,100 types, a new type is still notified by name" "$named" "yes"

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

# Dropping and re-creating the database (no FORCE needed: the workers
# leave first): the worker comes back.
psql -X -q -d postgres -c "DROP DATABASE $db" >/dev/null
createdb $db
setup_db
check "worker reconnects to a re-created database" "$(worker_connected)" "t"
q "SELECT eventsourced.append('counter', 'c1', NULL, 'Increased', '{\"n\": 11}')" >/dev/null
check "worker applies appends in the re-created database" "$(wait_for "SELECT sum(n) FROM totals" 11)" "11"

# The escalation of issue 10, through the worker: a role that may create
# projections plants a temporary table with a trigger for the superuser's
# projection to write into.  Handlers run restricted: the plant fails.
psql -X -q -d postgres -c "DROP ROLE IF EXISTS es_w_app" >/dev/null 2>&1
q "CREATE ROLE es_w_app" >/dev/null
q "CREATE SCHEMA es_w_app AUTHORIZATION es_w_app" >/dev/null
q "GRANT USAGE ON SCHEMA eventsourced TO es_w_app" >/dev/null
q "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA eventsourced TO es_w_app" >/dev/null
q "GRANT SELECT ON eventsourced.events TO es_w_app" >/dev/null
q "SET ROLE es_w_app;
   CREATE FUNCTION es_w_app.pwn() RETURNS trigger LANGUAGE plpgsql AS \$\$
   BEGIN ALTER ROLE es_w_app SUPERUSER; RETURN NEW; END \$\$;
   CREATE FUNCTION es_w_app.plant(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE plpgsql AS \$\$
   BEGIN
     CREATE TEMP TABLE IF NOT EXISTS audit_totals (n int);
     CREATE TRIGGER t BEFORE INSERT ON audit_totals FOR EACH ROW EXECUTE FUNCTION es_w_app.pwn();
   END \$\$;
   SELECT eventsourced.create_projection('a_evil', 'esc', 'es_w_app.plant(text,bigint,text,jsonb,bigint)')" >/dev/null
q "CREATE TABLE public.audit_totals (n int)" >/dev/null
q "CREATE FUNCTION count_all(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO audit_totals VALUES (1)'" >/dev/null
q "SELECT eventsourced.create_projection('z_admin', 'esc', 'count_all(text,bigint,text,jsonb,bigint)')" >/dev/null
q "SELECT eventsourced.append('esc', 'e1', NULL, 'E', '{}')" >/dev/null
check "the superuser's projection applies the event" "$(wait_for "SELECT count(*) FROM public.audit_totals" 1)" "1"
check "the attacker's projection fails: no temporary table in a handler" \
      "$(wait_for "SELECT last_error FROM eventsourced.projections WHERE name = 'a_evil'" \
        "cannot create temporary table within security-restricted operation (SQLSTATE 42501)")" \
      "cannot create temporary table within security-restricted operation (SQLSTATE 42501)"
check "the attacker did not become superuser" "$(q "SELECT rolsuper FROM pg_roles WHERE rolname = 'es_w_app'")" "f"
q "SELECT eventsourced.drop_projection('a_evil'); SELECT eventsourced.drop_projection('z_admin')" >/dev/null

# A slow projection delays neither notifications nor other projections.
q "CREATE TABLE fast_seen (pos bigint)" >/dev/null
q "CREATE FUNCTION slow(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'SELECT pg_sleep(2)'" >/dev/null
q "CREATE FUNCTION fast(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO fast_seen VALUES (pos)'" >/dev/null
q "SELECT eventsourced.create_projection('a_slow', 'slow', 'slow(text,bigint,text,jsonb,bigint)')" >/dev/null
q "SELECT eventsourced.create_projection('b_fast', 'fast', 'fast(text,bigint,text,jsonb,bigint)')" >/dev/null
wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'eventsourced worker' AND datname = '$db' AND state = 'idle'" 1 >/dev/null
slow_done="SELECT checkpoint >= (SELECT max(position) FROM eventsourced.events WHERE entity_type = 'slow') FROM eventsourced.projections WHERE name = 'a_slow'"
script=$(mktemp /tmp/es_worker_listen.XXXXXX)
{
    echo "LISTEN eventsourced;"
    echo "SELECT eventsourced.append('slow', 's' || g, NULL, 'E', '{}') FROM generate_series(1, 3) g;"
    # wait (bounded) until the worker is inside the slow projection's handler
    echo "DO \$\$ BEGIN FOR i IN 1..600 LOOP
            PERFORM pg_stat_clear_snapshot();
            EXIT WHEN EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'eventsourced worker'
                              AND datname = current_database() AND query = 'a_slow' AND state = 'active');
            PERFORM pg_sleep(0.05);
          END LOOP; END \$\$;"
    echo "SELECT eventsourced.append('fast', 'f1', NULL, 'E', '{}');"
    for i in $(seq 1 60); do
        echo "SELECT pg_sleep(0.25);"
        echo "SELECT 'slow_done=' || ($slow_done);"
        echo "SELECT 'fast_done=' || (count(*) > 0) FROM fast_seen;"
    done
} >"$script"
out=$(psql -X -q -t -A -d $db -f "$script" 2>&1)
rm -f "$script"
notified=$(echo "$out" | grep -n 'notification "eventsourced" with payload "{"entity_type": "fast"' | head -1 | cut -d: -f1)
fast_finished=$(echo "$out" | grep -n 'fast_done=true' | head -1 | cut -d: -f1)
# while_slow LINE: something seen at LINE was followed by a poll where the slow projection was still running
while_slow() { [ -n "$1" ] && echo "$out" | tail -n +"$1" | grep -q 'slow_done=false' && echo yes; }
check "notifications are sent while a slow projection runs" "$(while_slow "$notified")" "yes"
check "another projection catches up while a slow one runs" "$(while_slow "$fast_finished")" "yes"
check "the slow projection finishes too" "$(wait_for "$slow_done" t)" "t"

# Worker hygiene: now() in handlers is the transaction's start, not the
# worker's; the worker's writes reach the statistics (autovacuum).
q "CREATE TABLE w_now (pos bigint, fresh boolean)" >/dev/null
q "CREATE FUNCTION see_now(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS
   'INSERT INTO w_now SELECT pos, now() >= e.recorded_at FROM eventsourced.events e WHERE e.position = pos'" >/dev/null
q "SELECT eventsourced.create_projection('c_now', 'now', 'see_now(text,bigint,text,jsonb,bigint)')" >/dev/null
# Five events, each appended once the worker has applied the one before:
# the worker then applies each as soon as it is woken, without listing the
# projections again (which would set a fresh timestamp by itself).
for i in 1 2 3 4 5; do
    q "SELECT eventsourced.append('now', 'n1', NULL, 'E', '{}')" >/dev/null
    wait_for "SELECT count(*) FROM w_now" $i >/dev/null
done
check "now() in a worker's handler is not frozen" \
      "$(wait_for "SELECT count(*) || ' ' || bool_and(fresh) FROM w_now" "5 true")" "5 true"
check "the worker reports its writes to the statistics" \
      "$(wait_for "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'w_now'" 5)" "5"

# A handler's session-level advisory lock does not outlive its batch in the
# worker's session (restricted operations allow taking one).
q "CREATE FUNCTION lock_it(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'SELECT pg_advisory_lock(4242)'" >/dev/null
q "SELECT eventsourced.create_projection('d_lock', 'lock', 'lock_it(text,bigint,text,jsonb,bigint)')" >/dev/null
q "SELECT eventsourced.append('lock', 'l1', NULL, 'E', '{}')" >/dev/null
check "a projection that takes an advisory lock is applied" \
      "$(wait_for "SELECT events_applied FROM eventsourced.projections WHERE name = 'd_lock'" 1)" "1"
check "its session-level advisory lock is gone after the batch" \
      "$(wait_for "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242" 0)" "0"

# A handler that never returns is cut off by eventsourced.projection_timeout
# and counts as failing on its event (here: skipped); the others go on.
psql -X -q -d postgres -c "ALTER SYSTEM SET eventsourced.projection_timeout = '1s'" -c "SELECT pg_reload_conf()" >/dev/null
q "CREATE FUNCTION forever(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE plpgsql AS 'BEGIN LOOP PERFORM pg_sleep(1); END LOOP; END'" >/dev/null
q "SELECT eventsourced.create_projection('e_forever', 'forever', 'forever(text,bigint,text,jsonb,bigint)', 'skip')" >/dev/null
q "SELECT eventsourced.append('forever', 'x1', NULL, 'E', '{}')" >/dev/null
check "a handler that never returns is cut off and its event skipped" \
      "$(wait_for "SELECT errors || ' ' || (last_error LIKE '%projection_timeout%') FROM eventsourced.projections WHERE name = 'e_forever'" "1 true")" "1 true"
q "SELECT eventsourced.append('fast', 'f2', NULL, 'E', '{}')" >/dev/null
check "the other projections go on" "$(wait_for "SELECT count(*) FROM fast_seen" 2)" "2"
# A handler that catches the cancel and goes on is stopped for good at
# twice the timeout (the worker restarts) and its projection marked failed.
q "CREATE FUNCTION stubborn(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE plpgsql AS
   'BEGIN LOOP BEGIN PERFORM pg_sleep(1000); EXCEPTION WHEN query_canceled THEN NULL; END; END LOOP; END'" >/dev/null
q "SELECT eventsourced.create_projection('f_stubborn', 'stubborn', 'stubborn(text,bigint,text,jsonb,bigint)', 'skip')" >/dev/null
q "SELECT eventsourced.append('stubborn', 'x1', NULL, 'E', '{}')" >/dev/null
check "a handler that ignores the cancel gets its projection marked failed" \
      "$(wait_for "SELECT status || ' ' || (last_error LIKE '%did not stop%') FROM eventsourced.projections WHERE name = 'f_stubborn'" "failed true")" "failed true"
q "SELECT eventsourced.append('fast', 'f3', NULL, 'E', '{}')" >/dev/null
check "the restarted worker goes on with the others" "$(wait_for "SELECT count(*) FROM fast_seen" 3)" "3"
psql -X -q -d postgres -c "ALTER SYSTEM RESET eventsourced.projection_timeout" -c "SELECT pg_reload_conf()" >/dev/null

# A projection whose handler's owner lost EXECUTE is marked failed, with the
# error, once it has failed its checks for a while (10 s); the worker then
# no longer fails on it on every pass; after a GRANT, reset_projection()
# resumes it.
q "SET ROLE es_w_app;
   CREATE TABLE es_w_app.seen (pos bigint);
   CREATE FUNCTION es_w_app.note(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO es_w_app.seen VALUES (pos)';
   SELECT eventsourced.create_projection('g_revoked', 'revoked', 'es_w_app.note(text,bigint,text,jsonb,bigint)');
   REVOKE ALL ON FUNCTION es_w_app.note(text,bigint,text,jsonb,bigint) FROM PUBLIC, es_w_app" >/dev/null
log_errors() { grep -c 'ERROR:  role "es_w_app" that owns handler es_w_app.note(.*may not execute it' "$PGHOST/server.log"; }
warned() { grep -c 'WARNING:  projection "g_revoked" is marked failed: it can no longer run' "$PGHOST/server.log"; }
warned_before=$(warned)
q "SELECT eventsourced.append('revoked', 'r1', NULL, 'E', '{}')" >/dev/null
check "a projection whose handler lost EXECUTE is marked failed with the error" \
      "$(wait_for "SELECT status || ' ' || (last_error LIKE '%that owns handler es_w_app.note(%may not execute it (SQLSTATE 42501)') FROM eventsourced.projections WHERE name = 'g_revoked'" "failed true")" "failed true"
at_mark=$(log_errors)
for i in 1 2 3; do
    q "SELECT eventsourced.append('revoked', 'r1', NULL, 'E', '{}'); SELECT eventsourced.append('fast', 'g$i', NULL, 'E', '{}')" >/dev/null
    wait_for "SELECT count(*) FROM fast_seen" $((3 + i)) >/dev/null
done
check "once marked failed, the worker no longer fails on it" "$(( $(log_errors) - at_mark ))" "0"
check "the worker said so once" "$(( $(warned) - warned_before ))" "1"
q "GRANT EXECUTE ON FUNCTION es_w_app.note(text,bigint,text,jsonb,bigint) TO es_w_app" >/dev/null
q "SELECT eventsourced.reset_projection('g_revoked', 0)" >/dev/null
check "after a GRANT, reset_projection resumes it" \
      "$(wait_for "SELECT count(*) FROM es_w_app.seen" 4)" "4"

# A handler dropped and created again a moment later (two statements) does
# not get its projection marked failed: the worker fails on it meanwhile,
# then applies the event.
fast_errors() { grep -c 'eventsourced worker running projection "b_fast"' "$PGHOST/server.log"; }
before=$(fast_errors)
q "DROP FUNCTION fast(text,bigint,text,jsonb,bigint)" >/dev/null
q "SELECT eventsourced.append('fast', 'g4', NULL, 'E', '{}')" >/dev/null
for i in $(seq 1 300); do [ "$(fast_errors)" -gt "$before" ] && break; sleep 0.1; done
q "CREATE FUNCTION fast(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO fast_seen VALUES (pos)'" >/dev/null
q "SELECT eventsourced.append('fast', 'g5', NULL, 'E', '{}')" >/dev/null
check "a handler created again at once: its projection goes on" \
      "$(wait_for "SELECT (SELECT count(*) FROM fast_seen) || ' ' || status FROM eventsourced.projections WHERE name = 'b_fast'" "8 running")" "8 running"

# The database's owner cannot make the worker act as another role through
# the database's settings (ALTER DATABASE ... SET role): after the worker
# reconnects, other roles' projections still run.
# (our own sessions override those settings, as any client can)
q "ALTER DATABASE $db OWNER TO es_w_app" >/dev/null
q "SET ROLE es_w_app; ALTER DATABASE $db SET role = 'es_w_app'; ALTER DATABASE $db SET session_authorization = 'es_w_app'" >/dev/null
export PGOPTIONS="-c session_authorization=postgres -c role=none"
psql -X -q -d postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'eventsourced worker' AND datname = '$db'" >/dev/null
q "SELECT eventsourced.append('fast', 'g6', NULL, 'E', '{}')" >/dev/null
check "settings of the database do not make the worker another role" \
      "$(wait_for "SELECT (SELECT count(*) FROM fast_seen) || ' ' || status FROM eventsourced.projections WHERE name = 'b_fast'" "9 running")" "9 running"
unset PGOPTIONS
psql -X -q -d postgres -c "ALTER DATABASE $db RESET ALL" -c "ALTER DATABASE $db OWNER TO postgres" >/dev/null

q "DROP OWNED BY es_w_app" >/dev/null
psql -X -q -d postgres -c "DROP ROLE es_w_app" >/dev/null 2>&1
