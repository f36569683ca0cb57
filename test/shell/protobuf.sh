#!/usr/bin/env bash
# checks: 8 (test/run fails when a different number of checks ran)
# Round trips of the protobuf wire format through protoc (Debian's
# protobuf-compiler): batches made by protoc --encode are appended with
# append_pb, and events_by_type_pb / read_all_pb / load_snapshot_pb output
# decodes with protoc --decode to the expected text.  Uses PGHOST/PGPORT/PGUSER.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
db=es_protobuf_test
work=$(mktemp -d /tmp/es_protobuf.XXXXXX)
trap 'rm -rf "$work"; dropdb --if-exists $db >/dev/null 2>&1' EXIT
q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -d $db -c "$1"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else printf 'not ok - %s\n  got:  %s\n  want: %s\n' "$1" "$2" "$3"; fi
}
proto() { protoc "$@" -I "$root/proto" "$root/proto/eventsourced.proto"; }
# bytea query result -> binary file
fetch() { q "SELECT encode(($1), 'hex')" | xxd -r -p >"$2"; }
# text format -> hex of the encoded message
encode() { proto --encode="eventsourced.$1" | xxd -p | tr -d '\n'; }

dropdb --if-exists $db >/dev/null 2>&1
createdb $db && q "CREATE EXTENSION eventsourced" >/dev/null

batch=$(encode EventBatch <<'TXT'
events { entity_type: "doc" entity_id: "d1" event_type: "Created"
         payload: "{\"title\": \"hi\"}" metadata: "{\"by\": \"ann\"}"
         event_id: "11111111-0000-0000-0000-000000000001" }
events { entity_type: "doc" entity_id: "d1" event_type: "Attached"
         payload: "\001\002\003" payload_format: PAYLOAD_FORMAT_BINARY }
TXT
)
check "append_pb appends a batch made by protoc --encode" "$(q "SELECT eventsourced.append_pb('\\x$batch', 0)")" "2"
q "SELECT eventsourced.append('note', 'n1', 0, 'Noted', '{\"n\": 1}')" >/dev/null

fetch "eventsourced.events_by_type_pb('doc')" "$work/doc.bin"
check "events_by_type_pb decodes with protoc --decode" \
      "$(proto --decode=eventsourced.EventBatch <"$work/doc.bin" | grep -v recorded_at)" \
      'events {
  position: 1
  entity_type: "doc"
  entity_id: "d1"
  seq_no: 1
  event_type: "Created"
  payload: "{\"title\": \"hi\"}"
  metadata: "{\"by\": \"ann\"}"
  event_id: "11111111-0000-0000-0000-000000000001"
}
events {
  position: 2
  entity_type: "doc"
  entity_id: "d1"
  seq_no: 2
  event_type: "Attached"
  payload: "\001\002\003"
  payload_format: PAYLOAD_FORMAT_BINARY
}
last_position: 3'
# (last_position 3: the page is not full, so its reader resumes past the
# "note" event at position 3, which holds nothing for it: feed_checkpoint)

fetch "eventsourced.read_all_pb(1, 10)" "$work/all.bin"
check "read_all_pb pages after a position, every type" \
      "$(proto --decode=eventsourced.EventBatch <"$work/all.bin" | grep -E '^  (position|entity_type)|last_position' | sed 's/^ *//' | tr '\n' ' ')" \
      'position: 2 entity_type: "doc" position: 3 entity_type: "note" last_position: 3 '
check "recorded_at is microseconds since 1970" \
      "$(proto --decode=eventsourced.EventBatch <"$work/all.bin" | awk '/recorded_at/ {print $2; exit}' | cut -c1-6)" \
      "$(q "SELECT (extract(epoch FROM recorded_at) * 1000000)::bigint FROM eventsourced.events WHERE position = 2" | cut -c1-6)"
fetch "eventsourced.read_all_pb(3)" "$work/empty.bin"
check "an empty page carries the checkpoint" "$(proto --decode=eventsourced.EventBatch <"$work/empty.bin")" "last_position: 3"

q "SELECT eventsourced.save_snapshot_bytes('doc', 'd1', 2, '\\x0102')" >/dev/null
fetch "eventsourced.load_snapshot_pb('doc', 'd1')" "$work/snap.bin"
check "load_snapshot_pb decodes as eventsourced.Snapshot" \
      "$(proto --decode=eventsourced.Snapshot <"$work/snap.bin")" 'seq_no: 2
state: "\001\002"'
snap=$(printf 'seq_no: 7\nstate: "abc"\n' | encode Snapshot)
check "Snapshot is wire-compatible: seq_no = 1 (varint), state = 2 (bytes)" "$snap" "08071203616263"

# The protobuf functions need a UTF8 database: in a SQL_ASCII one (which
# stores any byte) each is refused with 0A000 instead of emitting invalid UTF-8.
asc=es_protobuf_ascii
dropdb --if-exists $asc >/dev/null 2>&1
createdb -E SQL_ASCII --locale=C -T template0 $asc && psql -X -q -d $asc -c "CREATE EXTENSION eventsourced" >/dev/null
refused=0
for call in "eventsourced.append_pb('\\x0a00'::bytea, NULL)" "eventsourced.events_by_type_pb('doc', 0, 10)" \
            "eventsourced.read_all_pb(0, 10)" "eventsourced.load_snapshot_pb('doc', 'd1')" \
            "eventsourced.protobuf_to_jsonb('\\x'::bytea, 'x.Y')"; do
    psql -X -q -t -A -d $asc -v VERBOSITY=sqlstate -c "SELECT $call" 2>&1 | grep -q '^ERROR:  0A000$' && refused=$((refused + 1))
done
dropdb --if-exists $asc >/dev/null 2>&1
check "the five protobuf functions refuse a SQL_ASCII database (0A000)" "$refused" "5"
