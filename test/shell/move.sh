#!/usr/bin/env bash
# checks: 26 (test/run fails when a different number of checks ran)
# Moving a partition (docs/scale-out.md, "Moving a partition"):
# test/scale/cluster starts two shards and a proxy (ports PGPORT + 12 to
# + 14), a second proxy database keeps the old cluster definition (a stale
# proxy).  Partition 2 of 16 (on shard0) holds entities with events (JSON
# with metadata and event ids, binary), snapshots, cached states, snapshot
# claims and command results.  test/scale/move_partition moves it to shard1
# while writers append through the proxy to other partitions and to one
# entity of the moving partition; its hook checks, while the partition is
# fenced, that writes to it are refused with 40001 and that a second mover
# is refused, and then kills the mover (kill -9) after its first batch of
# entities.  Running it again converges.  Then: every row on the target,
# seq_nos continue, command ids remembered, the source and the stale proxy
# refused, nothing lost or duplicated for the other writers, and the
# partition moved back.  Waits are bounded, never timed.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/test/cluster.sh"
work=$(mktemp -d /tmp/es_move.XXXXXX)
chmod 755 "$work"
cleanup() {
    jobs -p | xargs -r kill 2>/dev/null
    "$root/test/scale/cluster" stop "$work/set"
    rm -rf "$work"
}
trap cleanup EXIT
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
q() { timeout 120 psql -X -q -t -A -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }
err() { timeout 60 psql -X -q -t -A -v VERBOSITY=verbose -v SHOW_CONTEXT=never -d "$1" -c "$2" 2>&1 |
        grep -E '^ERROR:' | head -1; }

if ! timeout 120 "$root/test/scale/cluster" start "$work/set" --shards 2 --partitions 16 \
        --port $((PGPORT + 12)) >"$work/start.log" 2>&1; then
    cat "$work/start.log"
    check "scale set-up starts" "failed" "started"
    exit 1
fi
. "$work/set/env"
proxy="host=$PROXY_HOST port=$PROXY_PORT dbname=es user=postgres"
stale="host=$PROXY_HOST port=$PROXY_PORT dbname=es_stale user=postgres"
conn=() shard=()
for i in 0 1; do
    conn+=("host=${SHARD_HOSTS[$i]} port=${SHARD_PORTS[$i]} dbname=${SHARD_DBS[$i]}")
    shard+=("${conn[$i]} user=postgres")
done
export PGUSER=postgres
p=2

# A second proxy database with the same cluster definition, never switched.
opts=$(q "$proxy" "SELECT string_agg(format('%I %L', option_name, option_value), ', ')
                    FROM pg_options_to_table((SELECT srvoptions FROM pg_foreign_server
                                               WHERE srvname = 'eventsourced_cluster'))")
q "host=$PROXY_HOST port=$PROXY_PORT dbname=postgres user=postgres" "CREATE DATABASE es_stale" >/dev/null
q "$stale" "CREATE EXTENSION eventsourced_proxy CASCADE;
    CREATE SERVER eventsourced_cluster FOREIGN DATA WRAPPER plproxy OPTIONS ($opts);
    CREATE USER MAPPING FOR postgres SERVER eventsourced_cluster OPTIONS (user 'postgres')" >/dev/null
check "scale set-up starts, with a second (stale) proxy" \
      "$(q "$stale" "SELECT count(*) FROM eventsourced.shards()")" "2"

# --- an event id of a partition that the target holds for another entity
# (event_id is unique per server only): the mover refuses before fencing
cpart=$(q "$proxy" "SELECT min(x) FROM eventsourced.shards(), unnest(partitions) x WHERE shard = 0 AND x NOT IN ($p, 4)")
cid=$(q "$proxy" "SELECT 'c' || min(i) FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('col', 'c' || i) = $cpart")
cother=$(q "$proxy" "SELECT 'c' || min(i) FROM generate_series(1, 300) i
                      WHERE eventsourced.entity_partition('col', 'c' || i) IN (SELECT unnest(partitions) FROM eventsourced.shards() WHERE shard = 1)")
q "$proxy" "SELECT eventsourced.append('col', '$cid', 0, 'E', '{}', NULL, '00000000-0000-0000-0000-00000000c011');
            SELECT eventsourced.append('col', '$cother', 0, 'E', '{}', NULL, '00000000-0000-0000-0000-00000000c011')" >/dev/null
(timeout 120 "$root/test/scale/move_partition" --proxy "$proxy" $cpart "${conn[1]}" >"$work/collide.txt" 2>&1) 2>/dev/null
check "an event id of the partition taken on the target by another entity: refused before fencing, naming it" \
      "$?|$(grep -o "the target holds event ids of partition $cpart for other entities: 00000000-0000-0000-0000-00000000c011 (col/$cother on the target, col/$cid on the source); nothing was fenced" "$work/collide.txt" | wc -l)|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.fences")|$(q "$proxy" "SELECT shard FROM eventsourced.shards() WHERE $cpart = ANY (partitions)")" \
      "1|1|0|0"
# the source named by another connection string is no target
(timeout 120 "$root/test/scale/move_partition" --proxy "$proxy" $cpart "${conn[0]} application_name=same" >"$work/same.txt" 2>&1) 2>/dev/null
check "a target that is the source's system and database under another name is refused, nothing fenced" \
      "$?|$(grep -c 'the target is the source (the same system and database' "$work/same.txt")|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.fences")" \
      "1|1|0"

