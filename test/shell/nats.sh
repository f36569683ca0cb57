#!/usr/bin/env bash
# checks: 44 (test/run fails when a different number of checks ran)
# eventsourced-nats (nats/): the relay from the feed to NATS JetStream.
# Starts its own cluster (port PGPORT + 22, so that it can restart it) and
# its own nats-server (loopback, port ES_NATS_TEST_PORT, default PGPORT -
# 13520, temporary store directory).  Writers append concurrently (several
# types, batches, append_binary, append_pb, a type and ids that are not
# valid subject tokens) while the relay is killed with kill -9 twice,
# nats-server is restarted once and the database once; then an independent
# reader (test/nats/consumer.c, no code shared with the relay) must find
# every committed event exactly once, in feed order, with the store's
# payloads and headers.  Also: nats-server down at start, one relay per
# name, a changed --types refused, a foreign stream refused, an event
# larger than max_payload.  Uses PGPORT and the server binaries of ES_PGBIN.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/test/cluster.sh"
relay_bin=$root/nats/eventsourced-nats
work=$(mktemp -d /tmp/es_nats.XXXXXX)
chmod 755 "$work"
pgport=$((PGPORT + 22))
nport=${ES_NATS_TEST_PORT:-$((PGPORT - 13520))}
nurl=nats://127.0.0.1:$nport
db=es_nats
src="host=$work/pg port=$pgport user=postgres dbname=$db"
relay_pid=
nats_pid=

cleanup() {
    local pid
    for pid in $(jobs -p); do kill -9 "$pid" 2>/dev/null; done   # ours, still running
    wait 2>/dev/null
    es_cluster_stop "$work/pg"
    rm -rf "$work"
}
trap cleanup EXIT

q() { psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$work/pg" -p $pgport -U postgres -d $db -c "$1"; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
# Shows a log's lines on "# " lines.
show() { sed 's/^/# /' "$1" | tail -n "${2:-20}"; }

nats_start() {
    nats-server -a 127.0.0.1 -p "$nport" -js -sd "$work/js" >>"$work/nats.log" 2>&1 &
    nats_pid=$!
    for _ in $(seq 50); do
        grep -q "Server is ready" "$work/nats.log" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
nats_stop() {   # kill -9: it may lose what it acknowledged but had not written
    [ -n "$nats_pid" ] && kill -9 "$nats_pid" 2>/dev/null && wait "$nats_pid" 2>/dev/null
    nats_pid=
    : >"$work/nats.log"
}
# relay_start LOG [options]: the relay in the background.
relay_start() {
    local log=$1
    shift
    "$relay_bin" --source "$src" --nats "$nurl" --poll-ms 200 --batch 100 "$@" >>"$log" 2>&1 &
    relay_pid=$!
}
relay_kill9() { kill -9 "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null; }
# Waits (at most 60 s) until checkpoint NAME reaches the feed's last position.
wait_caught_up() {
    for _ in $(seq 600); do
        [ "$(q "SELECT (SELECT position FROM eventsourced_nats.relays WHERE name = '$1')
                    >= (SELECT coalesce(max(position), 0) FROM eventsourced.events)")" = t ] && return 0
        sleep 0.1
    done
    return 1
}

# Waits (at most 60 s) until NAME's snapshot checkpoint reaches the last snapshot change.
wait_snapshots() {
    for _ in $(seq 600); do
        [ "$(q "SELECT (SELECT snapshot_change FROM eventsourced_nats.relays WHERE name = '$1')
                    >= (SELECT coalesce(max(change), 0) FROM eventsourced.snapshots)")" = t ] && return 0
        sleep 0.1
    done
    return 1
}
# The snapshots in NATS KV as an independent reader sees them: one line
# "bucket TAB key TAB value in hex" per key whose value protoc decodes as
# the Snapshot message of proto/eventsourced.proto; "undecodable" otherwise.
proto=(-I"$root/proto" "$root/proto/eventsourced.proto")
kv_snapshots() {
    local bucket subject hex
    for bucket in $(q "SELECT DISTINCT 'snapshots_' || esc_bucket(entity_type) FROM eventsourced.snapshots"); do
        "$work/consumer" "$nurl" "KV_$bucket" | awk -F'\t' '$2 != "deleted" { print $2 "\t" $9 }' |
        while IFS=$'\t' read -r subject hex; do
            if printf '%s' "$hex" | xxd -r -p | protoc --decode=eventsourced.Snapshot "${proto[@]}" 2>/dev/null |
               grep -q '^seq_no: [0-9]'; then
                printf '%s\t%s\t%s\n' "$bucket" "${subject#"\$KV.$bucket."}" "$hex"
            else
                printf 'undecodable\t%s\n' "$subject"
            fi
        done
    done | sort
}
# What KV should hold for the store's snapshots: Snapshot messages encoded
# by protoc, seq_no = the stream sequence of the covered event (from the
# independent reader's dump of the stream, file $1).
kv_expected() {
    local bucket key position state seq
    q "SELECT 'snapshots_' || esc_bucket(s.entity_type), esc_key(s.entity_id), e.position,
              (SELECT string_agg('\\' || (b >> 6) || ((b >> 3) & 7) || (b & 7), '' ORDER BY i)
                 FROM (SELECT i, get_byte(st, i) AS b FROM generate_series(0, octet_length(st) - 1) i) x)
         FROM eventsourced.snapshots s
         JOIN eventsourced.events e USING (entity_type, entity_id, seq_no),
              LATERAL (SELECT coalesce(s.state_bytes, convert_to(s.state::text, 'UTF8')) AS st) t" |
    while IFS='|' read -r bucket key position state; do
        seq=$(awk -F'\t' -v p="$position" '$4 == p { print $1 }' "$1")
        printf '%s\t%s\t%s\n' "$bucket" "$key" \
            "$(printf 'seq_no: %s state: "%s"' "${seq:-0}" "$state" | protoc --encode=eventsourced.Snapshot "${proto[@]}" | xxd -p | tr -d '\n')"
    done | sort
}

make -s -C "$root/nats" >/dev/null || { echo "not ok - the relay builds"; exit 1; }
gcc -O2 -o "$work/consumer" "$root/test/nats/consumer.c" -lnats ||
    { echo "not ok - the consumer builds"; exit 1; }
es_cluster_start "$work/pg" $pgport "shared_preload_libraries = 'eventsourced'" || exit 1
createdb -h "$work/pg" -p $pgport -U postgres $db
q "CREATE EXTENSION eventsourced" >/dev/null
# A one-event EventBatch of a binary event (all lengths below 128).
q "CREATE FUNCTION pb_batch(id text, p bytea) RETURNS bytea LANGUAGE sql AS \$\$
     SELECT '\\x0a'::bytea || set_byte('\\x00'::bytea, 0, length(ev)) || ev
       FROM (SELECT '\\x1202'::bytea || 'pb'::bytea || '\\x1a'::bytea
                    || set_byte('\\x00'::bytea, 0, length(convert_to(id, 'UTF8')))
                    || convert_to(id, 'UTF8') || '\\x2a01'::bytea || 'P'::bytea
                    || '\\x32'::bytea || set_byte('\\x00'::bytea, 0, length(p)) || p
                    || '\\x3801'::bytea AS ev) s \$\$" >/dev/null

"$relay_bin" --source "$src" --stream 'a.b' >"$work/usage.log" 2>&1
check "a stream name that is not a subject token is refused" "$?:$(grep -c 'must be 1 to 255' "$work/usage.log")" "2:1"

# The longest entity id (1,024 bytes, all escaped: a 3,086-byte subject).
q "SELECT eventsourced.append('cart', repeat(' ', 1024), 0, 'Long', '{}')" >/dev/null

# nats-server down at start: the relay says so and retries with backoff.
relay_start "$work/relay.log" --name main --snapshots
sleep 1.5
check "with nats-server down the relay says so and retries with backoff" \
    "$(grep -c "cannot connect to nats-server at $nurl" "$work/relay.log" | awk '$1 >= 2 {print "yes"}'):$(grep -c 'retrying in 200 ms' "$work/relay.log")" "yes:1"
nats_start || { echo "not ok - nats-server starts"; show "$work/nats.log"; exit 1; }

# Writers: each psql call appends a round of events, committed one by one.
writer() {
    local w=$1 i=0
    while [ ! -e "$work/stop" ]; do
        i=$((i + 1))
        psql -X -q -h "$work/pg" -p $pgport -U postgres -d $db >/dev/null 2>&1 <<SQL
SELECT eventsourced.append('cart', 'c$w-' || ($i % 7), NULL, 'ItemAdded', jsonb_build_object('w', $w, 'i', $i));
SELECT eventsourced.append('order', 'o$w.' || ($i % 5), NULL, ARRAY[
    eventsourced.event('Placed', '{"n": 1}', jsonb_build_object('by', 'w$w'), gen_random_uuid()),
    eventsourced.event('Paid', jsonb_build_object('i', $i)),
    eventsourced.event('Sh ipped*', '"x"')]);
SELECT eventsourced.append('odd type.*>', 'x y $w' || ($i % 3), NULL, 'E', '[1, "é"]');
SELECT eventsourced.append_binary('bin', 'b$w', NULL, 'Chunk', ('\\x00ff0d0a' || lpad(to_hex($i), 8, '0'))::bytea);
SELECT eventsourced.append_pb(pb_batch('p$w-' || ($i % 4), ('\\x' || lpad(to_hex($i), 8, '0'))::bytea), NULL);
SELECT eventsourced.save_snapshot('cart', 'c$w-' || ($i % 7), eventsourced.last_seq_no('cart', 'c$w-' || ($i % 7)),
                                  jsonb_build_object('w', $w, 'i', $i));
SELECT eventsourced.save_snapshot('odd type.*>', 'x y $w' || ($i % 3), eventsourced.last_seq_no('odd type.*>', 'x y $w' || ($i % 3)),
                                  '"é"');
SELECT eventsourced.save_snapshot_bytes('bin', 'b$w', eventsourced.last_seq_no('bin', 'b$w') - ($i % 2), ('\\x00' || lpad(to_hex($i), 8, '0'))::bytea)
 WHERE eventsourced.last_seq_no('bin', 'b$w') > 1;
SQL
    done
}
for w in 1 2 3; do writer $w & done
wpids=$(jobs -p | grep -v -x -e "$relay_pid" -e "$nats_pid")

sleep 1.5
relay_kill9
relay_start "$work/relay.log" --name main --snapshots
sleep 1.5
nats_stop
sleep 0.5
nats_start || echo "# nats-server did not start again"
sleep 1.5
relay_kill9
relay_start "$work/relay.log" --name main --snapshots
sleep 1.5
es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/pg/data" -m fast -w restart >/dev/null
sleep 1.5
touch "$work/stop"
for pid in $wpids; do wait "$pid"; done
# One binary snapshot of an event before its entity's last, whatever the
# writers' last rounds left (the relay finds its stream sequence by search)
q "SELECT eventsourced.append_binary('bin', 'b1', NULL, 'Chunk', '\\x00ff'::bytea) FROM generate_series(1, 2);
   SELECT eventsourced.save_snapshot_bytes('bin', 'b1', eventsourced.last_seq_no('bin', 'b1') - 1, '\\x00aa'::bytea)" >/dev/null

# A second relay of the same name waits for the first.
relay_first=$relay_pid
relay_start "$work/second.log" --name main
sleep 1
check "a second relay of the same name does not run" \
    "$(grep -c 'another relay named "main" is running' "$work/second.log" | awk '$1 >= 1 {print "yes"}')" "yes"
relay_kill9
relay_pid=$relay_first

wait_caught_up main
check "the relay catches up: its checkpoint reaches the feed's end" "$?" "0"
wait_snapshots main
check "the relay mirrors every snapshot change: its snapshot checkpoint reaches the last change" "$?" "0"
kill "$relay_pid"
wait "$relay_pid"
check "the relay stops cleanly on SIGTERM" "$?" "0"
check "the relay reported the restarts it went through" \
    "$(grep -c 'reconnected to nats-server' "$work/relay.log" | awk '$1 >= 1 {print "nats"}'):$(grep -c 'no usable connection to the event store' "$work/relay.log" | awk '$1 >= 1 {print "pg"}')" "nats:pg"

# A crash between JetStream's ack and the checkpoint's update leaves the
# checkpoint behind the stream: the relay goes on from the stream's last
# message instead of publishing again (the duplicate window is not relied on).
q "UPDATE eventsourced_nats.relays SET position = position - 150 WHERE name = 'main'"
"$relay_bin" --source "$src" --nats "$nurl" --name main --exit-when-idle >"$work/behind.log" 2>&1
check "a checkpoint behind the stream is reconciled with the stream's last message" \
    "$?:$(grep -c 'holds events up to position [0-9]*, checkpoint "main" was' "$work/behind.log")" "0:1"

# The stream as an independent reader sees it, and the store's events as
# the documented rule makes them (subject tokens escaped).
"$work/consumer" "$nurl" events | cut -f2- >"$work/stream.txt"
q "CREATE FUNCTION esc(t text) RETURNS text LANGUAGE sql AS \$\$
     SELECT string_agg(CASE WHEN b BETWEEN 33 AND 126 AND b NOT IN (37, 42, 46, 62) THEN chr(b)
                       ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i)
       FROM (SELECT i, get_byte(convert_to(t, 'UTF8'), i) AS b
               FROM generate_series(0, octet_length(t) - 1) i) s \$\$" >/dev/null
q "COPY (SELECT 'events.' || esc(entity_type) || '.' || esc(entity_id),
                s.system_identifier || '-' || d.oid || '-' || position, position, seq_no,
                esc(event_type), coalesce(event_id::text, '-'), coalesce(metadata::text, '-'),
                encode(coalesce(payload_bytes, convert_to(payload::text, 'UTF8')), 'hex')
           FROM eventsourced.events, pg_control_system() s, pg_database d
          WHERE d.datname = current_database() ORDER BY position)
     TO STDOUT" >"$work/store.txt"
events=$(wc -l <"$work/store.txt")
echo "# $events events committed, $(wc -l <"$work/stream.txt") messages in the stream"
check "the stream holds every committed event exactly once, in feed order, with the store's payloads and headers" \
    "$(cmp -s "$work/store.txt" "$work/stream.txt" && [ "$events" -gt 100 ] && echo same)" "same"
diff "$work/store.txt" "$work/stream.txt" | head -5 | sed 's/^/# /'
check "per subject the messages come in seq_no order" \
    "$(awk -F'\t' '{ if (($1 in last) && $4 != last[$1] + 1) bad++; last[$1] = $4 } END { print bad + 0 }' "$work/stream.txt")" "0"
check "a type and ids that are not subject tokens are escaped" \
    "$(grep -c '^events\.odd%20type%2E%2A%3E\.x%20y%20' "$work/stream.txt" | awk '$1 > 0 {print "yes"}'):$(grep -c $'\tSh%20ipped%2A\t' "$work/stream.txt" | awk '$1 > 0 {print "yes"}')" "yes:yes"

# Snapshots: each in its type's bucket under its id, escaped as documented,
# a Snapshot whose seq_no is the stream sequence of the event it covers.
q "CREATE FUNCTION esc_with(t text, plain text, e text) RETURNS text LANGUAGE sql AS \$\$
     SELECT string_agg(CASE WHEN chr(b) ~ plain AND b < 128 THEN chr(b)
                       ELSE e || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i)
       FROM (SELECT i, get_byte(convert_to(t, 'UTF8'), i) AS b
               FROM generate_series(0, octet_length(t) - 1) i) s \$\$;
   CREATE FUNCTION esc_bucket(t text) RETURNS text LANGUAGE sql RETURN esc_with(t, '^[A-Za-z0-9-]\$', '_');
   CREATE FUNCTION esc_key(t text) RETURNS text LANGUAGE sql RETURN esc_with(t, '^[A-Za-z0-9_/-]\$', '=')" >/dev/null
"$work/consumer" "$nurl" events >"$work/stream_seq.txt"
kv_snapshots >"$work/kv.txt"
kv_expected "$work/stream_seq.txt" >"$work/kv_expected.txt"
echo "# $(wc -l <"$work/kv_expected.txt") snapshots in the store, $(wc -l <"$work/kv.txt") keys in KV; e.g.:"
head -2 "$work/kv.txt" | sed 's/^/#   /'
check "every snapshot decodes with protoc as Snapshot, in its type's bucket under its id (escaped)" \
    "$(grep -c '^undecodable' "$work/kv.txt"):$(cut -f1,2 "$work/kv.txt" | tr '\n' ' ')" \
    "0:$(cut -f1,2 "$work/kv_expected.txt" | tr '\n' ' ')"
check "each KV snapshot's seq_no is the stream sequence of the event it covers, its state the store's" \
    "$(cmp -s "$work/kv.txt" "$work/kv_expected.txt" && [ "$(wc -l <"$work/kv.txt")" -gt 10 ] && echo same)" "same"
diff "$work/kv.txt" "$work/kv_expected.txt" | head -4 | sed 's/^/# /'
check "a binary snapshot of an event before the entity's last was mirrored too (binary search)" \
    "$(q "SELECT count(*) > 0 FROM eventsourced.snapshots s WHERE state_bytes IS NOT NULL
            AND seq_no < eventsourced.last_seq_no(entity_type, entity_id)")" "t"

# Snapshots saved while the relay is down (killed mid-mirror) arrive after
# its restart; a checkpoint moved back only puts the same values again.
relay_start "$work/late.log" --name main --snapshots
q "SELECT eventsourced.append('cart', 'late' || i, 0, 'E', '{}'),
          eventsourced.save_snapshot('cart', 'late' || i, 1, jsonb_build_object('late', i))
     FROM generate_series(1, 300) i" >/dev/null
sleep 0.3
relay_kill9
q "SELECT eventsourced.save_snapshot('cart', 'late' || i, eventsourced.append('cart', 'late' || i, 1, 'E', '{}'),
                                     jsonb_build_object('later', i))
     FROM generate_series(1, 300, 7) i" >/dev/null
mirrored=$(q "SELECT snapshot_change FROM eventsourced_nats.relays WHERE name = 'main'")
relay_start "$work/late.log" --name main --snapshots
wait_caught_up main && wait_snapshots main
check "snapshots saved while the relay was killed arrive after its restart" \
    "$?:$(q "SELECT count(*) > 0 FROM eventsourced.snapshots WHERE change > $mirrored")" "0:t"
kill "$relay_pid"
wait "$relay_pid"
"$work/consumer" "$nurl" events >"$work/stream_seq.txt"
kv_snapshots >"$work/kv.txt"
kv_expected "$work/stream_seq.txt" >"$work/kv_expected.txt"
check "after kill -9 mid-mirror KV holds every snapshot as the store does" \
    "$(cmp -s "$work/kv.txt" "$work/kv_expected.txt" && [ "$(wc -l <"$work/kv.txt")" -gt 300 ] && echo same)" "same"
diff "$work/kv.txt" "$work/kv_expected.txt" | head -4 | sed 's/^/# /'

# Another --types under the same name is refused; another relay name on
# the same stream finds a last message that is not its own.
"$relay_bin" --source "$src" --nats "$nurl" --name main --types cart --exit-when-idle >"$work/types.log" 2>&1
check "another --types under the same name is refused" \
    "$?:$(grep -c 'use another --name' "$work/types.log")" "1:1"
"$relay_bin" --source "$src" --nats "$nurl" --name other --exit-when-idle >"$work/other.log" 2>&1
check "a stream written by another relay is refused" \
    "$?:$(grep -c 'was not published by relay "other"' "$work/other.log")" "1:1"

# Commands over NATS: the same results as through SQL, error replies with
# the SQLSTATE, and a malformed request does not stop the serving.
q "CREATE FUNCTION acct_fold(state jsonb, event_type text, payload jsonb) RETURNS jsonb
     LANGUAGE plpgsql AS \$\$ BEGIN
       RETURN jsonb_build_object('balance', coalesce((state->>'balance')::int, 0) + (payload->>'n')::int);
     END \$\$;
   CREATE FUNCTION acct_deposit(entity_id text, state jsonb, args jsonb) RETURNS eventsourced.decision
     LANGUAGE plpgsql AS \$\$ BEGIN
       IF (args->>'n')::int > 100 THEN RETURN eventsourced.reject('{\"error\": \"TooMuch\"}'); END IF;
       IF (args->>'n')::int < 0 THEN RAISE EXCEPTION 'negative deposit' USING ERRCODE = '22003'; END IF;
       RETURN eventsourced.emit('Deposited', jsonb_build_object('n', (args->>'n')::int), '{\"ok\": true}');
     END \$\$;
   SELECT eventsourced.register_entity('acct', 'acct_fold(jsonb,text,jsonb)', '{}');
   SELECT eventsourced.register_command('acct', 'Deposit', 'acct_deposit(text,jsonb,jsonb)')" >/dev/null
relay_start "$work/commands.log" --name main --commands --command-workers 2
req() { "$work/consumer" "$nurl" --request "$@" 2>&1; }
sql_cmd() { psql -X -q -t -A -v VERBOSITY=sqlstate -h "$work/pg" -p $pgport -U postgres -d $db \
                 -c "SELECT row_to_json(r) FROM eventsourced.handle_command('acct', 'a sql', '$1', '$2') r" 2>&1; }
for _ in $(seq 50); do grep -q 'serving commands' "$work/commands.log" && break; sleep 0.1; done
nats_side="$(req 'commands.acct.a%20nats.Deposit' '{"n": 5}') $(req 'commands.acct.a%20nats.Deposit' '{"n": 500}')"
sql_side="$(sql_cmd Deposit '{"n": 5}') $(sql_cmd Deposit '{"n": 500}')"
check "accepted and rejected commands over NATS get the results handle_command gives through SQL" \
    "$nats_side" "$sql_side"
echo "# $nats_side"
check "a failing and an unknown command get error replies with the SQLSTATE SQL gives" \
    "$(req 'commands.acct.a%20nats.Deposit' '{"n": -1}' | grep -o '"sqlstate": "[0-9A-Z]*"') $(req 'commands.acct.a%20nats.Withdraw' '{}' | grep -o '"sqlstate": "[0-9A-Z]*"')" \
    "\"sqlstate\": \"$(sql_cmd Deposit '{"n": -1}' | sed -n 's/^ERROR: *//p')\" \"sqlstate\": \"$(sql_cmd Withdraw '{}' | sed -n 's/^ERROR: *//p')\""
check "a malformed body gets an error reply, and the relay keeps serving" \
    "$(req 'commands.acct.a%20nats.Deposit' '{not json' | grep -o '"sqlstate": "22P02"'):$(req 'commands.acct.a%20nats.Deposit' '{"n": 1}' | grep -o '"accepted" *: *true')" \
    '"sqlstate": "22P02":"accepted":true'
before=$(psql -X -q -t -A -h "$work/pg" -p $pgport -U postgres -d $db -c "SELECT eventsourced.last_seq_no('acct', 'a nats')")
first=$(req 'commands.acct.a%20nats.Deposit' '{"n": 7}' 'Eventsourced-Command-Id=dep-1')
again=$(req 'commands.acct.a%20nats.Deposit' '{"n": 9}' 'Eventsourced-Command-Id=dep-1')
after=$(psql -X -q -t -A -h "$work/pg" -p $pgport -U postgres -d $db -c "SELECT eventsourced.last_seq_no('acct', 'a nats')")
check "a retried command id gets the first result, and the command ran once" \
    "$(echo "$first" | grep -c '"accepted" *: *true') $([ "$first" = "$again" ] && echo same) $((after - before))" "1 same 1"
"$work/consumer" "$nurl" --send 'commands.acct.a%20nats.Deposit' 'events.acct.forged' '{"n": 1}'
check "a request whose reply subject is not an inbox gets no reply there (nothing forged into the stream), and the relay serves on" \
    "$(req 'commands.acct.a%20nats.Deposit' '{"n": 1}' | grep -c '"accepted" *: *true'):$("$work/consumer" "$nurl" events | grep -c 'forged')" "1:0"
check "a name escaped in another spelling (%73 for s, lower-case hex) is refused" \
    "$(req 'commands.acct.a%20nat%73.Deposit' '{}' | grep -c '"sqlstate": "22023"'):$(req 'commands.acct.a%2c.Deposit' '{}' | grep -c '"sqlstate": "22023"')" "1:1"
check "a subject without entity type, id and command, or with a bad escape, gets an error reply" \
    "$(req 'commands.acct.only' '{}' | grep -c '"sqlstate": "22023"'):$(req 'commands.acct.a%2.Deposit' '{}' | grep -c '"sqlstate": "22023"')" "1:1"
# The database restarts under the serving relay: the next command runs.
es_as_owner "$ES_PGBIN/pg_ctl" -D "$work/pg/data" -m fast -w restart >/dev/null
check "after a database restart the next command over NATS runs (the relay reconnects first)" \
    "$(req 'commands.acct.a%20nats.Deposit' '{"n": 2}' | grep -c '"accepted" *: *true')" "1"
kill "$relay_pid"
wait "$relay_pid"

# A snapshot larger than max_payload is skipped with a message naming its
# change; the relay goes on with the next one.
q "SELECT eventsourced.append('cart', 'huge-snap', 0, 'E', '{}');
   SELECT eventsourced.save_snapshot_bytes('cart', 'huge-snap', 1, decode(repeat('ab', 1100000), 'hex'));
   SELECT eventsourced.append('cart', 'after-huge', 0, 'E', '{}');
   SELECT eventsourced.save_snapshot('cart', 'after-huge', 1, '{\"ok\": 1}')" >/dev/null
huge=$(q "SELECT change FROM eventsourced.snapshots WHERE entity_id = 'huge-snap'")
timeout 60 "$relay_bin" --source "$src" --nats "$nurl" --name main --snapshots --exit-when-idle >"$work/huge.log" 2>&1
check "a snapshot larger than max_payload is skipped, named; the next one is mirrored" \
    "$?:$(grep -c "skipping snapshot change $huge: its value takes" "$work/huge.log"):$("$work/consumer" "$nurl" KV_snapshots_cart | grep -c $'\t\\$KV.snapshots_cart.after-huge\t'):$(q "SELECT snapshot_change = (SELECT max(change) FROM eventsourced.snapshots) FROM eventsourced_nats.relays WHERE name = 'main'")" \
    "0:1:1:t"

# A stream with a long gap of deleted messages (purges, limits): the
# snapshot of an event behind the gap is found (the relay asks the server
# for the first message at or after a sequence, whatever lies between).
q "SELECT eventsourced.append('gapt', 'g0', 0, 'E', '{}');
   SELECT eventsourced.append('gapt', 'f' || i, 0, 'E', '{}') FROM generate_series(1, 150) i;
   SELECT eventsourced.append('gapt', 'g1', 0, 'E', '{}');
   SELECT eventsourced.append('gapt', 'g1', 1, 'E', '{}')" >/dev/null
timeout 60 "$relay_bin" --source "$src" --nats "$nurl" --name gap --stream gap --types gapt \
    --exit-when-idle >"$work/gap.log" 2>&1
"$work/consumer" "$nurl" --delete gap 2 151 || echo "# the consumer could not delete messages"
q "SELECT eventsourced.save_snapshot('gapt', 'g1', 1, '{\"gap\": 1}')" >/dev/null
timeout 60 "$relay_bin" --source "$src" --nats "$nurl" --name gap --stream gap --types gapt \
    --snapshots --exit-when-idle >>"$work/gap.log" 2>&1
gap_rc=$?
gap_seq=$("$work/consumer" "$nurl" gap | awk -F'\t' '$2 == "gap.gapt.g1" && $5 == 1 { print $1 }')
check "a snapshot of an event behind 150 deleted stream messages is mirrored with its stream sequence" \
    "$gap_rc:$("$work/consumer" "$nurl" gap | grep -c deleted):$("$work/consumer" "$nurl" KV_snapshots_gapt |
        awk -F'\t' '$2 == "$KV.snapshots_gapt.g1" { print $9 }' | xxd -r -p |
        protoc --decode=eventsourced.Snapshot "${proto[@]}" | grep '^seq_no')" "0:150:seq_no: ${gap_seq:-none}"
