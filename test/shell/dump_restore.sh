#!/usr/bin/env bash
# checks: 10 (test/run fails when a different number of checks ran)
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
