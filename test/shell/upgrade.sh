#!/usr/bin/env bash
# checks: 37 (test/run fails when a different number of checks ran)
# ALTER EXTENSION eventsourced UPDATE with data in place.  From 0.1.0 to
# 0.2.0: events, registrations and a projection written as 0.1.0 wrote them
# keep working, registrations get the extension's owner.  From 0.2.0 to
# 0.3.0: a store written by 0.2.0 reads the same feed before (this library
# with 0.2.0's tables) and after the update.  To 0.4.0: projections refuse
# to run until the update (their table changed), then go on, stop and
# start; the lag is in positions.  The upgraded tables, indexes and views
# are the same as a new installation's.  Uses PGHOST/PGPORT/PGUSER.
set -u
db=es_upgrade_test
fresh=es_upgrade_fresh
db2=es_upgrade_020
trap 'dropdb --if-exists $db >/dev/null 2>&1; dropdb --if-exists $fresh >/dev/null 2>&1; dropdb --if-exists $db2 >/dev/null 2>&1; psql -X -q -d postgres -c "DROP ROLE IF EXISTS es_u_app" >/dev/null 2>&1' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "${2:-$db}" -c "$1"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
# The columns of the extension's tables, in order, to compare installations.
shape="SELECT string_agg(c.relname || '.' || a.attname || ':' || format_type(a.atttypid, a.atttypmod)
                         || CASE WHEN a.attnotnull THEN '!' ELSE '' END, ' ' ORDER BY c.relname, a.attnum)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'eventsourced'::regnamespace AND c.relkind IN ('r', 'v')
          AND a.attnum > 0 AND NOT a.attisdropped"
# The indexes and view definitions, to compare installations.
indexes="SELECT string_agg(indexdef, ' ' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'eventsourced'"
views="SELECT string_agg(viewname || ': ' || definition, ' ' ORDER BY viewname) FROM pg_views WHERE schemaname = 'eventsourced'"

dropdb --if-exists $db >/dev/null 2>&1; dropdb --if-exists $fresh >/dev/null 2>&1; dropdb --if-exists $db2 >/dev/null 2>&1
psql -X -q -d postgres -c "DROP ROLE IF EXISTS es_u_app" >/dev/null 2>&1
createdb $db
q "CREATE ROLE es_u_app"
q "CREATE EXTENSION eventsourced VERSION '0.1.0'"
check "0.1.0 is installed" "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'")" "0.1.0"

# Data as 0.1.0 left it: events through append() (its events table is
# unchanged), registrations and a projection as 0.1.0's functions wrote them.
q "CREATE FUNCTION fold(state jsonb, event_type text, payload jsonb) RETURNS jsonb
   LANGUAGE sql RETURN jsonb_build_object('n', (state->>'n')::int + (payload->>'n')::int)" >/dev/null
q "CREATE FUNCTION add(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision
   LANGUAGE sql RETURN eventsourced.emit('Added', args)" >/dev/null
q "CREATE TABLE seen (pos bigint, who text)" >/dev/null
q "GRANT INSERT ON seen TO es_u_app" >/dev/null
q "CREATE SCHEMA u AUTHORIZATION es_u_app" >/dev/null
q "SET ROLE es_u_app; CREATE FUNCTION u.see(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO public.seen VALUES (pos, current_user)'" >/dev/null
q "CREATE FUNCTION public.see_su(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO public.seen VALUES (pos, current_user)'" >/dev/null
q "SELECT eventsourced.append('acc', 'a1', NULL, 'Added', jsonb_build_object('n', i)) FROM generate_series(1, 3) i" >/dev/null
q "INSERT INTO eventsourced.entity_types (entity_type, event_handler, event_handler_hash, initial_state, snapshot_after, generation)
   VALUES ('acc', 'public.fold(pg_catalog.jsonb,pg_catalog.text,pg_catalog.jsonb)', 1, '{\"n\": 0}', 2,
           nextval('eventsourced.generation_seq'))" >/dev/null
q "INSERT INTO eventsourced.commands VALUES ('acc', 'Add', 'public.add(pg_catalog.text,pg_catalog.jsonb,pg_catalog.jsonb)')" >/dev/null
q "INSERT INTO eventsourced.projection_state (name, entity_type, handler, error_strategy, owner)
   VALUES ('seen', 'acc', 'u.see(text,bigint,text,jsonb,bigint)', 'stop', 'es_u_app'),
          ('seen_su', 'acc', 'public.see_su(text,bigint,text,jsonb,bigint)', 'stop', 'es_u_app')" >/dev/null