# --- the moving partition's entities: commands (cached states, snapshot
# claims, command results), JSON events with metadata and ids and a
# snapshot, binary events and a binary snapshot
for c in "${shard[@]}"; do
    q "$c" "CREATE FUNCTION public.mv_apply(state jsonb, event_type text, payload jsonb)
        RETURNS jsonb LANGUAGE sql RETURN jsonb_build_object('n', (state->>'n')::int + (payload->>'n')::int);
      CREATE FUNCTION public.mv_add(entity_id text, state jsonb, args jsonb)
        RETURNS eventsourced.decision LANGUAGE sql
        RETURN eventsourced.emit('Added', jsonb_build_object('n', args->'n'))" >/dev/null
done
q "$proxy" "SELECT * FROM eventsourced.register_entity('mv', 'public.mv_apply(jsonb, text, jsonb)', '{\"n\": 0}', 2);
            SELECT * FROM eventsourced.register_command('mv', 'Add', 'public.mv_add(text, jsonb, jsonb)')" >/dev/null
ids=$(q "$proxy" "SELECT string_agg('m' || i, ' ' ORDER BY i) FROM generate_series(1, 300) i
                   WHERE eventsourced.entity_partition('mv', 'm' || i) = $p")
q "$proxy" "SELECT eventsourced.handle_command('mv', id, 'Add', jsonb_build_object('n', k), 'cmd-' || k)
              FROM unnest(string_to_array('$ids', ' ')) id, generate_series(1, 3) k" >/dev/null
q "$proxy" "SELECT eventsourced.append('mvj', 'm' || i, NULL, 'E' || k, jsonb_build_object('k', k),
                                       jsonb_build_object('by', 'test'), md5('mvj' || i || '/' || k)::uuid)
              FROM generate_series(1, 300) i, generate_series(1, 4) k
             WHERE eventsourced.entity_partition('mvj', 'm' || i) = $p ORDER BY i, k;
            SELECT eventsourced.save_snapshot('mvj', 'm' || i, 3, jsonb_build_object('at', 3))
              FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('mvj', 'm' || i) = $p;
            SELECT eventsourced.append_binary('mvb', 'm' || i, NULL, 'B', '\\x0001ff'::bytea)
              FROM generate_series(1, 300) i, generate_series(1, 2) k
             WHERE eventsourced.entity_partition('mvb', 'm' || i) = $p;
            SELECT eventsourced.save_snapshot_bytes('mvb', 'm' || i, 2, '\\xbeef'::bytea)
              FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('mvb', 'm' || i) = $p" >/dev/null
# the target's snapshot changes run ahead of the source's: a reader of the
# target's snapshot_changes() is past every change the source drew
tid=$(q "$proxy" "SELECT 't' || min(i) FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('mvt', 't' || i) = 1")
q "$proxy" "SELECT eventsourced.append('mvt', '$tid', 0, ARRAY(SELECT eventsourced.event('E', '{}') FROM generate_series(1, 3000)));
            SELECT eventsourced.save_snapshot('mvt', '$tid', 3000, '{}')" >/dev/null
