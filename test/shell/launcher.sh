#!/usr/bin/env bash
# checks: 31 (test/run fails when a different number of checks ran)
# The launcher: with the library preloaded and no worker setting at all,
# every database where the extension exists gets its workers, found at
# start and learnt of afterwards; statements that need a database to
# themselves work without FORCE while its workers run; template databases,
# databases closed to connections and databases without the extension get
# none; eventsourced.worker_databases restricts; a shortage of worker slots
# is reported.  Runs its own cluster on port PGPORT + 9 (its settings differ
# from the suite's), restarted with other settings as it goes.  Waits are
# bounded (generous limits), never timed.  Uses PGPORT and ES_PGBIN.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cluster.sh"
work=$(mktemp -d /tmp/es_launcher.XXXXXX)
chmod 755 "$work"
trap 'es_cluster_stop "$work"; rm -rf "$work"' EXIT
export PGHOST=$work PGPORT=$((PGPORT + 9)) PGUSER=postgres
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
# wait_in DB SQL EXPECTED: poll (at most 30 s) until SQL returns EXPECTED; prints the last result
wait_in() {
    local got="" i
    for i in $(seq 1 300); do
        got=$(q "$1" "$2" 2>/dev/null)
        [ "$got" = "$3" ] && break
        sleep 0.1
    done
    echo "$got"
}
wait_for() { wait_in postgres "$1" "$2"; }
# workers DB: "notifiers workers" connected to DB, e.g. "1 1"
workers_sql() {
    echo "SELECT count(*) FILTER (WHERE backend_type = 'eventsourced notifier') || ' ' ||
                 count(*) FILTER (WHERE backend_type = 'eventsourced worker')
            FROM pg_stat_activity WHERE datname = '$1'"
}
workers() { wait_for "$(workers_sql "$1")" "$2"; }
# restart with the given extra settings (the cluster's own postgresql.conf plus these)
restart() {
    es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1
    printf '%s\n' "$@" | es_as_owner tee "$work/data/postgresql.auto.conf" >/dev/null
    es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null ||
        { echo "not ok - restart"; tail -20 "$work/server.log"; }
}
projection() {  # a projection in DB whose handler counts the events it sees (sleeping SECS each)
    q "$1" "CREATE TABLE seen (pos bigint);
            CREATE FUNCTION see(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
            RETURNS void LANGUAGE sql AS 'INSERT INTO seen VALUES (pos); SELECT pg_sleep((payload->>''sleep'')::float)';
            SELECT eventsourced.create_projection('p', 'thing', 'see(text,bigint,text,jsonb,bigint)')" >/dev/null
}

es_cluster_start "$work" "$PGPORT" "shared_preload_libraries = 'eventsourced'" \
    "eventsourced.worker_naptime = '200ms'" || { echo "not ok - cluster start"; exit 1; }
check "the launcher runs without any worker setting" \
      "$(wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'eventsourced launcher'" 1)" "1"

# A database created after start gets its workers once the extension is created there.
createdb l_plain
createdb l_app
check "no worker before the extension exists" "$(workers l_app "0 0")" "0 0"
q l_app "CREATE EXTENSION eventsourced" >/dev/null
check "CREATE EXTENSION in a new database: its notifier and worker start" "$(workers l_app "1 1")" "1 1"
projection l_app
q l_app "SELECT eventsourced.append('thing', 't1', NULL, 'E', '{\"sleep\": 0}')" >/dev/null
check "its worker applies appends to projections" "$(wait_in l_app "SELECT count(*) FROM seen" 1)" "1"
check "a database without the extension has no worker (its probe left)" "$(workers l_plain "0 0")" "0 0"

# DROP EXTENSION releases the workers; CREATE EXTENSION brings them back.
q l_app "DROP EXTENSION eventsourced CASCADE" >/dev/null
check "DROP EXTENSION releases the workers" "$(workers l_app "0 0")" "0 0"
q l_app "DROP TABLE seen; DROP FUNCTION see; CREATE EXTENSION eventsourced" >/dev/null
projection l_app
check "CREATE EXTENSION again: the workers are back" "$(workers l_app "1 1")" "1 1"

# Statements that need a database to themselves work without FORCE while its workers run.
check "CREATE DATABASE ... TEMPLATE of a served database works" \
      "$(q postgres "CREATE DATABASE l_copy TEMPLATE l_app" 2>&1 && echo done)" "done"
check "the copy came with the extension: it gets its workers" "$(workers l_copy "1 1")" "1 1"
check "the template's workers come back" "$(workers l_app "1 1")" "1 1"
check "ALTER DATABASE ... RENAME of a served database works" \
      "$(q postgres "ALTER DATABASE l_copy RENAME TO l_renamed" 2>&1 && echo done)" "done"
check "the renamed database gets its workers back" "$(workers l_renamed "1 1")" "1 1"
mkdir "$work/ts" && chown postgres: "$work/ts" 2>/dev/null
q postgres "CREATE TABLESPACE l_ts LOCATION '$work/ts'" >/dev/null
check "ALTER DATABASE ... SET TABLESPACE of a served database works, and the workers come back" \
      "$(q postgres "ALTER DATABASE l_renamed SET TABLESPACE l_ts" 2>&1 && workers l_renamed "1 1")" "1 1"