check "this library refuses 0.1.0's registration tables with a clear error" \
      "$(psql -X -q -t -A -d $db -v VERBOSITY=verbose -c "SELECT eventsourced.register_entity('x', 'fold(jsonb,text,jsonb)')" 2>&1 | grep -o '55000\|ALTER EXTENSION eventsourced UPDATE' | sort -u | tr '\n' ' ')" \
      "55000 ALTER EXTENSION eventsourced UPDATE "

q "ALTER EXTENSION eventsourced UPDATE TO '0.2.0'"
check "the update reaches 0.2.0" "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'")" "0.2.0"
check "registrations get the extension's owner and the default search_path" \
      "$(q "SELECT string_agg(DISTINCT owner::text || ' ' || search_path, ';') FROM (
              SELECT owner, search_path FROM eventsourced.entity_types
              UNION ALL SELECT owner, search_path FROM eventsourced.commands) r")" \
      "postgres \"\$user\", public, pg_temp"
check "a projection keeps its creator as owner" \
      "$(q "SELECT owner FROM eventsourced.projections WHERE name = 'seen'")" "es_u_app"
check "events appended before the update are folded by a command" \
      "$(q "SELECT seq_no || ' ' || (state->>'n') FROM eventsourced.handle_command('acc', 'a1', 'Add', '{\"n\": 10}')")" "4 16"
check "eventsourced.caller() exists" "$(q "SELECT eventsourced.caller() = current_user")" "t"
check "another role cannot replace an upgraded registration" \
      "$(psql -X -q -t -A -d $db -c "GRANT USAGE ON SCHEMA eventsourced TO es_u_app; GRANT SELECT ON eventsourced.events TO es_u_app;
           GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA eventsourced TO es_u_app;
           SET ROLE es_u_app;
           CREATE FUNCTION u.f2(state jsonb, event_type text, payload jsonb) RETURNS jsonb LANGUAGE sql RETURN state;
           SELECT eventsourced.register_entity('acc', 'u.f2(jsonb,text,jsonb)')" 2>&1 | grep -c 'belongs to another role')" "1"
check "appends go on after the update" \
      "$(q "SELECT eventsourced.append('acc', 'a1', 4, 'Added', '{\"n\": 1}')")" "5"

# This library runs projections from 0.4.0 on (their table has changed).
q "ALTER EXTENSION eventsourced UPDATE TO '0.4.0'"
check "the update goes on to 0.4.0" "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'")" "0.4.0"
# 0.2.0 reads the feed with the handler owner's rights: grant it SELECT
q "GRANT USAGE ON SCHEMA eventsourced TO es_u_app; GRANT SELECT ON eventsourced.events TO es_u_app" >/dev/null
check "the projection applies every event" "$(q "SELECT eventsourced.run_projection('seen')")" "5"
check "as its handler's owner" "$(q "SELECT string_agg(DISTINCT who, ',') FROM seen")" "es_u_app"
check "a projection whose handler belongs to a stronger role than its creator is refused" \
      "$(psql -X -q -t -A -d $db -c "SELECT eventsourced.run_projection('seen_su')" 2>&1 | grep -c 'whose rights its registrant')" "1"

# 0.2.0 to 0.3.0 to 0.4.0: a store of several types, one of them rare,
# written by 0.2.0, with a projection 3 events into the rare type (its row
# written as 0.2.0 wrote it: this library's create_projection needs 0.4.0).
createdb $db2
q "CREATE EXTENSION eventsourced VERSION '0.2.0'" $db2
q "SELECT eventsourced.append('rare', 'r1', NULL, 'E', jsonb_build_object('i', 0));
   SELECT count(eventsourced.append(CASE WHEN i % 500 = 0 THEN 'rare' ELSE 'busy' END, 'e' || (i % 7), NULL, 'E',
                                    jsonb_build_object('i', i))) FROM generate_series(1, 3000) i" $db2 >/dev/null
q "CREATE TABLE seen (pos bigint);
   CREATE FUNCTION see(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
   RETURNS void LANGUAGE sql AS 'INSERT INTO seen VALUES (pos)';
   INSERT INTO seen SELECT position FROM eventsourced.events WHERE entity_type = 'rare' ORDER BY position LIMIT 3;
   INSERT INTO eventsourced.projection_state (name, entity_type, handler, error_strategy, owner, checkpoint,
                                              events_applied, search_path, handler_owner)
   SELECT 'rare', 'rare', 'public.see(text,bigint,text,jsonb,bigint)', 'stop', 'postgres', max(pos), 3,
          '\"\$user\", public, pg_temp', 'postgres' FROM seen" $db2 >/dev/null
feeds="SELECT md5(string_agg(f, ';')) FROM (
         SELECT (SELECT string_agg(position || ' ' || entity_id || ' ' || seq_no || ' ' || payload::text, ',')
                   FROM eventsourced.events_by_type('rare', 0, 1000)) AS f
         UNION ALL SELECT (SELECT string_agg(position::text, ',') FROM eventsourced.events_by_type('busy', 100, 50))
         UNION ALL SELECT (SELECT string_agg(position::text, ',') FROM eventsourced.read_all(2990, 100))) s"