read_snapshots=$(q "${shard[1]}" "SELECT max(change) FROM eventsourced.snapshot_changes(0, 100000)")
jfirst=$(q "$proxy" "SELECT 'm' || min(i) FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('mvj', 'm' || i) = $p")
other=$(q "$proxy" "SELECT 's' || min(i) FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('wr', 's' || i) <> $p")
hot=$(q "$proxy" "SELECT 'h' || min(i) FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('hot', 'h' || i) = $p")

# --- writers through the proxy during the move, one call at a time until
# told to stop: three to other partitions, one to an entity of the moving one
call() {   # call SQL: "ok RESULT" or "err ERROR-LINE" (with the SQLSTATE)
    local out
    if out=$(timeout 60 psql -X -q -t -A -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$proxy" -c "$1" 2>&1); then
        echo "ok $out"
    else
        echo "err $(echo "$out" | grep -m1 '^ERROR')"
    fi
}
writer() {   # writer NAME: appends to five entities of other partitions
    local n=0 ids
    ids=($(q "$proxy" "SELECT '$1-' || i FROM generate_series(0, 99) i
                        WHERE eventsourced.entity_partition('wr', '$1-' || i) <> $p LIMIT 5"))
    while [ ! -e "$work/stop" ] && [ $n -lt 5000 ]; do
        id=${ids[$((n++ % 5))]}
        echo "$(call "SELECT eventsourced.append('wr', '$id', NULL, 'W', '{}')") $id"
    done >"$work/$1.out"
}
for w in w1 w2 w3; do writer $w & done
n=0
while [ ! -e "$work/stop" ] && [ $((n++)) -lt 5000 ]; do
    call "SELECT eventsourced.append('hot', '$hot', NULL, 'W', '{}')"
done >"$work/hot.out" &
wait_for() {   # wait_for COMMAND...: until it succeeds (bounded)
    local n
    for n in $(seq 1 600); do "$@" && return 0; sleep 0.1; done
    return 1
}

# --- the move, killed after its first batch, then run again
cat >"$work/hook" <<HOOK
#!/usr/bin/env bash
case \$1 in
fenced)
    for n in \$(seq 1 600); do grep -q '^err' "$work/hot.out" && break; sleep 0.1; done
    psql -X -q -t -A -v VERBOSITY=verbose -d "$proxy" \
         -c "SELECT eventsourced.append('hot', '$hot', NULL, 'E', '{}')" 2>&1 |
        grep -m1 '^ERROR' >"$work/fenced.txt"
    "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[1]}" >"$work/second.txt" 2>&1
    echo "rc=\$?" >>"$work/second.txt"
    ;;
applied)
    [ -e "$work/killed" ] && exit 0
    psql -X -q -t -A -d "${shard[1]}" -c "SELECT count(DISTINCT (entity_type, entity_id)) FROM eventsourced.events
         WHERE entity_type IN ('mv', 'mvj', 'mvb') AND eventsourced.entity_hash(entity_type, entity_id) & 15 = $p" >"$work/killed"
    kill -9 \$MOVE_PID
    ;;
esac
HOOK
chmod +x "$work/hook"
(timeout 300 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[1]}" --batch 5 --hook "$work/hook" \
    >"$work/move1.txt" 2>&1) 2>/dev/null
move1=$?
check "while the partition is fenced, a write to it through the proxy is refused with 40001 and PL/Proxy's prefix" \
      "$(sed 's/\[es_shard0\]/[shard]/' "$work/fenced.txt")" \
      "ERROR:  40001: eventsourced.append(7): [shard] REMOTE ERROR: partition $p of 16 is fenced on this server"
check "while it moves, a second move of the same partition is refused" \
      "$(grep -o -e 'another move of partition 2 is running' -e 'rc=.*' "$work/second.txt" | tr '\n' ' ')" \
      "another move of partition 2 is running rc=1 "
total=$(q "${shard[0]}" "SELECT count(DISTINCT (entity_type, entity_id)) FROM eventsourced.events
         WHERE entity_type IN ('mv', 'mvj', 'mvb') AND eventsourced.entity_hash(entity_type, entity_id) & 15 = $p")
killed=$(cat "$work/killed" 2>/dev/null)
check "the mover killed (-9) after its first batch left the partition fenced, unswitched, partly copied" \
      "$move1|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.fences WHERE partitions = 16 AND partition = $p")|$(q "$proxy" "SELECT shard FROM eventsourced.shards() WHERE $p = ANY (partitions)")|$([ "${killed:-0}" -gt 0 ] && [ "$killed" -lt "$total" ] && echo partly)" \
      "137|1|0|partly"
echo "# killed after $killed of $total entities"
for n in $(seq 1 100); do   # its lock goes with its psql, which sees the pipe close
    [ "$(q "$proxy" "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $p")" = 0 ] && break
    sleep 0.1
done
timeout 300 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[1]}" >"$work/move2.txt" 2>&1
move2=$?
# the writer of the moving partition is accepted again, on the target
hot_after() { [ "$(tail -1 "$work/hot.out" | cut -c1-3)" = "ok " ] && grep -q '^err' "$work/hot.out"; }
wait_for hot_after
touch "$work/stop"
wait
check "run again, the move converges and the proxy routes the partition to the target" \
      "$move2|$(tail -1 "$work/move2.txt")|$(q "$proxy" "SELECT shard FROM eventsourced.shards() WHERE $p = ANY (partitions)")" \
      "0|partition $p of 16 moved to ${conn[1]}|1"
