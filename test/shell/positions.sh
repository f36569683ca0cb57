#!/usr/bin/env bash
# checks: 14 (test/run fails when a different number of checks ran)
# Positions handed out in blocks from shared memory (library preloaded):
# they grow in the order appends draw them, stay above every stored one
# after a crash and a restart, start again after DROP/CREATE EXTENSION or
# TRUNCATE + RESTART, and each database has its own.  Crashes and restarts
# the cluster at PGHOST (its data directory is $PGHOST/data) and leaves it
# running.  Uses PGHOST/PGPORT/PGUSER.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cluster.sh"
db=es_positions
db2=es_positions2
tmpl=es_positions_tmpl
clone=es_positions_clone
work=$(mktemp -d /tmp/es_positions.XXXXXX)
chmod 755 "$work"
trap 'for d in $db $db2 $clone $tmpl; do dropdb --if-exists $d; done; rm -rf "$work"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
restart() {   # restart MODE: fast or immediate (a crash)
    es_as_owner "$ES_PGBIN/pg_ctl" -D "$PGHOST/data" -m "$1" -w stop >/dev/null
    es_as_owner "$ES_PGBIN/pg_ctl" -D "$PGHOST/data" -l "$PGHOST/server.log" -w start >/dev/null
}
maxpos="SELECT coalesce(max(position), 0) FROM eventsourced.events"

for d in $db $db2; do
    dropdb --if-exists $d >/dev/null 2>&1
    createdb $d && q $d "CREATE EXTENSION eventsourced" >/dev/null
done

# Concurrent appenders: 4 clients, single events and batches, many blocks.
cat >"$work/append.sql" <<'SQL'
\set e random(1, 50)
\set n random(1, 40)
SELECT eventsourced.append('pos', :e::text, NULL,
    (SELECT array_agg(eventsourced.event('E', '{}')) FROM generate_series(1, :n)));
SQL
pgbench -n -c 4 -j 2 -t 300 -f "$work/append.sql" $db >"$work/pgbench.log" 2>&1 ||
    { echo "not ok - concurrent appends"; cat "$work/pgbench.log"; }
check "concurrent appends get distinct positions" \
      "$(q $db "SELECT count(*) = count(DISTINCT position) AND count(*) > 2048 FROM eventsourced.events")" "t"
check "an entity's positions grow with its seq_nos" \
      "$(q $db "SELECT count(*) FROM (SELECT position < lag(position) OVER w AS back
                  FROM eventsourced.events WINDOW w AS (PARTITION BY entity_id ORDER BY seq_no)) x
                 WHERE back")" "0"
check "the sequence is at or above every position handed out" \
      "$(q $db "SELECT last_value >= ($maxpos) FROM eventsourced.events_position_seq")" "t"
check "the feed pages through every event exactly once" \
      "$(q $db "WITH RECURSIVE page(after, n) AS (
                    SELECT 0::bigint, 0::bigint
                  UNION ALL
                    SELECT (SELECT max(position) FROM eventsourced.read_all(after, 500)),
                           n + (SELECT count(*) FROM eventsourced.read_all(after, 500))
                      FROM page WHERE after < ($maxpos))
                SELECT max(n) = (SELECT count(*) FROM eventsourced.events) FROM page")" "t"

# A reader following the feed while transactions of two appends each commit
# out of order (pauses between their appends) receives every event exactly
# once; it stops at the first empty page after the appenders are done.
q $db "CREATE TABLE seen (position bigint);
       CREATE TABLE appenders_done ();
       CREATE FUNCTION follow(after bigint) RETURNS void LANGUAGE plpgsql AS \$\$
       DECLARE
         got bigint;
         deadline timestamptz := clock_timestamp() + interval '2 minutes';
       BEGIN
         LOOP
           WITH ins AS (INSERT INTO seen SELECT position FROM eventsourced.read_all(after, 500)
                        RETURNING position)
           SELECT max(position) INTO got FROM ins;
           EXIT WHEN got IS NULL AND EXISTS (TABLE appenders_done);
           EXIT WHEN clock_timestamp() > deadline;
           IF got IS NULL THEN PERFORM pg_sleep(0.001); ELSE after := got; END IF;
         END LOOP;
       END \$\$" >/dev/null