before=$(q "$feeds" $db2)
lag_before=$(q "SELECT lag FROM eventsourced.projections WHERE name = 'rare'" $db2)
check "this library reads a 0.2.0 store's type feeds (7 rare events, 4 not yet applied)" \
      "$(q "SELECT count(*) FROM eventsourced.events_by_type('rare', 0, 1000)" $db2) $lag_before" "7 4"
check "it runs no projection of a 0.2.0 store before the update, with a clear error" \
      "$(psql -X -q -t -A -d $db2 -v VERBOSITY=verbose -c "SELECT eventsourced.run_projection('rare')" 2>&1 | grep -o '55000\|ALTER EXTENSION eventsourced UPDATE' | sort -u | tr '\n' ' ')" \
      "55000 ALTER EXTENSION eventsourced UPDATE "
q "ALTER EXTENSION eventsourced UPDATE TO '0.3.0'" $db2
check "0.2.0 updates to 0.3.0" "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'" $db2)" "0.3.0"
check "the feeds read the same after the update" "$(q "$feeds" $db2)" "$before"
check "a projection's lag is the same after the update" \
      "$(q "SELECT lag FROM eventsourced.projections WHERE name = 'rare'" $db2)" "$lag_before"
# a grant on create_projection and a function that calls it survive the update
q "GRANT EXECUTE ON FUNCTION eventsourced.create_projection(text, text, regprocedure, text) TO es_u_app;
   CREATE FUNCTION make_projection(n text) RETURNS void LANGUAGE sql
   BEGIN ATOMIC SELECT eventsourced.create_projection(n, 'rare', 'see(text,bigint,text,jsonb,bigint)'); END" $db2 >/dev/null
q "ALTER EXTENSION eventsourced UPDATE TO '0.4.0'" $db2
check "the grant on create_projection and its callers survive the 0.4.0 update" \
      "$(q "SELECT has_function_privilege('es_u_app', 'eventsourced.create_projection(text,text,regprocedure,text)', 'EXECUTE')
              || ' ' || (to_regprocedure('make_projection(text)') IS NOT NULL)" $db2)" "true true"
check "0.3.0 updates to 0.4.0" "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'" $db2)" "0.4.0"
check "the feeds read the same after the 0.4.0 update" "$(q "$feeds" $db2)" "$before"
check "the lag is now the positions from the checkpoint to the newest event of the type" \
      "$(q "SELECT lag = (SELECT max(position) FROM eventsourced.events WHERE entity_type = 'rare') - checkpoint
              AND lag > 0 FROM eventsourced.projections WHERE name = 'rare'" $db2)" "t"
check "the projection goes on after the update" \
      "$(q "SELECT eventsourced.run_projection('rare')" $db2) $(q "SELECT count(*) FROM seen" $db2)" "4 7"
q "SELECT eventsourced.append('rare', 'r1', NULL, 'E', '{}')" $db2 >/dev/null
check "appends go on after the 0.4.0 update" \
      "$(q "SELECT eventsourced.run_projection('rare')" $db2) $(q "SELECT count(*) FROM seen" $db2)" "1 8"
check "an upgraded projection stops and starts, and readers resume at feed_checkpoint()" \
      "$(q "SELECT eventsourced.stop_projection('rare');
            SELECT eventsourced.append('rare', 'r1', NULL, 'E', '{}');
            SELECT eventsourced.run_projection('rare');
            SELECT eventsourced.start_projection('rare');
            SELECT eventsourced.run_projection('rare');
            SELECT count(*) || ' ' || (eventsourced.feed_checkpoint('rare', 0) = (SELECT min(position) - 1
                   FROM eventsourced.events WHERE entity_type = 'rare')) FROM seen" $db2 2>/dev/null | tail -2 | tr '\n' ' ')" "1 9 true "