[ "$move2" = 0 ] || cat "$work/move2.txt"

# --- everything of the partition is on the target
rows() {   # rows CONNSTR TABLE ORDER: the partition's rows of a table, digested
    q "$1" "SELECT count(*) || ' ' || md5(string_agg(x::text, E'\n' ORDER BY $3))
              FROM (SELECT * FROM eventsourced.$2 WHERE eventsourced.entity_hash(entity_type, entity_id) & 15 = $p) x"
}
events="SELECT count(*) || ' ' || md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s', entity_type, entity_id, seq_no,
            event_type, payload, metadata, event_id, payload_bytes), E'\n' ORDER BY entity_type, entity_id, seq_no))
          FROM eventsourced.events WHERE eventsourced.entity_hash(entity_type, entity_id) & 15 = $p"
moved="$events AND entity_type IN ('mv', 'mvj', 'mvb')"
check "every event of the partition is on the target: seq_nos, types, payloads, metadata, event ids, binary" \
      "$(q "${shard[1]}" "$moved")" "$(q "${shard[0]}" "$moved")"
snapshots="SELECT count(*) || ' ' || md5(string_agg(format('%s|%s|%s|%s|%s|%s', entity_type, entity_id, seq_no,
            state, recorded_at, state_bytes), E'\n' ORDER BY entity_type, entity_id))
          FROM eventsourced.snapshots WHERE eventsourced.entity_hash(entity_type, entity_id) & 15 = $p"
check "snapshots (JSON and binary) and command results are on the target, row for row" \
      "$(q "${shard[1]}" "$snapshots")|$(rows "${shard[1]}" command_results 'entity_type, entity_id, command_id')" \
      "$(q "${shard[0]}" "$snapshots")|$(rows "${shard[0]}" command_results 'entity_type, entity_id, command_id')"
check "the moved snapshots draw their changes on the target: a reader of its snapshot_changes() gets every one" \
      "$(q "${shard[1]}" "SELECT count(*) FROM eventsourced.snapshot_changes($read_snapshots, 100000)
                          WHERE eventsourced.entity_hash(entity_type, entity_id) & 15 = $p")" \
      "$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.snapshots WHERE eventsourced.entity_hash(entity_type, entity_id) & 15 = $p")"
states="SELECT count(*) || ' ' || md5(string_agg(format('%s|%s|%s|%s', s.entity_type, s.entity_id, s.seq_no, s.state),
            E'\n' ORDER BY s.entity_type, s.entity_id))
          FROM eventsourced.entity_states s JOIN eventsourced.entity_types t USING (entity_type)
         WHERE s.generation = t.generation AND eventsourced.entity_hash(s.entity_type, s.entity_id) & 15 = $p"
