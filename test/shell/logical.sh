#!/usr/bin/env bash
# checks: 13 (test/run fails when a different number of checks ran)
# Logical replication of eventsourced.events into another database: the
# subscriber receives the events and serves them by entity, and refuses
# feed reads (the publisher's transactions arrive in commit order, so its
# horizon would let a reader skip an event); the same for snapshot_changes()
# where eventsourced.snapshots alone is subscribed.  Needs wal_level = logical.
# Uses PGHOST/PGPORT/PGUSER.
set -u
pub=es_logical_pub
sub=es_logical_sub
cleanup() {
    psql -X -q -d $sub -c "DROP SUBSCRIPTION IF EXISTS es_logical" >/dev/null 2>&1
    psql -X -q -d $sub -c "DROP SUBSCRIPTION IF EXISTS es_logical_snap" >/dev/null 2>&1
    dropdb --if-exists $sub >/dev/null 2>&1
    psql -X -q -d $pub -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name IN ('es_logical', 'es_logical_snap')" >/dev/null 2>&1
    dropdb --if-exists $pub >/dev/null 2>&1
}
trap cleanup EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
qs() { psql -X -q -t -A -v VERBOSITY=sqlstate -d "$1" -c "$2" 2>&1; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
# wait_for DB SQL EXPECTED: poll (at most 30 s) until SQL returns EXPECTED; prints the last result
wait_for() {
    local got="" i
    for i in $(seq 1 300); do
        got=$(q "$1" "$2" 2>/dev/null)
        [ "$got" = "$3" ] && break
        sleep 0.1
    done
    echo "$got"
}

cleanup
check "the server has wal_level = logical" "$(q postgres "SHOW wal_level")" "logical"
createdb $pub && createdb $sub
q $pub "CREATE EXTENSION eventsourced" >/dev/null
q $sub "CREATE EXTENSION eventsourced" >/dev/null
q $pub "SELECT eventsourced.append('acct', 'a1', NULL, 'E', jsonb_build_object('i', i)) FROM generate_series(1, 3) i" >/dev/null
q $pub "CREATE PUBLICATION es_logical FOR TABLE eventsourced.events" >/dev/null
q $pub "SELECT pg_create_logical_replication_slot('es_logical', 'pgoutput')" >/dev/null
q $sub "CREATE SUBSCRIPTION es_logical CONNECTION 'host=$PGHOST port=$PGPORT user=$PGUSER dbname=$pub'
        PUBLICATION es_logical WITH (create_slot = false, slot_name = 'es_logical')" >/dev/null
q $pub "SELECT eventsourced.append('acct', 'a1', 3, 'E', '{}')" >/dev/null
check "the subscriber receives the events" \
      "$(wait_for $sub "SELECT count(*) FROM eventsourced.events_by_id('acct', 'a1')" 4)" "4"
check "last_seq_no works on the subscriber" "$(q $sub "SELECT eventsourced.last_seq_no('acct', 'a1')")" "4"
for f in "read_all()" "events_by_type('acct')" "read_all_pb()" "feed_horizon()"; do
    check "$f is refused on the subscriber" "$(qs $sub "SELECT count(*) FROM eventsourced.$f")" "ERROR:  0A000"
done
check "the publisher's feed is served" "$(q $pub "SELECT count(*) FROM eventsourced.events_by_type('acct')")" "4"
q $sub "DROP SUBSCRIPTION es_logical" >/dev/null 2>&1
check "without the subscription the feed is served again" \
      "$(q $sub "SELECT count(*) FROM eventsourced.events_by_type('acct')")" "4"

# Snapshots alone replicated (e.g. for load_snapshot on another server): their
# change numbers arrive in the publisher's commit order too, so a reader of
# snapshot_changes() there could skip a change still in flight on the publisher.
q $pub "SELECT eventsourced.save_snapshot('acct', 'a1', 4, '{}')" >/dev/null
q $pub "CREATE PUBLICATION es_logical_snap FOR TABLE eventsourced.snapshots" >/dev/null
q $pub "SELECT pg_create_logical_replication_slot('es_logical_snap', 'pgoutput')" >/dev/null
q $sub "CREATE SUBSCRIPTION es_logical_snap CONNECTION 'host=$PGHOST port=$PGPORT user=$PGUSER dbname=$pub'
        PUBLICATION es_logical_snap WITH (create_slot = false, slot_name = 'es_logical_snap')" >/dev/null
check "the subscriber receives the snapshots" \
      "$(wait_for $sub "SELECT count(*) FROM eventsourced.snapshots" 1)" "1"
check "snapshot_changes() is refused where the snapshots are subscribed" \
      "$(qs $sub "SELECT count(*) FROM eventsourced.snapshot_changes()")" "ERROR:  0A000"
check "the publisher's snapshot changes are served" \
      "$(q $pub "SELECT count(*) FROM eventsourced.snapshot_changes()")" "1"
q $sub "DROP SUBSCRIPTION es_logical_snap" >/dev/null 2>&1
check "without the subscription snapshot changes are served again" \
      "$(q $sub "SELECT count(*) FROM eventsourced.snapshot_changes()")" "1"