# 0.4.0 to 0.5.0, both stores: snapshots, cached states and command
# results written by 0.4.0 are read the same after the update, commands and
# appends go on.
state="SELECT string_agg(entity_type || '/' || entity_id || ' ' || seq_no, ',' ORDER BY entity_type, entity_id)
         FROM eventsourced.snapshots"
q "SELECT eventsourced.save_snapshot('acc', 'a1', eventsourced.last_seq_no('acc', 'a1'), '{\"n\": -1}')" >/dev/null
check "this library saves snapshots in a 0.4.0 store (no change column yet)" \
      "$(q "SELECT seq_no = eventsourced.last_seq_no('acc', 'a1') AND state = '{\"n\": -1}'
              FROM eventsourced.load_snapshot('acc', 'a1')")" "t"
snap_before=$(q "$state")
feeds_before=$(q "$feeds" $db2)
q "SELECT eventsourced.handle_command('acc', 'a2', 'Add', '{\"n\": 2}', 'id-1')" >/dev/null
result_before=$(q "SELECT seq_no || ' ' || (state->>'n') FROM eventsourced.handle_command('acc', 'a2', 'Add', '{\"n\": 9}', 'id-1')")
q "ALTER EXTENSION eventsourced UPDATE"
q "ALTER EXTENSION eventsourced UPDATE" $db2
check "both stores update to 0.5.0" \
      "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'") $(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'" $db2)" "0.5.0 0.5.0"
check "snapshots written by 0.4.0 are there after the 0.5.0 update" "$(q "$state")" "$snap_before"
check "each snapshot written by 0.4.0 got a change number below the horizon, snapshot_changes returns each" \
      "$(q "SELECT count(*) || ' ' || bool_and(change < eventsourced.feed_horizon())
              || ' ' || (SELECT count(*) FROM eventsourced.snapshot_changes(0, 100000))
              FROM eventsourced.snapshots")" "$(q "SELECT count(*) || ' true ' || count(*) FROM eventsourced.snapshots")"
check "a command id used before the 0.5.0 update returns its first result" \
      "$(q "SELECT seq_no || ' ' || (state->>'n') FROM eventsourced.handle_command('acc', 'a2', 'Add', '{\"n\": 5}', 'id-1')")" "$result_before"
check "commands fold 0.4.0's events after the 0.5.0 update" \
      "$(q "SELECT seq_no || ' ' || (state->>'n') FROM eventsourced.handle_command('acc', 'a1', 'Add', '{\"n\": 1}')")" "6 18"
check "the feeds read the same after the 0.5.0 update, the projection is where it was" \
      "$(q "$feeds" $db2) $(q "SELECT eventsourced.run_projection('rare')" $db2)" "$feeds_before 0"
# fencing came with 0.5.0 (appends above ran on the 0.4.0 store without
# its fences table); on the upgraded store a fence refuses 0.4.0's entities
fence="$(q "SELECT eventsourced.entity_hash('account', 'a1')" $db2) $(q "SELECT eventsourced.fence_partition(1, 0)" $db2)"
fence+=" $(q "SELECT eventsourced.append('rare', 'r1', NULL, 'E', '{}')" $db2 2>&1 | grep -o 'partition 0 of 1 is fenced')"
fence+="|$(q "SELECT eventsourced.unfence_partition(1, 0)" $db2) $(q "SELECT eventsourced.append('rare', 'r1', NULL, 'E', '{}') > 0" $db2)"
check "an upgraded store fences a partition of 0.4.0's entities, and unfences it" \
      "$fence" "-711212221 t partition 0 of 1 is fenced|t t"

createdb $fresh
q "CREATE EXTENSION eventsourced" $fresh
check "a new installation is at 0.5.0" "$(q "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'" $fresh)" "0.5.0"
check "the upgraded tables have the columns of a new installation" \
      "$(q "$shape" | md5sum)" "$(q "$shape" $fresh | md5sum)"
check "the upgraded indexes and views are a new installation's" \
      "$(q "$indexes; $views" | md5sum) $(q "$indexes; $views" $db2 | md5sum)" \
      "$(q "$indexes; $views" $fresh | md5sum) $(q "$indexes; $views" $fresh | md5sum)"
check "no column of a reg* type that pg_upgrade refuses" \
      "$(q "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'eventsourced'::regnamespace AND a.attnum > 0
              AND a.atttypid IN ('regproc'::regtype, 'regprocedure'::regtype, 'regoper'::regtype,
                                 'regoperator'::regtype, 'regconfig'::regtype, 'regdictionary'::regtype,
                                 'regnamespace'::regtype, 'regcollation'::regtype)")" "0"
q "DROP OWNED BY es_u_app" >/dev/null