show "$work/gap.log" 4

# A KV put that JetStream refuses for good (here a bucket made beforehand
# with values of at most 64 bytes) is skipped, naming the change and the
# reason, not retried forever; the next snapshot change is mirrored.
"$work/consumer" "$nurl" --kv-create snapshots_smallkv 64 || echo "# the consumer could not create the bucket"
q "SELECT eventsourced.append('smallkv', 's' || i, 0, 'E', '{}') FROM generate_series(1, 2) i;
   SELECT eventsourced.save_snapshot('smallkv', 's1', 1, jsonb_build_object('big', repeat('x', 200)));
   SELECT eventsourced.save_snapshot('smallkv', 's2', 1, '{\"ok\": 1}')" >/dev/null
small=$(q "SELECT change FROM eventsourced.snapshots WHERE entity_type = 'smallkv' AND entity_id = 's1'")
timeout 60 "$relay_bin" --source "$src" --nats "$nurl" --name smallkv --stream smallkv --types smallkv \
    --snapshots --exit-when-idle >"$work/smallkv.log" 2>&1
check "a KV put refused for good is skipped, naming change and reason; the next one is mirrored" \
    "$?:$(grep -c "skipping snapshot change $small: KV bucket \"snapshots_smallkv\" refused its value of [0-9]* bytes for good: .*(JetStream error 10054)" "$work/smallkv.log"):$("$work/consumer" "$nurl" KV_snapshots_smallkv | cut -f2 | tr '\n' ' ')" \
    "0:1:\$KV.snapshots_smallkv.s2 "