cat >"$work/pairs.sql" <<'SQL'
\set e random(1, 200)
\set p random(0, 3)
BEGIN;
SELECT eventsourced.append('soak', :e::text, NULL, 'E', '{}');
\sleep :p ms
SELECT eventsourced.append('soak', (:e + 200)::text, NULL, 'E', '{}');
COMMIT;
SQL
start=$(q $db "$maxpos")
q $db "SELECT follow($start)" >/dev/null &
reader=$!
pgbench -n -c 6 -j 2 -T 3 -f "$work/pairs.sql" $db >"$work/pairs.log" 2>&1 ||
    { echo "not ok - out-of-order appends"; cat "$work/pairs.log"; }
q $db "INSERT INTO appenders_done DEFAULT VALUES" >/dev/null
wait $reader
check "a reader following the feed gets every event exactly once" \
      "$(q $db "SELECT count(*) = count(DISTINCT position) AND count(*) > 1000
                   AND count(*) = (SELECT count(*) FROM eventsourced.events WHERE position > $start)
                   AND NOT EXISTS (SELECT 1 FROM eventsourced.events e WHERE position > $start
                                   AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.position = e.position))
                  FROM seen")" "t"

# A crash loses the shared block; new positions stay above the stored ones,
# also for asynchronously committed events that survived.
q $db "SET synchronous_commit = off; SELECT eventsourced.append('pos', 'crash', NULL, 'E', '{}') FROM generate_series(1, 1500)" >/dev/null
restart immediate
check "after a crash the sequence is at or above every stored position" \
      "$(q $db "SELECT last_value >= ($maxpos) FROM eventsourced.events_position_seq")" "t"
q $db "SELECT eventsourced.append('pos', 'after', 0, 'E', '{}')" >/dev/null
check "after a crash a new position is above every stored one" \
      "$(q $db "SELECT position = ($maxpos) FROM eventsourced.events_by_id('pos', 'after')")" "t"
restart fast
q $db "SELECT eventsourced.append('pos', 'after', 1, 'E', '{}')" >/dev/null
check "after a restart new positions are above every stored one" \
      "$(q $db "SELECT position = ($maxpos) FROM eventsourced.events_by_id('pos', 'after', 2)")" "t"

# A store emptied with TRUNCATE and a restarted sequence starts again at 1.
q $db "ALTER TABLE eventsourced.events DISABLE TRIGGER events_no_truncate;
       TRUNCATE eventsourced.events;
       ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_no_truncate;
       ALTER SEQUENCE eventsourced.events_position_seq RESTART" >/dev/null
q $db "SELECT eventsourced.append('pos', 'fresh', 0, 'E', '{}')" >/dev/null
check "TRUNCATE and RESTART start positions again at 1" "$(q $db "$maxpos")" "1"

# An emptied store and a restarted sequence that roll back leave no block
# behind: appends go on above every stored position, with no duplicate.
q $db "SELECT eventsourced.append('pos', 'fresh', 1, 'E', '{}')" >/dev/null
q $db "SELECT eventsourced.append('pos', 'more', NULL, 'E', '{}') FROM generate_series(1, 1500)" >/dev/null
before=$(q $db "$maxpos")
q $db "BEGIN;
       ALTER TABLE eventsourced.events DISABLE TRIGGER events_no_truncate;
       TRUNCATE eventsourced.events;
       ALTER TABLE eventsourced.events ENABLE ALWAYS TRIGGER events_no_truncate;
       ALTER SEQUENCE eventsourced.events_position_seq RESTART;
       SELECT eventsourced.append('pos', 'gone', 0, 'E', '{}');
       SELECT eventsourced.append('pos', 'gone', 1, 'E', '{}');
       ROLLBACK" >/dev/null
