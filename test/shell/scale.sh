#!/usr/bin/env bash
# checks: 44 (test/run fails when a different number of checks ran)
# The sharded deployment (docs/scale-out.md): test/scale/cluster starts two
# shards and a proxy (ports from ES_SCALE_PORT, default PGPORT + 2), and
# this test checks through the proxy: the hash against its test vectors and
# an independent md5sum, routing, the append and command regression files
# compared statement by statement with a direct server (the only differences
# being the documented ones), SC001 with its DETAIL, the append_conflict and
# command_serialize interleavings (a shard-side transaction holds the
# entity while proxy clients wait), administrative calls on every shard,
# what differs (ROLLBACK, LISTEN), roles reaching the shards as themselves,
# the cross-shard feed under concurrent writers, and one shard stopped and
# restarted.  Waits are bounded, never timed.  Uses PGHOST/PGPORT/PGUSER for
# the direct server of the comparisons.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/test/cluster.sh"
work=$(mktemp -d /tmp/es_scale.XXXXXX)
chmod 755 "$work"
direct_db=es_scale_direct
export ES_SCALE_PORT=${ES_SCALE_PORT:-$((PGPORT + 2))}
cleanup() {
    jobs -p | xargs -r kill 2>/dev/null
    "$root/test/scale/cluster" stop "$work/set"
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $direct_db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}

if ! timeout 120 "$root/test/scale/cluster" start "$work/set" --shards 2 --partitions 16 >"$work/start.log" 2>&1; then
    cat "$work/start.log"
    check "scale set-up starts" "failed" "started"
    exit 1