check "cached states and snapshot claims are on the target, under the target's registration" \
      "$(q "${shard[1]}" "$states")|$(q "${shard[1]}" "SELECT count(*) FROM eventsourced.snapshot_generations g JOIN eventsourced.entity_types t USING (entity_type) WHERE g.generation = t.generation AND eventsourced.entity_hash(g.entity_type, g.entity_id) & 15 = $p")" \
      "$(q "${shard[0]}" "$states")|$(echo "$ids" | wc -w)"
first=${ids%% *}
check "after the move: a command id used before returns its first result; commands and appends continue the seq_nos" \
      "$(q "$proxy" "SELECT seq_no || ' ' || state FROM eventsourced.handle_command('mv', '$first', 'Add', '{\"n\": 100}', 'cmd-2')")|$(q "$proxy" "SELECT seq_no || ' ' || state FROM eventsourced.handle_command('mv', '$first', 'Add', '{\"n\": 10}', 'cmd-4')")|$(q "$proxy" "SELECT eventsourced.append('mvj', '$jfirst', 4, 'E5', '{}')")" \
      '2 {"n": 3}|4 {"n": 16}|5'
check "the moved events appear in the target's feed, with new positions" \
      "$(q "$proxy" "SELECT count(*) FROM eventsourced.read_all_shards('', 100000) WHERE shard = 1 AND entity_type IN ('mv', 'mvj', 'mvb') AND eventsourced.entity_partition(entity_type, entity_id) = $p")" \
      "$(( $(q "${shard[0]}" "$moved" | cut -d' ' -f1) + 2 ))"

# --- the source and a stale proxy are refused
check "the source refuses writes to the moved partition (40001), directly and through a stale proxy" \
      "$(err "${shard[0]}" "SELECT eventsourced.append('mvj', '$jfirst', 4, 'E5', '{}')")|$(err "$stale" "SELECT eventsourced.append('mvj', '$jfirst', 4, 'E5', '{}')" | sed 's/REMOTE ERROR: .*/REMOTE ERROR/')" \
      "ERROR:  40001: partition $p of 16 is fenced on this server|ERROR:  40001: eventsourced.append(7): [es_shard0] REMOTE ERROR"
check "the stale proxy's other partitions still work" \
      "$(q "$stale" "SELECT eventsourced.append('wr', '$other', 0, 'E', '{}')")" "1"

# a mover on the stale proxy, which still names the source, cannot move the
# partition's old rows elsewhere: the source's fence names the move made
(timeout 120 "$root/test/scale/move_partition" --proxy "$stale" $p "${conn[1]} application_name=elsewhere" \
    >"$work/stale_move.txt" 2>&1) 2>/dev/null
check "a mover on the stale proxy is refused by the source's fence, which names the move made" \
      "$?|$(grep -o 'is fenced on the source for a move to' "$work/stale_move.txt")|$(q "$stale" "SELECT shard FROM eventsourced.shards() WHERE $p = ANY (partitions)")" \
      "1|is fenced on the source for a move to|0"

# --- the writers: nothing lost, nothing duplicated
acked=$(cat "$work"/w[123].out | grep '^ok ' | awk '{print $3 "/" $2}' | sort)
stored=$( { q "${shard[0]}" "SELECT entity_id || '/' || seq_no FROM eventsourced.events WHERE entity_type = 'wr' AND entity_id LIKE 'w_-%'"
            q "${shard[1]}" "SELECT entity_id || '/' || seq_no FROM eventsourced.events WHERE entity_type = 'wr' AND entity_id LIKE 'w_-%'"; } | sort)
gaps=$(q "$proxy" "SELECT count(*) FROM (SELECT DISTINCT split_part(x, '/', 1) e
                                          FROM unnest(string_to_array('$(echo $acked)', ' ')) x) k
                    WHERE (SELECT count(*) FROM eventsourced.events_by_id('wr', k.e)) <> eventsourced.last_seq_no('wr', k.e)")
echo "# the writers to other partitions: $(echo "$acked" | wc -l) appends"
check "writers to the other partitions during the move: no error, every acknowledged event stored once, seq_nos without gaps" \
      "$(cat "$work"/w[123].out | grep -c '^err')|$(echo "$acked" | md5sum)|$(echo "$stored" | uniq -d | wc -l)|$gaps" \
      "0|$(echo "$stored" | md5sum)|0|0"