q $db "BEGIN; ALTER SEQUENCE eventsourced.events_position_seq RESTART WITH 1000000;
       SELECT eventsourced.append('pos', 'gone', 0, 'E', '{}'); ROLLBACK" >/dev/null
check "a rolled-back TRUNCATE and RESTART leave positions going up" \
      "$(q $db "SELECT string_agg(eventsourced.append('pos', 'fresh', NULL, 'E', '{}')::text, ',')
                  FROM generate_series(1, 3)") $(q $db "SELECT min(position) > $before AND max(position) < 1000000
                  AND count(*) = 3 FROM eventsourced.events WHERE entity_id = 'fresh' AND seq_no > 2")" "3,4,5 t"

# A re-created extension has a new sequence and starts again at 1.
q $db "DROP EXTENSION eventsourced; CREATE EXTENSION eventsourced" >/dev/null
q $db "SELECT eventsourced.append('pos', 'new', 0, 'E', '{}')" >/dev/null
check "a re-created extension starts positions again at 1" "$(q $db "$maxpos")" "1"

# Each database has its own positions.
q $db2 "SELECT eventsourced.append('pos', 'x', 0, 'E', '{}')" >/dev/null
q $db "SELECT eventsourced.append('pos', 'new', 1, 'E', '{}')" >/dev/null
q $db2 "SELECT eventsourced.append('pos', 'x', 1, 'E', '{}')" >/dev/null
check "each database has its own positions" \
      "$(q $db "SELECT string_agg(position::text, ',' ORDER BY position) FROM eventsourced.events")|$(q $db2 "SELECT string_agg(position::text, ',' ORDER BY position) FROM eventsourced.events")" "1,2|1,2"

# A dropped database's block and cached seq_nos are forgotten: a database
# created later with its OID (and, cloned from the same template, the same
# table and sequence OIDs) starts afresh.
for d in $clone $tmpl; do dropdb --if-exists $d >/dev/null 2>&1; done
createdb $tmpl && q $tmpl "CREATE EXTENSION eventsourced" >/dev/null
createdb -T $tmpl $clone
q $clone "SELECT eventsourced.append('pos', 'c', 0, 'E', '{}')" >/dev/null
oid=$(q postgres "SELECT oid FROM pg_database WHERE datname = '$clone'")
dropdb $clone
q postgres "CREATE DATABASE $clone TEMPLATE $tmpl OID $oid" >/dev/null
q $clone "SELECT eventsourced.append('pos', 'c', 0, 'E', '{}')" >/dev/null
check "a database re-created with a dropped one's OID starts afresh (seq_no 1 at position 1)" "$(q $clone "$maxpos")" "1"

# draw_snapshot_change() (the default of snapshots.change, drawn by the
# 0.5.0 update and by restoring a 0.4.0 dump) draws from the sequence while
# appends draw from blocks: it waits for a refill in progress, so it never
# takes a number that a block hands out again (482 of them did before).
q $db "CREATE TABLE drawn (v bigint)" >/dev/null
echo "INSERT INTO drawn SELECT eventsourced.draw_snapshot_change();" >"$work/draw.sql"
printf '%s\n' '\set e random(1, 50)' "SELECT eventsourced.append('drawn', 'e' || :e, NULL, 'E', '{}');" >"$work/app.sql"
pgbench -n -M prepared -c 6 -j 2 -T 6 -f "$work/draw.sql" -f "$work/app.sql" $db >/dev/null 2>&1
check "numbers drawn by draw_snapshot_change() while appends refill blocks are never handed out again" \
      "$(q $db "SELECT (SELECT count(*) FROM drawn) > 100 AND (SELECT count(*) FROM eventsourced.events WHERE entity_type = 'drawn') > 100")|$(q $db "SELECT count(*) FROM drawn d JOIN eventsourced.events e ON e.position = d.v") $(q $db "SELECT count(*) - count(DISTINCT v) FROM drawn")" \
      "t|0 0"
