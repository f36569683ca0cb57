#!/usr/bin/env bash
# checks: 13 (test/run fails when a different number of checks ran)
# The projector example (examples/projector) keeps a read model of counter
# totals outside the event store, live and exactly once: it follows appends
# into another database, survives kill -9 and terminated connections, and
# gives up after bounded retries.  Works with or without commit
# notifications (it polls).  Uses PGHOST/PGPORT/PGUSER.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/examples/projector/projector
src=es_proj_src
dst=es_proj_dst
work=$(mktemp -d /tmp/es_proj.XXXXXX)
proj=           # the projector started last

cleanup() {
    local pid
    for pid in $(jobs -p); do kill -9 "$pid" 2>/dev/null; done   # ours, still running
    wait 2>/dev/null
    dropdb --if-exists --force $src 2>/dev/null
    dropdb --if-exists --force $dst 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}

# The totals rebuilt from scratch from the source events of a type.
expected() {
    q $src "SELECT coalesce(string_agg(entity_id || ':' || total || ':' || events, ' '
                                       ORDER BY entity_id COLLATE \"C\"), 'none')
              FROM (SELECT entity_id, count(*) AS events,
                           sum(CASE event_type
                               WHEN 'Increased' THEN (payload->>'n')::bigint
                               WHEN 'Decreased' THEN -(payload->>'n')::bigint
                               ELSE 0 END) AS total
                      FROM eventsourced.events WHERE entity_type = '$1'
                     GROUP BY entity_id) s"
}
# The read model the projector keeps in a database.
actual() {
    q "$1" "SELECT coalesce(string_agg(entity_id || ':' || total || ':' || events, ' '
                                       ORDER BY entity_id COLLATE \"C\"), 'none')
              FROM projector_totals" 2>/dev/null
}
checkpoint() {   # checkpoint DB NAME
    q "$1" "SELECT position FROM projector_checkpoint WHERE name = '$2'" 2>/dev/null
}
last_position() {   # the highest position of a type in the source
    q $src "SELECT max(position) FROM eventsourced.events WHERE entity_type = '$1'"
}
caught_up() { [ "$(actual "$1")" = "$(expected "$2")" ]; }       # caught_up DB TYPE
has_checkpoint() { [ "$(checkpoint "$1" "$2")" -gt 0 ] 2>/dev/null; }
wait_for() {   # wait_for SECONDS CMD...: polls CMD until it succeeds or time is up
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -ge $deadline ] && return 1
        sleep 0.1
    done
}

# appends TYPE FIRST LAST IDS PAUSE: a psql script of transactions i =
# FIRST..LAST, each appending one event to entity e<i % IDS> and sleeping
# PAUSE seconds before it commits.  Run it with "${append[@]}" <<<"...".
appends() {
    cat <<SQL
SELECT format('SELECT eventsourced.append(%L, %L, NULL, %L, %L), pg_sleep(%s)',
              '$1', 'e' || i % $4,
              CASE WHEN i % 10 = 0 THEN 'Noted' WHEN i % 3 = 0 THEN 'Decreased'
                   ELSE 'Increased' END,
              CASE WHEN i % 10 = 0 THEN '{}'
                   ELSE jsonb_build_object('n', i % 23 + 1)::text END,
              $5)
  FROM generate_series($2, $3) i
\gexec
SQL
}
append=(psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d $src)

# start_projector LOG ARGS...: runs the projector in the background; sets $proj.
start_projector() {
    local log=$1
    shift
    "$bin" "$@" >>"$work/$log.out" 2>>"$work/$log.err" &
    proj=$!
}

if ! make -s -C "$root/examples/projector" >"$work/build.log" 2>&1; then
    cat "$work/build.log"
    echo "not ok - projector builds"
    exit 1
fi
echo "ok - projector builds"

dropdb --if-exists --force $src >/dev/null 2>&1; dropdb --if-exists --force $dst >/dev/null 2>&1
createdb $src && q $src "CREATE EXTENSION eventsourced" >/dev/null && createdb $dst || exit 1