hot_ok=$(grep -c '^ok ' "$work/hot.out")
hot_refused=$(grep -c "^err ERROR:  40001: eventsourced.append(7): \[es_shard0\] REMOTE ERROR: partition $p of 16 is fenced on this server" "$work/hot.out")
echo "# the writer to the moving partition: $hot_ok appended, $hot_refused refused"
check "the writer to the moving partition: refused only with 40001 while it moved, then accepted; every acknowledged append on the target" \
      "$((hot_ok + hot_refused))|$([ "$hot_refused" -gt 0 ] && tail -1 "$work/hot.out" | cut -c1-2)|$(q "${shard[1]}" "SELECT count(*) FROM eventsourced.events WHERE entity_type = 'hot' AND event_type = 'W'")" \
      "$(wc -l <"$work/hot.out")|ok|$hot_ok"

# --- and back: the old server keeps the partition's old rows (a prefix of
# each entity's events), gets the rest, and is unfenced
# a staging schema made by another role on the target is refused (its
# owner could change the rows the mover appends)
q "${shard[0]}" "CREATE ROLE intruder; CREATE SCHEMA eventsourced_move AUTHORIZATION intruder" >/dev/null
(timeout 300 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[0]}" >"$work/move3.txt" 2>&1) 2>/dev/null
check "a staging schema of another role on the target stops the mover" \
      "$?|$(grep -o 'schema eventsourced_move on the target belongs to another role' "$work/move3.txt")|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.events WHERE entity_type = 'mvj' AND entity_id = '$jfirst'")" \
      "1|schema eventsourced_move on the target belongs to another role|4"
q "${shard[0]}" "DROP SCHEMA eventsourced_move; DROP ROLE intruder" >/dev/null
# any role may take the advisory key of the partition's lock on the target:
# the mover stops, naming the holder, instead of waiting forever
q "${shard[0]}" "CREATE ROLE squatter LOGIN" >/dev/null
(timeout 300 psql -X -q -d "${conn[0]} user=squatter" -c "SELECT pg_advisory_lock(1163087184, $p)" \
     -c "SELECT pg_sleep(300)" >/dev/null 2>&1 &)
squatting() { [ "$(q "${shard[0]}" "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                                   WHERE l.locktype = 'advisory' AND l.granted AND a.usename = 'squatter'")" = 1 ]; }
wait_for squatting
(timeout 300 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[0]}" --lock-wait 1 >"$work/move3.txt" 2>&1) 2>/dev/null
check "a session of another role holding the partition's lock on the target stops the mover, which names it" \
      "$?|$(grep -o "the lock of partition $p on the target is held by pid [0-9]* (role squatter)" "$work/move3.txt" | sed 's/pid [0-9]*/pid N/')|$(q "$proxy" "SELECT shard FROM eventsourced.shards() WHERE $p = ANY (partitions)")" \
      "1|the lock of partition $p on the target is held by pid N (role squatter)|1"
q "${shard[0]}" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'squatter'" >/dev/null
gone() { [ "$(q "${shard[0]}" "SELECT count(*) FROM pg_stat_activity WHERE usename = 'squatter'")" = 0 ]; }
wait_for gone
q "${shard[0]}" "DROP ROLE squatter" >/dev/null
# while it moves back, the old server stays fenced for everyone but the
# mover: a write sent there directly (a stale proxy) is refused
cat >"$work/hook_back" <<HOOK
#!/usr/bin/env bash
[ "\$1" = applied ] || exit 0
psql -X -q -t -A -v VERBOSITY=verbose -d "${shard[0]}" \
     -c "SELECT eventsourced.append('mvj', '$jfirst', 5, 'Stale', '{}')" >>"$work/back.txt" 2>&1
# a snapshot claim lost on the target: the verification must see it
psql -X -q -d "${shard[0]}" -c "DELETE FROM eventsourced.snapshot_generations WHERE entity_type = 'mv' AND entity_id = '$first'"
exit 0
HOOK
chmod +x "$work/hook_back"
(timeout 300 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[0]}" --hook "$work/hook_back" >"$work/move3.txt" 2>&1) 2>/dev/null
back=$?
check "while the partition moves back, the old server refuses a write to it with 40001 (it stays fenced until verified)" \
      "$(grep -m1 '^ERROR' "$work/back.txt")" "ERROR:  40001: partition $p of 16 is fenced on this server"