show "$work/smallkv.log" 3

# --max-buckets: no snapshot bucket is created beyond that many; a new
# type's snapshots are then skipped with a message (a role that saves
# snapshots of ever new types cannot make the relay create streams without end).
q "SELECT eventsourced.append('capt', 'c1', 0, 'E', '{}');
   SELECT eventsourced.save_snapshot('capt', 'c1', 1, '{\"cap\": 1}')" >/dev/null
cap=$(q "SELECT change FROM eventsourced.snapshots WHERE entity_type = 'capt'")
timeout 60 "$relay_bin" --source "$src" --nats "$nurl" --name cap --stream cap --types capt \
    --snapshots --max-buckets 2 --exit-when-idle >"$work/cap.log" 2>&1
check "beyond --max-buckets a new type's snapshot is skipped, named, and no bucket is made" \
    "$?:$(grep -c "skipping snapshot change $cap: KV bucket \"snapshots_capt\" does not exist and 2 snapshot buckets do" "$work/cap.log"):$("$work/consumer" "$nurl" KV_snapshots_capt 2>&1 | grep -ci 'not found'):$(q "SELECT snapshot_change >= $cap FROM eventsourced_nats.relays WHERE name = 'cap'")" \
    "0:1:1:t"
show "$work/cap.log" 2

