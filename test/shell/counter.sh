#!/usr/bin/env bash
# checks: 15 (test/run fails when a different number of checks ran)
# The counter example (examples/counter): its handlers behave as the Rust
# example's (Increase/Decrease, Overflow past the bigint maximum, Underflow
# below 0, bad amounts refused), and its libpq runner sends commands,
# rebuilds every counter and checks the values.  Uses PGHOST/PGPORT/PGUSER.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
db=es_counter_test
trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1' EXIT
q() { psql -X -q -t -A -d $db -c "$1" 2>&1; }
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
cmd() { q "SELECT accepted, rejection, seq_no, state FROM eventsourced.handle_command('counter', 'c', '$1', '$2')"; }

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
createdb $db
PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d $db \
    -f "$root/examples/counter/counter.sql" >/dev/null
# loading it again is harmless
PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -d $db \
    -f "$root/examples/counter/counter.sql" >/dev/null
check "counter.sql loads twice" "$?" "0"

check "Increase 5" "$(cmd Increase '{"n": 5}')" 't||1|{"value": 5}'
check "Decrease past 0 is rejected with Underflow" "$(cmd Decrease '{"n": 6}')" 'f|{"error": "Underflow"}|1|{"value": 5}'
check "Decrease to 0" "$(cmd Decrease '{"n": 5}')" 't||2|{"value": 0}'
check "Increase to the bigint maximum" "$(cmd Increase '{"n": 9223372036854775807}')" \
      't||3|{"value": 9223372036854775807}'
check "Increase past the maximum is rejected with Overflow" "$(cmd Increase '{"n": 1}')" \
      'f|{"error": "Overflow"}|3|{"value": 9223372036854775807}'
for bad in '{"n": -1}' '{"n": 1.5}' '{"n": "1"}' '{}' '{"n": 1e30}'; do
    check "amount $bad is refused (22023)" \
          "$(q "DO \$\$ BEGIN PERFORM eventsourced.handle_command('counter', 'c', 'Increase', '$bad');
                EXCEPTION WHEN invalid_parameter_value THEN RAISE NOTICE 'refused'; END \$\$" | grep -c refused)" "1"
done
check "refused commands wrote nothing" "$(q "SELECT eventsourced.last_seq_no('counter', 'c')")" "3"

make -s -C "$root/examples/counter" counter >/dev/null
out=$("$root/examples/counter/counter" --connstr "dbname=$db" --entities 3 --events 250 --snapshot-after 100 2>&1)
rc=$?
check "runner exits 0" "$rc" "0"
check "runner reports progress and rebuilds every counter" \
      "$(echo "$out" | grep -c ': 250 events persisted$') $(echo "$out" | grep -c 'every value is 125 as expected')" "3 1"
check "runner's events are all in the log" \
      "$(q "SELECT count(*) FROM eventsourced.events WHERE entity_type = 'counter' AND entity_id <> 'c'")" "750"