check "a snapshot claim missing on the target fails the verification; both sides stay fenced, unswitched" \
      "$back|$(grep -c 'the target does not hold the source' "$work/move3.txt")|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.fences WHERE partition = $p")$(q "${shard[1]}" "SELECT count(*) FROM eventsourced.fences WHERE partition = $p")|$(q "$proxy" "SELECT shard FROM eventsourced.shards() WHERE $p = ANY (partitions)")" \
      "1|1|11|1"
timeout 300 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[0]}" >"$work/move3.txt" 2>&1
back=$?
check "the partition moves back: the old server is unfenced and complete, the other one fenced" \
      "$back|$(q "${shard[0]}" "SELECT count(*) FROM eventsourced.fences")$(q "${shard[1]}" "SELECT count(*) FROM eventsourced.fences WHERE partition = $p")|$(q "${shard[0]}" "$events")|$(q "$proxy" "SELECT eventsourced.append('mvj', '$jfirst', 5, 'E6', '{}')")" \
      "0|01|$(q "${shard[1]}" "$events")|6"
# a staging table left by a mover that stopped after the switch: a run
# that finds the partition on its target drops it
q "${shard[0]}" "CREATE TABLE eventsourced_move.p${p}_done (x int)" >/dev/null
timeout 120 "$root/test/scale/move_partition" --proxy "$proxy" $p "${conn[0]}" >"$work/move4.txt" 2>&1
check "no staging tables are left on either server after the moves, nor after a run that finds the partition moved" \
      "$?|$(tail -1 "$work/move4.txt")|$(q "${shard[0]}" "SELECT count(*) FROM pg_tables WHERE schemaname = 'eventsourced_move'")$(q "${shard[1]}" "SELECT count(*) FROM pg_tables WHERE schemaname = 'eventsourced_move'")" \
      "0|partition $p of 16 is on ${conn[0]} already|00"

# A transaction that wrote to an entity cannot be prepared (it holds a
# position or a snapshot change in flight), so no prepared transaction can
# write to a partition after its fence; fence_wait() still waits for any
# prepared transaction begun before the fence (here one that wrote a table
# of its own), until it is committed
pid=$(q "$proxy" "SELECT 'q' || min(i) FROM generate_series(1, 300) i WHERE eventsourced.entity_partition('prep', 'q' || i) = 4")
q "$proxy" "SELECT eventsourced.append('prep', '$pid', 0, 'E', '{}')" >/dev/null
refused=$(psql -X -q -t -A -d "${shard[0]}" -c "BEGIN" -c "SELECT eventsourced.save_snapshot('prep', '$pid', 1, '{}')" \
               -c "PREPARE TRANSACTION 'move_sh'" 2>&1 | grep -c 'cannot PREPARE a transaction that appended events or saved snapshots')
q "${shard[0]}" "CREATE TABLE IF NOT EXISTS move_prep (x int)" >/dev/null
q "${shard[0]}" "BEGIN; INSERT INTO move_prep VALUES (1); PREPARE TRANSACTION 'move_sh'" >/dev/null
q "${shard[0]}" "SELECT eventsourced.fence_partition(16, 4)" >/dev/null
(q "${shard[0]}" "SELECT eventsourced.fence_wait(); SELECT 'waited'" >"$work/prepared.txt" 2>&1 &)
waiting() { [ "$(q "${shard[0]}" "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%fence_wait()%' AND wait_event_type = 'Lock'")" = 1 ]; }
wait_for waiting && held=$(cat "$work/prepared.txt")
q "${shard[0]}" "COMMIT PREPARED 'move_sh'" >/dev/null
done_waiting() { grep -q waited "$work/prepared.txt"; }
wait_for done_waiting
q "${shard[0]}" "SELECT eventsourced.unfence_partition(16, 4)" >/dev/null
check "a write cannot be prepared; fence_wait waits for a prepared transaction begun before the fence, until it commits" \
      "$refused|waiting:${held-none}|$(tr -d '\n' <"$work/prepared.txt")" "1|waiting:|waited"

"$root/test/scale/cluster" stop "$work/set"
check "the set-up is torn down" "$(ls -A "$work/set" | wc -l)" "0"