# A snapshot checkpoint at or above the store's feed horizon (a database
# restored from a backup) is refused, naming what to do.
q "UPDATE eventsourced_nats.relays SET snapshot_change = 999999999 WHERE name = 'cap'" >/dev/null
timeout 60 "$relay_bin" --source "$src" --nats "$nurl" --name cap --stream cap --types capt \
    --snapshots --exit-when-idle >"$work/cap_ahead.log" 2>&1
check "a snapshot checkpoint above the feed horizon is refused, naming the buckets' purge" \
    "$?:$(grep -c 'snapshot checkpoint "cap" is at change 999999999, but the store.s feed horizon is [0-9]* (was the database restored from a backup?); refusing to go on: purge the snapshots_\* buckets' "$work/cap_ahead.log")" "1:1"

# An event larger than max_payload (1 MB by default) stops the relay with
# an error naming its position; the events before it are published.
q "SELECT eventsourced.append('cart', 'big-before', 0, 'Small', '{}')" >/dev/null
q "SELECT eventsourced.append_binary('bin', 'big', 0, 'Huge', decode(repeat('ab', 1100000), 'hex'))" >/dev/null
big=$(q "SELECT max(position) FROM eventsourced.events")
"$relay_bin" --source "$src" --nats "$nurl" --name main --exit-when-idle >"$work/big.log" 2>&1
check "an event larger than max_payload stops the relay, naming its position" \
    "$?:$(grep -c "the event at position $big takes" "$work/big.log"):$(q "SELECT position FROM eventsourced_nats.relays WHERE name = 'main'")" \
    "1:1:$((big - 1))"