# its worker busy in a slow handler when the DROP comes
q l_renamed "SELECT eventsourced.append('thing', 't2', NULL, 'E', '{\"sleep\": 60}')" >/dev/null
busy=$(wait_for "SELECT count(*) FROM pg_stat_activity WHERE datname = 'l_renamed' AND backend_type = 'eventsourced worker' AND state = 'active'" 1)
check "DROP DATABASE works while its worker runs a handler" \
      "$(q postgres "DROP DATABASE l_renamed" 2>&1 && echo "done $busy")" "done 1"

# A role that may not drop a database cannot make its workers leave.
notifier_pid() { q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'eventsourced notifier' AND datname = '$1'"; }
# A DROP EXTENSION rolled back to a savepoint changes nothing: the same
# workers go on.  (The launcher takes requests in order: once a later
# database has its workers, any restart the rollback caused would show.)
before=$(notifier_pid l_app)
q l_app "BEGIN; SAVEPOINT s; DROP EXTENSION eventsourced CASCADE; ROLLBACK TO s; COMMIT" >/dev/null
createdb l_later
q l_later "CREATE EXTENSION eventsourced" >/dev/null
check "a DROP EXTENSION rolled back to a savepoint leaves the workers alone" \
      "$(workers l_later "1 1") $(notifier_pid l_app)" "1 1 $before"
dropdb l_later
q postgres "CREATE ROLE l_nobody LOGIN CREATEDB" >/dev/null
before=$(notifier_pid l_app)
refused=$(psql -X -q -t -A -v VERBOSITY=sqlstate -U l_nobody -d postgres -c "DROP DATABASE l_app" 2>&1)
refused+=" "$(psql -X -q -t -A -v VERBOSITY=sqlstate -U l_nobody -d postgres -c "CREATE DATABASE l_nope TEMPLATE l_app" 2>&1)
sleep 0.5
check "another role's DROP DATABASE / CREATE DATABASE TEMPLATE is refused" "$refused" "ERROR:  42501 ERROR:  42501"
check "and the workers stayed" "$(notifier_pid l_app)" "$before"

# A launcher that is terminated is started again; it stops the workers its
# predecessor left, so each database still has one notifier and one worker.
launcher=$(q postgres "SELECT pid FROM pg_stat_activity WHERE backend_type = 'eventsourced launcher'")
q postgres "SELECT pg_terminate_backend($launcher)" >/dev/null
check "a terminated launcher is started again" \
      "$(wait_for "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'eventsourced launcher' AND pid <> $launcher" 1)" "1"
check "after it, the database has one notifier and one worker, new ones" \
      "$(workers l_app "1 1") $(wait_for "SELECT count(*) FROM pg_stat_activity WHERE datname = 'l_app' AND backend_type = 'eventsourced notifier' AND pid <> $before" 1)" "1 1 1"

# Templates and databases closed to connections get none.
q postgres "ALTER DATABASE l_app WITH ALLOW_CONNECTIONS false" >/dev/null
check "a database closed to connections loses its workers" "$(workers l_app "0 0")" "0 0"
q postgres "ALTER DATABASE l_app WITH ALLOW_CONNECTIONS true" >/dev/null
check "opened again, it gets them back" "$(workers l_app "1 1")" "1 1"
q postgres "CREATE DATABASE l_tmpl TEMPLATE l_app" >/dev/null
workers l_tmpl "1 1" >/dev/null
q postgres "ALTER DATABASE l_tmpl IS_TEMPLATE true" >/dev/null
check "a database made a template loses its workers" "$(workers l_tmpl "0 0")" "0 0"
createdb l_two -T l_tmpl
check "a database created from that template gets its workers" "$(workers l_two "1 1")" "1 1"

# A restart finds the databases that have the extension.
restart
check "after a restart, the databases with the extension have their workers" \
      "$(workers l_app "1 1") $(workers l_two "1 1")" "1 1 1 1"
check "the template and the database without the extension have none" \
      "$(workers l_tmpl "0 0") $(workers l_plain "0 0")" "0 0 0 0"
q l_app "SELECT eventsourced.append('thing', 't3', NULL, 'E', '{\"sleep\": 0}')" >/dev/null
check "the restarted worker applies appends" "$(wait_in l_app "SELECT count(*) FROM seen" 1)" "1"

# eventsourced.worker_databases restricts.
restart "eventsourced.worker_databases = 'l_two'"
check "a listed database has its workers" "$(workers l_two "1 1")" "1 1"
check "an unlisted database with the extension has none" "$(workers l_app "0 0")" "0 0"
createdb l_three -T l_tmpl
# the launcher acts on requests in order: once l_two, dropped and created
# again after l_three, has its workers, l_three was looked at
q postgres "DROP DATABASE l_two" >/dev/null
createdb l_two -T l_tmpl
workers l_two "1 1" >/dev/null
check "a new unlisted database with the extension gets none" "$(workers l_three "0 0")" "0 0"

# A list that does not parse keeps the server from starting, with the reason.
es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1
echo "eventsourced.worker_databases = 'a,,b'" | es_as_owner tee "$work/data/postgresql.auto.conf" >/dev/null
es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 20 start >/dev/null 2>&1
check "a bad eventsourced.worker_databases is refused at start" \
      "$(grep -c 'invalid value for parameter "eventsourced.worker_databases"' "$work/server.log")" "1"

# Too few worker slots: the databases left without workers are named.
restart "max_worker_processes = 4"
named=no
for i in $(seq 1 300); do
    grep -q 'WARNING:  eventsourced: no background worker slot for databases\? .*l_' "$work/server.log" && { named=yes; break; }
    sleep 0.1
done
check "a shortage of worker slots is reported, naming the databases" "$named" "yes"
