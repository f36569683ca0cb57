#!/usr/bin/env bash
# checks: 13 (test/run fails when a different number of checks ran)
# The least-privilege recipe of docs/trust.md, run exactly as written (the
# block between "recipe: begin" and "recipe: end"), then used: the model's
# owner registers its model and runs its projection, the application sends
# commands and reads, and neither the application nor the reader can do more.
# Uses PGHOST/PGPORT/PGUSER.
set -u
here=$(cd "$(dirname "$0")" && pwd)
db=es_recipe
roles="model_owner app reader"
cleanup() {
    psql -X -q -d $db -c "DROP OWNED BY model_owner, app, reader" >/dev/null 2>&1
    dropdb --if-exists $db >/dev/null 2>&1
    for r in $roles; do psql -X -q -d postgres -c "DROP ROLE IF EXISTS $r" >/dev/null 2>&1; done
}
trap cleanup EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d $db -c "$1"; }
# as ROLE SQL: the output, or the SQLSTATE of the error
as() { psql -X -q -t -A -v VERBOSITY=sqlstate -d $db -c "SET ROLE $1; $2" 2>&1; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}

cleanup
createdb $db && q "CREATE EXTENSION eventsourced" >/dev/null
recipe=$(sed -n '/<!-- recipe: begin -->/,/<!-- recipe: end -->/p' "$here/../../docs/trust.md" | sed '/^<!--/d; /^```/d')
check "docs/trust.md has the recipe" "$([ "$(echo "$recipe" | grep -c 'CREATE ROLE')" -eq 3 ] && echo yes)" "yes"
check "the recipe runs as written" \
      "$(psql -X -q -v ON_ERROR_STOP=1 -d $db -c "$recipe" >/dev/null 2>&1 && echo yes)" "yes"

check "the model's owner registers its model" "$(as model_owner "
    SET search_path = model;
    CREATE FUNCTION apply(state jsonb, event_type text, payload jsonb) RETURNS jsonb
        LANGUAGE sql RETURN jsonb_build_object('n', (state->>'n')::int + (payload->>'n')::int);
    CREATE FUNCTION add(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision
        LANGUAGE sql RETURN eventsourced.emit('Added', args);
    CREATE TABLE totals (id text PRIMARY KEY, n int);
    CREATE FUNCTION total(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
        RETURNS void LANGUAGE sql AS
        'INSERT INTO totals VALUES (entity_id, (payload->>''n'')::int)
         ON CONFLICT (id) DO UPDATE SET n = totals.n + excluded.n';
    GRANT SELECT ON totals TO app;
    SELECT eventsourced.register_entity('acc', 'apply(jsonb,text,jsonb)', '{\"n\": 0}');
    SELECT eventsourced.register_command('acc', 'Add', 'add(text,jsonb,jsonb)');
    SELECT eventsourced.create_projection('totals', 'acc', 'total(text,bigint,text,jsonb,bigint)');
    SELECT 'done'" | tail -1)" "done"
check "the application sends commands" \
      "$(as app "SELECT state->>'n' FROM eventsourced.handle_command('acc', 'a1', 'Add', '{\"n\": 5}')")" "5"
check "the application appends and reads the feed" \
      "$(as app "SELECT eventsourced.append('acc', 'a1', 1, 'Added', '{\"n\": 2}');
                 SELECT count(*) FROM eventsourced.events_by_type('acc')" | tail -1)" "2"
check "the model's owner runs its projection" \
      "$(as model_owner "SELECT eventsourced.run_projection('totals')")" "2"
check "the application reads the read model" "$(as app "SELECT n FROM model.totals")" "7"
check "the application cannot register" \
      "$(as app "SELECT eventsourced.register_entity('x', 'model.apply(jsonb,text,jsonb)')")" "ERROR:  42501"
check "the application cannot create projections" \
      "$(as app "SELECT eventsourced.create_projection('x', NULL, 'model.total(text,bigint,text,jsonb,bigint)')")" "ERROR:  42501"
check "the application cannot run the model's projection" \
      "$(as app "SELECT eventsourced.run_projection('totals')")" "ERROR:  42501"
check "the reader reads an entity" \
      "$(as reader "SELECT count(*) FROM eventsourced.events_by_id('acc', 'a1')")" "2"
check "the reader cannot append" \
      "$(as reader "SELECT eventsourced.append('acc', 'a1', 2, 'Added', '{}')")" "ERROR:  42501"
check "the reader cannot send commands" \
      "$(as reader "SELECT eventsourced.handle_command('acc', 'a1', 'Add', '{\"n\": 1}')")" "ERROR:  42501"