# The relay as a role with only the grants docs/nats.md lists, in a schema
# an administrator made for it; another role finds that schema not its own.
q "CREATE ROLE es_nats_relay LOGIN; CREATE ROLE es_nats_other LOGIN;
   GRANT USAGE ON SCHEMA eventsourced TO es_nats_relay, es_nats_other;
   GRANT SELECT ON eventsourced.events TO es_nats_relay, es_nats_other;
   GRANT EXECUTE ON FUNCTION eventsourced.read_all(bigint, integer) TO es_nats_relay, es_nats_other;
   GRANT SELECT ON eventsourced.snapshots TO es_nats_relay;
   GRANT EXECUTE ON FUNCTION eventsourced.snapshot_changes(bigint, integer) TO es_nats_relay;
   GRANT EXECUTE ON FUNCTION eventsourced.feed_horizon() TO es_nats_relay;
   ALTER SCHEMA eventsourced_nats RENAME TO eventsourced_nats_super;
   CREATE SCHEMA eventsourced_nats AUTHORIZATION es_nats_relay" >/dev/null
lp="host=$work/pg port=$pgport user=es_nats_relay dbname=$db"
"$relay_bin" --source "$lp" --nats "$nurl" --name lp --stream lp --types cart --snapshots \
    --exit-when-idle -v >"$work/lp.log" 2>&1
