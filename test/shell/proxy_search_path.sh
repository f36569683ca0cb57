#!/usr/bin/env bash
# checks: 3 (test/run fails when a different number of checks ran)
# eventsourced_proxy's scripts run with plproxy's schema (public, as a rule)
# on their search_path.  A role that may create objects in public (here the
# database's owner, a non-superuser) puts an operator =(oid, regclass) there,
# an exact match for an unqualified "oid = 'x'::regclass" where pg_catalog's
# =(oid, oid) needs a cast: CREATE EXTENSION (0.1.0 then the update to
# 0.2.0) and ALTER EXTENSION ... UPDATE must not run it as the superuser.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/test/cluster.sh"
work=$(mktemp -d /tmp/es_proxy_sp.XXXXXX)
chmod 755 "$work"
export ES_SCALE_PORT=${ES_SCALE_PORT:-$((PGPORT + 2))}
cleanup() {
    "$root/test/scale/cluster" stop "$work/set"
    rm -rf "$work"
}
trap cleanup EXIT
check() {   # check NAME ACTUAL EXPECTED; an empty result never passes
    if [ -n "$2" ] && [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1: got '$2', want '$3'"; fi
}
if ! timeout 120 "$root/test/scale/cluster" start "$work/set" --shards 1 --partitions 1 >"$work/start.log" 2>&1; then
    cat "$work/start.log"
    check "scale set-up starts" "failed" "started"
    exit 1
fi
check "scale set-up starts" "started" "started"
. "$work/set/env"
q() { timeout 60 psql -X -q -t -A -v ON_ERROR_STOP=1 -h "$PROXY_HOST" -p "$PROXY_PORT" "$@"; }
trap_sql="
CREATE FUNCTION public.trap_eq(oid, regclass) RETURNS boolean LANGUAGE plpgsql AS \$\$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE sp_owner SUPERUSER';
    END IF;
    RETURN \$1 OPERATOR(pg_catalog.=) \$2::oid;
END \$\$;
CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = public.trap_eq);"
q -U postgres -d postgres -c "CREATE ROLE sp_owner LOGIN" \
    -c "CREATE DATABASE sp_create OWNER sp_owner" -c "CREATE DATABASE sp_update OWNER sp_owner" >/dev/null
q -U sp_owner -d sp_create -c "$trap_sql" >/dev/null
q -U postgres -d sp_create -c "CREATE EXTENSION eventsourced_proxy CASCADE" >/dev/null 2>&1
check "CREATE EXTENSION runs no operator a role put in public" \
      "$(q -U postgres -d postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'sp_owner'")" "f"
q -U postgres -d postgres -c "ALTER ROLE sp_owner NOSUPERUSER" >/dev/null
q -U postgres -d sp_update -c "CREATE EXTENSION eventsourced_proxy VERSION '0.1.0' CASCADE" >/dev/null 2>&1
q -U sp_owner -d sp_update -c "$trap_sql" >/dev/null
q -U postgres -d sp_update -c "ALTER EXTENSION eventsourced_proxy UPDATE TO '0.2.0'" >/dev/null
check "ALTER EXTENSION UPDATE runs no operator a role put in public" \
      "$(q -U postgres -d postgres -c "SELECT rolsuper FROM pg_roles WHERE rolname = 'sp_owner'")" "f"
q -U postgres -d postgres -c "DROP DATABASE sp_create" -c "DROP DATABASE sp_update" -c "DROP ROLE sp_owner" >/dev/null
