#!/usr/bin/env bash
# checks: 6 (test/run fails when a different number of checks ran)
# The model-based test (test/model/model.c): random appends, retries,
# rollbacks, commands, forged snapshots, TRUNCATE of the state cache, purges,
# reads, feed readers and projection runs from several connections, checked
# against an in-memory model.  Three seeds with 4 clients, then one seed with
# a single client twice (a single client replays exactly: both runs must
# print the same counts).  Each run gets a fresh database served by the
# background worker, which runs the projection too.  A failing run prints
# its seed and the command line that replays it.  Uses PGHOST/PGPORT/PGUSER.
# Longer runs: test/model/model --seed N --clients 16 --seconds 600 (see
# README), or test/soak.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
db=es_worker_test
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1' EXIT
fresh_db() {
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    createdb $db && psql -X -q -d $db -c "CREATE EXTENSION eventsourced"
}
# model ARGS...: one run in a fresh database; prints its output, returns its status
model() {
    fresh_db || return 1
    PGDATABASE=$db timeout 300 "$root/test/model/model" "$@"
}

if ! make -s -C "$root/test/model" model >/dev/null; then
    echo "not ok - the model test builds"
    exit 1
fi
for seed in 1 2 3; do
    out=$(model --seed $seed --clients 4 --ops 3000 2>&1)
    rc=$?
    echo "$out" | sed 's/^/# /'
    if [ $rc -eq 0 ] && echo "$out" | grep -q '^model: store equals model'; then
        echo "ok - seed $seed, 4 clients: the store equals the model"
    else
        echo "not ok - seed $seed, 4 clients (exit $rc)"
    fi
done
for run in 1 2; do
    out=$(model --seed 11 --clients 1 --ops 2000 2>&1)
    rc=$?
    echo "$out" | sed 's/^/# /'
    counts[$run]=$(echo "$out" | grep '^model: seed')
    if [ $rc -eq 0 ] && echo "$out" | grep -q '^model: store equals model'; then
        echo "ok - seed 11, 1 client, run $run: the store equals the model"
    else
        echo "not ok - seed 11, 1 client, run $run (exit $rc)"
    fi
done
if [ -n "${counts[1]}" ] && [ "${counts[1]}" = "${counts[2]}" ]; then
    echo "ok - a single-client seed replays the same operations"
else
    echo "not ok - a single-client seed replays the same operations: '${counts[1]}' then '${counts[2]}'"
fi
