#!/usr/bin/env bash
# checks: 17 (test/run fails when a different number of checks ran)
# pg_dump of a database and a restore into a fresh one keep every event and
# snapshot, and the restored store goes on appending.  Uses PGHOST/PGPORT/PGUSER.
set -u
src=es_dump_src
dst=es_dump_dst
dump=$(mktemp /tmp/es_dump.XXXXXX)
trap 'rm -f "$dump"; dropdb --if-exists $src; dropdb --if-exists $dst' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
digest="SELECT md5(coalesce(string_agg(e::text, ',' ORDER BY position), '')) FROM eventsourced.events e"
snapdigest="SELECT md5(coalesce(string_agg(s::text, ',' ORDER BY entity_id), '')) FROM eventsourced.snapshots s"

dropdb --if-exists $src >/dev/null 2>&1; dropdb --if-exists $dst >/dev/null 2>&1
createdb $src && q $src "CREATE EXTENSION eventsourced" >/dev/null
q $src "SELECT eventsourced.append('acct', 'a' || i, 0, ARRAY[
          eventsourced.event('Opened', jsonb_build_object('i', i), '{\"m\": 1}', gen_random_uuid()),
          eventsourced.event('Deposited', jsonb_build_object('n', i * 10))])
        FROM generate_series(1, 50) i" >/dev/null
q $src "SELECT eventsourced.save_snapshot('acct', 'a1', 2, '{\"balance\": 10}')" >/dev/null

pg_dump -Fc -f "$dump" $src || echo "not ok - pg_dump"
createdb $dst && pg_restore -d $dst "$dump" || echo "not ok - pg_restore"

check "events survive dump and restore" "$(q $dst "$digest")" "$(q $src "$digest")"
check "snapshots survive dump and restore" "$(q $dst "$snapdigest")" "$(q $src "$snapdigest")"
check "100 events restored" "$(q $dst "SELECT count(*) FROM eventsourced.events")" "100"
maxpos=$(q $dst "SELECT max(position) FROM eventsourced.events")
check "seq_no continues after restore" \
      "$(q $dst "SELECT eventsourced.append('acct', 'a1', 2, 'Withdrawn', '{}')")" "3"
check "positions continue after restore" \
      "$(q $dst "SELECT position > $maxpos FROM eventsourced.events_by_id('acct', 'a1', 3)")" "t"
check "restored feed reads on from the last position" \
      "$(q $dst "SELECT string_agg(entity_id || ':' || seq_no, ' ') FROM eventsourced.read_all($maxpos)")" "a1:3"
check "concurrency check holds after restore" \
      "$(q $dst "SELECT eventsourced.append('acct', 'a1', 2, 'Withdrawn', '{}')" 2>&1 | grep -c 'sequence conflict')" "1"
check "immutability holds after restore" \
      "$(q $dst "DELETE FROM eventsourced.events" 2>&1 | grep -c 'events are immutable')" "1"
check "snapshot loads after restore" \
      "$(q $dst "SELECT seq_no || ' ' || state FROM eventsourced.load_snapshot('acct', 'a1')")" '2 {"balance": 10}'
maxchange=$(q $dst "SELECT max(change) FROM eventsourced.snapshots")
q $dst "SELECT eventsourced.save_snapshot('acct', 'a1', 3, '{\"balance\": 7}')" >/dev/null
check "snapshot changes keep their numbers and go on above them after restore" \
      "$(q $dst "SELECT string_agg(seq_no::text, ' ') FROM eventsourced.snapshot_changes($maxchange, 10)")" "3"

# A dump of a 0.4.0 store restored where CREATE EXTENSION gives 0.5.0: the
# snapshots' COPY has no change column, so each row draws one (the column's
# default), below the horizon and readable by snapshot_changes(); the
# restore then sets the position sequence back to the dump's value, and new
# positions and changes still come above every restored one.
old=es_dump_old
dropdb --if-exists $old >/dev/null 2>&1; dropdb --if-exists $dst >/dev/null 2>&1
: # trap
createdb $old && q $old "CREATE EXTENSION eventsourced VERSION '0.4.0'" >/dev/null
q $old "SELECT eventsourced.append('acct', 'o' || i, 0, 'Opened', jsonb_build_object('i', i))
        FROM generate_series(1, 5) i" >/dev/null
q $old "SELECT eventsourced.save_snapshot('acct', 'o' || i, 1, jsonb_build_object('s', i))
        FROM generate_series(1, 3) i" >/dev/null
pg_dump -Fc -f "$dump" $old || echo "not ok - pg_dump of 0.4.0"
createdb $dst
check "a 0.4.0 dump restores into 0.5.0 without errors" \
      "$(pg_restore -d $dst "$dump" 2>&1 | grep -c ERROR)" "0"
check "the restored store is 0.5.0" \
      "$(q $dst "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced'")" "0.5.0"
check "every 0.4.0 snapshot is restored with its state" \
      "$(q $dst "SELECT string_agg(entity_id || ':' || (state->>'s'), ' ' ORDER BY entity_id) FROM eventsourced.snapshots")" "o1:1 o2:2 o3:3"
check "restored snapshots have distinct changes below the horizon" \
      "$(q $dst "SELECT count(DISTINCT change) FILTER (WHERE change < eventsourced.feed_horizon()) FROM eventsourced.snapshots")" "3"
check "snapshot_changes() reads the restored snapshots" \
      "$(q $dst "SELECT string_agg(entity_id, ' ' ORDER BY change) FROM eventsourced.snapshot_changes(0, 10)" | tr ' ' '\n' | sort | tr '\n' ' ')" "o1 o2 o3 "
maxold=$(q $dst "SELECT greatest((SELECT max(position) FROM eventsourced.events), (SELECT max(change) FROM eventsourced.snapshots))")
q $dst "SELECT eventsourced.append('acct', 'o1', 1, 'Deposited', '{}')" >/dev/null
q $dst "SELECT eventsourced.save_snapshot('acct', 'o1', 2, '{\"s\": 9}')" >/dev/null
check "new positions and changes come above the restored ones" \
      "$(q $dst "SELECT (SELECT position FROM eventsourced.events_by_id('acct', 'o1', 2)) > $maxold
                     AND (SELECT change FROM eventsourced.snapshots WHERE entity_id = 'o1') > $maxold")" "t"
check "the new snapshot change follows the restored ones" \
      "$(q $dst "SELECT string_agg(entity_id || ':' || seq_no, ' ') FROM eventsourced.snapshot_changes($maxold, 10)")" "o1:2"