check "the relay runs with the documented grants and publishes up to the feed's end (with --snapshots)" \
    "$?:$(q "SELECT position || ' ' || snapshot_change FROM eventsourced_nats.relays WHERE name = 'lp'")" \
    "0:$(q "SELECT max(position) FROM eventsourced.events") $(q "SELECT max(change) FROM eventsourced.snapshots")"
show "$work/lp.log" 8
check "with --types only those types' events are published, each once, in feed order" \
    "$("$work/consumer" "$nurl" lp | cut -f4 | tr '\n' ' ')" \
    "$(q "SELECT position FROM eventsourced.events WHERE entity_type = 'cart' ORDER BY position" | tr '\n' ' ')"
timeout 30 "$relay_bin" --source "host=$work/pg port=$pgport user=es_nats_other dbname=$db" \
    --nats "$nurl" --name lp2 --stream lp --exit-when-idle >"$work/other_role.log" 2>&1
check "a checkpoint schema of another role is refused" \
    "$?:$(grep -c 'must belong to the role the relay connects as' "$work/other_role.log")" "1:1"
show "$work/other_role.log" 6
q "SET client_min_messages = warning; DROP SCHEMA eventsourced_nats CASCADE; ALTER SCHEMA eventsourced_nats_super RENAME TO eventsourced_nats;
   DROP OWNED BY es_nats_relay, es_nats_other; DROP ROLE es_nats_relay, es_nats_other" >/dev/null

# --snapshots on a store still at 0.4.0 is refused with the update to run.
createdb -h "$work/pg" -p $pgport -U postgres es_nats_040
psql -X -q -h "$work/pg" -p $pgport -U postgres -d es_nats_040 \
     -c "CREATE EXTENSION eventsourced VERSION '0.4.0'" -c "SELECT eventsourced.append('cart', 'c', 0, 'E', '{}')" >/dev/null
timeout 30 "$relay_bin" --source "host=$work/pg port=$pgport user=postgres dbname=es_nats_040" --nats "$nurl" \
    --name v040 --stream v040 --snapshots --exit-when-idle >"$work/v040.log" 2>&1
check "--snapshots on a 0.4.0 store is refused, naming the update" \
    "$?:$(grep -c 'run ALTER EXTENSION eventsourced UPDATE' "$work/v040.log")" "1:1"

# A subject longer than nats-server's control line allows stops the relay,
# naming the event's position.
longtype=$(printf '.%.0s' $(seq 255))
q "SELECT eventsourced.append('$longtype', repeat(' ', 1024), 0, 'Long', '{}')" >/dev/null
long=$(q "SELECT max(position) FROM eventsourced.events")
"$relay_bin" --source "$src" --nats "$nurl" --name long --stream long --types "$longtype" \
    --exit-when-idle >"$work/long.log" 2>&1
check "a subject longer than the server's control line stops the relay, naming the position" \
    "$?:$(grep -c "the subject of the event at position $long takes" "$work/long.log")" "1:1"