fi
check "scale set-up starts" "started" "started"
. "$work/set/env"
proxy="host=$PROXY_HOST port=$PROXY_PORT dbname=es user=postgres"
shard=()
for i in 0 1; do shard+=("host=${SHARD_HOSTS[$i]} port=${SHARD_PORTS[$i]} dbname=${SHARD_DBS[$i]} user=postgres"); done
# q CONNSTR SQL: tuples only, unaligned, errors on stderr
q() { timeout 60 psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
# The SQLSTATE, message and DETAIL a statement fails with, one line.
err() { timeout 60 psql -X -q -t -A -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d "$1" -c "$2" 2>&1 |
        grep -E '^(ERROR|DETAIL):' | tr '\n' ' ' | sed 's/ *$//'; }

# --- the hash: the documented vectors, and md5sum computing the same
hash_sh() {   # hash_sh TYPE ID: entity_hash computed by md5sum
    local hex v
    hex=$(printf '%s:%s%s' "$(printf %s "$1" | wc -c)" "$1" "$2" | md5sum | cut -c1-8)
    v=$((16#$hex)); [ $v -ge 2147483648 ] && v=$((v - 4294967296))
    echo $v
}
vectors=$(q "$proxy" "SELECT string_agg(eventsourced.entity_hash(t, i)::text, ' ' ORDER BY n)
    FROM (VALUES (1, 'account', 'a1'), (2, 'counter', 'c1'), (3, 'a', 'bc'), (4, 'ab', 'c'),
                 (5, 'zähler', 'ü-1'), (6, 't', '')) v(n, t, i)")
check "entity_hash gives the documented test vectors" "$vectors" \
      "-711212221 -155558567 895546579 636432119 984423525 1524745275"
check "md5sum computes the same hashes" \
      "$(hash_sh account a1) $(hash_sh counter c1) $(hash_sh a bc) $(hash_sh ab c) $(hash_sh zähler ü-1) $(hash_sh t '')" "$vectors"

# --- routing: each entity lands on the shard holding its partition
q "$proxy" "SELECT eventsourced.append('route', 'e' || i, 0, 'E', '{}') FROM generate_series(1, 40) i" >/dev/null
expected=$(q "$proxy" "SELECT string_agg(i || '@' || s.shard, ' ' ORDER BY i)
    FROM generate_series(1, 40) i, eventsourced.shards() s
   WHERE eventsourced.entity_partition('route', 'e' || i) = ANY (s.partitions)")
actual=$( { q "${shard[0]}" "SELECT substr(entity_id, 2) || '@0' FROM eventsourced.events WHERE entity_type = 'route'"
            q "${shard[1]}" "SELECT substr(entity_id, 2) || '@1' FROM eventsourced.events WHERE entity_type = 'route'"; } |
          sort -n | tr '\n' ' ' | sed 's/ $//')
check "each entity is stored on the shard of its partition (both shards used)" \
      "$actual|$(echo "$actual" | grep -c '@0').$(echo "$actual" | grep -c '@1')" "$expected|1.1"

# append_pb: routed by the entity read from the EventBatch's bytes (a third
# of the batches start with an unknown fixed64 field, which protobuf skips,
# a third with a last_position of the longest varint, 10 bytes)
q "$proxy" "SELECT eventsourced.append_pb(
        CASE i % 3 WHEN 0 THEN '\\x790102030405060708'::bytea
                   WHEN 1 THEN '\\x1080808080808080808001'::bytea ELSE ''::bytea END
        || '\\x0a'::bytea || set_byte('\\x00'::bytea, 0, octet_length(ev)) || ev, 0)
      FROM (SELECT i, '\\x1203706272'::bytea || '\\x1a'::bytea
                      || set_byte('\\x00'::bytea, 0, octet_length(convert_to('e' || i, 'UTF8')))
                      || convert_to('e' || i, 'UTF8') || '\\x2a0145'::bytea || '\\x32027b7d'::bytea AS ev
              FROM generate_series(1, 20) i) b" >/dev/null
expected=$(q "$proxy" "SELECT string_agg(i || '@' || s.shard, ' ' ORDER BY i)
    FROM generate_series(1, 20) i, eventsourced.shards() s
   WHERE eventsourced.entity_partition('pbr', 'e' || i) = ANY (s.partitions)")
actual=$( { q "${shard[0]}" "SELECT substr(entity_id, 2) || '@0' FROM eventsourced.events WHERE entity_type = 'pbr'"
            q "${shard[1]}" "SELECT substr(entity_id, 2) || '@1' FROM eventsourced.events WHERE entity_type = 'pbr'"; } |
          sort -n | tr '\n' ' ' | sed 's/ $//')
check "append_pb stores each batch on the shard of its entity's partition" "$actual" "$expected"

# --- the regression files, directly and through the proxy
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $direct_db" -c "CREATE DATABASE $direct_db" >/dev/null 2>&1
q "dbname=$direct_db" "CREATE EXTENSION eventsourced"
compare() {   # compare FILE: the statements whose results differ, one line each
    timeout 300 "$root/test/scale/compare" "$root/sql/$1" "dbname=$direct_db" "$proxy" "${shard[@]}" \
        >"$work/compare.$1" 2>&1
    grep '^compared ' "$work/compare.$1"
    grep '^differs: ' "$work/compare.$1"
}
out=$(compare append.sql)
# Only the documented difference: a transaction on the proxy does not span
# the shards (ROLLBACK keeps the append, so later appends to that entity
# conflict; now() is the shard's; READ ONLY does not reach the shard).
want="compared 68
differs: SELECT recorded_at = now() AS is_now FROM eventsourced.events_by_id('account', 'a4');
differs: SELECT eventsourced.last_seq_no('account', 'a5');
differs: SELECT eventsourced.append('account', 'a5', 0, 'Opened', '{}');
differs: SELECT eventsourced.append('account', 'a5', 1, 'Deposited', '{}');
differs: SELECT eventsourced.last_seq_no('account', 'a5');
differs: SELECT eventsourced.append('account', 'a6', 0, 'Opened', '{}');"
check "sql/append.sql through the proxy: same results and errors but for transactions" "$out" "$want"
[ "$out" = "$want" ] || cat "$work/compare.append.sql"
out=$(compare command.sql)
want="compared 82
differs: SELECT accepted, rejection FROM eventsourced.handle_command('ledger', 'l1', 'Add', '{\"n\": 1}');"
check "sql/command.sql through the proxy: same results and errors but for a rolled-back registration" "$out" "$want"
[ "$out" = "$want" ] || cat "$work/compare.command.sql"
out=$(compare snapshot.sql)
want="compared 26
differs: SELECT seq_no FROM eventsourced.load_snapshot('counter', 'k1');
differs: SELECT eventsourced.save_snapshot('counter', 'k1', 4, '{}');"
check "sql/snapshot.sql through the proxy: same results and errors but after a ROLLBACK" "$out" "$want"
[ "$out" = "$want" ] || cat "$work/compare.snapshot.sql"
out=$(compare protobuf.sql)
check "sql/protobuf.sql through the proxy (append_pb routed by the batch's entity): same results and errors" \
      "$out" "compared 52"
[ "$out" = "compared 52" ] || cat "$work/compare.protobuf.sql"

# --- SC001 with its DETAIL, and one batch stays atomic
q "$proxy" "SELECT eventsourced.append('acct', 'sc', 0, 'Opened', '{}')" >/dev/null
check "SC001 reaches the client with PL/Proxy's prefix and the DETAIL" \
      "$(err "$proxy" "SELECT eventsourced.append('acct', 'sc', 0, 'Again', '{}')")" \
      "ERROR:  SC001: eventsourced.append(7): [$(q "$proxy" "SELECT CASE WHEN eventsourced.entity_partition('acct', 'sc') % 2 = 0 THEN 'es_shard0' ELSE 'es_shard1' END")] REMOTE ERROR: sequence conflict on entity \"acct\"/\"sc\" DETAIL:  Remote detail: Expected last seq_no 0, actual last seq_no 1."
err "$proxy" "SELECT eventsourced.append('acct', 'sc', 1, ARRAY[eventsourced.event('A', '{}'), eventsourced.event(NULL, '{}')])" >/dev/null
check "a multi-event append through the proxy is all or nothing" \
      "$(q "$proxy" "SELECT eventsourced.last_seq_no('acct', 'sc')")" "1"

# --- interleavings: a transaction on the shard holds the entity while
# proxy clients wait for it (append_conflict, command_serialize)
holder() {   # holder SHARD_CONNSTR: a psql session fed through fd 7
    rm -f "$work/fifo"; mkfifo "$work/fifo"
    timeout 120 psql -X -q -t -A -d "$1" <"$work/fifo" >"$work/holder.out" 2>&1 &
    holder_pid=$!
    exec 7>"$work/fifo"
}
wait_until() {   # wait_until CONNSTR CONDITION: until a backend there matches it (bounded)
    local n
    for n in $(seq 1 300); do
        [ "$(q "$1" "SELECT count(*) FROM pg_stat_activity WHERE $2")" -gt 0 ] && return 0
        sleep 0.1
    done
    return 1
}
owner_of() {   # owner_of TYPE ID: the connection string of the entity's shard
    local s
    s=$(q "$proxy" "SELECT s.shard FROM eventsourced.shards() s WHERE eventsourced.entity_partition('$1', '$2') = ANY (s.partitions)")
    [ "$s" = 0 ] && echo "${shard[0]}" || echo "${shard[1]}"
}
interleave() {   # interleave TYPE ID HOLDER_SQL END PROXY_SQL: what the proxy client got
    local target
    target=$(owner_of "$1" "$2")
    holder "$target"
    printf 'BEGIN;\n%s;\n' "$3" >&7
    wait_until "$target" "state = 'idle in transaction' AND query NOT LIKE 'BEGIN%'" || echo "the holder never ran" >>"$work/client.out"
    timeout 60 psql -X -q -t -A -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d "$proxy" -c "$5" \
        >"$work/client.out" 2>&1 &
    local client=$!
    wait_until "$target" "wait_event_type = 'Lock'" || echo "the proxy client never waited" >>"$work/client.out"
    printf '%s;\n' "$4" >&7
    exec 7>&-
    wait $client $holder_pid
    grep -E '^(ERROR|DETAIL):|^[^L]' "$work/client.out" | grep -v '^LOCATION' | tr '\n' ' ' | sed 's/ *$//'
}
q "$proxy" "SELECT eventsourced.append('acct', 'x', 0, 'Opened', '{}')" >/dev/null
got=$(interleave acct x "SELECT eventsourced.append('acct', 'x', 1, 'ByS1', '{}')" COMMIT \
      "SELECT eventsourced.append('acct', 'x', 1, 'ByS2', '{}')")
check "append_conflict: the proxy client waits for the holder, then gets SC001" \
      "$(echo "$got" | sed 's/\[es_shard[01]\]/[shard]/')" \
      'ERROR:  SC001: eventsourced.append(7): [shard] REMOTE ERROR: sequence conflict on entity "acct"/"x" DETAIL:  Remote detail: Expected last seq_no 1, actual last seq_no 2. HINT:  Remote hint: Read the entity'"'"'s new events and decide again.'
got=$(interleave acct x "SELECT eventsourced.append('acct', 'x', 2, 'ByS1', '{}')" ROLLBACK \
      "SELECT eventsourced.append('acct', 'x', 2, 'ByS2', '{}')")
check "append_conflict: the holder rolls back, the proxy client wins" \
      "$got|$(q "$proxy" "SELECT string_agg(event_type, ',' ORDER BY seq_no) FROM eventsourced.events_by_id('acct', 'x')")" \
      "3|Opened,ByS1,ByS2"
for i in 0 1; do
    q "${shard[$i]}" "CREATE FUNCTION public.iso_apply(state jsonb, event_type text, payload jsonb)
        RETURNS jsonb LANGUAGE sql
        RETURN jsonb_set(state, ARRAY['tags'], (state->'tags') || jsonb_build_array(payload->'tag'));
      CREATE FUNCTION public.iso_tag(entity_id text, state jsonb, args jsonb)
        RETURNS eventsourced.decision LANGUAGE sql
        RETURN eventsourced.emit('Tagged', jsonb_build_object('tag', args->'tag', 'saw', state->'tags'))"
done
reg=$(q "$proxy" "SELECT count(*) FROM eventsourced.register_entity('iso', 'public.iso_apply(jsonb, text, jsonb)', '{\"tags\": []}', 2)")
reg+=.$(q "$proxy" "SELECT count(*) FROM eventsourced.register_command('iso', 'Tag', 'public.iso_tag(text, jsonb, jsonb)')")
check "registrations through the proxy return a row per shard" "$reg" "2.2"
got=$(interleave iso e1 "SELECT eventsourced.handle_command('iso', 'e1', 'Tag', '{\"tag\": \"a\"}')" COMMIT \
      "SELECT accepted, seq_no, state FROM eventsourced.handle_command('iso', 'e1', 'Tag', '{\"tag\": \"b\"}')")
check "command_serialize: the proxy's command waits, then sees the first one's event" \
      "$got" 't|2|{"tags": ["a", "b"]}'
got=$(interleave iso e2 "SELECT eventsourced.handle_command('iso', 'e2', 'Tag', '{\"tag\": \"a\"}')" ROLLBACK \
      "SELECT accepted, seq_no, state FROM eventsourced.handle_command('iso', 'e2', 'Tag', '{\"tag\": \"b\"}')")
check "command_serialize: the first rolls back, the proxy's command sees nothing" \
      "$got" 't|1|{"tags": ["b"]}'

# --- administrative calls: a failure names the shard, a re-run converges
q "${shard[1]}" "DROP FUNCTION public.iso_tag(text, jsonb, jsonb)"
check "a registration failing on one shard names that shard" \
      "$(err "$proxy" "SELECT * FROM eventsourced.register_command('iso', 'Tag2', 'public.iso_tag(text, jsonb, jsonb)')" | grep -o '\[es_shard[01]\] REMOTE ERROR: function "public.iso_tag(text, jsonb, jsonb)" does not exist')" \
      '[es_shard1] REMOTE ERROR: function "public.iso_tag(text, jsonb, jsonb)" does not exist'
q "${shard[1]}" "CREATE FUNCTION public.iso_tag(entity_id text, state jsonb, args jsonb)
    RETURNS eventsourced.decision LANGUAGE sql
    RETURN eventsourced.emit('Tagged', jsonb_build_object('tag', args->'tag', 'saw', state->'tags'))"
check "re-running it converges: every shard has the command" \
      "$(q "$proxy" "SELECT string_agg(shard, ',' ORDER BY shard) FROM eventsourced.register_command('iso', 'Tag2', 'public.iso_tag(text, jsonb, jsonb)')")|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.commands WHERE command = 'Tag2'")$(q "${shard[1]}" "SELECT count(*) FROM eventsourced.commands WHERE command = 'Tag2'")" \
      "shard0 es_shard0 port ${SHARD_PORTS[0]},shard1 es_shard1 port ${SHARD_PORTS[1]}|11"
for i in 0 1; do
    q "${shard[$i]}" "CREATE TABLE public.tag_count (n bigint); INSERT INTO public.tag_count VALUES (0);
      CREATE FUNCTION public.count_tag(entity_id text, seq_no bigint, event_type text, payload jsonb, pos bigint)
        RETURNS void LANGUAGE sql BEGIN ATOMIC UPDATE public.tag_count SET n = n + 1; END"
done
first=$(q "$proxy" "SELECT string_agg(created::text, ',') FROM eventsourced.create_projection('tags', 'iso', 'public.count_tag(text, bigint, text, jsonb, bigint)')")
again=$(q "$proxy" "SELECT string_agg(created::text, ',') FROM eventsourced.create_projection('tags', 'iso', 'public.count_tag(text, bigint, text, jsonb, bigint)')")
applied=$(q "$proxy" "SELECT sum(applied) FROM eventsourced.run_projection('tags')")
check "create_projection on every shard, again: nothing to do; each shard projects its events" \
      "$first|$again|$applied" "true,true|false,false|$(q "$proxy" "SELECT count(*) FROM eventsourced.events_by_type_shards('iso')")"

# --- what differs: ROLLBACK does not undo a proxy call; LISTEN on the proxy hears nothing
q "$proxy" "BEGIN; SELECT eventsourced.append('acct', 'rb', 0, 'Opened', '{}'); ROLLBACK" >/dev/null
check "ROLLBACK on the proxy does not undo an append already run on its shard" \
      "$(q "$proxy" "SELECT eventsourced.last_seq_no('acct', 'rb')")" "1"
listen() {   # listen CONNSTR: LISTEN there while another session appends through the proxy
    printf 'LISTEN eventsourced;\n\\! psql -X -q -d "%s" -c "SELECT eventsourced.append(%s, NULL, %s, %s)" >/dev/null\nSELECT 1;\n' \
        "$proxy" "'acct', 'l1'" "'E'" "'{}'" |
        timeout 60 psql -X -q -t -A -d "$1" 2>&1 | grep -c 'Asynchronous notification "eventsourced"'
}
check "LISTEN on the entity's shard hears an append, on the proxy nothing" \
      "$(listen "$(owner_of acct l1)"),$(listen "$proxy")" "1,0"

# --- roles reach the shards as themselves
for c in "${shard[@]}"; do
    q "$c" "CREATE ROLE scale_app LOGIN; GRANT USAGE ON SCHEMA eventsourced TO scale_app;
            GRANT EXECUTE ON FUNCTION eventsourced.handle_command(text, text, text, jsonb) TO scale_app" >/dev/null
done
q "$proxy" "CREATE ROLE scale_app; CREATE ROLE scale_other;
    CREATE USER MAPPING FOR scale_app SERVER eventsourced_cluster OPTIONS (user 'scale_app');
    GRANT USAGE ON FOREIGN SERVER eventsourced_cluster TO scale_app, scale_other;
    GRANT USAGE ON SCHEMA eventsourced TO scale_app, scale_other;
    GRANT EXECUTE ON FUNCTION eventsourced.handle_command(text, text, text, jsonb),
        eventsourced.append(text, text, bigint, text, jsonb, jsonb, uuid) TO scale_app, scale_other" >/dev/null
q "$proxy" "SET ROLE scale_app; SELECT eventsourced.handle_command('iso', 'who', 'Tag', '{\"tag\": \"x\"}')" >/dev/null
who=$(q "$(owner_of iso who)" "SELECT count(*) FROM eventsourced.events WHERE entity_id = 'who'")
denied=$(err "$proxy" "SET ROLE scale_app; SELECT eventsourced.append('acct', 'who', NULL, 'E', '{}')" | grep -o '42501: .*REMOTE ERROR: permission denied for function append')
nomap=$(err "$proxy" "SET ROLE scale_other; SELECT eventsourced.append('acct', 'who', NULL, 'E', '{}')" | grep -c 'user mapping not found for "scale_other"')
public=$(q "$proxy" "SELECT count(*) FROM pg_user_mappings WHERE usename = 'public'")
check "a role's calls run on the shard as that role (its grants there decide; no mapping, no access; no PUBLIC mapping)" \
      "$who|$denied|$nomap|$public" \
      "1|42501: eventsourced.append(7): [$(owner_of acct who | sed 's/.*dbname=\([a-z_0-9]*\).*/\1/')] REMOTE ERROR: permission denied for function append|1|0"

check "a role with USAGE on the cluster cannot map itself to another user" \
      "$(err "$proxy" "SET ROLE scale_other; CREATE USER MAPPING FOR scale_other SERVER eventsourced_cluster OPTIONS (user 'postgres')")|$(q "$proxy" "SELECT count(*) FROM pg_user_mappings WHERE usename = 'scale_other'")" \
      "ERROR:  42501: permission denied to create user mapping DETAIL:  In a database with eventsourced_proxy only superusers create or change user mappings.|0"

# --- the feed across shards under concurrent writers: every event once,
# by a reader of the rows and, at the same time, by a reader of ShardBatches
rm -f "$work/writers.done"
( for w in 1 2 3 4; do
      timeout 120 psql -X -q -d "$proxy" -c "DO \$\$ BEGIN FOR i IN 1..150 LOOP
          PERFORM eventsourced.append('feed', 'w$w-' || (i % 20), NULL, 'E', jsonb_build_object('i', i),
                                      jsonb_build_object('w', $w), gen_random_uuid());
        END LOOP; END \$\$" >/dev/null 2>&1 &
  done
  wait
  touch "$work/writers.done" ) &
# pb_lines FILE: a decoded ShardBatch's events, one line each:
# position|entity_type|entity_id|seq_no|event_type|payload|metadata|event_id|recorded_at
pb_lines() {
    awk '/^events \{/ {split("", f); next}
         /^\}/ {print f["position"] "|" f["entity_type"] "|" f["entity_id"] "|" f["seq_no"] "|" f["event_type"] "|" \
                      f["payload"] "|" f["metadata"] "|" f["event_id"] "|" f["recorded_at"]; next}
         /^  [a-z_]+: / {k = $1; sub(/:$/, "", k); v = $0; sub(/^  [a-z_]+: /, "", v)
                         if (v ~ /^".*"$/) {v = substr(v, 2, length(v) - 2); gsub(/\\"/, "\"", v); gsub(/\\\\/, "\\", v)}
                         f[k] = v}' "$1"
}
# decode TYPE: protoc's text form of the message on stdin (hex)
decode() { xxd -r -p | protoc --decode="eventsourced.$1" -I "$root/proto" "$root/proto/eventsourced_proxy.proto"; }
pb_reader() {   # follows read_all_shards_pb with its token until the writers are done and a page is empty
    local n done token=""
    for n in $(seq 1 2000); do
        done=no; [ -e "$work/writers.done" ] && done=yes
        q "$proxy" "SELECT encode(eventsourced.read_all_shards_pb('$token', 37), 'hex')" |
            decode ShardBatch >"$work/page.pb.txt" || { echo "page failed" >>"$work/feed_pb.lines"; return; }
        pb_lines "$work/page.pb.txt" >>"$work/feed_pb.lines"
        token=$(sed -n 's/^token: "\(.*\)"$/\1/p' "$work/page.pb.txt")
        grep -q '^events {' "$work/page.pb.txt" || [ $done = no ] || return
    done
}
: >"$work/feed_pb.lines"
pb_reader &
pb_reader_pid=$!
token=""
: >"$work/feed.txt"
for n in $(seq 1 2000); do
    done=no; [ -e "$work/writers.done" ] && done=yes
    page=$(q "$proxy" "SELECT token, entity_type || '/' || entity_id || '/' || seq_no
                         FROM eventsourced.read_all_shards('$token', 37)") || break
    if [ -n "$page" ]; then
        echo "$page" | cut -d'|' -f2 >>"$work/feed.txt"
        token=$(echo "$page" | tail -1 | cut -d'|' -f1)
    elif [ $done = yes ]; then
        break
    fi
done
wait
all=$( { q "${shard[0]}" "SELECT entity_type || '/' || entity_id || '/' || seq_no FROM eventsourced.events"
         q "${shard[1]}" "SELECT entity_type || '/' || entity_id || '/' || seq_no FROM eventsourced.events"; } | sort)
check "a reader following read_all_shards with its token gets every event exactly once" \
      "$(sort "$work/feed.txt" | md5sum)|$(sort "$work/feed.txt" | uniq -d | wc -l)|$(grep -c '^feed/' "$work/feed.txt")" \
      "$(echo "$all" | md5sum)|0|600"
cut -d'|' -f2-4 "$work/feed_pb.lines" | tr '|' / | sort >"$work/feed_pb.ids"
# (every event counted once; the feed's, whose names are plain ASCII as
# protoc prints them, compared one by one)
check "a reader following read_all_shards_pb at the same time gets every event exactly once" \
      "$(wc -l <"$work/feed_pb.ids")|$(uniq -d "$work/feed_pb.ids" | wc -l)|$(grep '^feed/' "$work/feed_pb.ids" | md5sum)" \
      "$(echo "$all" | wc -l)|0|$(echo "$all" | grep '^feed/' | md5sum)"
check "events_by_type_shards reads one type from every shard" \
      "$(q "$proxy" "SELECT count(*), count(DISTINCT shard) FROM eventsourced.events_by_type_shards('feed', '', 10000)")" "600|2"
# The same contents in both forms: the rows rendered as protoc renders the
# events (JSON as text, recorded_at in microseconds since 1970)
rows=$(q "$proxy" "SELECT position || '|feed|' || entity_id || '|' || seq_no || '|' || event_type || '|' || payload
                          || '|' || coalesce(metadata::text, '') || '|' || coalesce(event_id::text, '') || '|'
                          || (extract(epoch FROM recorded_at) * 1000000)::bigint
                     FROM eventsourced.events_by_type_shards('feed', '', 10000)" | sort)
q "$proxy" "SELECT encode(eventsourced.events_by_type_shards_pb('feed', '', 10000), 'hex')" | decode ShardBatch >"$work/bytype.pb.txt"
q "$proxy" "SELECT encode(eventsourced.events_by_type_shards_pb('feed', '', 10000), 'hex')" | decode EventBatch >"$work/bytype.eb.txt"
check "ShardBatches hold the rows' contents (read_all_shards_pb, events_by_type_shards_pb, and as EventBatch)" \
      "$(grep '|feed|' "$work/feed_pb.lines" | sort | md5sum)|$(pb_lines "$work/bytype.pb.txt" | sort | md5sum)|$(pb_lines "$work/bytype.eb.txt" | sort | md5sum)|$(grep -c . <<<"$rows")" \
      "$(md5sum <<<"$rows")|$(md5sum <<<"$rows")|$(md5sum <<<"$rows")|600"
pbtok=$(sed -n 's/^token: "\(.*\)"$/\1/p' "$work/bytype.pb.txt")
rowtok=$(q "$proxy" "SELECT token FROM eventsourced.events_by_type_shards('feed', '', 10000) WITH ORDINALITY r ORDER BY r.ordinality DESC LIMIT 1")
check "the ShardBatch's token is at or past the rows' last token, and nothing follows it" \
      "$(q "$proxy" "SELECT bool_and(split_part(a, ':', 1) = split_part(b, ':', 1)
                                    AND split_part(a, ':', 2)::bigint >= split_part(b, ':', 2)::bigint)
                       FROM unnest(string_to_array('$pbtok', ','), string_to_array('$rowtok', ',')) u(a, b)")|$(q "$proxy" "SELECT count(*) FROM eventsourced.events_by_type_shards('feed', '$pbtok')")|$(q "$proxy" "SELECT encode(eventsourced.events_by_type_shards_pb('feed', '$pbtok'), 'hex')" | decode ShardBatch | grep -c '^events {')" \
      "t|0|0"

# --- the protobuf feed against hostile input: tokens, sizes, bytes, rights
k0=$(q "$proxy" "SELECT token_key FROM eventsourced.shards() WHERE shard = 0")
k1=$(q "$proxy" "SELECT token_key FROM eventsourced.shards() WHERE shard = 1")
codes=""
for call in "read_all_shards_pb('$k0:1,x', 10)" "read_all_shards_pb('$k0:1,$k1:99999999999999999999', 10)" \
            "read_all_shards_pb('0:1,1:1', 10)" "read_all_shards_pb(NULL, 10)" "read_all_shards_pb('', -1)" \
            "read_all_shards_pb('', NULL)" "events_by_type_shards_pb('feed', '$k0:-1', 10)" \
            "pb_batch_split('\\x0a05')" "pb_batch_split('\\x0a0010ff')" \
            "pb_batch_split('\\x10ffffffffffffffffff01')" "pb_batch_split('\\x0a')" \
            "read_all_shards_pb('$k0:1,$k1:1,$k0:2', 10)" "read_all_shards('$(printf "$k0:1,%.0s" $(seq 1 5000))$k1:1')" \
            "read_all_shards('$k1:5,$k1:5')"; do
    codes+="$(err "$proxy" "SELECT eventsourced.$call" | grep -o '^ERROR:  [0-9A-Z]\{5\}' | cut -c9-) "
done
check "the feed refuses malformed and 0.1.0 tokens, NULLs, negative sizes, bytes that are no shard's batch, a server twice, too many pairs" \
      "$codes" "22023 22023 22023 22004 22023 22004 22023 22P03 22P03 22P03 22P03 22023 22023 22023 "
check "the refusals of a 0.1.0 token and of a server named twice say so" \
      "$(err "$proxy" "SELECT eventsourced.read_all_shards('0:100,1:50')" | grep -o 'ERROR:  22023: [a-z0-9_ .]*' | sed 's/ *$//')|$(err "$proxy" "SELECT eventsourced.read_all_shards_pb('$k0:1,$k0:1')" | grep -o "ERROR:  22023: [a-z .]* DETAIL:  Keys named more than once: $k0.")" \
      "ERROR:  22023: resume token of eventsourced_proxy 0.1.0|ERROR:  22023: resume token names a server twice DETAIL:  Keys named more than once: $k0."

# --- a token keyed by server survives a change of the cluster: p1 moves to
# a new database es_c holding 5 events; a token of the old cluster reads
# exactly es_c's events (shard1 keeps its position under its own key, though
# its lowest partition is now 3), and after p1 returns, a token of the
# changed cluster reads nothing more
shard1_pg="host=${SHARD_HOSTS[1]} port=${SHARD_PORTS[1]} dbname=postgres user=postgres"
c_conn="host=${SHARD_HOSTS[1]} port=${SHARD_PORTS[1]} dbname=es_c"
q "$shard1_pg" "CREATE DATABASE es_c" >/dev/null
q "$c_conn user=postgres" "CREATE EXTENSION eventsourced;
    SELECT eventsourced.append('cx', 'c' || i, 0, 'E', '{}') FROM generate_series(1, 5) i" >/dev/null
end_token() {   # end_token: the token after the last row of the whole feed
    q "$proxy" "SELECT token FROM eventsourced.read_all_shards('', 1000000) WITH ORDINALITY r ORDER BY r.ordinality DESC LIMIT 1"
}
old_token=$(end_token)
old_p1=$(q "$proxy" "SELECT option_value FROM pg_foreign_server s, pg_options_to_table(s.srvoptions)
                      WHERE s.srvname = 'eventsourced_cluster' AND option_name = 'p1'")
q "$proxy" "ALTER SERVER eventsourced_cluster OPTIONS (SET p1 '$c_conn')"
moved_rows=$(q "$proxy" "SELECT string_agg(entity_type || '/' || entity_id, ' ' ORDER BY entity_id)
                           FROM eventsourced.read_all_shards('$old_token', 100000)")
moved_pb=$(q "$proxy" "SELECT encode(eventsourced.read_all_shards_pb('$old_token', 100000), 'hex')" | decode ShardBatch | grep -c '^events {')
moved_legacy=$(err "$proxy" "SELECT count(*) FROM eventsourced.read_all_shards('0:100,1:50', 100000)" | grep -o '^ERROR:  [0-9A-Z]\{5\}')
new_token=$(end_token)
q "$proxy" "ALTER SERVER eventsourced_cluster OPTIONS (SET p1 '$old_p1')"
check "after p1 moves to a new server, an old token reads exactly the new server's events; a 0.1.0 token is refused; back again, nothing is read twice" \
      "$moved_rows|$moved_pb|$moved_legacy|$(q "$proxy" "SELECT count(*) FROM eventsourced.read_all_shards('$new_token', 100000)")" \
      "cx/c1 cx/c2 cx/c3 cx/c4 cx/c5|5|ERROR:  22023|0"

# --- every page moves every server that has events (the servers' rows in
# turns, at least one per server): a page of max_count 1 holds a row of
# each shard, and pages of 1 followed to the end read each event once
first=$(q "$proxy" "SELECT count(*) || '/' || count(DISTINCT shard) FROM eventsourced.read_all_shards('', 1)")
token=""
: >"$work/ones.txt"
for n in $(seq 1 100); do
    page=$(q "$proxy" "SELECT token, entity_id || '/' || seq_no FROM eventsourced.events_by_type_shards('acct', '$token', 1)")
    [ -n "$page" ] || break
    echo "$page" | cut -d'|' -f2 >>"$work/ones.txt"
    token=$(echo "$page" | tail -1 | cut -d'|' -f1)
done
check "a page of max_count 1 reads a row of each shard; pages of 1 read every event of a type once" \
      "$first|$(sort "$work/ones.txt" | md5sum)" \
      "2/2|$( { q "${shard[0]}" "SELECT entity_id || '/' || seq_no FROM eventsourced.events WHERE entity_type = 'acct'"
                q "${shard[1]}" "SELECT entity_id || '/' || seq_no FROM eventsourced.events WHERE entity_type = 'acct'"; } | sort | md5sum)"

# --- the feed's helpers are PUBLIC (PL/Proxy reaches the shards as the
# caller) but refuse a role not granted the feed function they serve
codes=""
for call in "read_all_shards('', 10)" "read_all_page('', 10)" "events_by_type_page('feed', '', 10)" \
            "feed_pb_page(NULL, false, '', 10)" "feed_pb_page('feed', true, '', 10)"; do
    codes+="$(err "$proxy" "SET ROLE scale_app; SELECT eventsourced.$call" | grep -o '^ERROR:  42501: permission denied for function [a-z_]*' | cut -c9-) "
done
check "a role without EXECUTE on a feed function cannot read it through its helpers" "$codes" \
      "42501: permission denied for function read_all_shards 42501: permission denied for function read_all_shards 42501: permission denied for function events_by_type_shards 42501: permission denied for function read_all_shards_pb 42501: permission denied for function events_by_type_shards_pb "
check "a huge max_count reads every event in one ShardBatch" \
      "$(q "$proxy" "SELECT encode(eventsourced.read_all_shards_pb('', 2147483647), 'hex')" | decode ShardBatch | grep -c '^events {')" \
      "$(echo "$all" | wc -l)"
# --- an event too large for PL/Proxy (bytea travels as hex text, which
# must fit in 1 GB on the shard) is refused early, naming its server and
# position: the limit lowered to 200 bytes here (it is 535,822,336) and
# an event of 300 bytes
limit_def=$(q "$proxy" "SELECT pg_get_functiondef('eventsourced.feed_value_limit()'::regprocedure)")
q "$proxy" "CREATE OR REPLACE FUNCTION eventsourced.feed_value_limit() RETURNS integer
              LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN 200" >/dev/null
q "$proxy" "SELECT eventsourced.append_binary('huge', 'h1', 0, 'B', convert_to(repeat('x', 300), 'UTF8'))" >/dev/null
hpos=$(q "$(owner_of huge h1)" "SELECT position FROM eventsourced.events WHERE entity_type = 'huge'")
hkey=$(q "$proxy" "SELECT s.token_key FROM eventsourced.shards() s WHERE eventsourced.entity_partition('huge', 'h1') = ANY (s.partitions)")
too_rows=$(err "$proxy" "SELECT * FROM eventsourced.events_by_type_shards('huge', '', 1000)" | grep -o '^ERROR:  54000: .* DETAIL:  The event at position [0-9]* of server s[0-9a-f]*')
too_pb=$(err "$proxy" "SELECT eventsourced.events_by_type_shards_pb('huge', '', 1000)" | grep -o '^ERROR:  54000: .* DETAIL:  The batch of server s[0-9a-f]*')
past=$(q "$proxy" "SELECT count(*) FROM eventsourced.events_by_type_shards('huge', '$hkey:$hpos', 1000)")
q "$proxy" "$limit_def" >/dev/null
check "an event too large for PL/Proxy is refused early (54000) naming its server and position, in both forms; the token past it reads on" \
      "$too_rows|$too_pb|$past|$(q "$proxy" "SELECT eventsourced.feed_value_limit()")" \
      "ERROR:  54000: event too large to read through the proxy DETAIL:  The event at position $hpos of server $hkey|ERROR:  54000: page of a server too large to read through the proxy DETAIL:  The batch of server $hkey|0|535822336"
q "$proxy" "GRANT EXECUTE ON FUNCTION eventsourced.read_all_shards_pb(text, integer) TO scale_app, scale_other" >/dev/null
check "a role reads the protobuf feed on the shards as itself (no right there, no mapping: refused)" \
      "$(err "$proxy" "SET ROLE scale_app; SELECT eventsourced.read_all_shards_pb()" | grep -o '42501: .*REMOTE ERROR: permission denied for function read_all_pb' | sed 's/\[es_shard[01]\]/[shard]/')|$(err "$proxy" "SET ROLE scale_other; SELECT eventsourced.read_all_shards_pb()" | grep -c 'user mapping not found for "scale_other"')" \
      "42501: eventsourced.read_all_pb_parts(3): [shard] REMOTE ERROR: permission denied for function read_all_pb|1"

# --- eventsourced_proxy 0.1.0 updated to 0.2.0 equals a fresh 0.2.0
proxy_pg="host=$PROXY_HOST port=$PROXY_PORT dbname=postgres user=postgres"
q "$proxy_pg" "CREATE DATABASE es_up" && q "$proxy_pg" "CREATE DATABASE es_fresh"
servers=$(q "$proxy" "SELECT string_agg(format('%s %L', option_name, option_value), ', ')
                        FROM pg_foreign_server s, pg_options_to_table(s.srvoptions)
                       WHERE s.srvname = 'eventsourced_cluster'")
for db in es_up es_fresh; do
    version=; [ $db = es_up ] && version="VERSION '0.1.0'"
    q "${proxy/dbname=es/dbname=$db}" "SET client_min_messages = warning; CREATE EXTENSION eventsourced_proxy $version CASCADE;
        CREATE SERVER eventsourced_cluster FOREIGN DATA WRAPPER plproxy OPTIONS ($servers);
        CREATE USER MAPPING FOR postgres SERVER eventsourced_cluster OPTIONS (user 'postgres')" >/dev/null
done
before=$(q "${proxy/dbname=es/dbname=es_up}" "SELECT extversion FROM pg_extension WHERE extname = 'eventsourced_proxy'")
q "${proxy/dbname=es/dbname=es_up}" "ALTER EXTENSION eventsourced_proxy UPDATE" >/dev/null
objects() {   # objects DB: the schema's functions, types and event trigger, one fingerprint
    q "${proxy/dbname=es/dbname=$1}" "SELECT md5(string_agg(x, E'\n' ORDER BY x)) FROM (
        SELECT format('%s %s %s %s %s %s', p.oid::regprocedure, pg_get_function_result(p.oid), p.provolatile,
                      p.proconfig, p.proacl, md5(coalesce(pg_get_function_sqlbody(p.oid), p.prosrc))) AS x
          FROM pg_proc p WHERE p.pronamespace = 'eventsourced'::regnamespace
        UNION ALL SELECT format('type %s', t.oid::regtype) FROM pg_type t
         WHERE t.typnamespace = 'eventsourced'::regnamespace
        UNION ALL SELECT format('trigger %s %s %s', evtname, evtevent, evttags) FROM pg_event_trigger) o"
}
check "eventsourced_proxy 0.1.0 updated to 0.2.0 has the objects of a fresh 0.2.0, and reads the same ShardBatch" \
      "$before|$(objects es_up)|$(q "${proxy/dbname=es/dbname=es_up}" "SELECT md5(eventsourced.read_all_shards_pb('', 100000))")" \
      "0.1.0|$(objects es_fresh)|$(q "${proxy/dbname=es/dbname=es_fresh}" "SELECT md5(eventsourced.read_all_shards_pb('', 100000))")"

# --- examples/projector reading the shards through the proxy: its
# checkpoint is the token, stored in its target transaction; writers on
# both shards; killed -9 twice mid-run, then caught up: the read model equals
# one rebuilt from the shards' events
make -s -C "$root/examples/projector" >"$work/projector.build" 2>&1 || cat "$work/projector.build"
for w in 1 2 3 4; do
    psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -d "$proxy" >/dev/null 2>&1 <<SQL &
SELECT format('SELECT eventsourced.append(%L, %L, NULL, %L, %L), pg_sleep(0.002)', 'pmeter', 'm' || i % 30,
              CASE WHEN i % 3 = 0 THEN 'Decreased' ELSE 'Increased' END, jsonb_build_object('n', i % 7 + 1))
  FROM generate_series($w * 1000 + 1, $w * 1000 + 250) i
\gexec
SQL
    echo $! >>"$work/pmeter.pids"
done
projector=("$root/examples/projector/projector" --sharded --source "$proxy" --target "dbname=$direct_db"
           --type pmeter --name sharded --batch 7 --poll-ms 50)
ptoken() { q "dbname=$direct_db" "SELECT token FROM projector_shard_checkpoint WHERE name = 'sharded'" 2>/dev/null; }
moved() {   # moved TOKEN: until the stored token differs from TOKEN (bounded)
    local n
    for n in $(seq 1 300); do
        [ -n "$(ptoken)" ] && [ "$(ptoken)" != "$1" ] && return 0
        sleep 0.05
    done
    return 1
}
kills=0
for k in 1 2; do
    "${projector[@]}" >>"$work/projector.out" 2>>"$work/projector.err" &
    ppid=$!
    before=$(ptoken)
    moved "$before" && [ "$(jobs -rp | grep -cFxf "$work/pmeter.pids")" -gt 0 ] && kills=$((kills + 1))
    kill -9 $ppid
    wait $ppid 2>/dev/null
done
for pid in $(cat "$work/pmeter.pids"); do wait "$pid"; done
timeout 120 "${projector[@]}" --exit-when-idle >>"$work/projector.out" 2>>"$work/projector.err"
rc=$?
totals() {   # the counters rebuilt from each shard's own events, one line each
    for c in "${shard[@]}"; do
        q "$c" "SELECT entity_id || ':' || sum(CASE event_type WHEN 'Increased' THEN (payload->>'n')::bigint
                                                ELSE -(payload->>'n')::bigint END) || ':' || count(*)
                  FROM eventsourced.events WHERE entity_type = 'pmeter' GROUP BY entity_id"
    done | LC_ALL=C sort | tr '\n' ' '
}
check "the sharded projector, killed -9 twice mid-run, ends with the read model of the shards' events" \
      "$kills|$rc|$(q "dbname=$direct_db" "SELECT entity_id || ':' || total || ':' || events FROM projector_totals" | LC_ALL=C sort | tr '\n' ' ')" \
      "2|0|$(totals)"
check "its checkpoint is the token of each shard's last pmeter event, and 1,000 events were projected" \
      "$(ptoken)|$(q "dbname=$direct_db" "SELECT sum(events) FROM projector_totals")" \
      "$(for i in 0 1; do echo "$(q "$proxy" "SELECT token_key FROM eventsourced.shards() WHERE shard = $i"):$(q "${shard[$i]}" "SELECT coalesce(max(position), 0) FROM eventsourced.events WHERE entity_type = 'pmeter'")"; done | paste -sd,)|1000"

# A checkpoint of eventsourced_proxy 0.1.0 (keyed by lowest partition) is
# refused by the proxy: the projector stops at once, applying nothing
q "dbname=$direct_db" "INSERT INTO projector_shard_checkpoint VALUES ('legacy', '0:5,1:5')" >/dev/null
before=$(q "dbname=$direct_db" "SELECT sum(events) FROM projector_totals")
timeout 60 "$root/examples/projector/projector" --sharded --source "$proxy" --target "dbname=$direct_db" \
    --type pmeter --name legacy --exit-when-idle --max-retries 100 >/dev/null 2>"$work/legacy.err"
rc=$?
check "the sharded projector stops at once on a 0.1.0 checkpoint (22023), applying nothing" \
      "$rc|$(grep -c 'resume token of eventsourced_proxy 0.1.0' "$work/legacy.err")|$(grep -c 'reconnecting' "$work/legacy.err")|$(q "dbname=$direct_db" "SELECT sum(events) FROM projector_totals")" \
      "1|1|0|$before"

# --- one shard stopped mid-run: its entities fail clearly, the others work;
# after the restart nothing acknowledged is lost
on0=() on1=()
for i in $(seq 1 200); do
    [ "$(owner_of fail "f$i")" = "${shard[0]}" ] && on0+=("f$i") || on1+=("f$i")
    [ ${#on0[@]} -ge 3 ] && [ ${#on1[@]} -ge 3 ] && break
done
round() {   # round: one append to each test entity, "ok"/"failed: <error>" per entity
    local e out
    for e in "${on0[@]:0:3}" "${on1[@]:0:3}"; do
        if out=$(q "$proxy" "SELECT eventsourced.append('fail', '$e', NULL, 'E', '{}')" 2>&1); then
            echo "$e ok"
        else
            echo "$e failed: $out"
        fi
    done
}
round >"$work/rounds.txt"
es_as_owner "$ES_PGBIN/pg_ctl" -D "${SHARD_HOSTS[1]}/data" -m immediate -w stop >/dev/null
round >"$work/down.txt"
cat "$work/down.txt" | sed "s/^/# /"
down_ok=$(grep -c ' ok$' "$work/down.txt")
down_err=$(grep -c "failed: ERROR:  PL/Proxy function eventsourced.append(7): \[es_shard1\] PQconnect[A-Za-z]*: connection to server on socket \"${SHARD_HOSTS[1]}" "$work/down.txt")
es_as_owner "$ES_PGBIN/pg_ctl" -D "${SHARD_HOSTS[1]}/data" -l "${SHARD_HOSTS[1]}/server.log" -w start >/dev/null
round >>"$work/rounds.txt"
cat "$work/down.txt" >>"$work/rounds.txt"
acked=$(grep -c ' ok$' "$work/rounds.txt")
stored=$(q "$proxy" "SELECT sum(eventsourced.last_seq_no('fail', e)) FROM unnest(ARRAY['$(IFS=,; echo "${on0[*]:0:3}" | sed "s/,/','/g")', '$(IFS=,; echo "${on1[*]:0:3}" | sed "s/,/','/g")']) e")
check "shard1 stopped: its entities fail with a connection error naming it, shard0's succeed" \
      "$down_ok|$down_err" "3|3"
check "after the restart every acknowledged append is there, and only those" "$stored" "$acked"
check "after the restart the feed still reads both shards" \
      "$(q "$proxy" "SELECT count(DISTINCT shard) FROM eventsourced.events_by_type_shards('fail')")" "2"

"$root/test/scale/cluster" stop "$work/set"
check "the set-up is torn down" "$(ls -A "$work/set" | wc -l)" "0"