# 1. A live total in another database, by polling alone if need be.
live=(--source "dbname=$src" --target "dbname=$dst" --name live --poll-ms 200 --verbose)
start_projector live "${live[@]}"
"${append[@]}" <<<"$(appends counter 1 200 20 0)"
"${append[@]}" <<<"$(appends other 1 50 20 0)"          # same entity ids, another type: not projected
wait_for 20 caught_up $dst counter
check "projector keeps a live total in another database" "$(actual $dst)" "$(expected counter)"
check "checkpoint is the last position of the type" "$(checkpoint $dst live)" "$(last_position counter)"

q $src "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'live' AND pid <> pg_backend_pid()" >/dev/null
"${append[@]}" <<<"$(appends counter 201 300 20 0)"
wait_for 20 caught_up $dst counter
check "projector reconnects after its connections are terminated" \
      "$(actual $dst) $(grep -q reconnecting "$work/live.err" && echo reconnected)" "$(expected counter) reconnected"
check "--verbose prints one line per batch" \
      "$(grep -cvE '^batch [0-9]+: [0-9]+ events, positions [0-9]+\.\.[0-9]+$' "$work/live.out")" "0"
kill -TERM "$proj"
wait "$proj"
check "SIGTERM stops the projector cleanly" "$?" "0"

# 2. kill -9 mid-run, restart, catch up: no event applied twice or missed.
# Two appenders in many small transactions; the target is the source database.
"${append[@]}" <<<"$(appends meter 1 1500 40 0.001)" & app1=$!
"${append[@]}" <<<"$(appends meter 1501 3000 40 0.001)" & app2=$!
meter=(--source "dbname=$src" --target "dbname=$src" --type meter --name kill --batch 7 --poll-ms 50)
start_projector kill "${meter[@]}"
wait_for 20 has_checkpoint $src kill
# kill it mid-run: once its checkpoint has moved again
first=$(checkpoint $src kill)
moved_on() { [ "$(checkpoint $src kill)" -gt "$first" ] 2>/dev/null; }
wait_for 20 moved_on
kill -9 "$proj"
wait "$proj" 2>/dev/null
echo "# killed at checkpoint $(checkpoint $src kill) of $(last_position meter) so far"
start_projector kill "${meter[@]}"
wait "$app1"; rc1=$?
wait "$app2"; rc2=$?
check "3000 appends committed" "$rc1 $rc2 $(q $src "SELECT count(*) FROM eventsourced.events WHERE entity_type = 'meter'")" "0 0 3000"
kill -9 "$proj"
wait "$proj" 2>/dev/null
timeout 60 "$bin" "${meter[@]}" --exit-when-idle >>"$work/kill.out" 2>>"$work/kill.err"
check "--exit-when-idle catches up and exits 0" "$?" "0"
check "read model after kill -9 equals a full rebuild" "$(actual $src)" "$(expected meter)"
check "checkpoint after kill -9 is the last position" "$(checkpoint $src kill)" "$(last_position meter)"

# 3. --max-batches; a read model in its own schema of the target, via search_path.
q $dst "CREATE SCHEMA capped" >/dev/null
timeout 60 "$bin" --source "dbname=$src" --target "dbname=$dst options=-csearch_path=capped" \
    --name capped --batch 10 --max-batches 3 2>>"$work/capped.err"
check "--max-batches 3 applies exactly 3 batches" \
      "$?:$(q $dst "SELECT sum(events) FROM capped.projector_totals")" "0:30"
check "checkpoint after 3 batches is the 30th position" \
      "$(q $dst "SELECT position FROM capped.projector_checkpoint")" \
      "$(q $src "SELECT position FROM eventsourced.events_by_type('counter', 0, 30) ORDER BY position DESC LIMIT 1")"

# 4. An unreachable source: bounded retries, then a non-zero exit.
timeout 60 "$bin" --source "dbname=es_proj_missing" --target "dbname=$dst" --max-retries 2 \
    2>"$work/missing.err"
check "gives up on an unreachable source after bounded retries" \
      "$? $(grep -c 'giving up after 3 consecutive failures' "$work/missing.err")" "1 1"

for log in "$work"/*.err; do
    [ -s "$log" ] && sed "s|^|# $(basename "$log"): |" "$log"
done
exit 0