# A stream that holds positions the store does not have (a database
# restored from a backup under a live stream) is refused.
sysid=$(q "SELECT s.system_identifier || '-' || d.oid FROM pg_control_system() s, pg_database d
           WHERE d.datname = current_database()")
"$work/consumer" "$nurl" --publish events.cart.x '{}' "Nats-Msg-Id=$sysid-999999999" \
    Eventsourced-Relay=main Eventsourced-Position=999999999
"$relay_bin" --source "$src" --nats "$nurl" --name main --exit-when-idle >"$work/ahead.log" 2>&1
check "a stream ahead of the store's feed is refused" \
    "$?:$(grep -c 'holds events up to position 999999999, but the store' "$work/ahead.log")" "1:1"

# NATS authentication: a user with a password (in the URL, as libnats
# takes it) and a user NKey (--nkey, --nkey-seed; the pair made here with
# openssl and the NKey encoding: base32 of prefix, key and CRC-16).  A
# JWT credentials file (--creds) needs an operator set-up (nsc), which this
# test cannot make.
nkey_encode() {   # nkey_encode PREFIX-BYTES-HEX KEY-FILE(DER, key in the last 32 bytes)
    perl -e 'my ($p, $f) = @ARGV; open my $h, "<:raw", $f or die; local $/; my $der = <$h>;
        my $raw = pack("H*", $p) . substr($der, -32); my $crc = 0;
        for my $b (unpack "C*", $raw) { $crc ^= $b << 8;
            for (1 .. 8) { $crc = $crc & 0x8000 ? (($crc << 1) ^ 0x1021) & 0xFFFF : ($crc << 1) & 0xFFFF } }
        my $bits = unpack "B*", $raw . pack("v", $crc); $bits .= "0" x ((5 - length($bits) % 5) % 5);
        print join "", map { substr("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", oct("0b$_"), 1) } $bits =~ /(.{5})/g' "$1" "$2"
}
openssl genpkey -algorithm ed25519 -outform DER -out "$work/nkey.der" 2>/dev/null &&
openssl pkey -inform DER -in "$work/nkey.der" -pubout -outform DER -out "$work/nkey_pub.der" 2>/dev/null ||
    echo "# openssl could not make an ed25519 key"
nkey_pub=$(nkey_encode a0 "$work/nkey_pub.der")       # U...: a user's public key
nkey_encode 9500 "$work/nkey.der" >"$work/nkey.seed"   # SU...: its seed
chmod 600 "$work/nkey.seed"
cat >"$work/auth.conf" <<CONF
listen: 127.0.0.1:$nport
jetstream { store_dir: "$work/js" }
authorization { users = [ { user: relay, password: "s3cret" }, { nkey: $nkey_pub } ] }
CONF
nats_stop
nats-server -c "$work/auth.conf" >>"$work/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 50); do grep -q "Server is ready" "$work/nats.log" && break; sleep 0.1; done
feed_end=$(q "SELECT max(position) FROM eventsourced.events")
timeout 30 "$relay_bin" --source "$src" --nats "nats://relay:s3cret@127.0.0.1:$nport" --name auth1 \
    --stream auth1 --types cart --exit-when-idle >"$work/auth1.log" 2>&1
check "with a user and password in the URL the relay publishes" \
    "$?:$(q "SELECT position FROM eventsourced_nats.relays WHERE name = 'auth1'")" "0:$feed_end"
timeout 30 "$relay_bin" --source "$src" --nats "nats://127.0.0.1:$nport" --name auth2 --stream auth2 \
    --types cart --nkey "$nkey_pub" --nkey-seed "$work/nkey.seed" --exit-when-idle >"$work/auth2.log" 2>&1
check "with --nkey and --nkey-seed the relay publishes" \
    "$?:$(q "SELECT position FROM eventsourced_nats.relays WHERE name = 'auth2'")" "0:$feed_end"
timeout 30 "$relay_bin" --source "$src" --nats "nats://127.0.0.1:$nport" --name auth2 --stream auth2 \
    --types cart --nkey "$nkey_pub" --nkey-seed "$work/missing.seed" --exit-when-idle >"$work/auth4.log" 2>&1
check "a missing --nkey-seed file is named and refused at start, not retried" \
    "$?:$(grep -c "cannot read --nkey-seed file \"$work/missing.seed\": No such file or directory" "$work/auth4.log")" "2:1"
timeout 3 "$relay_bin" --source "$src" --nats "nats://relay:wrong@127.0.0.1:$nport" --name auth3 \
    --stream auth3 --exit-when-idle >"$work/auth3.log" 2>&1
check "a wrong password is refused by nats-server, and retried; the password is not shown" \
    "$?:$(grep -c 'cannot connect to nats-server at nats://127.0.0.1:[0-9]* (user and password hidden): Authentication Violation' "$work/auth3.log" | awk '$1 >= 1 {print "yes"}')" "124:yes"
show "$work/auth3.log" 2

# TLS: nats-server again, with a certificate of a CA made here.  The relay
# connects with --tls-ca, and refuses the server without it.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=es-test-ca -keyout "$work/ca.key" \
    -out "$work/ca.pem" -addext basicConstraints=critical,CA:TRUE 2>/dev/null &&
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout "$work/server.key" \
    -out "$work/server.csr" 2>/dev/null &&
printf 'subjectAltName=IP:127.0.0.1\n' >"$work/san.ext" &&
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null ||
    echo "# openssl could not make the certificates"
nats_stop
nats-server -a 127.0.0.1 -p "$nport" -js -sd "$work/js" --tls --tlscert "$work/server.pem" \
    --tlskey "$work/server.key" >>"$work/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 50); do grep -q "Server is ready" "$work/nats.log" && break; sleep 0.1; done
timeout 30 "$relay_bin" --source "$src" --nats "$nurl" --name tls --stream tls --types cart \
    --tls-ca "$work/ca.pem" --exit-when-idle >"$work/tls.log" 2>&1
check "the relay publishes over TLS with --tls-ca" \
    "$?:$(q "SELECT position FROM eventsourced_nats.relays WHERE name = 'tls'")" \
    "0:$(q "SELECT max(position) FROM eventsourced.events")"
timeout 3 "$relay_bin" --source "$src" --nats "$nurl" --name tls2 --stream tls --tls \
    --exit-when-idle >"$work/tls2.log" 2>&1
check "a server whose certificate it cannot verify is refused, and retried" \
    "$?:$(grep -c 'cannot connect to nats-server' "$work/tls2.log" | awk '$1 >= 1 {print "yes"}')" "124:yes"
show "$work/tls2.log" 2

echo "# what the relay said about failures and reconciliation:"
grep -E 'refused a message|no acknowledgement|holds events up to|publishing failed' "$work/relay.log" | sort | uniq -c | sed 's/^/# /'
