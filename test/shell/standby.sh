#!/usr/bin/env bash
# checks: 9 (test/run fails when a different number of checks ran)
# A hot standby of the cluster at PGHOST serves entity reads, and refuses
# feed reads (which positions are in flight is known only on the primary).
# Starts the standby with pg_basebackup on port PGPORT + 20 and stops it.
# Uses PGHOST/PGPORT/PGUSER.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cluster.sh"
db=es_standby
work=$(mktemp -d /tmp/es_standby.XXXXXX)
chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown postgres: "$work"
sport=$((PGPORT + 20))
trap 'es_cluster_stop "$work"; dropdb --if-exists $db; rm -rf "$work"' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
qs() { psql -X -q -t -A -v VERBOSITY=sqlstate -h "$work" -p $sport -d $db -c "$1" 2>&1; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}

dropdb --if-exists $db >/dev/null 2>&1
createdb $db && q $db "CREATE EXTENSION eventsourced" >/dev/null
q $db "SELECT eventsourced.append('acct', 'a1', 0, 'Opened', '{}'),
              eventsourced.append('acct', 'a1', 1, 'Deposited', '{\"n\": 5}');
       SELECT eventsourced.save_snapshot('acct', 'a1', 2, '{\"balance\": 5}')" >/dev/null

es_as_owner "$ES_PGBIN/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U postgres -D "$work/data" -R -X stream -c fast ||
    echo "not ok - pg_basebackup"
{
    echo "port = $sport"
    echo "unix_socket_directories = '$work'"
    echo "eventsourced.worker_databases = ''"
} | es_as_owner tee -a "$work/data/postgresql.conf" >/dev/null
es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null ||
    { echo "not ok - standby start"; cat "$work/server.log"; }

check "the standby is in recovery" "$(qs "SELECT pg_is_in_recovery()")" "t"
check "events_by_id works on a standby" \
      "$(qs "SELECT string_agg(event_type, ' ' ORDER BY seq_no) FROM eventsourced.events_by_id('acct', 'a1')")" \
      "Opened Deposited"
check "last_seq_no works on a standby" "$(qs "SELECT eventsourced.last_seq_no('acct', 'a1')")" "2"
check "load_snapshot works on a standby" \
      "$(qs "SELECT seq_no || ' ' || state FROM eventsourced.load_snapshot('acct', 'a1')")" '2 {"balance": 5}'
for f in "read_all()" "events_by_type('acct')" "read_all_pb()" "feed_horizon()"; do
    check "$f is refused on a standby" \
          "$(qs "SELECT count(*) FROM eventsourced.$f")" "ERROR:  0A000"
done
check "append is refused on a standby" \
      "$(qs "SELECT eventsourced.append('acct', 'a1', 2, 'Withdrawn', '{}')")" "ERROR:  25006"
